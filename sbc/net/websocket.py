# -*- test-case-name: tests.net.test_websocket -*-
"""
SIP over WebSocket (RFC 7118), on wsproto: the HTTP upgrade with the C{sip} subprotocol
(§4) and an Origin allow-list, one SIP message per WebSocket message (§5, text or binary
frames), ping/pong keepalives, and the limits of the other streams (message size,
connections in all and per source, idle lifetime, a deadline for the upgrade).

A WebSocket connection is one more reliable flow in the shared L{ConnectionTable}: responses
and requests for a client whose Contact host is a made-up C{.invalid} name go back over it
(Kamailio's C{websocket} module with C{nathelper}'s alias).  sbc only accepts WebSocket
connections; when one closes, its registrations go (L{SipEngine.flow_closed}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.protocols.policies import TimeoutMixin
from typing_extensions import override
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from sbc.core.address import Address, normalise_host
from sbc.core.stun import looks_like_stun
from sbc.net.engine import SipEngine
from sbc.net.flow import HostPort
from sbc.net.log import logger
from sbc.net.stream import ConnectionFlow, ConnectionTable

__all__ = ["WebSocketSettings", "SipWebSocketProtocol", "SipWebSocketFactory", "SUBPROTOCOL"]

log = logger(__name__)

#: RFC 7118 §4: the WebSocket subprotocol for SIP.
SUBPROTOCOL = "sip"
#: RFC 6455 §7.4.1 close codes sbc sends.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009
#: Close codes that are not the peer's fault.
_ORDERLY = frozenset({1000, 1001, 1005, 1006})


@dataclass(frozen=True)
class WebSocketSettings:
    """
    The C{[websocket]} section (Kamailio's C{websocket} module).

    @ivar allowed_origins: Origin values a browser page may connect from (RFC 6455
        §10.2), compared without case; empty: any.  A client that sends no Origin is not a
        browser page and is let in.
    @ivar keepalive_mechanism: C{ping} (a WebSocket Ping on a connection idle for
        C{keepalive_timeout} seconds) or C{none}; Kamailio's 0/1 also accepted.
    @ivar keepalive_timeout: seconds of silence before a Ping.
    @ivar handshake_timeout: seconds a client has to complete the HTTP upgrade (sbc's own
        key: a slow upgrade holds a connection slot).
    """

    allowed_origins: tuple[str, ...] = ()
    keepalive_mechanism: str = "ping"
    keepalive_timeout: int = 30
    handshake_timeout: int = 10

    def origin_allowed(self, origin: Optional[str]) -> bool:
        """May a page from C{origin} connect?"""
        if origin is None or not self.allowed_origins:
            return True
        value = origin.strip().rstrip("/").lower()
        return any(value == allowed.rstrip("/").lower() for allowed in self.allowed_origins)


class SipWebSocketProtocol(Protocol, TimeoutMixin):
    """One WebSocket connection carrying SIP; it is its own flow once upgraded."""

    reliable = True

    def __init__(self, factory: SipWebSocketFactory) -> None:
        self.factory = factory
        self.transport_name = factory.transport_name
        self.ws = WSConnection(ConnectionType.SERVER)
        self.remote: HostPort = ("", 0)
        self.local: HostPort = ("", 0)
        self.open = False
        self.last_activity = factory.clock.seconds()
        self.last_pong: Optional[float] = None
        self._parts: list[bytes] = []
        self._size = 0
        self._closing = False
        self.callLater = factory.clock.callLater  # type: ignore[assignment]

    # -- connection ------------------------------------------------------------------------------
    @override
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        host = normalise_host(peer.host)
        if not self.factory.admit(host):
            self.factory.engine.stats.incr("limit_connections")
            log.info(
                "refusing a {transport} connection from {host}: too many connections",
                transport=self.transport_name,
                host=peer.host,
            )
            self.transport.abortConnection()
            return
        local = self.transport.getHost()
        self.remote = (host, peer.port)
        self.local = self.factory.local or (normalise_host(local.host), local.port)
        self.factory.handshaking.add(self)
        self.setTimeout(self.factory.settings.handshake_timeout)

    @override
    def dataReceived(self, data: bytes) -> None:
        if self._closing or not data:
            return  # (h11 would take empty bytes for the end of the stream)
        if self.open:
            self.resetTimeout()
            self.last_activity = self.factory.clock.seconds()
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                self._event(event)
                if self._closing:
                    return
        except RemoteProtocolError as error:
            self._bad_input(str(error))
            hint = error.event_hint
            if isinstance(hint, RejectConnection):
                self._write(RejectConnection(status_code=400))
            self._abort()
        except LocalProtocolError as error:  # data after the peer's close, say
            self._bad_input(str(error))
            self._abort()

    def _event(self, event: Event) -> None:
        if isinstance(event, Request):
            self._upgrade(event)
        elif isinstance(event, (TextMessage, BytesMessage)):
            self._message_part(event)
        elif isinstance(event, Ping):
            self._write(event.response())
        elif isinstance(event, Pong):
            self.last_pong = self.factory.clock.seconds()
        elif isinstance(event, CloseConnection):
            if event.code not in _ORDERLY:
                self._bad_input(f"close {event.code} {event.reason or ''}".strip())
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                self._write(event.response())
            elif self.ws.state is ConnectionState.OPEN:
                # wsproto's verdict on a broken frame (1002, 1007, ...): sent to the peer.
                self._write(CloseConnection(code=event.code, reason=event.reason))
            self._closing = True
            self.transport.loseConnection()

    def _upgrade(self, request: Request) -> None:
        """RFC 7118 §4: only a client offering the C{sip} subprotocol, from an allowed
        Origin, is upgraded (426 and 403 otherwise)."""
        stats = self.factory.engine.stats
        origin = _header(request.extra_headers, b"origin")
        if SUBPROTOCOL not in [p.strip().lower() for p in request.subprotocols]:
            self._refuse(426, "no sip subprotocol offered", [(b"Sec-WebSocket-Protocol", b"sip")])
            return
        if not self.factory.settings.origin_allowed(origin):
            stats.incr(f"{self.transport_name}_origin_refused")
            self._refuse(403, f"origin {origin!r} is not allowed", [])
            return
        self._write(AcceptConnection(subprotocol=SUBPROTOCOL))
        self.open = True
        self.factory.handshaking.discard(self)
        self.factory.table.add(self)
        stats.incr(f"{self.transport_name}_connections")
        self.last_activity = self.factory.clock.seconds()
        self.setTimeout(self.factory.lifetime)

    def _refuse(self, status: int, why: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.factory.engine.stats.incr(f"{self.transport_name}_handshake_refused")
        log.info(
            "refusing a {transport} upgrade from {host}:{port}: {why}",
            transport=self.transport_name,
            host=self.remote[0],
            port=self.remote[1],
            why=why,
        )
        self._write(RejectConnection(status_code=status, headers=headers, has_body=False))
        self._closing = True
        self.transport.loseConnection()

    # -- messages --------------------------------------------------------------------------------
    def _message_part(self, event: TextMessage | BytesMessage) -> None:
        data = event.data.encode("utf-8") if isinstance(event.data, str) else bytes(event.data)
        self._size += len(data)
        if self._size > self.factory.engine.limits.max_message_size:
            self.factory.engine.stats.incr("limit_message_size")
            self._bad_input(f"message over {self.factory.engine.limits.max_message_size} bytes")
            self.close(CLOSE_TOO_BIG, "Message Too Big")
            return
        self._parts.append(data)
        if not event.message_finished:
            return
        message = b"".join(self._parts)
        self._parts, self._size = [], 0
        self._deliver(message)

    def _deliver(self, message: bytes) -> None:
        """One WebSocket message: a SIP message (RFC 7118 §5), a CRLF keepalive (RFC 5626
        §4.4.1 over WebSocket: CRLFCRLF gets CRLF) or a STUN keepalive."""
        engine = self.factory.engine
        if not message.strip(b"\r\n"):
            if message == b"\r\n\r\n":
                engine.stats.incr(f"{self.transport_name}_pings")
                self.send(b"\r\n")
            elif message == b"\r\n":
                self.last_pong = self.factory.clock.seconds()
            return
        flow = ConnectionFlow(self)
        if looks_like_stun(message[:2]):
            engine.receive_stun(message, flow)
            return
        engine.receive(message, flow)

    @property
    def is_open(self) -> bool:
        """Is the WebSocket connection up (upgraded, not closed)?"""
        return self.open

    def send(self, data: bytes, destination: Optional[HostPort] = None) -> None:
        """Send one SIP message as one WebSocket message: text when it is UTF-8 (every
        SIP message without a binary body), else binary (RFC 7118 §5)."""
        if not self.open or self._closing:
            return
        if data == b"\r\n\r\n":
            # The keepalive engine's CRLF ping (RFC 5626 §4.4.1) goes as a WebSocket Ping:
            # browsers answer it without bothering their SIP stack (Kamailio's websocket
            # module keeps its flows alive the same way).
            self.ping()
            return
        self.resetTimeout()
        try:
            event: Event = TextMessage(data=data.decode("utf-8"))
        except UnicodeDecodeError:
            event = BytesMessage(data=data)
        self._write(event)

    def ping(self) -> None:
        """A WebSocket Ping (keepalive_mechanism = ping)."""
        if self.open and not self._closing:
            self.factory.engine.stats.incr(f"{self.transport_name}_pings_sent")
            self._write(Ping(payload=b"sbc"))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close with a Close frame (RFC 6455 §7.1.2), then the TCP connection."""
        if self.open and self.ws.state is ConnectionState.OPEN:
            self._write(CloseConnection(code=code, reason=reason))
        self._closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def _write(self, event: Event) -> None:
        try:
            data = self.ws.send(event)
        except LocalProtocolError:
            return  # the connection is closing: nothing more goes out
        if self.transport is not None:
            self.transport.write(data)

    def _bad_input(self, why: str) -> None:
        engine = self.factory.engine
        engine.stats.incr(f"{self.transport_name}_malformed")
        log.info(
            "closing {transport} connection from {host}:{port}: {why}",
            transport=self.transport_name,
            host=self.remote[0],
            port=self.remote[1],
            why=why[:200],
        )

    def _abort(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    @override
    def timeoutConnection(self) -> None:
        if not self.open:
            self.factory.engine.stats.incr(f"{self.transport_name}_handshake_timeouts")
            log.info(
                "closing {transport} connection from {host}:{port}: no upgrade in time",
                transport=self.transport_name,
                host=self.remote[0],
                port=self.remote[1],
            )
            self._abort()
            return
        log.debug(
            "closing idle {transport} connection to {host}:{port}",
            transport=self.transport_name,
            host=self.remote[0],
            port=self.remote[1],
        )
        self.close(CLOSE_GOING_AWAY, "idle")

    @override
    def connectionLost(self, reason: object = None) -> None:
        self.setTimeout(None)
        self.factory.handshaking.discard(self)
        if not self.open:
            return
        self.open = False
        self.factory.table.remove(self)
        self.factory.engine.stats.incr(f"{self.transport_name}_closed")
        self.factory.engine.flow_closed(Address(self.transport_name, *self.remote))


def _header(headers: object, name: bytes) -> Optional[str]:
    for key, value in headers or ():  # type: ignore[attr-defined]
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


class SipWebSocketFactory(Factory):
    """Builds L{SipWebSocketProtocol}s for the C{ws} or C{wss} listeners.

    @ivar handshaking: connections still in the HTTP upgrade (counted by the limits)."""

    noisy = False

    def __init__(
        self,
        engine: SipEngine,
        transport_name: str,
        table: ConnectionTable,
        clock: IReactorTime,
        lifetime: float = 120.0,
        settings: WebSocketSettings = WebSocketSettings(),
    ) -> None:
        self.engine = engine
        self.transport_name = transport_name
        self.table = table
        self.clock = clock
        self.lifetime = lifetime
        self.settings = settings
        self.local: Optional[HostPort] = None
        self.handshaking: set[SipWebSocketProtocol] = set()
        self.max_connections = 2048
        self.max_connections_per_source = 64
        self._keepalive: Optional[LoopingCall] = None

    def admit(self, host: str) -> bool:
        """May another connection from C{host} be accepted (upgrades in progress count)?"""
        if len(self.table) + len(self.handshaking) >= self.max_connections:
            return False
        same = sum(1 for c in self.table if c.remote[0] == host)
        same += sum(1 for c in self.handshaking if c.remote[0] == host)
        return same < self.max_connections_per_source

    def connections(self) -> list[SipWebSocketProtocol]:
        """The upgraded connections of this factory's transport."""
        return [
            c  # type: ignore[misc]
            for c in self.table
            if isinstance(c, SipWebSocketProtocol) and c.transport_name == self.transport_name
        ]

    def keepalive(self) -> None:
        """Ping every connection silent for C{keepalive_timeout} seconds."""
        if self.settings.keepalive_mechanism != "ping":
            return
        now = self.clock.seconds()
        for connection in self.connections():
            if now - connection.last_activity >= self.settings.keepalive_timeout:
                connection.ping()
                connection.last_activity = now

    def start_keepalive(self) -> None:
        """Check for silent connections every second (a real reactor only)."""
        if self._keepalive is None:
            self._keepalive = LoopingCall(self.keepalive)
            self._keepalive.clock = self.clock
            self._keepalive.start(1.0, now=False)

    def stop_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._keepalive = None

    @override
    def buildProtocol(self, addr: object) -> SipWebSocketProtocol:
        return SipWebSocketProtocol(self)
