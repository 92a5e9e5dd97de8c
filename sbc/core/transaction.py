# -*- test-case-name: tests.core.test_transaction -*-
"""
SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), as pure state machines.

Theory of operation:
 - Each machine owns no socket and no clock.  Inputs are method calls that take C{now}; each
   returns a list of effects: L{Send} (a message for the engine to transmit on the
   transaction's path) and past-tense events for the proxy (L{ResponseReceived},
   L{TimedOut}).  C{next_deadline()} tells when C{handle_timer(now)} must be called.
 - Every transition is a row of a table, C{(state, input) -> (next state, action)}; the
   tables are the whole truth about state changes and one test walks every row.  Inputs a
   peer can cause (retransmissions, stray responses) have a row in every state (often
   "absorb"); inputs only sbc causes raise L{LocalProtocolError} where they have no row.
 - Timers carry the RFC's letters.  T1, T2 and T4 come from L{Timers}; Timer B and F are
   Kamailio's C{fr_timer}, and an INVITE branch that got a provisional reply is bounded by
   C{fr_inv_timer} (Kamailio's substitute for Timer C).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Union

from sbc.core.address import Address
from sbc.core.errors import LocalProtocolError, ParseError
from sbc.core.message import Header, ParseLimits, Request, Response, parse

__all__ = [
    "Timers",
    "State",
    "Send",
    "ResponseReceived",
    "TimedOut",
    "Effect",
    "ServerTransaction",
    "ClientTransaction",
    "server_key",
    "client_key",
    "bare",
    "SERVER_INVITE",
    "SERVER_NON_INVITE",
    "CLIENT_INVITE",
    "CLIENT_NON_INVITE",
]

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True)
class Timers:
    """
    Timer values in seconds.

    @ivar t1: RTT estimate (C{retr_timer1}); A, E, G start here.
    @ivar t2: retransmission cap for non-INVITE requests and INVITE responses
        (C{retr_timer2}).
    @ivar t4: how long a message may stay in the network.
    @ivar fr_timer: Timer B/F: a branch with no reply at all times out after this.
    @ivar fr_inv_timer: an INVITE branch that got a provisional reply times out after this.
    @ivar restart_fr_on_each_reply: every 1xx restarts C{fr_inv_timer} (else only the first
        one and those with a higher code, as Kamailio tm).
    @ivar wait: Kamailio tm's C{wt_timer}: how long a completed transaction lingers to
        absorb retransmissions.  It shortens Timers D, I, J, K, L and M (never lengthens
        them); L{None} keeps RFC 3261 §17 and RFC 6026's values (64*T1, 32 s, T4).  Timer H,
        which retransmits a final response until the ACK, is not a linger and keeps 64*T1.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    fr_timer: float = 30.0
    fr_inv_timer: float = 120.0
    restart_fr_on_each_reply: bool = True
    wait: Optional[float] = None

    def linger(self, rfc: float) -> float:
        """How long a completed transaction stays, given the RFC's value for it."""
        return rfc if self.wait is None else min(rfc, self.wait)


class State(enum.Enum):
    """States named as in the RFC 3261 §17 figures (plus RFC 6026 Accepted)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


@dataclass(frozen=True)
class Send:
    """Transmit C{message} to C{peer} (from the socket C{local}, when given)."""

    message: Union[Request, Response]
    peer: Address
    local: Optional[Address] = None


@dataclass(frozen=True)
class ResponseReceived:
    """A client transaction passes a response up to the proxy."""

    response: Response


@dataclass(frozen=True)
class TimedOut:
    """A timer said the peer is not answering: B/F/fr_inv (client) or H (server)."""

    timer: str


Effect = Union[Send, ResponseReceived, TimedOut]

S = State
# -- the tables -------------------------------------------------------------------------------
# Inputs: "request" (a retransmission), "ack", "1xx"/"2xx"/"final" (sent by the TU on a server
# transaction, received on a client one), and timer letters.

SERVER_INVITE: dict[tuple[State, str], tuple[State, str]] = {
    (S.PROCEEDING, "request"): (S.PROCEEDING, "resend"),
    (S.PROCEEDING, "ack"): (S.PROCEEDING, "absorb"),
    (S.PROCEEDING, "1xx"): (S.PROCEEDING, "send"),
    (S.PROCEEDING, "2xx"): (S.ACCEPTED, "send_accepted"),
    (S.PROCEEDING, "final"): (S.COMPLETED, "send_completed"),
    (S.COMPLETED, "request"): (S.COMPLETED, "resend"),
    (S.COMPLETED, "ack"): (S.CONFIRMED, "confirm"),
    (S.COMPLETED, "G"): (S.COMPLETED, "retransmit_g"),
    (S.COMPLETED, "H"): (S.TERMINATED, "timeout"),
    (S.CONFIRMED, "request"): (S.CONFIRMED, "absorb"),
    (S.CONFIRMED, "ack"): (S.CONFIRMED, "absorb"),
    (S.CONFIRMED, "I"): (S.TERMINATED, "absorb"),
    (S.ACCEPTED, "request"): (S.ACCEPTED, "absorb"),
    (S.ACCEPTED, "ack"): (S.ACCEPTED, "absorb"),
    (S.ACCEPTED, "2xx"): (S.ACCEPTED, "send"),
    (S.ACCEPTED, "L"): (S.TERMINATED, "absorb"),
}

SERVER_NON_INVITE: dict[tuple[State, str], tuple[State, str]] = {
    (S.TRYING, "request"): (S.TRYING, "absorb"),
    (S.TRYING, "1xx"): (S.PROCEEDING, "send"),
    (S.TRYING, "2xx"): (S.COMPLETED, "send_completed"),
    (S.TRYING, "final"): (S.COMPLETED, "send_completed"),
    (S.PROCEEDING, "request"): (S.PROCEEDING, "resend"),
    (S.PROCEEDING, "1xx"): (S.PROCEEDING, "send"),
    (S.PROCEEDING, "2xx"): (S.COMPLETED, "send_completed"),
    (S.PROCEEDING, "final"): (S.COMPLETED, "send_completed"),
    (S.COMPLETED, "request"): (S.COMPLETED, "resend"),
    (S.COMPLETED, "J"): (S.TERMINATED, "absorb"),
}

CLIENT_INVITE: dict[tuple[State, str], tuple[State, str]] = {
    (S.CALLING, "A"): (S.CALLING, "retransmit_a"),
    (S.CALLING, "B"): (S.TERMINATED, "timeout"),
    (S.CALLING, "1xx"): (S.PROCEEDING, "provisional"),
    (S.CALLING, "2xx"): (S.ACCEPTED, "accept"),
    (S.CALLING, "final"): (S.COMPLETED, "complete"),
    (S.PROCEEDING, "1xx"): (S.PROCEEDING, "provisional"),
    (S.PROCEEDING, "2xx"): (S.ACCEPTED, "accept"),
    (S.PROCEEDING, "final"): (S.COMPLETED, "complete"),
    (S.PROCEEDING, "C"): (S.PROCEEDING, "timeout_c"),
    (S.PROCEEDING, "B"): (S.TERMINATED, "absorb"),
    (S.COMPLETED, "1xx"): (S.COMPLETED, "absorb"),
    (S.COMPLETED, "2xx"): (S.COMPLETED, "absorb"),
    (S.COMPLETED, "final"): (S.COMPLETED, "resend_ack"),
    (S.COMPLETED, "D"): (S.TERMINATED, "absorb"),
    (S.ACCEPTED, "1xx"): (S.ACCEPTED, "absorb"),
    (S.ACCEPTED, "2xx"): (S.ACCEPTED, "pass_up"),
    (S.ACCEPTED, "final"): (S.ACCEPTED, "absorb"),
    (S.ACCEPTED, "M"): (S.TERMINATED, "absorb"),
}

CLIENT_NON_INVITE: dict[tuple[State, str], tuple[State, str]] = {
    (S.TRYING, "E"): (S.TRYING, "retransmit_e"),
    (S.TRYING, "F"): (S.TERMINATED, "timeout"),
    (S.TRYING, "1xx"): (S.PROCEEDING, "pass_up"),
    (S.TRYING, "2xx"): (S.COMPLETED, "complete"),
    (S.TRYING, "final"): (S.COMPLETED, "complete"),
    (S.PROCEEDING, "E"): (S.PROCEEDING, "retransmit_e"),
    (S.PROCEEDING, "F"): (S.TERMINATED, "timeout"),
    (S.PROCEEDING, "1xx"): (S.PROCEEDING, "pass_up"),
    (S.PROCEEDING, "2xx"): (S.COMPLETED, "complete"),
    (S.PROCEEDING, "final"): (S.COMPLETED, "complete"),
    (S.COMPLETED, "1xx"): (S.COMPLETED, "absorb"),
    (S.COMPLETED, "2xx"): (S.COMPLETED, "absorb"),
    (S.COMPLETED, "final"): (S.COMPLETED, "absorb"),
    (S.COMPLETED, "K"): (S.TERMINATED, "absorb"),
}

# The transaction user gives up on a transaction (a request dropped by the script, a send
# that failed): every state that is not over yet ends at once (RFC 3261 §17.1.4 for the
# transport error of a client transaction).
for _table in (SERVER_INVITE, SERVER_NON_INVITE, CLIENT_INVITE, CLIENT_NON_INVITE):
    for _state in {state for state, _ in _table}:
        _table[(_state, "abandon")] = (S.TERMINATED, "absorb")

#: Inputs a peer causes: a missing row means "absorb" (never an exception from the network).
_PEER_INPUTS = frozenset({"request", "ack"})


def response_class(status: int) -> str:
    """The table input for a response status."""
    if status < 200:
        return "1xx"
    if status < 300:
        return "2xx"
    return "final"


def server_key(request: Request) -> tuple:
    """
    The server transaction a request belongs to (RFC 3261 §17.2.3): the top Via's branch
    and sent-by plus the method, ACK counting as INVITE; RFC 2543 fallback without the
    magic cookie.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, via.host_bare, via.port, method)
    return (request.call_id, request.cseq.number, request.from_.tag, str(via), method)


def client_key(branch: str, method: str) -> tuple[str, str]:
    """The client transaction a response belongs to: our branch and the CSeq method."""
    return (branch, method)


class _Machine:
    """Shared mechanics: table lookup, named deadlines."""

    # Slots: thousands of finished transactions linger for 64*T1 under load.
    __slots__ = ("reliable", "timers", "state", "deadlines", "table")

    table: dict[tuple[State, str], tuple[State, str]]

    def __init__(self, reliable: bool, timers: Timers) -> None:
        self.reliable = reliable
        self.timers = timers
        self.state = State.TERMINATED
        self.deadlines: dict[str, float] = {}

    @property
    def terminated(self) -> bool:
        """True once the machine has ended and can be forgotten."""
        return self.state is State.TERMINATED

    def next_deadline(self) -> Optional[float]:
        """The earliest pending timer, or L{None}."""
        return min(self.deadlines.values()) if self.deadlines else None

    def _step(self, event: str, now: float, payload: object = None) -> list[Effect]:
        row = self.table.get((self.state, event))
        if row is None:
            if event in _PEER_INPUTS or event in ("1xx", "2xx", "final") and self._is_client:
                return []
            if len(event) == 1:  # a stale timer after a state change
                return []
            raise LocalProtocolError(f"{type(self).__name__}: no {event!r} in {self.state.value}")
        self.state, action = row
        effects: list[Effect] = getattr(self, "_" + action)(now, payload)
        if self.state is State.TERMINATED:
            self.deadlines.clear()
        return effects

    _is_client = False

    def abandon(self, now: float) -> None:
        """The transaction user gives up: the transaction ends now, sending nothing."""
        if self.state is not State.TERMINATED:
            self._step("abandon", now)

    def handle_timer(self, now: float) -> list[Effect]:
        """Fire every timer due at C{now}, earliest first."""
        effects: list[Effect] = []
        while self.deadlines:
            letter, when = min(self.deadlines.items(), key=lambda item: item[1])
            if when > now:
                break
            del self.deadlines[letter]
            effects += self._step(letter, now)
        return effects

    def _absorb(self, now: float, payload: object) -> list[Effect]:
        return []


#: Our own serialised messages, parsed again for a retransmission: no size bound of a peer's.
_OWN = ParseLimits(max_message_size=1 << 30, max_headers=1 << 20, max_header_length=1 << 30)


#: The header fields a request keeps once its transaction is over: what dialogs (RFC 3261
#: §12.1), responses made for it (§8.2.6.2) and a reply_route read.
KEPT = frozenset(
    ("via", "from", "to", "call-id", "cseq", "contact", "record-route", "route", "content-type")
)


def bare(request: Request) -> Request:
    """C{request} with only the L{KEPT} header fields (fresh ones: the received fields
    carry their parsed values, kilobytes per call) and without its received bytes and
    parsed-value caches: what a finished transaction or response context keeps of it."""
    headers = [Header(h.name, h.value, None, h.key) for h in request.headers if h.key in KEPT]
    return Request(request.method, request.uri, headers, request.body)


def _reparse(wire: Optional[bytes]) -> Union[Request, Response, None]:
    """A message sbc serialised before, as a message again (None when there is none)."""
    if wire is None:
        return None
    try:
        message = parse(wire, _OWN)
    except ParseError:  # pragma: no cover - sbc's own output parses
        return None
    assert isinstance(message, (Request, Response))
    return message


class ServerTransaction(_Machine):
    """
    An INVITE or non-INVITE server transaction.

    Once the final response is sent (Completed, Accepted, Confirmed) it needs only its
    key and the bytes of that response, to answer retransmitted requests (RFC 3261
    §17.2.1, §17.2.2, with RFC 6026): the request is dropped then.

    @ivar request: the request that created it (None once the final response went out).
    @ivar key: its L{server_key} (given when the caller has it already).
    @ivar method: the request's method.
    @ivar peer: where responses go (for a stream, the connection's remote address).
    @ivar local: the socket the request arrived on.
    """

    __slots__ = ("request", "key", "method", "peer", "local", "invite", "_wire", "_g_interval")

    def __init__(
        self,
        request: Request,
        peer: Address,
        local: Optional[Address],
        timers: Timers,
        key: Optional[tuple] = None,
    ) -> None:
        super().__init__(peer.reliable, timers)
        self.request: Optional[Request] = request
        self.key = key if key is not None else server_key(request)
        self.method = request.method
        self.peer = peer
        self.local = local
        self.invite = request.method == "INVITE"
        self.table = SERVER_INVITE if self.invite else SERVER_NON_INVITE
        self.state = State.PROCEEDING if self.invite else State.TRYING
        self._wire: Optional[bytes] = None  # the last response sent, serialised
        self._g_interval = timers.t1

    @property
    def last_response(self) -> Optional[Response]:
        """The last response sent (parsed again from its bytes), for retransmissions."""
        response = _reparse(self._wire)
        assert response is None or isinstance(response, Response)
        return response

    @last_response.setter
    def last_response(self, response: Response) -> None:
        self._wire = response.to_bytes()

    def receive_request(self, request: Request, now: float) -> list[Effect]:
        """A retransmission of the request, or the ACK for a non-2xx final response."""
        return self._step("ack" if request.method == "ACK" else "request", now)

    def send_response(self, response: Response, now: float) -> list[Effect]:
        """The TU answers; returns the transmission (and arms G/H/I/J/L as needed)."""
        return self._step(response_class(response.status), now, response)

    def _out(self) -> list[Effect]:
        response = self.last_response
        return [Send(response, self.peer, self.local)] if response is not None else []

    def _send(self, now: float, response: object) -> list[Effect]:
        assert isinstance(response, Response)
        # Accepted absorbs retransmitted requests (RFC 6026: the TU relays each 2xx),
        # so only the other states keep the response's bytes to send again.
        self._wire = None if self.state is State.ACCEPTED else response.to_bytes()
        if response.status >= 200:
            self.request = None  # only the response's bytes are needed from now on
        return [Send(response, self.peer, self.local)]

    def _resend(self, now: float, payload: object) -> list[Effect]:
        return self._out()

    def _send_accepted(self, now: float, response: object) -> list[Effect]:
        self.deadlines["L"] = now + self.timers.linger(64 * self.timers.t1)
        return self._send(now, response)

    def _send_completed(self, now: float, response: object) -> list[Effect]:
        if self.invite:
            if not self.reliable:
                self.deadlines["G"] = now + self._g_interval
            self.deadlines["H"] = now + 64 * self.timers.t1
        else:
            linger = 0 if self.reliable else self.timers.linger(64 * self.timers.t1)
            self.deadlines["J"] = now + linger
        return self._send(now, response)

    def _retransmit_g(self, now: float, payload: object) -> list[Effect]:
        self._g_interval = min(2 * self._g_interval, self.timers.t2)
        self.deadlines["G"] = now + self._g_interval
        return self._out()

    def _confirm(self, now: float, payload: object) -> list[Effect]:
        self._wire = None  # Confirmed absorbs retransmissions (RFC 3261 §17.2.1)
        self.deadlines.pop("G", None)
        self.deadlines.pop("H", None)
        self.deadlines["I"] = now + (0 if self.reliable else self.timers.linger(self.timers.t4))
        return []

    def _timeout(self, now: float, payload: object) -> list[Effect]:
        return [TimedOut("H")]


class ClientTransaction(_Machine):
    """
    An INVITE or non-INVITE client transaction (one branch of a proxied request).

    @ivar request: the request as sent (its top Via carries C{branch}).
    @ivar peer: the next hop; @ivar local: the socket to send from (L{None}: any).
    @ivar provisional: the highest provisional status seen so far (0: none).
    """

    __slots__ = ("request", "peer", "local", "branch", "invite", "provisional", "ack", "_interval")

    _is_client = True

    def __init__(
        self,
        request: Request,
        peer: Address,
        local: Optional[Address],
        timers: Timers,
        branch: Optional[str] = None,
    ) -> None:
        super().__init__(peer.reliable, timers)
        self.request = request
        self.peer = peer
        self.local = local
        # The caller that built the top Via passes its branch (no parse of our own Via).
        self.branch = branch if branch is not None else request.top_via.branch or ""
        self.invite = request.method == "INVITE"
        self.table = CLIENT_INVITE if self.invite else CLIENT_NON_INVITE
        self.state = State.CALLING if self.invite else State.TRYING
        self.provisional = 0
        self.ack: Optional[Request] = None
        self._interval = timers.t1

    @property
    def key(self) -> tuple[str, str]:
        """The key responses are matched with."""
        return client_key(self.branch, self.request.method)

    def start(self, now: float) -> list[Effect]:
        """Send the request and arm A/B (INVITE) or E/F (non-INVITE)."""
        if not self.reliable:
            self.deadlines["A" if self.invite else "E"] = now + self._interval
        self.deadlines["B" if self.invite else "F"] = now + self.timers.fr_timer
        return [Send(self.request, self.peer, self.local)]

    def receive_response(self, response: Response, now: float) -> list[Effect]:
        """A response matched to this branch."""
        return self._step(response_class(response.status), now, response)

    def _send_request(self) -> list[Effect]:
        return [Send(self.request, self.peer, self.local)]

    def _retransmit_a(self, now: float, payload: object) -> list[Effect]:
        self._interval *= 2
        self.deadlines["A"] = now + self._interval
        return self._send_request()

    def _retransmit_e(self, now: float, payload: object) -> list[Effect]:
        if self.state is State.PROCEEDING:
            self._interval = self.timers.t2
        else:
            self._interval = min(2 * self._interval, self.timers.t2)
        self.deadlines["E"] = now + self._interval
        return self._send_request()

    def _timeout(self, now: float, payload: object) -> list[Effect]:
        return [TimedOut("B" if self.invite else "F")]

    def _timeout_c(self, now: float, payload: object) -> list[Effect]:
        # The branch rang too long: the proxy cancels it.  The transaction stays to take the
        # 487; Timer B (re-armed) bounds how long it waits for one.
        self.deadlines["B"] = now + 64 * self.timers.t1
        return [TimedOut("C")]

    def _provisional(self, now: float, response: object) -> list[Effect]:
        assert isinstance(response, Response)
        self.deadlines.pop("A", None)
        self.deadlines.pop("B", None)
        first = self.provisional == 0
        if first or self.timers.restart_fr_on_each_reply or response.status > self.provisional:
            self.deadlines["C"] = now + self.timers.fr_inv_timer
        self.provisional = max(self.provisional, response.status)
        return [ResponseReceived(response)]

    def _accept(self, now: float, response: object) -> list[Effect]:
        assert isinstance(response, Response)
        self.request = bare(self.request)  # only passes 2xx retransmissions up from now on
        self.deadlines.clear()
        self.deadlines["M"] = now + self.timers.linger(64 * self.timers.t1)
        return [ResponseReceived(response)]

    def _complete(self, now: float, response: object) -> list[Effect]:
        assert isinstance(response, Response)
        self.deadlines.clear()
        effects: list[Effect] = []
        if self.invite:
            self.ack = ack_for(self.request, response)
            effects.append(Send(self.ack, self.peer, self.local))
            self.deadlines["D"] = now + (0 if self.reliable else self.timers.linger(32.0))
        else:
            self.deadlines["K"] = now + (0 if self.reliable else self.timers.linger(self.timers.t4))
        self.request = bare(self.request)  # absorbs retransmissions from now on
        return [*effects, ResponseReceived(response)]

    def _resend_ack(self, now: float, payload: object) -> list[Effect]:
        return [Send(self.ack, self.peer, self.local)] if self.ack is not None else []

    def _pass_up(self, now: float, response: object) -> list[Effect]:
        assert isinstance(response, Response)
        return [ResponseReceived(response)]


def ack_for(invite: Request, response: Response) -> Request:
    """
    The hop-by-hop ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same R-URI, top
    Via, From, Call-ID, CSeq number and Route as the INVITE, To from the response.
    """
    headers = []
    for h in invite.headers:
        if h.key == "via":
            headers.append(Header("Via", str(invite.top_via)))
        elif h.key in ("from", "call-id", "route", "max-forwards"):
            headers.append(Header(h.name, h.value))
    to_value = response.get("to") or invite.get("to") or ""
    headers.append(Header("To", to_value))
    headers.append(Header("CSeq", f"{invite.cseq.number} ACK"))
    headers.append(Header("Content-Length", "0"))
    return Request("ACK", invite.uri, headers)
