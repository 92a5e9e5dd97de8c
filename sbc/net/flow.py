# -*- test-case-name: tests.net.test_udp -*-
"""
A flow is the path a message came in on: transport, remote address, and a way to send back
along the same socket or connection (what RFC 3581 and RFC 5626 ask of a server behind NAT).
"""

from __future__ import annotations

from typing import Optional, Protocol

__all__ = ["Flow", "HostPort"]

HostPort = tuple[str, int]


class Flow(Protocol):
    """
    The path one message arrived on.

    @ivar transport: C{udp}, C{tcp} or C{tls}.
    @ivar remote: the peer's (bare host, port).
    @ivar local: our (bare host, port) on that path.
    @ivar reliable: True for streams.
    """

    transport: str
    remote: HostPort
    local: HostPort
    reliable: bool

    def send(self, data: bytes, destination: Optional[HostPort] = None) -> None:
        """Send C{data} back along this flow: on a stream to the peer, on a datagram
        socket to C{destination} (default: the peer)."""
