# -*- test-case-name: tests.core.test_locate -*-
"""
Locating SIP servers (RFC 3263, RFC 2782; Kamailio core DNS), the decisions only: what to ask
DNS first for a URI, in which order SRV and NAPTR answers are tried (with an injected random
source), and a cache with TTL clamping and negative entries driven by C{now}.  Fetching the
records is the adapter's job (the DNS issue wires a twisted.names resolver to this).
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import Optional, Union

from sbc.core.address import DEFAULT_PORTS, Address, normalise_host
from sbc.core.uri import SipUri, is_ip_literal

__all__ = [
    "SrvRecord",
    "NaptrRecord",
    "Direct",
    "Lookup",
    "first_step",
    "order_srv",
    "order_naptr",
    "NAPTR_SERVICES",
    "SRV_PREFIX",
    "DnsCache",
]

#: NAPTR services sbc can use, and the transport each means (RFC 3263 §4.1).
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
#: SRV owner-name prefix per transport.
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
#: Kamailio's default transport preferences (dns_udp_pref etc.): higher is preferred.
DEFAULT_PREFERENCES = {"udp": 30, "tcp": 20, "tls": 10}


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class NaptrRecord:
    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True)
class Direct:
    """No query needed: the URI names the address itself."""

    address: Address


@dataclass(frozen=True)
class Lookup:
    """
    Ask DNS: C{queries} in order (each a (type, name)), the first that answers wins.

    @ivar port: the port to use with A/AAAA answers (from the URI or the default).
    @ivar transport: the transport when known (None: decided by NAPTR/SRV).
    """

    queries: tuple[tuple[str, str], ...]
    port: int
    transport: Optional[str]


def first_step(
    uri: SipUri, try_naptr: bool = True, transports: tuple[str, ...] = ("udp", "tcp", "tls")
) -> Union[Direct, Lookup]:
    """
    RFC 3263 §4 for a URI: numeric host → no query; explicit port → A/AAAA only;
    transport but no port → SRV of that transport, then A/AAAA; neither
    → NAPTR (with C{try_naptr}), then SRV of every transport sbc serves (the RFC way, not
    the UDP-only shortcut of Kamailio without DNS failover), then A/AAAA over UDP.
    """
    host = uri.param("maddr") or uri.host
    explicit = uri.param("transport")
    transport = explicit or ("tls" if uri.secure else None)
    transport = transport.lower() if transport else None
    if is_ip_literal(host):
        chosen = transport or "udp"
        port = uri.port or DEFAULT_PORTS.get(chosen, 5060)
        return Direct(Address(chosen, normalise_host(host), port))
    name = host.rstrip(".")
    if uri.port is not None:
        return Lookup((("A", name), ("AAAA", name)), uri.port, transport or "udp")
    if transport is not None:
        prefix = SRV_PREFIX.get(transport)
        queries = ((("SRV", prefix + name),) if prefix else ()) + (("A", name), ("AAAA", name))
        return Lookup(queries, DEFAULT_PORTS.get(transport, 5060), transport)
    candidates = [t for t in transports if not uri.secure or t == "tls"]
    queries: tuple[tuple[str, str], ...] = (("NAPTR", name),) if try_naptr else ()
    queries += tuple(("SRV", SRV_PREFIX[t] + name) for t in candidates)
    queries += (("A", name), ("AAAA", name))
    return Lookup(queries, 5061 if uri.secure else 5060, "tls" if uri.secure else None)


def order_srv(records: list[SrvRecord], rng: Optional[Random] = None) -> list[SrvRecord]:
    """
    The order to try SRV records in.  Without C{rng} (C{dns_srv_lb} off): priority
    ascending, weight descending, answer order for ties.  With C{rng} (RFC 2782):
    within each priority group, repeatedly draw r in 1..sum(weights) over the untried
    records and take the first whose running sum reaches r; weight-0 records come last in
    their group unless every weight is 0.
    """
    if rng is None:
        return sorted(records, key=lambda r: (r.priority, -r.weight))
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        weighted = [r for r in group if r.weight > 0]
        zero = [r for r in group if r.weight == 0]
        while weighted:
            total = sum(r.weight for r in weighted)
            draw = rng.randint(1, total)
            running = 0
            for record in weighted:
                running += record.weight
                if running >= draw:
                    ordered.append(record)
                    weighted.remove(record)
                    break
        ordered.extend(zero)
    return ordered


def order_naptr(
    records: list[NaptrRecord],
    ignore_rfc: bool = True,
    preferences: Optional[dict[str, int]] = None,
) -> list[tuple[NaptrRecord, str]]:
    """
    Usable NAPTR records (flag C{s}, empty regexp, a service sbc serves, transport not
    disabled by a negative preference) with their transport, in the order to try them:
    with C{ignore_rfc} (Kamailio's dns_naptr_ignore_rfc, on by default) the local transport
    preference wins and order/preference break ties; without it, order then preference (RFC 3403).
    """
    prefs = preferences or DEFAULT_PREFERENCES
    usable = []
    for record in records:
        transport = NAPTR_SERVICES.get(record.service.upper())
        if record.flags.lower() != "s" or record.regexp or transport is None:
            continue
        if prefs.get(transport, 0) < 0:
            continue
        usable.append((record, transport))
    if ignore_rfc:
        return sorted(usable, key=lambda x: (-prefs.get(x[1], 0), x[0].order, x[0].preference))
    return sorted(usable, key=lambda x: (x[0].order, x[0].preference))


class DnsCache:
    """
    Answers by (name, type), each kept for its TTL clamped to [min_ttl, max_ttl];
    failed lookups kept as negative entries for C{negative_ttl}.  Time is C{now}.
    """

    def __init__(
        self,
        min_ttl: int = 0,
        max_ttl: int = 2**31 - 1,
        negative_ttl: int = 60,
        limit: int = 20_000,
    ) -> None:
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.limit = limit
        self._entries: dict[tuple[str, str], tuple[float, Optional[list]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _make_room(self, key: tuple[str, str], now: float) -> None:
        """At the limit (cf. Kamailio dns_cache_mem): drop expired entries, then the oldest ones."""
        if key in self._entries or len(self._entries) < self.limit:
            return
        for old in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[old]
        while len(self._entries) >= self.limit:
            del self._entries[next(iter(self._entries))]

    def put(self, name: str, kind: str, records: list, ttl: int, now: float) -> float:
        """Cache an answer; returns when it expires."""
        expires = now + min(max(ttl, self.min_ttl), self.max_ttl)
        key = (name.lower(), kind)
        self._make_room(key, now)
        self._entries[key] = (expires, records)
        return expires

    def put_negative(self, name: str, kind: str, now: float) -> None:
        """Remember that (name, type) has no answer, unless negative caching is off."""
        if self.negative_ttl > 0:
            key = (name.lower(), kind)
            self._make_room(key, now)
            self._entries[key] = (now + self.negative_ttl, None)

    def get(self, name: str, kind: str, now: float) -> tuple[bool, Optional[list]]:
        """(hit, records): a hit with None records is a cached failure; no hit: ask DNS."""
        entry = self._entries.get((name.lower(), kind))
        if entry is None or entry[0] <= now:
            self._entries.pop((name.lower(), kind), None)
            return False, None
        return True, entry[1]

    def view(self, now: float) -> list[dict]:
        """Live entries (for the dns_view admin command)."""
        return [
            {
                "name": name,
                "type": kind,
                "expires": int(expires - now),
                "negative_entry": records is None,
                "records": len(records or []),
            }
            for (name, kind), (expires, records) in sorted(self._entries.items())
            if expires > now
        ]

    def clear(self) -> None:
        """dns_delete_all."""
        self._entries.clear()
