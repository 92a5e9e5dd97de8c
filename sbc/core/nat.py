# -*- test-case-name: tests.core.test_nat -*-
"""
NAT handling as pure functions: they take a message and explicit addresses and return a new
message or a verdict, never touching a socket.

So far: the server-transport rules of RFC 3261 §18.2.1 and RFC 3581 (C{received} and
C{rport} on the top Via) and where a response goes (RFC 3261 §18.2.2, RFC 3581 §4).
"""

from __future__ import annotations

from typing import Optional

from sbc.core.address import DEFAULT_PORTS, normalise_host
from sbc.core.message import Header, Request
from sbc.core.uri import Via, split_commas

__all__ = ["stamp_via", "response_target"]


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
    new = via
    if wants_rport:
        new = new.with_param("rport", str(port))
    if wants_rport or normalise_host(via.host) != source:
        new = new.with_param("received", source)
    if new is via:
        return request
    return _replace_top_via(request, new)


def _replace_top_via(message: Request, via: Via) -> Request:
    headers = list(message.headers)
    for i, h in enumerate(headers):
        if h.key == "via":
            rest = split_commas(h.value)[1:]
            headers[i] = Header(h.name, ", ".join([str(via), *rest]))
            break
    new = message.with_headers(headers)
    assert isinstance(new, Request)
    return new


def response_target(via: Via) -> tuple[str, int]:
    """
    Where a response to a request with top Via C{via} is sent over an unreliable transport
    (or over a new connection when the original one is gone).

    Order per RFC 3261 §18.2.2 and RFC 3581 §4: C{maddr}; then C{received} with the
    C{rport} value or the sent-by port; then the sent-by host and port.
    @return: (bare host, port).
    """
    default = DEFAULT_PORTS.get(via.transport.lower(), 5060)
    rport: Optional[int] = None
    if via.rport:
        rport = int(via.rport)
    port = rport or via.port or default
    if via.maddr:
        return normalise_host(via.maddr), via.port or default
    if via.received:
        return normalise_host(via.received), port
    return normalise_host(via.host), port
