"""Tests for L{sbc.core.pike}: per-source limits with float time."""

from __future__ import annotations

from sbc.core.pike import Pike, PikeSettings, Verdict


def test_off_by_default() -> None:
    """Density 0: everything passes."""
    pike = Pike(PikeSettings())
    assert all(pike.hit("192.0.2.1", i / 1000) is Verdict.PASS for i in range(1000))


def test_flooding_source_is_limited_then_dropped_others_pass() -> None:
    """Above the density: 503; above twice it: drop; another source is untouched."""
    pike = Pike(PikeSettings(sampling_time_unit=2, reqs_density_per_unit=10))
    verdicts = [pike.hit("192.0.2.66", 0.01 * i) for i in range(40)]
    assert verdicts[:10] == [Verdict.PASS] * 10
    assert Verdict.LIMIT in verdicts and verdicts[-1] is Verdict.DROP
    assert pike.hit("192.0.2.7", 0.5) is Verdict.PASS
    assert pike.limited == 10 and pike.dropped == 20


def test_rate_recovers_after_quiet_windows() -> None:
    """Two quiet units later the source passes again."""
    pike = Pike(PikeSettings(sampling_time_unit=2, reqs_density_per_unit=5))
    for i in range(20):
        pike.hit("192.0.2.66", 0.01 * i)
    assert pike.hit("192.0.2.66", 4.5) is Verdict.PASS


def test_steady_rate_below_density_passes() -> None:
    """A steady 4 requests per 2 s against a density of 5 is never limited."""
    pike = Pike(PikeSettings(sampling_time_unit=2, reqs_density_per_unit=5))
    assert all(pike.hit("192.0.2.8", 0.5 * i) is Verdict.PASS for i in range(100))


def test_table_is_bounded_and_forgets_quiet_sources() -> None:
    """max_sources caps the table; remove_latency forgets idle sources."""
    pike = Pike(PikeSettings(reqs_density_per_unit=5, max_sources=100, remove_latency=10))
    for i in range(1000):
        pike.hit(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(pike) <= 101
    pike.hit("192.0.2.9", 100.0)
    assert len(pike) <= 101
