"""Tests for L{sbc.net.engine}: effects executed, the timer re-armed, dialog listeners."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sbc.core.address import Address
from sbc.core.dialog import DialogCreated, DialogTerminated
from sbc.core.message import Request, Response, parse
from sbc.core.reply import make_response
from sbc.core.transaction import Timers
from sbc.net.engine import SipEngine
from tests.helpers import make_proxy, request_bytes

SBC = Address("udp", "127.0.0.1", 5060)
CALLER = ("192.0.2.10", 5070)
CALLEE = ("192.0.2.21", 5081)


class _Flow:
    transport = "udp"
    reliable = False
    local = ("127.0.0.1", 5060)

    def __init__(self, remote: tuple[str, int]) -> None:
        self.remote = remote

    def send(self, data: bytes, destination=None) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("the engine sends through its sockets")


class SipEngineTests(SynchronousTestCase):
    """A call through the engine with a fake clock and a recording socket."""

    def setUp(self) -> None:
        from sbc.core.proxy import ProxySettings

        self.clock = Clock()
        self.proxy = make_proxy([SBC], ProxySettings(timers=Timers(fr_inv_timer=10.0)))
        self.engine = SipEngine(self.proxy, self.clock)
        self.wire: list[tuple[bytes, tuple[str, int]]] = []
        self.engine.datagram_sockets[SBC] = lambda data, addr: self.wire.append((data, addr))
        self.events: list = []
        self.engine.dialog_listeners.append(self.events.append)

    def deliver(self, data: bytes, remote: tuple[str, int]) -> None:
        self.engine.receive(data, _Flow(remote))

    def sent_to(self, addr: tuple[str, int]) -> list:
        return [parse(d) for d, a in self.wire if a == addr]

    def register_callee(self) -> None:
        data = request_bytes(
            "REGISTER",
            "sip:sbc.test",
            via="SIP/2.0/UDP 192.0.2.21:5081;branch=z9hG4bKr",
            headers=[("Contact", "<sip:bob@192.0.2.21:5081>")],
        )
        self.deliver(data.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@sbc.test>"), CALLEE)

    def test_ringing_call_times_out_through_the_rearmed_timer(self) -> None:
        """fr_inv_timer fires from the reactor's clock: CANCEL downstream, 408 upstream."""
        self.register_callee()
        self.deliver(
            request_bytes(
                "INVITE",
                "sip:bob@sbc.test",
                via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKi;rport",
            ),
            CALLER,
        )
        [invite] = [m for m in self.sent_to(CALLEE) if isinstance(m, Request)]
        ringing = make_response(invite, 180).with_header("To", "<sip:bob@example.com>;tag=b")
        self.deliver(ringing.to_bytes(), CALLEE)
        self.assertIsInstance(self.events[0], DialogCreated)
        self.assertIsNotNone(self.engine.timer.deadline)
        self.clock.advance(10.0)
        upstream = [m.status for m in self.sent_to(CALLER) if isinstance(m, Response)]
        self.assertEqual(upstream, [100, 180, 408])
        self.assertIn("CANCEL", [m.method for m in self.sent_to(CALLEE) if isinstance(m, Request)])
        self.assertIsInstance(self.events[-1], DialogTerminated)
        self.assertEqual(self.engine.stats.get("dialogs_created"), 1)

    def test_timer_errors_are_contained(self) -> None:
        """An exception in timer processing is logged and counted, the timer survives."""

        def boom(now: float) -> list:
            raise RuntimeError("boom")

        self.proxy.handle_timer = boom  # type: ignore[method-assign]
        self.engine.timer.rearm(1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.engine.stats.get("internal_errors"), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
