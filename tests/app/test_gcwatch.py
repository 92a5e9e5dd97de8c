"""Tests for L{sbc.app.gcwatch}: collections timed through C{gc.callbacks}, driven with
C{gc.collect()}."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sbc.app.gcwatch import GcWatch
from sbc.app.metrics import SbcMetrics


class FakeClock:
    """perf_counter stand-in: each reading is C{step} seconds after the previous one."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def pause_samples(metrics: SbcMetrics) -> Iterator[tuple[str, dict[str, str], float]]:
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        if family.name == "sbc_gc_pause_seconds":
            for s in family.samples:
                yield s.name, s.labels, s.value


@contextmanager
def explicit_collections_only() -> Iterator[None]:
    """No automatic collection meanwhile: only the test's own gc.collect() calls run (one
    that the allocation count happened to trigger would be counted too)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_gcwatch_counts_collections_and_feeds_the_histogram() -> None:
    """Each gc.collect() is one timed collection, observed by the histogram."""
    metrics = SbcMetrics(process=False)
    watch = GcWatch(metrics.gc_pause.observe)
    with explicit_collections_only():
        watch.startService()
        try:
            gc.collect()
            gc.collect()
        finally:
            watch.stopService()
    assert watch.collections == 2
    assert watch.longest > 0
    counts = {name: value for name, labels, value in pause_samples(metrics) if not labels}
    assert counts["sbc_gc_pause_seconds_count"] == 2


def test_gcwatch_slow_pauses_and_summary() -> None:
    """A pause over 5 ms is counted as slow; the summary line names count, max and slow."""
    watch = GcWatch(clock=FakeClock(0.008))
    with explicit_collections_only():
        watch.install()
        watch.install()  # once only
        try:
            gc.collect()
        finally:
            watch.uninstall()
    gc.collect()  # not seen any more
    assert (watch.collections, watch.slow) == (1, 1)
    assert watch.summary().startswith("gc: 1 collections, max 8.0 ms, 1 over 5 ms, ")


def test_gcwatch_uninstalls_on_stop() -> None:
    """Stopping the service removes the hook from gc.callbacks."""
    watch = GcWatch()
    before = len(gc.callbacks)
    watch.startService()
    assert len(gc.callbacks) == before + 1
    watch.stopService()
    assert len(gc.callbacks) == before
    gc.collect()
    assert watch.collections == 0


def test_a_full_collection_runs_only_when_the_process_grew_past_its_bound() -> None:
    """The growth check collects everything once the size passes twice the baseline
    plus the slack, and takes the size after it as the new baseline."""
    from twisted.internet.task import Clock

    from sbc.app.gcwatch import GROWTH_CHECK_INTERVAL, GROWTH_SLACK

    sizes = [100 << 20]
    clock = Clock()
    watch = GcWatch(reactor=clock, size=lambda: sizes[0], busy=lambda: 10_000)
    watch.startService()
    try:
        assert watch.baseline == 100 << 20
        sizes[0] = (200 << 20) + GROWTH_SLACK  # grown, but within the bound
        clock.advance(GROWTH_CHECK_INTERVAL)
        assert watch.full_collections == 0
        sizes[0] += 1
        clock.advance(GROWTH_CHECK_INTERVAL)
        assert watch.full_collections == 1
        assert watch.baseline == sizes[0]
        clock.advance(GROWTH_CHECK_INTERVAL)
        assert watch.full_collections == 1
    finally:
        watch.stopService()
    assert not clock.getDelayedCalls()


def test_a_full_collection_runs_once_a_load_is_over() -> None:
    """With few transactions left and the process larger than after the last full
    collection, the load's leftovers are collected (once: the size after it is the new
    baseline); while transactions are open, nothing happens."""
    from twisted.internet.task import Clock

    from sbc.app.gcwatch import GROWTH_CHECK_INTERVAL, IDLE_SLACK, IDLE_TRANSACTIONS

    sizes = [100 << 20]
    open_transactions = [5_000]
    clock = Clock()
    watch = GcWatch(reactor=clock, size=lambda: sizes[0], busy=lambda: open_transactions[0])
    watch.startService()
    try:
        sizes[0] += IDLE_SLACK + 1
        clock.advance(GROWTH_CHECK_INTERVAL)
        assert watch.full_collections == 0  # still busy
        open_transactions[0] = IDLE_TRANSACTIONS
        clock.advance(GROWTH_CHECK_INTERVAL)
        assert watch.full_collections == 1
        clock.advance(GROWTH_CHECK_INTERVAL)
        assert watch.full_collections == 1
    finally:
        watch.stopService()
