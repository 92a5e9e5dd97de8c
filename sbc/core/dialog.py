# -*- test-case-name: tests.core.test_dialog -*-
"""
Dialogs as the proxy sees them (RFC 3261 §12): early on a tagged provisional response,
confirmed on 2xx, terminated on BYE, on a failed INVITE, or when the INVITE timed out.

The table reports each change as a past-tense event; the keepalive and RTP layers subscribe
to those events through the engine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Union

from sbc.core.message import Request, Response

__all__ = [
    "DialogState",
    "Dialog",
    "DialogCreated",
    "DialogConfirmed",
    "DialogTerminated",
    "DialogEvent",
    "DialogTable",
]


class DialogState(enum.Enum):
    """RFC 3261 §12 dialog states."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass
class Dialog:
    """
    One dialog: identified by Call-ID, the caller's tag and the callee's tag.

    @ivar invite: the initial INVITE as sbc received it.
    """

    call_id: str
    caller_tag: str
    callee_tag: str
    state: DialogState
    created_at: float
    invite: Request

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.caller_tag, self.callee_tag)


@dataclass(frozen=True)
class DialogCreated:
    dialog: Dialog


@dataclass(frozen=True)
class DialogConfirmed:
    dialog: Dialog


@dataclass(frozen=True)
class DialogTerminated:
    dialog: Dialog
    reason: str


DialogEvent = Union[DialogCreated, DialogConfirmed, DialogTerminated]


class DialogTable:
    """Every live dialog, by (Call-ID, caller tag, callee tag)."""

    def __init__(self) -> None:
        self._dialogs: dict[tuple[str, str, str], Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._dialogs.values()))

    def find(self, call_id: str, tag_a: Optional[str], tag_b: Optional[str]) -> Optional[Dialog]:
        """The dialog with these tags, in either direction."""
        if tag_a is None or tag_b is None:
            return None
        return self._dialogs.get((call_id, tag_a, tag_b)) or self._dialogs.get(
            (call_id, tag_b, tag_a)
        )

    def invite_response(self, invite: Request, response: Response, now: float) -> list[DialogEvent]:
        """Track an INVITE's response (the initial INVITE only: no To tag in the request)."""
        if invite.to.tag is not None:
            return []
        call_id, caller = invite.call_id, invite.from_.tag or ""
        callee = response.to.tag
        events: list[DialogEvent] = []
        if response.status >= 300:
            for dialog in [
                d
                for d in self._dialogs.values()
                if d.call_id == call_id and d.caller_tag == caller and d.state is DialogState.EARLY
            ]:
                events.append(self._end(dialog, f"failed with {response.status}"))
            return events
        if callee is None or response.status == 100:
            return []
        key = (call_id, caller, callee)
        dialog = self._dialogs.get(key)
        if dialog is None:
            state = DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY
            dialog = Dialog(call_id, caller, callee, state, now, invite)
            self._dialogs[key] = dialog
            events.append(DialogCreated(dialog))
            if state is DialogState.CONFIRMED:
                events.append(DialogConfirmed(dialog))
        elif response.status >= 200 and dialog.state is DialogState.EARLY:
            dialog.state = DialogState.CONFIRMED
            events.append(DialogConfirmed(dialog))
        if response.status >= 200:
            # Other early dialogs of a forked call end when one is confirmed (§13.2.2.4).
            for other in [
                d
                for d in self._dialogs.values()
                if d.call_id == call_id and d.caller_tag == caller and d.state is DialogState.EARLY
            ]:
                events.append(self._end(other, "another branch answered"))
        return events

    def invite_timed_out(self, invite: Request) -> list[DialogEvent]:
        """The INVITE got no final response in time: its early dialogs end."""
        call_id, caller = invite.call_id, invite.from_.tag or ""
        return [
            self._end(d, "timeout")
            for d in list(self._dialogs.values())
            if d.call_id == call_id and d.caller_tag == caller and d.state is DialogState.EARLY
        ]

    def bye(self, request: Request) -> list[DialogEvent]:
        """A BYE ends its dialog (from either side)."""
        dialog = self.find(request.call_id, request.from_.tag, request.to.tag)
        if dialog is None:
            return []
        return [self._end(dialog, "BYE")]

    def _end(self, dialog: Dialog, reason: str) -> DialogTerminated:
        dialog.state = DialogState.TERMINATED
        self._dialogs.pop(dialog.key, None)
        return DialogTerminated(dialog, reason)
