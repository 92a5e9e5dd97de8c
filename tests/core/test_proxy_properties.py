"""
Property tests of the response context (RFC 3261 §16.7), in the manner of h2's state
machine tests: Hypothesis drives a forked INVITE with random orders of provisionals,
finals (6xx included), timeouts, CANCELs, transport failures and retransmissions, and
the invariants must hold whatever the order:

- one final response goes upstream: never two different non-2xx finals, never a non-2xx
  after a 2xx, nothing provisional after the final;
- every branch that had a provisional and did not answer itself gets a CANCEL;
- everything for the call is gone 64*T1 after it completed (dialogs after their timeout);
- no exception escapes.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.core.address import Address
from sbc.core.dialog import DialogSettings
from sbc.core.message import Request, Response
from sbc.core.transaction import Send
from tests.core.proxyhelpers import CALLER, answer, invite, proxy, register, send_request, sent
from tests.helpers import request_bytes

CALLEES = [Address("udp", f"192.0.2.{21 + i}", 5081 + i) for i in range(3)]

event = st.one_of(
    st.tuples(st.just("provisional"), st.integers(0, 2), st.sampled_from([180, 183])),
    st.tuples(st.just("final"), st.integers(0, 2), st.sampled_from([200, 404, 486, 487, 503, 603])),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 2.0, 31.0, 61.0, 200.0])),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("retransmit")),
    st.tuples(st.just("send_failed"), st.integers(0, 2)),
)


class Call:
    """A forked INVITE through a proxy core, and what went up and down."""

    def __init__(self, forks: int) -> None:
        self.p = proxy(dialog=DialogSettings(default_timeout=100))
        for i in range(forks):
            register(self.p, CALLEES[i], call_id=f"reg{i}")
        self.now = 0.0
        self.invite = invite()
        effects = send_request(self.p, self.invite, self.now)
        self.branches: list[Request] = []
        for i in range(forks):
            [out] = [m for m in sent(effects, CALLEES[i]) if isinstance(m, Request)]
            self.branches.append(out)
        self.upstream: list[int] = []
        self.cancelled: set[int] = set()
        self.provisional: set[int] = set()
        self.answered: set[int] = set()
        #: branches whose INVITE could not be sent: their UAS never answers
        self.unreached: set[int] = set()
        self.record(effects)

    def record(self, effects: list) -> None:
        for e in effects:
            if not isinstance(e, Send):
                continue
            m = e.message
            if e.peer == CALLER and isinstance(m, Response) and m.cseq.method == "INVITE":
                self.upstream.append(m.status)
            elif isinstance(m, Request) and m.method == "CANCEL" and e.peer in CALLEES:
                self.cancelled.add(CALLEES.index(e.peer))

    def run(self, step: tuple) -> None:
        kind = step[0]
        if kind in ("provisional", "final"):
            i, status = step[1], step[2]
            if i >= len(self.branches) or i in self.answered | self.unreached or self.now > 60:
                return  # (a UAS answers within fr_timer and the 64*T1 after it, or never)
            effects = answer(self.p, self.branches[i], status, CALLEES[i], self.now, f"b{i}")
            (self.provisional if status < 200 else self.answered).add(i)
            self.record(effects)
        elif kind == "wait":
            self.advance(self.now + step[1])
        elif kind == "cancel":
            cancel = request_bytes(
                "CANCEL",
                "sip:bob@sbc.test",
                via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKc1;rport",
                call_id="c1",
            )
            self.record(send_request(self.p, cancel, self.now))
        elif kind == "retransmit" and not any(s >= 200 for s in self.upstream):
            # (after the final, the transaction may be gone: that is a new request)
            self.record(send_request(self.p, self.invite, self.now))
        elif kind == "send_failed":
            i = step[1]
            if i < len(self.branches):
                if i not in self.provisional | self.answered:
                    self.unreached.add(i)
                self.record(self.p.transport_failed(CALLEES[i], self.now))

    def advance(self, until: float) -> None:
        for _ in range(10_000):
            deadline = self.p.next_deadline()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            self.record(self.p.handle_timer(self.now))
        self.now = until


@settings(max_examples=300, deadline=None)
@given(forks=st.integers(1, 3), steps=st.lists(event, max_size=12))
def test_forked_invite_invariants(forks: int, steps: list) -> None:
    call = Call(forks)
    for step in steps:
        call.run(step)
    call.advance(call.now + 400.0)  # past every timer: lifetime, Timer B/C/D, dialog timeout
    finals = [s for s in call.upstream if s >= 200]
    assert finals, call.upstream  # the caller always hears an end
    first_final = call.upstream.index(finals[0])
    assert all(s >= 200 for s in call.upstream[first_final:]), call.upstream
    failures = {s for s in finals if s >= 300}
    assert len(failures) <= 1, call.upstream
    if any(200 <= s < 300 for s in finals):
        assert not failures or call.upstream.index(min(failures)) < call.upstream.index(
            next(s for s in finals if s < 300)
        ), call.upstream  # never a non-2xx after a 2xx
    for i in call.provisional - call.answered:
        assert i in call.cancelled, (i, call.upstream, sorted(call.cancelled))
    sizes = call.p.sizes()
    tables = ("server_transactions", "client_transactions", "forwardings", "dialogs")
    for table in (*tables, "late_branches"):
        assert sizes[table] == 0, sizes
    assert sizes["timer_heap"] == 0, sizes
