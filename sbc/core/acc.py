# -*- test-case-name: tests.core.test_acc -*-
"""
Call records, as Kamailio's C{acc} module writes them: one record per call when it ends.
The tracker reads the messages sbc receives and sends (L{sbc.core.wire.Wire}) and the
dialog events: an initial INVITE starts a call, its final response answers or fails it,
a BYE (or the dialog's end without one, e.g. a media timeout) ends it.  The record names
the call (Call-ID, From, To, tags), where it came from (source address and transport), its
times (start, answer, end; set-up time and duration), its final status, who hung up, and
per leg what the relay counted (packets, bytes, lost).  Pure: writing is the adapters'.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Optional

from sbc.core.dialog import DialogEvent, DialogTerminated
from sbc.core.message import Request, Response
from sbc.core.wire import RECEIVED, SENT, Wire

__all__ = ["AccSettings", "CallTracker", "CallRecord", "MAX_CALLS"]

#: Calls followed at most (set-up and established); the oldest are dropped first.
MAX_CALLS = 200_000

MediaStats = Callable[[str], Optional[dict[str, Any]]]


@dataclass(frozen=True)
class AccSettings:
    """
    The C{[acc]} section.

    @ivar log_file: JSON lines, one per call (empty: none); reopened on SIGHUP.
    @ivar db_url: a PostgreSQL connection URI (Kamailio acc's C{db_url}); empty: none.
    @ivar db_table_acc: the table records go to (Kamailio acc's C{db_table_acc}).
    """

    log_file: Optional[str] = None
    db_url: str = ""
    db_table_acc: str = "acc"


@dataclass
class _Call:
    call_id: str
    from_uri: str
    to_uri: str
    from_tag: str
    source: str
    transport: str
    start: float
    cseq: int
    to_tag: Optional[str] = None
    answer: Optional[float] = None
    status: Optional[int] = None
    reason: str = ""
    bye_at: Optional[float] = None
    hung_up: Optional[str] = None
    media: Optional[dict[str, Any]] = field(default=None, repr=False)


#: A finished call as plain data (what is written as one JSON line and one table row).
CallRecord = dict[str, Any]


def _iso(when: Optional[float]) -> Optional[str]:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


class CallTracker:
    """
    Follows calls from the wire and returns a L{CallRecord} for each call that ended.

    @ivar media_stats: the relay's counters of a call by Call-ID (None: not anchored).
    """

    def __init__(self, media_stats: Optional[MediaStats] = None) -> None:
        self.media_stats = media_stats
        self._calls: OrderedDict[str, _Call] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def wire(self, record: Wire) -> list[CallRecord]:
        """One message received or sent; the records of calls it ended."""
        message = record.message
        if isinstance(message, Request) and record.direction == RECEIVED:
            return self._request(message, record)
        if isinstance(message, Response) and record.direction == SENT:
            return self._response(message, record.time)
        return []

    def dialog_event(self, event: DialogEvent, now: float) -> list[CallRecord]:
        """A dialog ended without a BYE sbc saw (timeout, media timeout): its call ends."""
        if not isinstance(event, DialogTerminated):
            return []
        call = self._calls.get(event.dialog.call_id)
        if call is None or call.answer is None or call.bye_at is not None:
            return []
        call.hung_up = "timeout"
        call.reason = event.reason
        self._snapshot(call)
        return [self._finish(call, now)]

    def _request(self, request: Request, record: Wire) -> list[CallRecord]:
        call_id = request.call_id
        if request.method == "INVITE" and request.to.tag is None:
            if call_id not in self._calls:
                self._calls[call_id] = _Call(
                    call_id=call_id,
                    from_uri=str(request.from_.uri),
                    to_uri=str(request.to.uri),
                    from_tag=request.from_.tag or "",
                    source=f"{record.transport}:{record.source[0]}:{record.source[1]}",
                    transport=record.transport,
                    start=record.time,
                    cseq=request.cseq.number,
                )
                if len(self._calls) > MAX_CALLS:
                    self._calls.popitem(last=False)
            return []
        call = self._calls.get(call_id)
        if request.method == "BYE" and call is not None and call.bye_at is None:
            call.bye_at = record.time
            call.hung_up = "caller" if request.from_.tag == call.from_tag else "callee"
            self._snapshot(call)  # before the relay lets the media go
        return []

    def _response(self, response: Response, now: float) -> list[CallRecord]:
        call = self._calls.get(response.call_id)
        if call is None or response.status < 200:
            return []
        method = response.cseq.method
        if method == "INVITE" and response.cseq.number == call.cseq and call.status is None:
            call.status = response.status
            call.reason = response.reason
            if response.status < 300:
                call.answer = now
                call.to_tag = response.to.tag
                return []
            call.hung_up = "caller" if response.status == 487 else "callee"
            self._snapshot(call)
            return [self._finish(call, now)]
        if method == "BYE" and call.bye_at is not None:
            return [self._finish(call, call.bye_at)]
        return []

    def _snapshot(self, call: _Call) -> None:
        if self.media_stats is not None:
            try:
                call.media = self.media_stats(call.call_id)
            except Exception:
                call.media = None

    def _legs(self, call: _Call) -> list[dict[str, Any]]:
        media = call.media
        if not media:
            return []
        out = []
        for leg in media.get("legs", []):
            side = "caller" if leg.get("tag") == call.from_tag else "callee"
            out.append(
                {
                    "side": side,
                    "source": leg.get("source"),
                    "packets": leg.get("packets", 0),
                    "bytes": leg.get("bytes", 0),
                    "lost": leg.get("lost", 0),
                }
            )
        return out

    def _finish(self, call: _Call, end: float) -> CallRecord:
        self._calls.pop(call.call_id, None)
        answered = call.answer is not None
        return {
            "call_id": call.call_id,
            "from": call.from_uri,
            "to": call.to_uri,
            "from_tag": call.from_tag,
            "to_tag": call.to_tag,
            "source": call.source,
            "transport": call.transport,
            "start_time": _iso(call.start),
            "answer_time": _iso(call.answer),
            "end_time": _iso(end),
            "setup_seconds": round((call.answer if answered else end) - call.start, 3),
            "duration": round(end - call.answer, 3) if call.answer is not None else 0.0,
            "status": call.status,
            "reason": call.reason,
            "hung_up": call.hung_up,
            "legs": self._legs(call),
        }
