# -*- test-case-name: tests.core.test_proxy_lifecycle -*-
"""
The response context of one forwarded request (RFC 3261 §16.7), as h2 keeps each stream's
state in a module of its own: the server transaction, its branches (one client
transaction each), each branch's failover cursor over the addresses DNS gave, the
request's lifetime cap (Timer C, Kamailio tm's C{max_inv_lifetime}), which branches still
need a CANCEL, and the choice of the best final response (Kamailio tm's reply priority).

The proxy creates branches and sends; this module holds the state and makes the
decisions, without I/O and with C{now} passed in.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

from sbc.core.address import Address
from sbc.core.dialog import contact_of
from sbc.core.message import Header, Request, Response
from sbc.core.reply import REASONS, make_response
from sbc.core.syntax import is_digits
from sbc.core.transaction import ClientTransaction, ServerTransaction, bare

__all__ = [
    "Destination",
    "Branch",
    "ResponseContext",
    "priority",
    "failover_codes",
    "retry_after",
    "upstream",
    "cancel_for",
    "LateBranch",
    "describe_error",
]


def failover_codes(spec: str) -> frozenset[int]:
    """C{[tm] failover_reply_codes} (Kamailio tm's failover_reply_codes): C{code=NNN}
    (300..599) and C{class=N} (3..5) items separated by C{;}.  A 6xx never fails over
    (RFC 3261 §16.7 step 5: no new branches after a 6xx).  Raises ValueError naming the
    bad item."""
    codes: set[int] = set()
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if (name == "code" and value[:1] == "6") or (name == "class" and value == "6"):
            raise ValueError(f"no 6xx (a 6xx ends the forking), got {item!r}")
        if name == "code" and is_digits(value) and 300 <= int(value) <= 599:
            codes.add(int(value))
        elif name == "class" and value in ("3", "4", "5"):
            base = int(value) * 100
            codes.update(range(base, base + 100))
        else:
            raise ValueError(f"code=300..599 or class=3..5, got {item!r}")
    return frozenset(codes)


def priority(status: int) -> int:
    """Kamailio tm's reply priority: the lowest value is the best final response (6xx,
    then 2xx is relayed at once anyway, 3xx, the 4xx that ask something of the caller,
    other 4xx, 5xx)."""
    xx = status % 100
    cls = status // 100
    if cls == 6:
        return 1000 + xx
    if cls == 3:
        return 3000 + xx
    if cls == 4:
        return 4000 + xx if status in (401, 407, 415, 420, 484) else 4100 + xx
    if cls == 5:
        return 5000 + xx
    if cls == 1:
        return 11000 + status
    return 10000 + status


def retry_after(response: Response) -> Optional[int]:
    """The seconds of a Retry-After header (RFC 3261 §20.33), None when absent or bad."""
    value = response.get("retry-after")
    if value is None:
        return None
    digits = value.strip().split("(")[0].split(";")[0].strip()
    return int(digits) if is_digits(digits) else None


def upstream(request: Request, response: Response) -> Response:
    """C{response} without our Via (§16.7 step 3); rebuilt on the Vias of C{request} (the
    one received) when the next hop dropped them (a response must never go upstream
    without Via)."""
    out = response.without_first_value("Via")
    assert isinstance(out, Response)
    if not out.has("via"):
        to_value = response.get("to")
        rebuilt = make_response(request, response.status, response.reason)
        if to_value is not None:
            rebuilt = rebuilt.with_header("To", to_value)
        assert isinstance(rebuilt, Response)
        return rebuilt
    return out


def cancel_for(invite: Request) -> Request:
    """The CANCEL for a branch's INVITE (RFC 3261 §9.1): its Via, Route, From, To, Call-ID
    and Max-Forwards, the same CSeq number."""
    headers = [Header("Via", str(invite.top_via))]
    for h in invite.headers:
        if h.key in ("from", "to", "call-id", "route", "max-forwards"):
            headers.append(Header(h.name, h.value))
    headers += [Header("CSeq", f"{invite.cseq.number} CANCEL"), Header("Content-Length", "0")]
    return Request("CANCEL", invite.uri, headers)


@dataclass
class Destination:
    """
    One next hop of a forwarded request and its failover cursor (Kamailio tm with
    C{use_dns_failover}): the addresses not tried yet, in order.  It belongs to this
    request alone, never shared through the DNS cache.

    @ivar binding: the next hop is a registered contact (its NAT address or flow): a
    timeout there means a stale binding, not a dead destination (no blocklisting).
    """

    request: Request
    preferred: Optional[Address]
    targets: list[Address]
    binding: bool = False


@dataclass(slots=True)
class Branch:
    """
    One branch of the response context.

    @ivar final: its final response; @ivar faked: made here (408 on timeout, 487, 503 on a
    send failure), not received.
    @ivar cancel_pending: a CANCEL is owed once the branch sends a provisional (§9.1).
    """

    client: Optional[ClientTransaction]  # None: the destination never got a transaction
    final: Optional[Response] = None
    faked: bool = False
    cancel_pending: bool = False
    cancelled: bool = False
    destination: Optional[Destination] = None
    #: the To tags of the 2xx it passed (a downstream fork may send several)
    answered_tags: tuple[Optional[str], ...] = ()

    @property
    def answered(self) -> bool:
        """The next hop itself sent a final response."""
        return self.final is not None and not self.faked

    def needs_cancel(self) -> bool:
        """Is a CANCEL still owed to this branch?  Also after we gave up on it (our own
        408 or 487): its UAS may still be ringing."""
        client = self.client
        return client is not None and client.invite and not self.cancelled and not self.answered


class ResponseContext:
    """
    One proxied request: the server transaction, its branches and what each branch needs
    to be created again (failover).

    @ivar lifetime_end: when the whole request gives up (Kamailio's C{max_inv_lifetime} /
        C{max_noninv_lifetime}); None once it did.
    @ivar pending: steps still running elsewhere (DNS lookups, media anchoring) before
        branches can be created; the request is not complete while any is pending.
    @ivar ended_forking: a 6xx arrived (§16.7 step 5): the other branches are cancelled
        and no new branch may start (no failover, no failure-route branch).
    """

    __slots__ = (
        "server",
        "request",
        "branches",
        "final_sent",
        "cancel_requested",
        "ended_forking",
        "lifetime_end",
        "local",
        "loop_hash",
        "natted",
        "rr_params",
        "keepalive",
        "failure_route",
        "relayed",
        "send_socket",
        "pending",
        "_caller_target",
        "_settled",
        "__weakref__",
    )

    def __init__(
        self,
        server: ServerTransaction,
        lifetime_end: float,
        local: Address,
        loop_hash: str,
        natted: bool,
        rr_params: Optional[str] = None,
    ) -> None:
        self.server = server
        assert server.request is not None
        #: The request as received (the server transaction drops it at its final response).
        self.request: Request = server.request
        self.branches: list[Branch] = []
        self.final_sent = False
        self.cancel_requested = False
        self.ended_forking = False
        self.lifetime_end: Optional[float] = lifetime_end
        self.local = local
        self.loop_hash = loop_hash
        self.natted = natted
        #: Record-Route parameters (None: the request is not record-routed).
        self.rr_params = rr_params
        #: The script asked for nat_keepalive(): keep the sender alive.
        self.keepalive = False
        #: The script's failure route, run once when every branch failed.
        self.failure_route: Optional[Callable[[Any], None]] = None
        #: The request as the script relayed it (what a failure route relays again).
        self.relayed: Optional[Request] = None
        #: The socket the script forced (force_send_socket), for every branch.
        self.send_socket: Optional[Address] = None
        self.pending = 0
        self._caller_target: Optional[str] = None
        self._settled = False

    def next_deadline(self) -> Optional[float]:
        return None if self.final_sent else self.lifetime_end

    @property
    def terminated(self) -> bool:
        return self.server.terminated

    def caller_target(self) -> Optional[str]:
        """The caller's Contact as relayed (NAT-fixed): its remote target in a dialog."""
        if self._settled:
            return self._caller_target
        return contact_of(self.relayed or self.request)

    def settle(self) -> None:
        """The final response went upstream: no failover, failure route or new branch
        any more (RFC 3261 §16.7 steps 5-8).  Keep only what passing 2xx
        retransmissions up (RFC 6026 Accepted state) and answering a CANCEL (§16.10)
        need: the request without its caches, the branches' transactions and final
        statuses."""
        if not self._settled:
            self._caller_target = contact_of(self.relayed or self.request)
            self._settled = True
            self.request = bare(self.request)
        self.relayed = None
        self.failure_route = None
        for branch in self.branches:
            branch.destination = None
            final = branch.final
            if final is not None and final.headers:
                branch.final = _status_only(final.status, final.reason)

    def may_branch(self, now: float) -> bool:
        """May a new branch start (failover, DNS answer, failure route)?"""
        return not (
            self.cancel_requested
            or self.final_sent
            or self.ended_forking
            or self.lifetime_end is None
            or now >= self.lifetime_end
        )

    def ready(self) -> bool:
        """Every branch has a final response and nothing is pending: choose the best."""
        return not (
            self.final_sent
            or (self.pending > 0 and self.lifetime_end is not None)
            or any(b.final is None for b in self.branches)
        )

    def fail_branch(self, branch: Branch, status: int, reason: Optional[str] = None) -> None:
        """End C{branch} with a response made here."""
        branch.final, branch.faked = make_response(self.request, status, reason), True

    def add_failed(self, status: int, reason: Optional[str] = None, **kw: Any) -> Branch:
        """A branch that never got a transaction (nothing to send to, cancelled, ...)."""
        branch = Branch(None, make_response(self.request, status, reason), True, **kw)
        self.branches.append(branch)
        return branch

    def choose(self, remap_503_500: bool) -> tuple[Branch, Response]:
        """The best final response (Kamailio tm's priorities): a received 503 goes up as
        500 (RFC 3261 §16.7 step 6), a cancelled request as 487."""
        winner = min(self.branches, key=lambda b: priority(b.final.status))  # type: ignore[union-attr]
        best = winner.final
        assert best is not None
        if best.status == 503 and remap_503_500 and not winner.faked:
            best = Response(500, REASONS[500], best.headers, best.body)
        invite = self.request
        if self.cancel_requested and invite.method == "INVITE" and winner.faked:
            best, winner.faked = make_response(invite, 487), True
        return winner, best

    def timed_out(self) -> bool:
        """t_branch_timeout: did a branch end with a local 408?"""
        return any(b.faked and b.final is not None and b.final.status == 408 for b in self.branches)


@lru_cache(maxsize=256)
def _status_only(status: int, reason: str) -> Response:
    """A header-less response standing for a settled branch's final (its status is all
    that is read after the final response went upstream); shared, messages are
    immutable."""
    return Response(status, reason)


class LateBranch:
    """An INVITE branch whose client transaction timed out before any response (Timer B):
    kept for 64*T1 so that a provisional arriving after all still gets its CANCEL."""

    def __init__(self, forwarding: ResponseContext, branch: Branch, until: float) -> None:
        self.forwarding = forwarding
        self.branch = branch
        self.until = until

    def next_deadline(self) -> Optional[float]:
        return self.until


def describe_error(error: Exception) -> str:
    """A script error's traceback on one line: the exception, then the frames from the
    innermost out (C{file:line in function})."""
    frames = traceback.extract_tb(error.__traceback__)[1:]  # without the proxy's own call
    where = " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(error).__name__}: {error}" + (f" ({where})" if where else "")
