"""
The benchmark call flow through the whole engine of a service built as `bench/calls.py`
builds it (the bench config, metrics and every default tap on), without sockets: datagrams
go into L{SipEngine.receive} and what the engine sends is answered from bytes, as SIPp
would.  This is the real process minus the reactor and the kernel, so it shows what the
engine, the taps and the service wiring add to the proxy core's cost.

    .venv/bin/python bench/engineflow.py [--calls 5000] [--profile FILE]
    .venv/bin/python bench/engineflow.py --instructions [--calls 1000]   # callgrind

Each call: INVITE (with SDP) from the caller, the callee's 180 and 200, the caller's ACK
and BYE, the callee's 200 for the BYE; the callee registered first.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

CALLER = ("127.0.0.1", 5061)
CALLEE = ("127.0.0.1", 5062)
SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
_RECORD_ROUTE = re.compile(rb"^Record-Route: ([^\r]*)\r\n", re.MULTILINE)
_HEAD_END = b"\r\n\r\n"


class Flow:
    """A UDP flow into the engine from C{remote}."""

    transport = "udp"
    reliable = False

    def __init__(self, remote: tuple[str, int], local: tuple[str, int]) -> None:
        self.remote = remote
        self.local = local

    def send(self, data: bytes, destination: object = None) -> None:
        raise AssertionError("the engine sends through its sockets")


def _request(method: str, uri: str, n: int, extra: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{method}-{n};rport\r\n"
        f"From: <sip:caller@127.0.0.1:5061>;tag={n}c\r\n{extra}"
        f"Call-ID: {n}-bench@127.0.0.1\r\nMax-Forwards: 70\r\n"
    )
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _answer(request: bytes, status: int, reason: str, tag: bool, body: bytes = b"") -> bytes:
    """A response to C{request} as a UAS writes it: its Via, From, To (+tag), Call-ID and
    CSeq copied, a Contact and Content-Length added."""
    head = request[: request.index(_HEAD_END)].split(b"\r\n")
    keep = [
        line
        for line in head[1:]
        if line.split(b":", 1)[0].lower()
        in (b"via", b"from", b"to", b"call-id", b"cseq", b"record-route")
    ]
    if tag:
        keep = [line + b";tag=callee" if line.startswith(b"To:") else line for line in keep]
    lines = [f"SIP/2.0 {status} {reason}".encode(), *keep]
    lines.append(b"Contact: <sip:bench@127.0.0.1:5062>")
    if body:
        lines.append(b"Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + _HEAD_END + body


def build():  # type: ignore[no-untyped-def]
    """The service as the bench config builds it, its engine's UDP socket recorded."""
    from twisted.internet.testing import MemoryReactorClock

    from sbc.app.config import load
    from sbc.app.service import build_service

    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
        f.write(
            "[core]\nlisten = udp:127.0.0.1:5060\nalias = sbc.test\nlog_level = warn\n"
            "[registrar]\nmax_expires = 3600\nmax_contacts = 10\n"
        )
    try:
        settings = load(f.name)
    finally:
        os.unlink(f.name)
    reactor = MemoryReactorClock()
    service = build_service(settings, reactor)
    engine = service.engine
    sent: list[tuple[bytes, tuple[str, int]]] = []
    for local in settings.core.listen:
        engine.datagram_sockets[local] = lambda data, addr: sent.append((data, addr))
    return engine, reactor, sent


def run(calls: int) -> float:
    """Seconds for C{calls} calls (the registration not counted)."""
    engine, reactor, sent = build()
    local = ("127.0.0.1", 5060)
    from_caller, from_callee = Flow(CALLER, local), Flow(CALLEE, local)
    register = (
        b"REGISTER sip:sbc.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-reg;rport\r\n"
        b"From: <sip:bench@sbc.test>;tag=r\r\nTo: <sip:bench@sbc.test>\r\n"
        b"Call-ID: reg@127.0.0.1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
        b"Contact: <sip:bench@127.0.0.1:5062>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    engine.receive(register, from_callee)
    assert b"SIP/2.0 200" in sent[-1][0], sent[-1][0][:60]

    def to_callee() -> bytes:
        found = [data for data, addr in sent if addr == CALLEE]
        sent.clear()
        return found[-1]

    started = time.perf_counter()
    for n in range(calls):
        to = "To: <sip:bench@sbc.test>\r\n"
        invite = _request(
            "INVITE",
            "sip:bench@sbc.test",
            n,
            to + "CSeq: 1 INVITE\r\n"
            "Contact: <sip:caller@127.0.0.1:5061>\r\n"
            "Content-Type: application/sdp\r\n",
            SDP,
        )
        engine.receive(invite, from_caller)
        forwarded = to_callee()
        engine.receive(_answer(forwarded, 180, "Ringing", True), from_callee)
        engine.receive(_answer(forwarded, 200, "OK", True, SDP), from_callee)
        answered = [data for data, addr in sent if addr == CALLER][-1]
        sent.clear()
        found = _RECORD_ROUTE.search(answered)
        route = f"Route: {found.group(1).decode()}\r\n" if found else ""
        to = "To: <sip:bench@sbc.test>;tag=callee\r\n"
        engine.receive(
            _request("ACK", "sip:bench@127.0.0.1:5062", n, to + "CSeq: 1 ACK\r\n" + route),
            from_caller,
        )
        engine.receive(
            _request("BYE", "sip:bench@127.0.0.1:5062", n, to + "CSeq: 2 BYE\r\n" + route),
            from_caller,
        )
        engine.receive(_answer(to_callee(), 200, "OK", False), from_callee)
        sent.clear()
        reactor.advance(0.001)
    return time.perf_counter() - started


def instructions(calls: int) -> int:
    """Instructions callgrind counts for a process that runs C{calls} calls."""
    code = f"import sys; sys.path.insert(0, {HERE!r}); import engineflow; engineflow.run({calls})"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            + [sys.executable, "-c", code],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(out) as f:
            found = re.search(r"^summary: (\d+)", f.read(), re.MULTILINE)
    if found is None:
        raise SystemExit("no summary line in callgrind's output")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--profile", help="write a cProfile pstats file here")
    args = parser.parse_args()
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed: apt-get install valgrind")
        short, long = instructions(300), instructions(300 + args.calls)
        print(f"{(long - short) / args.calls / 1e6:.3f} M instructions per call")
        return
    run(300)  # warm up
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        seconds = run(args.calls)
        profiler.disable()
        profiler.dump_stats(args.profile)
    else:
        seconds = run(args.calls)
    print(f"{args.calls} calls: {seconds / args.calls * 1e6:.0f} us per call")


if __name__ == "__main__":
    main()
