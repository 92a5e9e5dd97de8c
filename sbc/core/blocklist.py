# -*- test-case-name: tests.core.test_blocklist -*-
"""
The destination blocklist (Kamailio core dst_blocklist): next hops that recently failed are skipped
without delay until their entry expires.

Entries are keyed by (transport, host, port); an entry or a query with transport C{""}
matches every transport.  Re-adding a key ORs its reasons and resets its expiry.
Time is C{now}; expired entries are dropped when met and by L{Blocklist.purge}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sbc.core.address import Address

__all__ = [
    "Blocklist",
    "BlocklistSettings",
    "SEND_FAILED",
    "CONNECT_FAILED",
    "ICMP_ERROR",
    "TIMEOUT",
    "REPLY_503",
    "ADMIN",
    "retry_after_timeout",
    "METHOD_BITS",
    "method_bits",
]

# Reason flags (Kamailio's values).
SEND_FAILED = 0x02
CONNECT_FAILED = 0x04
ICMP_ERROR = 0x08
TIMEOUT = 0x10
REPLY_503 = 0x20
ADMIN = 0x40

_REASON_NAMES = {
    SEND_FAILED: "send_failed",
    CONNECT_FAILED: "connect_failed",
    ICMP_ERROR: "icmp_error",
    TIMEOUT: "timeout",
    REPLY_503: "503",
    ADMIN: "admin",
}

#: Kamailio's method bitmap for tm's blst_methods_add.
METHOD_BITS = {
    "INVITE": 1,
    "CANCEL": 2,
    "ACK": 4,
    "BYE": 8,
    "INFO": 16,
    "REGISTER": 32,
    "SUBSCRIBE": 64,
    "NOTIFY": 128,
    "MESSAGE": 256,
    "OPTIONS": 512,
    "PRACK": 1024,
    "UPDATE": 2048,
    "REFER": 4096,
    "PUBLISH": 8192,
}


def method_bits(method: str) -> int:
    """The bit of C{method} in a blst_methods_add bitmap (unknown methods: none)."""
    return METHOD_BITS.get(method.upper(), 0)


@dataclass(frozen=True)
class BlocklistSettings:
    """
    The [blocklist] section.

    @ivar dst_blocklist_expire: seconds an entry lives (send failure, timeout).
    @ivar blst_503_def_timeout: seconds for a 503 without Retry-After (0: not blocklisted).
    @ivar blst_methods_add: bitmap of methods whose timeout blocklists (1 = INVITE).
    """

    use_dst_blocklist: bool = True
    dst_blocklist_expire: int = 60
    blst_503: bool = False
    blst_503_def_timeout: int = 0
    blst_503_min_timeout: int = 0
    blst_503_max_timeout: int = 3600
    blst_methods_add: int = 1


def retry_after_timeout(retry_after: Optional[int], settings: BlocklistSettings) -> Optional[int]:
    """How long a 503 blocklists its source (tm blst_503): Retry-After clamped to
    [min, max]; without it the default, where 0 means not at all."""
    if retry_after is None:
        seconds = settings.blst_503_def_timeout
        return seconds if seconds > 0 else None
    return min(max(retry_after, settings.blst_503_min_timeout), settings.blst_503_max_timeout)


class Blocklist:
    """Blocked destinations with their reasons and expiry times."""

    def __init__(self, settings: BlocklistSettings = BlocklistSettings(), limit: int = 10000):
        self.settings = settings
        self.limit = limit
        self._entries: dict[tuple[str, str, int], tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, target: Address, reason: int, now: float, seconds: Optional[float] = None
    ) -> bool:
        """Block C{target} for C{seconds} (default: dst_blocklist_expire); False when the
        blocklist is off or full."""
        if not self.settings.use_dst_blocklist:
            return False
        key = (target.transport, target.host, target.port)
        duration = self.settings.dst_blocklist_expire if seconds is None else seconds
        if key not in self._entries and len(self._entries) >= self.limit:
            self.purge(now)
            if len(self._entries) >= self.limit:
                return False
        _, reasons = self._entries.get(key, (0.0, 0))
        self._entries[key] = (now + duration, reasons | reason)
        return True

    def blocked(self, target: Address, now: float) -> bool:
        """Is C{target} blocked (by its own entry or a wildcard-transport one)?"""
        if not self._entries:
            return False
        for key in (
            (target.transport, target.host, target.port),
            ("", target.host, target.port),
        ):
            entry = self._entries.get(key)
            if entry is not None:
                if entry[0] > now:
                    return True
                del self._entries[key]
        return False

    def lift(self, source: Address) -> bool:
        """A request came from C{source}: the peer is alive, so its entries (its own
        transport's and the any-transport one) go, except those an operator added.  True
        when one was lifted."""
        if not self._entries:
            return False
        lifted = False
        for key in ((source.transport, source.host, source.port), ("", source.host, source.port)):
            entry = self._entries.get(key)
            if entry is not None and not entry[1] & ADMIN:
                del self._entries[key]
                lifted = True
        return lifted

    def remove(self, target: Address) -> bool:
        """Unblock C{target} (exact key); False when it was not there."""
        return self._entries.pop((target.transport, target.host, target.port), None) is not None

    def purge(self, now: float) -> None:
        """Drop expired entries."""
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()

    def view(self, now: float) -> list[dict]:
        """Live entries (for the blocklist_view admin command)."""
        return [
            {
                "transport": transport or "any",
                "host": host,
                "port": port,
                "expires": int(expires - now),
                "reasons": [name for bit, name in _REASON_NAMES.items() if reasons & bit],
            }
            for (transport, host, port), (expires, reasons) in sorted(self._entries.items())
            if expires > now
        ]
