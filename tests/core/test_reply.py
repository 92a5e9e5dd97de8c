"""Tests for L{sbc.core.reply}: locally generated responses."""

from __future__ import annotations

from sbc.core.errors import ParseError
from sbc.core.message import Request, Response, parse
from sbc.core.reply import error_response, make_response
from tests.helpers import request_bytes, rfc4475


def test_make_response_copies_the_transaction_headers() -> None:
    """Via (all of them, verbatim), From, Call-ID, CSeq copied; To gets a tag."""
    m = parse(request_bytes(via="SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"))
    assert isinstance(m, Request)
    r = parse(make_response(m, 404).to_bytes())
    assert isinstance(r, Response) and (r.status, r.reason) == (404, "Not Found")
    assert [v.host for v in r.vias] == ["a", "b"]
    assert r.from_.tag == "from1" and r.call_id == m.call_id and r.cseq == m.cseq
    assert r.to.tag and r.get("Content-Length") == "0"


def test_to_tag_is_stable_across_retransmissions() -> None:
    """A retransmitted request gets the same To tag."""
    m = parse(request_bytes())
    assert isinstance(m, Request)
    assert make_response(m, 200).to.tag == make_response(m, 200).to.tag


def test_100_has_no_to_tag_and_existing_tags_are_kept() -> None:
    """100 Trying never adds a tag; an in-dialog request keeps its tag."""
    m = parse(request_bytes())
    assert isinstance(m, Request)
    assert make_response(m, 100).to.tag is None
    tagged = parse(
        request_bytes().replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x")
    )
    assert isinstance(tagged, Request)
    assert make_response(tagged, 200).to.tag == "x"


def test_error_response_from_a_broken_request() -> None:
    """A request that failed to parse still gets a parseable 400 that matches its transaction."""
    data = rfc4475("baddate")
    try:
        parse(data)
    except ParseError as error:
        reply = error_response(data, error)
    assert reply is not None
    r = parse(reply)
    assert isinstance(r, Response) and r.status == 400 and r.reason == "Bad Date"
    assert r.top_via.branch == "z9hG4bKkdjuw" and r.cseq.number == 1392934 and r.to.tag


def test_no_error_response_to_responses_or_without_via() -> None:
    """Responses and requests without Via are dropped silently."""
    err = ParseError(400, "x")
    assert error_response(rfc4475("bigcode"), err) is None
    assert error_response(b"INVITE sip:a SIP/2.0\r\nTo: x\r\n\r\n", err) is None
    assert error_response(b"\x00\x01garbage", err) is None
