"""Tests for L{sbc.core.transaction}: every table row, every timer, no clock but floats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.core.address import Address
from sbc.core.errors import LocalProtocolError
from sbc.core.message import Request, Response, parse
from sbc.core.reply import make_response
from sbc.core.transaction import (
    CLIENT_INVITE,
    CLIENT_NON_INVITE,
    SERVER_INVITE,
    SERVER_NON_INVITE,
    ClientTransaction,
    ResponseReceived,
    Send,
    ServerTransaction,
    State,
    TimedOut,
    Timers,
    ack_for,
    server_key,
)
from tests.helpers import request_bytes

UDP = Address("udp", "192.0.2.1", 5060)
TCP = Address("tcp", "192.0.2.1", 5060)
TIMERS = Timers(t1=0.5, t2=4.0, t4=5.0, fr_timer=32.0, fr_inv_timer=60.0)


def req(method: str = "INVITE") -> Request:
    m = parse(
        request_bytes(
            method=method,
            uri="sip:bob@192.0.2.1",
            via="SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKsbc1",
        )
    )
    assert isinstance(m, Request)
    return m


def resp(request: Request, status: int) -> Response:
    return make_response(request, status)


def server(method: str = "INVITE", peer: Address = UDP) -> ServerTransaction:
    return ServerTransaction(req(method), peer, None, TIMERS)


def client(method: str = "INVITE", peer: Address = UDP) -> ClientTransaction:
    return ClientTransaction(req(method), peer, None, TIMERS)


SERVER_INPUTS = ["request", "ack", "1xx", "2xx", "final", "G", "H", "I", "J", "L"]
CLIENT_INPUTS = ["1xx", "2xx", "final", "A", "B", "C", "D", "E", "F", "K", "M"]
STATUS = {"1xx": 180, "2xx": 200, "final": 486}


def feed_server(machine: ServerTransaction, event: str, now: float = 1.0) -> list:
    if event in ("request", "ack"):
        r = req("ACK" if event == "ack" else machine.method)
        return machine.receive_request(r, now)
    if event in STATUS:  # (the machine drops its request at its final response)
        return machine.send_response(resp(req(machine.method), STATUS[event]), now)
    machine.deadlines[event] = now
    return machine.handle_timer(now)


def feed_client(machine: ClientTransaction, event: str, now: float = 1.0) -> list:
    if event in STATUS:
        return machine.receive_response(resp(machine.request, STATUS[event]), now)
    machine.deadlines[event] = now
    return machine.handle_timer(now)


SERVER_CASES = [
    (m, s, e)
    for m, table in (("INVITE", SERVER_INVITE), ("OPTIONS", SERVER_NON_INVITE))
    for s in {k[0] for k in table}
    for e in SERVER_INPUTS
]
CLIENT_CASES = [
    (m, s, e)
    for m, table in (("INVITE", CLIENT_INVITE), ("OPTIONS", CLIENT_NON_INVITE))
    for s in {k[0] for k in table}
    for e in CLIENT_INPUTS
]


@pytest.mark.parametrize("method, state, event", SERVER_CASES)
def test_server_every_state_and_input(method: str, state: State, event: str) -> None:
    """Each (state, input): the table's next state; peer inputs and timers without a row
    change nothing; TU inputs without a row are our bug and raise."""
    machine = server(method)
    table = machine.table
    machine.state = state
    machine.last_response = resp(machine.request, 180)
    row = table.get((state, event))
    if row is None and event in STATUS:
        with pytest.raises(LocalProtocolError):
            feed_server(machine, event)
        return
    feed_server(machine, event)
    assert machine.state is (row[0] if row else state)


@pytest.mark.parametrize("method, state, event", CLIENT_CASES)
def test_client_every_state_and_input(method: str, state: State, event: str) -> None:
    """Each (state, input) of a client transaction: next state per table, else unchanged."""
    machine = client(method)
    machine.state = state
    machine.ack = req("ACK")
    row = machine.table.get((state, event))
    feed_client(machine, event)
    assert machine.state is (row[0] if row else state)


def test_every_row_is_reachable_from_the_initial_state() -> None:
    """Each table's states are reachable from where a machine starts (no dead rows)."""
    for table, start in (
        (SERVER_INVITE, State.PROCEEDING),
        (SERVER_NON_INVITE, State.TRYING),
        (CLIENT_INVITE, State.CALLING),
        (CLIENT_NON_INVITE, State.TRYING),
    ):
        reached = {start}
        changed = True
        while changed:
            changed = False
            for (state, _), (nxt, _) in table.items():
                if state in reached and nxt not in reached:
                    reached.add(nxt)
                    changed = True
        assert {s for s, _ in table} <= reached


def test_invite_client_timer_a_doubles_until_b() -> None:
    """UDP INVITE: A at 0.5, 1.5, 3.5, 7.5 ... each resends; B (fr_timer) times out."""
    machine = client()
    assert [type(e) for e in machine.start(0.0)] == [Send]
    times = []
    now = 0.0
    while True:
        now = machine.next_deadline()
        effects = machine.handle_timer(now)
        if any(isinstance(e, TimedOut) for e in effects):
            break
        assert [type(e) for e in effects] == [Send]
        times.append(now)
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 15.5]
    assert now == 32.0 and machine.terminated


def test_non_invite_client_timer_e_caps_at_t2() -> None:
    """UDP non-INVITE: E doubles up to T2, then every T2; after a 1xx, every T2."""
    machine = client("OPTIONS")
    machine.start(0.0)
    seen = []
    for _ in range(6):
        now = machine.next_deadline()
        machine.handle_timer(now)
        seen.append(now)
    assert seen == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    machine.receive_response(resp(machine.request, 180), 16.0)
    assert machine.state is State.PROCEEDING
    assert machine.deadlines["E"] == 15.5 + 4.0


def test_reliable_client_does_not_retransmit_and_ends_at_once() -> None:
    """Over TCP: no A/E; D and K are zero."""
    invite = client(peer=TCP)
    invite.start(0.0)
    assert set(invite.deadlines) == {"B"}
    effects = invite.receive_response(resp(invite.request, 486), 1.0)
    assert isinstance(effects[0], Send) and effects[0].message.method == "ACK"
    assert invite.deadlines == {"D": 1.0}
    invite.handle_timer(1.0)
    assert invite.terminated
    options = client("OPTIONS", peer=TCP)
    options.start(0.0)
    assert set(options.deadlines) == {"F"}


def test_invite_client_non_2xx_ack_retransmitted_on_final_retransmission() -> None:
    """Completed absorbs final retransmissions by resending the same ACK."""
    machine = client()
    machine.start(0.0)
    first = machine.receive_response(resp(machine.request, 486), 1.0)
    again = machine.receive_response(resp(machine.request, 486), 1.2)
    assert [type(e) for e in first] == [Send, ResponseReceived]
    assert [type(e) for e in again] == [Send]
    assert again[0].message is first[0].message
    assert machine.deadlines == {"D": 33.0}


def test_ack_for_a_non_2xx() -> None:
    """The ACK copies R-URI, top Via, From, Call-ID, CSeq number; To from the response."""
    invite = req()
    response = resp(invite, 486)
    ack = parse(ack_for(invite, response).to_bytes())
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == invite.uri and ack.top_via.branch == invite.top_via.branch
    assert ack.cseq.number == invite.cseq.number and ack.cseq.method == "ACK"
    assert ack.to.tag == response.to.tag and ack.from_.tag == invite.from_.tag


def test_fr_inv_timer_after_provisional() -> None:
    """After a 1xx the INVITE branch is bounded by fr_inv_timer; each 1xx restarts it."""
    machine = client()
    machine.start(0.0)
    machine.receive_response(resp(machine.request, 180), 2.0)
    assert machine.deadlines == {"C": 62.0}
    machine.receive_response(resp(machine.request, 180), 10.0)
    assert machine.deadlines == {"C": 70.0}
    effects = machine.handle_timer(70.0)
    assert effects == [TimedOut("C")] and machine.state is State.PROCEEDING
    assert machine.deadlines == {"B": 70.0 + 32.0}


def test_restart_fr_only_on_higher_provisional() -> None:
    """restart_fr_on_each_reply off: a repeated 180 does not extend ringing."""
    machine = ClientTransaction(
        req(), UDP, None, Timers(fr_inv_timer=60.0, restart_fr_on_each_reply=False)
    )
    machine.start(0.0)
    machine.receive_response(resp(machine.request, 180), 2.0)
    machine.receive_response(resp(machine.request, 180), 10.0)
    assert machine.deadlines == {"C": 62.0}
    machine.receive_response(resp(machine.request, 183), 20.0)
    assert machine.deadlines == {"C": 80.0}


def test_invite_2xx_goes_to_accepted_and_passes_retransmissions_up() -> None:
    """RFC 6026: 2xx -> Accepted for 64*T1; 2xx retransmissions are passed up."""
    machine = client()
    machine.start(0.0)
    assert isinstance(
        machine.receive_response(resp(machine.request, 200), 1.0)[0], ResponseReceived
    )
    assert machine.state is State.ACCEPTED and machine.deadlines == {"M": 33.0}
    assert isinstance(
        machine.receive_response(resp(machine.request, 200), 2.0)[0], ResponseReceived
    )


def test_server_invite_timer_g_and_h() -> None:
    """A final response over UDP is resent at 0.5, 1.5, 3.5, 7.5, 11.5 ... until H (32 s)."""
    machine = server()
    machine.send_response(resp(machine.request, 486), 0.0)
    resent = []
    while True:
        now = machine.next_deadline()
        effects = machine.handle_timer(now)
        if any(isinstance(e, TimedOut) for e in effects):
            break
        resent.append(now)
    assert resent[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert now == 32.0 and machine.terminated


def test_server_invite_ack_confirms_then_i() -> None:
    """The ACK stops G/H; I (T4) ends the transaction."""
    machine = server()
    machine.send_response(resp(machine.request, 486), 0.0)
    assert machine.receive_request(req("ACK"), 1.0) == []
    assert machine.state is State.CONFIRMED and machine.deadlines == {"I": 6.0}
    machine.handle_timer(6.0)
    assert machine.terminated


def test_server_absorbs_retransmissions_by_resending_the_last_response() -> None:
    """A retransmitted request gets the last response again (or nothing yet)."""
    machine = server("OPTIONS")
    assert machine.receive_request(req("OPTIONS"), 0.1) == []
    machine.send_response(resp(machine.request, 200), 0.2)
    [again] = machine.receive_request(req("OPTIONS"), 0.3)
    assert isinstance(again, Send) and again.message.status == 200
    assert machine.deadlines == {"J": 0.2 + 32.0}


WAIT = Timers(t1=0.5, t2=4.0, t4=5.0, fr_timer=32.0, fr_inv_timer=60.0, wait=2.0)


def test_wt_timer_shortens_every_linger_of_a_udp_transaction() -> None:
    """Kamailio's wt_timer caps the time a completed transaction absorbs retransmissions:
    Timers J, I and L (server), K, D and M (client); a retransmission inside it is still
    absorbed, and the transaction is gone once it runs out."""
    options = ServerTransaction(req("OPTIONS"), UDP, None, WAIT)
    options.send_response(resp(options.request, 200), 1.0)
    [again] = options.receive_request(req("OPTIONS"), 2.5)
    assert isinstance(again, Send) and again.message.status == 200
    assert options.deadlines == {"J": 3.0}
    options.handle_timer(3.0)
    assert options.terminated
    invite = ServerTransaction(req(), UDP, None, WAIT)
    invite.send_response(resp(invite.request, 200), 1.0)
    assert invite.deadlines == {"L": 3.0}
    rejected = ServerTransaction(req(), UDP, None, WAIT)
    rejected.send_response(resp(rejected.request, 486), 0.0)
    assert rejected.deadlines["H"] == 32.0  # retransmitting until the ACK: not a linger
    rejected.receive_request(req("ACK"), 1.0)
    assert rejected.deadlines == {"I": 3.0}
    for method, status, timer in (("INVITE", 486, "D"), ("INVITE", 200, "M"), ("BYE", 200, "K")):
        machine = ClientTransaction(req(method), UDP, None, WAIT)
        machine.start(0.0)
        machine.receive_response(resp(machine.request, status), 1.0)
        assert machine.deadlines == {timer: 3.0}, method
        machine.handle_timer(3.0)
        assert machine.terminated, method


def test_wt_timer_never_lengthens_the_rfc_timers() -> None:
    """A wt_timer above the RFC's value leaves it: T4 for K and I, 64*T1 for J."""
    timers = Timers(t1=0.5, t4=5.0, wait=60.0)
    machine = ClientTransaction(req("BYE"), UDP, None, timers)
    machine.start(0.0)
    machine.receive_response(resp(machine.request, 200), 1.0)
    assert machine.deadlines == {"K": 6.0}
    options = ServerTransaction(req("OPTIONS"), UDP, None, timers)
    options.send_response(resp(options.request, 200), 0.0)
    assert options.deadlines == {"J": 32.0}


def test_server_key_matches_ack_to_invite_and_separates_cancel() -> None:
    """ACK shares the INVITE's key; CANCEL has its own."""
    assert server_key(req("INVITE")) == server_key(req("INVITE"))
    ack = parse(
        request_bytes(
            method="ACK",
            uri="sip:bob@192.0.2.1",
            via="SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKsbc1",
        )
    )
    cancel = parse(
        request_bytes(
            method="CANCEL",
            uri="sip:bob@192.0.2.1",
            via="SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKsbc1",
        )
    )
    assert isinstance(ack, Request) and isinstance(cancel, Request)
    assert server_key(ack) == server_key(req("INVITE"))
    assert server_key(cancel)[:-1] == server_key(req("INVITE"))[:-1]
    assert server_key(cancel) != server_key(req("INVITE"))


@given(
    st.lists(st.sampled_from(CLIENT_INPUTS), max_size=30),
    st.sampled_from(["INVITE", "BYE"]),
    st.booleans(),
)
def test_client_never_raises_on_peer_input_or_timers(
    events: list[str], method: str, reliable: bool
) -> None:
    """Any sequence of responses and timers is accepted or absorbed, never an exception."""
    machine = client(method, TCP if reliable else UDP)
    machine.start(0.0)
    for i, event in enumerate(events):
        feed_client(machine, event, float(i + 1))


@given(
    st.lists(st.sampled_from(["request", "ack", "G", "H", "I", "J", "L"]), max_size=30),
    st.sampled_from([None, 180, 200, 486]),
)
def test_server_never_raises_on_peer_input_or_timers(events: list[str], status) -> None:  # type: ignore[no-untyped-def]
    """Retransmissions, ACKs and timers in any order never raise."""
    machine = server()
    if status:
        machine.send_response(resp(machine.request, status), 0.0)
    for i, event in enumerate(events):
        feed_server(machine, event, float(i + 1))
