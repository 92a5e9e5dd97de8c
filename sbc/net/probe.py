# -*- test-case-name: tests.net.test_probe -*-
"""
Fast failover for UDP: find out within milliseconds (ICMP port/host unreachable) that a UDP
destination is unreachable, instead of waiting for fr_timer.

sbc's listening UDP sockets are unconnected, and Linux does not report ICMP errors on those
(and an error there would disconnect the whole listener in Twisted's epoll reactor).  So
when sbc sends a request to a UDP destination it has not heard from lately, it also sends
a CRLF keepalive (RFC 5626 §3.5.1; SIP servers ignore it) from a short-lived I{connected}
socket to the same destination: an ICMP port or host unreachable for it comes back on that
socket as ECONNREFUSED / EHOSTUNREACH, and the destination is reported as failed.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any, Optional

from twisted.python.failure import Failure

from sbc.core.address import Address
from sbc.net.log import logger

__all__ = ["UnreachableProbe"]

#: What the probe needs of a reactor: IReactorTime and IReactorFDSet.
Reactor = Any

log = logger(__name__)

#: What a probe sends: an RFC 5626 keepalive, which a SIP server drops.
PROBE = b"\r\n\r\n"
#: The errors that mean "this destination cannot be reached".
UNREACHABLE = {
    errno.ECONNREFUSED: "port unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


class _ProbeSocket:
    """One connected UDP socket waiting for an ICMP error (an IReadDescriptor)."""

    def __init__(self, probe: UnreachableProbe, peer: Address, sock: socket.socket) -> None:
        self.probe = probe
        self.peer = peer
        self.sock = sock
        self.closed = False

    def fileno(self) -> int:
        return -1 if self.closed else self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's interface name)
        return "UnreachableProbe"

    def doRead(self) -> None:  # noqa: N802
        try:
            self.sock.recv(2048)  # a reply (e.g. a CRLF pong) means it is reachable
        except OSError as error:
            self._failed(error.errno)
            return
        self.probe.close(self)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        # An ICMP error without data shows up as a disconnection in poll-based reactors.
        if not self.closed:
            self._failed(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    def _failed(self, code: Optional[int]) -> None:
        why = UNREACHABLE.get(code or 0)
        self.probe.close(self)
        if why is not None:
            self.probe.report(self.peer, why)


class UnreachableProbe:
    """
    Probes UDP destinations and calls C{on_unreachable(peer, why)} for those that answer
    with an ICMP error.

    @ivar window: seconds a probe socket waits for an ICMP error.
    @ivar quiet: a destination heard from (or probed) this many seconds ago is not probed.
    @ivar limit: at most this many probe sockets at once (the rest are not probed).
    """

    def __init__(
        self,
        reactor: Reactor,
        on_unreachable: Callable[[Address, str], None],
        window: float = 2.0,
        quiet: float = 30.0,
        limit: int = 256,
    ) -> None:
        self.reactor = reactor
        self.on_unreachable = on_unreachable
        self.window = window
        self.quiet = quiet
        self.limit = limit
        self._last: dict[tuple[str, int], float] = {}
        self._open: dict[tuple[str, int], _ProbeSocket] = {}

    def heard_from(self, host: str, port: int) -> None:
        """A datagram came from (host, port): it is reachable, no probe needed for now."""
        self._remember((host, port), self.reactor.seconds())

    def check(self, peer: Address) -> None:
        """Probe C{peer} unless it was heard from or probed lately."""
        key = (peer.host, peer.port)
        now = self.reactor.seconds()
        last = self._last.get(key)
        if (last is not None and now - last < self.quiet) or key in self._open:
            return
        if len(self._open) >= self.limit:
            return
        self._remember(key, now)
        family = socket.AF_INET6 if ":" in peer.host else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as error:
            log.warn("cannot open a probe socket: {error}", error=error)
            return
        sock.setblocking(False)
        probe = _ProbeSocket(self, peer, sock)
        try:
            sock.connect((peer.host, peer.port))
            sock.send(PROBE)
        except OSError as error:
            sock.close()
            probe.closed = True
            why = UNREACHABLE.get(error.errno or 0)
            if why is not None:
                self.report(peer, why)
            return
        self._open[key] = probe
        self.reactor.addReader(probe)
        self.reactor.callLater(self.window, self.close, probe)

    def close(self, probe: _ProbeSocket) -> None:
        """Stop waiting on C{probe} and close its socket."""
        if probe.closed:
            return
        self.reactor.removeReader(probe)
        probe.closed = True
        probe.sock.close()
        self._open.pop((probe.peer.host, probe.peer.port), None)

    def report(self, peer: Address, why: str) -> None:
        """C{peer} is unreachable: forget it was probed, and tell."""
        self._last.pop((peer.host, peer.port), None)
        try:
            self.on_unreachable(peer, why)
        except Exception:
            log.failure("unreachable handler failed for {peer}", peer=str(peer))

    def stop(self) -> None:
        """Close every probe socket (service shutdown)."""
        for probe in list(self._open.values()):
            self.close(probe)

    def _remember(self, key: tuple[str, int], now: float) -> None:
        if len(self._last) >= 100_000:  # bounded: forget everything, re-probing is cheap
            self._last.clear()
        self._last[key] = now
