# -*- test-case-name: tests.core.test_stats -*-
"""
Counters with Kamailio's names (core: C{rcv_requests}, C{rcv_replies}, C{err_requests},
C{drop_requests}, C{drop_replies}, C{bad_msg_hdr}, ...) plus per-transport counters named
C{<transport>_<what>}.  Plain objects: the manhole and the metrics exporter read L{snapshot}.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["Statistics"]


class Statistics:
    """A bag of named, monotonically increasing counters."""

    __slots__ = ("_counters",)

    def __init__(self) -> None:
        self._counters: Counter[str] = Counter()

    def incr(self, name: str, amount: int = 1) -> None:
        """Add C{amount} to counter C{name}."""
        self._counters[name] += amount

    def set(self, name: str, value: int) -> None:
        """Set gauge C{name} to C{value}."""
        self._counters[name] = value

    def get(self, name: str) -> int:
        """The value of counter C{name} (0 if never incremented)."""
        return self._counters[name]

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter, sorted by name."""
        return dict(sorted(self._counters.items()))
