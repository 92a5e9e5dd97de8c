# -*- test-case-name: tests.net.test_stream -*-
"""
SIP over TCP and TLS: framing each connection with L{StreamFramer}, answering CRLF pings,
closing idle connections after C{tcp_connection_lifetime}, and a connection table so that
anything sent to a peer we hold a connection with goes over that connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from typing_extensions import override

from sbc.core.address import WEBSOCKET, Address, normalise_host
from sbc.core.framing import (
    FramingError,
    KeepalivePing,
    KeepalivePong,
    StreamFramer,
    StunFrame,
)
from sbc.net.engine import SipEngine
from sbc.net.flow import HostPort
from sbc.net.log import logger

__all__ = [
    "ConnectionTable",
    "ConnectionFlow",
    "SipStreamProtocol",
    "SipStreamFactory",
    "StreamConnector",
]

log = logger(__name__)

ConnectionKey = tuple[str, str, int]


class ConnectionTable:
    """Open SIP connections keyed by (transport, remote host, remote port)."""

    def __init__(self) -> None:
        self._connections: dict[ConnectionKey, SipStreamProtocol] = {}

    @staticmethod
    def key(transport: str, host: str, port: int) -> ConnectionKey:
        """The table key for a peer address."""
        return (transport, normalise_host(host), port)

    def add(self, connection: SipStreamProtocol) -> None:
        """Register C{connection} (a newer connection from the same address wins)."""
        self._connections[self.key(connection.transport_name, *connection.remote)] = connection

    def remove(self, connection: SipStreamProtocol) -> None:
        """Forget C{connection} if it is the one registered for its address."""
        key = self.key(connection.transport_name, *connection.remote)
        if self._connections.get(key) is connection:
            del self._connections[key]

    def get(self, transport: str, host: str, port: int) -> Optional[SipStreamProtocol]:
        """The open connection to C{host:port} over C{transport}, if any."""
        return self._connections.get(self.key(transport, host, port))

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[SipStreamProtocol]:
        return iter(list(self._connections.values()))


class SipStreamProtocol(Protocol, TimeoutMixin):
    """One SIP connection (TCP or TLS); it is its own L{sbc.net.flow.Flow}."""

    reliable = True

    def __init__(self, factory: SipStreamFactory) -> None:
        self.factory = factory
        self.transport_name = factory.transport_name
        self.framer = StreamFramer(factory.engine.limits.max_message_size)
        self.remote: HostPort = ("", 0)
        self.local: HostPort = ("", 0)
        self.last_pong: Optional[float] = None
        self.received_any = False
        # TimeoutMixin schedules through this attribute: use the injected clock.
        self.callLater = factory.clock.callLater  # type: ignore[assignment]

    @property
    def is_open(self) -> bool:
        """Can this connection still carry a message?"""
        return self.transport is not None and bool(self.transport.connected)

    @override
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        if not self.factory.admit(normalise_host(peer.host)):
            self.factory.engine.stats.incr("limit_connections")
            log.info(
                "refusing a {transport} connection from {host}: too many connections",
                transport=self.transport_name,
                host=peer.host,
            )
            self.transport.abortConnection()
            return
        host = self.transport.getHost()
        self.remote = (normalise_host(peer.host), peer.port)
        self.local = self.factory.local or (normalise_host(host.host), host.port)
        self.factory.table.add(self)
        self.factory.engine.stats.incr(f"{self.transport_name}_connections")
        self.setTimeout(self.factory.lifetime)
        for data in self.factory.take_pending():
            self.send(data)

    @override
    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.received_any = True
        engine = self.factory.engine
        try:
            frames = self.framer.feed(data)
        except FramingError as error:
            engine.stats.incr("bad_msg_hdr")
            engine.count_limit(error)
            engine.stats.incr(f"{self.transport_name}_malformed")
            log.info(
                "closing {transport} connection from {host}:{port}: {reason}",
                transport=self.transport_name,
                host=self.remote[0],
                port=self.remote[1],
                reason=error.reason,
            )
            self.transport.loseConnection()
            return
        for frame in frames:
            if isinstance(frame, KeepalivePing):
                engine.stats.incr(f"{self.transport_name}_pings")
                self.transport.write(b"\r\n")
            elif isinstance(frame, KeepalivePong):
                self.last_pong = self.factory.clock.seconds()
            elif isinstance(frame, StunFrame):
                # RFC 5626 §4.4.2: a STUN keepalive is activity on the flow (the timeout
                # was reset above) and gets its Binding response.
                engine.receive_stun(frame, ConnectionFlow(self))
            else:
                engine.receive(frame, ConnectionFlow(self))

    def send(self, data: bytes, destination: Optional[HostPort] = None) -> None:
        """Write C{data} on this connection (C{destination} is implied)."""
        self.resetTimeout()
        self.transport.write(data)

    @override
    def timeoutConnection(self) -> None:
        log.debug(
            "closing idle {transport} connection to {host}:{port}",
            transport=self.transport_name,
            host=self.remote[0],
            port=self.remote[1],
        )
        self.transport.loseConnection()

    @override
    def connectionLost(self, reason: object = None) -> None:
        self.setTimeout(None)
        self.factory.table.remove(self)
        if not self.received_any:
            # An outgoing connection that died before a single byte came back (a TLS peer
            # whose certificate failed verification, a refused stream): its branches fail.
            self.factory.connection_failed(reason)


class ConnectionFlow:
    """The L{sbc.net.flow.Flow} view of a connection (a SIP stream or a WebSocket): any
    protocol with C{transport_name}, C{remote}, C{local}, C{factory}, C{is_open} and
    C{send}."""

    __slots__ = ("connection",)
    reliable = True

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @property
    def transport(self) -> str:
        return str(self.connection.transport_name)

    @property
    def remote(self) -> HostPort:
        return self.connection.remote  # type: ignore[no-any-return]

    @property
    def local(self) -> HostPort:
        return self.connection.local  # type: ignore[no-any-return]

    def send(self, data: bytes, destination: Optional[HostPort] = None) -> None:
        """Reply on the same connection; if it has closed meanwhile, on any open connection
        to the same peer (RFC 3261 §18.2.2; a WebSocket client is reached over its own
        connections only)."""
        connection = self.connection
        if not connection.is_open:
            other = connection.factory.table.get(connection.transport_name, *connection.remote)
            if other is None:
                connection.factory.engine.stats.incr(f"{connection.transport_name}_send_errors")
                log.info(
                    "connection to {host}:{port} is gone; response dropped",
                    host=connection.remote[0],
                    port=connection.remote[1],
                )
                return
            connection = other
        connection.send(data)


class SipStreamFactory(Factory):
    """Builds L{SipStreamProtocol}s for one listener (or for outgoing connections)."""

    noisy = False

    def __init__(
        self,
        engine: SipEngine,
        transport_name: str,
        table: ConnectionTable,
        clock: IReactorTime,
        lifetime: float = 120.0,
    ) -> None:
        self.engine = engine
        self.transport_name = transport_name
        self.table = table
        self.clock = clock
        self.lifetime = lifetime
        #: For outgoing connections: the listener address that stands for us on them.
        self.local: Optional[HostPort] = None
        #: [core] tcp_max_connections / tcp_max_connections_per_source
        self.max_connections = 2048
        self.max_connections_per_source = 64

    def take_pending(self) -> list[bytes]:
        """Messages queued for a connection still being made (none for listeners)."""
        return []

    def admit(self, host: str) -> bool:
        """May another connection from C{host} be accepted (per-source connection limit)?"""
        if len(self.table) >= self.max_connections:
            return False
        same = sum(1 for c in self.table if c.remote[0] == host)
        return same < self.max_connections_per_source

    def connection_failed(self, reason: object) -> None:
        """An outgoing connection failed (listeners' connections: nothing to do)."""

    @override
    def buildProtocol(self, addr: object) -> SipStreamProtocol:
        return SipStreamProtocol(self)


class _OutboundFactory(SipStreamFactory, ClientFactory):
    """One outgoing connection: queues messages until it is up, drops them if it fails."""

    def __init__(self, connector: StreamConnector, peer: Address) -> None:
        parent = connector.factory
        super().__init__(parent.engine, peer.transport, parent.table, parent.clock, parent.lifetime)
        self.connector = connector
        self.peer = peer
        self.pending: list[bytes] = []
        self.local = connector.local_for(peer)

    def take_pending(self) -> list[bytes]:
        pending, self.pending = self.pending, []
        self.connector.connecting.pop(self.peer, None)
        return pending

    @override
    def connection_failed(self, reason: object) -> None:
        # Lost before any answer, e.g. a certificate that did not show the identity this
        # request asked for: fail its branches, but do not blocklist the address.
        self.connector.report_failure(self.peer, reason, block=False)

    @override
    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        self.connector.connecting.pop(self.peer, None)
        self.engine.stats.incr(f"{self.peer.transport}_connect_errors")
        self.connector.report_failure(self.peer, reason)
        log.info(
            "cannot connect to {peer}: {reason} ({count} message(s) dropped)",
            peer=str(self.peer),
            reason=getattr(reason, "value", reason),
            count=len(self.pending),
        )
        self.pending = []


class StreamConnector:
    """
    Sends to stream peers: over the connection we hold with them (the connection table:
    whoever connected first, they or we), else over a new one.

    @ivar listeners: our stream listen addresses, named as "us" on outgoing connections.
    """

    def __init__(self, reactor, factory: SipStreamFactory, tls_options=None) -> None:  # type: ignore[no-untyped-def]
        self.reactor = reactor
        self.factory = factory
        self.tls_options = tls_options
        self.listeners: list[Address] = []
        self.connecting: dict[Address, _OutboundFactory] = {}
        #: Told when a connection to a peer failed before carrying anything back.
        self.on_failure: Optional[Callable[[Address, str, bool], None]] = None

    def report_failure(self, peer: Address, reason: object, block: bool = True) -> None:
        """Pass a failed outgoing connection on (the proxy fails that peer's branches and,
        with C{block}, blocklists it)."""
        text = str(getattr(reason, "value", reason))
        log.warn("connection to {peer} failed: {reason}", peer=str(peer), reason=text[:300])
        if self.on_failure is not None:
            self.on_failure(peer, text, block)

    def local_for(self, peer: Address) -> Optional[HostPort]:
        for address in self.listeners:
            if address.transport == peer.transport and address.family == peer.family:
                return (address.host, address.port)
        return None

    def send_existing(self, peer: Address, data: bytes) -> bool:
        """Send over a connection we hold with C{peer}, never opening one (keepalives)."""
        connection = self.factory.table.get(peer.transport, peer.host, peer.port)
        if connection is None or connection.transport is None or not connection.transport.connected:
            return False
        connection.send(data)
        return True

    def send(self, peer: Address, data: bytes) -> bool:
        """Queue C{data} for C{peer}; False when it cannot be sent at all."""
        if self.send_existing(peer, data):
            return True
        if peer.transport in WEBSOCKET:
            # RFC 7118 §5: a WebSocket client is reached over its own connection or not at
            # all; its branches fail (430 Flow Failed) once this send has returned.
            self.factory.engine.stats.incr(f"{peer.transport}_flow_failures")
            if self.reactor is not None and self.on_failure is not None:
                self.reactor.callLater(
                    0, self.on_failure, peer, "the WebSocket flow is gone", False
                )
            return False
        pending = self.connecting.get(peer)
        if pending is not None:
            pending.pending.append(data)
            return True
        if peer.transport == "tls" and self.tls_options is None:
            return False
        factory = _OutboundFactory(self, peer)
        factory.pending.append(data)
        self.connecting[peer] = factory
        if peer.transport == "tls":
            self.reactor.connectSSL(
                peer.host, peer.port, factory, self.tls_options(peer), timeout=10
            )
        else:
            self.reactor.connectTCP(peer.host, peer.port, factory, timeout=10)
        return True
