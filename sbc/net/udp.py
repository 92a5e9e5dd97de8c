# -*- test-case-name: tests.net.test_udp -*-
"""SIP over UDP: one L{SipDatagramProtocol} per listening socket, feeding the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from typing_extensions import override

from sbc.core.framing import is_udp_keepalive
from sbc.core.stun import looks_like_stun
from sbc.net.engine import SipEngine
from sbc.net.flow import HostPort
from sbc.net.log import logger

__all__ = ["SipDatagramProtocol", "DatagramFlow"]

log = logger(__name__)


class DatagramFlow:
    """The flow of one datagram: the socket it arrived on and the peer it came from."""

    __slots__ = ("protocol", "remote")
    transport = "udp"
    reliable = False

    def __init__(self, protocol: SipDatagramProtocol, remote: HostPort) -> None:
        self.protocol = protocol
        self.remote = remote

    @property
    def local(self) -> HostPort:
        """Our socket's (host, port)."""
        return self.protocol.local

    def send(self, data: bytes, destination: Optional[HostPort] = None) -> None:
        """Send from the socket the datagram came in on (so NAT bindings are reused)."""
        self.protocol.send(data, destination or self.remote)


class SipDatagramProtocol(DatagramProtocol):
    """
    A UDP SIP socket.

    Datagrams sent while the reactor handles its ready sockets are queued and go out
    together right after (or once L{MAX_QUEUED} are waiting): a datagram to a peer whose
    process sleeps makes the kernel wake it, which on a VM costs the sender about 20 µs of
    CPU, while one sent right after another to an awakened peer costs a few.  The wait is
    one pass of the reactor loop, bounded by the time the queued datagrams took to make.
    """

    noisy = False
    #: Datagrams queued at most before they are sent at once.
    MAX_QUEUED = 16

    def __init__(self, engine: SipEngine) -> None:
        self.engine = engine
        self.local: HostPort = ("", 0)
        self._sendto: Callable[[bytes, HostPort], object] = lambda data, address: None
        self._clock: Optional[IReactorTime] = None
        self._queue: list[tuple[bytes, HostPort]] = []

    @override
    def startProtocol(self) -> None:
        host = self.transport.getHost()
        self.local = (host.host, host.port)
        # Straight to the socket when there is one: C{Port.write} checks up to five times
        # per datagram that the host is an IP literal, which the core's addresses always
        # are (over 2 % of a call's CPU in a profile).  Transports without a socket (test
        # fakes, other reactors) get C{write}, one datagram at a time.
        sock = getattr(self.transport, "socket", None)
        self._sendto = sock.sendto if sock is not None else self.transport.write
        self._clock = getattr(self.transport, "reactor", None) if sock is not None else None

    @override
    def stopProtocol(self) -> None:
        self.flush()
        self._clock = None

    @override
    def datagramReceived(self, datagram: bytes, addr: tuple) -> None:  # type: ignore[override]
        if is_udp_keepalive(datagram):
            self.engine.stats.incr("udp_keepalives")
            return
        if looks_like_stun(datagram):
            self.engine.receive_stun(datagram, DatagramFlow(self, (addr[0], addr[1])))
            return
        self.engine.receive(datagram, DatagramFlow(self, (addr[0], addr[1])))

    def send(self, data: bytes, destination: HostPort) -> None:
        """Queue one datagram for the end of this pass of the reactor loop (see the class
        docstring); sent at once where there is no reactor to come back."""
        if self._clock is None:
            self._send(data, destination)
            return
        queue = self._queue
        queue.append((data, destination))
        if len(queue) == 1:
            self._clock.callLater(0, self.flush)
        elif len(queue) >= self.MAX_QUEUED:
            self.flush()

    def flush(self) -> None:
        """Send every queued datagram, in order."""
        queue, self._queue = self._queue, []
        for data, destination in queue:
            self._send(data, destination)

    def _send(self, data: bytes, destination: HostPort) -> None:
        """Send one datagram; a socket error is logged and counted, never raised
        (C{ECONNREFUSED} left by an earlier ICMP error is ignored, as Twisted does on
        unconnected ports; C{EINTR} is retried by Python itself, PEP 475)."""
        try:
            self._sendto(data, destination)
        except ConnectionRefusedError:
            return
        except OSError as error:
            self.engine.stats.incr("udp_send_errors")
            log.warn(
                "cannot send to {host}:{port}: {error}",
                host=destination[0],
                port=destination[1],
                error=error,
            )
