"""Tests for L{sbc.net.probe}: real probe sockets on loopback, real ICMP errors; the
reactor's part (readers, timers) is played by the test so no event loop is needed."""

from __future__ import annotations

import select
import socket

from twisted.internet.task import Clock

from sbc.core.address import Address
from sbc.net.probe import UnreachableProbe


class _Reactor(Clock):
    """A Clock that also keeps the readers it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: list = []

    def addReader(self, reader) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        self.readers.append(reader)

    def removeReader(self, reader) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        self.readers.remove(reader)

    def wait_readable(self, timeout: float = 2.0) -> None:
        """Call doRead on every reader whose socket became readable (or failed)."""
        ready, _, failed = select.select(self.readers, [], self.readers, timeout)
        for reader in set(ready) | set(failed):
            reader.doRead()


def closed_port() -> int:
    """A UDP port on 127.0.0.1 nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_closed_port_is_reported_unreachable() -> None:
    reactor = _Reactor()
    reports: list = []
    probe = UnreachableProbe(reactor, lambda peer, why: reports.append((peer, why)))
    peer = Address("udp", "127.0.0.1", closed_port())
    probe.check(peer)
    reactor.wait_readable()
    assert reports == [(peer, "port unreachable")]
    assert reactor.readers == []


def test_listening_port_is_not_reported_and_the_probe_closes_after_its_window() -> None:
    reactor = _Reactor()
    reports: list = []
    probe = UnreachableProbe(reactor, lambda peer, why: reports.append(why), window=2.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        peer = Address("udp", "127.0.0.1", server.getsockname()[1])
        probe.check(peer)
        assert server.recv(100) == b"\r\n\r\n"
        ready, _, _ = select.select(reactor.readers, [], [], 0.2)
        assert ready == []
        reactor.advance(2.0)
        assert reactor.readers == [] and reports == []


def test_recently_heard_or_probed_destinations_are_not_probed_again() -> None:
    reactor = _Reactor()
    probe = UnreachableProbe(reactor, lambda peer, why: None, quiet=30.0)
    peer = Address("udp", "127.0.0.1", closed_port())
    probe.heard_from(peer.host, peer.port)
    probe.check(peer)
    assert reactor.readers == []
    reactor.advance(31)
    probe.check(peer)
    probe.check(peer)
    assert len(reactor.readers) == 1
    probe.stop()
    assert reactor.readers == []


def test_probe_sockets_are_bounded() -> None:
    reactor = _Reactor()
    probe = UnreachableProbe(reactor, lambda peer, why: None, limit=2)
    for port in (1, 2, 3):
        probe.check(Address("udp", "127.0.0.1", 20000 + port))
    assert len(reactor.readers) == 2
    probe.stop()
