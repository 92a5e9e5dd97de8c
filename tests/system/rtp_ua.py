"""
A small SIP user agent with real RTP, for the media-anchoring system tests.  It runs inside
a test's network namespace (``ip netns exec NS python -m tests.system.rtp_ua ...``), so it
sees only what a phone behind that NAT would see.

It registers, then either calls (``--call USER``) or waits for a call, and once the call is
up sends RTP to the address and port in the SDP it *received* while counting the RTP that
arrives on its own media port.  It prints one JSON line with what happened and exits 0 when
the call set up and ended cleanly (media counts are for the test to judge).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from typing import Optional

from sbc.core.message import Message, Request, Response, parse
from sbc.core.reply import make_response
from sbc.core.sdp import media_connections, parse_sdp, session_connection


def _sdp(ip: str, port: int) -> bytes:
    return (
        f"v=0\r\no=ua 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


def media_target(body: bytes) -> tuple[str, int]:
    """The first audio stream's address and port in an SDP body."""
    sdp = parse_sdp(body)
    address = (media_connections(sdp) or [None])[0] or session_connection(sdp) or ""
    for line in sdp.lines:
        if line.startswith("m=audio "):
            return address, int(line.split()[1])
    raise ValueError("no audio stream")


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((args.local, args.sip_port))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((args.local, args.rtp_port))
        self.rtp.setblocking(False)
        host, _, port = args.proxy.partition(":")
        self.proxy = (host, int(port or 5060))
        self.cseq = 0
        self.tag = f"t{os.getpid()}"
        self.result: dict = {"user": args.user, "rtp_sent": 0, "rtp_received": 0}

    # -- SIP plumbing -----------------------------------------------------------------------
    def branch(self) -> str:
        self.cseq += 1
        return f"z9hG4bK{os.getpid()}x{self.cseq}x{time.monotonic_ns() % 100000}"

    def request(
        self,
        method: str,
        uri: str,
        to: str,
        call_id: str,
        cseq: int,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> bytes:
        args = self.args
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {args.local}:{args.sip_port};branch={self.branch()};rport",
            f"From: <sip:{args.user}@{self.proxy[0]}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{args.user}@{args.local}:{args.sip_port}>",
            "Max-Forwards: 70",
            *(f"{k}: {v}" for k, v in headers),
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def send(self, data: bytes) -> None:
        self.sip.sendto(data, self.proxy)

    def receive(self, deadline: float) -> Optional[Message]:
        while time.monotonic() < deadline:
            self.sip.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
            try:
                data, _ = self.sip.recvfrom(65535)
            except TimeoutError:
                continue
            if data.strip() == b"":
                continue
            message = parse(data)
            if isinstance(message, Request) and message.method == "OPTIONS":
                self.reply(message, 200)  # keepalive from sbc
                continue
            return message
        return None

    def reply(self, request: Request, status: int, extra=(), body: bytes = b"") -> None:  # type: ignore[no-untyped-def]
        response = make_response(
            request,
            status,
            headers=list(extra),
            body=body,
            content_type="application/sdp" if body else None,
        )
        if request.to.tag is None and status > 100:
            response = response.with_header("To", f"{request.get('to')};tag={self.tag}")
        self.send(response.to_bytes())

    def transaction(self, data: bytes, deadline: float) -> Optional[Response]:
        """Send a request (retransmitting every 0.5 s) until a final response comes."""
        self.send(data)
        last = time.monotonic()
        while time.monotonic() < deadline:
            message = self.receive(min(deadline, last + 0.5))
            if message is None:
                self.send(data)
                last = time.monotonic()
                continue
            if isinstance(message, Response) and message.status >= 200:
                return message
        return None

    # -- roles --------------------------------------------------------------------------------
    def register(self, deadline: float) -> bool:
        uri = f"sip:{self.proxy[0]}:{self.proxy[1]}"
        data = self.request(
            "REGISTER",
            uri,
            f"<sip:{self.args.user}@{self.proxy[0]}>",
            f"reg-{self.args.user}-{os.getpid()}",
            1,
            (("Expires", "120"),),
        )
        response = self.transaction(data, deadline)
        self.result["registered"] = bool(response and response.status == 200)
        return self.result["registered"]

    def call(self, callee: str, deadline: float) -> bool:
        uri = f"sip:{callee}@{self.proxy[0]}:{self.proxy[1]}"
        to = f"<sip:{callee}@{self.proxy[0]}>"
        call_id = f"call-{os.getpid()}@{self.args.local}"
        invite = self.request(
            "INVITE", uri, to, call_id, 1, body=_sdp(self.args.local, self.args.rtp_port)
        )
        response = self.transaction(invite, deadline)
        if response is None or response.status != 200:
            self.result["call"] = f"failed: {response.status if response else 'timeout'}"
            return False
        self.result["remote_media"] = "{}:{}".format(*media_target(response.body))
        contact = response.contacts[0].uri
        routes = tuple(("Route", str(r)) for r in reversed(response.record_routes))
        to_value = response.get("to") or to
        self.send(self.request("ACK", str(contact), to_value, call_id, 1, routes))
        self.media(media_target(response.body))
        bye = self.request("BYE", str(contact), to_value, call_id, 2, routes)
        answer = self.transaction(bye, time.monotonic() + 10)
        self.result["call"] = "ok" if answer is not None and answer.status == 200 else "no BYE 200"
        return self.result["call"] == "ok"

    def answer(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            message = self.receive(deadline)
            if isinstance(message, Request) and message.method == "INVITE":
                break
        else:
            self.result["call"] = "no INVITE"
            return False
        invite = message
        self.result["remote_media"] = "{}:{}".format(*media_target(invite.body))
        record_route = [("Record-Route", str(r)) for r in invite.record_routes]
        contact = [("Contact", f"<sip:{self.args.user}@{self.args.local}:{self.args.sip_port}>")]
        sdp = _sdp(self.args.local, self.args.rtp_port)
        acked = False
        for _ in range(8):
            self.reply(invite, 200, [*record_route, *contact], sdp)
            got = self.receive(time.monotonic() + 0.5)
            if isinstance(got, Request) and got.method == "ACK":
                acked = True
                break
        if not acked:
            self.result["call"] = "no ACK"
            return False
        self.media(media_target(invite.body))
        bye_deadline = time.monotonic() + 15
        while time.monotonic() < bye_deadline:
            got = self.receive(bye_deadline)
            if isinstance(got, Request) and got.method == "BYE":
                self.reply(got, 200)
                self.result["call"] = "ok"
                return True
        self.result["call"] = "no BYE"
        return False

    def media(self, target: tuple[str, int]) -> None:
        """Send 20 ms RTP packets to C{target} for --duration seconds, counting what comes in
        (and keep receiving a little longer for the last packets in flight)."""
        ssrc = os.getpid() & 0xFFFFFFFF
        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < self.args.duration + 0.3:
            if time.monotonic() - start < self.args.duration:
                header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc)
                try:
                    self.rtp.sendto(header + b"\xff" * 160, target)
                    self.result["rtp_sent"] += 1
                except OSError:
                    pass
                seq += 1
            until = time.monotonic() + 0.02
            while time.monotonic() < until:
                try:
                    data, source = self.rtp.recvfrom(2048)
                except BlockingIOError:
                    time.sleep(0.002)
                    continue
                if len(data) >= 12 and data[0] >> 6 == 2:
                    self.result["rtp_received"] += 1
                    self.result["rtp_from"] = f"{source[0]}:{source[1]}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--user", required=True)
    parser.add_argument("--local", required=True)
    parser.add_argument("--proxy", required=True, help="sbc's ip:port")
    parser.add_argument("--sip-port", type=int, default=5070)
    parser.add_argument("--rtp-port", type=int, default=6000)
    parser.add_argument("--call", help="call this user (else wait for a call)")
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    agent = Agent(args)
    deadline = time.monotonic() + args.timeout
    ok = agent.register(deadline)
    if ok:
        print("registered", flush=True)
        if args.call:
            time.sleep(0.3)
            ok = agent.call(args.call, deadline)
        else:
            ok = agent.answer(deadline)
    print(json.dumps(agent.result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
