"""Tests for L{sbc.core.timerheap}: one useful entry per machine, nothing kept alive."""

from __future__ import annotations

import gc
import weakref
from typing import Optional

from sbc.core.timerheap import TimerHeap, compact


class Machine:
    def __init__(self, deadline: Optional[float]) -> None:
        self.deadline = deadline

    def next_deadline(self) -> Optional[float]:
        return self.deadline


def test_a_deadline_pushed_back_often_costs_one_entry() -> None:
    """A dialog whose timeout every in-dialog request moves later: one entry, not 5,000."""
    heap, machine = TimerHeap(), Machine(100.0)
    heap.schedule(machine)
    for n in range(5000):
        machine.deadline = 100.0 + n
        heap.schedule(machine)
    assert heap.entries == 1
    assert heap.next_deadline() == 100.0 + 4999  # the stale entry surfaced, pushed again
    assert heap.entries == 1
    assert heap.pop_due(100.0 + 4998) is None
    assert heap.pop_due(100.0 + 4999) is machine


def test_an_earlier_deadline_is_pushed_and_fires_first() -> None:
    heap, late, early = TimerHeap(), Machine(50.0), Machine(10.0)
    heap.schedule(late)
    heap.schedule(early)
    late.deadline = 5.0
    heap.schedule(late)
    assert heap.pop_due(60.0) is late
    late.deadline = None
    assert heap.pop_due(60.0) is early
    early.deadline = None
    assert heap.pop_due(60.0) is None and heap.next_deadline() is None


def test_a_forgotten_machine_is_freed_while_its_entry_waits() -> None:
    heap, keeper = TimerHeap(), Machine(1.0)
    machine = Machine(500.0)
    ref = weakref.ref(machine)
    heap.schedule(keeper)
    heap.schedule(machine)
    heap.forget(machine)
    del machine
    gc.collect()
    assert ref() is None and len(heap) == 1
    assert heap.pop_due(1.0) is keeper


def test_forgotten_machines_do_not_leave_their_entries_for_hours() -> None:
    """A finished call's dialog timeout (12 hours) must not wait in the heap: once stale
    entries outnumber live ones the heap is rebuilt without them."""
    heap, keeper = TimerHeap(), Machine(1.0)
    heap.schedule(keeper)
    for n in range(10_000):
        dialog = Machine(43_200.0 + n)
        heap.schedule(dialog)
        heap.forget(dialog)
    assert heap.entries < 100
    assert heap.pop_due(1.0) is keeper


def test_tables_shrink_in_place_after_a_peak() -> None:
    """compact() rebuilds a dict that fell under a quarter of its peak, keeping it."""
    table = {n: n for n in range(10_000)}
    peak = compact(table, 0)
    assert peak == 10_000
    for n in range(9_000):
        del table[n]
    assert compact(table, peak) == 1_000
    assert table == {n: n for n in range(9_000, 10_000)}
