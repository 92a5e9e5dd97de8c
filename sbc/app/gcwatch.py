# -*- test-case-name: tests.app.test_gcwatch -*-
"""
How long the garbage collector stops sbc: a C{gc.callbacks} hook times every collection
(from its C{"start"} to its C{"stop"} call), counts them, keeps the longest and how many
took over L{SLOW_PAUSE}, and hands each duration to an observer (the
C{sbc_gc_pause_seconds} histogram).  A pause stops the reactor: every message waiting in
the socket buffer waits that long too.

Automatic collections walk only the young generation (see
L{sbc.app.service.GC_THRESHOLDS}); the watch runs that full collection itself, only when
the process has grown past L{GROWTH_FACTOR} times its size after the last one plus
L{GROWTH_SLACK} (one long pause, instead of a pause every few seconds under load).  When a
load is over it gives the load's memory back (see L{GcWatch.check_growth}).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any, Optional

from twisted.application import service
from twisted.internet.task import LoopingCall
from typing_extensions import override

from sbc.core.caches import clear_parse_caches
from sbc.net.log import logger

__all__ = ["GcWatch", "SLOW_PAUSE"]

log = logger(__name__)

#: Seconds: a pause longer than this shows in p99 call set-up times.
SLOW_PAUSE = 0.005
#: A full collection runs once the resident size exceeds this many times its size after
#: the last full collection (or start-up) ...
GROWTH_FACTOR = 2.0
#: ... plus this many bytes (a load's own transactions must not trigger it: one core's
#: worth of calls in their 64*T1 window, overloaded, measured 420 MiB).
GROWTH_SLACK = 1024 * 1024 * 1024
#: A load is over when no more than this many transactions are open ...
IDLE_TRANSACTIONS = 100
#: ... and then its memory is given back if the process is this many bytes larger than
#: after the last time.
IDLE_SLACK = 64 * 1024 * 1024
#: Seconds between two looks at the resident size (and two emptyings of the parse caches).
GROWTH_CHECK_INTERVAL = 30.0


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class GcWatch(service.Service):
    """
    Times garbage collections while the service runs; logs a summary when it stops.

    @ivar collections: collections seen.
    @ivar longest: the longest pause, in seconds.
    @ivar slow: pauses longer than L{SLOW_PAUSE}.
    """

    name = "gcwatch"

    def __init__(
        self,
        observe: Callable[[float], None] = lambda seconds: None,
        clock: Callable[[], float] = time.perf_counter,
        reactor: Any = None,
        size: Callable[[], int] = resident_bytes,
        busy: Callable[[], int] = lambda: 0,
    ) -> None:
        self._observe = observe
        self._clock = clock
        self._reactor = reactor
        self._size = size
        self._busy = busy
        self._started: Optional[float] = None
        self._check: Optional[LoopingCall] = None
        self.collections = 0
        self.longest = 0.0
        self.slow = 0
        #: Objects found in unreachable cycles, and full collections the watch ran.
        self.collected = 0
        self.full_collections = 0
        self.baseline = 0

    def install(self) -> None:
        """Start timing collections (once, however often called)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop timing collections."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        self._started = None

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        if self._started is None:
            return  # installed while a collection ran
        pause = self._clock() - self._started
        self._started = None
        self.collections += 1
        self.collected += info.get("collected", 0)
        self.longest = max(self.longest, pause)
        if pause > SLOW_PAUSE:
            self.slow += 1
        self._observe(pause)

    def check_growth(self) -> bool:
        """Run a full collection when the process grew past its bound, or give a load's
        memory back once it is over (few open transactions left, the process larger than
        after the last time); say whether either ran.

        The parse caches are emptied first, every time: under load their entries are
        made all along and end up spread over the allocator's arenas, and an arena with
        one live object is never given back.  Once a load is over, the collector's free
        lists (kept tuples, lists, dicts) pin arenas the same way; only a full collection
        empties them, so one runs with every live object frozen first (nothing scanned:
        about 10 ms whatever is registered, where scanning 100,000 bindings took 570 ms).
        Measured through the core after 40 s of 800 calls/s: 230 MiB kept once the calls
        were over, 99 MiB after this."""
        clear_parse_caches()
        size = self._size()
        if not size:
            return False
        if size > self.baseline * GROWTH_FACTOR + GROWTH_SLACK:
            self._collect(size, "growing to", scan=True)
            return True
        if self._busy() <= IDLE_TRANSACTIONS and size > self.baseline + IDLE_SLACK:
            self._collect(size, "a load, at", scan=False)
            return True
        return False

    def _collect(self, size: int, why: str, scan: bool) -> None:
        started = self._clock()
        if scan:
            found = gc.collect()
        else:
            gc.freeze()
            try:
                found = gc.collect()  # scans nothing; clears the free lists
            finally:
                # Everything goes back to the old generation, what start-up froze too: no
                # automatic collection scans that generation either.
                gc.unfreeze()
        self.full_collections += 1
        self.baseline = self._size()
        log.info(
            "gc: {what} after {why} {before} MiB: {found} objects in cycles freed in "
            "{ms:.0f} ms, {after} MiB now",
            what="full collection" if scan else "free lists emptied",
            why=why,
            before=size >> 20,
            found=found,
            ms=(self._clock() - started) * 1000,
            after=self.baseline >> 20,
        )

    def summary(self) -> str:
        """One line: count, longest pause, pauses over L{SLOW_PAUSE}, cycles freed."""
        return (
            f"gc: {self.collections} collections, max {self.longest * 1000:.1f} ms, "
            f"{self.slow} over {SLOW_PAUSE * 1000:.0f} ms, {self.collected} objects in "
            f"cycles freed, {self.full_collections} full collections"
        )

    @override
    def startService(self) -> None:
        self.install()
        self.baseline = self._size()
        if self._reactor is not None:
            self._check = LoopingCall(self.check_growth)
            self._check.clock = self._reactor
            self._check.start(GROWTH_CHECK_INTERVAL, now=False)
        super().startService()

    @override
    def stopService(self):  # type: ignore[no-untyped-def]
        if self._check is not None and self._check.running:
            self._check.stop()
        self.uninstall()
        log.info("{summary}", summary=self.summary())
        return super().stopService()
