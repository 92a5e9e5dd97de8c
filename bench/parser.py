"""
Parser benchmark (messages/s): parse + serialise a realistic INVITE and 200 OK on one core.

    .venv/bin/python bench/parser.py [--seconds 2]

Prints messages/s for: parse (with the eager checks of Via, From, To, Call-ID, CSeq,
Max-Forwards, Content-Length, Contact); parse + serialise unchanged; and parse + the changes
a proxy makes (new top Via, Max-Forwards decremented, Record-Route added) + serialise.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sbc.core.message import parse  # noqa: E402

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 10.0.0.5\r\n"
    b"s=-\r\n"
    b"c=IN IP4 10.0.0.5\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@sbc.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@sbc.test>;tag=1928301774\r\n'
    b"To: <sip:bob@sbc.test>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@10.0.0.5:5060;transport=udp>"
    b';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"\r\n'
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"Session-Expires: 1800\r\n"
    b"User-Agent: Example Phone 1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsbc1a2b3c\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds;rport=41234;received=203.0.113.5\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=1928301774>\r\n"
    b'From: "Alice" <sip:alice@sbc.test>;tag=1928301774\r\n'
    b"To: <sip:bob@sbc.test>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@10.0.0.9:5062>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def parse_only(data: bytes) -> None:
    parse(data)


def parse_serialise(data: bytes) -> None:
    parse(data).to_bytes()


def parse_proxy_serialise(data: bytes) -> None:
    m = parse(data)
    m = m.with_header_first("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsbc1a2b3c")
    m = m.with_header("Max-Forwards", str((m.max_forwards or 70) - 1))
    m = m.with_header_first("Record-Route", "<sip:127.0.0.1:5060;lr;ftag=1928301774>")
    m.to_bytes()


def rate(func, data: bytes, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Best of 5 runs of messages per second."""
    best = 0.0
    for _ in range(5):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while True:
            for _ in range(200):
                func(data)
            count += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, one core")
    print(f"{'message':10} {'what':32} {'msgs/s':>10}")
    for name, data in (("INVITE", INVITE), ("200 OK", OK)):
        for label, func in (
            ("parse", parse_only),
            ("parse + serialise", parse_serialise),
            ("parse + proxy changes + serialise", parse_proxy_serialise),
        ):
            print(f"{name:10} {label:32} {rate(func, data, args.seconds):10,.0f}")


if __name__ == "__main__":
    main()
