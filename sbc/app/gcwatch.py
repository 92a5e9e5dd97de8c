# -*- test-case-name: tests.app.test_gcwatch -*-
"""
How long the garbage collector stops sbc: a C{gc.callbacks} hook times every collection
(from its C{"start"} to its C{"stop"} call), counts them, keeps the longest and how many
took over L{SLOW_PAUSE}, and hands each duration to an observer (the
C{sbc_gc_pause_seconds} histogram).  A pause stops the reactor: every message waiting in
the socket buffer waits that long too.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, Optional

from twisted.application import service
from typing_extensions import override

from sbc.net.log import logger

__all__ = ["GcWatch", "SLOW_PAUSE"]

log = logger(__name__)

#: Seconds: a pause longer than this shows in p99 call set-up times.
SLOW_PAUSE = 0.005


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
    ) -> None:
        self._observe = observe
        self._clock = clock
        self._started: Optional[float] = None
        self.collections = 0
        self.longest = 0.0
        self.slow = 0

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
        self.longest = max(self.longest, pause)
        if pause > SLOW_PAUSE:
            self.slow += 1
        self._observe(pause)

    def summary(self) -> str:
        """One line: count, longest pause, pauses over L{SLOW_PAUSE}."""
        return (
            f"gc: {self.collections} collections, max {self.longest * 1000:.1f} ms, "
            f"{self.slow} over {SLOW_PAUSE * 1000:.0f} ms"
        )

    @override
    def startService(self) -> None:
        self.install()
        super().startService()

    @override
    def stopService(self):  # type: ignore[no-untyped-def]
        self.uninstall()
        log.info("{summary}", summary=self.summary())
        return super().stopService()
