"""Tests for media anchoring's lifecycle in L{sbc.core.proxy}: when the proxy
asks the relay to rewrite SDP (offer, answer, late offer), what it sends meanwhile, and when
it releases the media session."""

from __future__ import annotations

from typing import Optional

from sbc.core.address import Address
from sbc.core.message import Request, Response, parse
from sbc.core.proxy import Anchor, Proxy, ProxySettings, ReleaseMedia
from sbc.core.reply import make_response
from tests.core.proxyhelpers import (
    BOB1,
    CALLER,
    SBC,
    TIMERS,
    register,
    send_request,
    sent,
    statuses,
)
from tests.helpers import make_proxy, request_bytes

SDP = (
    b"v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)
RELAYED = SDP.replace(b"192.0.2.10", b"203.0.113.1").replace(b"4000", b"30000")
PRIVATE_BOB = Address("udp", "10.0.1.10", 5070)


def media_proxy(policy: str = "always", on: bool = True) -> Proxy:
    return make_proxy([SBC], ProxySettings(timers=TIMERS, rtp_policy=policy), anchors_media=on)


def invite(body: bytes = SDP, call_id: str = "m1") -> bytes:
    headers = [("Content-Type", "application/sdp")] if body else []
    return request_bytes(
        "INVITE",
        "sip:bob@sbc.test",
        via=f"SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK{call_id};rport",
        call_id=call_id,
        headers=headers,
        body=body,
    )


def anchors(effects: list) -> list[Anchor]:
    return [e for e in effects if isinstance(e, Anchor)]


def releases(effects: list) -> list[str]:
    return [e.call_id for e in effects if isinstance(e, ReleaseMedia)]


def reply(
    p: Proxy, request: Request, status: int, now: float, body: bytes = b"", source=BOB1
) -> list:  # type: ignore[no-untyped-def]
    response = make_response(
        request, status, body=body, content_type="application/sdp" if body else None
    )
    response = response.with_header("To", f"{request.get('to')};tag=callee")
    again = parse(response.to_bytes())
    assert isinstance(again, Response)
    return p.receive_response(again, source, now)


def offer_through(p: Proxy, data: bytes, relayed: Optional[bytes] = RELAYED) -> Request:
    """Send an INVITE with SDP; check the offer; answer it from the relay; the request out."""
    effects = send_request(p, data)
    assert statuses(effects) == [100] and not sent(effects, BOB1)
    [offer] = anchors(effects)
    assert (offer.op, offer.from_tag, offer.to_tag) == ("offer", "from1", None)
    assert offer.sdp == SDP and offer.source == CALLER
    [out] = sent(p.anchored(offer.token, relayed, 0.01), BOB1)
    assert isinstance(out, Request)
    return out


def test_offer_and_answer_go_through_the_relay_and_bye_releases() -> None:
    p = media_proxy()
    register(p, BOB1)
    out = offer_through(p, invite())
    assert out.body == RELAYED and out.get("Content-Length") == str(len(RELAYED))
    effects = reply(p, out, 200, 1.0, SDP)
    assert not sent(effects, CALLER)
    [answer] = anchors(effects)
    assert (answer.op, answer.from_tag, answer.to_tag) == ("answer", "from1", "callee")
    assert answer.source == BOB1
    [ok] = sent(p.anchored(answer.token, RELAYED, 1.01), CALLER)
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == RELAYED
    # A 2xx retransmission after the transaction is gone is rewritten the same way.
    p.handle_timer(100.0)
    assert p.sizes()["client_transactions"] == 0
    again = reply(p, out, 200, 100.0, SDP)
    [retransmitted] = sent(again, CALLER)
    assert retransmitted.body == RELAYED
    bye = request_bytes(
        "BYE",
        "sip:bob@192.0.2.21:5081",
        call_id="m1",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKbye;rport",
        cseq=2,
    ).replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=callee")
    assert releases(send_request(p, bye, 101.0)) == ["m1"]
    assert p.sizes()["media_calls"] == 0 and p.sizes()["anchoring"] == 0


def test_failed_call_releases_its_media() -> None:
    p = media_proxy()
    register(p, BOB1)
    out = offer_through(p, invite())
    effects = reply(p, out, 486, 1.0)
    assert statuses(effects) == [486] and releases(effects) == ["m1"]


def test_late_offer_in_the_2xx_and_answer_in_the_ack() -> None:
    p = media_proxy()
    register(p, BOB1)
    effects = send_request(p, invite(b""))
    assert not anchors(effects)
    [out] = sent(effects, BOB1)
    assert isinstance(out, Request)
    [offer] = anchors(reply(p, out, 200, 1.0, SDP))
    assert (offer.op, offer.from_tag, offer.to_tag) == ("offer", "callee", "from1")
    [ok] = sent(p.anchored(offer.token, RELAYED, 1.0), CALLER)
    assert ok.body == RELAYED
    ack = request_bytes(
        "ACK",
        "sip:bob@192.0.2.21:5081",
        call_id="m1",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKack;rport",
        headers=[("Content-Type", "application/sdp")],
        body=SDP,
    ).replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=callee")
    [answer] = anchors(send_request(p, ack, 2.0))
    assert (answer.op, answer.from_tag, answer.to_tag) == ("answer", "callee", "from1")
    [forwarded] = sent(p.anchored(answer.token, RELAYED, 2.0), BOB1)
    assert isinstance(forwarded, Request) and forwarded.method == "ACK"
    assert forwarded.body == RELAYED


def test_policy_nated_anchors_only_calls_with_a_natted_side() -> None:
    public = media_proxy("nated")
    register(public, BOB1)
    effects = send_request(public, invite())
    assert not anchors(effects) and sent(effects, BOB1)
    natted = media_proxy("nated")
    register(natted, PRIVATE_BOB)  # a contact in a private range: the callee is behind NAT
    assert anchors(send_request(natted, invite()))


def test_policy_never_and_no_relay_do_not_anchor() -> None:
    for p in (media_proxy("never"), media_proxy("always", on=False)):
        register(p, BOB1)
        effects = send_request(p, invite())
        assert not anchors(effects) and sent(effects, BOB1)


def test_relay_failure_lets_the_call_go_on_unanchored() -> None:
    p = media_proxy()
    register(p, BOB1)
    out = offer_through(p, invite(), relayed=None)
    assert out.body == SDP


def test_cancel_while_anchoring_answers_487() -> None:
    p = media_proxy()
    register(p, BOB1)
    [offer] = anchors(send_request(p, invite()))
    cancel = request_bytes(
        "CANCEL",
        "sip:bob@sbc.test",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKm1;rport",
        call_id="m1",
    )
    assert statuses(send_request(p, cancel, 0.5)) == [200]
    effects = p.anchored(offer.token, RELAYED, 0.6)
    assert statuses(effects) == [487] and not sent(effects, BOB1)
    assert releases(effects) == ["m1"]


def test_no_usable_next_hop_releases_the_media_it_anchored() -> None:
    """The anchored offer's call ends with 503 when every next hop is blocklisted, and its
    media session goes with it."""
    p = media_proxy()
    register(p, BOB1)
    p.blocklist.add(BOB1, 0x40, 0.0)
    [offer] = anchors(send_request(p, invite()))
    effects = p.anchored(offer.token, RELAYED, 0.1)
    assert statuses(effects) == [503] and releases(effects) == ["m1"]
    assert p.sizes()["media_calls"] == 0
