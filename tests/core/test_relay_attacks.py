"""
The edge is never an open relay: attacks on the proxy core from an untrusted source, with
[auth] on and an outbound proxy (a carrier trunk) configured, each run through sbc's own
policy and through the Kamailio-style recipes script (etc/routes_nat_recipes.py), which
writes the same policy with Kamailio's function names.
"""

from __future__ import annotations

import os
from typing import Optional

import pytest

from sbc.app.routescript import load_script
from sbc.core import routes_default
from sbc.core.address import Address
from sbc.core.auth import digest_response
from sbc.core.effects import OperatorEvent
from sbc.core.message import Request, Response, parse
from sbc.core.proxy import Proxy, ProxySettings
from sbc.core.relaypolicy import RouteSigner, TrustedPeers, parse_trusted
from sbc.core.transaction import Send, Timers
from sbc.core.uri import SipUri, parse_uri
from tests.core.test_auth import REALM, auth, ha1
from tests.helpers import ROOT, make_proxy, request_bytes

SBC = Address("udp", "127.0.0.1", 5060)
ATTACKER = Address("udp", "192.0.2.66", 5060)
ALICE = Address("udp", "192.0.2.5", 5062)
BOB = Address("udp", "192.0.2.21", 5081)
TRUNK = Address("udp", "198.51.100.7", 5060)
RECIPES = os.path.join(ROOT, "etc", "routes_nat_recipes.py")

ROUTERS = {"default": lambda: routes_default, "recipes": lambda: load_script(RECIPES)}


@pytest.fixture(params=sorted(ROUTERS))
def p(request) -> Proxy:  # type: ignore[no-untyped-def]
    trunk = parse_uri("sip:198.51.100.7;lr")
    assert isinstance(trunk, SipUri)
    settings = ProxySettings(
        timers=Timers(),
        outbound_proxy=trunk,
        trusted=TrustedPeers(parse_trusted("udp:198.51.100.7:5060")),
    )
    proxy = make_proxy([SBC], settings, trusted=None, auth=auth())
    proxy.router = ROUTERS[request.param]()
    return proxy


def message(
    method: str,
    uri: str,
    *,
    sender: str = "alice@sbc.test",
    source: Address = ALICE,
    to_tag: Optional[str] = None,
    headers: tuple = (),
    call_id: str = "call-1",
    branch: str = "z9hG4bKa1",
) -> Request:
    data = request_bytes(
        method,
        uri,
        via=f"SIP/2.0/UDP {source.host}:{source.port};branch={branch};rport",
        headers=[
            ("Contact", f"<sip:{sender.split('@')[0]}@{source.host}:{source.port}>"),
            *headers,
        ],
        call_id=call_id,
    )
    data = data.replace(b"From: <sip:alice@example.com>", f"From: <sip:{sender}>".encode())
    if to_tag:
        data = data.replace(
            b"To: <sip:bob@example.com>", f"To: <sip:bob@sbc.test>;tag={to_tag}".encode()
        )
    m = parse(data)
    assert isinstance(m, Request)
    return m


def receive(p: Proxy, request: Request, source: Address, now: float = 1000.0) -> list:
    return p.receive_request(request, source, SBC, now)


def sent_to(effects: list, peer: Address) -> list:
    return [e.message for e in effects if isinstance(e, Send) and e.peer == peer]


def final(effects: list, peer: Address) -> Response:
    [response] = [m for m in sent_to(effects, peer) if isinstance(m, Response) and m.status >= 200]
    return response


def credentials(challenge: Response, request: Request, user: str, password: str) -> str:
    header = challenge.get("Proxy-Authenticate") or challenge.get("WWW-Authenticate") or ""
    nonce = header.split('nonce="')[1].split('"')[0]
    uri = str(request.uri)
    response = digest_response(
        "MD5",
        ha1(user, password, "MD5"),
        nonce,
        request.method,
        uri,
        "auth",
        "00000001",
        "c0",
    )
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0"'
    )


def register_bob(p: Proxy) -> None:
    def reg(extra: tuple = (), branch: str = "z9hG4bKr1") -> Response:
        request = message(
            "REGISTER",
            "sip:sbc.test",
            sender="bob@sbc.test",
            source=BOB,
            branch=branch,
            headers=extra,
        )
        request = request.with_header("To", "<sip:bob@sbc.test>")
        assert isinstance(request, Request)
        return final(receive(p, request, BOB), BOB)

    challenge = reg()
    assert challenge.status == 401
    plain = message("REGISTER", "sip:sbc.test", sender="bob@sbc.test", source=BOB)
    auth_value = credentials(challenge, plain, "bob", "hunter2")
    assert reg((("Authorization", auth_value),), "z9hG4bKr2").status == 200


# -- the attacks of the table -------------------------------------------------------------


def test_foreign_to_foreign_invite_is_403_and_never_reaches_the_trunk(p: Proxy) -> None:
    effects = receive(
        p,
        message(
            "INVITE", "sip:+15551234@trunk.example", sender="attacker@evil.example", source=ATTACKER
        ),
        ATTACKER,
    )
    assert final(effects, ATTACKER).status == 403
    assert not sent_to(effects, TRUNK)


def test_ip_literal_request_uri_with_a_foreign_from_is_403(p: Proxy) -> None:
    effects = receive(
        p,
        message("INVITE", "sip:+1555@203.0.113.77", sender="x@evil.example", source=ATTACKER),
        ATTACKER,
    )
    assert final(effects, ATTACKER).status == 403
    assert not [e for e in effects if isinstance(e, Send) and e.peer.host == "203.0.113.77"]


def test_forged_to_tag_does_not_skip_authentication(p: Proxy) -> None:
    effects = receive(p, message("INVITE", "sip:+15551234@trunk.example", to_tag="forged"), ALICE)
    assert final(effects, ALICE).status == 404
    assert not sent_to(effects, TRUNK)


def test_message_from_our_user_to_the_trunk_is_challenged(p: Proxy) -> None:
    effects = receive(p, message("MESSAGE", "sip:+15551234@trunk.example"), ALICE)
    challenge = final(effects, ALICE)
    assert challenge.status == 407 and challenge.has("Proxy-Authenticate")
    assert not sent_to(effects, TRUNK)


def test_register_without_credentials_is_challenged(p: Proxy) -> None:
    request = message("REGISTER", "sip:sbc.test", sender="bob@sbc.test").with_header(
        "To", "<sip:bob@sbc.test>"
    )
    assert isinstance(request, Request)
    assert final(receive(p, request, ALICE), ALICE).status == 401
    assert len(p.registrar) == 0


def test_a_route_copied_from_another_sbc_does_not_open_the_relay(p: Proxy) -> None:
    other = RouteSigner(b"another sbc's secret").sign("call-1", "from1")
    route = ("Route", f"<sip:127.0.0.1;lr;ftag=from1;sig={other}>")
    effects = receive(
        p, message("INVITE", "sip:+15551234@198.51.100.7", to_tag="t", headers=(route,)), ALICE
    )
    assert final(effects, ALICE).status == 404
    assert not sent_to(effects, TRUNK)


def test_an_unsigned_route_to_us_then_elsewhere_is_not_followed(p: Proxy) -> None:
    routes = ("Route", "<sip:127.0.0.1;lr>, <sip:198.51.100.7;lr>")
    effects = receive(
        p, message("BYE", "sip:x@198.51.100.7", to_tag="t", headers=(routes,)), ATTACKER
    )
    assert final(effects, ATTACKER).status == 404 and not sent_to(effects, TRUNK)


def test_a_stray_ack_is_absorbed(p: Proxy) -> None:
    effects = receive(p, message("ACK", "sip:+1555@198.51.100.7", to_tag="t"), ATTACKER)
    assert effects == [] or not [e for e in effects if isinstance(e, Send)]


def test_an_alias_in_an_initial_request_uri_is_not_followed(p: Proxy) -> None:
    effects = receive(
        p,
        message(
            "INVITE",
            "sip:bob@127.0.0.1;alias=198.51.100.7~5060~1",
            sender="x@evil.example",
            source=ATTACKER,
        ),
        ATTACKER,
    )
    assert not sent_to(effects, TRUNK)
    assert final(effects, ATTACKER).status == 404  # bob is not registered


def test_a_forged_path_entry_is_not_followed(p: Proxy) -> None:
    route = ("Route", "<sip:127.0.0.1:5060;lr;received=sip:198.51.100.7:5060>")
    effects = receive(
        p,
        message(
            "INVITE", "sip:x@10.0.0.10", sender="x@evil.example", source=ATTACKER, headers=(route,)
        ),
        ATTACKER,
    )
    assert not sent_to(effects, TRUNK)
    assert final(effects, ATTACKER).status == 403


def test_credentials_of_another_user_are_403(p: Proxy) -> None:
    request = message("INVITE", "sip:+15551234@trunk.example")
    challenge = final(receive(p, request, ALICE), ALICE)
    stolen = credentials(challenge, request, "bob", "hunter2")
    again = message(
        "INVITE",
        "sip:+15551234@trunk.example",
        branch="z9hG4bKa2",
        headers=(("Proxy-Authorization", stolen),),
    )
    effects = receive(p, again, ALICE, 1001.0)
    assert final(effects, ALICE).status == 403 and not sent_to(effects, TRUNK)


def test_digest_uri_must_be_the_request_uri(p: Proxy) -> None:
    request = message("INVITE", "sip:+15551234@trunk.example")
    challenge = final(receive(p, request, ALICE), ALICE)
    elsewhere = message("INVITE", "sip:bob@sbc.test")
    value = credentials(challenge, elsewhere, "alice", "secret")  # for another R-URI
    again = message(
        "INVITE",
        "sip:+15551234@trunk.example",
        branch="z9hG4bKa2",
        headers=(("Proxy-Authorization", value),),
    )
    effects = receive(p, again, ALICE, 1001.0)
    assert final(effects, ALICE).status == 407 and not sent_to(effects, TRUNK)


def test_refusals_are_reported_for_counting() -> None:
    settings = ProxySettings(timers=Timers())
    proxy = make_proxy([SBC], settings, trusted=None)
    effects = receive(
        proxy,
        message("INVITE", "sip:x@trunk.example", sender="a@evil.example", source=ATTACKER),
        ATTACKER,
    )
    effects += receive(
        proxy, message("BYE", "sip:x@trunk.example", to_tag="t", call_id="c2"), ATTACKER
    )
    events = [e.event for e in effects if isinstance(e, OperatorEvent)]
    assert events == ["relay_forbidden", "not_here"]


# -- the legitimate paths ------------------------------------------------------------------------


def test_authenticated_user_reaches_the_trunk_without_our_credentials(p: Proxy) -> None:
    request = message("INVITE", "sip:+15551234@trunk.example")
    challenge = final(receive(p, request, ALICE), ALICE)
    other_realm = 'Digest username="alice", realm="carrier", nonce="n", uri="x", response="r"'
    value = credentials(challenge, request, "alice", "secret")
    again = message(
        "INVITE",
        "sip:+15551234@trunk.example",
        branch="z9hG4bKa2",
        headers=(("Proxy-Authorization", value), ("Proxy-Authorization", other_realm)),
    )
    [out] = sent_to(receive(p, again, ALICE, 1001.0), TRUNK)
    assert out.get_all("Proxy-Authorization") == [other_realm]  # ours consumed, theirs kept


def test_trunk_reaches_a_registered_user_and_bye_goes_both_ways(p: Proxy) -> None:
    register_bob(p)
    invite = message("INVITE", "sip:bob@sbc.test", sender="+15551234@trunk.example", source=TRUNK)
    [out] = sent_to(receive(p, invite, TRUNK), BOB)
    assert isinstance(out, Request)
    record_route = out.get("Record-Route")
    assert record_route is not None and ";sig=" in record_route
    ok = parse(
        (
            "SIP/2.0 200 OK\r\n"
            + "".join(f"Via: {v}\r\n" for v in out.get_all("Via"))
            + f"Record-Route: {record_route}\r\nFrom: {out.get('From')}\r\n"
            + f"To: {out.get('To')};tag=bobtag\r\nCall-ID: {out.call_id}\r\nCSeq: 1 INVITE\r\n"
            + "Contact: <sip:bob@192.0.2.21:5081>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(ok, Response)
    [relayed] = sent_to(p.receive_response(ok, BOB, 1001.0), TRUNK)
    assert relayed.status == 200
    # The callee hangs up through our signed Route; from an address sbc never trusted.
    bye = parse(
        (
            "BYE sip:+15551234@198.51.100.7 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.21:5081;branch=z9hG4bKbye1;rport\r\nMax-Forwards: 70\r\n"
            f"Route: {record_route}\r\nFrom: <sip:bob@sbc.test>;tag=bobtag\r\n"
            f"To: {out.get('From')}\r\nCall-ID: {out.call_id}\r\nCSeq: 2 BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(bye, Request)
    [forwarded] = sent_to(receive(p, bye, BOB, 1002.0), TRUNK)
    assert isinstance(forwarded, Request) and forwarded.method == "BYE"
    # The caller's BYE the other way, also through the signed Route.
    bye2 = parse(
        (
            "BYE sip:bob@192.0.2.21:5081 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKbye2;rport\r\nMax-Forwards: 70\r\n"
            f"Route: {record_route}\r\nFrom: {out.get('From')}\r\n"
            f"To: <sip:bob@sbc.test>;tag=bobtag\r\nCall-ID: {out.call_id}\r\nCSeq: 3 BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(bye2, Request)
    assert [m.method for m in sent_to(receive(p, bye2, ALICE, 1003.0), BOB)] == ["BYE"]


def test_a_forged_bye_leaves_the_dialog_alone(p: Proxy) -> None:
    register_bob(p)
    invite = message(
        "INVITE", "sip:bob@sbc.test", sender="+1555@trunk.example", source=TRUNK, call_id="c9"
    )
    [out] = sent_to(receive(p, invite, TRUNK), BOB)
    ok = parse(
        (
            "SIP/2.0 200 OK\r\n"
            + "".join(f"Via: {v}\r\n" for v in out.get_all("Via"))
            + f"From: {out.get('From')}\r\nTo: {out.get('To')};tag=bobtag\r\n"
            + "Call-ID: c9\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(ok, Response)
    p.receive_response(ok, BOB, 1001.0)
    assert p.sizes()["dialogs"] == 1
    forged = message(
        "BYE",
        "sip:bob@192.0.2.21:5081",
        to_tag="wrongtag",
        call_id="c9",
        sender="+1555@trunk.example",
    )
    effects = receive(p, forged, ATTACKER, 1002.0)
    assert final(effects, ATTACKER).status == 404 and not sent_to(effects, BOB)
    assert p.sizes()["dialogs"] == 1


# -- a dialog is no relay ticket ------------------------------------------------------------------


def early_dialog(p: Proxy) -> tuple[Request, Request]:
    """An unauthenticated caller on the internet calls bob (allowed: our domain); bob
    rings.  The INVITE as bob got it, and the caller's view of its Record-Route."""
    register_bob(p)
    invite = message(
        "INVITE", "sip:bob@sbc.test", sender="x@evil.example", source=ATTACKER, call_id="d1"
    )
    [out] = sent_to(receive(p, invite, ATTACKER), BOB)
    ringing = parse(
        (
            "SIP/2.0 180 Ringing\r\n"
            + "".join(f"Via: {v}\r\n" for v in out.get_all("Via"))
            + f"Record-Route: {out.get('Record-Route')}\r\nFrom: {out.get('From')}\r\n"
            + f"To: {out.get('To')};tag=bobtag\r\nCall-ID: d1\r\nCSeq: 1 INVITE\r\n"
            + "Contact: <sip:bob@192.0.2.21:5081>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(ringing, Response)
    p.receive_response(ringing, BOB, 1000.5)
    assert p.sizes()["dialogs"] == 1
    return invite, out


def test_a_known_dialog_does_not_carry_requests_elsewhere(p: Proxy) -> None:
    _, out = early_dialog(p)
    route = ("Route", out.get("Record-Route"))
    for headers in ((), (route,)):
        elsewhere = message(
            "MESSAGE",
            "sip:+1555@198.51.100.7",
            sender="x@evil.example",
            source=ATTACKER,
            call_id="d1",
            to_tag="bobtag",
            headers=headers,
            branch=f"z9hG4bKm{len(headers)}",
        ).with_header("From", f"{out.get('From')}")
        assert isinstance(elsewhere, Request)
        effects = receive(p, elsewhere, ATTACKER, 1001.0)
        assert final(effects, ATTACKER).status == 404
        assert not sent_to(effects, TRUNK)
    # ... while a request to the other side's target goes through.
    prack = message(
        "INFO",
        "sip:bob@192.0.2.21:5081",
        sender="x@evil.example",
        source=ATTACKER,
        call_id="d1",
        to_tag="bobtag",
        headers=(route,),
        branch="z9hG4bKok",
    ).with_header("From", f"{out.get('From')}")
    assert isinstance(prack, Request)
    assert [m.method for m in sent_to(receive(p, prack, ATTACKER, 1002.0), BOB)] == ["INFO"]


def test_a_kept_record_route_with_other_tags_routes_nothing(p: Proxy) -> None:
    _, out = early_dialog(p)
    route = ("Route", out.get("Record-Route"))
    replay = message(
        "INVITE",
        "sip:+1555@198.51.100.7",
        sender="x@evil.example",
        source=ATTACKER,
        call_id="d1",
        to_tag="othertag",
        headers=(route,),
        branch="z9hG4bKreplay",
    )
    effects = receive(p, replay, ATTACKER, 1001.0)
    assert final(effects, ATTACKER).status == 404 and not sent_to(effects, TRUNK)


def test_a_forged_2xx_is_not_reflected_to_its_second_via(p: Proxy) -> None:
    victim = Address("udp", "203.0.113.99", 5060)
    forged = parse(
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsbc0123456789ab.0123456789abcdef01\r\n"
        b"Via: SIP/2.0/UDP 203.0.113.99:5060;branch=z9hG4bKv\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: f1\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(forged, Response)
    effects = p.receive_response(forged, ATTACKER, 1000.0)
    assert not [e for e in effects if isinstance(e, Send) and e.peer == victim]
