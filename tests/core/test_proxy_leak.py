"""
Leak test of the proxy core: 10,000 calls through it with float time (100 calls/s), one
in ten never hung up, and every table is empty again within 64*T1 of the last call (the
calls without BYE once [dialog] default_timeout has passed).  And a memory bound: what a
finished call keeps while its transactions linger for 64*T1 (RFC 3261 §17, RFC 6026).
"""

from __future__ import annotations

import gc
import tracemalloc

from sbc.core.address import Address
from sbc.core.caches import clear_parse_caches
from sbc.core.dialog import DialogSettings
from sbc.core.message import Request, Response, parse
from sbc.core.proxy import Proxy
from sbc.core.transaction import Send
from tests.core.proxyhelpers import BOB1, CALLER, TIMERS, answer, proxy, register, send_request

CALLS = 10_000
RATE = 100.0  # calls per second
DIALOG_TIMEOUT = 120
T1 = TIMERS.t1


def sends(effects: list, peer: Address) -> list:
    return [e.message for e in effects if isinstance(e, Send) and e.peer == peer]


def in_dialog(method: str, out: Request, ok: Response, cseq: int, branch: str) -> bytes:
    """The caller's ACK or BYE for a call, along the route set of the 200."""
    routes = ", ".join(str(r) for r in reversed(ok.record_routes))
    text = (
        f"{method} sip:bob@192.0.2.21:5081 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"Route: {routes}\r\n"
        f"From: {out.get('From')}\r\nTo: {ok.get('To')}\r\n"
        f"Call-ID: {out.call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    return text.encode()


def settle(p: Proxy, now: float) -> None:
    while (deadline := p.next_deadline()) is not None and deadline <= now:
        p.handle_timer(deadline)


def call(p: Proxy, n: int, now: float, hang_up: bool = True) -> None:
    """One call through the proxy: INVITE, 180, 200, ACK and (when C{hang_up}) BYE, 200."""
    invite = (
        f"INVITE sip:bob@sbc.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKi{n};rport\r\nMax-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag=a{n}\r\nTo: <sip:bob@sbc.test>\r\n"
        f"Call-ID: leak-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    [out] = sends(send_request(p, invite, now), BOB1)
    answer(p, out, 180, BOB1, now, to_tag=f"b{n}")
    final = parse(answer_bytes(out, f"b{n}"))
    assert isinstance(final, Response)
    [ok] = sends(p.receive_response(final, BOB1, now), CALLER)
    assert isinstance(ok, Response) and ok.status == 200
    ack = in_dialog("ACK", out, ok, 1, f"z9hG4bKa{n}")
    assert sends(send_request(p, ack, now), BOB1)
    if hang_up:
        bye = in_dialog("BYE", out, ok, 2, f"z9hG4bKb{n}")
        [relayed] = sends(send_request(p, bye, now + 0.001), BOB1)
        reply = parse(answer_bytes(relayed))
        assert isinstance(reply, Response)
        p.receive_response(reply, BOB1, now + 0.002)


def alive() -> int:
    """Bytes alive now, without the parser's bounded caches (not per-call state)."""
    clear_parse_caches()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_a_finished_call_keeps_a_few_kilobytes_while_its_transactions_linger() -> None:
    """Inside the 64*T1 window a finished call keeps its transactions' keys, the bytes of
    their last responses and what passes 2xx retransmissions on, not parsed messages
    (about 28 KB a call before, 7.7 KB now); after the window nothing (bench/memory.py
    measures the same)."""
    p = proxy()
    register(p, BOB1, expires=100_000)
    call(p, -1, 0.0)  # warm up
    settle(p, 64 * T1 + 1)
    start, calls, rate = 100.0, 2000, 100.0
    tracemalloc.start()
    try:
        base = alive()
        now = start
        for n in range(calls):
            now = start + n / rate
            settle(p, now)
            call(p, n, now)
        per_call = (alive() - base) / calls  # all still inside 64*T1
        settle(p, now + 64 * T1 + 1)
        left = alive() - base
    finally:
        tracemalloc.stop()
    assert p.sizes()["server_transactions"] == 0
    assert per_call < 11_000, per_call  # measured 7,700
    assert left < 200_000, left  # (was 2.4 MB: tables that never shrank)


def test_ten_thousand_calls_leave_nothing_behind() -> None:
    p = proxy(dialog=DialogSettings(default_timeout=DIALOG_TIMEOUT))
    register(p, BOB1, expires=100_000)
    now = 0.0
    peak = 0
    for n in range(CALLS):
        now = n / RATE
        settle(p, now)
        call(p, n, now, hang_up=bool(n % 10))  # one call in ten is never hung up
        peak = max(peak, p.sizes()["server_transactions"])
    last = now
    settle(p, last + 64 * T1 + 1)
    sizes = p.sizes()
    for table in ("server_transactions", "client_transactions", "forwardings", "late_branches"):
        assert sizes[table] == 0, sizes
    assert sizes["resolving"] == sizes["anchoring"] == sizes["media_calls"] == 0, sizes
    assert 0 < sizes["dialogs"] <= CALLS // 10  # the calls without BYE, until their timeout
    settle(p, last + DIALOG_TIMEOUT + 1)
    sizes = p.sizes()
    assert sizes["dialogs"] == 0 and sizes["timer_heap"] == 0, sizes
    assert p.heap.entries < 50, p.heap.entries  # stale heap entries drained too
    # At 100 calls/s, transactions live about 64*T1 after their call: a bounded window.
    assert peak < 64 * T1 * RATE * 3, peak


def answer_bytes(request: Request, tag: str = "") -> bytes:
    """The callee's 200 on the wire: its Vias and Record-Route echoed (RFC 3261 §12.1.1),
    a To tag for an INVITE, a Contact."""
    vias = "".join(f"Via: {v}\r\n" for v in request.get_all("Via"))
    rr = "".join(f"Record-Route: {r}\r\n" for r in request.get_all("Record-Route"))
    to = request.get("To") or ""
    if tag:
        to += f";tag={tag}"
    return (
        f"SIP/2.0 200 OK\r\n{vias}{rr}From: {request.get('From')}\r\nTo: {to}\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: {request.cseq.number} {request.method}\r\n"
        "Contact: <sip:bob@192.0.2.21:5081>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_a_2xx_retransmitted_after_the_bye_does_not_bring_the_dialog_back() -> None:
    """The 2xx is relayed again (RFC 6026 Accepted) but the dialog the BYE ended stays
    gone: it would otherwise hold its INVITE until default_timeout (12 hours)."""
    p = proxy()
    register(p, BOB1, expires=100_000)
    invite = (
        b"INVITE sip:bob@sbc.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKre;rport\r\nMax-Forwards: 70\r\n"
        b"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@sbc.test>\r\n"
        b"Call-ID: again\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    [out] = sends(send_request(p, invite, 1.0), BOB1)
    final = parse(answer_bytes(out, "b"))
    assert isinstance(final, Response)
    [ok] = sends(p.receive_response(final, BOB1, 1.0), CALLER)
    assert isinstance(ok, Response)
    [relayed] = sends(send_request(p, in_dialog("BYE", out, ok, 2, "z9hG4bKbye"), 2.0), BOB1)
    reply = parse(answer_bytes(relayed))
    assert isinstance(reply, Response)
    p.receive_response(reply, BOB1, 2.0)
    assert p.sizes()["dialogs"] == 0
    again = parse(answer_bytes(out, "b"))
    assert isinstance(again, Response)
    assert sends(p.receive_response(again, BOB1, 3.0), CALLER)  # still relayed upstream
    assert p.sizes()["dialogs"] == 0


def test_calls_make_no_reference_cycles() -> None:
    """The collector never walks the old generation automatically (the service's
    GC_THRESHOLDS): whatever a call leaves in cycles would only go with a full
    collection, so a call through the proxy core must leave none."""
    p = proxy()
    register(p, BOB1, expires=100_000)
    call(p, -1, 0.0)  # warm up
    settle(p, 64 * T1 + 1)
    gc.collect()
    gc.disable()
    try:
        for n in range(200):
            call(p, n, 100.0 + n / 100)
        settle(p, 102.0 + 64 * T1 + 1)
        assert p.sizes()["server_transactions"] == 0
        assert gc.collect() == 0
    finally:
        gc.enable()
