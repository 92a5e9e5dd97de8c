"""Tests for L{sbc.core.locate}: what to ask (RFC 3263), SRV order (RFC 2782), the cache."""

from __future__ import annotations

from collections import Counter
from random import Random

from sbc.core.address import Address
from sbc.core.locate import (
    Direct,
    DnsCache,
    Lookup,
    NaptrRecord,
    SrvRecord,
    first_step,
    order_naptr,
    order_srv,
)
from sbc.core.uri import SipUri, parse_uri


def uri(text: str) -> SipUri:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipUri)
    return parsed


def test_tv18_what_to_ask() -> None:
    """Numeric: no query; port: A/AAAA only; transport: SRV then A; sips: _sips._tcp."""
    assert first_step(uri("sip:192.0.2.10")) == Direct(Address("udp", "192.0.2.10", 5060))
    assert first_step(uri("sip:example.com:5080")) == Lookup(
        (("A", "example.com"), ("AAAA", "example.com")), 5080, "udp"
    )
    tcp = first_step(uri("sip:example.com;transport=tcp"))
    assert isinstance(tcp, Lookup) and tcp.queries[0] == ("SRV", "_sip._tcp.example.com")
    assert tcp.port == 5060
    sips = first_step(uri("sips:example.com"))
    assert isinstance(sips, Lookup) and sips.queries[0] == ("SRV", "_sips._tcp.example.com")
    assert sips.port == 5061 and sips.transport == "tls"


def test_rfc3263_srv_for_every_transport_when_none_given() -> None:
    """Neither port nor transport: NAPTR, then SRV of udp, tcp and tls, then A/AAAA."""
    step = first_step(uri("sip:example.com"))
    assert isinstance(step, Lookup)
    assert [q for q in step.queries] == [
        ("NAPTR", "example.com"),
        ("SRV", "_sip._udp.example.com"),
        ("SRV", "_sip._tcp.example.com"),
        ("SRV", "_sips._tcp.example.com"),
        ("A", "example.com"),
        ("AAAA", "example.com"),
    ]
    no_naptr = first_step(uri("sip:example.com"), try_naptr=False)
    assert isinstance(no_naptr, Lookup) and no_naptr.queries[0][0] == "SRV"


def test_tv18_naptr_choice() -> None:
    """ignore_rfc (default): the local preference picks UDP; RFC order picks TLS."""
    records = [
        NaptrRecord(10, 10, "s", "SIPS+D2T", "", "_sips._tcp.example.com"),
        NaptrRecord(20, 10, "s", "SIP+D2U", "", "_sip._udp.example.com"),
        NaptrRecord(5, 10, "u", "E2U+sip", "!.*!sip:x!", "."),
    ]
    assert [t for _, t in order_naptr(records)] == ["udp", "tls"]
    assert [t for _, t in order_naptr(records, ignore_rfc=False)] == ["tls", "udp"]
    assert [t for _, t in order_naptr(records, preferences={"udp": -1, "tls": 10})] == ["tls"]


A, B, C, D = (
    SrvRecord(10, 60, 5060, "a"),
    SrvRecord(10, 20, 5060, "b"),
    SrvRecord(10, 20, 5060, "c"),
    SrvRecord(20, 0, 5060, "d"),
)


class Draws(Random):
    """A random source that returns the draws it is given."""

    def __init__(self, *draws: int) -> None:
        super().__init__(0)
        self.draws = list(draws)

    def randint(self, a: int, b: int) -> int:  # type: ignore[override]
        value = self.draws.pop(0)
        assert a <= value <= b
        return value


def test_tv19_srv_order_without_load_balancing() -> None:
    """Priority ascending, weight descending, answer order for ties."""
    assert order_srv([D, C, B, A]) == [A, C, B, D]
    assert order_srv([A, B, C, D]) == [A, B, C, D]


def test_tv19_weighted_choice() -> None:
    """r in 1..60 → A, 61..80 → B, 81..100 → C; after A, 1..20 → B, 21..40 → C; D last."""
    assert order_srv([A, B, C, D], Draws(60, 20, 20)) == [A, B, C, D]
    assert order_srv([A, B, C, D], Draws(61, 60, 1)) == [B, A, C, D]
    assert order_srv([A, B, C, D], Draws(81, 1, 20)) == [C, A, B, D]
    assert order_srv([A, B, C, D], Draws(1, 21, 20)) == [A, C, B, D]


def test_weights_split_as_announced() -> None:
    """80/20 weights: the first pick splits about 80/20 over many draws."""
    heavy, light = SrvRecord(10, 80, 5060, "heavy"), SrvRecord(10, 20, 5060, "light")
    rng = Random(2782)
    firsts = Counter(order_srv([heavy, light], rng)[0].target for _ in range(5000))
    assert abs(firsts["heavy"] / 5000 - 0.8) < 0.03


def test_tv20_cache_ttl_clamping_and_negative_entries() -> None:
    """TTL 5 with min 30 lives 30 s; 86400 with max 3600 lives 3600 s; failures 60 s."""
    cache = DnsCache(min_ttl=30, max_ttl=3600, negative_ttl=60)
    assert cache.put("short.example", "A", ["192.0.2.1"], 5, 0.0) == 30.0
    assert cache.put("long.example", "A", ["192.0.2.2"], 86400, 0.0) == 3600.0
    assert cache.get("short.example", "A", 29.0) == (True, ["192.0.2.1"])
    assert cache.get("short.example", "A", 30.0) == (False, None)
    cache.put_negative("nonexistent.example", "A", 0.0)
    assert cache.get("nonexistent.example", "A", 59.0) == (True, None)
    assert [e["negative_entry"] for e in cache.view(1.0)] == [False, True]
    assert cache.get("nonexistent.example", "A", 60.0) == (False, None)


def test_cache_is_bounded_expired_entries_first_then_the_oldest() -> None:
    """A flood of names cannot grow the cache past its limit."""
    cache = DnsCache(limit=3)
    cache.put("a.test", "A", ["192.0.2.1"], 10, 0.0)
    cache.put("b.test", "A", ["192.0.2.2"], 100, 0.0)
    cache.put_negative("c.test", "A", 0.0)
    cache.put("d.test", "A", ["192.0.2.4"], 100, 20.0)  # a.test has expired: it goes
    assert cache.get("b.test", "A", 21.0)[0] and len(cache) == 3
    for n in range(100):
        cache.put(f"x{n}.test", "A", ["192.0.2.9"], 100, 21.0)
    assert len(cache) == 3 and cache.get("x99.test", "A", 22.0)[0]
    assert not cache.get("b.test", "A", 22.0)[0]  # the oldest went
