# -*- test-case-name: tests.net.test_timers -*-
"""
Drive a core object's deadlines with one re-armed C{IDelayedCall} (as aioquic's transport
does): the core says when it next needs C{handle_timer(now)}, this calls it then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    """One pending call at the earliest deadline; re-armed after every change."""

    def __init__(self, clock: IReactorTime, fire: Callable[[float], None]) -> None:
        self.clock = clock
        self._fire_callback = fire
        self._call: Optional[IDelayedCall] = None
        self._deadline: Optional[float] = None

    @property
    def deadline(self) -> Optional[float]:
        """When the pending call runs, or L{None}."""
        return self._deadline if self._call is not None else None

    def rearm(self, deadline: Optional[float]) -> None:
        """Run the callback at C{deadline} (absolute, the clock's time base); L{None} stops."""
        if deadline is not None and self._call is not None and deadline == self._deadline:
            return
        self.cancel()
        if deadline is None:
            return
        self._deadline = deadline
        self._call = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._fire)

    def cancel(self) -> None:
        """Forget the pending call."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._deadline = None

    def _fire(self) -> None:
        deadline = self._deadline or 0.0
        self._call = None
        self._deadline = None
        # callLater may run a hair early by float rounding: never hand the core a time
        # before the deadline it asked for.
        self._fire_callback(max(self.clock.seconds(), deadline))
