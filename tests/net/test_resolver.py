"""
Tests for L{sbc.net.resolver} against a real DNS server (L{tests.dnsserver}) on loopback:
RFC 3263 expansion, SRV order and weights (RFC 2782), the cache (TTL clamping, negative
entries), hosts file,
a silent name server and odd records.  The TTL clock tests use an in-memory resolver and a
L{Clock}.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from random import Random
from typing import Any, Optional

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError

from sbc.core.address import Address
from sbc.core.stats import Statistics
from sbc.core.uri import SipUri, parse_uri
from sbc.net.resolver import ResolverSettings, SipResolver
from tests.dnsserver import DnsServer, dns_server

ZONE = """
zone = [
    SOA("sip.test", mname="ns.sip.test", rname="root.sip.test", serial=1,
        refresh=60, retry=60, expire=60, minimum=60, ttl=60),
    NS("sip.test", "ns.sip.test"),
    A("ns.sip.test", "127.0.0.1"),

    # a host with nothing but addresses
    A("plain.sip.test", "192.0.2.10", ttl=300),
    AAAA("v6only.sip.test", "2001:db8::10", ttl=300),
    CNAME("alias.sip.test", "plain.sip.test", ttl=300),
    A("mixed.sip.test", "192.0.2.11", ttl=100),
    A("mixed.sip.test", "192.0.2.12", ttl=50),

    # ;transport=tcp: _sip._tcp SRV wins over the host's own A
    A("tcp.sip.test", "192.0.2.20"),
    SRV("_sip._tcp.tcp.sip.test", 10, 0, 5090, "pbx.tcp.sip.test"),
    A("pbx.tcp.sip.test", "192.0.2.21"),

    # NAPTR -> SRV -> A; TLS is not served by the resolver under test
    A("naptr.sip.test", "192.0.2.39"),
    NAPTR("naptr.sip.test", 10, 10, "s", "SIP+D2T", "", "_sip._tcp.naptr.sip.test"),
    NAPTR("naptr.sip.test", 20, 10, "s", "SIPS+D2T", "", "_sips._tcp.naptr.sip.test"),
    SRV("_sip._tcp.naptr.sip.test", 10, 0, 5080, "edge.naptr.sip.test"),
    SRV("_sips._tcp.naptr.sip.test", 10, 0, 5081, "edge.naptr.sip.test"),
    A("edge.naptr.sip.test", "192.0.2.30"),

    # NAPTR choice with and without dns_naptr_ignore_rfc
    NAPTR("choice.sip.test", 10, 10, "s", "SIPS+D2T", "", "_sips._tcp.choice.sip.test"),
    NAPTR("choice.sip.test", 20, 10, "s", "SIP+D2U", "", "_sip._udp.choice.sip.test"),
    SRV("_sips._tcp.choice.sip.test", 10, 0, 5061, "tls.choice.sip.test"),
    SRV("_sip._udp.choice.sip.test", 10, 0, 5060, "udp.choice.sip.test"),
    A("tls.choice.sip.test", "192.0.2.41"),
    A("udp.choice.sip.test", "192.0.2.42"),

    # no NAPTR, SRV for TCP only
    A("srvtcp.sip.test", "192.0.2.50"),
    SRV("_sip._tcp.srvtcp.sip.test", 10, 0, 5070, "in.srvtcp.sip.test"),
    A("in.srvtcp.sip.test", "192.0.2.51"),

    # priorities; a.prio has two addresses; the priority-30 record repeats the first
    SRV("_sip._udp.prio.sip.test", 20, 0, 5062, "b.prio.sip.test"),
    SRV("_sip._udp.prio.sip.test", 10, 0, 5061, "a.prio.sip.test"),
    SRV("_sip._udp.prio.sip.test", 30, 0, 5061, "a.prio.sip.test"),
    A("a.prio.sip.test", "192.0.2.61"),
    A("a.prio.sip.test", "192.0.2.62"),
    A("b.prio.sip.test", "192.0.2.63"),

    # SRV order and weights: A(10, 60), B(10, 20), C(10, 20), D(20, 0)
    SRV("_sip._udp.tv19.sip.test", 10, 60, 5060, "a.tv19.sip.test"),
    SRV("_sip._udp.tv19.sip.test", 10, 20, 5060, "b.tv19.sip.test"),
    SRV("_sip._udp.tv19.sip.test", 10, 20, 5060, "c.tv19.sip.test"),
    SRV("_sip._udp.tv19.sip.test", 20, 0, 5060, "d.tv19.sip.test"),
    A("a.tv19.sip.test", "192.0.2.101"),
    A("b.tv19.sip.test", "192.0.2.102"),
    A("c.tv19.sip.test", "192.0.2.103"),
    A("d.tv19.sip.test", "192.0.2.104"),

    # an 80/20 pair
    SRV("_sip._udp.split.sip.test", 10, 80, 5060, "heavy.split.sip.test"),
    SRV("_sip._udp.split.sip.test", 10, 20, 5060, "light.split.sip.test"),
    A("heavy.split.sip.test", "192.0.2.111"),
    A("light.split.sip.test", "192.0.2.112"),

    # odd records: none of the NAPTRs is usable, three of the four SRVs lead nowhere
    A("odd.sip.test", "192.0.2.79"),
    NAPTR("odd.sip.test", 10, 10, "u", "E2U+sip", "!^.*$!sip:x@odd.sip.test!", ""),
    NAPTR("odd.sip.test", 10, 20, "s", "SIP+D2U", "!^.*$!x!", "_sip._udp.odd.sip.test"),
    NAPTR("odd.sip.test", 10, 30, "s", "FOO+D2X", "", "_sip._udp.odd.sip.test"),
    NAPTR("odd.sip.test", 10, 40, "s", "SIP+D2U", "", ""),
    SRV("_sip._udp.odd.sip.test", 10, 0, 0, "zero.odd.sip.test"),
    SRV("_sip._udp.odd.sip.test", 10, 0, 5060, ""),
    SRV("_sip._udp.odd.sip.test", 20, 0, 5066, "nx.odd.sip.test"),
    SRV("_sip._udp.odd.sip.test", 30, 0, 5067, "good.odd.sip.test"),
    A("zero.odd.sip.test", "192.0.2.70"),
    A("good.odd.sip.test", "0.0.0.0"),
    A("good.odd.sip.test", "192.0.2.71"),

    # SRV target "." alone: decidedly no service, and no A fallback either
    A("none.sip.test", "192.0.2.80"),
    SRV("_sip._udp.none.sip.test", 0, 0, 0, ""),

    # SRV glue for a target outside the SRV name's domain is not trusted
    SRV("_sip._udp.far.sip.test", 10, 0, 5060, "host.other.test"),
    A("host.other.test", "192.0.2.90"),

    # TTLs
    A("short.sip.test", "192.0.2.95", ttl=5),
    A("long.sip.test", "192.0.2.96", ttl=86400),
]
"""


def uri(text: str) -> SipUri:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipUri)
    return parsed


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    """The zone, with SRV targets' addresses in the additional section (as BIND does)."""
    with dns_server(ZONE) as running:
        yield running


@pytest.fixture(scope="module")
def bare() -> Iterator[DnsServer]:
    """The zone without additional records: every target lookup shows in the query log."""
    with dns_server(ZONE, additional=False) as running:
        yield running


def make(
    server: DnsServer,
    transports: tuple[str, ...] = ("udp", "tcp"),
    rng: Optional[Random] = None,
    **options: Any,
) -> tuple[SipResolver, Statistics]:
    options.setdefault("nameservers", ((server.host, server.port),))
    options.setdefault("hosts_file", "")
    options.setdefault("timeout", (2,))
    stats = Statistics()
    resolver = SipResolver(
        ResolverSettings(**options), transports, reactor=reactor, rng=rng or Random(1), stats=stats
    )
    return resolver, stats


def resolve(resolver: SipResolver, text: str) -> Deferred[list[Address]]:
    """C{resolver.resolve}, failing the test instead of hanging if it never fires."""
    return resolver.resolve(uri(text)).addTimeout(10, reactor)


async def asked(server: DnsServer, resolver: SipResolver, text: str) -> tuple[list, list]:
    """Resolve C{text}; return the addresses and the queries the server saw meanwhile."""
    before = len(server.queries())
    found = await resolve(resolver, text)
    return found, server.queries()[before:]


def udp(host: str, port: int = 5060) -> Address:
    return Address("udp", host, port)


def tcp(host: str, port: int = 5060) -> Address:
    return Address("tcp", host, port)


# -- what is asked, and what comes out (RFC 3263) -----------------------------------------------
@pytest_twisted.ensureDeferred
async def test_ip_literal_needs_no_query(server: DnsServer) -> None:
    """A numeric host is its own address: nothing is asked."""
    resolver, stats = make(server)
    assert await asked(server, resolver, "sip:192.0.2.7;transport=tcp") == (
        [tcp("192.0.2.7")],
        [],
    )
    assert await asked(server, resolver, "sip:[2001:DB8::1]:5070") == (
        [udp("2001:db8::1", 5070)],
        [],
    )
    assert stats.get("dns_queries") == 0


@pytest_twisted.ensureDeferred
async def test_explicit_port_asks_for_the_address_only(server: DnsServer) -> None:
    """With a port, neither NAPTR nor SRV is asked, though the name has SRV records."""
    resolver, _ = make(server)
    found, queries = await asked(server, resolver, "sip:tcp.sip.test:5070")
    assert found == [udp("192.0.2.20", 5070)]
    assert queries == [("tcp.sip.test", "A")]


@pytest_twisted.ensureDeferred
async def test_transport_param_asks_that_transports_srv(bare: DnsServer) -> None:
    """;transport=tcp asks _sip._tcp SRV, then the target's address."""
    resolver, _ = make(bare)
    found, queries = await asked(bare, resolver, "sip:tcp.sip.test;transport=tcp")
    assert found == [tcp("192.0.2.21", 5090)]
    assert queries == [("_sip._tcp.tcp.sip.test", "SRV"), ("pbx.tcp.sip.test", "A")]


@pytest_twisted.ensureDeferred
async def test_srv_glue_saves_the_target_query(server: DnsServer) -> None:
    """The target's address in the SRV answer's additional section is used."""
    resolver, _ = make(server)
    found, queries = await asked(server, resolver, "sip:tcp.sip.test;transport=tcp")
    assert found == [tcp("192.0.2.21", 5090)]
    assert queries == [("_sip._tcp.tcp.sip.test", "SRV")]


@pytest_twisted.ensureDeferred
async def test_glue_for_a_target_in_another_domain_is_not_trusted(server: DnsServer) -> None:
    """_sip._udp.far.sip.test does not vouch for host.other.test: that is asked itself."""
    resolver, _ = make(server)
    found, queries = await asked(server, resolver, "sip:far.sip.test;transport=udp")
    assert found == [udp("192.0.2.90")]
    assert queries == [("_sip._udp.far.sip.test", "SRV"), ("host.other.test", "A")]


@pytest_twisted.ensureDeferred
async def test_naptr_srv_a_chain_takes_the_transport_from_the_naptr(bare: DnsServer) -> None:
    """NAPTR SIP+D2T -> _sip._tcp SRV -> A gives TCP; the SIPS+D2T record is skipped
    because this sbc serves no TLS."""
    resolver, _ = make(bare, transports=("udp", "tcp"))
    found, queries = await asked(bare, resolver, "sip:naptr.sip.test")
    assert found == [tcp("192.0.2.30", 5080)]
    assert queries == [
        ("naptr.sip.test", "NAPTR"),
        ("_sip._tcp.naptr.sip.test", "SRV"),
        ("edge.naptr.sip.test", "A"),
    ]


@pytest_twisted.ensureDeferred
async def test_naptr_choice_follows_dns_naptr_ignore_rfc(server: DnsServer) -> None:
    """NAPTR (10, SIPS+D2T) and (20, SIP+D2U): UDP first by local preference, TLS first by
    NAPTR order; both records' targets are in the list."""
    all_three = ("udp", "tcp", "tls")
    local, _ = make(server, transports=all_three)
    assert await resolve(local, "sip:choice.sip.test") == [
        udp("192.0.2.42"),
        Address("tls", "192.0.2.41", 5061),
    ]
    rfc, _ = make(server, transports=all_three, dns_naptr_ignore_rfc=False)
    assert await resolve(rfc, "sip:choice.sip.test") == [
        Address("tls", "192.0.2.41", 5061),
        udp("192.0.2.42"),
    ]
    sips, _ = make(server, transports=all_three)
    assert await resolve(sips, "sips:choice.sip.test") == [Address("tls", "192.0.2.41", 5061)]


@pytest_twisted.ensureDeferred
async def test_without_naptr_srv_of_every_served_transport_is_asked(bare: DnsServer) -> None:
    """No NAPTR: _sip._udp (none), then _sip._tcp (found), in preference order whatever
    the order the transports were given in; the host's own A is not used."""
    resolver, _ = make(bare, transports=("tcp", "udp"))
    found, queries = await asked(bare, resolver, "sip:srvtcp.sip.test")
    assert found == [tcp("192.0.2.51", 5070)]
    assert queries == [
        ("srvtcp.sip.test", "NAPTR"),
        ("_sip._udp.srvtcp.sip.test", "SRV"),
        ("_sip._tcp.srvtcp.sip.test", "SRV"),
        ("in.srvtcp.sip.test", "A"),
    ]


@pytest_twisted.ensureDeferred
async def test_address_fallback_uses_udp_5060(server: DnsServer) -> None:
    """No NAPTR, no SRV: the host's A record, UDP port 5060; dns_try_naptr off skips NAPTR."""
    resolver, _ = make(server)
    found, queries = await asked(server, resolver, "sip:plain.sip.test")
    assert found == [udp("192.0.2.10")]
    assert queries == [
        ("plain.sip.test", "NAPTR"),
        ("_sip._udp.plain.sip.test", "SRV"),
        ("_sip._tcp.plain.sip.test", "SRV"),
        ("plain.sip.test", "A"),
    ]
    negative = {(e["name"], e["type"]) for e in resolver.view() if e["negative_entry"]}
    assert ("plain.sip.test", "NAPTR") in negative  # an empty answer is remembered too
    quiet, _ = make(server, dns_try_naptr=False)
    found, queries = await asked(server, quiet, "sip:plain.sip.test")
    assert found == [udp("192.0.2.10")]
    assert ("plain.sip.test", "NAPTR") not in queries


@pytest_twisted.ensureDeferred
async def test_aaaa_only_when_a_gives_nothing_and_ipv6_is_on(server: DnsServer) -> None:
    """A first; AAAA only after an empty A, and never with dns_try_ipv6 off."""
    resolver, _ = make(server)
    found, queries = await asked(server, resolver, "sip:v6only.sip.test:5070")
    assert found == [udp("2001:db8::10", 5070)]
    assert queries == [("v6only.sip.test", "A"), ("v6only.sip.test", "AAAA")]
    v4, _ = make(server, dns_try_ipv6=False)
    found, queries = await asked(server, v4, "sip:v6only.sip.test:5070")
    assert (found, queries) == ([], [("v6only.sip.test", "A")])
    found, queries = await asked(server, resolver, "sip:plain.sip.test:5070")
    assert queries == [("plain.sip.test", "A")]


@pytest_twisted.ensureDeferred
async def test_cname_is_followed(server: DnsServer) -> None:
    resolver, _ = make(server)
    assert await resolve(resolver, "sip:alias.sip.test:5060") == [udp("192.0.2.10")]


# -- SRV order (RFC 2782) -----------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_every_ip_of_a_target_before_the_next_target(server: DnsServer) -> None:
    """Priority 10 (two addresses), then 20; the repeated priority-30 record adds nothing."""
    expected = [udp("192.0.2.61", 5061), udp("192.0.2.62", 5061), udp("192.0.2.63", 5062)]
    for lb in (False, True):
        resolver, _ = make(server, dns_srv_lb=lb)
        assert await resolve(resolver, "sip:prio.sip.test;transport=udp") == expected


@pytest_twisted.ensureDeferred
async def test_tv19_order_static_and_weighted(server: DnsServer) -> None:
    """Without load balancing A, B, C, D.  With Random(5) the draws are 80 of 1..100 (A is
    1..60, B 61..80: B), then 33 of 1..80 over A, C (A), then C; D (weight 0, priority 20)
    comes last."""
    a, b, c, d = (udp(f"192.0.2.10{i}") for i in (1, 2, 3, 4))
    static, _ = make(server, dns_srv_lb=False)
    assert await resolve(static, "sip:tv19.sip.test;transport=udp") == [a, b, c, d]
    weighted, _ = make(server, rng=Random(5))
    assert await resolve(weighted, "sip:tv19.sip.test;transport=udp") == [b, a, c, d]


@pytest_twisted.ensureDeferred
async def test_weights_split_80_20_and_each_resolution_draws_anew(server: DnsServer) -> None:
    """1000 resolutions (one query, then the cache): the heavy target first 80 % ± 5 %."""
    resolver, stats = make(server, rng=Random(2026))
    firsts: Counter[str] = Counter()
    for _ in range(1000):
        found = await resolve(resolver, "sip:split.sip.test;transport=udp")
        assert len(found) == 2
        firsts[found[0].host] += 1
    assert 750 <= firsts["192.0.2.111"] <= 850, firsts
    assert stats.get("dns_queries") == 1


# -- the cache ----------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_second_resolution_is_answered_by_the_cache(server: DnsServer) -> None:
    resolver, stats = make(server)
    first, queries = await asked(server, resolver, "sip:naptr.sip.test")
    assert first == [tcp("192.0.2.30", 5080)] and queries
    again, queries = await asked(server, resolver, "sip:naptr.sip.test")
    assert (again, queries) == (first, [])
    assert stats.get("dns_cache_hits") >= 3
    view = {(e["name"], e["type"]): e for e in resolver.view()}
    assert view[("_sip._tcp.naptr.sip.test", "SRV")]["records"] == 1
    assert view[("edge.naptr.sip.test", "A")]["negative_entry"] is False
    resolver.clear()
    assert resolver.view() == []
    _, queries = await asked(server, resolver, "sip:naptr.sip.test")
    assert queries


@pytest_twisted.ensureDeferred
async def test_ttl_is_the_smallest_of_the_answer_clamped(server: DnsServer) -> None:
    """mixed.sip.test's A records live 100 s and 50 s: kept 50 s; short.sip.test (5 s) with
    dns_cache_min_ttl 30 is kept 30 s."""
    resolver, _ = make(server, dns_cache_min_ttl=30)
    await resolve(resolver, "sip:mixed.sip.test:5060")
    await resolve(resolver, "sip:short.sip.test:5060")
    expires = {e["name"]: e["expires"] for e in resolver.view()}
    assert 48 <= expires["mixed.sip.test"] <= 50
    assert 28 <= expires["short.sip.test"] <= 30


@pytest_twisted.ensureDeferred
async def test_nxdomain_is_cached_negatively(server: DnsServer) -> None:
    """A name that does not exist is asked once; the next lookup within 60 s is
    answered by the negative entry, and dns_view says so."""
    resolver, stats = make(server)
    found, queries = await asked(server, resolver, "sip:nowhere.sip.test:5060")
    assert found == []
    assert queries == [("nowhere.sip.test", "A"), ("nowhere.sip.test", "AAAA")]
    found, queries = await asked(server, resolver, "sip:nowhere.sip.test:5060")
    assert (found, queries) == ([], [])
    assert stats.get("dns_negative_hits") == 2
    assert stats.get("dns_failures") == 0
    assert {(e["type"], e["negative_entry"]) for e in resolver.view()} == {
        ("A", True),
        ("AAAA", True),
    }


@pytest_twisted.ensureDeferred
async def test_concurrent_resolutions_share_one_query(bare: DnsServer) -> None:
    """A burst of 20 resolutions of one URI sends each question once (twisted.names shares
    identical queries on the wire too: the counter shows sbc's own sharing)."""
    resolver, stats = make(bare)
    before = len(bare.queries())
    results = await _gather([resolve(resolver, "sip:srvtcp.sip.test") for _ in range(20)])
    assert all(r == [tcp("192.0.2.51", 5070)] for r in results)
    queries = bare.queries()[before:]
    assert len(queries) == 4 and len(set(queries)) == 4
    assert stats.get("dns_queries") == 4


@pytest_twisted.ensureDeferred
async def test_hosts_file_entries_win(server: DnsServer) -> None:
    """A name in the hosts file is answered from it, also as an SRV target (over glue)."""
    folder = tempfile.mkdtemp(prefix="sbc-hosts-")
    hosts = os.path.join(folder, "hosts")
    with open(hosts, "w", encoding="utf-8") as f:
        f.write("# static\n10.9.8.7 plain.sip.test other.name\n10.9.8.6\tPBX.tcp.sip.test.\n")
    resolver, _ = make(server, hosts_file=hosts)
    found, queries = await asked(server, resolver, "sip:plain.sip.test:5070")
    assert (found, queries) == ([udp("10.9.8.7", 5070)], [])
    found, queries = await asked(server, resolver, "sip:tcp.sip.test;transport=tcp")
    assert found == [tcp("10.9.8.6", 5090)]
    assert queries == [("_sip._tcp.tcp.sip.test", "SRV")]
    with open(hosts, "a", encoding="utf-8") as f:
        f.write("10.9.8.5 plain.sip.test\n")  # a changed file is read again
    assert await resolve(resolver, "sip:plain.sip.test:5070") == [
        udp("10.9.8.7", 5070),
        udp("10.9.8.5", 5070),
    ]


# -- trouble --------------------------------------------------------------------------------------
class _Silent(DatagramProtocol):
    """A name server that reads every query and never answers."""

    def __init__(self) -> None:
        self.received = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        self.received += 1


@pytest_twisted.ensureDeferred
async def test_silent_name_server_gives_an_empty_list_after_the_timeout() -> None:
    """No answer: [] after the timeout, counted as failures, and nothing cached."""
    silent = _Silent()
    port = reactor.listenUDP(0, silent, interface="127.0.0.1")
    try:
        stats = Statistics()
        settings = ResolverSettings(
            nameservers=(("127.0.0.1", port.getHost().port),), hosts_file="", timeout=(0.2,)
        )
        resolver = SipResolver(settings, ("udp",), reactor=reactor, stats=stats)
        started = time.monotonic()
        assert await resolve(resolver, "sip:dead.sip.test:5060") == []
        assert time.monotonic() - started >= 0.35  # A, then AAAA
        assert silent.received == 2
        assert stats.get("dns_failures") == 2
        assert resolver.view() == []
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_odd_records_are_skipped(server: DnsServer) -> None:
    """Unusable NAPTRs (flag u, a regexp, an unknown service, replacement "."), SRV port 0,
    SRV target ".", a target that does not exist and the address 0.0.0.0 are all passed
    over; what is left is used."""
    resolver, _ = make(server, transports=("udp",))
    assert await resolve(resolver, "sip:odd.sip.test") == [udp("192.0.2.71", 5067)]


@pytest_twisted.ensureDeferred
async def test_srv_target_dot_means_no_service(server: DnsServer) -> None:
    """RFC 2782: the only SRV record says "." : no address, not even the host's A."""
    resolver, _ = make(server, transports=("udp",))
    assert await resolve(resolver, "sip:none.sip.test") == []
    assert await resolve(resolver, "sip:none.sip.test;transport=udp") == []


# -- without a network: the clock and garbage answers -------------------------------------------
class _Memory(ResolverBase):
    """Canned answers by (name, type code); anything else does not exist."""

    def __init__(self, answers: dict[tuple[bytes, int], Any]) -> None:
        super().__init__()
        self.answers = answers
        self.asked: list[tuple[bytes, int]] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        self.asked.append((name, type))
        answer = self.answers.get((name, type))
        if answer is None:
            return fail(DNSNameError(name))
        if isinstance(answer, BaseException):
            return fail(answer)
        if isinstance(answer, Deferred):
            return answer
        return succeed(answer)


def rr(name: str, payload: Any, ttl: int = 60, kind: Optional[int] = None) -> dns.RRHeader:
    return dns.RRHeader(name.encode(), kind or payload.TYPE, dns.IN, ttl, payload)


def result_of(deferred: Deferred[Any]) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def test_ttl_clamping_and_negative_expiry_on_a_clock() -> None:
    """dns_cache_min_ttl/max_ttl: TTL 5 with min 30 lives 30 s; TTL 86400 with max 3600
    lives 3600 s; a name that does not exist is remembered 60 s."""
    memory = _Memory(
        {
            (b"short.test", dns.A): ([rr("short.test", dns.Record_A("192.0.2.1"), 5)], [], []),
            (b"long.test", dns.A): ([rr("long.test", dns.Record_A("192.0.2.2"), 86400)], [], []),
        }
    )
    clock = Clock()
    settings = ResolverSettings(dns_cache_min_ttl=30, dns_cache_max_ttl=3600, hosts_file="")
    resolver = SipResolver(settings, ("udp",), reactor=clock, resolver=memory)

    def asks(text: str) -> int:
        before = len(memory.asked)
        result_of(resolver.resolve(uri(text)))
        return len(memory.asked) - before

    assert (asks("sip:short.test:5060"), asks("sip:long.test:5060")) == (1, 1)
    assert asks("sip:nx.test:5060") == 2  # A and AAAA
    clock.advance(29)
    assert (asks("sip:short.test:5060"), asks("sip:nx.test:5060")) == (0, 0)
    clock.advance(2)
    assert asks("sip:short.test:5060") == 1
    clock.advance(30)
    assert asks("sip:nx.test:5060") == 2
    clock.advance(3599 - 61)
    assert asks("sip:long.test:5060") == 0
    clock.advance(2)
    assert asks("sip:long.test:5060") == 1


def test_garbage_in_answers_is_skipped_without_raising() -> None:
    """Wrong record types, records for other names, undecodable payloads, a broken answer
    tuple and a resolver that raises: skipped, and resolution still ends in a list."""
    srv = dns.Record_SRV(10, 0, 5060, b"good.test")
    memory = _Memory(
        {
            (b"_sip._udp.junk.test", dns.SRV): (
                [
                    rr("_sip._udp.junk.test", dns.Record_A("192.0.2.66")),
                    rr("_sip._udp.junk.test", dns.Record_TXT(b"hello")),
                    rr("_sip._udp.junk.test", dns.UnknownRecord(b"\x00\x01"), kind=dns.SRV),
                    rr("_sip._udp.other.test", dns.Record_SRV(1, 0, 5999, b"evil.test")),
                    rr("_sip._udp.junk.test", dns.Record_SRV(5, 0, 5061, b"\xff\xfe.test")),
                    "not a record",
                    rr("_sip._udp.junk.test", srv),
                ],
                None,
                None,
            ),
            (b"good.test", dns.A): (
                [
                    rr("good.test", dns.Record_AAAA("2001:db8::1")),
                    rr("good.test", dns.Record_A("224.0.0.1")),
                    rr("good.test", dns.Record_A("192.0.2.5")),
                ],
                [],
                [],
            ),
            (b"broken.test", dns.A): ("not", "three sections"),
            (b"refused.test", dns.A): RuntimeError("resolver bug"),
        }
    )
    resolver = SipResolver(
        ResolverSettings(hosts_file=""), ("udp",), reactor=Clock(), resolver=memory
    )
    assert result_of(resolver.resolve(uri("sip:junk.test;transport=udp"))) == [udp("192.0.2.5")]
    assert result_of(resolver.resolve(uri("sip:broken.test:5060"))) == []
    assert result_of(resolver.resolve(uri("sip:refused.test:5060"))) == []


def test_slow_answer_is_shared_and_counted_as_slow() -> None:
    """Two resolutions waiting for one late answer get it both; it is counted as slow."""
    late: Deferred[Any] = Deferred()
    memory = _Memory({(b"late.test", dns.A): late})
    clock = Clock()
    stats = Statistics()
    settings = ResolverSettings(dns_slow_query_ms=1500, hosts_file="")
    resolver = SipResolver(settings, ("udp",), reactor=clock, resolver=memory, stats=stats)
    first, second = (resolver.resolve(uri("sip:late.test:5060")) for _ in range(2))
    assert not first.called and not second.called
    clock.advance(2)
    late.callback(([rr("late.test", dns.Record_A("192.0.2.9"))], [], []))
    assert result_of(first) == result_of(second) == [udp("192.0.2.9")]
    assert memory.asked == [(b"late.test", dns.A)]
    assert (stats.get("dns_queries"), stats.get("dns_slow_queries")) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_without_the_cache_addresses_come_from_the_system_resolver() -> None:
    """use_dns_cache off: A via getaddrinfo (localhost from /etc/hosts, no DNS server is
    reachable), SRV still via twisted.names, and every resolution asks again."""
    memory = _Memory(
        {
            (b"_sip._tcp.sys.test", dns.SRV): (
                [rr("_sip._tcp.sys.test", dns.Record_SRV(10, 0, 5070, b"localhost"))],
                [],
                [],
            )
        }
    )
    settings = ResolverSettings(use_dns_cache=False, dns_try_ipv6=False)
    stats = Statistics()
    resolver = SipResolver(settings, ("udp", "tcp"), reactor=reactor, resolver=memory, stats=stats)
    assert await resolve(resolver, "sip:localhost:5070") == [udp("127.0.0.1", 5070)]
    for _ in range(2):
        assert await resolve(resolver, "sip:sys.test;transport=tcp") == [tcp("127.0.0.1", 5070)]
    assert memory.asked == [(b"_sip._tcp.sys.test", dns.SRV)] * 2
    assert stats.get("dns_cache_hits") == 0 and resolver.view() == []


async def _gather(deferreds: list[Deferred[Any]]) -> list[Any]:
    return [await d for d in deferreds]
