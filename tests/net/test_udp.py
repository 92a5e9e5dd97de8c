"""Tests for L{sbc.net.udp} and the engine behind it, over a fake datagram transport (and
one real port for the send queue)."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from sbc.core.address import parse_address
from sbc.core.message import Response, parse
from sbc.net.engine import SipEngine
from sbc.net.udp import SipDatagramProtocol
from tests.helpers import make_proxy, request_bytes, rfc4475


class _Transport(FakeDatagramTransport):
    def getHost(self):  # type: ignore[no-untyped-def]  # noqa: N802 - Twisted's name
        return IPv4Address("UDP", "127.0.0.1", 5060)


def make_protocol() -> tuple[SipDatagramProtocol, _Transport]:
    socket = parse_address("udp:127.0.0.1:5060")
    engine = SipEngine(make_proxy([socket]), Clock())
    protocol = SipDatagramProtocol(engine)
    transport = _Transport()
    protocol.makeConnection(transport)
    engine.datagram_sockets[socket] = protocol.send
    return protocol, transport


class SipDatagramProtocolTests(SynchronousTestCase):
    """Datagrams in, responses out on the same socket."""

    def test_options_answered_to_rport(self) -> None:
        """An OPTIONS from behind NAT is answered to the source address and port."""
        protocol, transport = make_protocol()
        protocol.datagramReceived(
            request_bytes(via="SIP/2.0/UDP 10.0.0.5:5070;rport;branch=z9hG4bK1"),
            ("203.0.113.7", 40000),
        )
        [(data, addr)] = transport.written
        self.assertEqual(addr, ("203.0.113.7", 40000))
        response = parse(data)
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.top_via.received, "203.0.113.7")
        self.assertEqual(response.top_via.rport, "40000")

    def test_force_rport_replies_to_the_source_port(self) -> None:
        """Without rport in the Via, force_rport (the default) still answers the source port."""
        protocol, transport = make_protocol()
        protocol.datagramReceived(
            request_bytes(via="SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1"), ("203.0.113.7", 40000)
        )
        self.assertEqual(transport.written[0][1], ("203.0.113.7", 40000))

    def test_malformed_gets_400_to_the_source_and_is_counted(self) -> None:
        """A malformed request gets 400 sent to where it came from, and a counter moves."""
        protocol, transport = make_protocol()
        protocol.datagramReceived(rfc4475("baddate"), ("192.0.2.50", 5099))
        [(data, addr)] = transport.written
        self.assertEqual(addr, ("192.0.2.50", 5099))
        self.assertTrue(data.startswith(b"SIP/2.0 400 "))
        self.assertEqual(protocol.engine.stats.get("bad_msg_hdr"), 1)
        self.assertEqual(protocol.engine.stats.get("udp_malformed"), 1)

    def test_garbage_and_malformed_responses_are_dropped(self) -> None:
        """Bytes that are not a request, and broken responses, are dropped and counted."""
        protocol, transport = make_protocol()
        protocol.datagramReceived(b"\xff\xfe garbage", ("192.0.2.50", 5099))
        protocol.datagramReceived(rfc4475("bigcode"), ("192.0.2.50", 5099))
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.engine.stats.get("bad_msg_hdr"), 2)
        self.assertEqual(protocol.engine.stats.get("drop_replies"), 1)
        self.assertEqual(protocol.engine.stats.get("drop_requests"), 1)

    def test_keepalives_are_absorbed(self) -> None:
        """CRLF and 4-byte zero pings get no answer."""
        protocol, transport = make_protocol()
        for ping in (b"\r\n\r\n", b"\x00\x00\x00\x00", b"\r\n"):
            protocol.datagramReceived(ping, ("192.0.2.50", 5099))
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.engine.stats.get("udp_keepalives"), 3)

    def test_a_route_header_broken_only_on_demand_still_gets_400(self) -> None:
        """A header parsed lazily and found broken while handling yields 400, not a crash."""
        protocol, transport = make_protocol()
        data = request_bytes(headers=[("Route", "<sip:a;lr")])
        protocol.datagramReceived(data, ("192.0.2.50", 5099))
        [(reply, addr)] = transport.written
        self.assertTrue(reply.startswith(b"SIP/2.0 400 "), reply)
        self.assertEqual(addr, ("192.0.2.50", 5099))
        self.assertEqual(self.flushLoggedErrors(), [])


class StunOnSipPortTests(SynchronousTestCase):
    """STUN Binding requests on a SIP UDP socket are answered, never parsed as SIP."""

    def test_binding_request_answered_to_the_source(self) -> None:
        """The response goes back to the source and names it."""
        from tests.core.test_stun import attributes, request

        protocol, transport = make_protocol()
        protocol.datagramReceived(request(), ("203.0.113.7", 40000))
        [(data, addr)] = transport.written
        self.assertEqual(addr, ("203.0.113.7", 40000))
        self.assertIn(0x0020, attributes(data))
        self.assertEqual(protocol.engine.stats.get("stun_responses"), 1)
        self.assertEqual(protocol.engine.stats.get("bad_msg_hdr"), 0)

    def test_malformed_stun_is_counted_and_dropped(self) -> None:
        """Broken STUN gets no answer and no SIP 400."""
        protocol, transport = make_protocol()
        protocol.datagramReceived(
            b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + b"x" * 12, ("203.0.113.7", 40000)
        )
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.engine.stats.get("stun_errors"), 1)

    def test_stun_switched_off(self) -> None:
        """stun_allow_stun = no: dropped and counted."""
        from tests.core.test_stun import request

        protocol, transport = make_protocol()
        protocol.engine.stun_enabled = False
        protocol.datagramReceived(request(), ("203.0.113.7", 40000))
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.engine.stats.get("stun_dropped"), 1)


class LimitCounterTests(SynchronousTestCase):
    """Each input limit (message size, headers, header length) is counted when a peer hits it."""

    def test_limits_are_counted(self) -> None:
        """Oversized message, too many headers, an overlong header: one counter each."""
        from sbc.core.message import ParseLimits

        protocol, transport = make_protocol()
        protocol.engine.limits = ParseLimits(
            max_message_size=2048, max_headers=32, max_header_length=512
        )
        peer = ("192.0.2.50", 5099)
        protocol.datagramReceived(request_bytes(body=b"x" * 3000), peer)
        protocol.datagramReceived(request_bytes(headers=[("X", "y")] * 40), peer)
        protocol.datagramReceived(request_bytes(headers=[("X", "y" * 600)]), peer)
        stats = protocol.engine.stats
        self.assertEqual(
            (
                stats.get("limit_message_size"),
                stats.get("limit_headers"),
                stats.get("limit_header_length"),
            ),
            (1, 1, 1),
        )


class _Socket:
    """The socket of a real port: records C{sendto}, or raises C{error} once."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.error: OSError | None = None

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        self.sent.append((data, address))
        return len(data)


class _Port(_Transport):
    """A transport with a socket and a reactor, as C{twisted.internet.udp.Port} has."""

    def __init__(self, reactor: Clock) -> None:
        super().__init__()
        self.socket = _Socket()
        self.reactor = reactor


class SendQueueTests(SynchronousTestCase):
    """Datagrams sent during a pass of the reactor loop go out together right after it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.protocol = SipDatagramProtocol(SipEngine(make_proxy([]), Clock()))
        self.port = _Port(self.clock)
        self.protocol.makeConnection(self.port)
        self.sent = self.port.socket.sent

    def test_queued_until_the_pass_ends_then_sent_in_order(self) -> None:
        """Nothing leaves before the reactor comes back; then all of it, in order, once."""
        for i in range(3):
            self.protocol.send(b"%d" % i, ("192.0.2.1", 5060 + i))
        self.assertEqual(self.sent, [])
        self.clock.advance(0)
        self.assertEqual([d for d, _ in self.sent], [b"0", b"1", b"2"])
        self.assertEqual(self.sent[2][1], ("192.0.2.1", 5062))
        self.clock.advance(0)
        self.assertEqual(len(self.sent), 3)  # each datagram once

    def test_a_full_queue_goes_out_at_once(self) -> None:
        """At most MAX_QUEUED wait: the time a datagram waits stays short under load."""
        for i in range(SipDatagramProtocol.MAX_QUEUED + 1):
            self.protocol.send(b"%d" % i, ("192.0.2.1", 5060))
        self.assertEqual(len(self.sent), SipDatagramProtocol.MAX_QUEUED)
        self.clock.advance(0)
        self.assertEqual(len(self.sent), SipDatagramProtocol.MAX_QUEUED + 1)

    def test_stopping_sends_what_is_queued(self) -> None:
        """A socket that stops sends its queue first; afterwards nothing waits."""
        self.protocol.send(b"bye", ("192.0.2.1", 5060))
        self.protocol.doStop()
        self.assertEqual(self.sent, [(b"bye", ("192.0.2.1", 5060))])
        self.protocol.send(b"late", ("192.0.2.1", 5060))  # no reactor pass to wait for
        self.assertEqual(len(self.sent), 2)

    def test_errors_of_a_queued_datagram_are_counted_and_the_rest_still_go(self) -> None:
        """ECONNREFUSED (an earlier ICMP error) is ignored, other errors counted; neither
        stops the datagrams queued behind it."""
        stats = self.protocol.engine.stats
        self.port.socket.error = ConnectionRefusedError()
        self.protocol.send(b"a", ("192.0.2.1", 5060))
        self.protocol.send(b"b", ("192.0.2.1", 5060))
        self.clock.advance(0)
        self.assertEqual(self.sent, [(b"b", ("192.0.2.1", 5060))])
        self.assertEqual(stats.get("udp_send_errors"), 0)
        self.port.socket.error = OSError(101, "Network is unreachable")
        self.protocol.send(b"c", ("192.0.2.1", 5060))
        self.protocol.send(b"d", ("192.0.2.1", 5060))
        self.clock.advance(0)
        self.assertEqual([d for d, _ in self.sent], [b"b", b"d"])
        self.assertEqual(stats.get("udp_send_errors"), 1)


@pytest_twisted.ensureDeferred
async def test_a_real_socket_sends_the_pass_s_datagrams_after_it_in_order() -> None:
    """On a real port in the running reactor: what is sent during a pass has not left when
    the pass goes on (a direct send to loopback would already be in the peer's buffer),
    and all of it arrives, in order, once the reactor comes back."""
    protocol = SipDatagramProtocol(SipEngine(make_proxy([]), reactor))
    port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        for i in range(3):
            protocol.send(b"datagram %d" % i, peer.getsockname())
        with pytest.raises(BlockingIOError):
            peer.recv(100)
        await deferLater(reactor, 0.05, lambda: None)
        assert [peer.recv(100) for _ in range(3)] == [b"datagram 0", b"datagram 1", b"datagram 2"]
    finally:
        peer.close()
        await port.stopListening()
