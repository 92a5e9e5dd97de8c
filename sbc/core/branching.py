# -*- test-case-name: tests.core.test_proxy_lifecycle -*-
"""
The proxy's branches (RFC 3261 §16.6-§16.8): starting them on the addresses a response
context's next hops resolve to (skipping blocklisted ones and failing over, as Kamailio tm
does with C{use_dns_failover}), passing their responses through the routing script's
C{reply_route} and the media relay, relaying provisionals and 2xx at once, CANCELling the
rest, and sending the best final response once every branch is done, unless a
C{failure_route} takes over.

L{BranchHandling} is the base of L{sbc.core.proxy.Proxy}: the proxy owns the tables; this
half handles everything that happens after a request was relayed.
"""

from __future__ import annotations

from typing import Any, Optional

from sbc.core.address import WEBSOCKET, Address
from sbc.core.blocklist import (
    REPLY_503,
    SEND_FAILED,
    TIMEOUT,
    Blocklist,
    method_bits,
    retry_after_timeout,
)
from sbc.core.dialog import (
    Dialog,
    DialogTable,
    Leg,
    contact_of,
)
from sbc.core.effects import (
    Blocklisted,
    Effect,
    FailedOver,
    OperatorEvent,
    Resolve,
    ScriptFailed,
)
from sbc.core.forwardcopy import SocketChooser, branch_id, prepare_copy
from sbc.core.forwarding import (
    Branch,
    Destination,
    LateBranch,
    ResponseContext,
    cancel_for,
    describe_error,
    retry_after,
    upstream,
)
from sbc.core.keepalive import KeepaliveTable
from sbc.core.mediacalls import MediaCalls, has_sdp, stray_2xx
from sbc.core.message import Request, Response
from sbc.core.relaypolicy import RouteSigner
from sbc.core.routescript import FailureContext, ReplyContext, ScriptExit
from sbc.core.routing import Hop
from sbc.core.timerheap import TimerHeap, compact
from sbc.core.transaction import (
    ClientTransaction,
    ResponseReceived,
    Send,
    ServerTransaction,
    State,
    TimedOut,
    client_key,
    response_class,
)
from sbc.core.uri import SipUri

__all__ = ["BranchHandling"]


class BranchHandling:
    """What happens to a request after the script relayed it (see the module docstring)."""

    # The proxy provides these.
    settings: Any
    router: Any
    sockets: list[Address]
    chooser: SocketChooser
    signer: RouteSigner
    rng: Any
    heap: TimerHeap
    dialogs: DialogTable
    blocklist: Blocklist
    keepalive: Optional[KeepaliveTable]
    media: MediaCalls
    _servers: dict[tuple, ServerTransaction]
    _contexts: dict[tuple, ResponseContext]
    _clients: dict[tuple, ClientTransaction]
    _branch_of: dict[tuple, tuple[ResponseContext, Branch]]
    _probe_of: dict[tuple, tuple[Dialog, Leg]]
    _late: dict[tuple, LateBranch]
    _resolving: dict[int, tuple[ResponseContext, Destination]]
    _events: list[OperatorEvent]
    _peaks: dict[str, int]

    def _reply(self, server: ServerTransaction, response: Response, now: float) -> list[Effect]:
        raise NotImplementedError

    def _keepalive_dialogs(
        self,
        events: list,
        now: float,
        forwarding: Optional[ResponseContext] = None,
        branch: Optional[Branch] = None,
    ) -> list:
        raise NotImplementedError

    # -- tables ---------------------------------------------------------------------------------
    def _add_client(self, client: ClientTransaction, now: float) -> list[Effect]:
        self._clients[client.key] = client
        effects = list(client.start(now))
        self.heap.schedule(client)
        return effects

    def _drop_client(self, client: ClientTransaction) -> None:
        self._clients.pop(client.key, None)
        self._branch_of.pop(client.key, None)
        self._probe_of.pop(client.key, None)
        self.heap.forget(client)
        self._shrink("clients", self._clients)
        self._shrink("branch_of", self._branch_of)

    def _shrink(self, name: str, table: dict) -> None:
        """Give a table's memory back once the load that grew it has passed."""
        self._peaks[name] = compact(table, self._peaks.get(name, 0))

    # -- starting branches ------------------------------------------------------------------------
    def _forward_hops(
        self, forwarding: ResponseContext, targets: list[Hop], now: float
    ) -> list[Effect]:
        """Start a branch per hop (or the DNS lookup it needs first)."""
        if forwarding.cancel_requested:
            forwarding.add_failed(487)
            return self._maybe_complete(forwarding, now)
        effects: list[Effect] = []
        for request, target, preferred, binding in targets:
            if isinstance(target, SipUri):
                effects.append(
                    self._resolve(forwarding, Destination(request, preferred, [], binding), target)
                )
                continue
            destination = Destination(request, preferred, [target], binding)
            started = self._start_branch(forwarding, destination, now)
            if started is not None:
                effects += started
        if not forwarding.branches and not forwarding.pending:
            forwarding.add_failed(503, "Service Unavailable (no usable next hop)")
            return effects + self._maybe_complete(forwarding, now)
        return effects

    def _resolve(
        self, forwarding: ResponseContext, destination: Destination, uri: SipUri
    ) -> Resolve:
        token = self._next_token()
        self._resolving[token] = (forwarding, destination)
        forwarding.pending += 1
        return Resolve(token, uri)

    def _next_token(self) -> int:
        raise NotImplementedError

    def _start_branch(
        self, forwarding: ResponseContext, destination: Destination, now: float
    ) -> Optional[list[Effect]]:
        """A branch to the next usable address of C{destination} (blocklisted ones, except
        for a BYE, and those sbc has no socket for are skipped); None when none is left."""
        request = forwarding.request
        while destination.targets:
            target = destination.targets.pop(0)
            if self.blocklist.blocked(target, now) and request.method != "BYE":
                continue
            preferred = forwarding.send_socket or destination.preferred or forwarding.local
            socket = (
                forwarding.send_socket
                if forwarding.send_socket is not None
                and forwarding.send_socket.transport == target.transport
                else self.chooser.choose(target, preferred)
            )
            if socket is None:
                continue
            via_branch = branch_id(
                forwarding.loop_hash, self.rng.getrandbits(40), request.call_id, self.signer
            )
            out = prepare_copy(
                request,
                destination.request,
                socket,
                forwarding.local,
                via_branch,
                self.settings,
                self.signer,
                forwarding.rr_params,
                now,
            )
            client = ClientTransaction(out, target, socket, self.settings.timers, via_branch)
            branch = Branch(client, destination=destination)
            forwarding.branches.append(branch)
            self._branch_of[client.key] = (forwarding, branch)
            return self._add_client(client, now)
        return None

    def resolved(self, token: int, targets: list[Address], now: float) -> list[Effect]:
        """The addresses DNS gave for the L{Resolve} C{token}, in the order to try them."""
        stateless = self._resolving_ack.pop(token, None)  # type: ignore[attr-defined]
        if stateless is not None:
            return self._send_stateless(*stateless, targets)  # type: ignore[attr-defined]
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
        if forwarding.may_branch(now):
            started = self._start_branch(forwarding, destination, now)
        if started is not None:
            effects += started
        else:
            if forwarding.cancel_requested:
                forwarding.add_failed(487, destination=destination)
            elif targets:
                reason = "Service Unavailable (destination blocked)"
                forwarding.add_failed(503, reason, destination=destination)
            else:
                forwarding.add_failed(478, "Unresolvable destination", destination=destination)
            effects += self._maybe_complete(forwarding, now)
        return self._with_events(effects)

    def _with_events(self, effects: list[Effect]) -> list[Effect]:
        if self._events:
            effects += self._events
            self._events = []
        return effects

    def _failover(
        self, forwarding: ResponseContext, branch: Branch, now: float
    ) -> Optional[list[Effect]]:
        """A new branch to the next address of the failed branch's destination, unless
        failover is off or the response context may not branch any more."""
        destination = branch.destination
        if (
            destination is None
            or not destination.targets
            or not self.settings.use_dns_failover
            or not forwarding.may_branch(now)
        ):
            return None
        started = self._start_branch(forwarding, destination, now)
        if started is not None:
            failed = str(branch.client.peer if branch.client else "?")
            newest = forwarding.branches[-1].client
            self._events.append(
                FailedOver(forwarding.request.call_id, failed, str(newest.peer if newest else "?"))
            )
        return started

    def _block(
        self, target: Address, reason: int, now: float, seconds: Optional[float] = None
    ) -> None:
        if self.blocklist.add(target, reason, now, seconds):
            self._events.append(Blocklisted(str(target), reason))

    # -- CANCEL ---------------------------------------------------------------------------------
    def _cancel_branch(self, branch: Branch, now: float) -> list[Effect]:
        """CANCEL a branch once it has a provisional response (§9.1); until then, owe it.
        A branch we gave up on (our own 408 or 487) still gets its CANCEL: its UAS may be
        ringing."""
        if not branch.needs_cancel():
            return []
        client = branch.client
        assert client is not None
        if client.provisional == 0:
            branch.cancel_pending = True
            return []
        branch.cancelled = True
        branch.cancel_pending = False
        cancel = ClientTransaction(
            cancel_for(client.request), client.peer, client.local, self.settings.timers
        )
        return self._add_client(cancel, now)

    # -- responses --------------------------------------------------------------------------------
    def receive_response(self, response: Response, source: Address, now: float) -> list[Effect]:
        """Handle a response from a next hop."""
        key = client_key(response.top_via.branch or "", response.cseq.method)
        client = self._clients.get(key)
        if client is None:
            if self.keepalive is not None and self.keepalive.reply(response, source, now):
                return []  # replies to our keepalive pings are consumed, never routed
            late = self._late.get(key)
            if late is not None and 100 < response.status < 200:
                return self._cancel_late(key, late, now)
            if late is not None and 200 <= response.status < 300 and late.branch.client:
                # It answered after all: a 2xx goes upstream like any (§16.7 step 10),
                # through reply_route, and the context learns of it (no failure after it,
                # the rest cancelled).
                self._late_expired(late)
                response = self._reply_route(response, late.branch.client.request, source)
                effects = self._branch_response(late.forwarding, late.branch, response, now)
                return self._with_events(effects)
            return self._stray_response(response)
        if response.status > 100 and key not in self._probe_of:
            response = self._reply_route(response, client.request, source)
        effects = self._client_effects(client, client.receive_response(response, now), now)
        return self._with_events(effects)

    def _reply_route(self, response: Response, sent: Request, source: Address) -> Response:
        """The routing script's reply_route (if any) sees a response before it goes on."""
        reply_route = getattr(self.router, "reply_route", None)
        if reply_route is None:
            return response
        ctx = ReplyContext(self, response, sent, source)  # type: ignore[arg-type]
        try:
            reply_route(ctx)
        except ScriptExit:
            pass
        except Exception as error:
            self._events.append(ScriptFailed("reply_route", describe_error(error)))
            return response
        return ctx.response

    def _cancel_late(self, key: tuple, late: LateBranch, now: float) -> list[Effect]:
        """A provisional from a branch that timed out: it rings after all; CANCEL it."""
        self._late.pop(key, None)
        self.heap.forget(late)
        client = late.branch.client
        assert client is not None
        late.branch.cancelled = True
        cancel = ClientTransaction(
            cancel_for(client.request), client.peer, client.local, self.settings.timers
        )
        return self._add_client(cancel, now)

    def _late_expired(self, late: LateBranch) -> None:
        client = late.branch.client
        if client is not None:
            self._late.pop(client.key, None)
        self.heap.forget(late)

    def _stray_response(self, response: Response) -> list[Effect]:
        """A 2xx retransmission to an INVITE whose branch is gone (§16.7 step 10)."""
        return list(stray_2xx(response, self.media, self.chooser, self.signer))

    def _client_effects(self, client: ClientTransaction, effects: list, now: float) -> list[Effect]:
        out: list[Effect] = []
        found = self._branch_of.get(client.key)
        probe = self._probe_of.get(client.key)
        for effect in effects:
            if isinstance(effect, Send):
                out.append(effect)
            elif probe is not None:
                if isinstance(effect, ResponseReceived):
                    self.dialogs.probe_answered(probe[0], probe[1], effect.response.status)
            elif found is None:
                continue  # a CANCEL's own transaction: its outcome changes nothing
            elif isinstance(effect, ResponseReceived):
                out += self._branch_response(found[0], found[1], effect.response, now)
            elif isinstance(effect, TimedOut):
                out += self._branch_timeout(found[0], found[1], effect.timer, now)
        if client.terminated:
            self._drop_client(client)
        else:
            self.heap.schedule(client)
        return out

    def _relay(self, forwarding: ResponseContext, response: Response, now: float) -> list[Effect]:
        """Send C{response} upstream through the server transaction, if it still may."""
        server = forwarding.server
        out = upstream(forwarding.request, response)
        if (server.state, response_class(out.status)) not in server.table:
            return []
        if out.status >= 200:
            forwarding.final_sent = True
        if 200 <= out.status < 300 and self.keepalive is not None and forwarding.keepalive:
            self.keepalive.relayed_reply(forwarding.request, out, server.peer, server.local, now)
        return self._reply(server, out, now)

    def _branch_response(
        self,
        forwarding: ResponseContext,
        branch: Branch,
        response: Response,
        now: float,
        anchored: bool = False,
    ) -> list[Effect]:
        effects: list[Effect] = []
        invite = forwarding.request
        if response.status == 100:
            return effects
        if (
            not anchored
            and response.status < 300
            and invite.method in ("INVITE", "UPDATE")
            and invite.call_id in self.media
            and has_sdp(response)
        ):
            return [self._anchor_response(forwarding, branch, response)]
        if branch.answered and response.status >= 300:
            return effects
        if branch.final is not None and response.status >= 300:
            return effects  # e.g. the 487 after we cancelled a timed-out branch
        if response.status < 200 and (branch.final is not None or forwarding.final_sent):
            # A branch we gave up on, or one ringing after the final response went
            # upstream: it only gets its CANCEL (no early dialog for a finished INVITE).
            return self._cancel_branch(branch, now)
        retransmitted = 200 <= response.status < 300 and response.to.tag in branch.answered_tags
        if invite.method == "INVITE" and not retransmitted:
            # A 2xx retransmission (RFC 6026 Accepted) leaves the dialogs alone: after a
            # BYE it must not bring its dialog back until default_timeout.
            legs = None
            if 200 <= response.status < 300 and branch.client is not None:
                legs = [
                    Leg(contact_of(invite), forwarding.server.peer, forwarding.server.local),
                    Leg(contact_of(response), branch.client.peer, branch.client.local),
                ]
            caller_target = forwarding.caller_target()  # as relayed, NAT-fixed
            events = self.dialogs.invite_response(invite, response, now, legs, caller_target)
            if invite.to.tag is not None and 200 <= response.status < 300:
                dialog = self.dialogs.find(invite.call_id, invite.from_.tag, invite.to.tag)
                if dialog is not None:  # a re-INVITE's 2xx refreshes the answerer's target
                    dialog.refresh_target(response.to.tag, contact_of(response))
            effects += self._keepalive_dialogs(events, now, forwarding, branch)
        if response.status < 200:
            if branch.cancel_pending:
                effects += self._cancel_branch(branch, now)
            if not forwarding.final_sent:
                effects += self._relay(forwarding, response, now)
            return effects
        if response.status < 300:
            branch.final, branch.faked = response, False
            if not retransmitted:
                branch.answered_tags += (response.to.tag,)
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
                seconds = retry_after_timeout(retry_after(response), self.settings.blocklist)
                if seconds is not None:
                    self._block(branch.client.peer, REPLY_503, now, seconds)
            started = self._failover(forwarding, branch, now)
            if started is not None:
                return effects + started
        if response.status >= 600:
            # §16.7 step 5: not forwarded at once; the other branches are cancelled and
            # no new branch starts; the 6xx wins when they are done.
            forwarding.ended_forking = True
            if invite.method == "INVITE":
                for other in forwarding.branches:
                    if other is not branch:
                        effects += self._cancel_branch(other, now)
        return effects + self._maybe_complete(forwarding, now)

    def _anchor_response(
        self, forwarding: ResponseContext, branch: Branch, response: Response
    ) -> Any:
        """An answer in a 18x/2xx (or the late offer of an INVITE without SDP) goes through
        the relay; the response goes on when the relay has rewritten it."""
        request = forwarding.request
        media = self.media.calls[request.call_id]
        if has_sdp(request):
            op, offerer, other = "answer", request.from_.tag, response.to.tag
        else:
            op, offerer, other = "offer", response.to.tag, request.from_.tag
        assert branch.client is not None
        source = branch.client.peer

        def anchored(body: Optional[bytes], now: float) -> list[Effect]:
            rewritten = response
            if body is not None:
                rewritten = response.with_body(body)
                if response.status >= 200:
                    media.answers[(response.to.tag, response.cseq.number)] = body
            return self._branch_response(forwarding, branch, rewritten, now, anchored=True)

        return self.media.anchor(op, response, offerer, other, source, anchored)

    def _relay_2xx(
        self, forwarding: ResponseContext, response: Response, now: float
    ) -> list[Effect]:
        server = forwarding.server
        out = upstream(forwarding.request, response)
        forwarding.final_sent = True
        if (server.state, "2xx") not in server.table:
            if not server.invite:
                return []  # a forked non-INVITE answers upstream once
            # A later 2xx of another INVITE branch, after the transaction moved on: relay
            # it statelessly to the same peer (§16.7 step 10).
            return [Send(out, server.peer, server.local)]
        return self._reply(server, out, now)

    def _branch_timeout(
        self, forwarding: ResponseContext, branch: Branch, timer: str, now: float
    ) -> list[Effect]:
        effects: list[Effect] = []
        if branch.final is not None:
            return effects
        if timer == "C":
            effects += self._cancel_branch(branch, now)
        request = forwarding.request
        forwarding.fail_branch(branch, 408)
        client = branch.client
        if timer == "B" and client is not None and client.provisional == 0:
            late = LateBranch(forwarding, branch, now + 64 * self.settings.timers.t1)
            self._late[client.key] = late
            self.heap.schedule(late)
        if timer != "C" and client is not None and client.provisional == 0:
            # No reply at all: blocklist (for blst_methods_add) unless the next hop is a
            # registered contact, then fail over.
            destination = branch.destination
            from_binding = destination is not None and destination.binding
            blocklists = method_bits(request.method) & self.settings.blocklist.blst_methods_add
            if blocklists and not from_binding:
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
            found = self._branch_of.get(key)
            client.abandon(now)
            self._drop_client(client)
            if found is None:
                continue
            forwarding, branch = found
            if branch.final is None:
                if peer.transport in WEBSOCKET:
                    # RFC 5626 §5.3, RFC 7118: a WebSocket flow that is gone cannot be
                    # opened again by sbc.
                    forwarding.fail_branch(branch, 430, "Flow Failed")
                else:
                    forwarding.fail_branch(
                        branch, 503, "Service Unavailable (next hop unreachable)"
                    )
                if block:
                    self._block(peer, SEND_FAILED, now)
                started = self._failover(forwarding, branch, now)
                effects += started if started is not None else self._maybe_complete(forwarding, now)
        return self._with_events(effects)

    def _lifetime_expired(self, forwarding: ResponseContext, now: float) -> list[Effect]:
        forwarding.lifetime_end = None
        effects: list[Effect] = []
        if forwarding.pending:  # DNS or the relay did not answer in time: 408 for those
            forwarding.add_failed(408)
        for branch in forwarding.branches:
            if branch.final is None:
                effects += self._cancel_branch(branch, now)
                forwarding.fail_branch(branch, 408)
        return effects + self._maybe_complete(forwarding, now)

    def _maybe_complete(self, forwarding: ResponseContext, now: float) -> list[Effect]:
        """When every branch has a final response and none was a 2xx, send the best one
        (or let the failure route decide)."""
        if not forwarding.ready():
            return []
        winner, best = forwarding.choose(self.settings.remap_503_500)
        invite = forwarding.request
        effects: list[Effect] = []
        failure_route = forwarding.failure_route
        if failure_route is not None:  # also for CANCELled requests and 6xx; once
            forwarding.failure_route = None
            ctx = FailureContext(self, forwarding, winner.final, now)  # type: ignore[arg-type]
            try:
                failure_route(ctx)
            except ScriptExit:
                pass
            except Exception as error:
                self._events.append(ScriptFailed("failure_route", describe_error(error)))
            if ctx.done:
                return ctx.effects
        if invite.method == "INVITE" and invite.to.tag is None:
            effects += self.media.release(invite.call_id)
        if invite.method == "INVITE":
            # The early dialogs of a failed INVITE end with it (also when the failure was
            # ours: a timeout, a CANCEL whose 487 never came).
            effects += self._keepalive_dialogs(self.dialogs.invite_timed_out(invite), now)
        if not winner.faked:
            return effects + self._relay(forwarding, best, now)
        forwarding.final_sent = True
        return effects + self._reply(forwarding.server, best, now)
