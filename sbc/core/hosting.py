# -*- test-case-name: tests.core.test_routescript -*-
"""
What the routing script's functions do (the proxy's side of L{sbc.core.scripthost}):
who may use sbc (trusted peers, digest authentication, the relay verdict's answers),
local answers, the registrar's save and lookup, and t_relay: a response context per
relayed request, the media relay seeing the offer first when the call is anchored.

L{ScriptHosting} sits between L{sbc.core.branching} (what happens after a relay) and
L{sbc.core.proxy.Proxy} (the intake and the timers), each a job of its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional, Union

from sbc.core.address import TRANSPORTS, Address, parse_address
from sbc.core.auth import DigestAuth
from sbc.core.branching import BranchHandling
from sbc.core.effects import Effect, RelayRefused
from sbc.core.errors import ParseError
from sbc.core.forwardcopy import loop_hash, path_entry
from sbc.core.forwarding import Destination, ResponseContext
from sbc.core.identity import LocalIdentity
from sbc.core.location import binding_set, location_hops, path_target, registration_event
from sbc.core.mediacalls import has_sdp
from sbc.core.message import Request
from sbc.core.natfix import source_uri
from sbc.core.registrar import Registrar, aor_of
from sbc.core.relaypolicy import Verdict, signed_by_us
from sbc.core.reply import make_response
from sbc.core.routescript import FailureContext, RequestContext
from sbc.core.routing import Hop, uri_target
from sbc.core.uri import SipUri, escape_param, is_ip_literal, parse_uri

__all__ = ["ScriptHosting", "ALLOW", "SUPPORTED", "ACCEPT"]

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


class ScriptHosting(BranchHandling):
    """The routing script's functions, as the proxy carries them out."""

    # The proxy provides these as well.
    identity: LocalIdentity
    registrar: Registrar
    auth: Optional[DigestAuth]
    resolves_names: bool
    anchors_media: bool

    def _server_done(self, server: Any) -> None:
        raise NotImplementedError

    def is_trusted(self, source: Address) -> bool:
        """A [permissions] trusted peer, or one of our own sockets (a spiral)."""
        return self.settings.trusted.allows(source) or source in self.sockets

    def needs_auth(self, request: Request, source: Address) -> bool:
        """With [auth] on, must this request authenticate before sbc saves or relays it?
        REGISTERs for our domains (unless a core registrar authenticates them) and initial
        requests whose From names one of our domains, unless a trusted peer sent them."""
        if self.auth is None or request.to.tag is not None or self.is_trusted(source):
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
        """403 Relaying Forbidden or 404 Not Here, with an event the engine counts and
        logs (rate-limited)."""
        status, reason = (
            (403, "Relaying Forbidden") if verdict is Verdict.FORBIDDEN else (404, "Not Here")
        )
        self._events.append(
            RelayRefused(
                status,
                request.method,
                str(request.uri),
                str(request.from_.uri),
                str(source),
                request.call_id,
            )
        )
        return status, reason

    def routed_by_us(
        self, request: Request, consumed: tuple, now: float, routed: Optional[Request] = None
    ) -> bool:
        """Did loose_route consume a Record-Route entry we signed for this dialog (and,
        when sbc knows the dialog, does the request go to the other side's target)?"""
        tags = (request.from_.tag, request.to.tag)
        max_age = self.settings.dialog.default_timeout
        if not signed_by_us(consumed, request.call_id, tags, self.signer, now, max_age):
            return False
        dialog = self.dialogs.find(request.call_id, request.from_.tag, request.to.tag)
        if dialog is None:
            # A dialog sbc does not know (set up before a restart, or not an INVITE's):
            # the signature vouches, unless the Call-ID has live dialogs with other tags.
            return not self.dialogs.has_call(request.call_id)
        return _to_other_side(dialog, routed or request)

    def known_dialog(self, request: Request, routed: Optional[Request] = None) -> bool:
        """Does the request belong to a dialog sbc set up (Call-ID and both tags), from one
        of its sides and for the other side's target (RFC 3261 §12.2.1.1)?"""
        dialog = self.dialogs.find(request.call_id, request.from_.tag, request.to.tag)
        return dialog is not None and _to_other_side(dialog, routed or request)

    def own_socket(self, text: str) -> Optional[Address]:
        """force_send_socket(): one of our sockets named C{proto:ip:port} (None: not ours)."""
        try:
            address = parse_address(text)
        except ValueError:
            return None
        return address if address in self.sockets else None

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
        ctx.server.abandon(ctx.now)
        self._server_done(ctx.server)

    def save_location(self, ctx: RequestContext) -> int:
        """save("location"): the built-in registrar stores the bindings and answers."""
        request, source, local, now = ctx.request, ctx._source, ctx.local, ctx.now
        keep = ctx.natted_register
        before = binding_set(self.registrar, aor_of(request.to.uri) or "?", now)
        result = self.registrar.register(
            request, source, local, now, received=source if keep else None
        )
        if result.status == 200:
            event = registration_event(self.registrar, request, source, keep, now, before)
            if event is not None:
                self._events.append(event)
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
        """lookup("location"): a hop per live binding (None: never registered)."""
        return location_hops(self.registrar, ctx.request, ctx.now, self.hop_target)

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

    def path_target(self, consumed: tuple) -> Optional[Address]:
        """The NAT address our own signed Path entry carried, if any."""
        return path_target(consumed, self.signer)

    def relay(self, ctx: RequestContext) -> bool:
        """t_relay: forward statefully to the context's hops; False when none is usable
        (nothing is sent or answered then)."""
        hops = ctx.hops()
        for hop in hops:
            if hop[1] is None:
                return False
        if ctx.original.to.tag is not None:
            dialog = self.dialogs.touch(ctx.original, ctx.now)  # in dialog, relayed by us
            if dialog is not None:
                self.heap.schedule(dialog)
                contacts = ctx.request.contacts if ctx.original.method in REFRESHES else ()
                if contacts:  # a target refresh, as relayed (NAT-fixed)
                    dialog.refresh_target(ctx.original.from_.tag, str(contacts[0].uri))
        if ctx.original.method == "BYE":
            # Only a BYE sbc relays ends the dialog and its media (a refused one must not).
            ctx.effects += self._keepalive_dialogs(self.dialogs.bye(ctx.original), ctx.now)
            ctx.effects += self.media.release(ctx.original.call_id)
        if ctx.path is not None:
            hops = self._with_path(ctx, hops)  # type: ignore[arg-type]
            if not hops:
                ctx.effects += self.reply_to(ctx, 503, "No socket for the registrar's transport")
                ctx.done = True
                return True
        ctx.effects += self._forward(ctx, hops)  # type: ignore[arg-type]
        return True

    def _with_path(self, ctx: RequestContext, hops: list[Hop]) -> list[Hop]:
        """Edge mode (RFC 3327): a Path naming the socket the REGISTER leaves from, with the
        NAT address as C{;received=} when asked."""
        out: list[Hop] = []
        received = escape_param(source_uri(ctx._source)) if ctx.path else None
        for request, target, preferred, binding in hops:
            probe = (
                target if isinstance(target, Address) else Address(target.transport, "0.0.0.0", 0)
            )
            socket = ctx.send_socket or self.chooser.choose(probe, preferred or ctx.local)
            if socket is None:
                continue
            entry = path_entry(socket, self.settings.advertise, received, self.signer)
            with_path = request.with_header_first("Path", entry)
            assert isinstance(with_path, Request)
            out.append(Hop(with_path, target, socket, binding))
        return out

    def _forward(self, ctx: RequestContext, hops: list[Hop]) -> list[Effect]:
        """A response context for the request; the media relay sees the offer first when
        the call is anchored, then the branches start."""
        original, now = ctx.original, ctx.now
        lifetime = (
            self.settings.max_inv_lifetime
            if original.method == "INVITE"
            else self.settings.max_noninv_lifetime
        )
        forwarding = ResponseContext(
            ctx.server,
            now + lifetime,
            ctx.local,
            loop_hash(original, original.vias[0]),
            ctx.natted,
            ctx.record_route_params,
        )
        forwarding.keepalive = ctx.keepalive
        forwarding.failure_route = ctx.failure_route
        forwarding.send_socket = ctx.send_socket
        forwarding.relayed = hops[0].request  # a failure route starts from what was relayed
        self._contexts[ctx.server.key] = forwarding
        self.heap.schedule(forwarding)
        requests = [hop.request for hop in hops]
        anchor = ctx.media_requested and self.anchors_media
        policy, ranges = self.settings.rtp_policy, self.settings.nat.ranges
        if anchor and self.media.decide(original, requests, ctx.natted, policy, ranges):
            if has_sdp(requests[0]):
                # The offer goes through the media relay before any branch starts.
                request = requests[0]
                forwarding.pending += 1

                def anchored(body: Optional[bytes], now: float) -> list[Effect]:
                    forwarding.pending -= 1
                    if forwarding.final_sent or forwarding.terminated:
                        return []
                    out = hops
                    if body is not None:
                        out = [hop._replace(request=hop.request.with_body(body)) for hop in hops]
                    forwarding.relayed = out[0].request
                    return self._forward_hops(forwarding, out, now)

                offer = self.media.anchor(
                    "offer", request, request.from_.tag, request.to.tag, ctx._source, anchored
                )
                # Where the offer goes first: its transport tells the media relay whether
                # that side is a WebRTC client (RFC 7118).
                first = hops[0].target
                return [replace(offer, towards=first) if isinstance(first, Address) else offer]
        return self._forward_hops(forwarding, hops, now)

    def relay_again(self, ctx: FailureContext, uri: SipUri) -> bool:
        """t_relay in a failure route: one more branch (serial forking), unless the
        request was cancelled, answered, ended by a 6xx or out of lifetime."""
        forwarding = ctx._forwarding
        if not forwarding.may_branch(ctx.now):
            return False
        target = self.hop_target(uri)
        if target is None:
            return False
        if isinstance(target, SipUri):
            ctx.effects.append(
                self._resolve(forwarding, Destination(ctx.request, None, []), target)
            )
            return True
        destination = Destination(ctx.request, None, [target])
        started = self._start_branch(forwarding, destination, ctx.now)
        if started is None:
            return False
        ctx.effects += started
        return True

    def reply_failure(self, ctx: FailureContext, code: int, reason: Optional[str]) -> list[Effect]:
        """t_reply in a failure route: this answer upstream instead of the best reply."""
        forwarding = ctx._forwarding
        forwarding.final_sent = True
        request = forwarding.request
        effects: list[Effect] = []
        if request.method == "INVITE" and request.to.tag is None:
            effects += self.media.release(request.call_id)
            # Its early dialogs end with it (the script answered instead of the best reply).
            effects += self._keepalive_dialogs(self.dialogs.invite_timed_out(request), ctx.now)
        return effects + self._reply(
            forwarding.server, make_response(request, code, reason), ctx.now
        )

    # -- media -----------------------------------------------------------------------------
    def anchored(self, token: int, body: Optional[bytes], now: float) -> list[Effect]:
        """The relay's rewritten SDP for the L{Anchor} C{token} (None: anchoring failed;
        the message goes on with its own SDP)."""
        then = self.media.anchored(token)
        if then is None:
            return []
        return self._with_events(then(body, now))

    def media_ended(self, call_id: str) -> None:
        """The relay ended the call's media (media_timeout): forget it."""
        self.media.ended(call_id)

    def release_media(self, call_id: str) -> list[Effect]:
        """End the media session of C{call_id}, if sbc anchors that call."""
        return list(self.media.release(call_id))


#: In-dialog requests that refresh their sender's target (RFC 3261 §12.2, RFC 3311).
REFRESHES = ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER")


def _to_other_side(dialog: Any, request: Request) -> bool:
    """Does C{request} (as routed) come from one side of C{dialog} and go to the other
    side's target (same user, host and port; parameters such as C{;alias=} may differ)?"""
    ours, expected = dialog.other_target(request)
    if not ours:
        return False
    if expected is None:
        return True
    try:
        target = parse_uri(expected)
    except ParseError:
        return False
    uri = request.uri
    if not isinstance(target, SipUri) or not isinstance(uri, SipUri):
        return False
    return (
        uri.user == target.user
        and uri.host_bare == target.host_bare
        and (uri.port or 5060) == (target.port or 5060)
    )
