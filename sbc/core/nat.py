# -*- test-case-name: tests.core.test_nat -*-
"""
NAT handling as pure functions: they take a message and explicit addresses and return a new
message or a verdict, never touching a socket.

Here: NAT detection (Kamailio's C{nat_uac_test} and C{client_nat_test} of nathelper
and nat_traversal, with their private ranges configurable), the server-transport rules of
RFC 3261 §18.2.1 and RFC 3581 (C{received} and C{rport} on the top Via), and where a
response goes (RFC 3261 §18.2.2, RFC 3581 §4).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional, Union

from sbc.core.address import DEFAULT_PORTS, WEBSOCKET, Address, ip_of, normalise_host
from sbc.core.errors import ParseError
from sbc.core.message import Message, Request
from sbc.core.sdp import SdpError, media_connections, parse_sdp, session_connection
from sbc.core.syntax import set_param
from sbc.core.uri import SipUri, Via

__all__ = [
    "NatPolicy",
    "DEFAULT_PRIVATE_RANGES",
    "is_rfc1918",
    "stamp_via",
    "response_target",
    "PrivateRanges",
    "BASE_RANGES",
    "EXTRA_RANGES",
    "nat_uac_test",
    "client_nat_test",
    "NAT_FLAGS",
]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: nathelper's and nat_traversal's base list: RFC 1918, RFC 6598 (CGNAT), RFC 7335 (192.0.0.0/29).
BASE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/29")
#: Added to nathelper's list when nat_addr_mode = 1 (the default): IETF protocol assignments.
EXTRA_RANGES = ("192.0.0.0/24",)
#: Every nat_uac_test bit.
NAT_FLAGS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


#: PrivateRanges keeps this many answers; it forgets them all when full.
_MEMO_SIZE = 4096
#: The longest IP literal (bracketed IPv6 with an IPv4 tail): longer hosts are not kept.
_MEMO_KEY = 47


@dataclass(frozen=True)
class PrivateRanges:
    """Networks whose addresses count as private (IPv4 and, for sbc's tests, IPv6 ULA).

    The answer for a host is kept (a bounded memo: hosts repeat across a call's messages,
    and testing an address against each network costs microseconds)."""

    networks: tuple[Network, ...]
    _memo: dict[str, bool] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def of(cls, cidrs: Iterable[str]) -> PrivateRanges:
        """Build from CIDR strings.

        @raise ValueError: a string is not a network."""
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))

    def contains(self, host: Optional[str]) -> bool:
        """Whether C{host} is an IP literal inside one of the networks (names: no)."""
        if not host:
            return False
        memo = self._memo
        known = memo.get(host)
        if known is not None:
            return known
        found = self._lookup(host)
        if len(host) <= _MEMO_KEY:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[host] = found
        return found

    def _lookup(self, host: str) -> bool:
        ip = ip_of(host)
        if ip is None:
            return False
        version = ip.version
        for net in self.networks:
            if net.version == version and ip in net:
                return True
        return False


#: sbc's default private ranges: nathelper's base list plus IPv6 unique local addresses, so
#: that IPv6 test networks can sit behind NAT too (the [nat] private_ranges default).
DEFAULT_PRIVATE_RANGES = BASE_RANGES + ("fc00::/7",)


@dataclass(frozen=True)
class NatPolicy:
    """
    The C{[nat]} section: when a client counts as NATed and what is fixed then.

    @ivar nat_uac_test: the flags that mark a client as NATed (19 = 1+2+16).
    @ivar contact_fix: C{alias} (add ;alias=, resolve it on the way back), C{rewrite}
        (fix_nated_contact) or C{off}.
    @ivar register_fix: C{received} (the binding keeps the NAT address) or C{off}.
    @ivar force_rport: always stamp rport (Kamailio's force_rport()).
    @ivar fix_nated_sdp: fix_nated_sdp flags applied to SDP from NATed clients (0: none).
    """

    nat_uac_test: int = 19
    contact_fix: str = "alias"
    register_fix: str = "received"
    force_rport: bool = True
    ranges: PrivateRanges = None  # type: ignore[assignment]
    fix_nated_sdp: int = 0

    def __post_init__(self) -> None:
        if self.ranges is None:
            object.__setattr__(
                self, "ranges", PrivateRanges.of(DEFAULT_PRIVATE_RANGES + EXTRA_RANGES)
            )


def _same_ip(host: str, source: str) -> bool:
    """nat_uac_test bit 2's comparison: the textual host equals the source address (IPv6 with or
    without brackets, any case); host names never do (no DNS)."""
    ip = ip_of(host)
    return ip is not None and ip == ip_of(source)


def _first_contact_uri(message: Message) -> Optional[SipUri]:
    try:
        if message.contact_star or not message.contacts:
            return None
        uri = message.contacts[0].uri
    except ParseError:  # an unparsable Contact makes the test false, as in Kamailio
        return None
    return uri if isinstance(uri, SipUri) else None


def _sdp_of(message: Message):  # type: ignore[no-untyped-def]
    if not message.body:
        return None
    content_type = (message.get("content-type") or "application/sdp").split(";")[0].strip()
    if content_type.lower() != "application/sdp":
        return None
    try:
        return parse_sdp(message.body)
    except SdpError:
        return None


def _sdp_private(message: Message, ranges: PrivateRanges) -> bool:
    sdp = _sdp_of(message)
    if sdp is None:
        return False
    for address in media_connections(sdp):
        if address is None:
            continue
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # as Kamailio's code: scanning stops at the first non-IPv4 address
        if ip.version != 4 or address == "0.0.0.0":
            return False
        if ranges.contains(address):
            return True
    return False


def _sdp_differs(message: Message, source: str) -> bool:
    sdp = _sdp_of(message)
    if sdp is None:
        return False
    session = session_connection(sdp)
    return session is not None and not _same_ip(session, source)


def _destination_test(message: Message, destination: Optional[SipUri]) -> bool:
    """nat_uac_test bit 512 (destination test), for what sbc supports (no WebSocket transports)."""
    if isinstance(message, Request):
        if destination is None or not isinstance(message.uri, SipUri):
            return False
        uri = message.uri
        port = lambda u: u.port or (5061 if u.transport == "tls" else 5060)  # noqa: E731
        if port(destination) != port(uri):
            return True
        a, b = destination.host_bare, uri.host_bare
        a_ip, b_ip = _is_ip(a), _is_ip(b)
        if a_ip != b_ip:
            return True
        return not _same_ip(a, b) if a_ip else a != b
    vias = message.vias
    if len(vias) < 2:
        return False
    via = vias[1]
    default = DEFAULT_PORTS.get(via.transport.lower(), 5060)
    if via.rport and int(via.rport) != (via.port or default):
        return True
    if via.received is None:
        return False
    return not _same_ip(via.received, via.host_bare) if _is_ip(via.host_bare) else True


def _is_ip(host: str) -> bool:
    return ip_of(host) is not None


def nat_uac_test(
    message: Message,
    source: Address,
    flags: int,
    ranges: PrivateRanges,
    destination: Optional[SipUri] = None,
) -> bool:
    """
    Kamailio nathelper's C{nat_uac_test(flags)}: true when any selected test says the
    sender is behind NAT (tests run in Kamailio's order 16, 2, 1, 8, 4, 32, 64, 128, 256,
    512).  C{source} is where the message came from; C{destination} is C{$du} for bit 512.
    """
    via = message.top_via
    if flags & 16 and source.port != (via.port or 5060):
        return True
    if flags & 2 and not _same_ip(via.host, source.host):
        return True
    contact = _first_contact_uri(message) if flags & (1 | 128) else None
    if flags & 1 and contact is not None and ranges.contains(contact.host):
        return True
    if flags & 8 and _sdp_private(message, ranges):
        return True
    if flags & 4 and ranges.contains(via.host):
        return True
    if flags & 32 and ranges.contains(source.host):
        return True
    # bit 64: the source connection is a WebSocket (RFC 7118 clients are always "behind
    # NAT": their Via and Contact hosts are made-up .invalid names).
    if flags & 64 and source.transport in WEBSOCKET:
        return True
    if flags & 128 and contact is not None and source.port != (contact.port or 5060):
        return True
    if flags & 256 and _sdp_differs(message, source.host):
        return True
    return bool(flags & 512) and _destination_test(message, destination)


def client_nat_test(message: Message, source: Address, flags: int, ranges: PrivateRanges) -> bool:
    """
    nat_traversal's C{client_nat_test(type)}: 1 Contact private, 2 Via host or
    port differs from the source (ports compared, unlike nathelper's bit 2), 4 Via private.
    """
    if flags & 1:
        contact = _first_contact_uri(message)
        if contact is not None and ranges.contains(contact.host):
            return True
    via = message.top_via
    if flags & 2 and (not _same_ip(via.host, source.host) or source.port != (via.port or 5060)):
        return True
    return bool(flags & 4) and ranges.contains(via.host)


def is_rfc1918(host: str, nat_addr_mode: int = 1) -> bool:
    """Kamailio's C{is_rfc1918()}: IPv4 only, the base list (+ 192.0.0.0/24 in mode 1)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 4 and (_RFC1918_MODE1 if nat_addr_mode == 1 else _RFC1918).contains(host)


#: is_rfc1918's ranges, built once (not per call).
_RFC1918 = PrivateRanges.of(BASE_RANGES)
_RFC1918_MODE1 = PrivateRanges.of(BASE_RANGES + EXTRA_RANGES)


def stamp_via(request: Request, host: str, port: int, *, force_rport: bool = False) -> Request:
    """
    Add C{received} and fill C{rport} on the top Via, as the server transport must.

    C{received} is added when the sent-by host is not the packet's source address (RFC 3261
    §18.2.1) or when C{rport} was asked for (RFC 3581 §4); C{rport} gets the source port when
    present without a value, or always with C{force_rport} (Kamailio's C{force_rport()}).
    @param host: the source IP address of the packet.
    @param port: the source port of the packet.
    @return: C{request} itself when nothing needed changing, else a new request.
    """
    via = request.top_via
    source = normalise_host(host)
    wants_rport = force_rport or via.rport == ""
    params = via.params
    if wants_rport:
        params = set_param(params, "rport", str(port))
    if wants_rport or normalise_host(via.host) != source:
        params = set_param(params, "received", source)
    if params is via.params:
        return request
    stamped = request.with_top_via(via.evolve(params=params))  # one copy of the Via
    assert isinstance(stamped, Request)
    return stamped


def response_target(via: Via) -> tuple[str, int]:
    """
    Where a response to a request with top Via C{via} is sent over an unreliable transport
    (or over a new connection when the original one is gone).

    Order per RFC 3261 §18.2.2 and RFC 3581 §4: C{maddr}; then C{received} with the
    C{rport} value or the sent-by port; then the sent-by host and port.
    @return: (bare host, port).
    """
    default = DEFAULT_PORTS.get(via.transport.lower(), 5060)
    # The three parameters in one pass over them (the first of each name, any case; a
    # valueless one reads as "").
    rport_text = maddr = received = None
    for key, value in via.params:
        name = key.lower()
        if name == "rport":
            if rport_text is None:
                rport_text = value or ""
        elif name == "maddr":
            if maddr is None:
                maddr = value or ""
        elif name == "received" and received is None:
            received = value or ""
    rport: Optional[int] = None
    if rport_text:
        rport = int(rport_text)
    port = rport or via.port or default
    if maddr:
        return normalise_host(maddr), via.port or default
    if received:
        return normalise_host(received), port
    return normalise_host(via.host), port
