"""Tests for L{sbc.core.proxy}: the stateful proxy driven with messages and float time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.core.address import Address
from sbc.core.dialog import DialogConfirmed, DialogCreated, DialogTerminated
from sbc.core.errors import ParseError
from sbc.core.message import Request, Response, parse
from sbc.core.proxy import Proxy, priority
from sbc.core.reply import make_response
from sbc.core.transaction import Send
from tests.core.proxyhelpers import (
    BOB1,
    BOB2,
    CALLER,
    SBC,
    answer,
    invite,
    proxy,
    register,
    send_request,
    sent,
    statuses,
    to_request,
)
from tests.helpers import request_bytes, rfc4475, sig

# -- local answers -------------------------------------------------------------------------------


def test_options_to_us_gets_200_with_capabilities() -> None:
    """OPTIONS to sbc itself: 200 with Allow, Supported and Accept."""
    [response] = sent(send_request(proxy(), request_bytes()))
    assert isinstance(response, Response) and response.status == 200
    assert "INVITE" in (response.get("Allow") or "") and response.has("Supported")
    assert response.get("Accept") == "application/sdp" and response.to.tag


@pytest.mark.parametrize(
    "data, status",
    [
        (request_bytes("INVITE", "sip:nobody@sbc.test"), 404),
        (request_bytes("MESSAGE", "sip:sbc.test"), 404),
        (request_bytes("OPTIONS", "sip:bob@example.com"), 478),
        (rfc4475("unkscm"), 416),
        (rfc4475("novelsc"), 416),
        (rfc4475("bext01"), 420),
        (rfc4475("zeromf"), 483),
        (request_bytes(headers=[("Require", "100rel")]), 420),
    ],
)
def test_refusals(data: bytes, status: int) -> None:
    """Requests sbc cannot take get precise statuses."""
    assert statuses(send_request(proxy(), data), None)[-1] == status  # type: ignore[arg-type]


def test_ack_without_transaction_or_route_is_absorbed() -> None:
    """A stray ACK for us produces nothing."""
    assert send_request(proxy(), request_bytes("ACK")) == []


def test_registered_then_expired_user_is_480() -> None:
    """After the binding expires the user exists but is unavailable."""
    p = proxy()
    assert statuses(register(p, BOB1, expires=60), BOB1) == [200]
    assert statuses(send_request(p, invite(), now=61.0))[-1] == 480


# -- forwarding ----------------------------------------------------------------------------------


def test_invite_forwarded_to_the_registered_contact() -> None:
    """100 upstream; downstream: R-URI = contact, our Via on top, Max-Forwards - 1, RR."""
    p = proxy()
    register(p, BOB1)
    effects = send_request(p, invite())
    assert statuses(effects) == [100]
    [out] = sent(effects, BOB1)
    assert isinstance(out, Request)
    assert str(out.uri) == "sip:bob@192.0.2.21:5081"
    assert out.top_via.host == "127.0.0.1" and out.top_via.branch.startswith("z9hG4bKsbc")  # type: ignore[union-attr]
    assert out.vias[1].received == "192.0.2.10"
    assert out.max_forwards == 69
    assert out.get("Record-Route") == f"<sip:127.0.0.1;lr;ftag=from1{sig(p, 'c1', 'from1')}>"


def test_full_call_relays_responses_and_tracks_the_dialog() -> None:
    """180 and 200 relayed without our Via; dialog early, confirmed, then ended by BYE."""
    p = proxy()
    register(p, BOB1)
    [out] = sent(send_request(p, invite(), 0.0), BOB1)
    ringing = answer(p, out, 180, BOB1, 1.0)
    [r180] = sent(ringing, CALLER)
    assert isinstance(r180, Response) and r180.status == 180 and len(r180.vias) == 1
    assert any(isinstance(e, DialogCreated) for e in ringing)
    ok = answer(p, out, 200, BOB1, 2.0)
    assert statuses(ok) == [200] and any(isinstance(e, DialogConfirmed) for e in ok)
    bye = request_bytes(
        "BYE",
        "sip:bob@192.0.2.21:5081",
        call_id="c1",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKbye;rport",
        headers=[("Route", "<sip:127.0.0.1;lr;ftag=from1>")],
        cseq=2,
    )
    bye = bye.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=callee")
    effects = send_request(p, bye, 3.0)
    [forwarded] = sent(effects, BOB1)
    assert isinstance(forwarded, Request) and forwarded.method == "BYE"
    assert not forwarded.has("Route") and str(forwarded.uri) == "sip:bob@192.0.2.21:5081"
    assert any(isinstance(e, DialogTerminated) for e in effects)


def test_ack_for_2xx_follows_the_route_set_statelessly() -> None:
    """The 2xx ACK (new branch) is forwarded to the R-URI after our Route is consumed."""
    p = proxy()
    ack = request_bytes(
        "ACK",
        "sip:bob@192.0.2.21:5081",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKack;rport",
        headers=[("Route", "<sip:127.0.0.1;lr>")],
    )
    ack = ack.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x")
    [out] = sent(send_request(p, ack), BOB1)
    assert isinstance(out, Request) and out.method == "ACK" and len(out.vias) == 2


def test_retransmitted_invite_is_absorbed() -> None:
    """A retransmission is answered from the server transaction, not forwarded again."""
    p = proxy()
    register(p, BOB1)
    send_request(p, invite(), 0.0)
    again = send_request(p, invite(), 0.5)
    assert statuses(again) == [100] and sent(again, BOB1) == []


def test_forking_best_response_and_cancel_of_the_rest() -> None:
    """Two contacts: both get the INVITE; a 200 on one cancels the other (ringing) one."""
    p = proxy()
    register(p, BOB1)
    register(p, BOB2, call_id="reg-other")
    effects = send_request(p, invite())
    [to1], [to2] = sent(effects, BOB1), sent(effects, BOB2)
    answer(p, to2, 180, BOB2, 1.0, to_tag="b2")
    ok = answer(p, to1, 200, BOB1, 2.0, to_tag="b1")
    assert statuses(ok) == [200]
    cancels = [m for m in sent(ok, BOB2) if isinstance(m, Request) and m.method == "CANCEL"]
    assert len(cancels) == 1 and cancels[0].top_via.branch == to2.top_via.branch  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "codes, winner",
    [((404, 486), 404), ((486, 401), 401), ((603, 401), 603), ((503,), 500), ((500, 503), 500)],
)
def test_best_final_response(codes: tuple[int, ...], winner: int) -> None:
    """As Kamailio tm: the lowest priority wins; a lone 503 becomes 500 (remap_503_500)."""
    p = proxy()
    contacts = [BOB1, BOB2][: len(codes)]
    for i, c in enumerate(contacts):
        register(p, c, call_id=f"reg-{i}")
    effects = send_request(p, invite())
    outs = [sent(effects, c)[0] for c in contacts]
    relayed: list[int] = []
    for out, c, code in zip(outs, contacts, codes, strict=True):
        effects = answer(p, out, code, c, 1.0)
        relayed += statuses(effects)
        assert "ACK" in [m.method for m in sent(effects, c) if isinstance(m, Request)]
    assert relayed == [winner]


def test_remap_503_can_be_switched_off() -> None:
    """remap_503_500 = no relays the 503 as is."""
    p = proxy(remap_503_500=False)
    register(p, BOB1)
    [out] = sent(send_request(p, invite()), BOB1)
    assert statuses(answer(p, out, 503, BOB1, 1.0)) == [503]


def test_fr_inv_timer_cancels_the_branch_and_answers_408() -> None:
    """A branch that rings past fr_inv_timer is CANCELled and the caller gets 408."""
    p = proxy()
    register(p, BOB1)
    [out] = sent(send_request(p, invite(), 0.0), BOB1)
    answer(p, out, 180, BOB1, 1.0)
    assert p.next_deadline() is not None and p.next_deadline() <= 61.0  # type: ignore[operator]
    effects = p.handle_timer(61.0)
    assert statuses(effects) == [408]
    [cancel] = [m for m in sent(effects, BOB1) if isinstance(m, Request)]
    assert cancel.method == "CANCEL" and cancel.top_via.branch == out.top_via.branch  # type: ignore[union-attr]
    # the callee's 487 to the INVITE is ACKed but not relayed again
    late = answer(p, out, 487, BOB1, 62.0)
    assert statuses(late) == [] and [m.method for m in sent(late, BOB1)] == ["ACK"]  # type: ignore[union-attr]


def test_no_answer_at_all_gives_408_after_fr_timer() -> None:
    """A next hop that never answers: retransmissions, then 408 at fr_timer."""
    p = proxy()
    register(p, BOB1)
    send_request(p, invite(), 0.0)
    resent = 0
    effects: list = []
    now = 0.0
    while now < 30.0:
        now = p.next_deadline()  # type: ignore[assignment]
        effects = p.handle_timer(now)
        resent += len(sent(effects, BOB1))
    assert statuses(effects) == [408] and resent >= 5


def test_cancel_from_the_caller() -> None:
    """CANCEL: 200 to it, CANCEL downstream once ringing, the callee's 487 relayed."""
    p = proxy()
    register(p, BOB1)
    [out] = sent(send_request(p, invite(), 0.0), BOB1)
    answer(p, out, 180, BOB1, 1.0)
    cancel = request_bytes(
        "CANCEL",
        "sip:bob@sbc.test",
        call_id="c1",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKc1;rport",
    )
    effects = send_request(p, cancel, 2.0)
    assert statuses(effects) == [200]
    [down] = sent(effects, BOB1)
    assert isinstance(down, Request) and down.method == "CANCEL"
    assert statuses(answer(p, out, 487, BOB1, 3.0)) == [487]


def test_cancel_before_any_provisional_waits_for_one() -> None:
    """A branch without a 1xx is cancelled when its first provisional arrives (§9.1)."""
    p = proxy()
    register(p, BOB1)
    [out] = sent(send_request(p, invite(), 0.0), BOB1)
    cancel = request_bytes(
        "CANCEL",
        "sip:bob@sbc.test",
        call_id="c1",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKc1;rport",
    )
    assert sent(send_request(p, cancel, 0.1), BOB1) == []
    ringing = answer(p, out, 180, BOB1, 0.5)
    assert [m.method for m in sent(ringing, BOB1)] == ["CANCEL"]  # type: ignore[union-attr]


def test_cancel_without_transaction_is_481() -> None:
    """A CANCEL that matches nothing gets 481."""
    cancel = request_bytes(
        "CANCEL", "sip:bob@sbc.test", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKnone;rport"
    )
    assert statuses(send_request(proxy(), cancel)) == [481]


def test_loop_is_detected_but_a_spiral_is_not() -> None:
    """The same request back through us: 482; with another R-URI it is a spiral."""
    p = proxy()
    [out] = sent(
        send_request(p, request_bytes("OPTIONS", "sip:carol@192.0.2.30")),
        Address("udp", "192.0.2.30", 5060),
    )
    looped = send_request(p, out.to_bytes(), 0.1, source=SBC)
    assert statuses(looped, SBC) == [482]
    # the same request back with another R-URI (a spiral) is forwarded
    p = proxy()
    [out] = sent(
        send_request(p, request_bytes("OPTIONS", "sip:carol@192.0.2.30")),
        Address("udp", "192.0.2.30", 5060),
    )
    spiral = out.to_bytes().replace(b"OPTIONS sip:carol@192.0.2.30", b"OPTIONS sip:dave@192.0.2.31")
    [again] = sent(send_request(p, spiral, 0.2, source=SBC))
    assert isinstance(again, Request) and str(again.uri) == "sip:dave@192.0.2.31"


def test_double_record_route_when_sockets_differ() -> None:
    """UDP in, TCP out: two r2 Record-Routes, outgoing socket on top (enable_double_rr)."""
    p = proxy()
    effects = send_request(p, invite("sip:carol@192.0.2.30;transport=tcp"))
    [out] = sent(effects, Address("tcp", "192.0.2.30", 5060))
    assert out.get_all("Record-Route") == [
        f"<sip:127.0.0.1;transport=tcp;r2=on;lr;ftag=from1{sig(p, 'c1', 'from1')}>",
        f"<sip:127.0.0.1;r2=on;lr;ftag=from1{sig(p, 'c1', 'from1')}>",
    ]
    assert out.top_via.transport == "TCP"


def test_outbound_proxy_keeps_the_request_uri() -> None:
    """Requests for other domains go to outbound_proxy, R-URI untouched."""
    from sbc.core.uri import SipUri, parse_uri

    uri = parse_uri("sip:192.0.2.99:5099;lr")
    assert isinstance(uri, SipUri)
    p = proxy(outbound_proxy=uri)
    [out] = sent(
        send_request(p, invite("sip:carol@example.com")), Address("udp", "192.0.2.99", 5099)
    )
    assert str(out.uri) == "sip:carol@example.com"  # type: ignore[union-attr]


def test_max_inv_lifetime_caps_a_ringing_transaction() -> None:
    """max_inv_lifetime ends the transaction even if the branch keeps ringing."""
    p = proxy(max_inv_lifetime=10.0)
    register(p, BOB1)
    [out] = sent(send_request(p, invite(), 0.0), BOB1)
    answer(p, out, 180, BOB1, 1.0)
    assert statuses(p.handle_timer(10.0)) == [408]


def test_stray_2xx_retransmission_is_relayed_along_the_vias() -> None:
    """A 2xx for a branch we no longer know goes to the next Via (§16.7)."""
    p = proxy()
    register(p, BOB1)
    [out] = sent(send_request(p, invite(), 0.0), BOB1)
    answer(p, out, 200, BOB1, 1.0)
    p.handle_timer(100.0)  # all transactions gone
    late = answer(p, out, 200, BOB1, 100.5)
    assert statuses(late) == [200]


def test_priority_table() -> None:
    """Kamailio tm's reply priorities."""
    assert priority(404) < priority(408) < priority(486)
    assert priority(401) < priority(500) and priority(603) < priority(401)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_any_parseable_request_gets_a_serialisable_answer(at: int, junk: bytes) -> None:
    """Whatever bytes a parseable request carries, the proxy's effects serialise and raise
    nothing but ParseError."""
    p = proxy()
    for base in (request_bytes(), request_bytes(uri="sip:x@192.0.2.40"), invite()):
        data = base[: at % len(base)] + junk + base[at % len(base) :]
        try:
            for message in sent(send_request(p, data)):
                parse(message.to_bytes())
        except ParseError:
            pass


def test_non_utf8_bytes_do_not_break_replies() -> None:
    """Invalid UTF-8 in Call-ID and display name still yields a reply that round-trips."""
    data = request_bytes(call_id="CALLID").replace(b"CALLID", b"\xff\xfe@h")
    data = data.replace(b"From: <", b'From: "\xc3\x28" <')
    [response] = sent(send_request(proxy(), data))
    again = parse(response.to_bytes())
    assert again.call_id == to_request(data).call_id


def test_no_state_is_left_after_calls_end() -> None:
    """After many complete calls and the linger timers, no transaction or heap entry stays."""
    p = proxy()
    register(p, BOB1)
    now = 0.0
    for i in range(50):
        effects = send_request(p, invite(branch=f"z9hG4bKleak{i}", call_id=f"leak{i}"), now)
        [out] = sent(effects, BOB1)
        answer(p, out, 180, BOB1, now + 0.1, to_tag=f"t{i}")
        answer(p, out, 200, BOB1, now + 0.2, to_tag=f"t{i}")
        bye = request_bytes(
            "BYE",
            "sip:bob@192.0.2.21:5081",
            call_id=f"leak{i}",
            cseq=2,
            via=f"SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKbye{i};rport",
            headers=[("Route", "<sip:127.0.0.1;lr;ftag=from1>")],
        )
        bye = bye.replace(
            b"To: <sip:bob@example.com>", f"To: <sip:bob@example.com>;tag=t{i}".encode()
        )
        [out_bye] = sent(send_request(p, bye, now + 1.0), BOB1)
        answer(p, out_bye, 200, BOB1, now + 1.1, to_tag=f"t{i}")
        now += 0.5
    while (deadline := p.next_deadline()) is not None and deadline < now + 100:
        p.handle_timer(deadline)
    sizes = p.sizes()
    assert sizes["server_transactions"] == sizes["client_transactions"] == 0, sizes
    assert sizes["forwardings"] == sizes["dialogs"] == 0, sizes
    assert sizes["timer_heap"] <= 1, sizes


# -- NAT traversal ---------------------------------------------------------------------------------

from sbc.core.nat import NatPolicy  # noqa: E402

NAT = Address("udp", "198.51.100.20", 40123)  # the NAT's public side
PRIVATE = "10.0.0.10:5070"


def register_natted(p: Proxy, source: Address = NAT) -> list:
    data = request_bytes(
        "REGISTER",
        "sip:sbc.test",
        call_id="reg-nat",
        via=f"SIP/2.0/UDP {PRIVATE};branch=z9hG4bKrn;rport",
        headers=[("Contact", f"<sip:alice@{PRIVATE}>"), ("Expires", "300")],
    )
    data = data.replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")
    return send_request(p, data, source=source)


def test_register_behind_nat_stores_received_and_calls_reach_the_binding() -> None:
    """fix_nated_register: 200 lists received=; INVITE goes to the NAT address, R-URI = Contact."""
    p = proxy()
    [ok] = sent(register_natted(p), NAT)
    assert (
        ok.get("Contact")
        == '<sip:alice@10.0.0.10:5070>;expires=300;received="sip:198.51.100.20:40123"'
    )
    effects = send_request(p, invite("sip:alice@sbc.test"))
    [out] = sent(effects, NAT)
    assert str(out.uri) == "sip:alice@10.0.0.10:5070"  # type: ignore[union-attr]
    assert [e.local for e in effects if isinstance(e, Send) and e.peer == NAT] == [SBC]


def test_register_fix_off_sends_to_the_private_contact() -> None:
    """The control: without register_fix the INVITE goes to the unreachable private address."""
    p = proxy(nat=NatPolicy(register_fix="off"))
    register_natted(p)
    effects = send_request(p, invite("sip:alice@sbc.test"))
    assert sent(effects, Address("udp", "10.0.0.10", 5070)) and not sent(effects, NAT)


def test_natted_caller_gets_alias_and_nat_record_route() -> None:
    """A call from behind NAT: Contact aliased, Record-Route marked nat=yes."""
    p = proxy()
    data = request_bytes(
        "INVITE",
        "sip:carol@192.0.2.30",
        via=f"SIP/2.0/UDP {PRIVATE};branch=z9hG4bKn1",  # noqa: E501
        headers=[("Contact", f"<sip:alice@{PRIVATE}>")],
    )
    [out] = sent(send_request(p, data, source=NAT), Address("udp", "192.0.2.30", 5060))
    assert out.get("Contact") == "<sip:alice@10.0.0.10:5070;alias=198.51.100.20~40123~1>"
    signature = sig(p, "call-1@192.0.2.10", "from1")
    assert out.get("Record-Route") == f"<sip:127.0.0.1;lr;ftag=from1;nat=yes{signature}>"


def test_in_dialog_request_to_an_alias_goes_to_the_nat_binding() -> None:
    """The callee's BYE to the aliased Contact reaches the NAT address, alias stripped."""
    p = proxy()
    bye = request_bytes(
        "BYE",
        "sip:alice@10.0.0.10:5070;alias=198.51.100.20~40123~1",
        via="SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKb1",
        headers=[("Route", "<sip:127.0.0.1;lr;ftag=from1;nat=yes>")],
    )
    bye = bye.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=t")
    [out] = sent(send_request(p, bye, source=Address("udp", "192.0.2.30", 5060)), NAT)
    assert str(out.uri) == "sip:alice@10.0.0.10:5070"  # type: ignore[union-attr]


def test_bad_alias_is_400() -> None:
    """An alias that does not decode gets 400, not a crash."""
    p = proxy()
    data = request_bytes("OPTIONS", "sip:a@10.0.0.1;alias=1.2.3.4~99999~1")
    assert statuses(send_request(p, data), CALLER) == [400]


def test_reply_from_a_natted_callee_gets_its_contact_aliased() -> None:
    """A 200 whose Contact is private is aliased before it goes upstream."""
    p = proxy()
    register(p, BOB1)
    [out] = sent(send_request(p, invite()), BOB1)
    ok = make_response(out, 200).with_header("To", f"{out.get('to')};tag=x")
    ok = ok.with_header("Contact", "<sip:bob@10.0.0.20:5060>")
    parsed = parse(ok.to_bytes())
    assert isinstance(parsed, Response)
    [relayed] = sent(p.receive_response(parsed, BOB1, 1.0), CALLER)
    assert relayed.get("Contact") == "<sip:bob@10.0.0.20:5060;alias=192.0.2.21~5081~1>"


def test_rewrite_mode() -> None:
    """contact_fix = rewrite: the Contact names the NAT address itself (fix_nated_contact)."""
    p = proxy(nat=NatPolicy(contact_fix="rewrite"))
    data = request_bytes(
        "INVITE",
        "sip:carol@192.0.2.30",
        via=f"SIP/2.0/UDP {PRIVATE};branch=z9hG4bKn2",  # noqa: E501
        headers=[("Contact", f"<sip:alice@{PRIVATE}>")],
    )
    [out] = sent(send_request(p, data, source=NAT), Address("udp", "192.0.2.30", 5060))
    assert out.get("Contact") == "<sip:alice@198.51.100.20:40123>"


def test_public_client_is_left_alone() -> None:
    """No NAT detected: Contact untouched, no nat=yes."""
    p = proxy()
    data = request_bytes(
        "INVITE",
        "sip:carol@192.0.2.30",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKp",  # noqa: E501
        headers=[("Contact", "<sip:alice@192.0.2.10:5070>")],
    )
    [out] = sent(send_request(p, data), Address("udp", "192.0.2.30", 5060))
    assert out.get("Contact") == "<sip:alice@192.0.2.10:5070>"
    assert "nat=yes" not in (out.get("Record-Route") or "")


# -- edge proxy with Path (registrar_uri) --------------------------------------------------------

CORE = Address("udp", "192.0.2.50", 5060)


def test_register_relayed_to_the_core_with_path_and_received() -> None:
    """registrar_uri: the REGISTER goes there with Path (NAT address as ;received=) and the
    Contact marked received= (add_rcv_param)."""
    from sbc.core.uri import SipUri, parse_uri

    uri = parse_uri("sip:192.0.2.50")
    assert isinstance(uri, SipUri)
    p = proxy(registrar_uri=uri)
    [out] = sent(register_natted(p), CORE)
    assert isinstance(out, Request) and out.method == "REGISTER"
    signature = sig(p, "sip:198.51.100.20:40123")
    assert out.get("Path") == f"<sip:127.0.0.1:5060;lr;received=sip:198.51.100.20:40123{signature}>"
    assert out.get("Contact") == '<sip:alice@10.0.0.10:5070>;received="sip:198.51.100.20:40123"'


def test_request_along_our_path_reaches_the_nat_binding() -> None:
    """A request from the core with our Path entry as Route goes to the NAT address."""
    p = proxy()
    data = request_bytes(
        "INVITE",
        "sip:alice@10.0.0.10:5070",
        via="SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKc",
        headers=[
            (
                "Route",
                "<sip:127.0.0.1:5060;lr;received=sip:198.51.100.20:40123"
                f"{sig(p, 'sip:198.51.100.20:40123')}>",
            )
        ],
    )
    [out] = sent(send_request(p, data, source=CORE), NAT)
    assert str(out.uri) == "sip:alice@10.0.0.10:5070" and not out.has("Route")  # type: ignore[union-attr]


def test_core_registrar_stores_path_and_routes_through_it() -> None:
    """As the registrar: Path stored, echoed in the 200, used as the route to the contact."""
    p = proxy()
    data = request_bytes(
        "REGISTER",
        "sip:sbc.test",
        via="SIP/2.0/UDP 192.0.2.60;branch=z9hG4bKe",
        headers=[
            ("Contact", "<sip:alice@10.0.0.10:5070>"),
            ("Path", "<sip:192.0.2.60;lr;received=sip:198.51.100.20:40123>"),
        ],
    )
    data = data.replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")
    edge = Address("udp", "192.0.2.60", 5060)
    [ok] = sent(send_request(p, data, source=edge), edge)
    assert ok.get("Path") == "<sip:192.0.2.60;lr;received=sip:198.51.100.20:40123>"
    [out] = sent(send_request(p, invite("sip:alice@sbc.test")), edge)
    assert out.get_all("Route") == ["<sip:192.0.2.60;lr;received=sip:198.51.100.20:40123>"]


def test_only_the_first_hop_fixes_a_natted_client() -> None:
    """A request that already passed another proxy keeps its Contact (and that proxy's alias)."""
    p = proxy()
    data = request_bytes(
        "INVITE",
        "sip:carol@192.0.2.30",
        via="SIP/2.0/UDP 192.0.2.60;branch=z9hG4bKedge, SIP/2.0/UDP 10.0.0.10:5070;branch=z9hG4bKu",  # noqa: E501
        headers=[("Contact", "<sip:alice@10.0.0.10:5070;alias=198.51.100.20~40123~1>")],
    )
    [out] = sent(
        send_request(p, data, source=Address("udp", "192.0.2.60", 5060)),
        Address("udp", "192.0.2.30", 5060),
    )
    assert out.get("Contact") == "<sip:alice@10.0.0.10:5070;alias=198.51.100.20~40123~1>"
    assert "nat=yes" not in (out.get("Record-Route") or "")


def test_reply_through_a_record_routing_proxy_is_not_aliased_again() -> None:
    """A reply that carries more Record-Route entries than we sent came through another
    proxy: its Contact is left as that proxy made it."""
    p = proxy()
    register(p, BOB1)
    [out] = sent(send_request(p, invite()), BOB1)
    ok = make_response(out, 200).with_header("To", f"{out.get('to')};tag=x")
    ok = ok.with_header("Contact", "<sip:bob@10.0.0.20:5060;alias=203.0.113.9~4000~1>")
    # the reply carries the Record-Route set: the callee side's proxy entry above ours
    ok = ok.with_header("Record-Route", f"<sip:192.0.2.21;lr>, {out.get('Record-Route')}")
    parsed = parse(ok.to_bytes())
    assert isinstance(parsed, Response)
    [relayed] = sent(p.receive_response(parsed, BOB1, 1.0), CALLER)
    assert relayed.get("Contact") == "<sip:bob@10.0.0.20:5060;alias=203.0.113.9~4000~1>"


def test_in_dialog_request_of_a_nat_marked_dialog_is_fixed() -> None:
    """Kamailio's nat=yes Record-Route recipe: a request through our nat=yes Route gets its Contact
    fixed even when the tests alone would not say NAT (here: a re-INVITE whose Via matches the
    source)."""
    p = proxy(nat=NatPolicy(nat_uac_test=1))
    reinvite = request_bytes(
        "INVITE",
        "sip:carol@192.0.2.30",
        via="SIP/2.0/UDP 198.51.100.20:40123;branch=z9hG4bKre",
        headers=[
            ("Route", "<sip:127.0.0.1;lr;ftag=from1;nat=yes>"),
            ("Contact", "<sip:alice@198.51.100.20:5070>"),
        ],
    )
    reinvite = reinvite.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=t")
    [out] = sent(send_request(p, reinvite, source=NAT), Address("udp", "192.0.2.30", 5060))
    assert out.get("Contact") == "<sip:alice@198.51.100.20:5070;alias=198.51.100.20~40123~1>"


def test_draining_refuses_new_calls_but_serves_dialogs() -> None:
    """While stopping: initial requests get 503 with Retry-After, in-dialog ones pass."""
    p = proxy()
    p.draining = True
    [refused] = [m for m in sent(send_request(p, invite())) if m.status >= 200]  # type: ignore[union-attr]
    assert refused.status == 503 and refused.get("Retry-After") == "5"  # type: ignore[union-attr]
    bye = request_bytes(
        "BYE", "sip:bob@192.0.2.21:5081", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKd"
    )
    bye = bye.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=t")
    assert [m.method for m in sent(send_request(p, bye), BOB1)] == ["BYE"]  # type: ignore[union-attr]
