# -*- test-case-name: tests.core.test_proxy -*-
"""Who sbc is: the addresses and domains that make a URI "myself" (Kamailio's C{myself})."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from sbc.core.address import Address, normalise_host
from sbc.core.uri import SipUri

__all__ = ["LocalIdentity"]


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

    def is_local_domain(self, uri: SipUri) -> bool:
        """Does C{uri}'s host name one of our domains or addresses, whatever the port
        (Kamailio's C{is_from_local}/C{is_uri_host_local} over the domain table)?"""
        host = uri.host_bare
        return host in self.domains or host in self.hosts
