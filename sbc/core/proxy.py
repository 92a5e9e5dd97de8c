# -*- test-case-name: tests.core.test_proxy -*-
"""
The stateful proxy and registrar front end (RFC 3261 §16), decided without I/O.

Theory of operation:
 - The engine hands every parsed, Via-stamped request and response to L{Proxy} with the
   transport address it came from and the socket it came in on, and C{now}.  The proxy
   answers with effects (L{sbc.core.effects}): messages to send, DNS lookups, media
   anchoring, dialog and operator events.
 - Each new request gets a server transaction and, once the routing script relayed it, a
   response context (L{sbc.core.forwarding}) with one client transaction per branch;
   L{sbc.core.branching} handles everything after the relay.
 - Every machine with deadlines (transactions, response contexts, dialogs) sits in one
   L{TimerHeap}; L{Proxy.next_deadline} is its head and L{Proxy.handle_timer} fires what
   is due.  Machines leave the heap with their tables, so a finished call is freed as soon
   as its transactions end (64*T1 after the final response at most).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from random import Random
from typing import Any, Optional, Union

from sbc.core import routes_default
from sbc.core.address import Address
from sbc.core.auth import DigestAuth
from sbc.core.blocklist import Blocklist, BlocklistSettings
from sbc.core.branching import LateBranch, describe_error
from sbc.core.dialog import (
    Dialog,
    DialogCreated,
    DialogSettings,
    DialogTable,
    DialogTerminated,
    Leg,
)
from sbc.core.effects import (
    Anchor,
    BlocklistLifted,
    Effect,
    OperatorEvent,
    ReleaseMedia,
    Resolve,
    ScriptFailed,
    ScriptNoAction,
)
from sbc.core.forwardcopy import (
    BRANCH_PREFIX,
    SocketChooser,
    SourceFor,
    is_loop,
    prepare_copy,
)
from sbc.core.forwarding import (
    Branch,
    Destination,
    ResponseContext,
    failover_codes,
    priority,
)
from sbc.core.hosting import ACCEPT, ALLOW, SUPPORTED, ScriptHosting
from sbc.core.identity import LocalIdentity
from sbc.core.keepalive import KeepaliveTable
from sbc.core.mediacalls import MediaCalls, has_sdp
from sbc.core.message import Request, Response
from sbc.core.nat import NatPolicy, response_target, stamp_via
from sbc.core.natfix import AliasError, handle_ruri_alias
from sbc.core.registrar import Registrar
from sbc.core.relaypolicy import (
    RouteSigner,
    TrustedPeers,
    Verdict,
    in_dialog_verdict,
    initial_verdict,
)
from sbc.core.reply import make_response
from sbc.core.routescript import RequestContext, ScriptExit
from sbc.core.routing import loose_route
from sbc.core.timerheap import TimerHeap
from sbc.core.transaction import (
    ClientTransaction,
    Send,
    ServerTransaction,
    State,
    Timers,
    server_key,
)
from sbc.core.uri import OpaqueUri, SipUri

__all__ = [
    "ProxySettings",
    "Proxy",
    "Effect",
    "Resolve",
    "Anchor",
    "ReleaseMedia",
    "OperatorEvent",
    "has_sdp",
    "ALLOW",
    "SUPPORTED",
    "ACCEPT",
    "priority",
    "failover_codes",
]


@dataclass(frozen=True)
class ProxySettings:
    """
    Proxy behaviour ([tm], [rr], [core], [dialog], [permissions] keys).

    @ivar max_inv_lifetime: seconds an INVITE transaction may live (Kamailio tm's
        C{max_inv_lifetime}, the cap over Timer C).
    @ivar max_noninv_lifetime: the same for other requests.
    @ivar enable_double_rr: 0 never, 1 when in and out sockets differ, 2 always.
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
    dialog: DialogSettings = field(default_factory=DialogSettings)


class Proxy(ScriptHosting):
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
        *,
        auth: Optional[DigestAuth] = None,
        keepalive: Optional[KeepaliveTable] = None,
        resolves_names: bool = False,
        anchors_media: bool = False,
        source_for: Optional[SourceFor] = None,
    ) -> None:
        self.identity = identity
        #: The routing script (request_route, optionally reply_route); sbc's own policy
        #: by default.
        self.router = router if router is not None else routes_default
        self.sockets = list(sockets)
        self._ours_cache: tuple[object, frozenset[tuple[str, int]]] = (None, frozenset())
        self.chooser = SocketChooser(self.sockets, source_for)
        self.registrar = registrar
        self.rng = rng or Random(0)
        #: Signs the Record-Route and Path entries we insert (random secret by default:
        #: dialogs set up before a restart then need the dialog table or a trusted peer).
        self.signer = signer or RouteSigner(self.rng.getrandbits(128).to_bytes(16, "big"))
        self.dialogs = DialogTable(settings.dialog)
        self.blocklist = Blocklist(settings.blocklist)
        self._settings = settings
        #: The keepalive engine's table, when keepalives are configured.
        self.keepalive = keepalive
        #: Digest authentication for our users ([auth] on).
        self.auth = auth
        #: Next hops named by host name are looked up (the wiring has a resolver);
        #: without one they are answered 478.
        self.resolves_names = resolves_names
        #: Media is anchored through a relay (the wiring has one); see L{Anchor}.
        self.anchors_media = anchors_media
        self.media = MediaCalls()
        #: Shutting down: initial requests get 503, dialogs and transactions finish.
        self.draining = False
        self.heap = TimerHeap()
        self._servers: dict[tuple, ServerTransaction] = {}
        self._contexts: dict[tuple, ResponseContext] = {}
        self._clients: dict[tuple, ClientTransaction] = {}
        self._branch_of: dict[tuple, tuple[ResponseContext, Branch]] = {}
        self._probe_of: dict[tuple, tuple[Dialog, Leg]] = {}
        self._late: dict[tuple, LateBranch] = {}
        self._resolving: dict[int, tuple[ResponseContext, Destination]] = {}
        self._resolving_ack: dict[int, tuple[Request, Request, Address]] = {}
        self._events: list[OperatorEvent] = []
        self._tokens = itertools.count(1)
        self._housekeeping = 0.0
        self._peaks: dict[str, int] = {}  # the tables' sizes before they last shrank

    @property
    def settings(self) -> ProxySettings:
        return self._settings

    @settings.setter
    def settings(self, settings: ProxySettings) -> None:
        """A reload: the blocklist and dialog table follow."""
        self._settings = settings
        self.blocklist.settings = settings.blocklist
        self.dialogs.settings = settings.dialog

    @property
    def media_calls(self) -> dict:
        """The calls whose media sbc anchors, by Call-ID."""
        return self.media.calls

    def sizes(self) -> dict[str, int]:
        """How much state the proxy holds (for statistics and leak tests)."""
        return {
            "server_transactions": len(self._servers),
            "client_transactions": len(self._clients),
            "forwardings": len(self._contexts),
            "dialogs": len(self.dialogs),
            "timer_heap": len(self.heap),
            "registrations": len(self.registrar),
            "resolving": len(self._resolving) + len(self._resolving_ack),
            "late_branches": len(self._late),
            "anchoring": len(self.media.anchoring),
            "media_calls": len(self.media),
            "blocklist": len(self.blocklist),
        }

    def _next_token(self) -> int:
        return next(self._tokens)

    # -- timers ------------------------------------------------------------------------------
    def next_deadline(self) -> Optional[float]:
        """When L{handle_timer} must run next (L{None}: nothing pending)."""
        deadline = self.heap.next_deadline()
        if self._housekeeping and (deadline is None or self._housekeeping < deadline):
            return self._housekeeping
        return deadline

    def handle_timer(self, now: float) -> list[Effect]:
        """Fire everything due at C{now}."""
        effects: list[Effect] = []
        if self._housekeeping and now >= self._housekeeping:
            self.registrar.expire(now)
            self._housekeeping = 0.0
        while (machine := self.heap.pop_due(now)) is not None:
            if isinstance(machine, ResponseContext):
                effects += self._lifetime_expired(machine, now)
            elif isinstance(machine, ClientTransaction):
                effects += self._client_effects(machine, machine.handle_timer(now), now)
            elif isinstance(machine, LateBranch):
                self._late_expired(machine)
            elif isinstance(machine, ServerTransaction):
                effects += [e for e in machine.handle_timer(now) if isinstance(e, Send)]
                self._server_done(machine)
            else:
                assert isinstance(machine, Dialog)
                effects += self._dialog_timer(machine, now)
        return self._with_events(effects)

    def _server_done(self, server: ServerTransaction) -> None:
        """A server transaction that ended leaves its table and takes its response
        context with it; one that goes on is scheduled again, its context settled once
        the final response is sent (a non-INVITE's leaves then)."""
        if not server.terminated:
            self.heap.schedule(server)
            if server.request is None:  # its final response went upstream
                context = self._contexts.get(server.key)
                if context is not None:
                    context.settle()
                    self.heap.forget(context)  # no lifetime any more
                    if not server.invite:  # only an INVITE's context answers a CANCEL
                        del self._contexts[server.key]
            return
        key = server.key
        self._servers.pop(key, None)
        self.heap.forget(server)
        context = self._contexts.pop(key, None)
        if context is not None:
            self.heap.forget(context)
        self._shrink("servers", self._servers)
        self._shrink("contexts", self._contexts)

    # -- dialogs -----------------------------------------------------------------------------
    def _keepalive_dialogs(
        self,
        events: list,
        now: float,
        forwarding: Optional[ResponseContext] = None,
        branch: Optional[Branch] = None,
    ) -> list:
        """Dialog events: confirmed dialogs get their timers; ended ones leave the heap
        and their keepalive condition (nat_traversal keeps a dialog's caller, and its
        callee if that has an entry already, until it ends)."""
        table = self.keepalive
        for event in events:
            dialog = event.dialog
            if isinstance(event, DialogTerminated):
                self.heap.forget(dialog)
                if table is not None:
                    table.dialog_ended(dialog.key, now)
                continue
            self.heap.schedule(dialog)
            if (
                table is not None
                and isinstance(event, DialogCreated)
                and forwarding is not None
                and forwarding.keepalive
            ):
                server = forwarding.server
                table.dialog_started(dialog.key, server.peer, server.local, now)
                if branch is not None and branch.client is not None:
                    client = branch.client
                    table.dialog_started(dialog.key, client.peer, client.local, now, create=False)
        return events

    def _dialog_timer(self, dialog: Dialog, now: float) -> list[Effect]:
        """A dialog's timeout or keepalive probes (Kamailio dialog's default_timeout and
        ka_interval); a dialog that ends here releases its media."""
        events, probes = self.dialogs.handle_timer(dialog, now)
        effects: list[Effect] = list(self._keepalive_dialogs(events, now))
        if events:
            effects += self.media.release(dialog.call_id)
        else:
            self.heap.schedule(dialog)
        for leg, request in probes:
            socket = self.chooser.choose(leg.peer, leg.local)
            if socket is None:
                continue
            branch = f"{BRANCH_PREFIX}k{self.rng.getrandbits(48):012x}"
            out = prepare_copy(request, request, socket, socket, branch, self.settings, self.signer)
            client = ClientTransaction(out, leg.peer, socket, self.settings.timers, branch)
            self._probe_of[client.key] = (dialog, leg)
            effects += self._add_client(client, now)
        return effects

    # -- requests ---------------------------------------------------------------------------
    def receive_request(
        self, request: Request, source: Address, local: Address, now: float
    ) -> list[Effect]:
        """Handle a request that arrived from C{source} on our socket C{local}."""
        return self._with_events(self._receive_request(request, source, local, now))

    def _receive_request(
        self, request: Request, source: Address, local: Address, now: float
    ) -> list[Effect]:
        if not self._housekeeping:
            self._housekeeping = now + 10.0
        if self.blocklist.lift(source):
            # The peer has just shown it is alive (a phone registering again from the NAT
            # binding whose call timed out): its blocklist entry must not hide it.
            self._events.append(BlocklistLifted(str(source)))
        policy = self.settings.nat
        request = stamp_via(request, source.host, source.port, force_rport=policy.force_rport)
        key = server_key(request)
        server = self._servers.get(key)
        if server is not None and request.method == "ACK" and server.state is State.ACCEPTED:
            # The ACK for a 2xx is end to end even when a UAC reuses the INVITE's branch.
            return self._forward_stateless(request, source, local, now)
        if server is not None:
            effects: list[Effect] = list(server.receive_request(request, now))
            self._server_done(server)
            return effects
        if request.method == "ACK":
            return self._forward_stateless(request, source, local, now)
        peer = self.reply_peer(request, source)
        server = ServerTransaction(request, peer, local, self.settings.timers, key)
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

    def _ours(self) -> frozenset[tuple[str, int]]:
        """The (host, port) pairs our Vias name: our sockets and the advertised address
        (built again only when a socket is bound or a reload changes C{advertise})."""
        advertise = self.settings.advertise
        basis = (len(self.sockets), advertise)
        if self._ours_cache[0] == basis:
            return self._ours_cache[1]
        mine = {(s.host, s.port) for s in self.sockets}
        if advertise is not None:
            ports = {advertise[1]} if advertise[1] is not None else {s.port for s in self.sockets}
            mine |= {(advertise[0].lower(), port) for port in ports}
        self._ours_cache = (basis, frozenset(mine))
        return self._ours_cache[1]

    def _check(self, request: Request) -> Optional[Response]:
        """RFC 3261 §16.3 request validation: a response when the request is refused."""
        uri = request.uri
        if isinstance(uri, OpaqueUri) and uri.scheme.lower() != "tel":
            return make_response(request, 416)
        mine = isinstance(uri, SipUri) and self.identity.is_myself(uri) and not request.routes
        if request.max_forwards == 0 and not (mine and request.method == "OPTIONS"):
            return make_response(request, 483)
        if is_loop(request, self._ours()):
            return make_response(request, 482)
        # As the UAS we check Require (§8.2.2.3), as a proxy Proxy-Require (§16.3).
        required = [t for t in request.values("require" if mine else "proxy-require") if t]
        unsupported = [t for t in required if t.lower() not in SUPPORTED]
        if unsupported:
            return make_response(request, 420, headers=[("Unsupported", ", ".join(unsupported))])
        return None

    def reply_peer(self, request: Request, source: Address) -> Address:
        """Where responses to C{request} go (its Via, or the connection it came on)."""
        if source.reliable:
            return source
        host, port = response_target(request.top_via)
        return Address("udp", host, port)

    def _reply(self, server: ServerTransaction, response: Response, now: float) -> list[Effect]:
        effects: list[Effect] = list(server.send_response(response, now))
        self._server_done(server)
        return effects

    def _route(
        self,
        request: Request,
        server: ServerTransaction,
        source: Address,
        local: Address,
        now: float,
    ) -> list[Effect]:
        """The routing script decides where the request goes (Kamailio's request_route)."""
        ctx = RequestContext(self, request, server, source, local, now)
        try:
            self.router.request_route(ctx)
        except ScriptExit:
            pass
        except Exception as error:
            return ctx.effects + self._script_failed(ctx, error, "request_route")
        if not ctx.done:
            self._events.append(ScriptNoAction(request.method, request.call_id))
            return ctx.effects + self._reply(server, make_response(request, 500, "Not Routed"), now)
        return ctx.effects

    def _script_failed(self, ctx: RequestContext, error: Exception, route: str) -> list[Effect]:
        """A script that raises: 500 (if nothing was answered yet), one log line with the
        traceback, counted; sbc goes on serving."""
        self._events.append(ScriptFailed(route, describe_error(error)))
        if ctx.done:
            return []
        ctx.done = True
        return self._reply(ctx.server, make_response(ctx.original, 500, "Script Error"), ctx.now)

    # -- ACK for 2xx, statelessly --------------------------------------------------------
    def _forward_stateless(
        self, request: Request, source: Address, local: Address, now: float
    ) -> list[Effect]:
        """ACK for a 2xx (and stray ACKs): forwarded along the route set, no transaction,
        when our own signed Route entry routed it or sbc knows its dialog; otherwise (and
        an ACK outside any dialog, or with Max-Forwards 0) absorbed, unless a trusted peer
        sent it."""
        if request.max_forwards == 0:
            return []  # §16.3 step 3: no 483 for an ACK, it just goes no further
        routed = loose_route(request, self.identity)
        trusted = self.is_trusted(source)
        allow_relay = self.settings.allow_relay
        if request.to.tag is None:
            verdict = initial_verdict(
                method="ACK",
                to_us=False,
                from_local=False,
                trusted=trusted,
                auth_enabled=False,
                allow_relay=allow_relay,
            )
        else:
            verdict = in_dialog_verdict(
                method="ACK",
                routed_by_us=self.routed_by_us(request, routed.consumed, now, routed.request),
                known_dialog=self.known_dialog(request, routed.request),
                trusted=trusted,
                allow_relay=allow_relay,
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
        if request.call_id in self.media and has_sdp(out):
            # The answer to a late offer: the offerer was the callee.
            resolved_target = target

            def anchored(body: Optional[bytes], now: float) -> list[Effect]:
                rewritten = out if body is None else out.with_body(body)
                return self._ack_onwards(request, rewritten, local, resolved_target)

            return [self.media.anchor("answer", out, out.to.tag, out.from_.tag, source, anchored)]
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
            socket = self.chooser.choose(target, local)
            if socket is None:
                continue
            digest = hashlib.blake2s(
                str(request.top_via).encode("utf-8", "surrogateescape"), digest_size=8
            ).hexdigest()
            branch = f"{BRANCH_PREFIX}a{digest}"
            prepared = prepare_copy(request, out, socket, local, branch, self.settings, self.signer)
            return [Send(prepared, target, socket)]
        return []

    # -- CANCEL -------------------------------------------------------------------------------
    def _cancel(self, cancel: Request, server: ServerTransaction, now: float) -> list[Effect]:
        """§16.10: 200 while the INVITE's response context exists (also after its final
        response), and the pending branches are cancelled; 481 otherwise."""
        key = server_key(cancel)
        forwarding = self._contexts.get(key[:-1] + ("INVITE",))
        if forwarding is None:
            return self._reply(server, make_response(cancel, 481), now)
        effects = self._reply(server, make_response(cancel, 200), now)
        if forwarding.final_sent:
            return effects
        forwarding.cancel_requested = True
        for branch in forwarding.branches:
            effects += self._cancel_branch(branch, now)
        return effects
