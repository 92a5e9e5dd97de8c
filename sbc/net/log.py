# -*- test-case-name: tests.net.test_engine -*-
"""
Loggers for sbc's modules, filtered by one level that C{[core] log_level} sets.

Every sbc logger writes through a L{FilteringLogObserver} in front of the global publisher,
so the level applies to sbc's own events without touching other libraries' logging.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

__all__ = ["logger", "set_level"]

_levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_levels])


def logger(namespace: str) -> Logger:
    """A logger for C{namespace} (a module name under C{sbc}) honouring the sbc level."""
    return Logger(namespace=namespace, observer=_observer)


def set_level(level: LogLevel) -> None:
    """Set the lowest level of sbc events that get through."""
    _levels.setLogLevelForNamespace("sbc", level)
