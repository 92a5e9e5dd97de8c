"""Tests for L{sbc.core.routing}: Record-Route, loose_route (Kamailio rr), targets."""

from __future__ import annotations

import pytest

from sbc.core.address import Address, parse_address
from sbc.core.identity import LocalIdentity
from sbc.core.message import Request, parse
from sbc.core.routing import RouteOutcome, loose_route, record_route_value, uri_target
from sbc.core.uri import SipUri, parse_uri
from tests.helpers import request_bytes

IDENTITY = LocalIdentity.from_addresses(
    [parse_address("udp:203.0.113.1:5060"), parse_address("tcp:10.0.0.1:5070")]
)


def test_tv16_double_record_route() -> None:
    """In on udp 203.0.113.1:5060, out on tcp 10.0.0.1:5070, From tag abc: two r2 entries."""
    out = record_route_value(Address("tcp", "10.0.0.1", 5070), ftag="abc", r2=True)
    inn = record_route_value(Address("udp", "203.0.113.1", 5060), ftag="abc", r2=True)
    assert out == "<sip:10.0.0.1:5070;transport=tcp;r2=on;lr;ftag=abc>"
    assert inn == "<sip:203.0.113.1;r2=on;lr;ftag=abc>"
    same = record_route_value(Address("udp", "203.0.113.1", 5060), ftag="abc")
    assert same == "<sip:203.0.113.1;lr;ftag=abc>"


def test_record_route_advertised_and_ipv6() -> None:
    """advertise replaces the socket address; IPv6 is bracketed."""
    assert (
        record_route_value(Address("udp", "10.0.0.1", 5060), advertise=("198.51.100.9", None))
        == "<sip:198.51.100.9;lr>"
    )
    assert record_route_value(Address("tls", "::1", 5061)) == "<sip:[::1]:5061;transport=tls;lr>"


def request(uri: str, route: str, to_tag: bool, method: str = "BYE") -> Request:
    data = request_bytes(method=method, uri=uri, headers=[("Route", route)] if route else [])
    if to_tag:
        data = data.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=t1")
    m = parse(data)
    assert isinstance(m, Request)
    return m


def test_tv17_in_dialog_loose_route() -> None:
    """Our entry removed, next hop the next Route, R-URI unchanged."""
    r = request(
        "sip:bob@198.51.100.30:5062", "<sip:203.0.113.1;lr;ftag=abc>, <sip:10.0.0.50;lr>", True
    )
    result = loose_route(r, IDENTITY)
    assert result.outcome is RouteOutcome.NEXT_HOP
    assert str(result.next_hop) == "sip:10.0.0.50;lr"
    assert str(result.request.uri) == "sip:bob@198.51.100.30:5062"
    assert [str(x.uri) for x in result.request.routes] == ["sip:10.0.0.50;lr"]
    assert result.consumed[0].uri.param("ftag") == "abc"  # type: ignore[union-attr]


def test_tv17_preloaded_route_consumed() -> None:
    """An initial INVITE with only our Route: the Route goes, -3."""
    r = request("sip:bob@example.com", "<sip:203.0.113.1;lr>", False, "INVITE")
    result = loose_route(r, IDENTITY)
    assert result.outcome is RouteOutcome.PRELOADED_CONSUMED
    assert not result.request.has("route") and result.next_hop is None


def test_double_rr_pair_is_consumed_together() -> None:
    """Both r2 entries of ours are removed; in-dialog with nothing left: route by R-URI."""
    r = request(
        "sip:bob@198.51.100.30:5062",
        "<sip:10.0.0.1:5070;transport=tcp;r2=on;lr>, <sip:203.0.113.1;r2=on;lr>",
        True,
    )
    result = loose_route(r, IDENTITY)
    assert result.outcome is RouteOutcome.NEXT_HOP and result.next_hop is None
    assert len(result.consumed) == 2 and not result.request.has("route")


def test_foreign_top_route_is_the_next_hop() -> None:
    """A Route that is not ours is followed without removal."""
    r = request("sip:bob@example.com", "<sip:192.0.2.7;lr>", False, "INVITE")
    result = loose_route(r, IDENTITY)
    assert str(result.next_hop) == "sip:192.0.2.7;lr" and result.request.has("route")


def test_strict_router_next() -> None:
    """Next hop without lr: it becomes the R-URI, the old R-URI the last Route (§16.12)."""
    r = request("sip:bob@198.51.100.30", "<sip:203.0.113.1;lr>, <sip:192.0.2.8>", True)
    result = loose_route(r, IDENTITY)
    assert str(result.request.uri) == "sip:192.0.2.8"
    assert [str(x.uri) for x in result.request.routes] == ["sip:bob@198.51.100.30"]


def test_previous_hop_was_a_strict_router() -> None:
    """R-URI is ours in dialog: the last Route is the real target (RFC 3261 §16.4)."""
    r = request("sip:203.0.113.1;lr", "<sip:192.0.2.9;lr>, <sip:bob@198.51.100.30>", True)
    result = loose_route(r, IDENTITY)
    assert str(result.request.uri) == "sip:bob@198.51.100.30"
    assert str(result.next_hop) == "sip:192.0.2.9;lr"


def test_no_route() -> None:
    """No Route header: -1, nothing changed."""
    r = request("sip:bob@example.com", "", False)
    assert loose_route(r, IDENTITY).outcome is RouteOutcome.NO_ROUTE


@pytest.mark.parametrize(
    "uri, target",
    [
        ("sip:192.0.2.10", Address("udp", "192.0.2.10", 5060)),
        ("sip:bob@192.0.2.10:5080;transport=TCP", Address("tcp", "192.0.2.10", 5080)),
        ("sips:[2001:db8::1]", Address("tls", "2001:db8::1", 5061)),
        ("sip:bob@example.com;maddr=192.0.2.11", Address("udp", "192.0.2.11", 5060)),
        ("sip:example.com", None),
        ("sip:192.0.2.10;transport=sctp", None),
    ],
)
def test_uri_target(uri: str, target) -> None:  # type: ignore[no-untyped-def]
    """IP literal URIs name a transport address; names wait for DNS."""
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipUri)
    assert uri_target(parsed) == target


def test_uri_target_memo_is_bounded_and_keeps_received_texts_only(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The memo answers as the computation does, keys parsed URIs by their text only (a
    changed URI has none), keeps no text longer than the parse caches do, and is emptied
    when full."""
    import sbc.core.routing as routing

    routing._targets.clear()
    uri = parse_uri("sip:bob@192.0.2.10:5080;transport=tcp")
    assert isinstance(uri, SipUri)
    assert uri_target(uri) == uri_target(uri) == Address("tcp", "192.0.2.10", 5080)
    changed = uri.evolve(host="192.0.2.99")
    assert uri_target(changed) == Address("tcp", "192.0.2.99", 5080)
    long_uri = parse_uri("sip:" + "u" * 600 + "@192.0.2.10")
    assert isinstance(long_uri, SipUri) and uri_target(long_uri) is not None
    assert set(routing._targets) == {str(uri)}
    monkeypatch.setattr(routing, "_TARGETS_SIZE", 2)
    for port in range(5060, 5065):
        parsed = parse_uri(f"sip:192.0.2.10:{port}")
        assert isinstance(parsed, SipUri)
        assert uri_target(parsed) == Address("udp", "192.0.2.10", port)
    assert len(routing._targets) <= 2
