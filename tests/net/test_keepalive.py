"""Tests for L{sbc.net.keepalive}: ticks on a fake clock, pings on a recording socket,
replies consumed, the state file written atomically and read back."""

from __future__ import annotations

import os
import tempfile
from random import Random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sbc.core.address import Address
from sbc.core.keepalive import KeepaliveSettings, KeepaliveTable
from sbc.core.message import Request, parse
from sbc.core.reply import make_response
from sbc.net.engine import SipEngine
from sbc.net.keepalive import KeepaliveService, write_atomically
from tests.helpers import make_proxy, request_bytes

SBC = Address("udp", "203.0.113.1", 5060)
NAT = ("198.51.100.20", 40123)


class _Flow:
    transport = "udp"
    reliable = False
    local = ("203.0.113.1", 5060)

    def __init__(self, remote: tuple[str, int]) -> None:
        self.remote = remote

    def send(self, data: bytes, destination=None) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("not used")


class KeepaliveServiceTests(SynchronousTestCase):
    """nat_traversal style end to end on the engine, with time as a fake clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        settings = KeepaliveSettings(style="nat_traversal", interval=10, method="NOTIFY")
        self.proxy = make_proxy([SBC], keepalive=KeepaliveTable(settings, Random(3)))
        self.engine = SipEngine(self.proxy, self.clock)
        self.wire: list[tuple[bytes, tuple[str, int]]] = []
        self.engine.datagram_sockets[SBC] = lambda data, addr: self.wire.append((data, addr))
        folder = tempfile.mkdtemp(prefix="sbc-ka-")
        self.state = os.path.join(folder, "state")
        self.service = KeepaliveService(
            self.proxy.keepalive,
            self.engine,
            self.proxy.registrar,
            self.clock,
            self.state,
            save_every=5,
        )

    def register(self) -> None:
        data = request_bytes(
            "REGISTER",
            "sip:sbc.test",
            via="SIP/2.0/UDP 10.0.0.10:5070;branch=z9hG4bKr;rport",
            headers=[("Contact", "<sip:alice@10.0.0.10:5070>"), ("Expires", "600")],
        )
        data = data.replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")
        self.engine.receive(data, _Flow(NAT))

    def test_registered_endpoint_gets_notify_once_per_interval_and_replies_are_consumed(self):  # type: ignore[no-untyped-def]
        """One NOTIFY (Event: keep-alive) per interval to the NAT address, addressed to the
        registered contact; its 200 is eaten."""
        self.service.startService()
        self.register()
        self.wire.clear()
        self.clock.pump([1.0] * 10)
        pings = [parse(d) for d, a in self.wire if a == NAT]
        self.assertEqual(len(pings), 1)
        notify = pings[0]
        assert isinstance(notify, Request)
        self.assertEqual((notify.method, notify.get("Event")), ("NOTIFY", "keep-alive"))
        self.assertEqual(str(notify.uri), "sip:alice@10.0.0.10:5070")
        self.assertEqual(str(notify.to.uri), "sip:alice@10.0.0.10:5070")
        reply = make_response(notify, 200)
        self.engine.receive(reply.to_bytes(), _Flow(NAT))
        self.clock.pump([1.0] * 10)
        self.assertEqual(self.engine.stats.get("keepalive_replies"), 1)
        self.assertEqual(self.engine.stats.get("keepalive_endpoints"), 1)
        self.assertEqual(self.engine.stats.get("drop_replies"), 0)
        self.service.stopService()

    def test_paused_pings(self) -> None:
        """enable_ping(False) stops the pings, True resumes them."""
        self.service.startService()
        self.register()
        self.wire.clear()
        self.service.enable_ping(False)
        self.clock.pump([1.0] * 20)
        self.assertEqual(self.wire, [])
        self.service.enable_ping(True)
        self.clock.pump([1.0] * 10)
        self.assertEqual(len(self.wire), 1)
        self.service.stopService()

    def test_state_saved_periodically_and_restored(self) -> None:
        """Every save_every seconds and at stop; a new service reads endpoints and bindings."""
        self.service.startService()
        self.register()
        self.clock.advance(5)
        self.assertIn("E udp:198.51.100.20:40123", open(self.state).read())
        self.service.stopService()
        proxy = make_proxy([SBC])
        table = KeepaliveTable(self.proxy.keepalive.settings)
        restored = KeepaliveService(
            table, SipEngine(proxy, self.clock), proxy.registrar, self.clock, self.state
        )
        restored.load()
        self.assertIn(Address("udp", *NAT), table.endpoints)
        self.assertEqual(table.endpoints[Address("udp", *NAT)].contact, "sip:alice@10.0.0.10:5070")
        bindings = proxy.registrar.lookup("alice", self.clock.seconds())
        self.assertEqual([str(b.uri) for b in bindings or []], ["sip:alice@10.0.0.10:5070"])
        self.assertEqual(bindings[0].received, Address("udp", *NAT))  # type: ignore[index]

    def test_tick_errors_are_trapped(self) -> None:
        """A failing tick is logged and counted; the loop keeps running."""

        def boom(now: float) -> list:
            raise RuntimeError("boom")

        self.proxy.keepalive.tick = boom  # type: ignore[method-assign, union-attr]
        self.service.startService()
        self.clock.pump([1.0] * 3)
        self.assertEqual(self.engine.stats.get("internal_errors"), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        self.service.stopService()

    def test_write_atomically_replaces_whole_files(self) -> None:
        """The file holds the old or the new text, and no temp file is left behind."""
        folder = tempfile.mkdtemp(prefix="sbc-ka-")
        path = os.path.join(folder, "f")
        write_atomically(path, "one\n")
        write_atomically(path, "two\n")
        self.assertEqual(open(path).read(), "two\n")
        self.assertEqual(os.listdir(folder), ["f"])
