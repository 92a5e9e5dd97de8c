"""Tests for L{sbc.core.acc}: one record per call, with its times, status and who hung up."""

from __future__ import annotations

from sbc.core.acc import CallTracker
from sbc.core.dialog import Dialog, DialogState, DialogTerminated
from sbc.core.message import Request, parse
from sbc.core.reply import make_response
from sbc.core.wire import RECEIVED, SENT, Wire
from tests.helpers import request_bytes

PHONE = ("192.0.2.10", 5070)
US = ("127.0.0.1", 5060)


def feed(tracker: CallTracker, direction: str, data_or_message, when: float) -> list:  # type: ignore[no-untyped-def]
    message = parse(data_or_message) if isinstance(data_or_message, bytes) else data_or_message
    return tracker.wire(Wire(direction, "udp", PHONE, US, message.to_bytes(), when, message))


def invite() -> Request:
    return parse(request_bytes("INVITE", "sip:bob@sbc.test", call_id="c1"))  # type: ignore[return-value]


def media(call_id: str) -> dict:
    return {
        "legs": [
            {"tag": "from1", "source": "192.0.2.10:4000", "packets": 50, "bytes": 8600, "lost": 1},
            {"tag": "to9", "source": "198.51.100.2:4002", "packets": 49, "bytes": 8428, "lost": 0},
        ]
    }


def bye(from_tag: str, to_tag: str) -> bytes:
    data = request_bytes("BYE", "sip:bob@192.0.2.20", call_id="c1", cseq=2)
    if from_tag == "from1":
        return data.replace(
            b"To: <sip:bob@example.com>", f"To: <sip:bob@example.com>;tag={to_tag}".encode()
        )
    return data.replace(b";tag=from1", f";tag={from_tag}".encode()).replace(
        b"To: <sip:bob@example.com>", b"To: <sip:alice@example.com>;tag=from1"
    )


def test_answered_call_hung_up_by_the_callee() -> None:
    """Start at the INVITE, answer at the 2xx, end at the BYE; legs from the relay as they
    were when the BYE came."""
    tracker = CallTracker(media)
    request = invite()
    assert feed(tracker, RECEIVED, request, 100.0) == []
    feed(tracker, RECEIVED, request, 100.5)  # retransmission: same call
    feed(tracker, SENT, make_response(request, 180, headers=()), 101.0)
    ok = make_response(request, 200)
    ok = parse(
        ok.to_bytes().replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=to9")
    )
    assert feed(tracker, SENT, ok, 102.5) == []
    by = parse(bye("to9", "from1"))
    assert feed(tracker, RECEIVED, by, 132.5) == []
    [record] = feed(tracker, SENT, make_response(by, 200), 132.6)  # type: ignore[arg-type]
    assert record["call_id"] == "c1" and record["status"] == 200
    assert record["setup_seconds"] == 2.5 and record["duration"] == 30.0
    assert record["hung_up"] == "callee" and record["to_tag"] == "to9"
    assert record["source"] == "udp:192.0.2.10:5070"
    assert record["start_time"].startswith("1970-01-01T00:01:40.000")
    assert [(leg["side"], leg["packets"]) for leg in record["legs"]] == [
        ("caller", 50),
        ("callee", 49),
    ]
    assert len(tracker) == 0


def test_failed_and_cancelled_calls() -> None:
    """A 486 is the callee's doing, a 487 the caller's; duration 0."""
    for status, who in ((486, "callee"), (487, "caller")):
        tracker = CallTracker()
        request = invite()
        feed(tracker, RECEIVED, request, 10.0)
        [record] = feed(tracker, SENT, make_response(request, status), 14.0)
        assert (record["status"], record["hung_up"], record["duration"]) == (status, who, 0.0)
        assert record["setup_seconds"] == 4.0 and record["answer_time"] is None


def test_dialog_ending_without_bye() -> None:
    """A confirmed call whose dialog ends without a BYE (e.g. media timeout) is recorded."""
    tracker = CallTracker()
    request = invite()
    feed(tracker, RECEIVED, request, 10.0)
    feed(tracker, SENT, make_response(request, 200), 11.0)
    dialog = Dialog("c1", "from1", "to9", DialogState.TERMINATED, 10.0, request)
    [record] = tracker.dialog_event(DialogTerminated(dialog, "media timeout"), 71.0)
    assert record["hung_up"] == "timeout" and record["duration"] == 60.0
