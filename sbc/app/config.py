# -*- test-case-name: tests.app.test_config -*-
"""
INI configuration into frozen, typed settings (the configuration contract).

Sections are named after the Kamailio module whose behaviour they configure and keys carry
Kamailio's parameter names.  Every key has a default, so a file holding only
C{[core] listen} is complete.  Any fault stops start-up with one line::

    etc/sbc.ini:12: [core] listen: expected proto:ip:port with proto udp, tcp or tls, got 'x'
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from sbc.app.routescript import ScriptLoadError, load_script
from sbc.core.acc import AccSettings
from sbc.core.address import Address, parse_address
from sbc.core.auth import AuthSettings
from sbc.core.blocklist import METHOD_BITS, BlocklistSettings
from sbc.core.dialog import DialogSettings
from sbc.core.errors import ParseError
from sbc.core.hep import SiptraceSettings
from sbc.core.nat import DEFAULT_PRIVATE_RANGES
from sbc.core.pike import PikeSettings
from sbc.core.proxy import failover_codes
from sbc.core.registrar import RegistrarSettings
from sbc.core.relaypolicy import PermissionsSettings, TrustedPeers, parse_trusted
from sbc.core.syntax import is_digits
from sbc.core.uri import SipUri, is_ip_literal, parse_uri
from sbc.net.tls import TLS_METHODS, TlsSettings, server_options
from sbc.net.websocket import WebSocketSettings

__all__ = [
    "ConfigError",
    "CoreSettings",
    "Settings",
    "load",
    "defaults",
    "LOG_LEVELS",
    "media_address",
]


class ConfigError(Exception):
    """A configuration fault; C{str()} is the one line to print."""


#: C{log_level} names, plus Kamailio's numeric C{debug} levels mapped onto them.
LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "notice": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "critical": "critical",
    "3": "debug",
    "2": "info",
    "1": "info",
    "0": "warn",
    "-1": "error",
    "-2": "critical",
    "-3": "critical",
}


@dataclass(frozen=True)
class CoreSettings:
    """The C{[core]} section."""

    listen: tuple[Address, ...] = (
        Address("udp", "127.0.0.1", 5060),
        Address("tcp", "127.0.0.1", 5060),
    )
    advertise: Optional[tuple[str, Optional[int]]] = None
    alias: tuple[str, ...] = ()
    outbound_proxy: Optional[SipUri] = None
    max_message_size: int = 65535
    log_level: str = "info"
    tcp_connection_lifetime: int = 120
    max_headers: int = 256
    max_header_length: int = 8192
    tcp_max_connections: int = 2048
    tcp_max_connections_per_source: int = 64
    route_script: Optional[str] = None
    #: Relay requests for other domains from anyone: an open proxy (dangerous).
    allow_relay: bool = False


@dataclass(frozen=True)
class TmSettings:
    """The C{[tm]} section; durations in milliseconds as in Kamailio."""

    fr_timer: int = 30000
    fr_inv_timer: int = 120000
    retr_timer1: int = 500
    retr_timer2: int = 4000
    max_inv_lifetime: int = 180000
    max_noninv_lifetime: int = 32000
    wt_timer: int = 5000
    restart_fr_on_each_reply: bool = True
    remap_503_500: bool = True
    failover_reply_codes: frozenset[int] = frozenset()


@dataclass(frozen=True)
class RrSettings:
    """The C{[rr]} section."""

    enable_double_rr: int = 1
    append_fromtag: bool = True
    #: Signs the Record-Route and Path entries sbc inserts (empty: random per start).
    secret: str = ""


@dataclass(frozen=True)
class NatSettings:
    """The C{[nat]} section (the NAT policy; see L{sbc.core.nat.NatPolicy})."""

    nat_uac_test: int = 19
    contact_fix: str = "alias"
    register_fix: str = "received"
    force_rport: bool = True
    private_ranges: tuple[str, ...] = DEFAULT_PRIVATE_RANGES
    nat_addr_mode: int = 1
    fix_nated_sdp: int = 0


@dataclass(frozen=True)
class StunSettings:
    """The C{[stun]} section (Kamailio's core STUN parameters)."""

    stun_allow_stun: bool = True
    stun_allow_fp: bool = True


@dataclass(frozen=True)
class NathelperSettings:
    """The C{[nathelper]} section (registered contacts pinged every natping_interval)."""

    natping_interval: int = 0
    ping_nated_only: bool = False
    natping_method: str = "udp4"
    sipping_method: str = "OPTIONS"
    sipping_from: str = ""
    keepalive_timeout: int = 0


@dataclass(frozen=True)
class NatTraversalSettings:
    """The C{[nat_traversal]} section (endpoints kept while a condition lives)."""

    keepalive_interval: int = 0
    keepalive_method: str = "NOTIFY"
    keepalive_from: str = ""
    keepalive_extra_headers: str = ""
    keepalive_state_file: Optional[str] = None
    contact_match: int = 0


@dataclass(frozen=True)
class DnsSettings:
    """
    The C{[dns]} section (Kamailio core DNS parameters, same names).

    @ivar dns_srv_lb: RFC 2782 weighted choice among equal-priority SRV records (on here,
        as the RFC asks; Kamailio's default is off).
    @ivar use_dns_failover: try the next address on failure (on here; Kamailio: off).
    @ivar nameservers: (ip, port) pairs; empty: those of /etc/resolv.conf.
    @ivar hosts_file: names looked up here before DNS (empty: none).
    @ivar dns_retr_time: seconds to wait for one DNS answer; dns_retr_no: tries.
    """

    use_dns_cache: bool = True
    use_dns_failover: bool = True
    dns_srv_lb: bool = True
    dns_try_naptr: bool = True
    dns_try_ipv6: bool = True
    dns_naptr_ignore_rfc: bool = True
    dns_cache_min_ttl: int = 0
    dns_cache_max_ttl: int = 2**31 - 1
    dns_cache_negative_ttl: int = 60
    nameservers: tuple[tuple[str, int], ...] = ()
    hosts_file: Optional[str] = "/etc/hosts"
    dns_retr_time: int = 2
    dns_retr_no: int = 2


@dataclass(frozen=True)
class RtpSettings:
    """
    The C{[rtp]} section: media anchoring (built-in relay or rtpengine).

    @ivar engine: C{relay} (built in), C{rtpengine} (over the ng protocol) or C{off}.
    @ivar rtp_policy: which calls are anchored: C{nated} (caller or callee behind NAT),
        C{always}, C{never}.
    @ivar media_address: the address put into SDP (empty: [core] advertise, else the first
        listen address).
    @ivar media_timeout: seconds without RTP after which a call's media is ended.
    @ivar nortpproxy_str: an SDP line added to anchored SDP (e.g. C{a=nortpproxy:yes});
        empty: none.
    """

    engine: str = "relay"
    rtp_policy: str = "nated"
    port_min: int = 30000
    port_max: int = 40000
    media_address: str = ""
    media_timeout: int = 60
    rtpengine_sock: Optional[Address] = Address("udp", "127.0.0.1", 2223)
    nortpproxy_str: str = ""


@dataclass(frozen=True)
class ManholeSettings:
    """The C{[manhole]} section (SSH admin shell and metrics)."""

    listen: str = "tcp:2222:interface=127.0.0.1"
    authorized_keys: Optional[str] = None
    host_key: Optional[str] = None
    metrics_listen: str = ""


@dataclass(frozen=True)
class Settings:
    """Everything sbc reads from its configuration.

    @ivar source: the file the settings came from (C{<defaults>} without one)."""

    source: str = "<defaults>"
    core: CoreSettings = field(default_factory=CoreSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    tm: TmSettings = field(default_factory=TmSettings)
    rr: RrSettings = field(default_factory=RrSettings)
    registrar: RegistrarSettings = field(default_factory=RegistrarSettings)
    nat: NatSettings = field(default_factory=NatSettings)
    stun: StunSettings = field(default_factory=StunSettings)
    nathelper: NathelperSettings = field(default_factory=NathelperSettings)
    nat_traversal: NatTraversalSettings = field(default_factory=NatTraversalSettings)
    manhole: ManholeSettings = field(default_factory=ManholeSettings)
    pike: PikeSettings = field(default_factory=PikeSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    rtp: RtpSettings = field(default_factory=RtpSettings)
    blocklist: BlocklistSettings = field(default_factory=BlocklistSettings)
    permissions: PermissionsSettings = field(default_factory=PermissionsSettings)
    dialog: DialogSettings = field(default_factory=DialogSettings)
    siptrace: SiptraceSettings = field(default_factory=SiptraceSettings)
    acc: AccSettings = field(default_factory=AccSettings)
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings)


def defaults() -> Settings:
    """The settings sbc runs with when given no file."""
    return Settings()


# -- value converters: each raises ValueError("what was expected") -------------------------

_SPLIT = re.compile(r"[\s,]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)


def _items(text: str) -> list[str]:
    return [item for item in _SPLIT.split(text.strip()) if item]


def _addresses(text: str) -> tuple[Address, ...]:
    items = _items(text)
    if not items:
        raise ValueError("one or more proto:ip:port")
    return tuple(parse_address(item) for item in items)


def _host(text: str) -> str:
    if is_ip_literal(text) or _HOSTNAME.match(text):
        return text
    raise ValueError("a host name or IP address")


def _host_port(text: str) -> Optional[tuple[str, Optional[int]]]:
    text = text.strip()
    if not text:
        return None
    expected = "host[:port] (IPv6 in brackets)"
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0 or not is_ip_literal(host) or (rest and not rest.startswith(":")):
            raise ValueError(expected)
        port_text = rest[1:] or None
    else:
        host, _, port_text_ = text.partition(":")
        port_text = port_text_ or None
        if not (is_ip_literal(host) or _HOSTNAME.match(host)):
            raise ValueError(expected)
    if port_text is not None and not (is_digits(port_text) and 0 < int(port_text) < 65536):
        raise ValueError(expected)
    return host, (int(port_text) if port_text else None)


def _domains(text: str) -> tuple[str, ...]:
    out = []
    for item in _items(text):
        try:
            out.append(_host(item).lower())
        except ValueError:
            raise ValueError("a list of domain names") from None
    return tuple(out)


def _sip_uri(text: str) -> Optional[SipUri]:
    text = text.strip()
    if not text:
        return None
    try:
        uri = parse_uri(text)
    except ParseError:
        uri = None
    if not isinstance(uri, SipUri):
        raise ValueError("a sip: or sips: URI, or nothing")
    return uri


def _integer(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        text = text.strip()
        if not re.fullmatch(r"-?\d+", text) or not low <= int(text) <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return int(text)

    return convert


_TRUE = {"yes", "on", "true", "1"}
_FALSE = {"no", "off", "false", "0"}


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("yes/no, on/off, true/false or 1/0")


def _choice(mapping: dict[str, Any], what: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        value = text.strip()
        for key, result in mapping.items():
            if key.lower() == value.lower():
                return result
        raise ValueError(what)

    return convert


def _networks(text: str) -> tuple[str, ...]:
    items = _items(text)
    try:
        return tuple(str(ipaddress.ip_network(item, strict=False)) for item in items)
    except ValueError:
        raise ValueError("a list of networks in CIDR form (10.0.0.0/8 fc00::/7)") from None


def _flags(limit: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        text = text.strip()
        if not is_digits(text) or int(text) >= limit:
            raise ValueError(f"a flag sum from 0 to {limit - 1}")
        return int(text)

    return convert


def _sip_uri_text(text: str) -> str:
    text = text.strip()
    if text:
        _sip_uri(text)
    return text


def _header_lines(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        name, colon, _ = line.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise ValueError("header lines 'Name: value' (one per line)")
    return "".join(line + "\r\n" for line in lines)


def _endpoint(text: str) -> str:
    value = text.strip()
    if value and not re.match(r"(tcp|tcp6|ssl|unix):", value):
        raise ValueError(
            "a Twisted server endpoint such as tcp:2222:interface=127.0.0.1, or nothing"
        )
    return value


def endpoint_is_loopback(description: str) -> bool:
    """Whether a server endpoint string listens on loopback only (UNIX sockets count)."""
    if description.startswith("unix:"):
        return True
    at = description.find("interface=")
    if at < 0:
        return False
    host = []
    text = description[at + len("interface=") :]
    i = 0
    while i < len(text) and text[i] != ":":
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        host.append(text[i])
        i += 1
    value = "".join(host).strip("[]")
    try:
        return ipaddress.ip_address(value).is_loopback
    except ValueError:
        return value == "localhost"


def _text(text: str) -> str:
    return text.strip()


def _nameservers(text: str) -> tuple[tuple[str, int], ...]:
    servers = []
    for item in _items(text):
        try:
            parsed = _host_port(item)
        except ValueError:
            parsed = None
        if parsed is None or not is_ip_literal(parsed[0]):
            raise ValueError("a list of ip[:port] (IPv6 in brackets), or nothing")
        servers.append((parsed[0], parsed[1] or 53))
    return tuple(servers)


def _ip(text: str) -> str:
    value = text.strip()
    if value and not is_ip_literal(value):
        raise ValueError("an IP address, or nothing")
    return value.strip("[]")


def _udp_address(text: str) -> Address:
    try:
        address = parse_address(text)
    except ValueError:
        address = None
    if address is None or address.transport != "udp":
        raise ValueError("udp:ip:port")
    return address


def _hep_uri(text: str) -> Optional[Address]:
    """Kamailio siptrace's C{duplicate_uri} (C{sip:ip:port}) or C{udp:ip:port}."""
    value = text.strip()
    if not value:
        return None
    if value.lower().startswith("sip:"):
        value = "udp:" + value[4:]
    return _udp_address(value)


def _db_url(text: str) -> str:
    value = text.strip()
    if value and not re.match(r"postgres(ql)?://", value):
        raise ValueError("a PostgreSQL URI postgresql://user@host:port/database, or nothing")
    return value


def _identifier(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
        raise ValueError("an SQL table name (letters, digits, _)")
    return value


def _sdp_line(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(r"a=[\w.-]+(:\S.*)?", value):
        raise ValueError("an SDP attribute line such as a=nortpproxy:yes, or nothing")
    return value


def _failover_reply_codes(text: str) -> frozenset[int]:
    try:
        return failover_codes(text)
    except ValueError:
        raise ValueError("code=NNN (300..699) and class=N (3..6) items joined by ';'") from None


def _secret(text: str) -> str:
    value = text.strip()
    if value and len(value) < 16:
        raise ValueError("at least 16 characters (empty: a random secret per start)")
    return value


def _trusted(text: str) -> TrustedPeers:
    return TrustedPeers(parse_trusted(text))


def _origins(text: str) -> tuple[str, ...]:
    """Web origins (RFC 6454 C{scheme://host[:port]}), whitespace or comma separated."""
    origins = []
    for item in _items(text):
        scheme, sep, rest = item.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest or "/" in rest:
            raise ValueError("origins like https://example.com[:port]")
        origins.append(item.lower())
    return tuple(origins)


def _methods_bitmap(text: str) -> int:
    """A Kamailio method bitmap (1 = INVITE, 32 = REGISTER, ...) or a list of methods."""
    value = text.strip()
    if is_digits(value) and int(value) < 1 << 16:
        return int(value)
    bits = 0
    for item in _items(value):
        bit = METHOD_BITS.get(item.upper())
        if bit is None:
            raise ValueError("a method bitmap (1 = INVITE) or a list of SIP methods")
        bits |= bit
    return bits


_PATH = object()  # marker: a file path, resolved against the config file's folder
_OUTPUT_PATH = object()  # marker: a file sbc writes: its folder must exist and be writable


#: section -> key -> converter; the keys are exactly the dataclass fields.
_SCHEMA: dict[str, tuple[type, dict[str, Any]]] = {
    "core": (
        CoreSettings,
        {
            "listen": _addresses,
            "advertise": _host_port,
            "alias": _domains,
            "outbound_proxy": _sip_uri,
            "max_message_size": _integer(1024, 1 << 20),
            "log_level": _choice(
                LOG_LEVELS,
                "one of debug, info, warn, error, critical (or a Kamailio debug level -3..3)",
            ),
            "tcp_connection_lifetime": _integer(1, 86400),
            "max_headers": _integer(16, 10_000),
            "max_header_length": _integer(256, 1 << 20),
            "tcp_max_connections": _integer(1, 1_000_000),
            "tcp_max_connections_per_source": _integer(1, 1_000_000),
            "route_script": _PATH,
            "allow_relay": _boolean,
        },
    ),
    "tls": (
        TlsSettings,
        {
            "certificate": _PATH,
            "private_key": _PATH,
            "ca_list": _PATH,
            "verify_certificate": _boolean,
            "require_certificate": _boolean,
            "tls_method": _choice(
                {k: k for k in TLS_METHODS},
                "one of " + ", ".join(TLS_METHODS) + " (TLS 1.2 or newer)",
            ),
            "cipher_list": _text,
        },
    ),
    "tm": (
        TmSettings,
        {
            "fr_timer": _integer(100, 3_600_000),
            "fr_inv_timer": _integer(100, 3_600_000),
            "retr_timer1": _integer(10, 60_000),
            "retr_timer2": _integer(10, 60_000),
            "max_inv_lifetime": _integer(100, 86_400_000),
            "max_noninv_lifetime": _integer(100, 3_600_000),
            "wt_timer": _integer(100, 3_600_000),
            "restart_fr_on_each_reply": _boolean,
            "remap_503_500": _boolean,
            "failover_reply_codes": _failover_reply_codes,
        },
    ),
    "dns": (
        DnsSettings,
        {
            "use_dns_cache": _boolean,
            "use_dns_failover": _boolean,
            "dns_srv_lb": _boolean,
            "dns_try_naptr": _boolean,
            "dns_try_ipv6": _boolean,
            "dns_naptr_ignore_rfc": _boolean,
            "dns_cache_min_ttl": _integer(0, 2**31 - 1),
            "dns_cache_max_ttl": _integer(1, 2**31 - 1),
            "dns_cache_negative_ttl": _integer(0, 86400),
            "nameservers": _nameservers,
            "hosts_file": _PATH,
            "dns_retr_time": _integer(1, 30),
            "dns_retr_no": _integer(1, 10),
        },
    ),
    "rtp": (
        RtpSettings,
        {
            "engine": _choice(
                {k: k for k in ("relay", "rtpengine", "off")}, "relay, rtpengine or off"
            ),
            "rtp_policy": _choice(
                {k: k for k in ("nated", "always", "never")}, "nated, always or never"
            ),
            "port_min": _integer(1024, 65534),
            "port_max": _integer(1025, 65535),
            "media_address": _ip,
            "media_timeout": _integer(1, 86400),
            "rtpengine_sock": _udp_address,
            "nortpproxy_str": _sdp_line,
        },
    ),
    "blocklist": (
        BlocklistSettings,
        {
            "use_dst_blocklist": _boolean,
            "dst_blocklist_expire": _integer(1, 86400),
            "blst_503": _boolean,
            "blst_503_def_timeout": _integer(0, 86400),
            "blst_503_min_timeout": _integer(0, 86400),
            "blst_503_max_timeout": _integer(0, 86400),
            "blst_methods_add": _methods_bitmap,
        },
    ),
    "rr": (
        RrSettings,
        {
            "enable_double_rr": _integer(0, 2),
            "append_fromtag": _boolean,
            "secret": _secret,
        },
    ),
    "permissions": (
        PermissionsSettings,
        {
            "trusted": _trusted,
        },
    ),
    "dialog": (
        DialogSettings,
        {
            "default_timeout": _integer(1, 7 * 86400),
            "dlg_keepalive_interval": _integer(0, 86400),
        },
    ),
    "registrar": (
        RegistrarSettings,
        {
            "default_expires": _integer(1, 31_536_000),
            "min_expires": _integer(0, 31_536_000),
            "max_expires": _integer(0, 31_536_000),
            "max_contacts": _integer(0, 10_000),
            "received_param": _text,
            "registrar_uri": _sip_uri,
        },
    ),
    "nat": (
        NatSettings,
        {
            "nat_uac_test": _flags(1024),
            "contact_fix": _choice(
                {k: k for k in ("alias", "rewrite", "off")}, "alias, rewrite or off"
            ),
            "register_fix": _choice({k: k for k in ("received", "off")}, "received or off"),
            "force_rport": _boolean,
            "private_ranges": _networks,
            "nat_addr_mode": _integer(0, 1),
            "fix_nated_sdp": _flags(16),
        },
    ),
    "nathelper": (
        NathelperSettings,
        {
            "natping_interval": _integer(0, 3600),
            "ping_nated_only": _boolean,
            "natping_method": _choice({k: k for k in ("udp4", "sip", "crlf")}, "udp4, sip or crlf"),
            "sipping_method": _choice(
                {"OPTIONS": "OPTIONS", "NOTIFY": "NOTIFY"}, "OPTIONS or NOTIFY"
            ),
            "sipping_from": _sip_uri_text,
            "keepalive_timeout": _integer(0, 86400),
        },
    ),
    "nat_traversal": (
        NatTraversalSettings,
        {
            "keepalive_interval": _integer(0, 3600),
            "keepalive_method": _choice(
                {"NOTIFY": "NOTIFY", "OPTIONS": "OPTIONS"}, "NOTIFY or OPTIONS"
            ),
            "keepalive_from": _sip_uri_text,
            "keepalive_extra_headers": _header_lines,
            "keepalive_state_file": _OUTPUT_PATH,
            "contact_match": _integer(0, 1),
        },
    ),
    "manhole": (
        ManholeSettings,
        {
            "listen": _endpoint,
            "authorized_keys": _PATH,
            "host_key": _OUTPUT_PATH,
            "metrics_listen": _endpoint,
        },
    ),
    "auth": (
        AuthSettings,
        {
            "realm": _text,
            "credentials_file": _PATH,
            "nonce_expire": _integer(10, 86400),
        },
    ),
    "pike": (
        PikeSettings,
        {
            "sampling_time_unit": _integer(1, 3600),
            "reqs_density_per_unit": _integer(0, 1_000_000),
            "remove_latency": _integer(1, 86400),
        },
    ),
    "siptrace": (
        SiptraceSettings,
        {
            "duplicate_uri": _hep_uri,
            "hep_capture_id": _integer(0, 2**32 - 1),
            "trace_on": _boolean,
        },
    ),
    "acc": (
        AccSettings,
        {
            "log_file": _OUTPUT_PATH,
            "db_url": _db_url,
            "db_table_acc": _identifier,
        },
    ),
    "websocket": (
        WebSocketSettings,
        {
            "allowed_origins": _origins,
            "keepalive_mechanism": _choice(
                {"ping": "ping", "none": "none", "1": "ping", "0": "none"},
                "ping or none (Kamailio's 1 or 0)",
            ),
            "keepalive_timeout": _integer(1, 86400),
            "handshake_timeout": _integer(1, 300),
        },
    ),
    "stun": (
        StunSettings,
        {
            "stun_allow_stun": _boolean,
            "stun_allow_fp": _boolean,
        },
    ),
}


def _line_numbers(lines: list[str]) -> dict[tuple[str, Optional[str]], int]:
    """Map (section, key) and (section, None) to the line they first appear on."""
    where: dict[tuple[str, Optional[str]], int] = {}
    section = ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[0] in " \t":
            continue
        m = re.match(r"\[([^\]]+)\]", stripped)
        if m:
            section = m.group(1).strip().lower()
            where.setdefault((section, None), number)
            continue
        m = re.match(r"([^=:]+?)\s*[=:]", stripped)
        if m:
            where.setdefault((section, m.group(1).strip().lower()), number)
    return where


def load(path: str) -> Settings:
    """Read and check the INI file at C{path}.

    @raise ConfigError: with the one line naming file, line, section, key and expectation."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the configuration: {error}") from None
    parser = configparser.ConfigParser(
        interpolation=None,
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=("#",),
        strict=True,
        empty_lines_in_values=False,
    )
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateOptionError as error:
        raise ConfigError(
            f"{path}:{error.lineno}: [{error.section}] {error.option}: "
            "expected each key once, got it twice"
        ) from None
    except configparser.DuplicateSectionError as error:
        raise ConfigError(
            f"{path}:{error.lineno}: [{error.section}]: expected each section once, got it twice"
        ) from None
    except configparser.MissingSectionHeaderError as error:
        raise ConfigError(
            f"{path}:{error.lineno}: expected a [section] header, got {error.line.strip()!r}"
        ) from None
    except configparser.ParsingError as error:
        lineno, line = error.errors[0]
        raise ConfigError(
            f"{path}:{lineno}: expected 'key = value', got {line.strip()!r}"
        ) from None
    lines = _line_numbers(text.splitlines())
    base = os.path.dirname(os.path.abspath(path))
    sections: dict[str, Any] = {}
    for section_name in parser.sections():
        section = section_name.strip().lower()
        if section not in _SCHEMA:
            raise ConfigError(
                f"{path}:{lines.get((section, None), 0)}: [{section_name}]: "
                f"expected a section among {', '.join(_SCHEMA)}"
            )
        cls, keys = _SCHEMA[section]
        values: dict[str, Any] = {}
        for key, raw in parser.items(section_name):
            line = lines.get((section, key), lines.get((section, None), 0))
            where = f"{path}:{line}: [{section}] {key}"
            if key not in keys:
                raise ConfigError(f"{where}: expected one of {', '.join(keys)}, got an unknown key")
            convert = keys[key]
            if convert is _PATH:
                values[key] = _resolve_path(raw, base, where)
                continue
            if convert is _OUTPUT_PATH:
                values[key] = _output_path(raw, base, where)
                continue
            try:
                values[key] = convert(raw)
            except ValueError as error:
                raise ConfigError(f"{where}: expected {error}, got {raw.strip()!r}") from None
        sections[section] = cls(**values)
    settings = Settings(source=path, **sections)
    _check(settings, path, lines)
    return settings


def _resolve_path(raw: str, base: str, where: str) -> Optional[str]:
    value = raw.strip()
    if not value:
        return None
    full = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.access(full, os.R_OK):
        raise ConfigError(f"{where}: expected a readable file, got {value!r}")
    return full


def _output_path(raw: str, base: str, where: str) -> Optional[str]:
    value = raw.strip()
    if not value:
        return None
    full = value if os.path.isabs(value) else os.path.join(base, value)
    folder = os.path.dirname(full) or "."
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            raise ConfigError(
                f"{where}: expected a file in a folder sbc can create, got {value!r}"
            ) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{where}: expected a file in a writable folder, got {value!r}")
    return full


def _check(settings: Settings, path: str, lines: dict) -> None:
    """Checks that involve several keys."""
    auth = settings.auth
    if bool(auth.realm) != bool(auth.credentials_file):
        line = lines.get(("auth", "realm"), lines.get(("auth", None), 0))
        raise ConfigError(
            f"{path}:{line}: [auth] realm: expected realm and credentials_file "
            "together (both empty: no authentication), got only one of them"
        )
    man = settings.manhole
    if man.listen and not endpoint_is_loopback(man.listen) and not man.authorized_keys:
        line = lines.get(("manhole", "listen"), 0)
        raise ConfigError(
            f"{path}:{line}: [manhole] listen: expected a loopback address while "
            f"authorized_keys is not set, got {man.listen!r}"
        )
    if settings.nathelper.natping_interval and settings.nat_traversal.keepalive_interval:
        line = lines.get(("nat_traversal", "keepalive_interval"), 0)
        raise ConfigError(
            f"{path}:{line}: [nat_traversal] keepalive_interval: expected 0 "
            "while [nathelper] natping_interval is set (one keepalive style), "
            f"got {settings.nat_traversal.keepalive_interval}"
        )
    nathelper = settings.nathelper
    if (
        nathelper.natping_interval
        and nathelper.natping_method == "sip"
        and not nathelper.sipping_from
    ):
        line = lines.get(("nathelper", "natping_method"), 0)
        raise ConfigError(
            f"{path}:{line}: [nathelper] natping_method: expected sipping_from to "
            "be set for SIP pings (as nathelper requires), got sip without it"
        )
    if settings.core.route_script:
        try:
            load_script(settings.core.route_script)
        except ScriptLoadError as error:
            line = lines.get(("core", "route_script"), 0)
            raise ConfigError(
                f"{path}:{line}: [core] route_script: expected a routing script that "
                f"imports, got {error}"
            ) from None
    rtp = settings.rtp
    if rtp.port_max < rtp.port_min + 3:
        line = lines.get(("rtp", "port_max"), lines.get(("rtp", None), 0))
        raise ConfigError(
            f"{path}:{line}: [rtp] port_max: expected at least port_min + 3 "
            f"({rtp.port_min + 3}, two RTP/RTCP pairs), got {rtp.port_max}"
        )
    if rtp.engine == "relay" and not media_address(settings):
        line = lines.get(("rtp", "media_address"), lines.get(("core", "listen"), 0))
        raise ConfigError(
            f"{path}:{line}: [rtp] media_address: expected an IP address for SDP (the "
            "listen addresses are all wildcards and there is no [core] advertise), got none"
        )
    for section, key, floor in (
        ("dns", "dns_cache_max_ttl", "dns_cache_min_ttl"),
        ("blocklist", "blst_503_max_timeout", "blst_503_min_timeout"),
        ("tm", "retr_timer2", "retr_timer1"),
    ):
        values = getattr(settings, section)
        value, least = getattr(values, key), getattr(values, floor)
        if value < least:
            line = lines.get((section, key), lines.get((section, None), 0))
            raise ConfigError(
                f"{path}:{line}: [{section}] {key}: expected at least {floor} "
                f"({least}), got {value}"
            )
    reg = settings.registrar
    if reg.max_expires and reg.max_expires < reg.min_expires:
        if ("registrar", "max_expires") not in lines:
            # max_expires took its default (3600, as Kamailio's registrar): name the key set.
            line = lines.get(("registrar", "min_expires"), 0)
            raise ConfigError(
                f"{path}:{line}: [registrar] min_expires: expected at most max_expires "
                f"({reg.max_expires}, its default; set max_expires too), got {reg.min_expires}"
            )
        line = lines.get(("registrar", "max_expires"), 0)
        raise ConfigError(
            f"{path}:{line}: [registrar] max_expires: expected 0 or at least "
            f"min_expires ({reg.min_expires}), got {reg.max_expires}"
        )
    if any(a.transport in ("tls", "wss") for a in settings.core.listen):
        tls = settings.tls
        if not tls.certificate or not tls.private_key:
            line = lines.get(("core", "listen"), 0)
            raise ConfigError(
                f"{path}:{line}: [core] listen: expected [tls] certificate and "
                "private_key for a tls or wss listener, got none"
            )
        try:
            server_options(tls)
        except Exception as error:  # ValueError, OSError or OpenSSL.SSL.Error
            line = lines.get(("tls", "certificate"), 0)
            raise ConfigError(
                f"{path}:{line}: [tls] certificate: expected a PEM certificate "
                f"chain matching private_key, got {_describe(error)}"
            ) from None


def media_address(settings: Settings) -> str:
    """The address the relay writes into SDP: [rtp] media_address, else [core] advertise
    when it is an IP, else the first listen address that is not a wildcard."""
    if settings.rtp.media_address:
        return settings.rtp.media_address
    advertise = settings.core.advertise
    if advertise is not None and is_ip_literal(advertise[0]):
        return advertise[0].strip("[]")
    for address in settings.core.listen:
        if address.host not in ("0.0.0.0", "::"):
            return address.host
    return ""


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]


def settings_fields() -> dict[str, list[str]]:
    """Every section and key sbc knows (for documentation tests)."""
    return {name: [f.name for f in fields(cls)] for name, (cls, _) in _SCHEMA.items()}
