# -*- test-case-name: tests.core.test_routing -*-
"""
Record-Route and loose routing (RFC 3261 §16.6, §16.12; Kamailio rr module),
and turning a next-hop URI into a transport address.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Optional, Union

from sbc.core.address import DEFAULT_PORTS, TRANSPORTS, Address, normalise_host
from sbc.core.identity import LocalIdentity
from sbc.core.message import Request
from sbc.core.uri import CACHED_TEXT, NameAddr, SipUri, format_host, is_ip_literal

__all__ = [
    "Hop",
    "record_route_value",
    "RouteOutcome",
    "LooseRoute",
    "loose_route",
    "uri_target",
    "with_routes",
]


class Hop(NamedTuple):
    """
    One branch to create: the request for it, the next hop (an address, or a URI whose host
    needs DNS), and the socket to send from (None: any socket that fits the next hop).

    @ivar binding: the next hop comes from a location binding (its NAT address, alias or
        connection): a timeout there means the binding went stale, which is the
        registrar's business, so it does not blocklist the address.
    """

    request: Request
    target: Union[Address, SipUri]
    preferred: Optional[Address]
    binding: bool = False


def record_route_value(
    socket: Address,
    *,
    ftag: Optional[str] = None,
    r2: bool = False,
    advertise: Optional[tuple[str, Optional[int]]] = None,
    params: str = "",
) -> str:
    """
    The Record-Route value for one of our sockets (record_route()): C{<sip:host[:port][;transport=x]
    [;r2=on];lr[;ftag=tag]>}, the port written only when it is not 5060, the transport only
    when it is not UDP.
    """
    host, port = socket.host, socket.port
    if advertise is not None:
        host = advertise[0]
        port = advertise[1] if advertise[1] is not None else port
    uri = f"sip:{format_host(host)}"
    if port != 5060:
        uri += f":{port}"
    if socket.transport != "udp":
        # RFC 7118 §5.2 registers one URI transport, "ws", for WS and WSS alike.
        uri += f";transport={'ws' if socket.transport == 'wss' else socket.transport}"
    if r2:
        uri += ";r2=on"
    uri += ";lr"
    if ftag:
        uri += f";ftag={ftag}"
    return f"<{uri}{params}>"


class RouteOutcome(enum.IntEnum):
    """Kamailio's C{loose_route()} return codes."""

    NEXT_HOP = 1
    NO_ROUTE = -1
    PRELOADED_CONSUMED = -3


class LooseRoute(NamedTuple):
    """
    The result of L{loose_route} (a named tuple: one is made for every request, and a
    frozen dataclass costs more to build).

    @ivar request: the request with our Route entries removed (and strict-router fixes).
    @ivar next_hop: where to send it, or L{None} to route by the Request-URI.
    @ivar consumed: our Route entries that were removed, top first.
    """

    request: Request
    outcome: RouteOutcome
    next_hop: Optional[SipUri] = None
    consumed: tuple[NameAddr, ...] = ()


def with_routes(request: Request, routes: list[NameAddr]) -> Request:
    """Return C{request} with its Route header replaced by C{routes} (none: removed)."""
    new = request.without("route")
    if routes:
        new = new.with_header_first("Route", ", ".join(str(r) for r in routes))
    assert isinstance(new, Request)
    return new


def _is_mine(entry: NameAddr, identity: LocalIdentity) -> bool:
    return isinstance(entry.uri, SipUri) and identity.is_myself(entry.uri)


def loose_route(request: Request, identity: LocalIdentity) -> LooseRoute:
    """Process the Route header as Kamailio's C{loose_route()} does."""
    routes = list(request.routes)
    if not routes:
        return LooseRoute(request, RouteOutcome.NO_ROUTE)
    uri = request.uri
    in_dialog = request.to.tag is not None
    ruri_mine = isinstance(uri, SipUri) and identity.is_myself(uri)
    consumed: list[NameAddr] = []
    if in_dialog and ruri_mine:
        # The previous hop was a strict router: the R-URI is our Record-Route, the real
        # target is the last Route entry (RFC 3261 §16.4).
        target = routes.pop()
        consumed.append(NameAddr(None, uri))  # our Record-Route entry, as the R-URI
        while routes and _is_mine(routes[0], identity):
            consumed.append(routes.pop(0))
        if not isinstance(target.uri, SipUri):
            return LooseRoute(with_routes(request, routes), RouteOutcome.NO_ROUTE)
        new = with_routes(request, routes).with_uri(target.uri)
        next_hop = routes[0].uri if routes and isinstance(routes[0].uri, SipUri) else None
        return LooseRoute(new, RouteOutcome.NEXT_HOP, next_hop, tuple(consumed))
    if _is_mine(routes[0], identity):
        top = routes.pop(0)
        consumed.append(top)
        if (
            isinstance(top.uri, SipUri)
            and top.uri.has_param("r2")
            and routes
            and _is_mine(routes[0], identity)
        ):
            consumed.append(routes.pop(0))
        if not routes:
            new = with_routes(request, routes)
            if in_dialog:
                return LooseRoute(new, RouteOutcome.NEXT_HOP, None, tuple(consumed))
            return LooseRoute(new, RouteOutcome.PRELOADED_CONSUMED, None, tuple(consumed))
    next_entry = routes[0]
    if not isinstance(next_entry.uri, SipUri):
        new = with_routes(request, routes)
        return LooseRoute(new, RouteOutcome.NO_ROUTE, None, tuple(consumed))
    if next_entry.uri.has_param("lr"):
        return LooseRoute(
            with_routes(request, routes), RouteOutcome.NEXT_HOP, next_entry.uri, tuple(consumed)
        )
    # Strict router next: its URI becomes the R-URI, the old R-URI the last Route entry.
    routes.pop(0)
    routes.append(NameAddr(None, request.uri))
    new = with_routes(request, routes).with_uri(next_entry.uri)
    return LooseRoute(new, RouteOutcome.NEXT_HOP, next_entry.uri, tuple(consumed))


#: uri_target keeps this many answers, by URI text as received; forgets them all when full.
_TARGETS_SIZE = 4096
_targets: dict[str, Optional[Address]] = {}
_UNKNOWN = object()


def uri_target(uri: SipUri) -> Optional[Address]:
    """
    The transport address a SIP URI names when its host (or maddr) is an IP literal; L{None}
    when it needs DNS (RFC 3263) or names a transport sbc does not speak.  The answer for a
    parsed URI is kept by its text (a bounded memo: the same contacts and Request-URIs come
    back for every request of a dialog; texts longer than the parse caches keep are not).
    """
    text = uri.raw
    if text is None or len(text) > CACHED_TEXT:
        return _uri_target(uri)
    target = _targets.get(text, _UNKNOWN)
    if target is _UNKNOWN:
        target = _uri_target(uri)
        if len(_targets) >= _TARGETS_SIZE:
            _targets.clear()
        _targets[text] = target
    return target  # type: ignore[return-value]


def _uri_target(uri: SipUri) -> Optional[Address]:
    host = uri.param("maddr") or uri.host
    if not is_ip_literal(host):
        return None
    transport = uri.transport
    if transport not in TRANSPORTS:
        return None
    port = uri.port if uri.port is not None else DEFAULT_PORTS[transport]
    return Address(transport, normalise_host(host), port)
