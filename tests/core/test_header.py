"""Tests for L{sbc.core.header}: single header fields, and their re-export by message."""

from __future__ import annotations

import pytest

from sbc.core import header, message
from sbc.core.errors import ParseError


def test_message_reexports_the_header_names() -> None:
    """Every public name of header that message used to define is the same object there."""
    for name in ("COMPACT_FORMS", "CSeq", "Header", "header_key"):
        assert getattr(message, name) is getattr(header, name)
        assert name in message.__all__


def test_make_header_keeps_folded_text() -> None:
    """A folded field joins its lines for the value and keeps them verbatim for the wire."""
    field = header.make_header(["Subject: a\r", " b\r"])
    assert (field.key, field.value, field.line()) == ("subject", "a b", "Subject: a\r\n b\r\n")


@pytest.mark.parametrize("value", ["1", "x INVITE", f"{2**31} INVITE", "1 IN VITE"])
def test_parse_cseq_refuses(value: str) -> None:
    """A CSeq without a number below 2**31 and one method token is a 400."""
    with pytest.raises(ParseError) as info:
        header.parse_cseq(value)
    assert info.value.status == 400


def test_display_name() -> None:
    """Error messages spell header names the usual way."""
    assert [header.display_name(k) for k in ("call-id", "cseq", "content-length")] == [
        "Call-ID",
        "CSeq",
        "Content-Length",
    ]


def _fields(text: str) -> list[tuple[str, str, str, str | None]]:
    return [(h.name, h.key, h.value, h.raw) for h in header.split_fields(text, 8, 100)]


def test_split_fields_fast_and_careful_paths_agree() -> None:
    """A section of plain lines (names seen before or not) and one with folding and odd
    white space give the fields parse_fields gives, each keeping its exact text."""
    plain = "v: SIP/2.0/UDP h\r\nX-Seen-Once-Only-Here :  a \r\nl:0\n"
    want = [
        ("v", "via", "SIP/2.0/UDP h", "v: SIP/2.0/UDP h\r\n"),
        ("X-Seen-Once-Only-Here", "x-seen-once-only-here", "a", "X-Seen-Once-Only-Here :  a \r\n"),
        ("l", "content-length", "0", "l:0\n"),
    ]
    assert _fields(plain) == want and _fields(plain) == want  # the second time from the memo
    folded = "Subject: a\r\n\tb\r\nl:0\n"
    assert _fields(folded) == [
        ("Subject", "subject", "a\tb", "Subject: a\r\n\tb\r\n"),
        ("l", "content-length", "0", "l:0\n"),
    ]
    assert [h.value for h in header.parse_fields(folded.split("\n")[:-1], 8, 100)] == [
        "a\tb",
        "0",
    ]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Via h\r\n", "without a colon"),
        (": x\r\n", "without a colon"),
        ("B@d: x\r\n", "bad header name"),
        (" x: y\r\n", "continuation line before any header"),
        ("a: b\r\n" * 9, "Too Many Headers"),
        ("a: " + "b" * 100 + "\r\n", "Header Too Long"),
    ],
)
def test_split_fields_refuses(text: str, reason: str) -> None:
    """Faults found on the fast path are reported as the careful path reports them."""
    with pytest.raises(ParseError, match=reason) as info:
        header.split_fields(text, 8, 100)
    assert info.value.status == 400


def test_split_fields_shares_fields_of_lines_seen_before_within_the_limits() -> None:
    """A line seen before gives the same (never changed) field again, so what was parsed
    from it is shared; the limits still apply to it."""
    text = "Via: SIP/2.0/UDP shared.example;branch=z9hG4bKs\r\nl: 0\r\n"
    header.split_fields(text, 8, 100)  # names seen for the first time: the careful path
    first, again = header.split_fields(text, 8, 100), header.split_fields(text, 8, 100)
    assert [h is g for h, g in zip(first, again, strict=True)] == [True, True]
    with pytest.raises(ParseError, match="Header Too Long"):
        header.split_fields(text, 8, 20)
    with pytest.raises(ParseError, match="Too Many Headers"):
        header.split_fields(text, 1, 100)


def test_messages_sharing_fields_change_independently() -> None:
    """Two messages parsed from the same bytes share fields; a change to one is not seen in
    the other."""
    data = (
        b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    message.parse(data)  # names seen for the first time: the careful path
    one, two = message.parse(data), message.parse(data)
    assert one.headers[0] is two.headers[0] and one.top_via is two.top_via
    changed = one.with_first_value("Via", "SIP/2.0/UDP b;branch=z9hG4bK2")
    assert changed.top_via.host == "b" and two.top_via.host == "a" and one.top_via.host == "a"
    assert message.parse(data).to_bytes() == data == two.to_bytes()
