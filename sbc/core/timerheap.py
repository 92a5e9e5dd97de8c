# -*- test-case-name: tests.core.test_timerheap -*-
"""
One heap for every deadline the proxy core has (transactions, response contexts, dialogs),
as aioquic keeps one next deadline: the engine arms a single reactor timer at
L{TimerHeap.next_deadline}.

Machines are registered under a token; heap entries hold only C{(deadline, token)}, so a
machine that leaves its table (L{TimerHeap.forget}) is freed at once even while stale
entries for it wait in the heap (lazy deletion without keeping finished work alive).  A
machine says when it wants to run through its own C{next_deadline()}; an entry whose
deadline is no longer the machine's is skipped.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Optional, Protocol

__all__ = ["Timed", "TimerHeap"]


class Timed(Protocol):
    """Anything with deadlines: it answers when it wants to run next (None: never)."""

    def next_deadline(self) -> Optional[float]: ...


class TimerHeap:
    """Deadlines of registered machines; stale entries are dropped as they surface."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._machines: dict[int, Timed] = {}
        self._tokens: dict[int, int] = {}  # id(machine) -> token
        self._serial = itertools.count(1)

    def __len__(self) -> int:
        """Machines registered (not heap entries)."""
        return len(self._machines)

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included (for leak tests)."""
        return len(self._heap)

    def schedule(self, machine: Timed) -> None:
        """Register C{machine} (once) and push its current deadline."""
        token = self._tokens.get(id(machine))
        if token is None:
            token = next(self._serial)
            self._tokens[id(machine)] = token
            self._machines[token] = machine
        deadline = machine.next_deadline()
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, token))

    def forget(self, machine: Timed) -> None:
        """C{machine} left its table: its entries become stale and hold nothing."""
        token = self._tokens.pop(id(machine), None)
        if token is not None:
            self._machines.pop(token, None)

    def next_deadline(self) -> Optional[float]:
        """The earliest live deadline (stale entries at the top are dropped)."""
        heap = self._heap
        while heap:
            when, token = heap[0]
            machine = self._machines.get(token)
            if machine is not None and machine.next_deadline() == when:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> Optional[Timed]:
        """The next machine whose deadline is due at C{now}, or None; the caller runs it
        and schedules it again."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, token = heapq.heappop(heap)
            machine = self._machines.get(token)
            if machine is not None and machine.next_deadline() == when:
                return machine
        return None
