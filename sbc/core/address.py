# -*- test-case-name: tests.core.test_address -*-
"""
Transport addresses: what C{[core] listen} names and where a message came from.

Hosts are kept bare (IPv6 without brackets) and lower-cased so that two spellings of one
address compare equal; L{format_host} adds the brackets back where SIP wants them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Union

from sbc.core.syntax import cached_when_short, is_digits
from sbc.core.uri import format_host

__all__ = [
    "TRANSPORTS",
    "DEFAULT_PORTS",
    "RELIABLE",
    "WEBSOCKET",
    "Address",
    "parse_address",
    "normalise_host",
    "ip_of",
]

#: Transports sbc listens on (ws/wss: SIP over WebSocket, RFC 7118).
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
#: RFC 3261 §19.1.2 default ports; RFC 6455 §3 for WebSocket.
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}
#: Streams are reliable transports: no retransmissions, replies on the same connection.
RELIABLE = frozenset({"tcp", "tls", "ws", "wss"})
#: WebSocket transports: sbc only accepts these connections, it never opens one (RFC 7118
#: §5: the client's Contact host is made up, it is reached over its own connection only).
WEBSOCKET = frozenset({"ws", "wss"})


@cached_when_short(255)  # host names are at most 253 characters (RFC 1035 §2.3.4)
def normalise_host(host: str) -> str:
    """Return C{host} without IPv6 brackets, lower-cased, IPv6 in its compressed form."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            return host.lower()
    return host.lower()


@cached_when_short(47)  # the longest literal: bracketed IPv6 with an IPv4 tail
def ip_of(host: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    """The IP address C{host} spells (brackets, case and IPv6 zero runs allowed), or
    L{None} for a host name."""
    try:
        return ipaddress.ip_address(normalise_host(host))
    except ValueError:
        return None


@dataclass(frozen=True)
class Address:
    """
    A transport address C{transport:host:port}.

    @ivar transport: C{udp}, C{tcp}, C{tls}, C{ws} or C{wss}.
    @ivar host: bare IP address (IPv6 without brackets).
    @ivar port: the port; 0 asks the system for a free one when listening.
    """

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{format_host(self.host)}:{self.port}"

    @property
    def reliable(self) -> bool:
        """True for stream transports."""
        return self.transport in RELIABLE

    @property
    def family(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.host else 4


def parse_address(text: str) -> Address:
    """
    Parse C{proto:ip[:port]} with IPv6 in brackets (C{tls:[::1]:5061}).

    @raise ValueError: with the expectation, when C{text} is not of that form.
    """
    proto, sep, rest = text.strip().partition(":")
    proto = proto.lower()
    if not sep or proto not in TRANSPORTS:
        raise ValueError("proto:ip:port with proto udp, tcp, tls, ws or wss")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError("an IPv6 address in brackets")
        host, tail = rest[1:end], rest[end + 1 :]
        port_text = tail[1:] if tail.startswith(":") else (None if not tail else "x")
    else:
        host, colon, port_text_ = rest.partition(":")
        port_text = port_text_ if colon else None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("an IP address (IPv6 in brackets)") from None
    if port_text is None:
        port = DEFAULT_PORTS[proto]
    elif is_digits(port_text) and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError("a port number 0..65535")
    return Address(proto, ip.compressed, port)
