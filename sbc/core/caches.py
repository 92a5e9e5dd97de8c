# -*- test-case-name: tests.core.test_proxy_leak -*-
"""
The parser's bounded caches, in one place: parsed URIs, name-addrs and Vias, host
spellings and IP literals (LRU, 4096 short texts each), the memos of header and start
lines and the next-hop answers of L{sbc.core.routing.uri_target}.
They are shared by every message, not per-call state; memory measurements empty them
first so that what is left is what calls keep.
"""

from __future__ import annotations

from sbc.core import address, header, routing, syntax, uri

__all__ = ["clear_parse_caches"]


def clear_parse_caches() -> None:
    """Empty every parse cache (they fill again as messages arrive)."""
    for module in (uri, syntax, address, header):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()
    header._LINES.clear()
    routing._targets.clear()  # uri_target's answers by URI text
