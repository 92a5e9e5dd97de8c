# -*- test-case-name: tests.app.test_service -*-
"""
The twistd plugin's C{Options} and C{makeService}: settings in, a L{MultiService} of
listeners around one proxy core and engine out.  Binding happens in
C{privilegedStartService}, so a port that cannot be bound stops twistd before it daemonises.
"""

from __future__ import annotations

import gc
import random
import signal
import socket
import sys
from dataclasses import replace
from typing import Any, Optional

from twisted.application import service, strports
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.web.server import Site
from typing_extensions import override

from sbc import __version__
from sbc.app import reload as reload_keys
from sbc.app.acc import CallAccounting
from sbc.app.config import ConfigError, Settings, defaults, load
from sbc.app.gcwatch import GcWatch
from sbc.app.manhole import AdminCommands, MetricsResource, manhole_factory
from sbc.app.metrics import SbcMetrics
from sbc.app.wiring import (
    client_tls_options,
    digest_auth,
    keepalive_settings,
    media_backend,
    proxy_settings,
    resolver_settings,
    route_script,
    route_signer,
)
from sbc.core.address import Address
from sbc.core.identity import LocalIdentity
from sbc.core.keepalive import KeepaliveTable
from sbc.core.message import ParseLimits
from sbc.core.pike import Pike
from sbc.core.proxy import Proxy
from sbc.core.registrar import Registrar
from sbc.net.engine import SipEngine
from sbc.net.hep import HepSender
from sbc.net.keepalive import KeepaliveService
from sbc.net.log import logger, set_level
from sbc.net.probe import UnreachableProbe
from sbc.net.relay import RtpRelay
from sbc.net.resolver import SipResolver
from sbc.net.sourceaddr import source_address
from sbc.net.stream import ConnectionTable, SipStreamFactory, StreamConnector
from sbc.net.tls import ReloadableServerOptions
from sbc.net.udp import SipDatagramProtocol
from sbc.net.websocket import SipWebSocketFactory

__all__ = [
    "Options",
    "makeService",
    "build_service",
    "proxy_settings",
    "SbcService",
    "ListenerService",
]

log = logger(__name__)


class Options(usage.Options):
    """C{twistd sbc} options."""

    synopsis = "[--config FILE]"
    longdesc = "sbc, a session border controller.  Without --config it runs on built-in defaults."
    optParameters = [["config", "c", None, "INI configuration file"]]  # noqa: N815


class ListenerService(service.Service):
    """One SIP socket: UDP, TCP, TLS, WS or WSS on one address."""

    def __init__(self, address: Address, sbc: SbcService) -> None:
        self.address = address
        self.sbc = sbc
        self.port: Optional[IListeningPort] = None
        self.setName(str(address))

    def _bind(self) -> None:
        if self.port is not None:
            return
        reactor = self.sbc.reactor
        a = self.address
        protocol = None
        if a.transport == "udp":
            protocol = SipDatagramProtocol(self.sbc.engine)
            self.port = reactor.listenUDP(a.port, protocol, interface=a.host)
            _enlarge_receive_buffer(self.port)
        elif a.transport == "tcp":
            self.port = reactor.listenTCP(a.port, self.sbc.stream_factory("tcp"), interface=a.host)
        elif a.transport == "ws":
            self.port = reactor.listenTCP(
                a.port, self.sbc.websocket_factory("ws"), interface=a.host
            )
        elif a.transport == "wss":
            # RFC 6455 runs over HTTP/1.1: what browsers must be able to pick by ALPN.
            self.port = reactor.listenSSL(
                a.port,
                self.sbc.websocket_factory("wss"),
                self.sbc.tls_options((b"http/1.1",)),
                interface=a.host,
            )
        else:
            self.port = reactor.listenSSL(
                a.port, self.sbc.stream_factory("tls"), self.sbc.tls_options(), interface=a.host
            )
        self.sbc.socket_bound(self.bound, protocol)

    @property
    def bound(self) -> Address:
        """The address actually bound (port 0 resolved)."""
        assert self.port is not None
        return Address(self.address.transport, self.address.host, self.port.getHost().port)

    @override
    def privilegedStartService(self) -> None:
        self._bind()
        super().privilegedStartService()

    @override
    def startService(self) -> None:
        self._bind()
        super().startService()
        log.info("listening on {address}", address=self.bound)

    @override
    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


#: Seconds between two looks at the TLS certificate and key files (Kamailio's tls module
#: reloads on C{tls.reload} only; sbc also notices a renewed certificate by itself).
TLS_WATCH_INTERVAL = 2.0

#: Seconds a stopping sbc waits for open transactions to finish.
SHUTDOWN_GRACE = 5.0

#: UDP receive buffer asked for: absorbs bursts while the reactor is busy (the kernel may
#: cap it at net.core.rmem_max).
UDP_RECEIVE_BUFFER = 4 << 20


def _enlarge_receive_buffer(port: object) -> None:
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    except OSError as error:
        log.info("cannot enlarge the UDP receive buffer: {error}", error=error)


class SbcService(service.MultiService):
    """The root service: the proxy core, the engine, the connection table and one child
    per listener."""

    def __init__(self, settings: Settings, reactor) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        core = settings.core
        advertise = [core.advertise] if core.advertise else []
        identity = LocalIdentity.from_addresses(core.listen, advertise, core.alias)
        self.registrar = Registrar(settings.registrar)
        keepalive = keepalive_settings(settings)
        wants_keepalive = keepalive.enabled or bool(settings.nat_traversal.keepalive_state_file)
        keepalive_table = KeepaliveTable(keepalive, random.Random()) if wants_keepalive else None
        self.proxy = Proxy(
            identity,
            [],
            self.registrar,
            proxy_settings(settings),
            # Branch ids need to be unique, not secret: each carries a MAC made with the
            # route signer's key, so a seeded generator (no system call per branch) will do.
            random.Random(),
            router=route_script(settings),
            signer=route_signer(settings),
            auth=digest_auth(settings.auth) if settings.auth.enabled else None,
            keepalive=keepalive_table,
            resolves_names=True,
            anchors_media=settings.rtp.engine != "off",
            source_for=source_address,
        )
        limits = ParseLimits(core.max_message_size, core.max_headers, core.max_header_length)
        self.engine = SipEngine(self.proxy, reactor, limits)
        self.engine.stun_enabled = settings.stun.stun_allow_stun
        self.engine.pike = Pike(settings.pike)
        self.engine.stun_fingerprint = settings.stun.stun_allow_fp
        self.engine.probe = UnreachableProbe(reactor, self.engine.unreachable)
        self.resolver = SipResolver(
            resolver_settings(settings),
            tuple(sorted({a.transport for a in core.listen})),
            reactor=reactor,
            stats=self.engine.stats,
        )
        self.engine.resolver = self.resolver
        self.media = media_backend(settings, reactor, self.engine)
        if self.media is not None:
            self.engine.media = self.media
            self.media.setServiceParent(self)  # type: ignore[attr-defined]
        self.connections = ConnectionTable()
        self._tls_options: Optional[ReloadableServerOptions] = None
        self._tls_watch: Optional[LoopingCall] = None
        self._stream_factories: dict[str, SipStreamFactory] = {}
        self._websocket_factories: dict[str, SipWebSocketFactory] = {}
        wants_tls = any(a.transport == "tls" for a in core.listen)
        self.connector = StreamConnector(
            reactor,
            self.stream_factory("tcp"),
            client_tls_options(settings, self.engine.tls_names) if wants_tls else None,
        )
        self.engine.send_stream = self.connector.send
        self.connector.on_failure = self.engine.transport_failed
        self.engine.send_stream_existing = self.connector.send_existing
        self.engine.stream_local = self._stream_local
        if keepalive_table is not None:
            self.keepalive = KeepaliveService(
                keepalive_table,
                self.engine,
                self.registrar,
                reactor,
                settings.nat_traversal.keepalive_state_file,
            )
            self.keepalive.setServiceParent(self)
        for address in core.listen:
            ListenerService(address, self).setServiceParent(self)
        self.commands = AdminCommands(self)
        self.metrics = SbcMetrics(self.engine.stats.snapshot, self.levels)
        self.engine.taps.append(self.metrics)
        self.engine.lookup_listeners.append(self.metrics.dns_lookup_took)
        # HEP and acc are among the taps only while they are on (they see to it).
        self.hep = HepSender(settings.siptrace, self.engine.stats, self.engine.taps)
        if isinstance(self.media, RtpRelay):
            self.media.rtcp_listeners.append(self.hep.rtcp)
        self.acc = CallAccounting(
            settings.acc, reactor, self._media_stats, self.engine.stats, self.engine.taps
        )
        self.acc.setServiceParent(self)
        self.engine.dialog_listeners.append(self.acc.dialog_event)
        self._add_manhole(settings)
        self.handle_signals = False

    def _add_manhole(self, settings: Settings) -> None:
        man = settings.manhole
        if man.listen and man.authorized_keys:
            factory = manhole_factory(self.commands, man.authorized_keys, man.host_key)
            ssh = strports.service(man.listen, factory)
            ssh.setName("manhole")
            ssh.setServiceParent(self)
        elif man.listen:
            log.info("manhole off: [manhole] authorized_keys is not set")
        if man.metrics_listen:
            metrics = strports.service(
                man.metrics_listen, Site(MetricsResource(self.metrics.registry))
            )
            metrics.setName("metrics")
            metrics.setServiceParent(self)

    def _stream_local(self, peer: Address) -> Optional[tuple[str, int]]:
        """Our end of the connection held with C{peer} (for HEP capture)."""
        connection = self.connections.get(peer.transport, peer.host, peer.port)
        transport = connection.transport if connection is not None else None
        if transport is None:
            return None
        host = transport.getHost()
        return (host.host, host.port)

    def _media_stats(self, call_id: str) -> Optional[dict]:
        """The built-in relay's counters of one call (for its call record)."""
        if isinstance(self.media, RtpRelay):
            session = self.media.table.get(call_id)
            return session.as_dict() if session is not None else None
        return None

    def levels(self) -> dict[str, int]:
        """The gauges of C{/metrics}: how much state sbc holds now."""
        sizes = self.proxy.sizes()
        table = self.proxy.keepalive
        media = self.media
        return {
            "registrations": sizes["registrations"],
            "dialogs": sizes["dialogs"],
            "server_transactions": sizes["server_transactions"],
            "client_transactions": sizes["client_transactions"],
            "keepalive_endpoints": len(table.endpoints) if table is not None else 0,
            "media_sessions": len(media.sessions()) if media is not None else 0,
            "blocklist_entries": sizes["blocklist"],
        }

    def stream_factory(self, transport: str) -> SipStreamFactory:
        """The factory for incoming connections of one transport (shared by listeners)."""
        factory = self._stream_factories.get(transport)
        if factory is None:
            factory = SipStreamFactory(
                self.engine,
                transport,
                self.connections,
                self.reactor,
                self.settings.core.tcp_connection_lifetime,
            )
            factory.max_connections = self.settings.core.tcp_max_connections
            factory.max_connections_per_source = self.settings.core.tcp_max_connections_per_source
            self._stream_factories[transport] = factory
        return factory

    def websocket_factory(self, transport: str) -> SipWebSocketFactory:
        """The factory for WebSocket connections (RFC 7118) of C{ws} or C{wss}."""
        factory = self._websocket_factories.get(transport)
        if factory is None:
            factory = SipWebSocketFactory(
                self.engine,
                transport,
                self.connections,
                self.reactor,
                self.settings.core.tcp_connection_lifetime,
                self.settings.websocket,
            )
            factory.max_connections = self.settings.core.tcp_max_connections
            factory.max_connections_per_source = self.settings.core.tcp_max_connections_per_source
            self._websocket_factories[transport] = factory
        return factory

    def socket_bound(self, address: Address, datagram: Optional[SipDatagramProtocol]) -> None:
        """A listener is bound: the proxy names it in Via/Record-Route, the engine sends
        from it, and its actual port counts as ours."""
        proxy = self.proxy
        if address not in proxy.sockets:
            proxy.sockets.append(address)
        identity = proxy.identity
        proxy.identity = LocalIdentity(
            identity.hosts | {address.host}, identity.ports | {address.port}, identity.domains
        )
        if datagram is not None:
            self.engine.datagram_sockets[address] = datagram.send
        else:
            self.connector.listeners.append(address)

    def effective_settings(self) -> dict:
        """What is in force now (for the settings() admin command)."""
        proxy = self.proxy.settings
        keepalive = self.proxy.keepalive.settings if self.proxy.keepalive else None
        return {
            "source": self.settings.source,
            "log_level": self.settings.core.log_level,
            "tm": {
                "t1": proxy.timers.t1,
                "t2": proxy.timers.t2,
                "fr_timer": proxy.timers.fr_timer,
                "fr_inv_timer": proxy.timers.fr_inv_timer,
                "wt_timer": proxy.timers.wait,
            },
            "keepalive": {
                "style": keepalive.style,
                "interval": keepalive.interval,
                "method": keepalive.method,
            }
            if keepalive
            else None,
        }

    def reload(self) -> dict:
        """Re-read the configuration file and apply every key that can change live; keys
        that need a restart keep their running value and are named in the log line and
        the reply.  A bad file changes nothing."""
        source = self.settings.source
        if source == "<defaults>":
            return {"reloaded": False, "reason": "running on built-in defaults"}
        try:
            new = load(source)
        except ConfigError as error:
            log.error("reload refused: {error}", error=str(error))
            return {"reloaded": False, "reason": str(error)}
        running = self.proxy.keepalive is not None
        effective, applied, restart = reload_keys.split(self.settings, new, running)
        notes = self._apply(self.settings, effective)
        if effective.core.route_script and ("core", "route_script") not in applied:
            applied.append(("core", "route_script"))  # the script file is read again
        tls_error = notes.get("tls")
        if tls_error:
            restart += [k for k in applied if k[0] == "tls"]
            applied = [k for k in applied if k[0] != "tls"]
            effective = replace(effective, tls=self.settings.tls)
        self.settings = effective
        changed = [reload_keys.name(*k) for k in applied]
        needs = [reload_keys.name(*k) for k in restart]
        for section, key in restart:
            log.warn(
                "reload: [{section}] {key} needs a restart ({why}); still running with "
                "the old value",
                section=section,
                key=key,
                why=tls_error
                if section == "tls" and tls_error
                else reload_keys.why(section, key, running),
            )
        log.info(
            "reloaded {source}: {changed}; needs a restart: {restart}",
            source=source,
            changed=", ".join(changed) or "nothing changed",
            restart=", ".join(needs) or "nothing",
        )
        return {"reloaded": True, "changed": changed, "needs_restart": needs, **notes}

    def tls_options(self, alpn: tuple[bytes, ...] = ()) -> Any:
        """The TLS server context of every listener, built once, reloadable; with C{alpn},
        the same certificate agreeing to those protocols (WSS: http/1.1)."""
        if self._tls_options is None:
            self._tls_options = ReloadableServerOptions(self.settings.tls)
        return self._tls_options.for_alpn(alpn) if alpn else self._tls_options

    def _apply(self, old: Settings, new: Settings) -> dict:
        """Put C{new} in force in every running part (keys needing a restart already
        carry their running values in C{new})."""
        notes: dict = {}
        core = new.core
        set_level(LogLevel.levelWithName(core.log_level))
        self.proxy.settings = proxy_settings(new)
        if core.route_script or old.core.route_script:
            self.proxy.router = route_script(new)
        identity = self.proxy.identity
        self.proxy.identity = LocalIdentity(
            identity.hosts, identity.ports, frozenset(d.lower() for d in core.alias)
        )
        self.proxy.blocklist.settings = new.blocklist
        self.registrar.settings = new.registrar
        if not new.auth.enabled:
            self.proxy.auth = None
        elif self.proxy.auth is None:
            self.proxy.auth = digest_auth(new.auth)
        else:
            # Same nonce secret and replay memory: challenges issued before the reload
            # stay answerable; users and realm are the file's now.
            fresh = digest_auth(new.auth)
            self.proxy.auth.settings = fresh.settings
            self.proxy.auth.credentials = fresh.credentials
        self.engine.limits = ParseLimits(
            core.max_message_size, core.max_headers, core.max_header_length
        )
        self.engine.stun_enabled = new.stun.stun_allow_stun
        self.engine.stun_fingerprint = new.stun.stun_allow_fp
        if old.pike != new.pike:
            self.engine.pike = Pike(new.pike)
        if old.dns != new.dns:
            self.resolver = SipResolver(
                resolver_settings(new),
                tuple(sorted({a.transport for a in core.listen})),
                reactor=self.reactor,
                stats=self.engine.stats,
            )
            self.engine.resolver = self.resolver
        for factory in self._stream_factories.values():
            factory.lifetime = core.tcp_connection_lifetime
            factory.max_connections = core.tcp_max_connections
            factory.max_connections_per_source = core.tcp_max_connections_per_source
        if self.proxy.keepalive is not None:
            self.proxy.keepalive.reconfigure(keepalive_settings(new))
        if old.siptrace != new.siptrace:
            self.hep.configure(new.siptrace)
        # The Origin allow-list and keepalives apply to the next upgrade and ping.
        for factory in self._websocket_factories.values():
            factory.settings = new.websocket
        self.acc.configure(new.acc)  # reopens the log file (logrotate)
        if self._tls_options is not None and (
            old.tls != new.tls or self._tls_options.files_changed()
        ):
            # Kamailio's tls.reload on SIGHUP: the files are read again even when their
            # names did not change (a renewed certificate in place).
            error = self._tls_options.reload(new.tls)
            if error:
                notes["tls"] = f"kept the old certificate: {error}"
                log.error("TLS reload failed, keeping the old certificate: {error}", error=error)
            else:
                log.info("TLS certificate reloaded (reload)")
        if old.tls != new.tls:
            if self.connector.tls_options is not None:
                self.connector.tls_options = client_tls_options(new, self.engine.tls_names)
        return notes

    def reload_tls(self, reason: str = "tls.reload") -> dict:
        """Read the certificate, key and CA files again (Kamailio's C{tls.reload}): new
        handshakes use them, established connections keep theirs; a file that does not
        load keeps the old certificate."""
        if self._tls_options is None:
            return {"reloaded": False, "reason": "no tls listener"}
        error = self._tls_options.reload()
        if error:
            log.error(
                "TLS reload ({reason}) failed, keeping the old certificate: {error}",
                reason=reason,
                error=error,
            )
            return {"reloaded": False, "reason": error}
        log.info("TLS certificate reloaded ({reason})", reason=reason)
        return {"reloaded": True}

    def _watch_tls_files(self) -> None:
        """Reload the TLS context when its files change (checked every few seconds)."""
        try:
            if self._tls_options is not None and self._tls_options.files_changed():
                self.reload_tls("files changed")
        except Exception:
            log.failure("watching the TLS files failed")

    @override
    def startService(self) -> None:
        if self.handle_signals:
            signal.signal(signal.SIGHUP, self._sighup)
        log.info(
            "sbc {version} starting with {source}",
            version=__version__,
            source=self.settings.source,
        )
        super().startService()
        for factory in self._websocket_factories.values():
            factory.start_keepalive()
        if self._tls_options is not None:
            self._tls_watch = LoopingCall(self._watch_tls_files)
            self._tls_watch.clock = self.reactor
            self._tls_watch.start(TLS_WATCH_INTERVAL, now=False)

    def _sighup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    @override
    def stopService(self):  # type: ignore[no-untyped-def]
        """Drain first: refuse new calls, let transactions finish (at most
        SHUTDOWN_GRACE seconds), then save state and stop the listeners."""
        self.proxy.draining = True
        started = self.reactor.seconds()
        done = defer.Deferred()

        def check() -> None:
            busy = self.proxy.sizes()["forwardings"]
            if busy and self.reactor.seconds() - started < SHUTDOWN_GRACE:
                self.reactor.callLater(0.1, check)
                return
            if busy:
                log.warn("stopping with {count} transaction(s) still open", count=busy)
            done.callback(None)

        check()
        return done.addCallback(lambda _: self._stop_now())

    def _stop_now(self):  # type: ignore[no-untyped-def]
        if self._tls_watch is not None and self._tls_watch.running:
            self._tls_watch.stop()
        self.hep.close()
        self.engine.timer.cancel()
        for factory in self._websocket_factories.values():
            factory.stop_keepalive()
        if self.engine.probe is not None:
            self.engine.probe.stop()
        for connection in self.connections:
            connection.transport.loseConnection()
        log.info("statistics at stop: {statistics}", statistics=self.commands.stats())
        return super().stopService()


def build_service(settings: Settings, reactor) -> SbcService:  # type: ignore[no-untyped-def]
    """Build the service tree for C{settings} without starting it."""
    set_level(LogLevel.levelWithName(settings.core.log_level))
    return SbcService(settings, reactor)


def makeService(options: Options) -> SbcService:  # noqa: N802 - twistd's name
    """twistd entry point: load the configuration (one line and exit 1 on a fault)."""
    from twisted.internet import reactor

    try:
        settings = load(options["config"]) if options["config"] else defaults()
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        raise SystemExit(1) from None
    service = build_service(settings, reactor)
    service.handle_signals = True
    tune_garbage_collector()
    GcWatch(
        service.metrics.gc_pause.observe,
        reactor=reactor,
        busy=lambda: service.proxy.sizes()["server_transactions"],
    ).setServiceParent(service)
    return service


#: Collector thresholds.  A young collection scans the objects made since the last one
#: that are still alive; in a proxy that is each call's transaction state, alive while
#: its transactions linger, so the scan time is set by threshold 0, not by garbage.  A
#: small young generation keeps every automatic collection near a millisecond (measured
#: over 45 s of calls at 800 calls/s: max 3.2 ms; Python's 700/10/10 and the 100000/50/100
#: used before both reached over 200 ms).  What survives a young collection is not scanned
#: again automatically: a middle collection would only walk the same live call state a
#: second time (bench/engineflow.py, 8,000 calls: 64-81 µs per call in the collector with
#: a middle collection every second young one, 35-36 without; the longest pause 8-9 ms
#: against 3 ms), and a full one walks every live transaction, dialog and binding (850 ms
#: with 800 calls/s in the window).  The core makes no reference cycles per call
#: (tests/core/test_proxy_leak.py checks), so what the young collections miss is rare;
#: L{GcWatch} runs a full collection only when the process has grown well past its size
#: after the last one.
GC_THRESHOLDS = (500, 1_000_000_000, 1_000_000_000)


def tune_garbage_collector() -> None:
    """Never scan what start-up built, and keep every automatic collection short (see
    L{GC_THRESHOLDS})."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
