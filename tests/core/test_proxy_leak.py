"""
Leak test of the proxy core: 10,000 calls through it with float time (100 calls/s), one
in ten never hung up, and every table is empty again within 64*T1 of the last call (the
calls without BYE once [dialog] default_timeout has passed).
"""

from __future__ import annotations

from sbc.core.address import Address
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


def test_ten_thousand_calls_leave_nothing_behind() -> None:
    p = proxy(dialog=DialogSettings(default_timeout=DIALOG_TIMEOUT))
    register(p, BOB1, expires=100_000)
    now = 0.0
    peak = 0
    for n in range(CALLS):
        now = n / RATE
        settle(p, now)
        call_id = f"leak-{n}"
        invite = (
            f"INVITE sip:bob@sbc.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKi{n};rport\r\nMax-Forwards: 70\r\n"
            f"From: <sip:alice@example.com>;tag=a{n}\r\nTo: <sip:bob@sbc.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        [out] = sends(send_request(p, invite, now), BOB1)
        answer(p, out, 180, BOB1, now, to_tag=f"b{n}")
        final = parse(answer_bytes(out, f"b{n}"))
        assert isinstance(final, Response)
        [ok] = sends(p.receive_response(final, BOB1, now), CALLER)
        assert isinstance(ok, Response) and ok.status == 200
        ack = in_dialog("ACK", out, ok, 1, f"z9hG4bKa{n}")
        assert sends(send_request(p, ack, now), BOB1)
        if n % 10:  # one call in ten is never hung up
            bye = in_dialog("BYE", out, ok, 2, f"z9hG4bKb{n}")
            [relayed] = sends(send_request(p, bye, now + 0.001), BOB1)
            reply = parse(answer_bytes(relayed))
            assert isinstance(reply, Response)
            p.receive_response(reply, BOB1, now + 0.002)
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
