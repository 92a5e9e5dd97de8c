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


class _EngineCase(SynchronousTestCase):
    """An engine with a fake clock and a recording socket."""

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


class SipEngineTests(_EngineCase):
    """A call through the engine."""

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

    def test_a_parser_bug_drops_the_message_and_is_counted(self) -> None:
        """Whatever the parser raises, the engine counts it and goes on."""
        import sbc.net.engine as engine_module

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("parser bug")

        self.patch(engine_module, "parse", broken)
        self.deliver(b"OPTIONS sip:x SIP/2.0\r\n\r\n", CALLER)
        self.assertEqual(self.engine.stats.get("internal_errors"), 1)
        self.assertEqual(self.engine.stats.get("bad_msg_hdr"), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class _Resolver:
    """Answers every lookup at once with fixed addresses (or fails)."""

    def __init__(self, targets: list[Address], fail: bool = False) -> None:
        self.targets = targets
        self.fail = fail
        self.asked: list[str] = []

    def resolve(self, uri):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import fail, succeed

        self.asked.append(str(uri))
        return fail(RuntimeError("resolver bug")) if self.fail else succeed(self.targets)


class _Media:
    """A media backend that rewrites SDP by appending a marker line."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def offer(self, call_id, from_tag, to_tag, sdp, source, towards=None):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import succeed

        self.calls.append(("offer", call_id, from_tag, to_tag))
        return succeed(sdp + b"a=anchored\r\n")

    def answer(self, call_id, from_tag, to_tag, sdp, source):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import fail

        self.calls.append(("answer", call_id, from_tag, to_tag))
        return fail(RuntimeError("relay down"))

    def delete(self, call_id, from_tag=None, to_tag=None):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import succeed

        self.calls.append(("delete", call_id))
        return succeed(None)


class EngineDnsAndMediaTests(_EngineCase):
    """Resolve and Anchor effects carried out through a resolver and a media backend."""

    def setUp(self) -> None:
        super().setUp()
        self.proxy.resolves_names = True

    def invite(self, uri: str, body: bytes = b"") -> bytes:
        headers = [("Content-Type", "application/sdp")] if body else []
        return request_bytes(
            "INVITE",
            uri,
            via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKdns;rport",
            headers=headers,
            body=body,
        )

    def test_a_name_is_resolved_and_the_request_sent_there(self) -> None:
        self.engine.resolver = _Resolver([Address("udp", "192.0.2.40", 5060)])
        self.deliver(self.invite("sip:x@trunk.example.test"), CALLER)
        [out] = self.sent_to(("192.0.2.40", 5060))
        self.assertEqual(out.method, "INVITE")
        self.assertEqual(self.engine.resolver.asked, ["sip:x@trunk.example.test"])

    def test_a_resolver_failure_is_478(self) -> None:
        self.engine.resolver = _Resolver([], fail=True)
        self.deliver(self.invite("sip:x@trunk.example.test"), CALLER)
        statuses = [m.status for m in self.sent_to(CALLER)]
        self.assertEqual(statuses, [100, 478])
        self.assertEqual(self.engine.stats.get("dns_unresolvable"), 1)
        self.flushLoggedErrors(RuntimeError)

    def test_tls_next_hops_remember_the_domain_they_were_found_by(self) -> None:
        """RFC 5922: the certificate of a TLS hop found by DNS must name the domain."""
        target = Address("tls", "192.0.2.41", 5061)
        self.engine.resolver = _Resolver([target])
        self.engine.send_stream = lambda peer, data: True
        self.deliver(self.invite("sips:x@Trunk.Example.Test"), CALLER)
        self.assertEqual(self.engine.tls_names, {target: "trunk.example.test"})

    def test_offer_rewritten_by_the_media_backend_and_a_failed_answer_passes(self) -> None:
        media = _Media()
        self.engine.media = media
        self.proxy.anchors_media = True
        self.proxy.settings = type(self.proxy.settings)(
            timers=self.proxy.settings.timers, rtp_policy="always"
        )
        self.register_callee()
        sdp = b"v=0\r\nc=IN IP4 192.0.2.10\r\nm=audio 4000 RTP/AVP 0\r\n"
        self.deliver(self.invite("sip:bob@sbc.test", sdp), CALLER)
        [out] = [m for m in self.sent_to(CALLEE) if isinstance(m, Request)]
        self.assertTrue(out.body.endswith(b"a=anchored\r\n"))
        answer = make_response(out, 200, body=sdp, content_type="application/sdp")
        answer = answer.with_header("To", f"{out.get('to')};tag=callee")
        self.deliver(answer.to_bytes(), CALLEE)
        [ok] = [m for m in self.sent_to(CALLER) if isinstance(m, Response) and m.status == 200]
        self.assertEqual(ok.body, sdp)  # the relay failed: the answer goes on unchanged
        self.assertEqual(self.engine.stats.get("rtp_anchor_failures"), 1)
        self.assertEqual([c[0] for c in media.calls], ["offer", "answer"])


class EngineScriptErrorTests(_EngineCase):
    """A routing script that raises: 500 to the caller, counted, one error line."""

    def test_script_errors_are_counted_and_logged(self) -> None:
        from types import SimpleNamespace

        def route(msg) -> None:  # type: ignore[no-untyped-def]
            raise KeyError("no such tenant")

        self.proxy.router = SimpleNamespace(request_route=route)
        self.deliver(request_bytes(), CALLER)
        [response] = self.sent_to(CALLER)
        self.assertEqual(response.status, 500)
        self.assertEqual(self.engine.stats.get("script_errors"), 1)

    def test_log_lines_about_a_call_name_its_call_id(self) -> None:
        """The script error's line names the Call-ID of the request that caused it (the
        notice itself does not carry one), so grep on a Call-ID finds it."""
        from types import SimpleNamespace

        from twisted.logger import globalLogPublisher

        def route(msg) -> None:  # type: ignore[no-untyped-def]
            raise KeyError("no such tenant")

        lines: list[str] = []

        def observer(event: dict) -> None:  # type: ignore[type-arg]
            from twisted.logger import formatEvent

            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        try:
            self.proxy.router = SimpleNamespace(request_route=route)
            self.deliver(request_bytes(call_id="grep-me@192.0.2.10"), CALLER)
        finally:
            globalLogPublisher.removeObserver(observer)
        errors = [line for line in lines if "routing script error" in line]
        self.assertEqual(len(errors), 1, lines)
        self.assertIn("call_id=grep-me@192.0.2.10", errors[0])


class EngineProbeTests(_EngineCase):
    """Only next hops found by DNS are probed for ICMP errors: a registered phone's NAT
    binding would answer a probe from another port with an ICMP error of its own."""

    def test_only_dns_targets_are_probed(self) -> None:
        probed: list[Address] = []
        from types import SimpleNamespace

        self.engine.probe = SimpleNamespace(  # type: ignore[assignment]
            check=probed.append, heard_from=lambda host, port: None
        )
        self.register_callee()
        self.deliver(
            request_bytes(
                "INVITE", "sip:bob@sbc.test", via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKp1"
            ),
            CALLER,
        )
        self.assertEqual(probed, [])
        self.proxy.resolves_names = True
        target = Address("udp", "192.0.2.40", 5060)
        self.engine.resolver = _Resolver([target])
        self.deliver(
            request_bytes(
                "INVITE",
                "sip:x@trunk.example.test",
                via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKp2",
                call_id="p2",
            ),
            CALLER,
        )
        self.assertEqual(probed, [target])
