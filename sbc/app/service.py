# -*- test-case-name: tests.app.test_service -*-
"""
The twistd plugin's C{Options} and C{makeService}: settings in, a L{MultiService} of
listeners around one engine out.  Binding happens in C{privilegedStartService}, so a port
that cannot be bound stops twistd before it daemonises.
"""

from __future__ import annotations

import sys
from typing import Optional

from twisted.application import service
from twisted.internet.interfaces import IListeningPort
from twisted.logger import LogLevel
from twisted.python import usage
from typing_extensions import override

from sbc import __version__
from sbc.app.config import ConfigError, Settings, defaults, load
from sbc.core.address import Address
from sbc.core.message import ParseLimits
from sbc.core.proxy import LocalIdentity
from sbc.net.engine import SipEngine
from sbc.net.log import logger, set_level
from sbc.net.stream import ConnectionTable, SipStreamFactory
from sbc.net.tls import server_options
from sbc.net.udp import SipDatagramProtocol

__all__ = ["Options", "makeService", "build_service", "SbcService", "ListenerService"]

log = logger(__name__)


class Options(usage.Options):
    """C{twistd sbc} options."""

    synopsis = "[--config FILE]"
    longdesc = "sbc, a session border controller.  Without --config it runs on built-in defaults."
    optParameters = [["config", "c", None, "INI configuration file"]]  # noqa: N815


class ListenerService(service.Service):
    """One SIP socket: UDP, TCP or TLS on one address."""

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
        if a.transport == "udp":
            self.port = reactor.listenUDP(
                a.port, SipDatagramProtocol(self.sbc.engine), interface=a.host
            )
        else:
            factory = SipStreamFactory(
                self.sbc.engine,
                a.transport,
                self.sbc.connections,
                reactor,
                self.sbc.settings.core.tcp_connection_lifetime,
            )
            if a.transport == "tcp":
                self.port = reactor.listenTCP(a.port, factory, interface=a.host)
            else:
                self.port = reactor.listenSSL(
                    a.port, factory, self.sbc.tls_options(), interface=a.host
                )

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


class SbcService(service.MultiService):
    """The root service: the engine, the connection table and one child per listener."""

    def __init__(self, settings: Settings, reactor) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        core = settings.core
        advertise = [core.advertise] if core.advertise else []
        identity = LocalIdentity.from_addresses(core.listen, advertise, core.alias)
        self.engine = SipEngine(identity, reactor, ParseLimits(core.max_message_size))
        self.connections = ConnectionTable()
        self._tls_options = None
        for address in core.listen:
            ListenerService(address, self).setServiceParent(self)

    def tls_options(self):  # type: ignore[no-untyped-def]
        """The TLS server context, built once."""
        if self._tls_options is None:
            self._tls_options = server_options(self.settings.tls)
        return self._tls_options

    @override
    def startService(self) -> None:
        log.info(
            "sbc {version} starting with {source}", version=__version__, source=self.settings.source
        )
        super().startService()

    @override
    def stopService(self):  # type: ignore[no-untyped-def]
        for connection in self.connections:
            connection.transport.loseConnection()
        log.info("statistics at stop: {statistics}", statistics=self.engine.stats.snapshot())
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
    return build_service(settings, reactor)
