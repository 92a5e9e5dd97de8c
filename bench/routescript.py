"""
Routing-script benchmark: what routing a call costs in the proxy core, per
script, on one core, without sockets.

    .venv/bin/python bench/routescript.py [--calls 20000]

Each call is an INVITE from a caller behind NAT to a registered user, its 180 and 200,
the ACK and the BYE with its 200, all driven through the pure proxy (no sockets; parsing
the requests is included and the same for every script).  Scripts compared: sbc's own
policy (sbc/core/routes_default.py, the built-in default), the NAT-recipes example
(etc/routes_nat_recipes.py) and a minimal script (lookup + t_relay, no NAT handling) as
the floor.  Prints microseconds per call and calls/s.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sbc.core.address import Address  # noqa: E402
from sbc.core.identity import LocalIdentity  # noqa: E402
from sbc.core.message import Request, Response, parse  # noqa: E402
from sbc.core.proxy import Proxy  # noqa: E402
from sbc.core.registrar import Registrar, RegistrarSettings  # noqa: E402
from sbc.core.reply import make_response  # noqa: E402
from sbc.core.transaction import Send  # noqa: E402

SBC = Address("udp", "203.0.113.1", 5060)
CALLER = Address("udp", "198.51.100.7", 40000)  # the NAT's public side
CALLEE = Address("udp", "192.0.2.21", 5081)
SDP = (
    b"v=0\r\no=a 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)
VIA = "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK"


def minimal(msg) -> None:  # type: ignore[no-untyped-def]
    if msg.is_method("REGISTER"):
        msg.save("location")
    elif msg.loose_route() or not msg.is_myself():
        msg.t_relay()
    elif msg.lookup("location"):
        msg.record_route()
        msg.t_relay()
    else:
        msg.sl_send_reply(404)


def request(text: str) -> Request:
    message = parse(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request)
    return message


def make_proxy(router) -> Proxy:  # type: ignore[no-untyped-def]
    """A proxy with C{router} (None: no script) and bob registered from CALLEE."""
    routing = {"router": router} if router is not None else {}  # None: a proxy without
    proxy = Proxy(  # scripts (sbc before routing scripts), for comparison
        LocalIdentity.from_addresses([SBC], domains=["sbc.test"]),
        [SBC],
        Registrar(RegistrarSettings()),
        rng=random.Random(1),
        **routing,
    )
    register = request(
        "REGISTER sip:sbc.test SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.21:5081;branch=z9hG4bKr\n"
        "From: <sip:bob@sbc.test>;tag=r\nTo: <sip:bob@sbc.test>\nCall-ID: reg\nCSeq: 1 REGISTER\n"
        "Contact: <sip:bob@192.0.2.21:5081>\nExpires: 3600\nContent-Length: 0\n\n"
    )
    proxy.receive_request(register, CALLEE, SBC, 0.0)
    return proxy


def one_call(proxy: Proxy, n: int, now: float) -> None:
    """Call number C{n} at C{now}: INVITE, 180, 200, ACK, BYE and its 200."""
    call_id = f"c{n}"
    invite = parse(
        (
            f"INVITE sip:bob@sbc.test SIP/2.0\r\n{VIA}i{n};rport\r\n"
            f"From: <sip:alice@sbc.test>;tag=a{n}\r\nTo: <sip:bob@sbc.test>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.5:5060>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
        ).encode()
        + SDP
    )
    assert isinstance(invite, Request)
    effects = proxy.receive_request(invite, CALLER, SBC, now)
    [out] = [e.message for e in effects if isinstance(e, Send) and e.peer == CALLEE]
    for status in (180, 200):
        response = make_response(out, status, body=SDP if status == 200 else b"")
        response = response.with_header("To", f"{out.get('to')};tag=b{n}")
        response = response.with_header("Contact", "<sip:bob@192.0.2.21:5081>")
        assert isinstance(response, Response)
        proxy.receive_response(response, CALLEE, now)
    route = out.get("record-route") or "<sip:203.0.113.1;lr>"
    ack = request(
        f"ACK sip:bob@192.0.2.21:5081 SIP/2.0\n{VIA}a{n};rport\n"
        f"From: <sip:alice@sbc.test>;tag=a{n}\nTo: <sip:bob@sbc.test>;tag=b{n}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: 1 ACK\nRoute: {route}\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )
    proxy.receive_request(ack, CALLER, SBC, now)
    bye = request(
        f"BYE sip:bob@192.0.2.21:5081 SIP/2.0\n{VIA}b{n};rport\n"
        f"From: <sip:alice@sbc.test>;tag=a{n}\nTo: <sip:bob@sbc.test>;tag=b{n}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: 2 BYE\nRoute: {route}\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )
    [bye_out] = [
        e.message
        for e in proxy.receive_request(bye, CALLER, SBC, now)
        if isinstance(e, Send) and e.peer == CALLEE
    ]
    proxy.receive_response(make_response(bye_out, 200), CALLEE, now)  # type: ignore[arg-type]


def run(router, calls: int) -> float:  # type: ignore[no-untyped-def]
    proxy = make_proxy(router)
    started = time.perf_counter()
    now = 1.0
    for n in range(calls):
        one_call(proxy, n, now)
        now += 0.001
        if n % 1000 == 999:
            proxy.handle_timer(now + 64)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument(
        "--hard-coded",
        action="store_true",
        help="time the proxy's own routing only (run "
        "this file against a checkout from before routing scripts)",
    )
    args = parser.parse_args()
    if args.hard_coded:
        run(None, 500)
        seconds = run(None, args.calls)
        print(f"hard-coded routing: {seconds / args.calls * 1e6:.0f} us/call")
        return
    from sbc.app.routescript import load_script
    from sbc.core import routes_default

    scripts = {
        "sbc's own policy (built-in default)": routes_default,
        "NAT recipes (etc/routes_nat_recipes.py)": load_script(
            os.path.join(ROOT, "etc", "routes_nat_recipes.py")
        ),
        "minimal (lookup + t_relay)": SimpleNamespace(request_route=minimal),
    }
    print(f"{args.calls} calls each (INVITE/180/200/ACK/BYE/200 through the proxy core)")
    print(f"{'script':42} {'us/call':>8} {'calls/s':>8}")
    for name, router in scripts.items():
        run(router, 500)  # warm up
        seconds = run(router, args.calls)
        print(f"{name:42} {seconds / args.calls * 1e6:8.0f} {args.calls / seconds:8.0f}")


if __name__ == "__main__":
    main()
