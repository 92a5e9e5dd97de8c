# -*- test-case-name: tests.core.test_media -*-
"""
The relay's RTP/RTCP port pairs (RFC 3550 §11): the pool in C{[rtp] port_min..port_max}
and the interface through which the session table opens and closes their sockets.
"""

from __future__ import annotations

from collections import deque
from typing import Optional, Protocol

__all__ = ["PortPool", "PortListener"]


class PortPool:
    """
    RTP/RTCP port pairs: an even RTP port, RTCP on the next (RFC 3550 §11).

    Free pairs are handed out oldest-released first, so a port just given back is not reused
    at once (late packets of the old call do not reach the new one).
    """

    __slots__ = ("port_min", "port_max", "_free", "_used")

    def __init__(self, port_min: int, port_max: int) -> None:
        first = port_min + (port_min & 1)
        if not 0 < port_min <= port_max <= 65535 or first + 1 > port_max:
            raise ValueError(f"no RTP port pair fits in {port_min}..{port_max}")
        self.port_min = port_min
        self.port_max = port_max
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._used: set[int] = set()

    @property
    def size(self) -> int:
        """How many pairs the range holds."""
        return len(self._free) + len(self._used)

    @property
    def free(self) -> int:
        """How many pairs are free."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """How many pairs are handed out."""
        return len(self._used)

    def allocate(self) -> Optional[int]:
        """A free pair's RTP port (RTCP is that + 1), or L{None} when none is left."""
        if not self._free:
            return None
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> bool:
        """Give a pair back; C{False} (and nothing changes) if it was not handed out."""
        if port not in self._used:
            return False
        self._used.remove(port)
        self._free.append(port)
        return True

    def __contains__(self, port: int) -> bool:
        return port in self._used


class PortListener(Protocol):
    """What opens and closes the sockets of a pair (the adapter's side)."""

    def open_pair(self, port: int) -> bool:
        """Start listening on C{port} and C{port + 1}; C{False} if either cannot be opened."""

    def close_pair(self, port: int) -> None:
        """Stop listening on C{port} and C{port + 1}."""
