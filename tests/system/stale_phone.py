"""
A phone whose NAT binding goes stale, and a one-shot caller, for the blocklist system test.
Both run inside a test's network namespace (``ip netns exec NS python -m
tests.system.stale_phone ...``).

``phone``: registers over UDP and prints ``registered``; then it is deaf (a dead binding:
requests are read and dropped, nothing is answered) until a ``register`` line on stdin makes
it register again from the very same socket, after which it answers INVITEs with 486 and
prints ``invite <ms>``, the milliseconds since the last 200 OK to its REGISTER.  EOF on
stdin ends it.

``call``: sends one INVITE for a user through sbc (retransmitted as RFC 3261 §17.1.1.2
Timer A says), ACKs the final response and prints ``final <status> <ms>``.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time
from typing import Optional

from sbc.core.message import Request, Response, parse
from sbc.core.reply import make_response


def _request(
    method: str,
    uri: str,
    local: tuple[str, int],
    user: str,
    to: str,
    call_id: str,
    cseq: int,
    branch: str,
    extra: tuple[str, ...] = (),
) -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport",
        f"From: <sip:{user}@sbc.test>;tag=t{os.getpid()}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@{local[0]}:{local[1]}>",
        "Max-Forwards: 70",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def phone(sock: socket.socket, proxy: tuple[str, int], local: tuple[str, int]) -> int:
    cseq = 0
    registered_at = 0.0
    deaf = True

    def register() -> bool:
        nonlocal cseq, registered_at
        cseq += 1
        data = _request(
            "REGISTER",
            f"sip:{proxy[0]}",
            local,
            "alice",
            "<sip:alice@sbc.test>",
            f"stale-{os.getpid()}",
            cseq,
            f"z9hG4bKreg{os.getpid()}x{cseq}",
            ("Expires: 300",),
        )
        deadline = time.monotonic() + 8.0
        sock.sendto(data, proxy)
        resend = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], max(0.0, resend - time.monotonic()))
            if not ready:
                sock.sendto(data, proxy)
                resend = time.monotonic() + 0.5
                continue
            message = parse(sock.recvfrom(65535)[0])
            if isinstance(message, Response) and message.cseq.method == "REGISTER":
                if message.status >= 200:
                    registered_at = time.monotonic()
                    return message.status == 200
        return False

    if not register():
        _out("register failed")
        return 1
    _out("registered")
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [], 30.0)
        if not ready:
            return 1
        if sys.stdin in ready:
            line = sys.stdin.readline()
            if not line:
                return 0
            if line.strip() == "register":
                deaf = False
                _out("registered" if register() else "register failed")
            continue
        data = sock.recvfrom(65535)[0]
        if deaf or not data.strip():
            continue
        message = parse(data)
        if isinstance(message, Request) and message.method == "INVITE":
            _out(f"invite {(time.monotonic() - registered_at) * 1000:.0f}")
            busy = make_response(message, 486).with_header("To", f"{message.get('to')};tag=busy")
            sock.sendto(busy.to_bytes(), proxy)


def call(
    sock: socket.socket,
    proxy: tuple[str, int],
    local: tuple[str, int],
    user: str,
    timeout: float,
) -> int:
    branch = f"z9hG4bKcall{os.getpid()}"
    to = f"<sip:{user}@sbc.test>"
    call_id = f"call-{os.getpid()}"
    invite = _request("INVITE", f"sip:{user}@sbc.test", local, "carol", to, call_id, 1, branch)
    start = time.monotonic()
    sock.sendto(invite, proxy)
    interval, resend = 0.5, start + 0.5
    provisional = False
    while time.monotonic() < start + timeout:
        wait = max(0.0, (resend if not provisional else start + timeout) - time.monotonic())
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            if not provisional:
                sock.sendto(invite, proxy)
                interval = min(interval * 2, 4.0)
                resend = time.monotonic() + interval
            continue
        message = parse(sock.recvfrom(65535)[0])
        if not isinstance(message, Response):
            continue
        if message.status < 200:
            provisional = True
            continue
        to_header = message.get("to") or to
        ack = _request("ACK", f"sip:{user}@sbc.test", local, "carol", to_header, call_id, 1, branch)
        sock.sendto(ack, proxy)
        _out(f"final {message.status} {(time.monotonic() - start) * 1000:.0f}")
        return 0
    _out("final none")
    return 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["phone", "call"])
    parser.add_argument("--local", required=True, help="ip:port to send from")
    parser.add_argument("--proxy", required=True, help="sbc's ip:port")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    host, _, port = args.local.partition(":")
    local = (host, int(port))
    phost, _, pport = args.proxy.partition(":")
    proxy = (phost, int(pport))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(local)
    try:
        if args.role == "phone":
            return phone(sock, proxy, local)
        return call(sock, proxy, local, args.user, args.timeout)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
