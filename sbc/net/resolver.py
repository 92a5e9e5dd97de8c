# -*- test-case-name: tests.net.test_resolver -*-
"""
Locating SIP servers over twisted.names (RFC 3263, RFC 2782; Kamailio core DNS): the adapter
that fetches NAPTR, SRV, A and AAAA records and lets L{sbc.core.locate} decide what to ask
and in which order to try the answers.

A URI becomes the whole ordered list of transport addresses to try: every IP of an SRV
target before the next target, every SRV record of a NAPTR record before the next
NAPTR record.  Raw records are cached, never orders: each L{SipResolver.resolve} draws its
own SRV order, and the failover cursor over the list belongs to the caller (as in Kamailio
tm with use_dns_failover).

DNS answers are untrusted input: records of the wrong type, for another name, malformed or
pointing nowhere are skipped, and DNS trouble of any kind ends in an empty list rather
than an error.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from random import Random
from typing import Any, Optional, Union

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.names import client, dns
from twisted.names.error import AuthoritativeDomainError, DNSNameError
from twisted.python.failure import Failure

from sbc.core.address import WEBSOCKET, Address
from sbc.core.locate import (
    DEFAULT_PREFERENCES,
    SRV_PREFIX,
    Direct,
    DnsCache,
    NaptrRecord,
    SrvRecord,
    first_step,
    order_naptr,
    order_srv,
)
from sbc.core.stats import Statistics
from sbc.core.uri import SipUri
from sbc.net.log import logger

__all__ = ["ResolverSettings", "SipResolver"]

log = logger(__name__)

#: What a cache entry or a lookup holds: IP strings for A/AAAA, parsed SRV or NAPTR records.
Record = Union[str, SrvRecord, NaptrRecord]
#: The twisted.names type code of each record type sbc asks for.
_TYPE_CODES = {"NAPTR": dns.NAPTR, "SRV": dns.SRV, "A": dns.A, "AAAA": dns.AAAA}
#: Bounds on what one zone can make sbc do for one request (Kamailio's resolver, too, looks
#: at no more than 32 NAPTR records and 32 SRV records of a priority): records considered,
#: addresses per SRV target, addresses in all.
MAX_NAPTR = 32
MAX_SRV = 16
MAX_IPS_PER_TARGET = 4
MAX_TARGETS = 16
#: Entries the cache holds at most (expired ones are dropped first, then the oldest).
CACHE_LIMIT = 20_000
#: CNAME chains inside one answer are followed this far.
_MAX_CNAMES = 10


@dataclass(frozen=True)
class ResolverSettings:
    """
    Kamailio's core DNS parameters (same names) plus where to find the name servers.

    @ivar use_dns_cache: keep answers for their TTL; off: no cache, and A/AAAA go through
        the system resolver (C{getaddrinfo}, which honours /etc/hosts).
    @ivar dns_srv_lb: RFC 2782 weighted choice within a priority; off: priority
        ascending, weight descending.
    @ivar dns_try_naptr: ask NAPTR first for a URI with neither port nor transport.
    @ivar dns_try_ipv6: ask AAAA when A gave nothing.
    @ivar dns_naptr_ignore_rfc: local transport preference before NAPTR order.
    @ivar dns_cache_min_ttl: TTLs are raised to at least this (s).
    @ivar dns_cache_max_ttl: TTLs are cut to at most this (s).
    @ivar dns_cache_negative_ttl: how long a name that does not exist is remembered (s).
    @ivar dns_slow_query_ms: queries slower than this are counted as slow (0: off).
    @ivar nameservers: (ip, port) of the servers to ask; empty: those of /etc/resolv.conf.
    @ivar hosts_file: a hosts(5) file whose entries win over DNS when the cache is on
        (C{""}: none).
    @ivar timeout: twisted.names query timeouts: one attempt per value, each the given
        number of seconds.
    """

    use_dns_cache: bool = True
    dns_srv_lb: bool = True
    dns_try_naptr: bool = True
    dns_try_ipv6: bool = True
    dns_naptr_ignore_rfc: bool = True
    dns_cache_min_ttl: int = 0
    dns_cache_max_ttl: int = 2**31 - 1
    dns_cache_negative_ttl: int = 60
    dns_slow_query_ms: int = 0
    nameservers: tuple[tuple[str, int], ...] = ()
    hosts_file: str = "/etc/hosts"
    timeout: tuple[float, ...] = (1, 3)


class SipResolver:
    """
    Turns a SIP URI into the transport addresses to try, in order.

    Counters (when given a L{Statistics}): C{dns_queries} (sent to a name server or the
    system resolver), C{dns_cache_hits}, C{dns_negative_hits} (answered by a negative
    entry), C{dns_failures} (timeouts and server errors; a name that does not exist is
    an answer, not a failure) and C{dns_slow_queries}.

    @ivar settings: the L{ResolverSettings}.
    @ivar transports: the transports sbc serves, in Kamailio's preference order (udp, tcp,
        tls: the order SRV is asked in without NAPTR) whatever order they were
        given in; NAPTR and SRV answers for other transports are skipped.
    """

    def __init__(
        self,
        settings: ResolverSettings,
        transports: tuple[str, ...],
        *,
        reactor: Any,
        rng: Optional[Random] = None,
        stats: Optional[Statistics] = None,
        resolver: Any = None,
    ) -> None:
        """
        @param reactor: the reactor for time, sockets and the thread pool (required: only
            sbc.app picks the global one).
        @param rng: the random source for RFC 2782 weighted choice (default: a fresh one).
        @param resolver: any C{IResolver} to fetch records from instead of a
            C{twisted.names.client.Resolver} built from the settings.
        """
        self.settings = settings
        # WebSocket listeners take connections only: never a transport found in DNS.
        served = dict.fromkeys(t.lower() for t in transports if t.lower() not in WEBSOCKET)
        self.transports = tuple(sorted(served, key=lambda t: -DEFAULT_PREFERENCES.get(t, 0)))
        self._reactor = reactor
        self._rng = (rng or Random()) if settings.dns_srv_lb else None
        self._stats = stats if stats is not None else Statistics()
        self._dns = resolver if resolver is not None else _network_resolver(settings, reactor)
        self._cache: Optional[DnsCache] = None
        self._hosts: Optional[_HostsFile] = None
        if settings.use_dns_cache:
            self._cache = DnsCache(
                settings.dns_cache_min_ttl,
                settings.dns_cache_max_ttl,
                settings.dns_cache_negative_ttl,
                limit=CACHE_LIMIT,
            )
            if settings.hosts_file:
                self._hosts = _HostsFile(settings.hosts_file)
        #: Lookups on the wire, by (name, type): the Deferreds waiting for each.
        self._pending: dict[tuple[str, str], list[Deferred[list[Record]]]] = {}

    # -- public --------------------------------------------------------------------------------
    def resolve(self, uri: SipUri) -> Deferred[list[Address]]:
        """
        The addresses to try for C{uri}, best first, without duplicates.  Never fails:
        an empty list means the URI cannot be resolved now.
        """
        result = Deferred.fromCoroutine(self._resolve(uri))
        result.addErrback(self._bug, uri)
        return result

    def view(self) -> list[dict]:
        """The live cache entries (for the C{dns_view} admin command)."""
        if self._cache is None:
            return []
        return self._cache.view(self._reactor.seconds())

    def clear(self) -> None:
        """Forget every cached answer (C{dns_delete_all})."""
        if self._cache is not None:
            self._cache.clear()

    # -- RFC 3263 expansion ---------------------------------------------------------------------
    async def _resolve(self, uri: SipUri) -> list[Address]:
        host = (uri.param("maddr") or uri.host).rstrip(".").lower()
        if host == "invalid" or host.endswith(".invalid"):
            # RFC 6761 §6.4: never asked of DNS.  RFC 7118 clients name their Contact so;
            # they are reached over their WebSocket connection only.
            return []
        step = first_step(uri, self.settings.dns_try_naptr, self.transports)
        if isinstance(step, Direct):
            return [step.address]
        transport = step.transport or self._plain_transport()
        found: list[Address] = []
        declined = False
        for kind, name in step.queries:
            if kind == "NAPTR":
                found = await self._naptr(name, uri.secure)
            elif kind == "SRV":
                srv_transport = _srv_transport(name)
                if srv_transport is None:
                    continue
                found, no_service = await self._srv(name, srv_transport)
                declined = declined or no_service
            elif declined:
                # RFC 2782: SRV target "." means the service is decidedly not available,
                # so the host's own address is not a fallback.
                break
            elif kind == "A" or (kind == "AAAA" and self.settings.dns_try_ipv6):
                ips = await self._records(name, kind)
                found = [Address(transport, ip, step.port) for ip in ips if isinstance(ip, str)]
            if found:
                break
        return _unique(found)

    async def _naptr(self, name: str, secure: bool) -> list[Address]:
        """Every usable NAPTR record's SRV expansion, NAPTR records in their order."""
        records = [r for r in await self._records(name, "NAPTR") if isinstance(r, NaptrRecord)]
        records = records[:MAX_NAPTR]  # at most 32 NAPTR records, as Kamailio
        found: list[Address] = []
        seen: set[tuple[str, str]] = set()
        for record, transport in order_naptr(records, self.settings.dns_naptr_ignore_rfc):
            if transport not in self.transports or (secure and transport != "tls"):
                continue
            target = record.replacement
            if not target or (target, transport) in seen:
                continue
            seen.add((target, transport))
            addresses, _ = await self._srv(target, transport)
            found += addresses
            if len(found) >= MAX_TARGETS:
                break
        return found[:MAX_TARGETS]

    async def _srv(self, name: str, transport: str) -> tuple[list[Address], bool]:
        """
        The addresses of the SRV records of C{name} in the order to try them (each
        target's IPs together), and whether the answer said "no service here".
        """
        records = [r for r in await self._records(name, "SRV") if isinstance(r, SrvRecord)]
        usable = [r for r in records if r.target and 0 < r.port <= 65535]
        declined = bool(records) and all(not r.target for r in records)
        # A zone may list any number of records: only the first MAX_SRV in the order to
        # try them are looked up, and a request gets at most MAX_TARGETS addresses.
        ordered = order_srv(usable, self._rng)[:MAX_SRV]
        ips = await gatherResults([Deferred.fromCoroutine(self._ips(r.target)) for r in ordered])
        found = [
            Address(transport, ip, record.port)
            for record, target_ips in zip(ordered, ips, strict=True)
            for ip in target_ips[:MAX_IPS_PER_TARGET]
        ]
        return found[:MAX_TARGETS], declined

    async def _ips(self, name: str) -> list[str]:
        """A, then AAAA when A gave nothing and IPv6 is on (dns_try_ipv6)."""
        found = await self._records(name, "A")
        if not found and self.settings.dns_try_ipv6:
            found = await self._records(name, "AAAA")
        return [ip for ip in found if isinstance(ip, str)]

    def _bug(self, reason: Failure, uri: SipUri) -> list[Address]:
        log.failure("resolving {uri}", reason, uri=str(uri))
        return []

    def _plain_transport(self) -> str:
        """The transport for A/AAAA without NAPTR or SRV: UDP (RFC 3263 §4.1), or TCP when
        sbc does not serve UDP."""
        if "udp" in self.transports or "tcp" not in self.transports:
            return "udp"
        return "tcp"

    # -- records: hosts file, cache, shared lookups ---------------------------------------------
    def _records(self, name: str, kind: str) -> Deferred[list[Record]]:
        """The records of C{kind} for C{name}: from the hosts file, the cache, or a lookup
        shared with every other caller asking the same meanwhile.  Never fails."""
        name = name.rstrip(".").lower()
        if not name:
            return succeed([])
        if self._hosts is not None and kind in ("A", "AAAA"):
            listed = self._hosts.lookup(name, kind)
            if listed is not None:
                return succeed(list(listed))
        if self._cache is not None:
            hit, records = self._cache.get(name, kind, self._reactor.seconds())
            if hit:
                self._stats.incr("dns_cache_hits" if records is not None else "dns_negative_hits")
                return succeed(list(records or []))
        key = (name, kind)
        result: Deferred[list[Record]] = Deferred()
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.append(result)
            return result
        self._pending[key] = [result]
        self._fetch(name, kind).addBoth(self._deliver, key)
        return result

    def _deliver(self, outcome: Union[list[Record], Failure], key: tuple[str, str]) -> None:
        waiting = self._pending.pop(key, [])
        if isinstance(outcome, Failure):
            log.failure("DNS lookup {name} {kind}", outcome, name=key[0], kind=key[1])
            outcome = []
        for deferred in waiting:
            deferred.callback(list(outcome))

    def _fetch(self, name: str, kind: str) -> Deferred[list[Record]]:
        self._stats.incr("dns_queries")
        started = self._reactor.seconds()
        if self._cache is None and kind in ("A", "AAAA"):
            pool = self._reactor.getThreadPool()
            found = deferToThreadPool(self._reactor, pool, _system_lookup, name, kind)
            return found.addCallback(self._system_answered, started)
        lookup = {
            "NAPTR": self._dns.lookupNamingAuthorityPointer,
            "SRV": self._dns.lookupService,
            "A": self._dns.lookupAddress,
            "AAAA": self._dns.lookupIPV6Address,
        }[kind]
        answer = maybeDeferred(lookup, name, timeout=self.settings.timeout)
        return answer.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(name, kind, started),
            errbackArgs=(name, kind, started),
        )

    def _answered(self, result: Any, name: str, kind: str, started: float) -> list[Record]:
        now = self._finished(started)
        answers, _authority, additional = result
        records, ttl = _select(name, kind, answers)
        if self._cache is not None:
            if records:
                self._cache.put(name, kind, records, ttl, now)
                if kind == "SRV":
                    self._keep_glue(name, records, additional, now)
            else:
                self._cache.put_negative(name, kind, now)
        return records

    def _failed(self, reason: Failure, name: str, kind: str, started: float) -> list[Record]:
        now = self._finished(started)
        if reason.check(DNSNameError, AuthoritativeDomainError):
            if self._cache is not None:
                self._cache.put_negative(name, kind, now)
            return []
        self._stats.incr("dns_failures")
        log.info(
            "DNS {kind} {name} failed: {error}",
            kind=kind,
            name=name,
            error=reason.getErrorMessage() or reason.type.__name__,
        )
        return []

    def _system_answered(self, ips: list[Record], started: float) -> list[Record]:
        self._finished(started)
        return ips

    def _finished(self, started: float) -> float:
        """Count the query as slow if it was; return the time now."""
        now = self._reactor.seconds()
        limit = self.settings.dns_slow_query_ms
        if limit > 0 and (now - started) * 1000 >= limit:
            self._stats.incr("dns_slow_queries")
        return now

    def _keep_glue(self, name: str, records: list[Record], additional: Any, now: float) -> None:
        """
        Cache the A/AAAA records an SRV answer carried for its targets (additional section), only
        for targets under the SRV name's own domain (C{_sip._udp.example.com} vouches for
        C{*.example.com}, nothing else), and never over a live entry.
        """
        assert self._cache is not None
        domain = ".".join(label for label in name.split(".") if not label.startswith("_"))
        targets = {
            r.target
            for r in records
            if isinstance(r, SrvRecord) and (r.target == domain or r.target.endswith("." + domain))
        }
        for target in sorted(targets):
            for kind in ("A", "AAAA"):
                glue, ttl = _select(target, kind, additional)
                if glue and not self._cache.get(target, kind, now)[0]:
                    self._cache.put(target, kind, glue, ttl, now)


# -- parsing answers (untrusted) -------------------------------------------------------------
def _select(name: str, kind: str, rrs: Any) -> tuple[list[Record], int]:
    """
    The well-formed C{kind} records for C{name} among C{rrs} (following CNAMEs), in answer
    order without duplicates, and the smallest TTL among the records used.
    """
    rrs = [rr for rr in (rrs or ()) if isinstance(rr, dns.RRHeader)]
    owners = {name}
    ttls: list[int] = []
    for _ in range(_MAX_CNAMES):
        grown = False
        for rr in rrs:
            if rr.type != dns.CNAME or _wire_name(rr.name) not in owners:
                continue
            target = _wire_name(getattr(rr.payload, "name", None))
            if target and target not in owners:
                owners.add(target)
                ttls.append(rr.ttl)
                grown = True
        if not grown:
            break
    records: list[Record] = []
    code = _TYPE_CODES[kind]
    for rr in rrs:
        if rr.type != code or _wire_name(rr.name) not in owners:
            continue
        record = _parse(kind, rr.payload)
        if record is not None and record not in records:
            records.append(record)
            ttls.append(rr.ttl)
    ttl = min((t for t in ttls if isinstance(t, int) and t >= 0), default=0)
    return records, ttl


def _parse(kind: str, payload: Any) -> Optional[Record]:
    """One record from the wire, or None when it is not a well-formed C{kind} record."""
    try:
        if kind == "A" and isinstance(payload, dns.Record_A):
            return _usable_ip(ipaddress.IPv4Address(payload.address))
        if kind == "AAAA" and isinstance(payload, dns.Record_AAAA):
            return _usable_ip(ipaddress.IPv6Address(payload.address))
        if kind == "SRV" and isinstance(payload, dns.Record_SRV):
            target = _wire_name(payload.target)
            if target is None:
                return None
            return SrvRecord(payload.priority, payload.weight, payload.port, target)
        if kind == "NAPTR" and isinstance(payload, dns.Record_NAPTR):
            replacement = _wire_name(payload.replacement)
            texts = [_wire_text(c) for c in (payload.flags, payload.service, payload.regexp)]
            if replacement is None or None in texts:
                return None
            flags, service, regexp = texts
            return NaptrRecord(
                payload.order, payload.preference, flags, service, regexp, replacement
            )
    except (ValueError, TypeError, AttributeError):
        return None
    return None


def _usable_ip(ip: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> Optional[str]:
    """The address as text, or None for one no request can be sent to."""
    if ip.is_unspecified or ip.is_multicast:
        return None
    return ip.compressed


def _wire_name(value: Any) -> Optional[str]:
    """A domain name from the wire as lower-case text without the final dot (C{""} for the
    root), or None when it is not a plain ASCII name."""
    raw = value.name if isinstance(value, dns.Name) else value
    if not isinstance(raw, bytes):
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if any(c.isspace() or not c.isprintable() for c in text):
        return None
    return text.rstrip(".").lower()


def _wire_text(value: Any) -> Optional[str]:
    raw = getattr(value, "string", None)
    if not isinstance(raw, bytes):
        return None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


def _srv_transport(name: str) -> Optional[str]:
    """The transport an SRV owner name is for (C{_sips._tcp.} is TLS)."""
    lowered = name.lower()
    for transport, prefix in SRV_PREFIX.items():
        if lowered.startswith(prefix):
            return transport
    return None


def _unique(addresses: list[Address]) -> list[Address]:
    """C{addresses} without repeats, first occurrence kept."""
    return list(dict.fromkeys(addresses))


def _system_lookup(name: str, kind: str) -> list[Record]:
    """A or AAAA through the system resolver (runs in a thread; never raises)."""
    family = socket.AF_INET if kind == "A" else socket.AF_INET6
    try:
        infos = socket.getaddrinfo(name, None, family, socket.SOCK_DGRAM)
    except (OSError, UnicodeError, ValueError):
        return []
    found: list[Record] = []
    for info in infos:
        try:
            ip = _usable_ip(ipaddress.ip_address(str(info[4][0])))
        except (ValueError, IndexError):
            continue
        if ip is not None and ip not in found:
            found.append(ip)
    return found


def _network_resolver(settings: ResolverSettings, reactor: Any) -> client.Resolver:
    if settings.nameservers:
        servers = [(host, port) for host, port in settings.nameservers]
        return client.Resolver(servers=servers, reactor=reactor, timeout=settings.timeout)
    return client.Resolver(resolv="/etc/resolv.conf", reactor=reactor, timeout=settings.timeout)


class _HostsFile:
    """
    A hosts(5) file, parsed again whenever it changes.  A name listed in it is answered
    from it alone, for both A and AAAA (the static table wins over DNS, as in Kamailio).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: Optional[tuple[int, int]] = None
        self._names: dict[str, list[str]] = {}

    def lookup(self, name: str, kind: str) -> Optional[list[str]]:
        """The addresses of C{kind} listed for C{name}, or None when it is not listed."""
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp != self._stamp:
            self._names = self._load()
            self._stamp = stamp
        listed = self._names.get(name.lower())
        if listed is None:
            return None
        return [ip for ip in listed if (":" in ip) == (kind == "AAAA")]

    def _load(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return names
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                ip = ipaddress.ip_address(fields[0].split("%", 1)[0]).compressed
            except ValueError:
                continue
            for alias in fields[1:]:
                listed = names.setdefault(alias.rstrip(".").lower(), [])
                if ip not in listed:
                    listed.append(ip)
        return names
