# -*- test-case-name: tests.core.test_proxy -*-
"""
The stateful proxy and registrar front end (RFC 3261 §16), decided without I/O.

Theory of operation:
 - The engine hands every parsed, Via-stamped request and response to L{Proxy} with the
   transport address it came from and the socket it came in on, and C{now}.  The proxy
   answers with effects: L{Send} (transmit a message) and dialog events.
 - Each new request gets a server transaction; requests sbc forwards get one client
   transaction per branch, grouped in a L{_Forwarding} (the transaction user of §16).
   Responses are matched to branches, 1xx and 2xx relayed at once, other finals collected
   until every branch is done and the best one chosen (K: TM-11, 503 remapped to 500).
 - Every machine with timers sits in one heap; L{Proxy.next_deadline} is its head and
   L{Proxy.handle_timer} fires what is due.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any, Optional, Union

from sbc.core import routes_default
from sbc.core.address import TRANSPORTS, Address
from sbc.core.auth import DigestAuth
from sbc.core.blocklist import (
    REPLY_503,
    SEND_FAILED,
    TIMEOUT,
    Blocklist,
    BlocklistSettings,
    method_bits,
    retry_after_timeout,
)
from sbc.core.dialog import DialogCreated, DialogEvent, DialogTable, DialogTerminated
from sbc.core.identity import LocalIdentity
from sbc.core.keepalive import KeepaliveTable
from sbc.core.message import Header, Message, Request, Response
from sbc.core.nat import NatPolicy, response_target, stamp_via
from sbc.core.natfix import (
    AliasError,
    handle_ruri_alias,
    source_uri,
)
from sbc.core.registrar import Registrar, aor_of
from sbc.core.relaypolicy import (
    SIGNATURE_PARAM,
    RouteSigner,
    TrustedPeers,
    Verdict,
    in_dialog_verdict,
    initial_verdict,
    signed_by_us,
)
from sbc.core.reply import REASONS, make_response
from sbc.core.routescript import FailureContext, ReplyContext, RequestContext, ScriptExit
from sbc.core.routing import (
    Hop,
    loose_route,
    record_route_value,
    uri_target,
    with_routes,
)
from sbc.core.transaction import (
    ClientTransaction,
    ResponseReceived,
    Send,
    ServerTransaction,
    State,
    TimedOut,
    Timers,
    client_key,
    response_class,
    server_key,
)
from sbc.core.uri import (
    OpaqueUri,
    SipUri,
    escape_param,
    format_host,
    is_ip_literal,
    parse_uri,
    unescape_param,
)

__all__ = [
    "ProxySettings",
    "Proxy",
    "Effect",
    "Resolve",
    "Anchor",
    "ReleaseMedia",
    "has_sdp",
    "ALLOW",
    "SUPPORTED",
    "ACCEPT",
    "priority",
    "failover_codes",
]

#: Methods sbc accepts (as proxy, registrar, or for itself).
ALLOW = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "UPDATE",
    "INFO",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
)
#: Option tags sbc supports (RFC 3261 §20.37); none yet.
SUPPORTED: tuple[str, ...] = ()
#: Bodies sbc understands.
ACCEPT = ("application/sdp",)
_BRANCH_PREFIX = "z9hG4bKsbc"


@dataclass(frozen=True)
class Notice:
    """A notable event for the operator's log (one line each), e.g. a registration."""

    event: str
    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Resolve:
    """Find the next hops of C{uri} (RFC 3263) and hand them to L{Proxy.resolved}."""

    token: int
    uri: SipUri


@dataclass(frozen=True)
class Anchor:
    """
    Have the media relay rewrite an SDP body (K: RTP-04), then call L{Proxy.anchored}.

    @ivar op: C{offer} or C{answer}, in rtpengine's sense: C{from_tag} is always the tag of
        the side that made the offer.
    @ivar source: where the SDP came from (the relay's first guess for that side's media).
    """

    token: int
    op: str
    call_id: str
    from_tag: str
    to_tag: Optional[str]
    sdp: bytes
    source: Address


@dataclass(frozen=True)
class ReleaseMedia:
    """The call's media session ends: release its relay ports."""

    call_id: str


Effect = Union[Send, DialogEvent, Notice, Resolve, Anchor, ReleaseMedia]


@dataclass(frozen=True)
class ProxySettings:
    """
    Proxy behaviour ([tm], [rr] and [core] keys).

    @ivar max_inv_lifetime: seconds an INVITE transaction may live (Timer C cap, TM-04).
    @ivar max_noninv_lifetime: the same for other requests.
    @ivar enable_double_rr: 0 never, 1 when in and out sockets differ, 2 always (RR-02).
    """

    timers: Timers = Timers()
    max_inv_lifetime: float = 180.0
    max_noninv_lifetime: float = 32.0
    remap_503_500: bool = True
    enable_double_rr: int = 1
    append_fromtag: bool = True
    outbound_proxy: Optional[SipUri] = None
    advertise: Optional[tuple[str, Optional[int]]] = None
    nat: NatPolicy = NatPolicy()
    registrar_uri: Optional[SipUri] = None
    use_dns_failover: bool = True
    failover_reply_codes: frozenset[int] = frozenset()
    blocklist: BlocklistSettings = BlocklistSettings()
    rtp_policy: str = "nated"
    #: [permissions] trusted: peers whose requests skip authentication and go anywhere.
    trusted: TrustedPeers = TrustedPeers()
    #: [core] allow_relay: relay requests for other domains from anyone (an open proxy).
    allow_relay: bool = False


def failover_codes(spec: str) -> frozenset[int]:
    """C{failover_reply_codes} (K: TM-14): C{code=NNN} (300..699) and C{class=N} (3..6)
    items separated by C{;}; raises ValueError naming the bad item."""
    codes: set[int] = set()
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name == "code" and value.strip().isdigit() and 300 <= int(value) <= 699:
            codes.add(int(value))
        elif name == "class" and value.strip() in ("3", "4", "5", "6"):
            base = int(value) * 100
            codes.update(range(base, base + 100))
        else:
            raise ValueError(f"code=300..699 or class=3..6, got {item!r}")
    return frozenset(codes)


def priority(status: int) -> int:
    """Kamailio's reply priority (TM-11): the lowest value is the best final response."""
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


def has_sdp(message: Message) -> bool:
    """Does C{message} carry an SDP body?"""
    if not message.body:
        return False
    kind = message.get("content-type")
    if kind is None:
        return message.body.startswith(b"v=")
    return kind.split(";")[0].strip().lower() == "application/sdp"


def _with_sdp(message: Message, body: bytes) -> Any:
    return message.with_body(body)


@dataclass
class _MediaCall:
    """A call whose media sbc anchors; the rewritten 2xx bodies, for 2xx retransmissions
    that arrive after their transaction is gone."""

    answers: dict[tuple[Optional[str], int], bytes] = field(default_factory=dict)


def _describe(error: Exception) -> str:
    """A script error's traceback on one line: the exception, then the frames from the
    innermost out (C{file:line in function})."""
    frames = traceback.extract_tb(error.__traceback__)[1:]  # without the proxy's own call
    where = " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(error).__name__}: {error}" + (f" ({where})" if where else "")


def _retry_after(response: Response) -> Optional[int]:
    """The seconds of a Retry-After header (RFC 3261 §20.33), None when absent or bad."""
    value = response.get("retry-after")
    if value is None:
        return None
    digits = value.strip().split("(")[0].split(";")[0].strip()
    return int(digits) if digits.isdigit() else None


def _unresolvable(request: Request) -> Response:
    """Kamailio's answer when the next hop has no address (K: TM-10)."""
    return make_response(request, 478, "Unresolvable destination")


@dataclass
class _Destination:
    """
    One next hop of a forwarded request and its failover cursor (K: TM-13, DNS-10): the
    addresses not tried yet, in order.  It belongs to this transaction alone.
    """

    request: Request
    preferred: Optional[Address]
    targets: list[Address]
    binding: bool = False  # from a location binding: timeouts do not blocklist


@dataclass
class _Branch:
    client: Optional[ClientTransaction]  # None: the destination never got a transaction
    final: Optional[Response] = None
    faked: bool = False  # final made here (408 on timeout, 487), not received
    cancel_pending: bool = False
    cancelled: bool = False
    destination: Optional[_Destination] = None


class _Forwarding:
    """One proxied request: the server transaction, its branches and what each branch
    needs to be created again (failover)."""

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
        self.branches: list[_Branch] = []
        self.final_sent = False
        self.cancel_requested = False
        self.lifetime_end: Optional[float] = lifetime_end
        self.local = local
        self.loop_hash = loop_hash
        self.natted = natted
        #: Record-Route parameters (None: the request is not record-routed).
        self.rr_params = rr_params
        #: The script asked for nat_keepalive(): keep the sender alive (K: KA).
        self.keepalive = False
        #: The script's failure route, run once when every branch failed.
        self.failure_route: Optional[Callable[[FailureContext], None]] = None
        #: The request as the script relayed it (what a failure route relays again).
        self.relayed: Optional[Request] = None
        #: Steps still running elsewhere (DNS lookups, media anchoring) before branches
        #: can be created; the request is not complete while any is pending.
        self.pending = 0

    def next_deadline(self) -> Optional[float]:
        return None if self.final_sent else self.lifetime_end

    @property
    def terminated(self) -> bool:
        return self.server.terminated


class Proxy:
    """
    The SIP proxy core.

    @ivar sockets: our bound listen addresses (what Via and Record-Route name).
    @ivar rng: randomness for branch ids, injected so tests are reproducible.
    """

    def __init__(
        self,
        identity: LocalIdentity,
        sockets: list[Address],
        registrar: Registrar,
        settings: ProxySettings = ProxySettings(),
        rng: Optional[Random] = None,
        router: Any = None,
        signer: Optional[RouteSigner] = None,
    ) -> None:
        self.identity = identity
        #: The routing script (a module or object with request_route and optionally
        #: reply_route); sbc's own policy by default.
        self.router = router if router is not None else routes_default
        self.sockets = list(sockets)
        self.registrar = registrar
        self.settings = settings
        self.rng = rng or Random(0)
        #: Signs the Record-Route and Path entries we insert (random secret by default:
        #: dialogs set up before a restart then need the dialog table or a trusted peer).
        self.signer = signer or RouteSigner(self.rng.getrandbits(128).to_bytes(16, "big"))
        self.dialogs = DialogTable()
        #: The keepalive engine's table, when keepalives are configured (set by the wiring).
        self.keepalive: Optional[KeepaliveTable] = None
        self._servers: dict[tuple, ServerTransaction] = {}
        self._forwardings: dict[tuple, _Forwarding] = {}
        self._clients: dict[tuple, ClientTransaction] = {}
        self._branch_of: dict[tuple, tuple[_Forwarding, _Branch]] = {}
        self._heap: list[tuple[float, int, object]] = []
        self._counter = itertools.count()
        self._housekeeping = 0.0
        self._notices: list[Notice] = []
        #: Shutting down: initial requests get 503, dialogs and transactions finish.
        self.draining = False
        #: Digest authentication for our users (set by the wiring when [auth] is on).
        self.auth: Optional[DigestAuth] = None
        #: Next hops named by host name are looked up (the wiring has a resolver);
        #: without one they are answered 478.
        self.resolves_names = False
        self.blocklist = Blocklist(settings.blocklist)
        self._resolving: dict[int, tuple[_Forwarding, _Destination]] = {}
        self._resolving_ack: dict[int, tuple[Request, Request, Address]] = {}
        #: Media is anchored through a relay (the wiring has one); see L{Anchor}.
        self.anchors_media = False
        #: The calls whose media sbc anchors, by Call-ID.
        self.media_calls: dict[str, _MediaCall] = {}
        self._anchoring: dict[int, Callable[[Optional[bytes], float], list[Effect]]] = {}
        self._tokens = itertools.count(1)

    def sizes(self) -> dict[str, int]:
        """How much state the proxy holds (for statistics and leak tests)."""
        return {
            "server_transactions": len(self._servers),
            "client_transactions": len(self._clients),
            "forwardings": len(self._forwardings),
            "dialogs": len(self.dialogs),
            "timer_heap": len(self._heap),
            "registrations": len(self.registrar),
            "resolving": len(self._resolving),
            "anchoring": len(self._anchoring),
            "media_calls": len(self.media_calls),
            "blocklist": len(self.blocklist),
        }

    # -- timers ------------------------------------------------------------------------------
    def _schedule(self, machine: object) -> None:
        deadline = machine.next_deadline()  # type: ignore[attr-defined]
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, next(self._counter), machine))

    def next_deadline(self) -> Optional[float]:
        """When L{handle_timer} must run next (L{None}: nothing pending)."""
        heap = self._heap
        while heap:
            when, _, machine = heap[0]
            if machine.next_deadline() == when:  # type: ignore[attr-defined]
                return min(when, self._housekeeping) if self._housekeeping else when
            heapq.heappop(heap)
        return self._housekeeping or None

    def handle_timer(self, now: float) -> list[Effect]:
        """Fire everything due at C{now}."""
        effects: list[Effect] = []
        if self._housekeeping and now >= self._housekeeping:
            self.registrar.expire(now)
            self._housekeeping = 0.0
        while self._heap and self._heap[0][0] <= now:
            when, _, machine = heapq.heappop(self._heap)
            if machine.next_deadline() != when:  # type: ignore[attr-defined]
                continue
            if isinstance(machine, _Forwarding):
                effects += self._lifetime_expired(machine, now)
            elif isinstance(machine, ClientTransaction):
                effects += self._client_effects(machine, machine.handle_timer(now), now)
            else:
                assert isinstance(machine, ServerTransaction)
                effects += [e for e in machine.handle_timer(now) if isinstance(e, Send)]
                self._server_done(machine)
                self._schedule(machine)
        self._flush_notices(effects)
        return effects

    def _server_done(self, server: ServerTransaction) -> None:
        if server.terminated:
            key = server_key(server.request)
            self._servers.pop(key, None)
            self._forwardings.pop(key, None)

    # -- requests ---------------------------------------------------------------------------
    def receive_request(
        self, request: Request, source: Address, local: Address, now: float
    ) -> list[Effect]:
        """Handle a request that arrived from C{source} on our socket C{local}."""
        effects = self._receive_request(request, source, local, now)
        self._flush_notices(effects)
        return effects

    def _registration_notice(
        self, request: Request, source: Address, natted: bool, now: float
    ) -> Notice:
        user = aor_of(request.to.uri) or "?"
        live = self.registrar.lookup(user, now) or []
        event = "registered" if live else "unregistered"
        return Notice(
            event,
            (
                ("aor", user),
                ("source", str(source)),
                ("contacts", str(len(live))),
                ("nat", "yes" if natted else "no"),
            ),
        )

    def _receive_request(
        self, request: Request, source: Address, local: Address, now: float
    ) -> list[Effect]:
        if not self._housekeeping:
            self._housekeeping = now + 10.0
        if self.blocklist.lift(source):
            # The peer has just shown it is alive (a phone registering again from the NAT
            # binding whose call timed out): its blocklist entry must not hide it.
            self._notices.append(Notice("blocklist_lifted", (("target", str(source)),)))
        policy = self.settings.nat
        request = stamp_via(request, source.host, source.port, force_rport=policy.force_rport)
        key = server_key(request)
        server = self._servers.get(key)
        if server is not None and request.method == "ACK" and server.state is State.ACCEPTED:
            # The ACK for a 2xx is end to end even when a UAC reuses the INVITE's branch.
            return self._forward_stateless(request, source, local)
        if server is not None:
            effects: list[Effect] = list(server.receive_request(request, now))
            self._schedule(server)
            return effects
        if request.method == "ACK":
            return self._forward_stateless(request, source, local)
        peer = self.reply_peer(request, source)
        server = ServerTransaction(request, peer, local, self.settings.timers)
        self._servers[key] = server
        if request.method == "CANCEL":
            return self._cancel(request, server, now)
        if self.draining and request.to.tag is None:
            return self._reply(
                server,
                make_response(request, 503, "Shutting Down", headers=[("Retry-After", "5")]),
                now,
            )
        effects = []
        if request.method == "INVITE":
            effects += server.send_response(make_response(request, 100), now)
        refusal = self._check(request)
        if refusal is not None:
            return effects + self._reply(server, refusal, now)
        return effects + self._route(request, server, source, local, now)

    def is_trusted(self, source: Address) -> bool:
        """A [permissions] trusted peer, or one of our own sockets (a spiral)."""
        return self.settings.trusted.allows(source) or source in self.sockets

    def needs_auth(self, request: Request, source: Address) -> bool:
        """With [auth] on, must this request authenticate before sbc saves or relays it?
        REGISTERs for our domains (unless a core registrar authenticates them) and initial
        requests whose From names one of our domains, unless a trusted peer sent them."""
        if self.auth is None or request.to.tag is not None:
            return False
        if self.is_trusted(source):
            return False
        if request.method == "REGISTER":
            uri = request.uri
            return (
                isinstance(uri, SipUri)
                and self.identity.is_myself(uri)
                and self.settings.registrar_uri is None
            )
        sender = request.from_.uri
        return isinstance(sender, SipUri) and self.identity.is_local_domain(sender)

    def auth_answer(
        self, request: Request, status: int, stale: bool, now: float
    ) -> tuple[int, Optional[str], list]:
        """The challenge (401/407) or the 403 for credentials of another user, as
        (status, reason, headers)."""
        assert self.auth is not None
        if status == 403:
            return 403, "Forbidden (credentials of another user)", []
        code, headers = self.auth.challenge(request, now, stale=stale)
        return code, None, headers

    def refuse_relay(self, request: Request, source: Address, verdict: Verdict) -> tuple[int, str]:
        """403 Relaying Forbidden or 404 Not Here, with a notice the engine counts and logs
        (rate-limited)."""
        forbidden = verdict is Verdict.FORBIDDEN
        self._notices.append(
            Notice(
                "relay_forbidden" if forbidden else "not_here",
                (
                    ("method", request.method),
                    ("ruri", str(request.uri)),
                    ("from", str(request.from_.uri)),
                    ("source", str(source)),
                    ("call_id", request.call_id),
                ),
            )
        )
        return (403, "Relaying Forbidden") if forbidden else (404, "Not Here")

    def routed_by_us(self, request: Request, consumed: tuple) -> bool:
        """Did loose_route consume a Record-Route entry we signed for this dialog?"""
        return signed_by_us(consumed, request.call_id, self.signer)

    def known_dialog(self, request: Request) -> bool:
        """Does the request belong to a dialog sbc set up (Call-ID and both tags)?"""
        return self.dialogs.find(request.call_id, request.from_.tag, request.to.tag) is not None

    def reply_peer(self, request: Request, source: Address) -> Address:
        """Where responses to C{request} go (its Via, or the connection it came on)."""
        if source.reliable:
            return source
        host, port = response_target(request.top_via)
        return Address("udp", host, port)

    def _reply(self, server: ServerTransaction, response: Response, now: float) -> list[Effect]:
        effects: list[Effect] = list(server.send_response(response, now))
        self._schedule(server)
        self._server_done(server)
        return effects

    def _check(self, request: Request) -> Optional[Response]:
        """RFC 3261 §16.3 request validation: a response when the request is refused."""
        uri = request.uri
        if isinstance(uri, OpaqueUri) and uri.scheme.lower() != "tel":
            return make_response(request, 416)
        mine = isinstance(uri, SipUri) and self.identity.is_myself(uri) and not request.routes
        if request.max_forwards == 0 and not (mine and request.method == "OPTIONS"):
            return make_response(request, 483)
        if self._is_loop(request):
            return make_response(request, 482)
        # As the UAS we check Require (§8.2.2.3), as a proxy Proxy-Require (§16.3).
        required = [t for t in request.values("require" if mine else "proxy-require") if t]
        unsupported = [t for t in required if t.lower() not in SUPPORTED]
        if unsupported:
            return make_response(request, 420, headers=[("Unsupported", ", ".join(unsupported))])
        return None

    def _loop_hash(self, request: Request) -> str:
        """A digest of what identifies a request at this hop (RFC 3261 §16.6 step 8), over
        the topmost Via that is not ours, so that a request coming back carries the hash
        it left with."""
        mine = {(s.host, s.port) for s in self.sockets}
        vias = request.vias
        top = next((v for v in vias if (v.host_bare, v.port or 5060) not in mine), vias[0])
        parts = (
            str(request.uri),
            request.from_.tag or "",
            request.to.tag or "",
            request.call_id,
            str(request.cseq.number),
            str(top),
            ",".join(request.get_all("proxy-require")),
            ",".join(request.get_all("route")),
        )
        text = "\0".join(parts).encode("utf-8", "surrogateescape")
        return hashlib.blake2s(text, digest_size=6).hexdigest()

    def _is_loop(self, request: Request) -> bool:
        """A loop (482): one of the Vias is ours and carries this very request's hash; a
        spiral (same request back with another R-URI) has another hash."""
        mine = {(s.host, s.port) for s in self.sockets}
        prefix = _BRANCH_PREFIX + self._loop_hash(request)
        for via in request.vias:
            if (via.host_bare, via.port or 5060) in mine and (via.branch or "").startswith(prefix):
                return True
        return False

    def _route(
        self,
        request: Request,
        server: ServerTransaction,
        source: Address,
        local: Address,
        now: float,
    ) -> list[Effect]:
        """The routing script decides where the request goes (K: request_route)."""
        ctx = RequestContext(self, request, server, source, local, now)
        try:
            self.router.request_route(ctx)
        except ScriptExit:
            pass
        except Exception as error:
            return ctx.effects + self._script_failed(ctx, error, "request_route")
        if not ctx.done:
            self._notices.append(
                Notice(
                    "script_no_action", (("method", request.method), ("call_id", request.call_id))
                )
            )
            return ctx.effects + self._reply(server, make_response(request, 500, "Not Routed"), now)
        return ctx.effects

    def _script_failed(self, ctx: RequestContext, error: Exception, route: str) -> list[Effect]:
        """K: a script that raises: 500 (if nothing was answered yet), one log line with
        the traceback, counted; sbc goes on serving."""
        self._notices.append(
            Notice("script_error", (("route", route), ("error", _describe(error))))
        )
        if ctx.done:
            return []
        ctx.done = True
        return self._reply(ctx.server, make_response(ctx.original, 500, "Script Error"), ctx.now)

    # -- what the routing script's functions do (see sbc.core.routescript) -------------------
    def reply_to(
        self, ctx: RequestContext, code: int, reason: Optional[str], headers: Any = ()
    ) -> list[Effect]:
        """sl_send_reply: answer through the request's server transaction."""
        response = make_response(ctx.original, code, reason, headers=headers)
        return self._reply(ctx.server, response, ctx.now)

    def options_reply(self, ctx: RequestContext) -> list[Effect]:
        return self.reply_to(
            ctx,
            200,
            None,
            [
                ("Allow", ", ".join(ALLOW)),
                ("Supported", ", ".join(SUPPORTED)),
                ("Accept", ", ".join(ACCEPT)),
            ],
        )

    def forget(self, ctx: RequestContext) -> None:
        """drop: the server transaction goes without an answer."""
        ctx.server.state = State.TERMINATED
        self._server_done(ctx.server)

    def save_location(self, ctx: RequestContext) -> int:
        """save("location"): the built-in registrar stores the bindings and answers."""
        request, source, local, now = ctx.request, ctx._source, ctx.local, ctx.now
        keep = ctx.natted_register
        result = self.registrar.register(
            request, source, local, now, received=source if keep else None
        )
        if result.status == 200:
            self._notices.append(self._registration_notice(request, source, keep, now))
        if result.status == 200 and self.keepalive is not None and ctx.keepalive:
            user = aor_of(request.to.uri) or ""
            mine = self.registrar.bindings_from(user, source, now)
            until = max((b.expires_at for b in mine), default=0.0)
            # NATed: the binding keeps the NAT address, or the script said so (the NAT
            # flag a Kamailio script sets before save()).
            natted_binding = ctx.natted or any(b.received is not None for b in mine)
            # nathelper's sipping: pings go to the registered Contact (the latest one).
            latest = max(mine, key=lambda b: b.expires_at, default=None)
            contact = str(latest.uri) if latest is not None else ""
            self.keepalive.registered(source, local, until, now, natted_binding, contact)
        response = make_response(
            ctx.original, result.status, result.reason or None, headers=result.headers
        )
        ctx.effects += self._reply(ctx.server, response, now)
        return result.status

    def lookup_location(self, ctx: RequestContext) -> Optional[list[Hop]]:
        """lookup("location"): a hop per live binding of the Request-URI's user (None:
        never registered)."""
        uri = ctx.request.uri
        if not isinstance(uri, SipUri) or uri.user is None:
            return None
        bindings = self.registrar.lookup(uri.user, ctx.now)
        if bindings is None:
            return None
        targets: list[Hop] = []
        for binding in bindings:
            branch_request = ctx.request.with_uri(binding.uri)
            if binding.path:
                # RFC 3327: the Path becomes a pre-loaded route to the edge proxy (not the
                # binding itself: the edge proxy may be blocklisted like any next hop).
                first = binding.path[0].uri
                hop = self.hop_target(first) if isinstance(first, SipUri) else None
                if hop is not None:
                    targets.append(Hop(with_routes(branch_request, list(binding.path)), hop, None))
                continue
            if binding.source.reliable:
                # TCP/TLS: over the very connection the REGISTER came on.
                targets.append(Hop(branch_request, binding.source, binding.local, True))
            elif binding.received is not None:
                # Behind NAT: to the NAT binding, from the socket it was made with.
                targets.append(Hop(branch_request, binding.received, binding.local, True))
            elif (hop := self._contact_hop(branch_request)) is not None:
                targets.append(hop)
        return targets

    def _contact_hop(self, request: Request) -> Optional[Hop]:
        """The hop to a binding's Contact: its C{;alias=} address (nathelper's
        handle_ruri_alias, the alias taken out) or the address it names."""
        try:
            aliased, alias = handle_ruri_alias(request)
        except AliasError:
            alias = None
        if alias is not None:
            return Hop(aliased, alias, None, True)
        uri = request.uri
        target = self.hop_target(uri) if isinstance(uri, SipUri) else None
        return Hop(request, target, None, True) if target is not None else None

    def hop_target(self, uri: SipUri) -> Union[Address, SipUri, None]:
        """Where C{uri} points: its address when the host is an IP literal, the URI itself
        when its host needs DNS (and sbc has a resolver), else None (478)."""
        target = uri_target(uri)
        if target is not None:
            return target
        host = uri.param("maddr") or uri.host
        if self.resolves_names and not is_ip_literal(host) and uri.transport in TRANSPORTS:
            return uri
        return None

    def relay(self, ctx: RequestContext) -> bool:
        """t_relay: forward statefully to the context's hops; False when none is usable
        (nothing is sent or answered then)."""
        hops = ctx.hops()
        if any(hop[1] is None for hop in hops):
            return False
        if ctx.original.method == "BYE":
            # Only a BYE sbc relays ends the dialog and its media (a refused one must not).
            ctx.effects += self._keepalive_dialogs(self.dialogs.bye(ctx.original), ctx.now)
            ctx.effects += self.release_media(ctx.original.call_id)
        if ctx.path is not None:
            hops = self._with_path(ctx, hops)  # type: ignore[arg-type]
            if not hops:
                ctx.effects += self._reply(
                    ctx.server,
                    make_response(ctx.original, 503, "No socket for the registrar's transport"),
                    ctx.now,
                )
                ctx.done = True
                return True
        effects = self._forward(
            ctx.original,
            ctx.server,
            hops,  # type: ignore[arg-type]
            ctx._source,
            ctx.local,
            ctx.now,
            ctx.natted,
            ctx.record_route_params,
            media=ctx.media_requested,
        )
        forwarding = self._forwardings.get(server_key(ctx.original))
        if forwarding is not None:
            forwarding.keepalive = ctx.keepalive
            forwarding.failure_route = ctx.failure_route
            # K: TM-15: a failure route starts from the request as it was relayed.
            forwarding.relayed = forwarding.relayed or hops[0][0]
        ctx.effects += effects
        return True

    def _with_path(self, ctx: RequestContext, hops: list[Hop]) -> list[Hop]:
        """Edge mode (RFC 3327): a Path naming the socket the REGISTER leaves from, with the
        NAT address as C{;received=} when asked."""
        out: list[Hop] = []
        for request, target, preferred, binding in hops:
            probe = (
                target if isinstance(target, Address) else Address(target.transport, "0.0.0.0", 0)
            )
            socket = self._socket_for(probe, preferred or ctx.local)
            if socket is None:
                continue
            host, port = self._via_host(socket)
            path = f"sip:{format_host(host)}:{port}"
            if socket.transport != "udp":
                path += f";transport={socket.transport}"
            path += ";lr"
            if ctx.path:
                received = escape_param(source_uri(ctx._source))
                path += f";received={received};{SIGNATURE_PARAM}={self.signer.sign(received)}"
            with_path = request.with_header_first("Path", f"<{path}>")
            assert isinstance(with_path, Request)
            out.append(Hop(with_path, target, socket, binding))
        return out

    def path_target(self, consumed: tuple) -> Optional[Address]:
        """The NAT address our own Path entry carried (C{;received=}, signed by us), if any."""
        for entry in consumed:
            uri = entry.uri
            value = uri.param("received") if isinstance(uri, SipUri) else None
            if value and self.signer.valid(uri.param(SIGNATURE_PARAM), value):
                parsed = parse_uri(unescape_param(value))
                if isinstance(parsed, SipUri):
                    return uri_target(parsed)
        return None

    @staticmethod
    def any_timeout(forwarding: _Forwarding) -> bool:
        """t_branch_timeout: did a branch end with a local 408?"""
        return any(
            b.faked and b.final is not None and b.final.status == 408 for b in forwarding.branches
        )

    def relay_again(self, ctx: FailureContext, uri: SipUri) -> bool:
        """t_relay in a failure route: one more branch (serial forking)."""
        forwarding = ctx._forwarding
        if forwarding.final_sent or forwarding.cancel_requested or forwarding.lifetime_end is None:
            return False
        target = self.hop_target(uri)
        if target is None:
            return False
        request = ctx.request
        if isinstance(target, SipUri):
            token = next(self._tokens)
            self._resolving[token] = (forwarding, _Destination(request, None, []))
            forwarding.pending += 1
            ctx.effects.append(Resolve(token, target))
            return True
        started = self._start_branch(forwarding, _Destination(request, None, [target]), ctx.now)
        if started is None:
            return False
        ctx.effects += started
        return True

    def reply_failure(self, ctx: FailureContext, code: int, reason: Optional[str]) -> list[Effect]:
        """t_reply in a failure route: this answer upstream instead of the best reply."""
        forwarding = ctx._forwarding
        forwarding.final_sent = True
        request = forwarding.server.request
        effects: list[Effect] = []
        if request.method == "INVITE" and request.to.tag is None:
            effects += self.release_media(request.call_id)
        return effects + self._reply(
            forwarding.server, make_response(request, code, reason), ctx.now
        )

    def _socket_for(self, target: Address, preferred: Address) -> Optional[Address]:
        if preferred.transport == target.transport and preferred.family == target.family:
            return preferred
        for socket in self.sockets:
            if socket.transport == target.transport and socket.family == target.family:
                return socket
        return None

    def _via_host(self, socket: Address) -> tuple[str, int]:
        advertise = self.settings.advertise
        if advertise is not None:
            return advertise[0], advertise[1] if advertise[1] is not None else socket.port
        return socket.host, socket.port

    def _prepare(
        self,
        original: Request,
        request: Request,
        socket: Address,
        inbound: Address,
        branch: str,
        rr_params: Optional[str] = None,
    ) -> Request:
        """The copy for one branch: Max-Forwards, Record-Route (when the script asked for
        it, with its parameters), our Via (§16.6)."""
        mf = request.max_forwards
        out = request.with_header("Max-Forwards", str((mf if mf is not None else 70) - 1))
        if rr_params is not None:
            ftag = original.from_.tag if self.settings.append_fromtag else None
            signature = self.signer.sign(original.call_id, ftag or "")
            rr = {
                "ftag": ftag,
                "advertise": self.settings.advertise,
                "params": f"{rr_params};{SIGNATURE_PARAM}={signature}",
            }
            double = self.settings.enable_double_rr == 2 or (
                self.settings.enable_double_rr == 1 and socket != inbound
            )
            if double:
                out = out.with_header_first(
                    "Record-Route", record_route_value(inbound, r2=True, **rr)
                )
                out = out.with_header_first(
                    "Record-Route", record_route_value(socket, r2=True, **rr)
                )
            else:
                out = out.with_header_first("Record-Route", record_route_value(socket, **rr))
        host, port = self._via_host(socket)
        via = f"SIP/2.0/{socket.transport.upper()} {format_host(host)}:{port};branch={branch}"
        out = out.with_header_first("Via", via)
        assert isinstance(out, Request)
        return out

    def _new_branch_id(self, loop_hash: str) -> str:
        return f"{_BRANCH_PREFIX}{loop_hash}.{self.rng.getrandbits(40):010x}"

    def _forward(
        self,
        original: Request,
        server: ServerTransaction,
        targets: list[Hop],
        source: Address,
        local: Address,
        now: float,
        natted: bool = False,
        rr_params: Optional[str] = None,
        media: bool = False,
    ) -> list[Effect]:
        lifetime = (
            self.settings.max_inv_lifetime
            if original.method == "INVITE"
            else self.settings.max_noninv_lifetime
        )
        # The loop hash is the same for every branch of the request.
        forwarding = _Forwarding(
            server, now + lifetime, local, self._loop_hash(original), natted, rr_params
        )
        self._forwardings[server_key(original)] = forwarding
        self._schedule(forwarding)
        if media and self._media_for_request(original, targets, natted) and has_sdp(targets[0][0]):
            # K: RTP-04: the offer goes through the media relay before any branch starts.
            request = targets[0][0]
            forwarding.pending += 1

            def anchored(body: Optional[bytes], now: float) -> list[Effect]:
                forwarding.pending -= 1
                if forwarding.final_sent or forwarding.terminated:
                    return []
                if body is not None:
                    hops = [hop._replace(request=_with_sdp(hop.request, body)) for hop in targets]
                else:
                    hops = targets
                forwarding.relayed = hops[0][0]  # a failure route relays the anchored SDP
                return self._forward_hops(forwarding, hops, now)

            return [
                self._anchor("offer", request, request.from_.tag, request.to.tag, source, anchored)
            ]
        return self._forward_hops(forwarding, targets, now)

    def _forward_hops(
        self, forwarding: _Forwarding, targets: list[Hop], now: float
    ) -> list[Effect]:
        """Start a branch per hop (or the DNS lookup it needs first)."""
        server = forwarding.server
        original = server.request
        if forwarding.cancel_requested:
            forwarding.branches.append(_Branch(None, make_response(original, 487), True))
            return self._maybe_complete(forwarding, now)
        effects: list[Effect] = []
        for request, target, preferred, binding in targets:
            if isinstance(target, SipUri):
                token = next(self._tokens)
                destination = _Destination(request, preferred, [], binding)
                self._resolving[token] = (forwarding, destination)
                forwarding.pending += 1
                effects.append(Resolve(token, target))
                continue
            destination = _Destination(request, preferred, [target], binding)
            started = self._start_branch(forwarding, destination, now)
            if started is not None:
                effects += started
        if not forwarding.branches and not forwarding.pending:
            reason = "Service Unavailable (no usable next hop)"
            forwarding.branches.append(_Branch(None, make_response(original, 503, reason), True))
            return effects + self._maybe_complete(forwarding, now)
        return effects

    # -- media anchoring (K: RTP-04) ------------------------------------------------------------
    def _media_for_request(self, original: Request, targets: list[Hop], natted: bool) -> bool:
        """Is C{original} part of a call whose media sbc anchors?  Decided on the initial
        INVITE by [rtp] rtp_policy: C{always}, or C{nated} when the caller or a callee is
        behind NAT (a private contact address or a NAT alias)."""
        call_id = original.call_id
        if call_id in self.media_calls:
            return original.method in ("INVITE", "UPDATE")
        policy = self.settings.rtp_policy
        if (
            not self.anchors_media
            or policy == "never"
            or original.method != "INVITE"
            or original.to.tag is not None
        ):
            return False
        if policy == "nated" and not natted and not any(self._natted_hop(h[0]) for h in targets):
            return False
        self.media_calls[call_id] = _MediaCall()
        return True

    def _natted_hop(self, request: Request) -> bool:
        uri = request.uri
        if not isinstance(uri, SipUri):
            return False
        if uri.param("alias") is not None:
            return True
        host = uri.param("maddr") or uri.host
        return is_ip_literal(host) and self.settings.nat.ranges.contains(host)

    def _anchor(
        self,
        op: str,
        message: Message,
        from_tag: Optional[str],
        to_tag: Optional[str],
        source: Address,
        then: Callable[[Optional[bytes], float], list[Effect]],
    ) -> Anchor:
        token = next(self._tokens)
        self._anchoring[token] = then
        return Anchor(token, op, message.call_id, from_tag or "", to_tag, message.body, source)

    def anchored(self, token: int, body: Optional[bytes], now: float) -> list[Effect]:
        """The relay's rewritten SDP for the L{Anchor} C{token} (None: anchoring failed;
        the message goes on with its own SDP)."""
        then = self._anchoring.pop(token, None)
        if then is None:
            return []
        effects = then(body, now)
        self._flush_notices(effects)
        return effects

    def media_ended(self, call_id: str) -> None:
        """The relay ended the call's media (media_timeout): forget it."""
        self.media_calls.pop(call_id, None)

    def release_media(self, call_id: str) -> list[Effect]:
        """End the media session of C{call_id}, if sbc anchors that call."""
        if self.media_calls.pop(call_id, None) is None:
            return []
        return [ReleaseMedia(call_id)]

    def _start_branch(
        self, forwarding: _Forwarding, destination: _Destination, now: float
    ) -> Optional[list[Effect]]:
        """A branch to the next usable address of C{destination} (blocklisted ones and those
        sbc has no socket for are skipped, K: BL-05); None when none is left."""
        server = forwarding.server
        while destination.targets:
            target = destination.targets.pop(0)
            if self.blocklist.blocked(target, now) and server.request.method != "BYE":
                continue  # K: BL-05, every method but BYE is checked
            socket = self._socket_for(target, destination.preferred or forwarding.local)
            if socket is None:
                continue
            branch_id = self._new_branch_id(forwarding.loop_hash)
            out = self._prepare(
                server.request,
                destination.request,
                socket,
                forwarding.local,
                branch_id,
                forwarding.rr_params,
            )
            client = ClientTransaction(out, target, socket, self.settings.timers)
            branch = _Branch(client, destination=destination)
            forwarding.branches.append(branch)
            self._clients[client.key] = client
            self._branch_of[client.key] = (forwarding, branch)
            effects = client.start(now)
            self._schedule(client)
            return list(effects)
        return None

    def resolved(self, token: int, targets: list[Address], now: float) -> list[Effect]:
        """The addresses DNS gave for the L{Resolve} C{token}, in the order to try them."""
        stateless = self._resolving_ack.pop(token, None)
        if stateless is not None:
            return self._send_stateless(*stateless, targets)
        pending = self._resolving.pop(token, None)
        if pending is None:
            return []
        forwarding, destination = pending
        forwarding.pending -= 1
        if forwarding.final_sent or forwarding.terminated:
            return []
        effects: list[Effect] = []
        destination.targets = list(targets)
        started = None
        if not forwarding.cancel_requested and forwarding.lifetime_end is not None:
            started = self._start_branch(forwarding, destination, now)
        if started is not None:
            effects += started
        else:
            request = forwarding.server.request
            if forwarding.cancel_requested:
                final = make_response(request, 487)
            elif targets:
                final = make_response(request, 503, "Service Unavailable (destination blocked)")
            else:
                final = _unresolvable(request)
            forwarding.branches.append(_Branch(None, final, True, destination=destination))
            effects += self._maybe_complete(forwarding, now)
        self._flush_notices(effects)
        return effects

    def _flush_notices(self, effects: list[Effect]) -> None:
        if self._notices:
            effects += self._notices
            self._notices = []

    def _failover(
        self, forwarding: _Forwarding, branch: _Branch, now: float
    ) -> Optional[list[Effect]]:
        """K: TM-13: a new branch to the next address of the failed branch's destination,
        unless failover is off, the request was cancelled or its lifetime is over."""
        destination = branch.destination
        if (
            destination is None
            or not destination.targets
            or not self.settings.use_dns_failover
            or forwarding.cancel_requested
            or forwarding.final_sent
            or forwarding.lifetime_end is None
            or now >= forwarding.lifetime_end
        ):
            return None
        started = self._start_branch(forwarding, destination, now)
        if started is not None:
            self._notices.append(
                Notice(
                    "failover",
                    (
                        ("call_id", forwarding.server.request.call_id),
                        ("from", str(branch.client.peer if branch.client else "?")),
                        ("to", str(forwarding.branches[-1].client.peer)),  # type: ignore[union-attr]
                    ),
                )
            )
        return started

    def _block(
        self, target: Address, reason: int, now: float, seconds: Optional[float] = None
    ) -> None:
        if self.blocklist.add(target, reason, now, seconds):
            self._notices.append(
                Notice("blocklisted", (("target", str(target)), ("reason", hex(reason))))
            )

    def _forward_stateless(self, request: Request, source: Address, local: Address) -> list[Effect]:
        """ACK for a 2xx (and stray ACKs): forwarded along the route set, no transaction,
        when our own signed Route entry routed it or sbc knows its dialog; otherwise (and
        an ACK outside any dialog) absorbed, unless a trusted peer sent it."""
        routed = loose_route(request, self.identity)
        trusted = self.is_trusted(source)
        if request.to.tag is None:
            verdict = initial_verdict(
                method="ACK",
                to_us=False,
                from_local=False,
                trusted=trusted,
                auth_enabled=False,
                allow_relay=self.settings.allow_relay,
            )
        else:
            verdict = in_dialog_verdict(
                method="ACK",
                routed_by_us=self.routed_by_us(request, routed.consumed),
                known_dialog=self.known_dialog(request),
                trusted=trusted,
                allow_relay=self.settings.allow_relay,
            )
        if verdict is not Verdict.ACCEPT:
            return []
        out = routed.request
        hop = routed.next_hop
        if hop is None and isinstance(out.uri, SipUri) and not self.identity.is_myself(out.uri):
            hop = out.uri
        if hop is None:
            return []
        target: Union[Address, SipUri, None] = None
        if self.settings.nat.contact_fix == "alias" and hop == out.uri:
            try:
                out, target = handle_ruri_alias(out)
            except AliasError:
                return []
        target = target or self.hop_target(hop)
        if target is None:
            return []
        if request.call_id in self.media_calls and has_sdp(out):
            # The answer to a late offer (K: RTP-04): the offerer was the callee.
            resolved_target = target

            def anchored(body: Optional[bytes], now: float) -> list[Effect]:
                rewritten = out if body is None else _with_sdp(out, body)
                return self._ack_onwards(request, rewritten, local, resolved_target)

            return [self._anchor("answer", out, out.to.tag, out.from_.tag, source, anchored)]
        return self._ack_onwards(request, out, local, target)

    def _ack_onwards(
        self, request: Request, out: Request, local: Address, target: Union[Address, SipUri]
    ) -> list[Effect]:
        if isinstance(target, SipUri):
            token = next(self._tokens)
            self._resolving_ack[token] = (request, out, local)
            return [Resolve(token, target)]
        return self._send_stateless(request, out, local, [target])

    def _send_stateless(
        self, request: Request, out: Request, local: Address, targets: list[Address]
    ) -> list[Effect]:
        """Send a stateless copy (an ACK for a 2xx) to the first target sbc has a socket
        for; the blocklist is not asked: the 2xx came from there."""
        for target in targets:
            socket = self._socket_for(target, local)
            if socket is None:
                continue
            digest = hashlib.blake2s(
                str(request.top_via).encode("utf-8", "surrogateescape"), digest_size=8
            ).hexdigest()
            prepared = self._prepare(request, out, socket, local, f"{_BRANCH_PREFIX}a{digest}")
            return [Send(prepared, target, socket)]
        return []

    # -- CANCEL -------------------------------------------------------------------------------
    def _cancel(self, cancel: Request, server: ServerTransaction, now: float) -> list[Effect]:
        key = server_key(cancel)
        forwarding = self._forwardings.get(key[:-1] + ("INVITE",))
        if forwarding is None or forwarding.final_sent:
            return self._reply(server, make_response(cancel, 481), now)
        effects = self._reply(server, make_response(cancel, 200), now)
        forwarding.cancel_requested = True
        for branch in forwarding.branches:
            effects += self._cancel_branch(branch, now)
        return effects

    def _cancel_branch(self, branch: _Branch, now: float) -> list[Effect]:
        """CANCEL a branch once it has a provisional response (§9.1); until then, note it."""
        if branch.final is not None or branch.cancelled:
            return []
        client = branch.client
        if client is None or not client.invite:
            return []
        if client.provisional == 0:
            branch.cancel_pending = True
            return []
        branch.cancelled = True
        invite = client.request
        headers = [Header("Via", str(invite.top_via))]
        for h in invite.headers:
            if h.key in ("from", "to", "call-id", "route", "max-forwards"):
                headers.append(Header(h.name, h.value))
        headers += [Header("CSeq", f"{invite.cseq.number} CANCEL"), Header("Content-Length", "0")]
        cancel = Request("CANCEL", invite.uri, headers)
        cancel_client = ClientTransaction(cancel, client.peer, client.local, self.settings.timers)
        self._clients[cancel_client.key] = cancel_client
        effects = list(cancel_client.start(now))
        self._schedule(cancel_client)
        return effects

    # -- responses ------------------------------------------------------------------------------
    def receive_response(self, response: Response, source: Address, now: float) -> list[Effect]:
        """Handle a response from a next hop."""
        via = response.top_via
        key = client_key(via.branch or "", response.cseq.method)
        client = self._clients.get(key)
        if client is None:
            if self.keepalive is not None and self.keepalive.reply(response, source, now):
                return []  # KA-05: replies to our pings are consumed, never routed
            return self._stray_response(response)
        reply_route = getattr(self.router, "reply_route", None)
        if reply_route is not None and response.status > 100:
            ctx = ReplyContext(self, response, client.request, source)
            try:
                reply_route(ctx)
                response = ctx.response
            except ScriptExit:
                response = ctx.response
            except Exception as error:
                self._notices.append(
                    Notice("script_error", (("route", "reply_route"), ("error", _describe(error))))
                )
        effects = self._client_effects(client, client.receive_response(response, now), now)
        self._flush_notices(effects)
        return effects

    def _stray_response(self, response: Response) -> list[Effect]:
        """A 2xx retransmission to an INVITE whose branch is gone is relayed along the Vias
        (§16.7 step 10 for 2xx); anything else unmatched is dropped."""
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return []
        if not (response.top_via.branch or "").startswith(_BRANCH_PREFIX) or len(response.vias) < 2:
            return []
        upstream = response.without_first_value("Via")
        assert isinstance(upstream, Response)
        media = self.media_calls.get(response.call_id)
        if media is not None and has_sdp(upstream):
            body = media.answers.get((response.to.tag, response.cseq.number))
            if body is not None:
                upstream = _with_sdp(upstream, body)
        via = upstream.top_via
        transport = via.transport.lower()
        if transport not in ("udp", "tcp", "tls"):
            return []
        host, port = response_target(via)
        peer = Address(transport, host, port)
        socket = self._socket_for(peer, self.sockets[0]) if self.sockets else None
        return [Send(upstream, peer, socket)]

    def _client_effects(self, client: ClientTransaction, effects: list, now: float) -> list[Effect]:
        out: list[Effect] = []
        found = self._branch_of.get(client.key)
        for effect in effects:
            if isinstance(effect, Send):
                out.append(effect)
            elif found is None:
                continue  # a CANCEL's own transaction: its outcome changes nothing
            elif isinstance(effect, ResponseReceived):
                out += self._branch_response(found[0], found[1], effect.response, now)
            elif isinstance(effect, TimedOut):
                out += self._branch_timeout(found[0], found[1], effect.timer, now)
        if client.terminated:
            self._clients.pop(client.key, None)
            self._branch_of.pop(client.key, None)
        else:
            self._schedule(client)
        return out

    @staticmethod
    def _upstream(server: ServerTransaction, response: Response) -> Response:
        """C{response} without our Via; rebuilt on the request's Vias when the next hop
        dropped them (a response must never go upstream without Via)."""
        upstream = response.without_first_value("Via")
        assert isinstance(upstream, Response)
        if not upstream.has("via"):
            to_value = response.get("to")
            rebuilt = make_response(server.request, response.status, response.reason)
            if to_value is not None:
                rebuilt = rebuilt.with_header("To", to_value)
            assert isinstance(rebuilt, Response)
            return rebuilt
        return upstream

    def _relay(self, forwarding: _Forwarding, response: Response, now: float) -> list[Effect]:
        """Send C{response} upstream through the server transaction, if it still may."""
        server = forwarding.server
        upstream = self._upstream(server, response)
        if (server.state, response_class(upstream.status)) not in server.table:
            return []
        if upstream.status >= 200:
            forwarding.final_sent = True
        if 200 <= upstream.status < 300 and self.keepalive is not None and forwarding.keepalive:
            self._keepalive_condition(server, upstream, now)
        return self._reply(server, upstream, now)

    def _keepalive_condition(
        self, server: ServerTransaction, response: Response, now: float
    ) -> None:
        """KA-03/KA-04: a 2xx to a relayed REGISTER or SUBSCRIBE keeps its sender alive."""
        assert self.keepalive is not None
        method = server.request.method
        if method == "REGISTER" and not server.request.contact_star:
            seconds = self.keepalive.register_reply_expiry(
                list(server.request.contacts), list(response.contacts)
            )
            self.keepalive.registered(
                server.peer, server.local, now + seconds if seconds else 0, now
            )
        elif method == "SUBSCRIBE":
            seconds = response.expires or 0
            self.keepalive.subscribed(
                server.peer, server.local, now + seconds if seconds else 0, now
            )

    def _keepalive_dialogs(
        self,
        events: list,
        now: float,
        forwarding: Optional[_Forwarding] = None,
        branch: Optional[_Branch] = None,
    ) -> list:
        """KA-05: a dialog keeps its caller (and its callee, if that has an entry already)
        until it ends."""
        table = self.keepalive
        if table is None:
            return events
        for event in events:
            key = event.dialog.key
            if isinstance(event, DialogTerminated):
                table.dialog_ended(key, now)
            elif (
                isinstance(event, DialogCreated) and forwarding is not None and forwarding.keepalive
            ):
                server = forwarding.server
                table.dialog_started(key, server.peer, server.local, now)
                if branch is not None:
                    table.dialog_started(
                        key, branch.client.peer, branch.client.local, now, create=False
                    )
        return events

    def _branch_response(
        self,
        forwarding: _Forwarding,
        branch: _Branch,
        response: Response,
        now: float,
        anchored: bool = False,
    ) -> list[Effect]:
        effects: list[Effect] = []
        invite = forwarding.server.request
        if response.status == 100:
            return effects
        if (
            not anchored
            and response.status < 300
            and invite.method in ("INVITE", "UPDATE")
            and invite.call_id in self.media_calls
            and has_sdp(response)
        ):
            return [self._anchor_response(forwarding, branch, response)]
        if branch.final is not None and response.status >= 300:
            return effects  # e.g. the 487 after we cancelled a timed-out branch
        if invite.method == "INVITE":
            effects += self._keepalive_dialogs(
                self.dialogs.invite_response(invite, response, now), now, forwarding, branch
            )
        if response.status < 200:
            if branch.cancel_pending:
                branch.cancel_pending = False
                effects += self._cancel_branch(branch, now)
            if not forwarding.final_sent:
                effects += self._relay(forwarding, response, now)
            return effects
        if response.status < 300:
            branch.final = response
            effects += self._relay_2xx(forwarding, response, now)
            if invite.method == "INVITE":
                for other in forwarding.branches:
                    if other is not branch:
                        effects += self._cancel_branch(other, now)
            return effects
        branch.final = response
        if response.status == 503 or response.status in self.settings.failover_reply_codes:
            assert branch.client is not None
            if response.status == 503 and self.settings.blocklist.blst_503:
                seconds = retry_after_timeout(_retry_after(response), self.settings.blocklist)
                if seconds is not None:
                    self._block(branch.client.peer, REPLY_503, now, seconds)
            started = self._failover(forwarding, branch, now)
            if started is not None:
                return effects + started
        if response.status >= 600 and invite.method == "INVITE":
            for other in forwarding.branches:
                if other is not branch:
                    effects += self._cancel_branch(other, now)
                    if other.final is None and other.client.provisional == 0:
                        other.final, other.faked = make_response(invite, 487), True
        return effects + self._maybe_complete(forwarding, now)

    def _anchor_response(
        self, forwarding: _Forwarding, branch: _Branch, response: Response
    ) -> Anchor:
        """An answer in a 18x/2xx (or the late offer of an INVITE without SDP) goes through
        the relay; the response goes on when the relay has rewritten it."""
        request = forwarding.server.request
        media = self.media_calls[request.call_id]
        if has_sdp(request):
            op, offerer, other = "answer", request.from_.tag, response.to.tag
        else:
            op, offerer, other = "offer", response.to.tag, request.from_.tag
        assert branch.client is not None
        source = branch.client.peer

        def anchored(body: Optional[bytes], now: float) -> list[Effect]:
            rewritten = response
            if body is not None:
                rewritten = _with_sdp(response, body)
                if response.status >= 200:
                    media.answers[(response.to.tag, response.cseq.number)] = body
            return self._branch_response(forwarding, branch, rewritten, now, anchored=True)

        return self._anchor(op, response, offerer, other, source, anchored)

    def _relay_2xx(self, forwarding: _Forwarding, response: Response, now: float) -> list[Effect]:
        server = forwarding.server
        upstream = self._upstream(server, response)
        forwarding.final_sent = True
        if (server.state, "2xx") not in server.table:
            # A later 2xx of another branch, after the transaction moved on: relay it
            # statelessly to the same peer (§16.7 step 10).
            return [Send(upstream, server.peer, server.local)]
        return self._reply(server, upstream, now)

    def _branch_timeout(
        self, forwarding: _Forwarding, branch: _Branch, timer: str, now: float
    ) -> list[Effect]:
        effects: list[Effect] = []
        if branch.final is not None:
            return effects
        if timer == "C":
            effects += self._cancel_branch(branch, now)
        request = forwarding.server.request
        branch.final, branch.faked = make_response(request, 408), True
        client = branch.client
        if timer != "C" and client is not None and client.provisional == 0:
            # K: TM-09: no reply at all: blocklist (for blst_methods_add), then fail over.
            # Not a location binding's address: its timeout means the binding is stale, and
            # blocklisting it would hide the phone after it registers again.
            binding = branch.destination is not None and branch.destination.binding
            blocks = method_bits(request.method) & self.settings.blocklist.blst_methods_add
            if blocks and not binding:
                self._block(client.peer, TIMEOUT, now)
            started = self._failover(forwarding, branch, now)
            if started is not None:
                return effects + started
        return effects + self._maybe_complete(forwarding, now)

    def transport_failed(self, peer: Address, now: float, block: bool = True) -> list[Effect]:
        """Every branch waiting on C{peer} that has no response yet fails now with a local
        503 (send failure, a refused connection, a TLS peer that failed verification)."""
        effects: list[Effect] = []
        for key, client in list(self._clients.items()):
            if client.peer != peer or client.state not in (State.CALLING, State.TRYING):
                continue
            found = self._branch_of.pop(key, None)
            client.state = State.TERMINATED
            client.deadlines.clear()
            del self._clients[key]
            if found is None:
                continue
            forwarding, branch = found
            if branch.final is None:
                branch.final = make_response(
                    forwarding.server.request, 503, "Service Unavailable (next hop unreachable)"
                )
                branch.faked = True
                if block:
                    self._block(peer, SEND_FAILED, now)
                started = self._failover(forwarding, branch, now)
                effects += started if started is not None else self._maybe_complete(forwarding, now)
        self._flush_notices(effects)
        return effects

    def _lifetime_expired(self, forwarding: _Forwarding, now: float) -> list[Effect]:
        forwarding.lifetime_end = None
        effects: list[Effect] = []
        if forwarding.pending:  # DNS or the relay did not answer in time: 408 for those
            request = forwarding.server.request
            forwarding.branches.append(_Branch(None, make_response(request, 408), True))
        for branch in forwarding.branches:
            if branch.final is None:
                effects += self._cancel_branch(branch, now)
                branch.final, branch.faked = make_response(forwarding.server.request, 408), True
        return effects + self._maybe_complete(forwarding, now)

    def _maybe_complete(self, forwarding: _Forwarding, now: float) -> list[Effect]:
        """When every branch has a final response and none was a 2xx, send the best one."""
        if (
            forwarding.final_sent
            or (forwarding.pending > 0 and forwarding.lifetime_end is not None)
            or any(b.final is None for b in forwarding.branches)
        ):
            return []
        winner = min(forwarding.branches, key=lambda b: priority(b.final.status))  # type: ignore[union-attr]
        best = winner.final
        assert best is not None
        invite = forwarding.server.request
        effects: list[Effect] = []
        failure_route = forwarding.failure_route
        if failure_route is not None:  # K: TM-15, also for CANCELled requests and 6xx
            forwarding.failure_route = None  # K: TM-15, once per transaction here
            ctx = FailureContext(self, forwarding, best, now)
            try:
                failure_route(ctx)
            except ScriptExit:
                pass
            except Exception as error:
                self._notices.append(
                    Notice(
                        "script_error", (("route", "failure_route"), ("error", _describe(error)))
                    )
                )
            if ctx.done:
                return ctx.effects
        if invite.method == "INVITE" and invite.to.tag is None:
            effects += self.release_media(invite.call_id)
        if invite.method == "INVITE" and best.status == 408:
            effects += self._keepalive_dialogs(self.dialogs.invite_timed_out(invite), now)
        if best.status == 503 and self.settings.remap_503_500 and not winner.faked:
            best = Response(500, REASONS[500], best.headers, best.body)
        if forwarding.cancel_requested and invite.method == "INVITE" and winner.faked:
            best, winner.faked = make_response(invite, 487), True
        if not winner.faked:
            return effects + self._relay(forwarding, best, now)
        forwarding.final_sent = True
        return effects + self._reply(forwarding.server, best, now)
