# -*- test-case-name: tests.core.test_uri -*-
"""
The small pieces of SIP syntax that URIs, name-addr and Via values share (RFC 3261 §25.1):
tokens, hosts and ports, C{;name=value} parameter lists, quoted strings and comma-separated
header lists.

L{sbc.core.uri} re-exports the public names here, so C{from sbc.core.uri import is_token}
keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Optional, TypeVar

from sbc.core.errors import ParseError

__all__ = [
    "WS",
    "Params",
    "escape_param",
    "unescape_param",
    "is_token",
    "is_ip_literal",
    "format_host",
    "parse_port",
    "split_hostport",
    "format_params",
    "param_value",
    "has_param",
    "set_param",
    "without_param",
    "split_commas",
    "scan_quoted",
    "parse_header_params",
    "split_plain_params",
]

#: RFC 3261 token characters (alphanum and -.!%*_+`'~).
_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
#: What a generic-param value may hold besides a quoted string: token, host (RFC 3261 §25.1).
_GEN_CHARS = _TOKEN_CHARS + ":[]"
#: A parameter list with neither white space nor quoted strings, the usual case: split it.
_PLAIN_PARAMS = re.compile(r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*\Z")
_HOST = re.compile(r"[A-Za-z0-9\-.]+\Z")
_IPV4 = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\Z")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]+\Z")
#: Linear white space (RFC 3261 §25.1 LWS, once folding is joined).
WS = " \t\r\n"

Params = tuple[tuple[str, Optional[str]], ...]


_PARAM_UNSAFE = {c: f"%{ord(c):02X}" for c in ';=?&,<>"% '}


def escape_param(value: str) -> str:
    """%-escape what may not stand in a URI parameter value (C{;} C{=} C{%} ...)."""
    return "".join(_PARAM_UNSAFE.get(c, c) for c in value)


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape_param(value: str) -> str:
    """Undo %-escaping (RFC 3261 §19.1.4); malformed escapes are kept as they are."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


_T = TypeVar("_T")


def cached_when_short(limit: int) -> Callable[[Callable[[str], _T]], Callable[[str], _T]]:
    """Wrap a parse function of one text in a 4096-entry LRU cache that only texts of up
    to C{limit} characters reach: values repeat across a call's messages, so each is
    parsed once, while a peer's long values are parsed each time instead of filling the
    cache.  The wrapper's C{cache_clear} empties the cache."""

    def wrap(parse: Callable[[str], _T]) -> Callable[[str], _T]:
        cached = lru_cache(maxsize=4096)(parse)

        def parse_text(text: str) -> _T:
            return cached(text) if len(text) <= limit else parse(text)

        parse_text.__doc__ = parse.__doc__
        parse_text.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return parse_text

    return wrap


def is_digits(text: str) -> bool:
    """Say whether C{text} is one or more ASCII digits (C{str.isdigit} alone also accepts
    characters such as C{²} that C{int()} refuses)."""
    return text.isascii() and text.isdigit()


def is_token(text: str) -> bool:
    """Say whether C{text} is a non-empty RFC 3261 token."""
    # strip() leaves nothing exactly when every character is a token character.
    return not text.strip(_TOKEN_CHARS) and text != ""


def is_ip_literal(host: str) -> bool:
    """Say whether C{host} is an IPv4 address or an IPv6 reference (with or without brackets)."""
    # The longest literal is a bracketed IPv6 with an IPv4 tail (47 characters); only
    # strings that short reach the cache, so a peer cannot fill it with long text.
    return len(host) <= 47 and _is_ip_literal(host)


@lru_cache(maxsize=4096)
def _is_ip_literal(host: str) -> bool:
    if host.startswith("["):
        return host.endswith("]") and ":" in host
    if ":" in host:
        return _IPV6_CHARS.match(host) is not None
    m = _IPV4.match(host)
    return m is not None and all(int(g) <= 255 for g in m.groups())


def format_host(host: str) -> str:
    """Return C{host} as it is written in a URI or Via: IPv6 in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _check_host(host: str, what: str) -> None:
    if host.startswith("["):
        if not host.endswith("]") or _IPV6_CHARS.match(host[1:-1]) is None or ":" not in host:
            raise ParseError(400, f"bad IPv6 reference in {what}")
        return
    if not host or _HOST.match(host) is None:
        raise ParseError(400, f"bad host in {what}")


def parse_port(text: str, what: str) -> int:
    """A port number 0..65535 in C{what}, or a 400."""
    if not is_digits(text) or len(text) > 5 or int(text) > 65535:
        raise ParseError(400, f"bad port in {what}")
    return int(text)


def split_hostport(text: str, what: str) -> tuple[str, Optional[int]]:
    """Split C{host[:port]} (IPv6 in brackets) and check both, or a 400 naming C{what}."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(400, f"bad IPv6 reference in {what}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ParseError(400, f"bad host in {what}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
    _check_host(host, what)
    return host, (None if port_text is None else parse_port(port_text, what))


def format_params(params: Params) -> str:
    """Params as written after a URI or header value: C{;name} or C{;name=value} each."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def param_value(params: Params, name: str) -> Optional[str]:
    """Parameter C{name}, any case: C{""} when valueless, L{None} when absent."""
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return "" if value is None else value
    return None


def has_param(params: Params, name: str) -> bool:
    """Whether parameter C{name} (any case) is present."""
    lname = name.lower()
    return any(key.lower() == lname for key, _ in params)


def set_param(params: Params, name: str, value: Optional[str]) -> Params:
    """C{params} with C{name} set once to C{value}, in its first place or at the end."""
    lname = name.lower()
    out = []
    done = False
    for key, old in params:
        if key.lower() == lname:
            if not done:
                out.append((key, value))
                done = True
            continue
        out.append((key, old))
    if not done:
        out.append((name, value))
    return tuple(out)


def without_param(params: Params, name: str) -> Params:
    """C{params} without any parameter C{name} (any case)."""
    lname = name.lower()
    return tuple((k, v) for k, v in params if k.lower() != lname)


def split_commas(value: str) -> list[str]:
    """
    Split a header value at the commas that separate list elements, ignoring commas inside
    quoted strings and inside C{<...>}.  Elements are stripped; empty elements are kept so
    that the caller can reject them.
    """
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]
    parts = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


def scan_quoted(text: str, pos: int) -> int:
    """Return the index just past the quoted string starting at C{text[pos] == '"'}."""
    i = pos + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise ParseError(400, "unterminated quoted string")


def parse_header_params(text: str, what: str) -> Params:
    """
    Parse C{*( SEMI generic-param )} where C{text} starts at the first C{;} (or is empty).
    LWS is allowed around C{;} and C{=}; values are tokens, hosts or quoted strings.
    """
    if not text:
        return ()
    if _PLAIN_PARAMS.match(text) is not None:
        return split_plain_params(text)
    params = []
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i] in WS:
            i += 1
        if i >= n:
            break
        if text[i] != ";":
            raise ParseError(400, f"junk after {what}")
        i += 1
        while i < n and text[i] in WS:
            i += 1
        j = i
        while j < n and text[j] not in ";=" + WS:
            j += 1
        name = text[i:j]
        if not is_token(name):
            raise ParseError(400, f"bad parameter in {what}")
        while j < n and text[j] in WS:
            j += 1
        value: Optional[str] = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in WS:
                j += 1
            if j < n and text[j] == '"':
                end = scan_quoted(text, j)
                value = text[j:end]
                j = end
            else:
                k = j
                while k < n and text[k] not in ";" + WS:
                    k += 1
                value = text[j:k]
                if not value or not (is_token(value) or _is_gen_value(value)):
                    raise ParseError(400, f"bad parameter value in {what}")
                j = k
        params.append((name, value))
        i = j
    return tuple(params)


def split_plain_params(text: str) -> Params:
    """L{parse_header_params} for a non-empty C{text} known to be C{*( ";" token [ "="
    ( token / host ) ] )} (no white space, no quoted strings): split it."""
    params = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params.append((name, value if eq else None))
    return tuple(params)


def _is_gen_value(value: str) -> bool:
    return not value.strip(_GEN_CHARS)
