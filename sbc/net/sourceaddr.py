# -*- test-case-name: tests.net.test_sourceaddr -*-
"""
Which local address the system would send from to reach a host (its routing table), as
Kamailio's C{mhomed} asks it: a UDP socket is connected (nothing is sent) and its name
read.  The proxy core uses the answer to pick the socket towards a next hop when several
listen on one transport.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Optional

__all__ = ["source_address"]


@lru_cache(maxsize=4096)
def source_address(host: str) -> Optional[str]:
    """The local address towards C{host} (None: no route, or not an IP address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))  # UDP connect: a route lookup, no packet
            return str(probe.getsockname()[0])
    except OSError:
        return None
