# -*- test-case-name: tests.core.test_proxy -*-
"""
What sbc does with a request, decided without I/O.

Until the stateful proxy lands, sbc answers OPTIONS addressed to itself with 200 and
refuses everything else with a precise status; each decision is a L{Response} to send
back, or L{None} for "say nothing" (ACK).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from sbc.core.address import Address, normalise_host
from sbc.core.message import Request, Response
from sbc.core.reply import make_response
from sbc.core.uri import OpaqueUri, SipUri

__all__ = ["LocalIdentity", "ALLOW", "SUPPORTED", "ACCEPT", "handle_request"]

#: Methods sbc handles itself; grows as the proxy and registrar land.
ALLOW = ("OPTIONS",)
#: Option tags sbc supports (RFC 3261 §20.37); none yet.
SUPPORTED: tuple[str, ...] = ()
#: Bodies sbc understands.
ACCEPT = ("application/sdp",)


@dataclass(frozen=True)
class LocalIdentity:
    """
    The names sbc answers to (Kamailio's C{myself}): listen and advertised addresses, and
    the C{[core] alias} domains.

    @ivar hosts: bare, lower-cased IP addresses and host names of our sockets.
    @ivar ports: the ports we listen on (a URI with another port is not for us).
    @ivar domains: alias domains, matched whatever the port.
    """

    hosts: frozenset[str]
    ports: frozenset[int]
    domains: frozenset[str] = frozenset()

    @classmethod
    def from_addresses(
        cls,
        listen: Iterable[Address],
        advertise: Iterable[tuple[str, Optional[int]]] = (),
        domains: Iterable[str] = (),
    ) -> LocalIdentity:
        """Collect the identity from listen addresses, advertised (host, port)s and aliases."""
        hosts = set()
        ports = set()
        for address in listen:
            hosts.add(normalise_host(address.host))
            ports.add(address.port)
        for host, port in advertise:
            hosts.add(normalise_host(host))
            if port is not None:
                ports.add(port)
        return cls(frozenset(hosts), frozenset(ports), frozenset(d.lower() for d in domains))

    def is_myself(self, uri: SipUri) -> bool:
        """Say whether C{uri} names sbc itself (an alias domain, or one of our sockets)."""
        host = uri.host_bare
        if host in self.domains:
            return True
        if host not in self.hosts:
            return False
        port = uri.port if uri.port is not None else (5061 if uri.secure else 5060)
        return port in self.ports


def handle_request(request: Request, identity: LocalIdentity) -> Optional[Response]:
    """Decide the answer to C{request} (already stamped by the transport layer)."""
    if request.method == "ACK":
        return None
    uri = request.uri
    if isinstance(uri, OpaqueUri) and uri.scheme.lower() != "tel":
        return make_response(request, 416)
    mine = isinstance(uri, SipUri) and identity.is_myself(uri)
    # As the UAS we check Require (RFC 3261 §8.2.2.3), as a proxy Proxy-Require (§16.3).
    required = [tag for tag in request.values("require" if mine else "proxy-require") if tag]
    unsupported = [tag for tag in required if tag.lower() not in SUPPORTED]
    if unsupported:
        return make_response(request, 420, headers=[("Unsupported", ", ".join(unsupported))])
    if mine and request.method == "OPTIONS" and uri.user is None:
        return make_response(
            request,
            200,
            headers=[
                ("Allow", ", ".join(ALLOW)),
                ("Supported", ", ".join(SUPPORTED)),
                ("Accept", ", ".join(ACCEPT)),
            ],
        )
    if request.max_forwards == 0:
        return make_response(request, 483)
    if mine:
        return make_response(request, 501)
    return make_response(request, 403, "Relaying Not Implemented")
