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
