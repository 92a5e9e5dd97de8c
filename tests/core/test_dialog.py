"""Tests for L{sbc.core.dialog}."""

from __future__ import annotations

from sbc.core.dialog import (
    DialogConfirmed,
    DialogCreated,
    DialogState,
    DialogTable,
    DialogTerminated,
)
from sbc.core.message import Request, Response, parse
from sbc.core.reply import make_response
from tests.helpers import request_bytes


def invite() -> Request:
    m = parse(request_bytes("INVITE", "sip:bob@sbc.test"))
    assert isinstance(m, Request)
    return m


def reply(request: Request, status: int, tag: str) -> Response:
    r = make_response(request, status).with_header("To", f"<sip:bob@example.com>;tag={tag}")
    assert isinstance(r, Response)
    return r


def test_early_then_confirmed_then_bye() -> None:
    """180 with a tag creates an early dialog, 200 confirms it, BYE ends it."""
    table = DialogTable()
    inv = invite()
    assert [type(e) for e in table.invite_response(inv, reply(inv, 180, "t1"), 1.0)] == [
        DialogCreated
    ]
    assert [type(e) for e in table.invite_response(inv, reply(inv, 200, "t1"), 2.0)] == [
        DialogConfirmed
    ]
    [dialog] = list(table)
    assert dialog.state is DialogState.CONFIRMED
    bye = parse(
        request_bytes("BYE", "sip:alice@h")
        .replace(b"From: <sip:alice@example.com>;tag=from1", b"From: <sip:bob@example.com>;tag=t1")
        .replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@example.com>;tag=from1")
    )
    assert isinstance(bye, Request)
    [ended] = table.bye(bye)
    assert isinstance(ended, DialogTerminated) and ended.reason == "BYE" and len(table) == 0


def test_failed_invite_ends_early_dialogs() -> None:
    """A final error ends every early dialog of the call."""
    table = DialogTable()
    inv = invite()
    table.invite_response(inv, reply(inv, 180, "a"), 1.0)
    table.invite_response(inv, reply(inv, 183, "b"), 1.0)
    events = table.invite_response(inv, reply(inv, 486, "a"), 2.0)
    assert len(events) == 2 and all(isinstance(e, DialogTerminated) for e in events)


def test_answered_fork_ends_other_early_dialogs() -> None:
    """A 2xx on one fork ends the other early dialogs; a direct 200 creates and confirms."""
    table = DialogTable()
    inv = invite()
    table.invite_response(inv, reply(inv, 180, "a"), 1.0)
    events = table.invite_response(inv, reply(inv, 200, "b"), 2.0)
    assert [type(e) for e in events] == [DialogCreated, DialogConfirmed, DialogTerminated]


def test_timeout_ends_early_dialogs() -> None:
    """An INVITE that timed out ends its early dialogs."""
    table = DialogTable()
    inv = invite()
    table.invite_response(inv, reply(inv, 180, "a"), 1.0)
    assert [e.reason for e in table.invite_timed_out(inv)] == ["timeout"]  # type: ignore[union-attr]
