"""Tests for L{sbc.core.proxy}: what sbc answers before the stateful proxy exists."""

from __future__ import annotations

from typing import Optional

import pytest

from sbc.core.address import parse_address
from sbc.core.message import Request, parse
from sbc.core.proxy import LocalIdentity, handle_request
from sbc.core.uri import SipUri, parse_uri
from tests.helpers import request_bytes, rfc4475

IDENTITY = LocalIdentity.from_addresses(
    [parse_address("udp:127.0.0.1:5060"), parse_address("tls:[::1]:5061")],
    advertise=[("198.51.100.1", None)],
    domains=["sbc.test"],
)


def answer(data: bytes) -> Optional[int]:
    m = parse(data)
    assert isinstance(m, Request)
    response = handle_request(m, IDENTITY)
    return None if response is None else response.status


@pytest.mark.parametrize(
    "uri, mine",
    [
        ("sip:sbc.test", True),
        ("sip:alice@SBC.test:9999", True),
        ("sip:127.0.0.1", True),
        ("sip:127.0.0.1:5060", True),
        ("sip:127.0.0.1:5070", False),
        ("sips:[::1]", True),
        ("sip:[::1]:5061", True),
        ("sip:198.51.100.1", True),
        ("sip:example.com", False),
    ],
)
def test_is_myself(uri: str, mine: bool) -> None:
    """Our addresses (with a matching port) and alias domains are ours."""
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipUri)
    assert IDENTITY.is_myself(parsed) is mine


def test_options_to_us_gets_200_with_capabilities() -> None:
    """OPTIONS to sbc itself: 200 with Allow, Supported and Accept."""
    m = parse(request_bytes())
    assert isinstance(m, Request)
    response = handle_request(m, IDENTITY)
    assert response is not None and response.status == 200
    assert "OPTIONS" in (response.get("Allow") or "")
    assert response.has("Supported") and response.get("Accept") == "application/sdp"
    assert response.to.tag


@pytest.mark.parametrize(
    "data, status",
    [
        (request_bytes(method="ACK"), None),
        (request_bytes(method="INVITE", uri="sip:alice@sbc.test"), 501),
        (request_bytes(method="REGISTER", uri="sip:sbc.test"), 501),
        (request_bytes(uri="sip:bob@example.com"), 403),
        (rfc4475("unkscm"), 416),
        (rfc4475("novelsc"), 416),
        (rfc4475("bext01"), 420),
        (rfc4475("zeromf"), 483),
        (request_bytes(headers=[("Require", "100rel")]), 420),
    ],
)
def test_other_requests(data: bytes, status: Optional[int]) -> None:
    """ACK is absorbed; the rest get a precise refusal."""
    assert answer(data) == status


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sbc.core.errors import ParseError  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_any_parseable_request_gets_a_serialisable_answer(at: int, junk: bytes) -> None:
    """Whatever bytes a parseable request carries, deciding and serialising the answer
    raises nothing but ParseError (no encoding errors from odd bytes)."""
    for base in (request_bytes(), request_bytes(uri="sip:x@example.com")):
        data = base[: at % len(base)] + junk + base[at % len(base) :]
        try:
            m = parse(data)
            if isinstance(m, Request):
                response = handle_request(m, IDENTITY)
                if response is not None:
                    parse(response.to_bytes())
        except ParseError:
            pass


def test_non_utf8_bytes_do_not_break_replies() -> None:
    """Invalid UTF-8 in Call-ID and display name still yields a reply that round-trips."""
    data = request_bytes(call_id="CALLID").replace(b"CALLID", b"\xff\xfe@h")
    data = data.replace(b"From: <", b'From: "\xc3\x28" <')
    assert b"\xff\xfe@h" in data
    m = parse(data)
    assert isinstance(m, Request)
    response = handle_request(m, IDENTITY)
    assert response is not None
    again = parse(response.to_bytes())
    assert again.call_id == m.call_id and again.from_.display == m.from_.display
