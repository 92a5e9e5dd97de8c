"""
Cost of the metrics wire tap (L{sbc.app.metrics.SbcMetrics.wire}) per message, on one core.

    .venv/bin/python bench/metrics_tap.py [--repeat 5] [--number 200000]

Prints the best of C{--repeat} runs, in nanoseconds per message, for:
  - counters: an INVITE retransmission received and a 100 sent, again and again (the
    counters and the transaction look-ups, no histogram sample);
  - invite+200: a parsed INVITE received and its 200 sent, again and again (each pair a
    transaction and a call answered at once: counters, histograms, the call counter);
  - call: INVITE in, 100, 180 and 200 out, ACK in, each call with its own Call-ID;
  - engine: invite+200 through the engine's tap of a service built on the defaults
    (metrics on, HEP capture and acc off): the L{Wire} records and every tap.
The messages are parsed, and the headers the tap reads decoded, before the clock starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from sbc.app.config import defaults  # noqa: E402
from sbc.app.metrics import SbcMetrics  # noqa: E402
from sbc.app.service import build_service  # noqa: E402
from sbc.core.message import Request, Response, parse  # noqa: E402
from sbc.core.reply import make_response  # noqa: E402
from sbc.core.wire import RECEIVED, SENT, Wire  # noqa: E402

PHONE = ("192.0.2.10", 5070)
US = ("127.0.0.1", 5060)


def invite(call_id: str, method: str = "INVITE") -> Request:
    data = (
        f"{method} sip:bob@sbc.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@sbc.test>;tag=1928301774\r\n"
        "To: <sip:bob@sbc.test>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:alice@192.0.2.10:5070>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    request = parse(data)
    assert isinstance(request, Request)
    return request


def touched(message: Request | Response) -> Request | Response:
    """Decode what the tap reads (the routing has done so before the tap sees it)."""
    message.call_id, message.cseq, message.to  # noqa: B018
    return message


def received(message: Request | Response, when: float = 0.0) -> Wire:
    return Wire(RECEIVED, "udp", PHONE, US, b"", when, touched(message))


def sent(message: Request | Response, when: float = 0.0) -> Wire:
    return Wire(SENT, "udp", US, PHONE, b"", when, touched(message))


def pairs(status: int, number: int, repeat: int) -> float:
    metrics = SbcMetrics(process=False)
    request = invite("steady-1")
    records = (received(request), sent(make_response(request, status)))
    tap = metrics.wire
    if status < 200:
        tap(records[0])  # the first copy: what follows are retransmissions

    def run() -> None:
        for record in records:
            tap(record)

    best = min(timeit.repeat(run, number=number, repeat=repeat))
    return best / (number * len(records)) * 1e9


def calls(number: int, repeat: int) -> float:
    records: list[Wire] = []
    for i in range(number):
        request = invite(f"call-{i}")
        t = float(i)
        records.append(received(request, t))
        for status, dt in ((100, 0.0), (180, 0.2), (200, 1.5)):
            records.append(sent(make_response(request, status), t + dt))
        records.append(received(invite(f"call-{i}", "ACK"), t + 1.6))

    def run() -> None:
        tap = SbcMetrics(process=False).wire  # a fresh one: every call is a new one
        for record in records:
            tap(record)

    return min(timeit.repeat(run, number=1, repeat=repeat)) / len(records) * 1e9


def engine(number: int, repeat: int) -> float:
    service = build_service(defaults(), MemoryReactorClock())
    request = invite("steady-1")
    response = touched(make_response(request, 200))
    tap = service.engine._tap
    request_data, response_data = request.to_bytes(), response.to_bytes()

    def run() -> None:
        tap(RECEIVED, "udp", PHONE, US, request_data, request)
        tap(SENT, "udp", US, PHONE, response_data, response)

    best = min(timeit.repeat(run, number=number, repeat=repeat))
    return best / (number * 2) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=100_000, help="pairs per run")
    args = parser.parse_args()
    n, r = args.number, args.repeat
    print(f"counters   (INVITE again in, 100 out): {pairs(100, n, r):5.0f} ns/message")
    print(f"invite+200 (INVITE in, 200 out):       {pairs(200, n, r):5.0f} ns/message")
    print(f"call       (5 messages, own Call-IDs): {calls(n // 10, r):5.0f} ns/message")
    print(f"engine     (invite+200, all the taps): {engine(n, r):5.0f} ns/message")


if __name__ == "__main__":
    main()
