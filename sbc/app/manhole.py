# -*- test-case-name: tests.app.test_manhole -*-
"""
The SSH manhole (twisted.conch): public-key login only, loopback by default, an
interactive Python shell whose namespace holds the live SBC and the admin commands, and a
scriptable form: C{ssh -p 2222 admin@127.0.0.1 stats} runs one command and prints JSON.

Also the optional Prometheus endpoint over L{sbc.app.metrics.SbcMetrics}.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from typing import Any, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import SSHPublicKeyChecker
from twisted.conch.insults import insults
from twisted.conch.ssh import keys, transport
from twisted.cred import portal
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.web import resource
from typing_extensions import override
from zope.interface import implementer

from sbc.core.address import Address, normalise_host
from sbc.core.blocklist import ADMIN
from sbc.core.syntax import is_digits
from sbc.core.uri import is_ip_literal
from sbc.net.log import logger

__all__ = [
    "AdminCommands",
    "AdminError",
    "manhole_factory",
    "load_or_create_host_key",
    "MetricsResource",
]

log = logger(__name__)


class AdminError(Exception):
    """A command the manhole cannot run (unknown name, bad arguments)."""


class AdminCommands:
    """
    The admin commands, mirroring Kamailio's RPCs (nathelper.enable_ping, dns.*,
    dst_blocklist.*, ...); each returns plain data (dicts, lists, numbers, strings) so it
    prints readably and serialises to JSON.

    @ivar sbc: the root service (L{sbc.app.service.SbcService}).
    """

    NAMES = (
        "stats",
        "registrations",
        "endpoints",
        "dialogs",
        "enable_ping",
        "reload",
        "settings",
        "dns_view",
        "dns_delete_all",
        "blocklist_view",
        "blocklist_add",
        "blocklist_delete_all",
        "rtp_sessions",
        "tls_reload",
        "siptrace",
        "help",
    )

    #: Kamailio's RPC names (kamcmd/kamctl) for the same commands.
    ALIASES = {
        "stats.get_statistics": "stats",
        "stats.fetch": "stats",
        "ul.dump": "registrations",
        "dlg.list": "dialogs",
        "nathelper.enable_ping": "enable_ping",
        "cfg.reload": "reload",
        "tls.reload": "tls_reload",
        "siptrace.status": "siptrace",
        "dns.view": "dns_view",
        "dns.delete_all": "dns_delete_all",
        "dst_blocklist.view": "blocklist_view",
        "dst_blocklist.add": "blocklist_add",
        "dst_blocklist.delete_all": "blocklist_delete_all",
        "rtpengine.show": "rtp_sessions",
    }

    def __init__(self, sbc: Any) -> None:
        self.sbc = sbc

    def _now(self) -> float:
        return self.sbc.reactor.seconds()

    def help(self) -> list[str]:
        """The commands there are."""
        return [
            f"{name}: {(getattr(self, name).__doc__ or '').strip().splitlines()[0]}"
            for name in self.NAMES
        ]

    def stats(self) -> dict[str, int]:
        """Every counter and gauge, Kamailio's names first-class."""
        sbc = self.sbc
        out = dict(sbc.engine.stats.snapshot())
        out.update(sbc.proxy.sizes())
        table = sbc.proxy.keepalive
        if table is not None:
            out.update(table.counts(self._now()))
        out["active_dialogs"] = len(sbc.proxy.dialogs)
        return dict(sorted(out.items()))

    def registrations(self) -> list[dict[str, Any]]:
        """Every live binding: user, contact, seconds left, where it registered from."""
        now = self._now()
        out = []
        for aor, b in self.sbc.registrar.all_bindings():
            if b.expires_at <= now:
                continue
            out.append(
                {
                    "aor": aor,
                    "contact": str(b.uri),
                    "expires": b.expires_in(now),
                    "q": b.q,
                    "source": str(b.source),
                    "received": str(b.received) if b.received else None,
                    "path": [str(p) for p in b.path],
                }
            )
        return out

    def endpoints(self) -> list[dict[str, Any]]:
        """The keepalive table: endpoint, socket, conditions."""
        table = self.sbc.proxy.keepalive
        if table is None:
            return []
        now = self._now()
        return [
            {
                "endpoint": str(e.address),
                "socket": str(e.local) if e.local else None,
                "registered_for": max(0, int(e.registered_until - now))
                if e.registered_until
                else 0,
                "subscribed_for": max(0, int(e.subscribed_until - now))
                if e.subscribed_until
                else 0,
                "dialogs": len(e.dialogs),
                "natted": e.natted,
            }
            for e in table.endpoints.values()
        ]

    def dialogs(self) -> list[dict[str, Any]]:
        """Every early or confirmed dialog."""
        now = self._now()
        return [
            {
                "call_id": d.call_id,
                "caller_tag": d.caller_tag,
                "callee_tag": d.callee_tag,
                "state": d.state.value,
                "age": int(now - d.created_at),
            }
            for d in self.sbc.proxy.dialogs
        ]

    def enable_ping(self, on: Any = 1) -> dict[str, Any]:
        """Pause (0) or resume (1) keepalive pings (nathelper.enable_ping)."""
        keepalive = getattr(self.sbc, "keepalive", None)
        if keepalive is None or not keepalive.table.settings.enabled:
            raise AdminError("NATping disabled")  # Kamailio's fault text
        keepalive.enable_ping(bool(int(on)))
        return {"enabled": keepalive.table.enabled}

    def reload(self) -> dict[str, Any]:
        """Re-read the configuration file and apply what can change live."""
        return self.sbc.reload()

    def settings(self) -> dict[str, Any]:
        """The settings in force (timers, keepalive, log level)."""
        return self.sbc.effective_settings()

    def dns_view(self) -> list[dict[str, Any]]:
        """Live DNS cache entries (dns.view): name, type, seconds left, negative or not."""
        resolver = getattr(self.sbc, "resolver", None)
        if resolver is None:
            raise AdminError("DNS cache disabled")
        return list(resolver.view())

    def dns_delete_all(self) -> dict[str, Any]:
        """Empty the DNS cache (dns.delete_all)."""
        resolver = getattr(self.sbc, "resolver", None)
        if resolver is None:
            raise AdminError("DNS cache disabled")
        resolver.clear()
        return {"deleted": True}

    def _blocklist(self) -> Any:
        blocklist = self.sbc.proxy.blocklist
        if not blocklist.settings.use_dst_blocklist:
            raise AdminError("dst blocklist support disabled")  # Kamailio's fault text
        return blocklist

    def blocklist_view(self) -> list[dict[str, Any]]:
        """Blocked destinations (dst_blocklist.view): transport, host, port, seconds left,
        reasons."""
        return list(self._blocklist().view(self._now()))

    def blocklist_add(self, host: str, port: Any = 5060, proto: Any = 0) -> dict[str, Any]:
        """Block host port [proto 0 any, 1 udp, 2 tcp, 3 tls] for dst_blocklist_expire
        seconds (dst_blocklist.add)."""
        transports = {"0": "", "1": "udp", "2": "tcp", "3": "tls"}
        transport = transports.get(str(proto))
        if transport is None or not is_digits(str(port)) or not 0 < int(port) < 65536:
            raise AdminError("expected: host port [proto 0-3]")
        if not is_ip_literal(host):
            raise AdminError(f"expected an IP address, got {host!r}")
        target = Address(transport, normalise_host(host), int(port))
        self._blocklist().add(target, ADMIN, self._now())
        return {"blocked": f"{transport or 'any'}:{target.host}:{target.port}"}

    def blocklist_delete_all(self) -> dict[str, Any]:
        """Unblock every destination (dst_blocklist.delete_all)."""
        self._blocklist().clear()
        return {"deleted": True}

    def rtp_sessions(self) -> list[dict[str, Any]]:
        """Calls whose media sbc anchors: legs, ports, latched addresses, counters."""
        media = getattr(self.sbc, "media", None)
        if media is None:
            raise AdminError("media anchoring is off ([rtp] engine = off)")
        return list(media.sessions())

    def tls_reload(self) -> dict[str, Any]:
        """Read the TLS certificate, key and CA files again (tls.reload)."""
        return self.sbc.reload_tls()

    def siptrace(self, on: Any = None) -> dict[str, Any]:
        """Show, or switch on (1) / off (0), HEP capture (siptrace.status)."""
        hep = self.sbc.hep
        if on is not None:
            if str(on).lower() not in ("0", "1", "on", "off"):
                raise AdminError("expected: siptrace [on|off]")
            hep.configure(replace(hep.settings, trace_on=str(on).lower() in ("1", "on")))
        target = hep.settings.duplicate_uri
        return {
            "trace_on": hep.settings.trace_on,
            "duplicate_uri": str(target) if target else None,
            "hep_capture_id": hep.settings.hep_capture_id,
        }

    def run(self, text: str) -> Any:
        """Run C{name}, C{name(args)} or C{name arg ...} (the scriptable form); Kamailio's
        RPC names (C{ul.dump}, C{dlg.list}, C{stats.get_statistics all}, ...) work too."""
        m = re.fullmatch(r"\s*([\w.]+)\s*(?:\((.*)\))?\s*(.*?)\s*", text)
        name = m.group(1) if m is not None else ""
        name = self.ALIASES.get(name, name)
        if m is None or name not in self.NAMES:
            raise AdminError(f"unknown command {text.strip()!r}; try help")
        raw = m.group(2) if m.group(2) is not None else m.group(3)
        args = [a.strip().strip("'\"") for a in re.split(r"[,\s]+", raw or "") if a.strip()]
        if m.group(1).startswith("stats.") and args in (["all"], ["all:"]):
            args = []  # stats.get_statistics all
        try:
            return getattr(self, name)(*args)
        except TypeError as error:
            raise AdminError(str(error)) from None

    def namespace(self) -> dict[str, Any]:
        """What the interactive shell sees: the commands, and the live service as C{sbc}."""
        names: dict[str, Any] = {name: getattr(self, name) for name in self.NAMES}
        names["sbc"] = self.sbc
        return names


class _AdminSession(manhole_ssh.TerminalSession):
    """A manhole session that can also run one command (C{ssh host stats})."""

    commands: AdminCommands

    @override
    def execCommand(self, proto, cmd):  # type: ignore[no-untyped-def]
        try:
            result = self.commands.run(cmd.decode("utf-8", "replace"))
            proto.write((json.dumps(result, indent=2, default=str) + "\n").encode())
            reason = Failure(ProcessDone(None))
        except AdminError as error:
            proto.write((json.dumps({"error": str(error)}) + "\n").encode())
            reason = Failure(ProcessTerminated(exitCode=1))
        except Exception as error:
            log.failure("admin command {command!r} failed", command=cmd)
            proto.write((json.dumps({"error": f"internal error: {error}"}) + "\n").encode())
            reason = Failure(ProcessTerminated(exitCode=2))
        proto.processEnded(reason)

    @override
    def eofReceived(self) -> None:
        pass

    @override
    def windowChanged(self, new_window_size) -> None:  # type: ignore[no-untyped-def]
        pass


class _AdminRealm(manhole_ssh.TerminalRealm):
    sessionFactory = _AdminSession  # noqa: N815 - Twisted's name

    def __init__(self, commands: AdminCommands) -> None:
        super().__init__()
        self.commands = commands
        namespace = commands.namespace()
        self.chainedProtocolFactory = lambda: insults.ServerProtocol(  # type: ignore[assignment]
            manhole.ColoredManhole, namespace
        )

    @override
    def _getAvatar(self, avatar_id):  # type: ignore[no-untyped-def]
        user = super()._getAvatar(avatar_id)
        from twisted.conch.interfaces import ISession

        session = user.original.getComponent(ISession)
        session.commands = self.commands
        return user


class _AuthorizedKeysFile:
    """Public keys from an OpenSSH C{authorized_keys} file, for any user name; the file is
    read at each login, so keys can be added or revoked without a restart."""

    def __init__(self, path: str) -> None:
        self.path = path

    def getAuthorizedKeys(self, username: bytes) -> list[keys.Key]:  # noqa: N802 - IAuthorizedKeysDB
        found = []
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as error:
            log.warn("cannot read {path}: {error}", path=self.path, error=error)
            return []
        for line in lines:
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            try:
                found.append(keys.Key.fromString(line))
            except (keys.BadKeyError, ValueError, IndexError):
                continue
        return found


def load_or_create_host_key(path: Optional[str]) -> keys.Key:
    """The SSH host key from C{path}, created (Ed25519, mode 0600) when missing; without a
    path a key for this run only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if path and os.path.exists(path):
        return keys.Key.fromFile(path)
    private = ed25519.Ed25519PrivateKey.generate()
    if path:
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        log.info("created SSH host key {path}", path=path)
    return keys.Key(private)


class _AdminTransport(transport.SSHServerTransport):
    """The server side of an admin connection: a client's normal goodbye is not an error."""

    @override
    def receiveError(self, reasonCode: int, description: bytes) -> None:
        """An SSH_MSG_DISCONNECT from the client (RFC 4253 §11.1).  Reason 11,
        SSH_DISCONNECT_BY_APPLICATION, is how C{ssh host command} ends every scripted run,
        so it is logged at debug level; any other reason is still logged as an error."""
        if reasonCode == transport.DISCONNECT_BY_APPLICATION:
            log.debug(
                "manhole client disconnected: {description}",
                description=description.decode("utf-8", "replace")[:200],
            )
            return
        super().receiveError(reasonCode, description)


class _AdminFactory(manhole_ssh.ConchFactory):
    """L{manhole_ssh.ConchFactory} with L{_AdminTransport} as its protocol."""

    protocol = _AdminTransport


def manhole_factory(
    commands: AdminCommands, authorized_keys: str, host_key: Optional[str]
) -> manhole_ssh.ConchFactory:
    """The SSH factory: public keys from C{authorized_keys} are the only way in."""
    checker = SSHPublicKeyChecker(_AuthorizedKeysFile(authorized_keys))
    factory = _AdminFactory(portal.Portal(_AdminRealm(commands), [checker]))
    key = load_or_create_host_key(host_key)
    name = key.sshType()
    # Instance dictionaries: ConchFactory's class-level ones would be shared.
    factory.publicKeys = {name: key.public()}
    factory.privateKeys = {name: key}
    return factory


@implementer(resource.IResource)
class MetricsResource(resource.Resource):
    """C{GET /metrics}: the registry in the Prometheus text format.

    Rendered on the reactor thread with C{prometheus_client.generate_latest}:
    C{prometheus_client.twisted.MetricsResource} would collect in a thread pool, while the
    levels it reads (dialogs, bindings, sessions) change on the reactor thread."""

    isLeaf = True  # noqa: N815 - Twisted's name

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    @override
    def render_GET(self, request) -> bytes:  # type: ignore[no-untyped-def]
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)
