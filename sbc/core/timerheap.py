# -*- test-case-name: tests.core.test_timerheap -*-
"""
One heap for every deadline the proxy core has (transactions, response contexts, dialogs),
as aioquic keeps one next deadline: the engine arms a single reactor timer at
L{TimerHeap.next_deadline}.

Machines are registered under a token; heap entries hold only C{(deadline, token)}, so a
machine that leaves its table (L{TimerHeap.forget}) is freed at once even while stale
entries for it wait in the heap (lazy deletion without keeping finished work alive); once
stale entries outnumber live ones the heap is rebuilt without them.  A
machine says when it wants to run through its own C{next_deadline()}; an entry whose
deadline is no longer the machine's is skipped.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Optional, Protocol

__all__ = ["Timed", "TimerHeap", "compact"]


class Timed(Protocol):
    """Anything with deadlines: it answers when it wants to run next (None: never)."""

    def next_deadline(self) -> Optional[float]: ...


def compact(table: dict, peak: int) -> int:
    """Python dicts never give memory back as entries leave: rebuild C{table} in place
    once it holds under a quarter of its C{peak} (amortised O(1) per entry); returns the
    peak to remember."""
    size = len(table)
    if size > peak:
        return size
    if size * 4 < peak and peak > 64:
        items = list(table.items())
        table.clear()  # frees the big allocation
        table.update(items)
        return size
    return peak


class _Slot:
    """A registered machine and the earliest deadline it has in the heap (None: none)."""

    __slots__ = ("machine", "pushed")

    def __init__(self, machine: Timed) -> None:
        self.machine = machine
        self.pushed: Optional[float] = None


class TimerHeap:
    """Deadlines of registered machines.  A machine has at most one useful entry: a new
    deadline is pushed only when it comes before the one already in the heap; a later one
    waits until that entry surfaces and is pushed then (so a dialog whose timeout each
    in-dialog request pushes back costs one entry, not one per request)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._slots: dict[int, _Slot] = {}  # token -> machine and its pushed deadline
        self._tokens: dict[int, int] = {}  # id(machine) -> token
        self._serial = itertools.count(1)
        self._peak = 0

    def __len__(self) -> int:
        """Machines registered (not heap entries)."""
        return len(self._slots)

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included (for leak tests)."""
        return len(self._heap)

    def schedule(self, machine: Timed) -> None:
        """Register C{machine} (once) and make sure its current deadline will surface."""
        token = self._tokens.get(id(machine))
        if token is None:
            token = next(self._serial)
            self._tokens[id(machine)] = token
            slot = self._slots[token] = _Slot(machine)
        else:
            slot = self._slots[token]
        self._push(token, slot, machine.next_deadline())

    def _push(self, token: int, slot: _Slot, deadline: Optional[float]) -> None:
        if deadline is None:
            return
        if slot.pushed is None or deadline < slot.pushed:
            heapq.heappush(self._heap, (deadline, token))
            slot.pushed = deadline

    def forget(self, machine: Timed) -> None:
        """C{machine} left its table: its entries become stale and hold nothing."""
        token = self._tokens.pop(id(machine), None)
        if token is not None:
            self._slots.pop(token, None)
            peak = compact(self._slots, self._peak)
            if peak < self._peak:  # rebuilt: so is its twin
                compact(self._tokens, self._peak)
            self._peak = peak
            if len(self._heap) > len(self._slots) * 3 // 2 + 64:
                self._drop_stale()

    def _drop_stale(self) -> None:
        """Rebuild the heap with each live machine's pushed entry only: a forgotten
        machine's entries (a dialog's 12-hour timeout) must not wait there for their
        deadline.  Runs when stale entries outnumber live ones: amortised O(log n)."""
        slots = self._slots
        self._heap = [
            (when, token)
            for when, token in self._heap
            if (slot := slots.get(token)) is not None and slot.pushed == when
        ]
        heapq.heapify(self._heap)

    def _surface(self) -> Optional[tuple[float, Timed]]:
        """Drop stale entries from the top (pushing a machine's later deadline again);
        the top live (deadline, machine), or None."""
        heap = self._heap
        while heap:
            when, token = heap[0]
            slot = self._slots.get(token)
            if slot is not None and slot.machine.next_deadline() == when:
                return when, slot.machine
            heapq.heappop(heap)
            if slot is not None:
                if slot.pushed == when:
                    slot.pushed = None
                self._push(token, slot, slot.machine.next_deadline())
        return None

    def next_deadline(self) -> Optional[float]:
        """The earliest live deadline."""
        top = self._surface()
        return top[0] if top is not None else None

    def pop_due(self, now: float) -> Optional[Timed]:
        """The next machine whose deadline is due at C{now}, or None; the caller runs it
        and schedules it again."""
        top = self._surface()
        if top is None or top[0] > now:
            return None
        when, token = heapq.heappop(self._heap)
        slot = self._slots[token]
        if slot.pushed == when:
            slot.pushed = None
        return top[1]
