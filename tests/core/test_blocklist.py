"""Tests for L{sbc.core.blocklist} (Kamailio dst_blocklist, tm blst_503)."""

from __future__ import annotations

from sbc.core.address import Address
from sbc.core.blocklist import (
    ADMIN,
    REPLY_503,
    TIMEOUT,
    Blocklist,
    BlocklistSettings,
    method_bits,
    retry_after_timeout,
)

UDP = Address("udp", "192.0.2.9", 5060)
TCP = Address("tcp", "192.0.2.9", 5060)


def test_tv22_retry_after_clamping() -> None:
    settings = BlocklistSettings(blst_503=True, blst_503_min_timeout=60, blst_503_max_timeout=3600)
    assert retry_after_timeout(30, settings) == 60
    assert retry_after_timeout(7200, settings) == 3600
    assert retry_after_timeout(None, settings) is None
    assert retry_after_timeout(None, BlocklistSettings(blst_503_def_timeout=20)) == 20


def test_entries_expire_and_reasons_accumulate() -> None:
    blocklist = Blocklist(BlocklistSettings(dst_blocklist_expire=60))
    assert blocklist.add(UDP, TIMEOUT, 0.0)
    assert blocklist.add(UDP, REPLY_503, 10.0, seconds=5)
    assert blocklist.blocked(UDP, 14.9) and not blocklist.blocked(UDP, 15.0)
    assert not blocklist.blocked(TCP, 1.0)
    assert len(blocklist) == 0


def test_wildcard_transport_matches_every_transport() -> None:
    """An entry with transport 0 (any) blocks every transport."""
    blocklist = Blocklist()
    blocklist.add(Address("", "192.0.2.9", 5060), ADMIN, 0.0)
    assert blocklist.blocked(UDP, 1.0) and blocklist.blocked(TCP, 1.0)
    assert blocklist.view(1.0)[0]["transport"] == "any"


def test_off_blocks_nothing_and_a_full_list_refuses() -> None:
    assert not Blocklist(BlocklistSettings(use_dst_blocklist=False)).add(UDP, TIMEOUT, 0.0)
    full = Blocklist(limit=1)
    assert full.add(UDP, TIMEOUT, 0.0)
    assert not full.add(TCP, TIMEOUT, 1.0)
    assert full.add(TCP, TIMEOUT, 61.0)  # the expired entry was purged to make room


def test_view_remove_clear() -> None:
    blocklist = Blocklist()
    blocklist.add(UDP, TIMEOUT | REPLY_503, 0.0)
    [entry] = blocklist.view(10.0)
    assert entry == {
        "transport": "udp",
        "host": "192.0.2.9",
        "port": 5060,
        "expires": 50,
        "reasons": ["timeout", "503"],
    }
    assert blocklist.remove(UDP) and not blocklist.remove(UDP)
    blocklist.add(TCP, TIMEOUT, 0.0)
    blocklist.clear()
    assert blocklist.view(0.0) == []


def test_method_bits() -> None:
    assert method_bits("invite") == 1 and method_bits("REGISTER") == 32
    assert method_bits("FOO") == 0
