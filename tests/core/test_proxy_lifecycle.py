"""
The proxy core's lifecycle corners (RFC 3261 §16.6, §16.7, §16.10), each driven without
sockets: pending CANCELs, dialogs that end without BYE, state freed after a call, loop
detection with advertise and through another proxy, socket choice, and the smaller points
(Max-Forwards, CANCEL after the final response, forked non-INVITE 2xx, 6xx handling).
"""

from __future__ import annotations

import gc
import weakref
from dataclasses import replace

import pytest

from sbc.core.address import Address
from sbc.core.dialog import DialogSettings
from sbc.core.message import Request, Response
from sbc.core.proxy import Proxy, ProxySettings, failover_codes
from sbc.core.transaction import Send
from tests.core.proxyhelpers import (
    BOB1,
    BOB2,
    CALLER,
    SBC,
    TIMERS,
    answer,
    invite,
    proxy,
    register,
    send_request,
    sent,
    statuses,
)
from tests.helpers import make_proxy, request_bytes

T1 = TIMERS.t1


def forked(p: Proxy) -> tuple[Request, Request]:
    """bob registered twice; an INVITE forked to both contacts."""
    register(p, BOB1)
    register(p, BOB2)
    effects = send_request(p, invite())
    [one] = sent(effects, BOB1)
    [two] = sent(effects, BOB2)
    assert isinstance(one, Request) and isinstance(two, Request)
    return one, two


def methods(effects: list, peer: Address) -> list[str]:
    return [m.method for m in sent(effects, peer) if isinstance(m, Request)]


# -- 1. a pending CANCEL is never lost ------------------------------------------------------------


def test_a_branch_without_provisional_is_cancelled_when_its_180_comes_after_the_lifetime() -> None:
    p = proxy(max_inv_lifetime=10.0)
    one, two = forked(p)
    answer(p, one, 180, BOB1, 1.0, to_tag="b1")  # BOB2 stays silent (no provisional)
    effects = p.handle_timer(10.0)  # max_inv_lifetime: 408 upstream
    assert statuses(effects) == [408]
    assert methods(effects, BOB1) == ["CANCEL"]
    late = answer(p, two, 180, BOB2, 11.0, to_tag="b2")
    assert methods(late, BOB2) == ["CANCEL"]  # the callee stops ringing
    assert statuses(late) == []  # and nothing goes upstream after the 408


def test_a_branch_without_provisional_is_cancelled_after_another_branch_sent_6xx() -> None:
    p = proxy()
    one, two = forked(p)
    answer(p, one, 180, BOB1, 1.0, to_tag="b1")
    answer(p, one, 603, BOB1, 2.0, to_tag="b1")
    late = answer(p, two, 180, BOB2, 3.0, to_tag="b2")
    assert methods(late, BOB2) == ["CANCEL"]


# -- 2. dialogs end without BYE -------------------------------------------------------------------


def call(p: Proxy, now: float = 0.0, call_id: str = "c1") -> Request:
    """A confirmed call from CALLER to bob@BOB1 (bob registered); the INVITE as relayed."""
    effects = send_request(p, invite(call_id=call_id, branch=f"z9hG4bK{call_id}"), now)
    [out] = sent(effects, BOB1)
    assert isinstance(out, Request)
    answer(p, out, 200, BOB1, now + 0.1, to_tag=f"t{call_id}")
    return out


def hang_up(p: Proxy, out: Request) -> None:
    """The caller of L{call} sends its BYE at 1.0 s, the callee answers 200 at 1.1 s."""
    bye = request_bytes(
        "BYE",
        "sip:bob@192.0.2.21:5081",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKbye;rport",
        headers=[("Route", out.get("Record-Route") or "")],
        call_id="c1",
    ).replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=tc1")
    [relayed] = sent(send_request(p, bye, 1.0), BOB1)
    answer(p, relayed, 200, BOB1, 1.1, to_tag="tc1")


def test_a_confirmed_dialog_without_bye_ends_after_default_timeout() -> None:
    p = proxy(dialog=DialogSettings(default_timeout=100))
    register(p, BOB1, expires=3600)
    call(p)
    assert p.sizes()["dialogs"] == 1
    p.handle_timer(99.0)
    assert p.sizes()["dialogs"] == 1
    deadline = p.next_deadline()
    assert deadline is not None and deadline <= 100.1
    p.handle_timer(100.2)
    assert p.sizes()["dialogs"] == 0


def test_an_in_dialog_request_sbc_relays_extends_the_dialog() -> None:
    p = proxy(dialog=DialogSettings(default_timeout=100))
    register(p, BOB1, expires=3600)
    out = call(p)
    info = request_bytes(
        "INFO",
        "sip:bob@192.0.2.21:5081",
        via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKinfo;rport",
        headers=[("Route", out.get("Record-Route") or "")],
        call_id="c1",
    ).replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=tc1")
    p.handle_timer(90.0)
    assert sent(send_request(p, info, 90.0), BOB1)  # relayed through our Record-Route
    p.handle_timer(150.0)
    assert p.sizes()["dialogs"] == 1  # 100 s from the INFO, not from the 200
    p.handle_timer(190.5)
    assert p.sizes()["dialogs"] == 0


def test_dialog_keepalive_probes_end_a_dialog_whose_ends_vanished() -> None:
    p = proxy(dialog=DialogSettings(dlg_keepalive_interval=30))
    register(p, BOB1, expires=3600)
    call(p)
    probed: set[Address] = set()
    now = 0.1
    for _ in range(3):
        now = p.next_deadline() or now
        effects = p.handle_timer(now)
        for e in effects:
            if isinstance(e, Send) and isinstance(e.message, Request):
                assert e.message.method == "OPTIONS" and e.message.to.tag  # in the dialog
                probed.add(e.peer)
    assert probed == {CALLER, BOB1}  # both ends of the dialog
    # Nobody answered two probes in a row: the dialog is gone, with its keepalive.
    for _ in range(1000):
        deadline = p.next_deadline()
        if deadline is None or p.sizes()["dialogs"] == 0 or deadline > 200:
            break
        p.handle_timer(deadline)
    assert p.sizes()["dialogs"] == 0
    assert p.next_deadline() is None or p.next_deadline() > 200  # nothing probes any more


# -- 3. finished calls are freed within 64*T1 -----------------------------------------------------


def test_a_finished_call_is_freed_within_64_t1() -> None:
    p = proxy()
    register(p, BOB1, expires=3600)
    out = call(p)
    hang_up(p, out)
    forwarding_refs = [weakref.ref(f) for f in p._contexts.values()]
    # Another call keeps ringing meanwhile: its live timers sit on top of the heap.
    register(p, BOB2, user="carol", expires=3600)
    ringing = send_request(p, invite("sip:carol@sbc.test", call_id="c2", branch="z9hG4bKc2"), 1.1)
    [out2] = sent(ringing, BOB2)
    answer(p, out2, 180, BOB2, 1.15, to_tag="t2")
    now = 1.2
    while (deadline := p.next_deadline()) is not None and deadline <= 1.2 + 64 * T1:
        now = deadline
        p.handle_timer(now)
    p.handle_timer(1.2 + 64 * T1)
    gc.collect()
    sizes = p.sizes()
    assert sizes["server_transactions"] == sizes["client_transactions"] == 1  # the ringing call
    assert sizes["forwardings"] == 1 and sizes["dialogs"] == 1  # its early dialog
    assert all(ref() is None for ref in forwarding_refs)  # nothing keeps the first alive


def test_with_wt_timer_a_finished_call_is_freed_once_it_runs_out() -> None:
    """Kamailio's wt_timer (5 s) instead of 64*T1: every transaction of the call, its
    response contexts and its dialog are gone 5 s after the BYE's 200."""
    p = make_proxy([SBC], ProxySettings(timers=replace(TIMERS, wait=5.0)))
    register(p, BOB1, expires=3600)
    out = call(p)
    hang_up(p, out)
    p.handle_timer(5.5)  # the INVITE's 200 was at 0.1: its transactions lingered until 5.1
    assert p.sizes()["server_transactions"] == 1  # the BYE's, until 6.1
    p.handle_timer(6.1)
    sizes = p.sizes()
    assert sizes["server_transactions"] == sizes["client_transactions"] == 0, sizes
    assert sizes["forwardings"] == sizes["dialogs"] == 0, sizes


def test_with_wt_timer_a_2xx_retransmitted_after_its_transaction_brings_no_dialog_back() -> None:
    """The callee's 200 retransmitted once the INVITE's transactions are gone (wt_timer
    run out, the call hung up meanwhile) creates no dialog and no transaction."""
    p = make_proxy([SBC], ProxySettings(timers=replace(TIMERS, wait=5.0)))
    register(p, BOB1, expires=3600)
    out = call(p)
    hang_up(p, out)
    p.handle_timer(7.0)
    answer(p, out, 200, BOB1, 7.5, to_tag="tc1")
    sizes = p.sizes()
    assert sizes["dialogs"] == sizes["server_transactions"] == sizes["client_transactions"] == 0


def test_a_2xx_retransmitted_after_the_bye_does_not_bring_the_dialog_back() -> None:
    """The callee's 200 retransmissions (its ACK was late) can outlive the call: they are
    passed upstream, but the dialog the BYE ended stays ended (it would otherwise linger
    until default_timeout, a dialog per late ACK)."""
    p = proxy()
    register(p, BOB1, expires=3600)
    out = call(p)
    hang_up(p, out)
    assert p.sizes()["dialogs"] == 0
    effects = answer(p, out, 200, BOB1, 1.6, to_tag="tc1")
    assert statuses(effects) == [200]
    assert p.sizes()["dialogs"] == 0


def test_a_refresh_that_changes_nothing_gets_no_registered_line() -> None:
    """The operator hears of new, moved and removed bindings, not of every refresh."""
    from sbc.core.effects import Registered

    def lines(effects: list) -> list[str]:
        return [f"{e.event} {e.contacts}" for e in effects if isinstance(e, Registered)]

    p = proxy()
    assert lines(register(p, BOB1, cseq=1)) == ["registered 1"]
    assert lines(register(p, BOB1, cseq=2)) == []
    moved = Address("udp", BOB1.host, BOB1.port + 1)
    assert lines(register(p, moved, cseq=3)) == ["registered 2"]
    assert lines(register(p, BOB1, cseq=4, expires=0)) == ["registered 1"]


# -- 4. loop detection ----------------------------------------------------------------------------


def test_a_loop_is_detected_when_advertise_names_our_via() -> None:
    p = make_proxy([SBC], ProxySettings(timers=TIMERS, advertise=("198.51.100.1", 5060)))
    [out] = sent(send_request(p, request_bytes("OPTIONS", "sip:carol@192.0.2.30")))
    assert out.top_via.host == "198.51.100.1"  # type: ignore[union-attr]
    back = send_request(p, out.to_bytes(), 0.2, source=Address("udp", "192.0.2.30", 5060))
    assert 482 in [m.status for m in sent(back) if isinstance(m, Response)]


def test_a_loop_through_another_proxy_is_detected() -> None:
    p = proxy()
    [out] = sent(send_request(p, request_bytes("OPTIONS", "sip:carol@192.0.2.30")))
    # Another proxy at 192.0.2.30 adds its Via and sends the same request back to us.
    text = out.to_bytes().replace(
        b"Via: ", b"Via: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKother\r\nVia: ", 1
    )
    back = send_request(p, text, 0.2, source=Address("udp", "192.0.2.30", 5060))
    assert 482 in [m.status for m in sent(back) if isinstance(m, Response)]


# -- 5. socket choice -----------------------------------------------------------------------------

PUBLIC = Address("udp", "203.0.113.1", 5060)
PRIVATE = Address("udp", "10.9.0.1", 5060)


def test_the_socket_on_the_route_to_the_destination_is_chosen() -> None:
    p = make_proxy(
        [PUBLIC, PRIVATE],
        ProxySettings(timers=TIMERS),
        source_for=lambda host: "10.9.0.1" if host.startswith("10.") else "203.0.113.1",
    )
    effects = p.receive_request(
        p_request("OPTIONS", "sip:core@10.9.0.50"), CALLER_PUBLIC, PUBLIC, 0.0
    )
    [send] = [e for e in effects if isinstance(e, Send) and e.peer.host == "10.9.0.50"]
    assert send.local == PRIVATE


def test_force_send_socket_wins() -> None:
    def route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.force_send_socket("udp:203.0.113.1:5060")
        assert msg.t_relay()

    from types import SimpleNamespace

    p = make_proxy([PUBLIC, PRIVATE], ProxySettings(timers=TIMERS))
    p.router = SimpleNamespace(request_route=route)
    effects = p.receive_request(
        p_request("OPTIONS", "sip:core@10.9.0.50"), CALLER_PUBLIC, PRIVATE, 0.0
    )
    [send] = [e for e in effects if isinstance(e, Send) and e.peer.host == "10.9.0.50"]
    assert send.local == PUBLIC


CALLER_PUBLIC = Address("udp", "192.0.2.10", 5070)


def p_request(method: str, uri: str) -> Request:
    from tests.core.proxyhelpers import to_request

    return to_request(request_bytes(method, uri), CALLER_PUBLIC)


# -- 6. the smaller RFC 3261 points ---------------------------------------------------------------


def test_a_missing_max_forwards_becomes_70() -> None:
    p = proxy()
    data = request_bytes("OPTIONS", "sip:carol@192.0.2.30").replace(b"Max-Forwards: 70\r\n", b"")
    [out] = sent(send_request(p, data), Address("udp", "192.0.2.30", 5060))
    assert out.max_forwards == 70  # §16.6 step 3: added with 70, not decremented


def test_an_ack_with_max_forwards_0_is_not_forwarded() -> None:
    p = proxy()
    data = request_bytes(
        "ACK", "sip:carol@192.0.2.30", headers=[("Route", "<sip:192.0.2.40;lr>")]
    ).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    data = data.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x")
    assert sent(send_request(p, data)) == []


def test_cancel_after_the_final_response_gets_200() -> None:
    p = proxy()
    register(p, BOB1)
    [out] = sent(send_request(p, invite()), BOB1)
    answer(p, out, 486, BOB1, 1.0)
    cancel = request_bytes(
        "CANCEL", "sip:bob@sbc.test", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKc1;rport"
    ).replace(b"call-1@192.0.2.10", b"c1")
    effects = send_request(p, cancel, 2.0)
    assert statuses(effects) == [200]  # §16.10: the response context still exists
    assert sent(effects, BOB1) == []


def test_a_second_2xx_of_a_forked_non_invite_is_not_relayed() -> None:
    p = proxy()
    register(p, BOB1)
    register(p, BOB2)
    effects = send_request(p, request_bytes("MESSAGE", "sip:bob@sbc.test"))
    [one] = sent(effects, BOB1)
    [two] = sent(effects, BOB2)
    assert statuses(answer(p, one, 200, BOB1, 1.0, "b1")) == [200]
    assert statuses(answer(p, two, 200, BOB2, 1.1, "b2")) == []


def test_a_6xx_cancels_the_other_branches_and_waits_for_them() -> None:
    p = proxy()
    one, two = forked(p)
    answer(p, two, 180, BOB2, 0.5, to_tag="b2")
    effects = answer(p, one, 603, BOB1, 1.0, to_tag="b1")
    assert methods(effects, BOB2) == ["CANCEL"]
    assert statuses(effects) == []  # not forwarded at once (§16.7 step 5)
    [cancel] = [m for m in sent(effects, BOB2)]
    assert isinstance(cancel, Request)
    final = answer(p, two, 487, BOB2, 1.2, to_tag="b2")
    assert statuses(final) == [603]


def with_failure_route(failure) -> Proxy:  # type: ignore[no-untyped-def]
    """A proxy whose script relays to bob's binding (bob registered) with C{failure} as
    the failure route."""
    from types import SimpleNamespace

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.lookup("location")
        msg.t_on_failure(failure)
        msg.t_relay()

    p = proxy()
    register(p, BOB1)
    p.router = SimpleNamespace(request_route=route)
    return p


def test_a_failure_route_cannot_add_branches_after_a_6xx() -> None:
    tried: list[bool] = []

    def failure(msg) -> None:  # type: ignore[no-untyped-def]
        msg.ru = "sip:carol@192.0.2.30"
        tried.append(msg.t_relay())

    p = with_failure_route(failure)
    [out] = sent(send_request(p, invite()), BOB1)
    effects = answer(p, out, 603, BOB1, 1.0)
    assert tried == [False] and statuses(effects) == [603]
    assert not sent(effects, Address("udp", "192.0.2.30", 5060))


@pytest.mark.parametrize("spec", ["class=6", "code=603", "code=486;class=6"])
def test_6xx_cannot_be_a_failover_code(spec: str) -> None:
    with pytest.raises(ValueError, match="6xx"):
        failover_codes(spec)


def test_a_failure_route_answer_ends_the_early_dialogs() -> None:
    """A branch rang, its peer vanished (Timer C, no answer to the CANCEL), the failure
    route answers itself: the early dialog ends with the INVITE, nothing stays."""

    def failure(msg) -> None:  # type: ignore[no-untyped-def]
        msg.t_reply(480, "Gone")

    p = with_failure_route(failure)
    [out] = sent(send_request(p, invite()), BOB1)
    answer(p, out, 180, BOB1, 1.0, to_tag="b1")
    assert p.sizes()["dialogs"] == 1
    statuses_seen: list[int] = []
    for _ in range(10_000):
        deadline = p.next_deadline()
        if deadline is None or deadline > 400:
            break
        statuses_seen += statuses(p.handle_timer(deadline))
    assert 480 in statuses_seen
    sizes = p.sizes()
    assert sizes["dialogs"] == 0 and sizes["timer_heap"] == 0, sizes


def test_a_late_2xx_goes_through_reply_route_too() -> None:
    """A branch that timed out (Timer B) answers 200 after all: the 2xx goes upstream, and
    the routing script's reply_route saw it like any other response."""
    from types import SimpleNamespace

    from sbc.core import routes_default

    def reply_route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.append_hf("X-Seen: yes")

    p = proxy()
    register(p, BOB1)
    p.router = SimpleNamespace(request_route=routes_default.request_route, reply_route=reply_route)
    [out] = sent(send_request(p, invite()), BOB1)
    timeout = p.handle_timer(TIMERS.fr_timer + 0.1)  # Timer B: no answer at all
    assert 408 in statuses(timeout)
    late = answer(p, out, 200, BOB1, TIMERS.fr_timer + 1.0)
    [ok] = [m for m in sent(late, CALLER) if isinstance(m, Response)]
    assert ok.status == 200 and ok.get("X-Seen") == "yes"
