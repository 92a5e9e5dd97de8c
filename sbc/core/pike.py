# -*- test-case-name: tests.core.test_pike -*-
"""
Flood protection like Kamailio's pike module: requests are counted per source IP
in windows of C{sampling_time_unit} seconds; a source above C{reqs_density_per_unit} in a
window is limited (answered 503 with Retry-After), one above twice that is dropped without
an answer.  A source quiet for C{remove_latency} seconds is forgotten; the table is bounded.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["PikeSettings", "Verdict", "Pike"]


@dataclass(frozen=True)
class PikeSettings:
    """The C{[pike]} section (Kamailio's parameter names; density 0 = off)."""

    sampling_time_unit: int = 2
    reqs_density_per_unit: int = 0
    remove_latency: int = 120
    max_sources: int = 100_000


class Verdict(enum.Enum):
    """What to do with a request from a source."""

    PASS = "pass"
    LIMIT = "limit"  # answer 503 with Retry-After
    DROP = "drop"  # say nothing


class _Source:
    __slots__ = ("window", "count", "previous", "last")

    def __init__(self, window: int, now: float) -> None:
        self.window = window
        self.count = 0
        self.previous = 0
        self.last = now


class Pike:
    """Per-source request counters."""

    def __init__(self, settings: PikeSettings) -> None:
        self.settings = settings
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self.limited = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.settings.reqs_density_per_unit > 0

    def __len__(self) -> int:
        return len(self._sources)

    def hit(self, source: str, now: float) -> Verdict:
        """Count one request from C{source} at C{now} and say what to do with it."""
        settings = self.settings
        if not self.enabled:
            return Verdict.PASS
        window = int(now // settings.sampling_time_unit)
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source(window, now)
            self._trim(now)
        else:
            self._sources.move_to_end(source)
        if entry.window != window:
            entry.previous = entry.count if entry.window == window - 1 else 0
            entry.window = window
            entry.count = 0
        entry.count += 1
        entry.last = now
        # The rate over the last unit: this window plus the unexpired part of the last one.
        elapsed = (now / settings.sampling_time_unit) - window
        rate = entry.count + entry.previous * (1.0 - elapsed)
        density = settings.reqs_density_per_unit
        if rate > 2 * density:
            self.dropped += 1
            return Verdict.DROP
        if rate > density:
            self.limited += 1
            return Verdict.LIMIT
        return Verdict.PASS

    def _trim(self, now: float) -> None:
        """Forget sources quiet for remove_latency, and the oldest beyond max_sources."""
        sources = self._sources
        while sources:
            oldest_key = next(iter(sources))
            oldest = sources[oldest_key]
            if len(sources) > self.settings.max_sources or (
                now - oldest.last > self.settings.remove_latency
            ):
                del sources[oldest_key]
            else:
                break
