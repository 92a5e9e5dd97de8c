"""Tests for L{sbc.net.stream}: framing on a connection, pings, reuse table, idle timeout."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sbc.core.address import parse_address
from sbc.core.message import Response, parse
from sbc.net.engine import SipEngine
from sbc.net.stream import ConnectionTable, SipStreamFactory, StreamConnector
from tests.helpers import make_proxy, request_bytes


def make_factory(clock: Clock, lifetime: float = 120) -> SipStreamFactory:
    engine = SipEngine(make_proxy([parse_address("tcp:127.0.0.1:5060")]), clock)
    factory = SipStreamFactory(engine, "tcp", ConnectionTable(), clock, lifetime)
    engine.send_stream = StreamConnector(None, factory).send
    return factory


def connect(factory: SipStreamFactory, port: int = 40000):  # type: ignore[no-untyped-def]
    protocol = factory.buildProtocol(None)
    transport = StringTransport(
        peerAddress=IPv4Address("TCP", "203.0.113.7", port),
        hostAddress=IPv4Address("TCP", "127.0.0.1", 5060),
    )
    protocol.makeConnection(transport)
    return protocol, transport


class SipStreamProtocolTests(SynchronousTestCase):
    """One connection driven byte by byte."""

    def test_request_fed_byte_by_byte_is_answered_on_the_connection(self) -> None:
        """A request split into single bytes gets one response on the same connection."""
        clock = Clock()
        protocol, transport = connect(make_factory(clock))
        data = request_bytes(via="SIP/2.0/TCP 10.0.0.5:5070;branch=z9hG4bK1")
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        response = parse(transport.value())
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.top_via.received, "203.0.113.7")

    def test_crlf_ping_gets_crlf_pong(self) -> None:
        """CRLFCRLF is answered with CRLF (RFC 5626 §4.4.1)."""
        protocol, transport = connect(make_factory(Clock()))
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")

    def test_pong_is_recorded(self) -> None:
        """A lone CRLF from the peer is noted as a pong."""
        clock = Clock()
        clock.advance(42)
        protocol, _ = connect(make_factory(clock))
        protocol.dataReceived(b"\r\nOPT")
        self.assertEqual(protocol.last_pong, 42)

    def test_connection_table_registers_and_forgets(self) -> None:
        """Open connections are found by (transport, host, port) until they close."""
        factory = make_factory(Clock())
        protocol, transport = connect(factory)
        self.assertIs(factory.table.get("tcp", "203.0.113.7", 40000), protocol)
        self.assertIsNone(factory.table.get("tls", "203.0.113.7", 40000))
        protocol.connectionLost(None)
        self.assertIsNone(factory.table.get("tcp", "203.0.113.7", 40000))

    def test_idle_connection_closed_after_lifetime(self) -> None:
        """tcp_connection_lifetime: closed after that much silence, traffic postpones it."""
        clock = Clock()
        protocol, transport = connect(make_factory(clock, lifetime=10))
        clock.advance(8)
        protocol.dataReceived(b"\r\n\r\n")
        clock.advance(8)
        self.assertFalse(transport.disconnecting)
        clock.advance(2.5)
        self.assertTrue(transport.disconnecting)

    def test_garbage_stream_is_closed_and_counted(self) -> None:
        """A stream that cannot be framed is closed; nothing is raised."""
        factory = make_factory(Clock())
        protocol, transport = connect(factory)
        protocol.dataReceived(b"\x16\x03\x01" + b"A" * 70000)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("tcp_malformed"), 1)

    def test_malformed_message_on_a_stream_gets_400_and_the_connection_stays(self) -> None:
        """A framed but malformed request gets a 400; later requests are still served."""
        protocol, transport = connect(make_factory(Clock()))
        bad = request_bytes().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
        protocol.dataReceived(bad + request_bytes(cseq=2))
        out = transport.value()
        self.assertTrue(out.startswith(b"SIP/2.0 400 "))
        self.assertIn(b"SIP/2.0 200 OK", out)
        self.assertFalse(transport.disconnecting)

    def test_response_after_close_uses_another_connection_to_the_peer(self) -> None:
        """If the request's connection closed, the reply takes a live one to the same peer."""
        from sbc.net.stream import ConnectionFlow

        factory = make_factory(Clock())
        first, t1 = connect(factory, 40000)
        t1.connected = False
        second, t2 = connect(factory, 40000)
        ConnectionFlow(first).send(b"hello")
        self.assertEqual(t2.value(), b"hello")
        self.assertEqual(t1.value(), b"")

    def test_stun_on_a_stream_fed_byte_by_byte(self) -> None:
        """A STUN keepalive on a TCP flow is answered and counts as activity (RFC 5626)."""
        from tests.core.test_stun import attributes, request

        clock = Clock()
        protocol, transport = connect(make_factory(clock, lifetime=10))
        clock.advance(9)
        data = request() + request_bytes(via="SIP/2.0/TCP 10.0.0.5:5070;branch=z9hG4bK1")
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        out = transport.value()
        self.assertIn(0x0020, attributes(out[: out.index(b"SIP/2.0 ")]))
        self.assertIn(b"SIP/2.0 200 OK", out)
        clock.advance(9)
        self.assertFalse(transport.disconnecting)

    def test_oversized_stun_breaks_the_stream(self) -> None:
        """A STUN header announcing a huge message closes the connection."""
        factory = make_factory(Clock())
        protocol, transport = connect(factory)
        protocol.dataReceived(b"\x00\x01\xff\xfc" + b"\x21\x12\xa4\x42" + b"x" * 12)
        self.assertTrue(transport.disconnecting)

    def test_connections_per_source_are_limited(self) -> None:
        """One connection too many from a source is aborted and counted."""
        factory = make_factory(Clock())
        factory.max_connections_per_source = 2
        first, _ = connect(factory, 40001)
        second, _ = connect(factory, 40002)
        third, transport = connect(factory, 40003)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("limit_connections"), 1)
        self.assertEqual(len(factory.table), 2)
