# -*- test-case-name: tests.core.test_proxy -*-
"""
What the proxy core asks of the world besides sending messages: DNS lookups, media
anchoring, and typed events for the operator (a log line each, counters), named in the
past tense as h2's events are.  The engine matches them by type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from sbc.core.address import Address
from sbc.core.dialog import DialogEvent
from sbc.core.transaction import Send
from sbc.core.uri import SipUri

__all__ = [
    "Resolve",
    "Anchor",
    "ReleaseMedia",
    "OperatorEvent",
    "Registered",
    "ScriptFailed",
    "ScriptNoAction",
    "FailedOver",
    "Blocklisted",
    "BlocklistLifted",
    "RelayRefused",
    "Effect",
]


@dataclass(frozen=True)
class Resolve:
    """Find the next hops of C{uri} (RFC 3263) and hand them to C{Proxy.resolved}."""

    token: int
    uri: SipUri


@dataclass(frozen=True)
class Anchor:
    """
    Have the media relay rewrite an SDP body, then call C{Proxy.anchored}.

    @ivar op: C{offer} or C{answer}, in rtpengine's sense: C{from_tag} is always the tag of
        the side that made the offer.
    @ivar source: where the SDP came from (the relay's first guess for that side's media).
    @ivar towards: for an offer relayed in a request, where it goes first (L{None}: not
        known yet), so that the relay can pick the other side's media profile (RFC 7118
        clients speak WebRTC media).
    """

    token: int
    op: str
    call_id: str
    from_tag: str
    to_tag: Optional[str]
    sdp: bytes
    source: Address
    towards: Optional[Address] = None


@dataclass(frozen=True)
class ReleaseMedia:
    """The call's media session ends: release its relay ports."""

    call_id: str


class OperatorEvent:
    """Something the operator sees as one log line (and a counter): L{event} names it,
    L{fields} are its C{key=value} pairs."""

    event: ClassVar[str] = "event"

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, str(v)) for k, v in vars(self).items())


@dataclass(frozen=True)
class Registered(OperatorEvent):
    """A REGISTER was saved: the user has C{contacts} live bindings (none: the line says
    C{unregistered})."""

    aor: str
    source: str
    contacts: int
    nat: str

    @property
    def event(self) -> str:  # type: ignore[override]
        return "registered" if self.contacts else "unregistered"


@dataclass(frozen=True)
class ScriptFailed(OperatorEvent):
    """The routing script raised (the request got 500; sbc goes on)."""

    event: ClassVar[str] = "script_error"
    route: str
    error: str


@dataclass(frozen=True)
class ScriptNoAction(OperatorEvent):
    """The routing script neither answered nor relayed a request (500 Not Routed)."""

    event: ClassVar[str] = "script_no_action"
    method: str
    call_id: str


@dataclass(frozen=True)
class FailedOver(OperatorEvent):
    """A branch failed and the request went on to the next address of its next hop."""

    event: ClassVar[str] = "failover"
    call_id: str
    source: str  # the address that failed
    to: str

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        return (("call_id", self.call_id), ("from", self.source), ("to", self.to))


@dataclass(frozen=True)
class Blocklisted(OperatorEvent):
    """A destination went on the blocklist (reason: the blocklist's reason bits)."""

    event: ClassVar[str] = "blocklisted"
    target: str
    reason: int

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        return (("target", self.target), ("reason", hex(self.reason)))


@dataclass(frozen=True)
class BlocklistLifted(OperatorEvent):
    """A request from a blocklisted address lifted its entry (the peer is alive)."""

    event: ClassVar[str] = "blocklist_lifted"
    target: str


@dataclass(frozen=True)
class RelayRefused(OperatorEvent):
    """The relay policy refused a request: 403 Relaying Forbidden or 404 Not Here."""

    status: int
    method: str
    ruri: str
    from_uri: str
    source: str
    call_id: str

    @property
    def event(self) -> str:  # type: ignore[override]
        return "relay_forbidden" if self.status == 403 else "not_here"

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        return (
            ("method", self.method),
            ("ruri", self.ruri),
            ("from", self.from_uri),
            ("source", self.source),
            ("call_id", self.call_id),
        )


Effect = Union[Send, DialogEvent, OperatorEvent, Resolve, Anchor, ReleaseMedia]
