"""Tests for L{sbc.core.nat}: RFC 3581 received/rport and response targets."""

from __future__ import annotations

import pytest

from sbc.core.message import Request, parse
from sbc.core.nat import response_target, stamp_via
from sbc.core.uri import parse_via
from tests.helpers import request_bytes


def request(via: str) -> Request:
    m = parse(request_bytes(via=via))
    assert isinstance(m, Request)
    return m


@pytest.mark.parametrize(
    "via, source, expected",
    [
        # sent-by equals the source and no rport: untouched (RFC 3261 §18.2.1)
        (
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
            ("192.0.2.1", 5060),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
        ),
        # behind NAT: received added
        (
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1",
            ("203.0.113.7", 40000),
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=203.0.113.7",
        ),
        # rport asked for: filled in, received always added (RFC 3581 §4)
        (
            "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1",
            ("192.0.2.1", 5060),
            "SIP/2.0/UDP 192.0.2.1:5060;rport=5060;branch=z9hG4bK1;received=192.0.2.1",
        ),
        # a host name is always stamped
        (
            "SIP/2.0/TCP pc.example.com;branch=z9hG4bK1",
            ("192.0.2.9", 1234),
            "SIP/2.0/TCP pc.example.com;branch=z9hG4bK1;received=192.0.2.9",
        ),
        # IPv6 source, bare in received
        (
            "SIP/2.0/UDP [2001:db8::5];rport;branch=z9hG4bK1",
            ("2001:db8::6", 5062),
            "SIP/2.0/UDP [2001:db8::5];rport=5062;branch=z9hG4bK1;received=2001:db8::6",
        ),
    ],
)
def test_stamp_via(via: str, source: tuple[str, int], expected: str) -> None:
    """received/rport on the top Via follow RFC 3261 §18.2.1 and RFC 3581."""
    stamped = stamp_via(request(via), *source)
    assert str(stamped.top_via) == expected


def test_stamp_via_leaves_the_input_alone_and_other_vias_verbatim() -> None:
    """The input message is unchanged; lower Vias in the same field are kept."""
    original = request(
        "SIP/2.0/UDP 10.0.0.5;rport;branch=z9hG4bK1, SIP/2.0/UDP p.example;branch=z9hG4bK0"
    )
    stamped = stamp_via(original, "203.0.113.7", 4000)
    assert original.top_via.rport == ""
    assert stamped.top_via.rport == "4000"
    assert str(stamped.vias[1]) == "SIP/2.0/UDP p.example;branch=z9hG4bK0"


def test_force_rport() -> None:
    """force_rport stamps rport even when the client did not ask."""
    stamped = stamp_via(
        request("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1"), "203.0.113.7", 4000, force_rport=True
    )
    assert stamped.top_via.rport == "4000" and stamped.top_via.received == "203.0.113.7"


@pytest.mark.parametrize(
    "via, target",
    [
        ("SIP/2.0/UDP 10.0.0.5:5070;rport=4000;received=203.0.113.7", ("203.0.113.7", 4000)),
        ("SIP/2.0/UDP 10.0.0.5:5070;received=203.0.113.7", ("203.0.113.7", 5070)),
        ("SIP/2.0/UDP 192.0.2.1", ("192.0.2.1", 5060)),
        ("SIP/2.0/TLS 192.0.2.1", ("192.0.2.1", 5061)),
        ("SIP/2.0/UDP h.example;maddr=239.1.1.1;received=192.0.2.3", ("239.1.1.1", 5060)),
        ("SIP/2.0/UDP [2001:db8::5];rport=5062;received=2001:db8::6", ("2001:db8::6", 5062)),
    ],
)
def test_response_target(via: str, target: tuple[str, int]) -> None:
    """Responses go to maddr, else received:rport, else sent-by (RFC 3261 §18.2.2, RFC 3581)."""
    assert response_target(parse_via(via)) == target
