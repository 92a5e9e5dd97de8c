# -*- test-case-name: tests.core.test_uri -*-
"""
SIP URIs, name-addr values and Via values (RFC 3261 §19.1, §20, §25).

Every value object keeps the text it was parsed from and serialises to exactly that text until
one of its parts is replaced (the C{evolve}/C{with_*} methods return new objects whose text is
rebuilt).  Malformed input raises L{ParseError}, which carries the status a server answers with.
The shared pieces of syntax (tokens, hosts, parameter lists, comma lists) live in
L{sbc.core.syntax} and are re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Optional, TypeVar

from sbc.core.errors import ParseError
from sbc.core.syntax import WS as _WS
from sbc.core.syntax import (
    Params,
    cached_when_short,
    escape_param,
    format_host,
    is_digits,
    is_ip_literal,
    is_token,
    split_commas,
    unescape_param,
)
from sbc.core.syntax import format_params as _format_params
from sbc.core.syntax import has_param as _has_param
from sbc.core.syntax import param_value as _param_value
from sbc.core.syntax import parse_header_params as _parse_header_params
from sbc.core.syntax import parse_port as _parse_port
from sbc.core.syntax import scan_quoted as _scan_quoted
from sbc.core.syntax import set_param as _set_param
from sbc.core.syntax import split_hostport as _split_hostport
from sbc.core.syntax import split_plain_params as _split_plain_params
from sbc.core.syntax import without_param as _without_param

#: Longest text the parse caches keep (longer values are parsed each time).
CACHED_TEXT = 512

__all__ = [
    "Params",
    "SipUri",
    "OpaqueUri",
    "Uri",
    "NameAddr",
    "Via",
    "parse_uri",
    "parse_name_addr",
    "parse_via",
    "split_commas",
    "escape_param",
    "unescape_param",
    "format_host",
    "is_ip_literal",
]

#: Characters that may never appear unescaped inside a URI (white space, quotes, angle brackets).
_URI_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\"<>\\^`{|}]")
_V = TypeVar("_V")


@dataclass(frozen=True, eq=False)
class SipUri:
    """
    A C{sip:} or C{sips:} URI.

    @ivar user: the user part, still %-escaped, or L{None}.
    @ivar password: the password, or L{None}.
    @ivar host: host name, IPv4 address, or IPv6 reference in brackets.
    @ivar port: the port, or L{None} when the URI names none.
    @ivar params: uri-parameters in order, as (name, value-or-None) pairs.
    @ivar headers: URI headers (after C{?}), as (name, value) pairs.
    """

    scheme: str
    user: Optional[str]
    password: Optional[str]
    host: str
    port: Optional[int]
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    raw: Optional[str] = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        text = f"{self.scheme}:"
        if self.user is not None:
            text += self.user
            if self.password is not None:
                text += ":" + self.password
            text += "@"
        text += format_host(self.host)
        if self.port is not None:
            text += f":{self.port}"
        text += _format_params(self.params)
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers)
        return text

    def __eq__(self, other: object) -> bool:
        # RFC 3261 §19.1.4 in its most useful approximation: scheme, user and host compared
        # case-insensitively where the RFC says so, port and parameters by value.
        if not isinstance(other, SipUri):
            return NotImplemented
        return (
            self.scheme.lower() == other.scheme.lower()
            and self.user == other.user
            and self.password == other.password
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and sorted((k.lower(), v) for k, v in self.params)
            == sorted((k.lower(), v) for k, v in other.params)
            and self.headers == other.headers
        )

    def __hash__(self) -> int:
        return hash((self.scheme.lower(), self.user, self.host.lower(), self.port))

    def evolve(self, **changes: object) -> SipUri:
        """Return a copy with C{changes} applied; its text is rebuilt."""
        return _evolve(self, changes)

    @property
    def secure(self) -> bool:
        """True for C{sips:} URIs."""
        return self.scheme.lower() == "sips"

    @property
    def host_bare(self) -> str:
        """The host without IPv6 brackets, lower-cased: what a socket address compares to."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host.lower()

    def param(self, name: str) -> Optional[str]:
        """Return the value of uri-parameter C{name} (C{""} if it has none), or L{None}."""
        return _param_value(self.params, name)

    def has_param(self, name: str) -> bool:
        """Say whether the uri-parameter C{name} is present."""
        return _has_param(self.params, name)

    def with_param(self, name: str, value: Optional[str] = None) -> SipUri:
        """Return a copy with parameter C{name} set (replacing an existing one)."""
        return self.evolve(params=_set_param(self.params, name, value))

    def without_param(self, name: str) -> SipUri:
        """Return a copy with every parameter C{name} removed."""
        return self.evolve(params=_without_param(self.params, name))

    @property
    def transport(self) -> str:
        """The C{transport} parameter lower-cased; C{"udp"} when absent (C{"tls"} for sips)."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.secure else "udp"


@dataclass(frozen=True)
class OpaqueUri:
    """A URI of any scheme other than sip/sips (tel:, im:, http:, ...), kept as text."""

    scheme: str
    body: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.body}"


Uri = "SipUri | OpaqueUri"

_FIELDS: dict[type, frozenset[str]] = {}


def _evolve(value: _V, changes: dict[str, object]) -> _V:
    """C{dataclasses.replace(value, raw=None, **changes)} without its per-call overhead: a
    copy of the fields, the changes and no text.  Values computed from the fields and kept
    on the object (L{NameAddr.tag}) are not copied."""
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
    if not names.issuperset(changes):
        raise TypeError(f"{cls.__name__} has no field {sorted(set(changes) - names)[0]}")
    new = object.__new__(cls)
    state = new.__dict__
    for name in names:
        state[name] = value.__dict__[name]
    state.update(changes)
    state["raw"] = None
    return new


_new = object.__new__


def _sip_uri(
    scheme: str,
    user: Optional[str],
    password: Optional[str],
    host: str,
    port: Optional[int],
    params: Params,
    headers: tuple[tuple[str, str], ...],
    raw: str,
) -> SipUri:
    """C{SipUri(...)} for the parser: the generated frozen C{__init__} sets each field
    through C{object.__setattr__}, twice the cost of filling C{__dict__} directly."""
    uri = _new(SipUri)
    state = uri.__dict__
    state["scheme"] = scheme
    state["user"] = user
    state["password"] = password
    state["host"] = host
    state["port"] = port
    state["params"] = params
    state["headers"] = headers
    state["raw"] = raw
    return uri


def _name_addr(
    display: Optional[str], uri: SipUri | OpaqueUri, params: Params, angle: bool, raw: str
) -> NameAddr:
    """C{NameAddr(...)} for the parser, as L{_sip_uri}."""
    value = _new(NameAddr)
    state = value.__dict__
    state["display"] = display
    state["uri"] = uri
    state["params"] = params
    state["angle"] = angle
    state["raw"] = raw
    return value


def _via(
    protocol: str, transport: str, host: str, port: Optional[int], params: Params, raw: str
) -> Via:
    """C{Via(...)} for the parser, as L{_sip_uri}."""
    via = _new(Via)
    state = via.__dict__
    state["protocol"] = protocol
    state["transport"] = transport
    state["host"] = host
    state["port"] = port
    state["params"] = params
    state["raw"] = raw
    return via


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")


def _parse_uri(text: str) -> SipUri | OpaqueUri:
    """
    Parse an absolute URI.

    C{sip:}/C{sips:} URIs are parsed into their parts; other schemes are accepted as
    L{OpaqueUri} so that the application can answer 416 (RFC 3261 §8.2.2.1).
    @raise ParseError: for anything that is not an absolute URI.
    """
    scheme, sep, rest = text.partition(":")
    if not sep or _SCHEME.match(scheme) is None:
        raise ParseError(400, "bad URI scheme")
    if _URI_FORBIDDEN.search(text) is not None:
        raise ParseError(400, "forbidden character in URI")
    lscheme = scheme.lower()
    if lscheme not in ("sip", "sips"):
        if not rest:
            raise ParseError(400, "empty URI")
        return OpaqueUri(scheme, rest)
    return _parse_sip_uri(scheme, rest, text)


parse_uri = cached_when_short(CACHED_TEXT)(_parse_uri)


def _parse_sip_uri(scheme: str, rest: str, text: str) -> SipUri:
    user = password = None
    qmark = rest.find("?")
    at = rest.rfind("@", 0, qmark if qmark >= 0 else len(rest))
    if at < 0 and "@" in rest:
        at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise ParseError(400, "empty user part in URI")
    headers_text = None
    qmark = rest.find("?")
    if qmark >= 0:
        rest, headers_text = rest[:qmark], rest[qmark + 1 :]
    hostport, *param_texts = rest.split(";")
    host, port = _split_hostport(hostport, "URI")
    params = []
    for item in param_texts:
        name, eq, value = item.partition("=")
        if not name:
            raise ParseError(400, "empty URI parameter")
        params.append((name, value if eq else None))
    headers = []
    if headers_text is not None:
        for item in headers_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise ParseError(400, "bad URI header")
            headers.append((name, value))
    return _sip_uri(scheme, user, password, host, port, tuple(params), tuple(headers), text)


@dataclass(frozen=True)
class NameAddr:
    """
    A From/To/Contact/Route/Record-Route value: optional display name, URI, header params.

    @ivar display: the display name as written (a token sequence or a quoted string with its
        quotes), or L{None}.
    @ivar angle: whether the URI was written in C{<>} (always true once rebuilt with params
        that would otherwise bind to the URI).
    """

    display: Optional[str]
    uri: SipUri | OpaqueUri
    params: Params = ()
    angle: bool = True
    raw: Optional[str] = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        if self.angle or self.display is not None:
            text = f"{self.display} <{self.uri}>" if self.display else f"<{self.uri}>"
        else:
            text = str(self.uri)
        return text + _format_params(self.params)

    def evolve(self, **changes: object) -> NameAddr:
        """Return a copy with C{changes} applied; its text is rebuilt."""
        new = _evolve(self, changes)
        if "uri" in changes:
            new.__dict__["angle"] = True
        return new

    @cached_property
    def tag(self) -> Optional[str]:
        """The C{tag} header parameter, or L{None} (computed once: the value is frozen)."""
        return _param_value(self.params, "tag")

    def param(self, name: str) -> Optional[str]:
        """Return header parameter C{name} (C{""} if valueless), or L{None}."""
        return _param_value(self.params, name)

    def with_param(self, name: str, value: Optional[str] = None) -> NameAddr:
        """Return a copy with header parameter C{name} set."""
        return self.evolve(params=_set_param(self.params, name, value))


def _parse_name_addr(text: str) -> NameAddr:
    """
    Parse C{( name-addr / addr-spec ) *( SEMI param )}.

    In the addr-spec form the URI may not contain C{,}, C{?} or C{;} (RFC 3261 §20): a C{;}
    starts the header parameters and a C{?} is an error.
    """
    s = text.strip(_WS)
    if not s:
        raise ParseError(400, "empty address")
    display: Optional[str] = None
    if s[0] == '"':
        end = _scan_quoted(s, 0)
        display = s[:end]
        rest = s[end:].lstrip(_WS)
        if not rest.startswith("<"):
            raise ParseError(400, "quoted display name without <URI>")
        return _parse_angle(display, rest, text)
    lt = s.find("<")
    if lt >= 0:
        words = s[:lt].strip(_WS)
        if words:
            for word in words.split():
                if not is_token(word):
                    raise ParseError(400, "bad display name")
            display = words
        return _parse_angle(display, s[lt:], text)
    uri_text, semi, params_text = s.partition(";")
    uri_text = uri_text.rstrip(_WS)
    if "?" in uri_text or "," in uri_text:
        raise ParseError(400, "URI with headers must be enclosed in <>")
    uri = parse_uri(uri_text)
    params = _parse_header_params(semi + params_text, "address")
    return _name_addr(None, uri, params, False, s)


parse_name_addr = cached_when_short(CACHED_TEXT)(_parse_name_addr)


def _parse_angle(display: Optional[str], rest: str, text: str) -> NameAddr:
    gt = rest.find(">")
    if gt < 0:
        raise ParseError(400, "unterminated <URI>")
    uri_text = rest[1:gt]
    if not uri_text or uri_text[0] in _WS or uri_text[-1] in _WS:
        raise ParseError(400, "white space inside <URI>")
    uri = parse_uri(uri_text)
    params = _parse_header_params(rest[gt + 1 :], "address")
    return _name_addr(display, uri, params, True, text.strip(_WS))


@dataclass(frozen=True)
class Via:
    """
    One via-parm: C{SIP/2.0/<transport> <sent-by>;params}.

    @ivar transport: the transport token upper-cased (UDP, TCP, TLS, SCTP, WS, ...).
    @ivar host: sent-by host (IPv6 in brackets).
    @ivar port: sent-by port, or L{None}.
    """

    protocol: str
    transport: str
    host: str
    port: Optional[int]
    params: Params = ()
    raw: Optional[str] = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {format_host(self.host)}{port}" + _format_params(
            self.params
        )

    def evolve(self, **changes: object) -> Via:
        """Return a copy with C{changes} applied; its text is rebuilt."""
        return _evolve(self, changes)

    def param(self, name: str) -> Optional[str]:
        """Return parameter C{name} (C{""} if valueless), or L{None}."""
        return _param_value(self.params, name)

    def has_param(self, name: str) -> bool:
        """Say whether parameter C{name} is present."""
        return _has_param(self.params, name)

    def with_param(self, name: str, value: Optional[str] = None) -> Via:
        """Return a copy with parameter C{name} set."""
        return self.evolve(params=_set_param(self.params, name, value))

    @property
    def branch(self) -> Optional[str]:
        """The branch parameter, or L{None}."""
        return _param_value(self.params, "branch")

    @property
    def received(self) -> Optional[str]:
        """The received parameter, or L{None}."""
        return _param_value(self.params, "received")

    @property
    def rport(self) -> Optional[str]:
        """The rport parameter: L{None} absent, C{""} present without value, else the port."""
        return _param_value(self.params, "rport")

    @property
    def maddr(self) -> Optional[str]:
        """The maddr parameter, or L{None}."""
        return _param_value(self.params, "maddr")

    @property
    def host_bare(self) -> str:
        """sent-by host without IPv6 brackets, lower-cased."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host.lower()


#: The usual via-parm: SIP/2.0/transport host[:port] and plain parameters, no LWS inside.
_PLAIN_VIA = re.compile(
    r"SIP/2\.0/([A-Za-z0-9\-.!%*_+`'~]+) ([A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)\Z"
)


def _parse_via(text: str) -> Via:
    """Parse one via-parm (the caller splits the header at commas)."""
    m = _PLAIN_VIA.match(text)
    if m is not None:
        transport, host, port_text, params_text = m.groups()
        port = None if port_text is None else int(port_text)
        if port is None or 0 < port <= 65535:
            # The pattern checked the parameters: split them; only rport with a value and
            # ttl have more to check (RFC 3581, RFC 3261 §20.42).
            params = _split_plain_params(params_text) if params_text else ()
            low = params_text.lower()
            if "rport=" in low or "ttl" in low:
                _check_via_params(params)
            return _via("SIP/2.0", transport.upper(), host, port, params, text)
    s = text.strip(_WS)
    parts = s.split("/", 2)
    if len(parts) != 3:
        raise ParseError(400, "bad Via sent-protocol")
    name, version = parts[0].strip(_WS), parts[1].strip(_WS)
    rest = parts[2].lstrip(_WS)
    if name.upper() != "SIP" or version != "2.0":
        raise ParseError(400, "bad Via protocol version")
    i = 0
    n = len(rest)
    while i < n and rest[i] not in _WS:
        i += 1
    transport = rest[:i]
    if not is_token(transport):
        raise ParseError(400, "bad Via transport")
    rest = rest[i:].lstrip(_WS)
    j = 0
    n = len(rest)
    while j < n and rest[j] not in ";" + _WS:
        j += 1
    sent_by = rest[:j]
    # LWS is allowed around the colon of sent-by in theory; nobody sends it, so keep it simple.
    host, port = _split_hostport(sent_by, "Via")
    if port == 0:
        raise ParseError(400, "bad port in Via")
    params = _parse_header_params(rest[j:], "Via")
    _check_via_params(params)
    return _via(f"{name}/{version}", transport.upper(), host, port, params, s)


parse_via = cached_when_short(CACHED_TEXT)(_parse_via)


def _check_via_params(params: Params) -> None:
    """rport is a port when it has a value; ttl is 0..255 (RFC 3261 §20.42, RFC 3581)."""
    for key, value in params:
        lkey = key.lower()
        if lkey == "rport" and value is not None and value != "":
            _parse_port(value, "Via rport")
        elif lkey == "ttl" and (value is None or not is_digits(value) or int(value) > 255):
            raise ParseError(400, "bad Via ttl")
