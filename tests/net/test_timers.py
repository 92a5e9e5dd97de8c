"""Tests for L{sbc.net.timers}: one re-armed delayed call, driven by a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sbc.net.timers import DeadlineTimer


class DeadlineTimerTests(SynchronousTestCase):
    """Re-arming keeps exactly one pending call at the latest deadline asked for."""

    def test_fires_at_the_deadline_with_that_time(self) -> None:
        """The callback runs once, at the deadline, and gets the time."""
        clock = Clock()
        fired: list[float] = []
        timer = DeadlineTimer(clock, fired.append)
        timer.rearm(1.5)
        clock.advance(1.4)
        self.assertEqual(fired, [])
        clock.advance(0.1)
        self.assertEqual(fired, [1.5])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_rearm_replaces_the_pending_call(self) -> None:
        """A new deadline cancels the old call; None cancels everything."""
        clock = Clock()
        fired: list[float] = []
        timer = DeadlineTimer(clock, fired.append)
        timer.rearm(5.0)
        timer.rearm(2.0)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        timer.rearm(2.0)  # unchanged: the same call stays
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(2.0)
        self.assertEqual(fired, [2.0])
        timer.rearm(9.0)
        timer.rearm(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_past_deadline_fires_on_the_next_turn(self) -> None:
        """A deadline already passed runs at once, with the clock's time."""
        clock = Clock()
        clock.advance(10)
        fired: list[float] = []
        DeadlineTimer(clock, fired.append).rearm(3.0)
        clock.advance(0)
        self.assertEqual(fired, [10.0])
