"""
A tiny UDP user agent server for system tests that need to count what reaches each of
several next hops: it answers INVITE (200 with SDP, or a fixed failure), BYE and OPTIONS,
ignores ACK, and counts the Call-IDs of the INVITEs it got.  Runs in a thread; stops in
C{close()}.
"""

from __future__ import annotations

import socket
import threading
from typing import Optional

from sbc.core.errors import ParseError
from sbc.core.message import Request, parse
from sbc.core.reply import make_response

__all__ = ["MiniUas"]

_SDP = (
    b"v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


class MiniUas:
    """
    @ivar invites: Call-IDs of the INVITEs received (each counted once).
    @ivar requests: (method, Call-ID) of every request received.
    @ivar received: every request received, as parsed from the datagram.
    @ivar status: the answer to INVITE (200, or e.g. 503 with C{retry_after}).
    """

    def __init__(
        self, host: str = "127.0.0.1", status: int = 200, retry_after: Optional[int] = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()
        self.status = status
        self.retry_after = retry_after
        self.invites: set[str] = set()
        #: (method, Call-ID) of every request received, in order.
        self.requests: list[tuple[str, str]] = []
        #: every request received, parsed from the bytes on the wire, in order.
        self.received: list[Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = parse(data)
            except ParseError:
                continue
            if isinstance(message, Request):
                self.requests.append((message.method, message.call_id))
                self.received.append(message)
            if not isinstance(message, Request) or message.method == "ACK":
                continue
            if message.method == "INVITE":
                self.invites.add(message.call_id)
                if self.status != 200:
                    headers = [("Retry-After", str(self.retry_after))] if self.retry_after else []
                    answer = make_response(message, self.status, headers=headers)
                else:
                    record_route = [("Record-Route", str(r)) for r in message.record_routes]
                    answer = make_response(
                        message,
                        200,
                        headers=[*record_route, ("Contact", f"<sip:uas@{self.host}:{self.port}>")],
                        body=_SDP,
                        content_type="application/sdp",
                    )
            else:
                answer = make_response(message, 200)
            host, port = peer
            via = message.top_via
            target = (via.received or host, int(via.rport) if via.rport else (via.port or 5060))
            try:
                self.sock.sendto(answer.to_bytes(), target)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> MiniUas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
