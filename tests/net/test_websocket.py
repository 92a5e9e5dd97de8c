"""Tests for L{sbc.net.websocket}: the RFC 7118 upgrade, one SIP message per WebSocket
message, limits, keepalives and bad input, driven by a wsproto client over a fake link."""

from __future__ import annotations

from typing import Optional

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from wsproto import ConnectionType, WSConnection
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

from sbc.core.address import Address, parse_address
from sbc.core.message import Response, parse
from sbc.net.engine import SipEngine
from sbc.net.stream import ConnectionTable, StreamConnector
from sbc.net.websocket import SipWebSocketFactory, SipWebSocketProtocol, WebSocketSettings
from tests.helpers import make_proxy, request_bytes


def make_factory(
    clock: Clock, settings: WebSocketSettings = WebSocketSettings(), lifetime: float = 120
) -> SipWebSocketFactory:
    engine = SipEngine(make_proxy([parse_address("ws:127.0.0.1:8080")]), clock)
    factory = SipWebSocketFactory(engine, "ws", ConnectionTable(), clock, lifetime, settings)
    engine.send_stream = StreamConnector(None, factory).send  # type: ignore[arg-type]
    return factory


class Client:
    """A wsproto client joined to one server connection by a fake link."""

    def __init__(self, factory: SipWebSocketFactory, port: int = 40000) -> None:
        self.protocol: SipWebSocketProtocol = factory.buildProtocol(None)
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "203.0.113.7", port),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        )
        self.protocol.makeConnection(self.transport)
        self.ws = WSConnection(ConnectionType.CLIENT)

    def send(self, event: Event) -> None:
        self.protocol.dataReceived(self.ws.send(event))

    def raw(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def events(self) -> list[Event]:
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.ws.receive_data(data)
        return list(self.ws.events())

    def upgrade(
        self, subprotocols: tuple[str, ...] = ("sip",), origin: Optional[str] = None
    ) -> list[Event]:
        headers = [(b"Origin", origin.encode())] if origin else []
        self.send(
            Request(
                host="127.0.0.1:8080",
                target="/",
                subprotocols=list(subprotocols),
                extra_headers=headers,
            )
        )
        return self.events()

    def messages(self) -> list[bytes]:
        out = []
        for event in self.events():
            if isinstance(event, TextMessage):
                out.append(event.data.encode())
            elif isinstance(event, BytesMessage):
                out.append(bytes(event.data))
        return out


REGISTER = request_bytes(
    "REGISTER",
    "sip:sbc.test",
    via="SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKreg1",
    headers=[
        ("Contact", "<sip:alice@df7jal23ls0d.invalid;transport=ws>;expires=600"),
        ("Expires", "600"),
    ],
).replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")


class UpgradeTests(SynchronousTestCase):
    """RFC 7118 §4: the HTTP upgrade."""

    def test_sip_subprotocol_is_accepted(self) -> None:
        """An upgrade offering C{sip} is answered 101 with C{sip} chosen."""
        factory = make_factory(Clock())
        client = Client(factory)
        events = client.upgrade(("foo", "sip"))
        self.assertEqual(len(events), 1)
        assert isinstance(events[0], AcceptConnection)
        self.assertEqual(events[0].subprotocol, "sip")
        self.assertIs(factory.table.get("ws", "203.0.113.7", 40000), client.protocol)
        self.assertEqual(factory.engine.stats.get("ws_connections"), 1)

    def test_missing_subprotocol_is_refused(self) -> None:
        """No C{sip} among the offered subprotocols: refused and closed, counted."""
        factory = make_factory(Clock())
        client = Client(factory)
        events = client.upgrade(("chat",))
        assert isinstance(events[0], RejectConnection)
        self.assertEqual(events[0].status_code, 426)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("ws_handshake_refused"), 1)
        self.assertIsNone(factory.table.get("ws", "203.0.113.7", 40000))

    def test_origin_allow_list(self) -> None:
        """A page from an origin not listed gets 403; a listed one (any case) and a client
        sending no Origin are let in."""
        settings = WebSocketSettings(allowed_origins=("https://phone.example",))
        factory = make_factory(Clock(), settings)
        bad = Client(factory, 40001)
        events = bad.upgrade(origin="https://evil.example")
        assert isinstance(events[0], RejectConnection)
        self.assertEqual(events[0].status_code, 403)
        self.assertEqual(factory.engine.stats.get("ws_origin_refused"), 1)
        good = Client(factory, 40002)
        self.assertIsInstance(good.upgrade(origin="https://Phone.example")[0], AcceptConnection)
        bare = Client(factory, 40003)
        self.assertIsInstance(bare.upgrade()[0], AcceptConnection)

    def test_garbage_instead_of_an_upgrade_gets_400(self) -> None:
        """Bytes that are not an HTTP upgrade: 400, closed, counted."""
        factory = make_factory(Clock())
        client = Client(factory)
        client.raw(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 400"))
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("ws_malformed"), 1)

    def test_plain_sip_on_the_websocket_port_is_refused(self) -> None:
        """A SIP request where an upgrade was expected is an HTTP error, not SIP."""
        factory = make_factory(Clock())
        client = Client(factory)
        client.raw(REGISTER)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("ws_received"), 0)

    def test_slow_upgrade_is_closed(self) -> None:
        """handshake_timeout: a client that does not finish its upgrade is closed."""
        clock = Clock()
        factory = make_factory(clock, WebSocketSettings(handshake_timeout=5))
        client = Client(factory)
        client.raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        clock.advance(4)
        self.assertFalse(client.transport.disconnecting)
        clock.advance(1.5)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("ws_handshake_timeouts"), 1)

    def test_upgrades_in_progress_count_against_the_limits(self) -> None:
        """tcp_max_connections_per_source: half-open upgrades take connection slots too."""
        factory = make_factory(Clock())
        factory.max_connections_per_source = 2
        Client(factory, 40001)
        Client(factory, 40002)
        third = Client(factory, 40003)
        self.assertTrue(third.transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("limit_connections"), 1)


class MessageTests(SynchronousTestCase):
    """RFC 7118 §5: one SIP message per WebSocket message."""

    def open(self, clock: Optional[Clock] = None, **kw) -> tuple[SipWebSocketFactory, Client]:  # type: ignore[no-untyped-def]
        factory = make_factory(clock or Clock(), **kw)
        client = Client(factory)
        client.upgrade()
        return factory, client

    def test_register_over_websocket(self) -> None:
        """A REGISTER in a text message is answered in a text message; the binding is tied
        to the connection."""
        factory, client = self.open()
        client.send(TextMessage(data=REGISTER.decode()))
        (reply,) = client.messages()
        response = parse(reply)
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.top_via.received, "203.0.113.7")
        (binding,) = factory.engine.proxy.registrar.lookup("alice", 0) or []
        self.assertEqual(binding.source, Address("ws", "203.0.113.7", 40000))
        self.assertEqual(factory.engine.stats.get("ws_received"), 1)

    def test_binary_message_and_fragments(self) -> None:
        """A SIP message in a binary message, split over frames, is one message."""
        factory, client = self.open()
        data = request_bytes(via="SIP/2.0/WS x.invalid;branch=z9hG4bK2")
        client.send(BytesMessage(data=data[:50], message_finished=False))
        self.assertEqual(client.messages(), [])
        client.send(BytesMessage(data=data[50:], message_finished=True))
        (reply,) = client.messages()
        self.assertTrue(reply.startswith(b"SIP/2.0 200 OK"))

    def test_garbage_message_is_counted_and_the_connection_stays(self) -> None:
        """A text or binary message that is not SIP is counted; the flow carries on."""
        factory, client = self.open()
        client.send(BytesMessage(data=b"\xff\xfenot sip at all"))
        client.send(TextMessage(data="hello there"))
        client.messages()
        self.assertEqual(factory.engine.stats.get("ws_malformed"), 2)
        self.assertFalse(client.transport.disconnecting)
        client.send(
            TextMessage(data=request_bytes(via="SIP/2.0/WS x.invalid;branch=z9hG4bK3").decode())
        )
        self.assertTrue(client.messages()[0].startswith(b"SIP/2.0 200 OK"))

    def test_oversized_message_closes_with_1009(self) -> None:
        """More than max_message_size in one message: Close 1009, counted, connection gone."""
        factory, client = self.open()
        client.send(TextMessage(data="x" * 40000, message_finished=False))
        client.send(TextMessage(data="x" * 40000, message_finished=False))
        events = client.events()
        close = [e for e in events if isinstance(e, CloseConnection)]
        self.assertEqual(close[0].code, 1009)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("limit_message_size"), 1)
        self.assertEqual(factory.engine.stats.get("ws_malformed"), 1)

    def test_broken_frame_closes_only_that_connection(self) -> None:
        """An unmasked client frame (RFC 6455 §5.1) is a protocol error: Close 1002."""
        factory, client = self.open()
        other = Client(factory, 40009)
        other.upgrade()
        client.raw(b"\x81\x05hello")
        close = [e for e in client.events() if isinstance(e, CloseConnection)]
        self.assertEqual(close[0].code, 1002)
        self.assertTrue(client.transport.disconnecting)
        self.assertFalse(other.transport.disconnecting)
        self.assertEqual(factory.engine.stats.get("ws_malformed"), 1)

    def test_invalid_utf8_in_a_text_message(self) -> None:
        """A text frame that is not UTF-8: Close 1007."""
        factory, client = self.open()
        client.raw(b"\x81\x82\x00\x00\x00\x00\xff\xfe")
        close = [e for e in client.events() if isinstance(e, CloseConnection)]
        self.assertEqual(close[0].code, 1007)
        self.assertEqual(factory.engine.stats.get("ws_malformed"), 1)

    def test_crlf_keepalive(self) -> None:
        """RFC 5626 §4.4.1 over WebSocket: CRLFCRLF is answered with CRLF."""
        factory, client = self.open()
        client.send(TextMessage(data="\r\n\r\n"))
        self.assertEqual(client.messages(), [b"\r\n"])
        self.assertEqual(factory.engine.stats.get("ws_pings"), 1)

    def test_websocket_ping_pong(self) -> None:
        """A client Ping gets a Pong; a silent connection gets sbc's Ping, and its Pong
        keeps the connection open past the lifetime."""
        clock = Clock()
        factory, client = self.open(
            clock, settings=WebSocketSettings(keepalive_timeout=30), lifetime=60
        )
        client.send(Ping(payload=b"abc"))
        self.assertEqual(client.events(), [Pong(payload=b"abc")])
        for _ in range(45):
            clock.advance(1)
            factory.keepalive()
        pings = [e for e in client.events() if isinstance(e, Ping)]
        self.assertEqual(len(pings), 1)
        client.send(pings[0].response())
        clock.advance(50)
        self.assertFalse(client.transport.disconnecting)
        clock.advance(20)
        self.assertTrue(client.transport.disconnecting)

    def test_close_from_the_client_is_answered(self) -> None:
        """A Close frame gets its Close answer and the connection goes; its registrations
        go with it (480 for the user), outbound ones stay (430 when tried)."""
        factory, client = self.open()
        client.send(TextMessage(data=REGISTER.decode()))
        client.messages()
        client.send(CloseConnection(code=1000))
        self.assertIsInstance(client.events()[0], CloseConnection)
        self.assertTrue(client.transport.disconnecting)
        client.protocol.connectionLost(None)
        self.assertEqual(factory.engine.proxy.registrar.lookup("alice", 1), [])
        self.assertIsNone(factory.table.get("ws", "203.0.113.7", 40000))
        self.assertEqual(factory.engine.stats.get("ws_malformed"), 0)


class KeepaliveEngineTests(SynchronousTestCase):
    """The keepalive engine's CRLF ping reaches a WebSocket flow as a WebSocket Ping."""

    def test_crlf_keepalive_becomes_a_ping(self) -> None:
        factory = make_factory(Clock())
        client = Client(factory)
        client.upgrade()
        connector = StreamConnector(None, factory)  # type: ignore[arg-type]
        peer = Address("ws", "203.0.113.7", 40000)
        self.assertTrue(connector.send_existing(peer, b"\r\n\r\n"))
        self.assertEqual([type(e) for e in client.events()], [Ping])
        self.assertEqual(factory.engine.stats.get("ws_pings_sent"), 1)
        self.assertFalse(connector.send_existing(Address("ws", "203.0.113.7", 1), b"x"))
