# -*- test-case-name: tests.core.test_dialog -*-
"""
Dialogs as the proxy sees them (RFC 3261 §12): early on a tagged provisional response,
confirmed on 2xx, terminated on BYE, on a failed INVITE, when the INVITE timed out, after
Kamailio dialog's C{default_timeout} without an in-dialog request, or when in-dialog
OPTIONS probes (the dialog module's C{ka_interval}) go unanswered twice in a row.

The table reports each change as a past-tense event; the keepalive and RTP layers subscribe
to those events through the engine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional, Union

from sbc.core.address import Address
from sbc.core.message import Header, Message, Request, Response
from sbc.core.timerheap import compact
from sbc.core.uri import parse_uri

__all__ = [
    "DialogState",
    "Dialog",
    "DialogCreated",
    "DialogConfirmed",
    "DialogTerminated",
    "DialogEvent",
    "DialogTable",
    "DialogSettings",
    "Leg",
    "PROBE_FAILURES",
    "contact_of",
]


def contact_of(message: Message) -> Optional[str]:
    """The first Contact URI of C{message} (a side's remote target), or None."""
    contacts = message.contacts
    return str(contacts[0].uri) if contacts else None


#: Probe answers that say the far end no longer has the dialog (or is not there).
PROBE_FAILURES = frozenset({408, 481})


@dataclass(frozen=True)
class DialogSettings:
    """
    The C{[dialog]} section (Kamailio's dialog module).

    @ivar default_timeout: seconds a confirmed dialog lives without an in-dialog request
        (Kamailio's default, 12 hours).
    @ivar dlg_keepalive_interval: seconds between in-dialog OPTIONS probes to both ends
        (0: off); two unanswered probes in a row end the dialog.
    """

    default_timeout: int = 43200
    dlg_keepalive_interval: int = 0


@dataclass
class Leg:
    """One end of a dialog, as sbc reaches it: its remote target, the address and socket
    requests for it go to and from, and probes it left unanswered."""

    target: Optional[str]
    peer: Address
    local: Optional[Address]
    missed: int = 0


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
    expires_at: Optional[float] = None
    probe_at: Optional[float] = None
    #: caller's and callee's legs (known once confirmed through sbc), for probes
    legs: list[Leg] = field(default_factory=list)
    probes_sent: int = 0
    #: each side's remote target (its Contact as sbc relayed it), by its tag: in-dialog
    #: requests from one side go to the other side's target, nowhere else
    targets: dict[str, str] = field(default_factory=dict)

    def other_target(self, request: Request) -> tuple[bool, Optional[str]]:
        """Is C{request} from one of the dialog's sides, and the target it must go to
        (the other side's Contact; None: not known)."""
        sender = request.from_.tag
        if sender == self.caller_tag:
            return True, self.targets.get(self.callee_tag)
        if sender == self.callee_tag:
            return True, self.targets.get(self.caller_tag)
        return False, None

    def refresh_target(self, tag: Optional[str], contact: Optional[str]) -> None:
        """A target refresh (RFC 3261 §12.2: a re-INVITE, UPDATE or their 2xx with a
        Contact) moves that side's target."""
        if tag in (self.caller_tag, self.callee_tag) and contact:
            self.targets[tag] = contact

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.caller_tag, self.callee_tag)

    def next_deadline(self) -> Optional[float]:
        """When the dialog's timeout or next probe is due (None: neither)."""
        times = [t for t in (self.expires_at, self.probe_at) if t is not None]
        return min(times) if times else None

    def probe(self, leg: Leg) -> Request:
        """An in-dialog OPTIONS for C{leg} (Kamailio dialog's keepalive): to its remote
        target, From the other end's tag, CSeq counting the probes."""
        self.probes_sent += 1
        invite = self.invite
        to_caller = self.legs.index(leg) == 0
        caller = (invite.get("from") or "").split(";tag=")[0]
        callee = (invite.get("to") or "").split(";tag=")[0]
        if to_caller:
            from_value, to_value = (
                f"{callee};tag={self.callee_tag}",
                f"{caller};tag={self.caller_tag}",
            )
        else:
            from_value, to_value = (
                f"{caller};tag={self.caller_tag}",
                f"{callee};tag={self.callee_tag}",
            )
        target = parse_uri(leg.target or f"sip:{leg.peer.host}:{leg.peer.port}")
        headers = [
            Header("Max-Forwards", "70"),
            Header("From", from_value),
            Header("To", to_value),
            Header("Call-ID", self.call_id),
            Header("CSeq", f"{self.probes_sent} OPTIONS"),
            Header("Content-Length", "0"),
        ]
        return Request("OPTIONS", target, headers)


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

    def __init__(self, settings: DialogSettings = DialogSettings()) -> None:
        self.settings = settings
        self._dialogs: dict[tuple[str, str, str], Dialog] = {}
        #: Call-ID -> its live dialogs (a forked call has several early ones): the
        #: siblings of a dialog are found without walking the whole table.
        self._calls: dict[str, list[Dialog]] = {}
        self._peak = 0  # dialogs before the table last shrank

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._dialogs.values()))

    def has_call(self, call_id: str) -> bool:
        """Is there a live dialog with this Call-ID (whatever its tags)?"""
        return call_id in self._calls

    def find(self, call_id: str, tag_a: Optional[str], tag_b: Optional[str]) -> Optional[Dialog]:
        """The dialog with these tags, in either direction."""
        if tag_a is None or tag_b is None:
            return None
        return self._dialogs.get((call_id, tag_a, tag_b)) or self._dialogs.get(
            (call_id, tag_b, tag_a)
        )

    def invite_response(
        self,
        invite: Request,
        response: Response,
        now: float,
        legs: Optional[list[Leg]] = None,
        caller_target: Optional[str] = None,
    ) -> list[DialogEvent]:
        """Track an INVITE's response (the initial INVITE only: no To tag in the request);
        C{legs}: how sbc reaches the caller and the callee (for probes)."""
        if invite.to.tag is not None:
            return []
        call_id, caller = invite.call_id, invite.from_.tag or ""
        callee = response.to.tag
        events: list[DialogEvent] = []
        if response.status >= 300:
            for dialog in self._early(call_id, caller):
                events.append(self._end(dialog, f"failed with {response.status}"))
            return events
        if callee is None or response.status == 100:
            return []
        key = (call_id, caller, callee)
        dialog = self._dialogs.get(key)
        if dialog is None:
            state = DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY
            dialog = Dialog(call_id, caller, callee, state, now, invite)
            dialog.refresh_target(caller, caller_target)
            self._dialogs[key] = dialog
            self._calls.setdefault(call_id, []).append(dialog)
            events.append(DialogCreated(dialog))
            if state is DialogState.CONFIRMED:
                self._confirm(dialog, now, legs)
                events.append(DialogConfirmed(dialog))
        elif response.status >= 200 and dialog.state is DialogState.EARLY:
            dialog.state = DialogState.CONFIRMED
            self._confirm(dialog, now, legs)
            events.append(DialogConfirmed(dialog))
        dialog.refresh_target(callee, contact_of(response))
        if response.status >= 200:
            # Other early dialogs of a forked call end when one is confirmed (§13.2.2.4).
            for other in self._early(call_id, caller):
                events.append(self._end(other, "another branch answered"))
        return events

    def invite_timed_out(self, invite: Request) -> list[DialogEvent]:
        """The INVITE got no final response in time: its early dialogs end."""
        call_id, caller = invite.call_id, invite.from_.tag or ""
        return [self._end(d, "timeout") for d in self._early(call_id, caller)]

    def _early(self, call_id: str, caller: str) -> list[Dialog]:
        """The early dialogs of one call from one caller (the branches of a fork)."""
        return [
            d
            for d in self._calls.get(call_id, ())
            if d.caller_tag == caller and d.state is DialogState.EARLY
        ]

    def _confirm(self, dialog: Dialog, now: float, legs: Optional[list[Leg]]) -> None:
        dialog.expires_at = now + self.settings.default_timeout
        if legs and self.settings.dlg_keepalive_interval:
            dialog.legs = legs
            dialog.probe_at = now + self.settings.dlg_keepalive_interval

    def touch(self, request: Request, now: float) -> Optional[Dialog]:
        """An in-dialog request passed: the dialog lives C{default_timeout} more."""
        dialog = self.find(request.call_id, request.from_.tag, request.to.tag)
        if dialog is not None and dialog.expires_at is not None:
            dialog.expires_at = now + self.settings.default_timeout
        return dialog

    def handle_timer(
        self, dialog: Dialog, now: float
    ) -> tuple[list[DialogEvent], list[tuple[Leg, Request]]]:
        """A dialog's deadline: its end (timeout, or a leg that missed two probes in a
        row), or the probes to send now."""
        if dialog.key not in self._dialogs:
            return [], []
        if dialog.expires_at is not None and now >= dialog.expires_at:
            return [self._end(dialog, "timeout")], []
        if dialog.probe_at is None or now < dialog.probe_at:
            return [], []
        if any(leg.missed >= 2 for leg in dialog.legs):
            return [self._end(dialog, "keepalive")], []
        dialog.probe_at = now + self.settings.dlg_keepalive_interval
        probes = []
        for leg in dialog.legs:
            leg.missed += 1
            probes.append((leg, dialog.probe(leg)))
        return [], probes

    def probe_answered(self, dialog: Dialog, leg: Leg, status: int) -> None:
        """A probe's answer: anything but 408/481 means the end is still there."""
        if status not in PROBE_FAILURES:
            leg.missed = 0

    def bye(self, request: Request) -> list[DialogEvent]:
        """A BYE ends its dialog (from either side)."""
        dialog = self.find(request.call_id, request.from_.tag, request.to.tag)
        if dialog is None:
            return []
        return [self._end(dialog, "BYE")]

    def _end(self, dialog: Dialog, reason: str) -> DialogTerminated:
        dialog.state = DialogState.TERMINATED
        dialog.expires_at = dialog.probe_at = None
        if self._dialogs.pop(dialog.key, None) is not None:
            siblings = self._calls.get(dialog.call_id)
            if siblings is not None:
                siblings.remove(dialog)
                if not siblings:
                    del self._calls[dialog.call_id]
            peak = compact(self._dialogs, self._peak)
            if peak < self._peak:  # rebuilt after a peak: so is the Call-ID count
                compact(self._calls, self._peak)
            self._peak = peak
        return DialogTerminated(dialog, reason)
