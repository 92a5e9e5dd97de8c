"""
A small SIP user agent over WebSocket (RFC 7118) for system tests: a wsproto client on a
real (TLS) socket that registers, calls, answers and hangs up, the way a browser phone
(JsSIP, SIP.js) does: made-up C{.invalid} Via and Contact hosts, one SIP message per
WebSocket text message.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from sbc.core.message import Message, Response, parse
from sbc.core.message import Request as SipRequest

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass
class Dialog:
    """What one side keeps of a dialog (RFC 3261 §12)."""

    call_id: str
    local_uri: str
    local_tag: str
    remote_uri: str
    remote_tag: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    cseq: int = 1


class WsUa:
    """One WebSocket connection to sbc and a SIP UA on it."""

    def __init__(
        self,
        port: int,
        user: str,
        *,
        tls: bool = True,
        subprotocols: tuple[str, ...] = ("sip",),
        origin: Optional[str] = None,
        domain: str = "sbc.test",
    ) -> None:
        self.user = user
        self.domain = domain
        self.host = secrets.token_hex(6) + ".invalid"
        self.instance = f"urn:uuid:{secrets.token_hex(4)}-0000-4000-8000-{secrets.token_hex(6)}"
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the throw-away test certificate
            raw = context.wrap_socket(raw, server_hostname="sbc.test")
        self.sock = raw
        self.transport = "WSS" if tls else "WS"
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []
        self.messages: list[Message] = []
        self.closed: Optional[CloseConnection] = None
        headers = [(b"Origin", origin.encode())] if origin else []
        self.sock.sendall(
            self.ws.send(
                Request(
                    host=f"127.0.0.1:{port}",
                    target="/",
                    subprotocols=list(subprotocols),
                    extra_headers=headers,
                )
            )
        )
        self.handshake = self._next(lambda e: isinstance(e, (AcceptConnection, RejectConnection)))

    # -- WebSocket -------------------------------------------------------------------------------
    def _pump(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return True
        except OSError:
            data = b""
        if not data:
            self.ws.receive_data(None) if self.ws.connection else None
            self.closed = self.closed or CloseConnection(code=1006)
            return False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Ping):
                self.raw_send(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed = event
            elif isinstance(event, (TextMessage, BytesMessage)):
                payload = event.data.encode() if isinstance(event.data, str) else event.data
                if payload.strip(b"\r\n"):
                    self.messages.append(parse(bytes(payload)))
            self.events.append(event)
        return True

    def _next(self, match: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if match(event):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching WebSocket event")
            if not self._pump(min(left, 0.5)) and not any(match(e) for e in self.events):
                raise ConnectionError(f"connection closed: {self.closed}")

    def wait_closed(self, timeout: float = 10.0) -> CloseConnection:
        deadline = time.monotonic() + timeout
        while self.closed is None and time.monotonic() < deadline:
            if not self._pump(0.2):
                break
        if self.closed is None:
            raise TimeoutError("still open")
        return self.closed

    def raw_send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_event(self, event: Event) -> None:
        self.raw_send(self.ws.send(event))

    def send(self, text: str) -> None:
        self.send_event(TextMessage(data=text))

    def kill(self) -> None:
        """Drop the TCP connection without a Close frame (a browser tab killed)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # -- SIP -------------------------------------------------------------------------------------
    def receive(self, match: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.messages):
                if match(message):
                    return self.messages.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching SIP message")
            self._pump(min(left, 0.5))

    def request(self, method: str) -> SipRequest:
        message = self.receive(lambda m: isinstance(m, SipRequest) and m.method == method)
        assert isinstance(message, SipRequest)
        return message

    def final(self, call_id: str, method: str, timeout: float = 10.0) -> Response:
        message = self.receive(
            lambda m: (
                isinstance(m, Response)
                and m.call_id == call_id
                and m.cseq.method == method
                and m.status >= 200
            ),
            timeout,
        )
        assert isinstance(message, Response)
        return message

    def contact(self, outbound: bool = False) -> str:
        uri = f"<sip:{self.user}@{self.host};transport=ws{';ob' if outbound else ''}>"
        if outbound:
            uri += f';reg-id=1;+sip.instance="<{self.instance}>"'
        return uri

    def _via(self) -> str:
        return f"SIP/2.0/{self.transport} {self.host};branch=z9hG4bK{secrets.token_hex(6)}"

    def register(self, expires: int = 600, outbound: bool = False) -> Response:
        call_id = secrets.token_hex(8)
        aor = f"sip:{self.user}@{self.domain}"
        self.send(
            f"REGISTER sip:{self.domain} SIP/2.0\r\nVia: {self._via()}\r\n"
            f"Max-Forwards: 70\r\nFrom: <{aor}>;tag={secrets.token_hex(4)}\r\nTo: <{aor}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: {self.contact(outbound)};expires={expires}\r\n"
            f"Supported: path, outbound\r\nContent-Length: 0\r\n\r\n"
        )
        return self.final(call_id, "REGISTER")

    def invite(self, user: str, sdp_port: int = 40000) -> tuple[Response, Dialog]:
        """Call C{user}@domain; on a 2xx the ACK is sent and the dialog returned."""
        call_id = secrets.token_hex(8)
        tag = secrets.token_hex(4)
        local = f"sip:{self.user}@{self.domain}"
        remote = f"sip:{user}@{self.domain}"
        body = SDP.format(port=sdp_port)
        self.send(
            f"INVITE {remote} SIP/2.0\r\nVia: {self._via()}\r\nMax-Forwards: 70\r\n"
            f"From: <{local}>;tag={tag}\r\nTo: <{remote}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 INVITE\r\nContact: {self.contact()}\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        )
        response = self.final(call_id, "INVITE", timeout=15)
        routes = list(reversed(response.values("record-route")))
        dialog = Dialog(
            call_id,
            local,
            tag,
            remote,
            response.to.tag or "",
            str(response.contacts[0].uri) if response.contacts else remote,
            routes,
        )
        if 200 <= response.status < 300:
            self.in_dialog(dialog, "ACK", cseq=1)
        return response, dialog

    def answer(self, invite: SipRequest, status: int = 200, sdp_port: int = 40002) -> Dialog:
        """Answer C{invite}; the dialog (the caller's side seen from here) is returned."""
        tag = secrets.token_hex(4)
        body = SDP.format(port=sdp_port) if status == 200 else ""
        headers = [f"Via: {v}" for v in invite.values("via")]
        headers += [f"Record-Route: {r}" for r in invite.values("record-route")]
        headers += [
            f"From: {invite.get('from')}",
            f"To: {invite.get('to')};tag={tag}",
            f"Call-ID: {invite.call_id}",
            f"CSeq: {invite.cseq.number} INVITE",
            f"Contact: {self.contact()}",
        ]
        if body:
            headers.append("Content-Type: application/sdp")
        self.send(
            f"SIP/2.0 {status} {'OK' if status == 200 else 'Whatever'}\r\n"
            + "".join(h + "\r\n" for h in headers)
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        return Dialog(
            invite.call_id,
            str(invite.to.uri),
            tag,
            str(invite.from_.uri),
            invite.from_.tag or "",
            str(invite.contacts[0].uri),
            list(invite.values("record-route")),
            cseq=100,
        )

    def in_dialog(self, dialog: Dialog, method: str, cseq: Optional[int] = None) -> str:
        """Send a request inside C{dialog} along its route set; returns its Call-ID."""
        if cseq is None:
            dialog.cseq += 1
            cseq = dialog.cseq
        routes = "".join(f"Route: {r}\r\n" for r in dialog.route_set)
        self.send(
            f"{method} {dialog.remote_target} SIP/2.0\r\nVia: {self._via()}\r\n"
            f"Max-Forwards: 70\r\n{routes}"
            f"From: <{dialog.local_uri}>;tag={dialog.local_tag}\r\n"
            f"To: <{dialog.remote_uri}>;tag={dialog.remote_tag}\r\n"
            f"Call-ID: {dialog.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        return dialog.call_id

    def reply(self, request: SipRequest, status: int = 200, reason: str = "OK") -> None:
        """A bare response (to BYE, say)."""
        headers = [f"Via: {v}" for v in request.values("via")]
        headers += [
            f"From: {request.get('from')}",
            f"To: {request.get('to')}",
            f"Call-ID: {request.call_id}",
            f"CSeq: {request.cseq.number} {request.method}",
        ]
        self.send(
            f"SIP/2.0 {status} {reason}\r\n"
            + "".join(h + "\r\n" for h in headers)
            + "Content-Length: 0\r\n\r\n"
        )

    def close(self) -> None:
        try:
            if self.ws.connection is not None:
                self.send_event(CloseConnection(code=1000))
        except Exception:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
