"""Tests for L{sbc.app.service}: the service tree, built without starting it, and the plugin."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from sbc.app.config import defaults, load
from sbc.app.devcert import make_certificates
from sbc.app.manhole import AdminCommands
from sbc.app.service import ListenerService, Options, build_service, makeService
from sbc.core.address import Address


class MakeServiceTests(SynchronousTestCase):
    """makeService/build_service produce the expected tree."""

    def test_one_listener_per_listen_address(self) -> None:
        """Each [core] listen address becomes a named ListenerService child."""
        service = build_service(defaults(), MemoryReactorClock())
        listeners = [child for child in service if isinstance(child, ListenerService)]
        names = sorted(child.name for child in listeners)
        self.assertEqual(names, ["tcp:127.0.0.1:5060", "udp:127.0.0.1:5060"])
        self.assertEqual(
            sorted(child.name for child in service if child not in listeners), ["acc", "rtp-relay"]
        )

    def test_tcp_listener_binds_on_privileged_start(self) -> None:
        """Binding happens in privilegedStartService, on the configured interface."""
        reactor = MemoryReactorClock()
        service = build_service(defaults(), reactor)
        tcp = service.getServiceNamed("tcp:127.0.0.1:5060")
        tcp.privilegedStartService()
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (5060, "127.0.0.1"))
        self.assertEqual(factory.transport_name, "tcp")

    def test_tls_listener_uses_the_configured_certificate(self) -> None:
        """A tls listen address binds with an SSL context made from [tls]."""
        tmp = tempfile.mkdtemp(prefix="sbc-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        certs = make_certificates(tmp)
        path = os.path.join(tmp, "sbc.ini")
        with open(path, "w") as f:
            f.write(
                textwrap.dedent(f"""
                [core]
                listen = tls:[::1]:5061
                [tls]
                certificate = {certs["certificate"]}
                private_key = {certs["private_key"]}
                """)
            )
        reactor = MemoryReactorClock()
        service = build_service(load(path), reactor)
        service.getServiceNamed("tls:[::1]:5061").privilegedStartService()
        [(port, factory, context, backlog, interface)] = reactor.sslServers
        self.assertEqual((port, interface), (5061, "::1"))
        self.assertIsNotNone(context.getContext())

    def test_identity_includes_aliases_and_advertise(self) -> None:
        """The engine knows our listen, advertised and alias names."""
        from dataclasses import replace

        settings = defaults()
        core = replace(
            settings.core,
            alias=("sbc.test",),
            advertise=("198.51.100.1", 5060),
            listen=(Address("udp", "127.0.0.1", 5060),),
        )
        service = build_service(replace(settings, core=core), MemoryReactorClock())
        identity = service.engine.identity
        self.assertIn("sbc.test", identity.domains)
        self.assertIn("198.51.100.1", identity.hosts)

    def test_options_parse_config(self) -> None:
        """--config is the one option."""
        options = Options()
        options.parseOptions(["--config", "etc/sbc.ini"])
        self.assertEqual(options["config"], "etc/sbc.ini")

    def test_bad_config_exits_with_one_line(self) -> None:
        """A config fault raises SystemExit(1) after printing the line."""
        options = Options()
        options.parseOptions(["--config", "/nonexistent.ini"])
        with self.assertRaises(SystemExit) as info:
            makeService(options)
        self.assertEqual(info.exception.code, 1)

    def test_plugin_is_discoverable(self) -> None:
        """twistd finds the sbc plugin."""
        import twisted.plugins

        names = [p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)]
        self.assertIn("sbc", names)


class WiringTests(SynchronousTestCase):
    """Bound listeners become the proxy's sockets; the collector is tuned for load."""

    def test_bound_sockets_reach_the_proxy_and_the_engine(self) -> None:
        """Each bound listener is named in Via/Record-Route and counts as 'myself'."""
        reactor = MemoryReactorClock()
        service = build_service(defaults(), reactor)
        service.getServiceNamed("tcp:127.0.0.1:5060").privilegedStartService()
        self.assertIn(Address("tcp", "127.0.0.1", 5060), service.proxy.sockets)
        self.assertIn(5060, service.proxy.identity.ports)
        self.assertEqual(service.connector.listeners, [Address("tcp", "127.0.0.1", 5060)])

    def test_tune_garbage_collector(self) -> None:
        """Thresholds raised and start-up objects frozen (restored after the test)."""
        import gc

        from sbc.app.service import GC_THRESHOLDS, tune_garbage_collector

        before = gc.get_threshold()
        try:
            tune_garbage_collector()
            self.assertEqual(gc.get_threshold(), GC_THRESHOLDS)
            self.assertGreater(gc.get_freeze_count(), 0)
        finally:
            gc.unfreeze()
            gc.set_threshold(*before)


def test_reload_applies_policies_live_and_names_what_needs_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """[blocklist], rtp_policy and [dns] apply at once; the relay's ports need a restart
    and keep their running value."""
    path = tmp_path / "sbc.ini"
    path.write_text("[core]\nlisten = udp:127.0.0.1:5060\n")
    service = build_service(load(str(path)), MemoryReactorClock())
    path.write_text(
        "[core]\nlisten = udp:127.0.0.1:5060\n"
        "[blocklist]\nblst_503 = yes\n[rtp]\nrtp_policy = always\nport_min = 32000\n"
        "[dns]\ndns_srv_lb = no\n"
    )
    result = service.reload()
    assert result["reloaded"]
    assert set(result["changed"]) == {
        "[blocklist] blst_503",
        "[rtp] rtp_policy",
        "[dns] dns_srv_lb",
    }
    assert result["needs_restart"] == ["[rtp] port_min"]
    assert service.resolver.settings.dns_srv_lb is False
    assert service.settings.rtp.port_min == 30000
    assert service.proxy.blocklist.settings.blst_503
    assert service.proxy.settings.rtp_policy == "always"


def test_websocket_listeners_and_origin_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ws and wss listeners bind (wss with the [tls] certificate and http/1.1 by ALPN); a
    reload changes the Origin allow-list of the running factories (SIGHUP)."""
    from sbc.app.devcert import make_certificates

    certs = make_certificates(str(tmp_path / "tls"))
    head = (
        "[core]\nlisten = ws:127.0.0.1:8080 wss:127.0.0.1:8443\n"
        f"[tls]\ncertificate = {certs['certificate']}\nprivate_key = {certs['private_key']}\n"
    )
    path = tmp_path / "sbc.ini"
    path.write_text(head + "[websocket]\nallowed_origins = https://a.example\n")
    reactor = MemoryReactorClock()
    service = build_service(load(str(path)), reactor)
    service.privilegedStartService()
    assert [port for port, *_ in reactor.tcpServers] == [8080]
    assert [port for port, *_ in reactor.sslServers] == [8443]
    factory = service.websocket_factory("ws")
    assert factory.settings.origin_allowed("https://a.example")
    path.write_text(head + "[websocket]\nallowed_origins = https://b.example\n")
    assert "[websocket] allowed_origins" in service.reload()["changed"]
    assert factory.settings.origin_allowed("https://b.example")
    assert not service.websocket_factory("wss").settings.origin_allowed("https://a.example")


def test_hep_and_acc_are_taps_only_while_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The engine calls HEP capture and acc only while they are on: at start-up, after a
    reload and after C{siptrace.status}, the metrics always."""
    path = tmp_path / "sbc.ini"
    core = "[core]\nlisten = udp:127.0.0.1:5060\n"
    path.write_text(core)
    service = build_service(load(str(path)), MemoryReactorClock())
    assert service.engine.taps == [service.metrics]
    path.write_text(core + "[siptrace]\nduplicate_uri = udp:127.0.0.1:9060\n")
    assert service.reload()["reloaded"]
    assert service.engine.taps == [service.metrics, service.hep]
    commands = AdminCommands(service)
    commands.run("siptrace.status off")
    assert service.engine.taps == [service.metrics]
    commands.run("siptrace.status on")
    assert service.engine.taps == [service.metrics, service.hep]
    path.write_text(core + f"[acc]\nlog_file = {tmp_path / 'acc.json'}\n")
    assert service.reload()["reloaded"]
    assert service.engine.taps == [service.metrics, service.acc]
    path.write_text(core)
    assert service.reload()["reloaded"]
    assert service.engine.taps == [service.metrics]
    service.hep.close()
