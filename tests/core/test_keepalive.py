"""Tests for L{sbc.core.keepalive}: nathelper's SIP ping, nat_traversal's REGISTER lifecycle,
spreading, conditions, the state file."""

from __future__ import annotations

from random import Random

from sbc.core.address import Address
from sbc.core.keepalive import (
    Endpoint,
    KeepaliveSettings,
    KeepaliveTable,
    decode_state,
    encode_state,
)
from sbc.core.message import Request, Response, parse
from sbc.core.registrar import Binding
from sbc.core.reply import make_response
from sbc.core.uri import SipUri, parse_name_addr, parse_uri

NAT = Address("udp", "198.51.100.20", 40123)
SOCK = Address("udp", "203.0.113.1", 5060)


def table(**kw) -> KeepaliveTable:  # type: ignore[no-untyped-def]
    return KeepaliveTable(KeepaliveSettings(**kw), Random(1))


def pings_over(t: KeepaliveTable, start: float, seconds: int) -> list:
    out = []
    for s in range(seconds):
        out += [(start + s, p) for p in t.tick(start + s)]
    return out


def test_tv14_nathelper_sip_ping() -> None:
    """nathelper SIP ping: OPTIONS to the NAT address, one Via with a 7-digit branch, From
    tag, no Contact."""
    t = table(
        style="nathelper", interval=30, method="OPTIONS", from_uri="sip:pinger@sbc.example.net"
    )
    t.registered(NAT, SOCK, 5000.0, 1000.0, natted=True)
    [(when, ping)] = pings_over(t, 1000.0, 30)
    assert ping.address == NAT and ping.local == SOCK
    request = parse(ping.data)
    assert isinstance(request, Request)
    assert str(request.uri) == "sip:198.51.100.20:40123"
    assert len(request.vias) == 1 and str(request.top_via).startswith(
        "SIP/2.0/UDP 203.0.113.1:5060"
    )
    assert request.top_via.branch is not None and len(request.top_via.branch) == 14
    assert request.from_.uri == parse_uri("sip:pinger@sbc.example.net") and request.from_.tag
    assert str(request.to.uri) == "sip:198.51.100.20:40123"
    assert request.cseq.number == 1 and request.max_forwards == 70
    assert not request.has("Contact") and request.get("Content-Length") == "0"


def test_tv14_udp4_and_streams() -> None:
    """Without SIP pinging: four zero bytes; a TCP endpoint gets CRLFCRLF."""
    t = table(style="nathelper", interval=10, method="udp4")
    t.registered(NAT, SOCK, 5000.0, 0.0)
    tcp = Address("tcp", "198.51.100.21", 40000)
    t.registered(tcp, None, 5000.0, 0.0)
    sent = {p.address: p.data for _, p in pings_over(t, 0.0, 10)}
    assert sent == {NAT: b"\x00\x00\x00\x00", tcp: b"\r\n\r\n"}


def test_tv14_keepalive_timeout_evicts_silent_contacts() -> None:
    """A contact that never answers is evicted after keepalive_timeout; answers keep it."""
    t = table(
        style="nathelper",
        interval=10,
        method="OPTIONS",
        keepalive_timeout=120,
        from_uri="sip:pinger@sbc.example.net",
    )
    t.registered(NAT, SOCK, 99999.0, 0.0)
    quiet = Address("udp", "198.51.100.30", 5060)
    t.registered(quiet, SOCK, 99999.0, 0.0)
    for second in range(0, 200):
        for ping in t.tick(float(second)):
            if ping.address == NAT:
                reply = make_response(parse(ping.data), 200)  # type: ignore[arg-type]
                assert t.reply(parse(reply.to_bytes()), NAT, float(second))  # type: ignore[arg-type]
    assert NAT in t.endpoints and quiet not in t.endpoints
    assert t.take_evicted() == [quiet] and t.evictions == 1 and t.replies > 10


def test_tv15_nat_traversal_register_lifecycle() -> None:
    """Expiry only moves forward; sbc, unlike nat_traversal, ends it on de-registration."""
    t = table(style="nat_traversal", interval=60, method="NOTIFY")
    t.registered(NAT, SOCK, 1600.0, 1000.0)
    assert t.counts(1000.0) == {
        "keepalive_endpoints": 1,
        "registered_endpoints": 1,
        "subscribed_endpoints": 0,
        "dialog_endpoints": 0,
    }
    t.registered(NAT, SOCK, 1500.0, 1200.0)  # refresh with expires=300
    assert t.endpoints[NAT].registered_until == 1600.0
    [(_, ping)] = pings_over(t, 1200.0, 60)
    notify = parse(ping.data)
    assert isinstance(notify, Request) and notify.method == "NOTIFY"
    assert str(notify.uri) == "sip:198.51.100.20:40123" and notify.get("Event") == "keep-alive"
    assert str(notify.from_.uri) == "sip:keepalive@203.0.113.1" and notify.from_.tag
    pings_over(t, 1601.0, 60)
    assert t.counts(1700.0)["keepalive_endpoints"] == 0
    t.registered(NAT, SOCK, 1600.0, 1000.0)
    t.registered(NAT, SOCK, 0.0, 1250.0)  # de-registration: sbc ends the condition at once
    assert NAT not in t.endpoints


def test_tv15_contact_match() -> None:
    """contact_match 0: exact URI text; 1: scheme, user, host, port, transport."""
    request = [parse_name_addr("<sip:alice@192.168.1.10:5060>")]
    reply = [parse_name_addr("<sip:alice@192.168.1.10:5060;ob>;expires=600")]
    assert table(contact_match=0).register_reply_expiry(request, reply) == 0
    assert table(contact_match=1).register_reply_expiry(request, reply) == 600


def test_dialog_conditions() -> None:
    """A dialog keeps the caller; the callee only if it had an entry; ends with the dialog."""
    t = table(style="nat_traversal", interval=60, method="NOTIFY")
    callee = Address("udp", "198.51.100.40", 5060)
    t.dialog_started(("c", "a", "b"), NAT, SOCK, 0.0)
    t.dialog_started(("c", "a", "b"), callee, SOCK, 0.0, create=False)
    assert NAT in t.endpoints and callee not in t.endpoints
    assert t.counts(0.0)["dialog_endpoints"] == 1
    t.dialog_ended(("c", "a", "b"), 1.0)
    assert not t.endpoints


def test_work_is_spread_over_the_interval() -> None:
    """1000 endpoints over a 30 s interval: each pinged once, no second carries a burst."""
    t = table(style="nathelper", interval=30, method="udp4")
    for i in range(1000):
        t.registered(Address("udp", f"198.51.{i // 250}.{i % 250}", 5060 + i), SOCK, 1e9, 0.0)
    per_second = [len(t.tick(float(s))) for s in range(30)]
    assert sum(per_second) == 1000
    assert max(per_second) < 3 * 1000 / 30


def test_disabled_switch_stops_pings_but_keeps_endpoints() -> None:
    """The runtime switch (enable_ping 0) sends nothing and forgets nothing."""
    t = table(style="nathelper", interval=5, method="udp4")
    t.registered(NAT, SOCK, 1e9, 0.0)
    t.enabled = False
    assert pings_over(t, 0.0, 5) == [] and NAT in t.endpoints


def test_replies_to_other_requests_are_not_consumed() -> None:
    """Only replies carrying our Call-ID prefix and the ping method are ours."""
    t = table(style="nathelper", interval=5, method="OPTIONS", from_uri="sip:p@x")
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: other\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    response = parse(data)
    assert isinstance(response, Response) and not t.reply(response, NAT, 0.0)


def test_state_file_round_trip_drops_the_expired_and_reports_bad_lines() -> None:
    """Endpoints and bindings survive; expired ones and malformed lines are skipped."""
    uri = parse_uri("sip:alice@10.0.0.10:5070")
    assert isinstance(uri, SipUri)
    live = Binding(uri, 2000.0, 0.5, "cid-1", 3, NAT, SOCK, (), NAT)
    old = Binding(uri, 500.0, None, "cid-2", 1, NAT, None)
    endpoints = [
        Endpoint(NAT, SOCK, registered_until=2000.0, natted=True),
        Endpoint(Address("udp", "198.51.100.9", 1), None, registered_until=10.0),
    ]
    text = encode_state(endpoints, [("alice", live), ("bob", old)]) + "E garbage\n"
    loaded, bindings, problems = decode_state(text, 1000.0)
    assert [e.address for e in loaded] == [NAT] and loaded[0].local == SOCK and loaded[0].natted
    assert bindings == [("alice", live)]
    assert len(problems) == 1 and problems[0].startswith("line ")


def test_sip_ping_addressed_to_the_registered_contact() -> None:
    """nathelper's sipping: Request-URI and To are the registered Contact; the ping goes to
    the NAT address the contact registered from."""
    t = table(style="nathelper", interval=30, method="OPTIONS", from_uri="sip:pinger@sbc.test")
    t.registered(NAT, SOCK, 5000.0, 1000.0, natted=True, contact="sip:alice@10.0.0.10:5070")
    [(_, ping)] = pings_over(t, 1000.0, 30)
    assert (ping.address, ping.local) == (NAT, SOCK)
    request = parse(ping.data)
    assert isinstance(request, Request)
    assert str(request.uri) == str(request.to.uri) == "sip:alice@10.0.0.10:5070"
    # A refresh without a contact (a relayed REGISTER's 2xx) keeps the one known.
    t.registered(NAT, SOCK, 6000.0, 1030.0)
    assert t.endpoints[NAT].contact == "sip:alice@10.0.0.10:5070"


def test_endpoints_without_a_contact_keep_the_nat_address() -> None:
    """Subscriptions, dialogs and contacts that could split the message: sip:ip:port."""
    t = table(style="nat_traversal", interval=30, method="NOTIFY")
    t.subscribed(NAT, SOCK, 5000.0, 1000.0)
    odd = Address("udp", "198.51.100.21", 5060)
    t.registered(odd, SOCK, 5000.0, 1000.0, contact="sip:a@h\r\nX: y")
    uris = {p.address: str(parse(p.data).uri) for _, p in pings_over(t, 1000.0, 30)}
    assert uris == {NAT: "sip:198.51.100.20:40123", odd: "sip:198.51.100.21:5060"}


def test_restored_bindings_name_the_contact_to_ping() -> None:
    """After a restart the endpoints learn their contacts from the restored bindings (the
    one that expires last)."""
    t = table(style="nathelper", interval=30, method="OPTIONS")
    t.restore(Endpoint(NAT, SOCK, registered_until=5000.0))
    older = Binding(parse_uri("sip:a@10.0.0.10:5070"), 3000.0, None, "c1", 1, NAT)  # type: ignore[arg-type]
    newer = Binding(parse_uri("sip:b@10.0.0.10:5070"), 4000.0, None, "c2", 1, NAT)  # type: ignore[arg-type]
    t.restore_contacts([("a", older), ("b", newer)])
    assert t.endpoints[NAT].contact == "sip:b@10.0.0.10:5070"


def test_proxy_save_location_gives_the_contact_to_the_table() -> None:
    """A REGISTER from behind NAT through the proxy: the ping's R-URI is the contact, its
    destination the NAT address."""
    from tests.helpers import make_proxy, request_bytes

    proxy = make_proxy([SOCK], keepalive=table(style="nathelper", interval=30, method="OPTIONS"))
    data = request_bytes(
        "REGISTER",
        "sip:sbc.test",
        via="SIP/2.0/UDP 10.0.0.10:5070;branch=z9hG4bKr1;rport",
        headers=[("Contact", "<sip:alice@10.0.0.10:5070>"), ("Expires", "300")],
    ).replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")
    request = parse(data)
    assert isinstance(request, Request)
    proxy.receive_request(request, NAT, SOCK, 1000.0)
    [(_, ping)] = pings_over(proxy.keepalive, 1000.0, 30)
    sent = parse(ping.data)
    assert isinstance(sent, Request) and ping.address == NAT
    assert str(sent.uri) == str(sent.to.uri) == "sip:alice@10.0.0.10:5070"
