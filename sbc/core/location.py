# -*- test-case-name: tests.core.test_proxy -*-
"""
The proxy's side of the registrar (Kamailio registrar's save/lookup): the branches a
lookup makes from a user's bindings, the operator event of a REGISTER, and the edge-mode
Path (RFC 3327) entries that bring requests back to a NAT binding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Union

from sbc.core.address import Address
from sbc.core.effects import Registered
from sbc.core.message import Request
from sbc.core.natfix import AliasError, handle_ruri_alias
from sbc.core.registrar import Registrar, aor_of
from sbc.core.relaypolicy import SIGNATURE_PARAM, RouteSigner
from sbc.core.routing import Hop, uri_target, with_routes
from sbc.core.uri import SipUri, parse_uri, unescape_param

__all__ = ["location_hops", "registration_event", "path_target"]

HopTarget = Callable[[SipUri], Union[Address, SipUri, None]]


def location_hops(
    registrar: Registrar, request: Request, now: float, hop_target: HopTarget
) -> Optional[list[Hop]]:
    """lookup("location"): a hop per live binding of the Request-URI's user (None: never
    registered).  A binding with a Path is reached through its edge proxy (RFC 3327); a
    TCP/TLS binding over the connection it registered on; a NATed one at its NAT address
    from the socket it was made with; others at their Contact (or its C{;alias=})."""
    uri = request.uri
    if not isinstance(uri, SipUri) or uri.user is None:
        return None
    bindings = registrar.lookup(uri.user, now)
    if bindings is None:
        return None
    hops: list[Hop] = []
    for binding in bindings:
        branch_request = request.with_uri(binding.uri)
        if binding.path:
            # Not the binding itself: the edge proxy may be blocklisted like any next hop.
            first = binding.path[0].uri
            target = hop_target(first) if isinstance(first, SipUri) else None
            if target is not None:
                hops.append(Hop(with_routes(branch_request, list(binding.path)), target, None))
            continue
        if binding.source.reliable:
            hops.append(Hop(branch_request, binding.source, binding.local, True))
        elif binding.received is not None:
            hops.append(Hop(branch_request, binding.received, binding.local, True))
        elif (hop := contact_hop(branch_request, hop_target)) is not None:
            hops.append(hop)
    return hops


def contact_hop(request: Request, hop_target: HopTarget) -> Optional[Hop]:
    """The hop to a binding's Contact: its C{;alias=} address (nathelper's
    handle_ruri_alias, the alias taken out) or the address it names."""
    try:
        aliased, alias = handle_ruri_alias(request)
    except AliasError:
        alias = None
    if alias is not None:
        return Hop(aliased, alias, None, True)
    uri = request.uri
    target = hop_target(uri) if isinstance(uri, SipUri) else None
    return Hop(request, target, None, True) if target is not None else None


def binding_set(registrar: Registrar, user: str, now: float) -> frozenset:
    """What an operator's line about a user's registration reflects: each live binding's
    contact, Call-ID (a phone that restarted) and where it is reached, so a refresh that
    changes nothing is told apart."""
    live = registrar.lookup(user, now) or []
    return frozenset((str(b.uri), b.call_id, b.source, b.received) for b in live)


def registration_event(
    registrar: Registrar,
    request: Request,
    source: Address,
    natted: bool,
    now: float,
    before: Optional[frozenset] = None,
) -> Optional[Registered]:
    """The operator's line about a saved REGISTER; None for a refresh that left the
    user's bindings as they were (C{before}): at 100,000 phones refreshing every minute,
    a line per REGISTER would be the log's whole content."""
    user = aor_of(request.to.uri) or "?"
    live = registrar.lookup(user, now) or []
    if before is not None and before == binding_set(registrar, user, now):
        return None
    return Registered(user, str(source), len(live), "yes" if natted else "no")


def path_target(consumed: tuple, signer: RouteSigner) -> Optional[Address]:
    """The NAT address our own Path entry carried (C{;received=}, signed by us), if any."""
    for entry in consumed:
        uri = entry.uri
        value = uri.param("received") if isinstance(uri, SipUri) else None
        if value and signer.valid(uri.param(SIGNATURE_PARAM), value):
            parsed = parse_uri(unescape_param(value))
            if isinstance(parsed, SipUri):
                return uri_target(parsed)
    return None
