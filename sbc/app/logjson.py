# -*- test-case-name: tests.app.test_manhole -*-
"""
Structured logs: C{twistd --logger sbc.app.logjson.observer -n sbc ...} writes one JSON
object per event (twisted.logger's format) to standard output instead of text lines.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver

__all__ = ["observer"]


def observer() -> ILogObserver:
    """A JSON log observer on standard output (twistd's --logger factory)."""
    return jsonFileLogObserver(sys.stdout)
