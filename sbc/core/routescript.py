# -*- test-case-name: tests.core.test_routescript -*-
"""
The routing-script API (KEMI-style): what a routing script sees of a message and may do
with it, with Kamailio's function and pseudo-variable names.

A script is a Python module with C{request_route(msg)} and, optionally,
C{reply_route(msg)} and C{failure_route(msg)}.  The proxy calls C{request_route} for every
new request that passed the transaction layer's own checks (retransmissions, CANCEL,
Max-Forwards, loops, authentication), C{reply_route} for every response from a next hop
before it is relayed, and a C{failure_route} armed with L{RequestContext.t_on_failure}
when every branch of a request failed.  sbc's own policy is such a script
(L{sbc.core.routes_default}, shipped as C{etc/routes_default.py}).

Return conventions follow Kamailio's: plain functions return True/False; those whose
documented results are three-way return a L{Result}, an C{int} that is true when
positive (C{if msg.loose_route():} reads as in Kamailio, C{== -3} still tells the cases
apart).  Everything here is pure: the contexts collect effects that the proxy returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, Union

from sbc.core.address import Address
from sbc.core.message import Header, Request, Response
from sbc.core.nat import stamp_via
from sbc.core.natfix import AliasError, handle_ruri_alias, source_uri
from sbc.core.routing import Hop, RouteOutcome, loose_route, with_routes
from sbc.core.scriptaccess import AccessFunctions, Result
from sbc.core.scriptmessage import MessageContext, ScriptExit, script_uri
from sbc.core.uri import SipUri, parse_uri

if TYPE_CHECKING:  # pragma: no cover
    from sbc.core.forwarding import ResponseContext
    from sbc.core.scripthost import ScriptHost
    from sbc.core.transaction import ServerTransaction

__all__ = [
    "Result",
    "RequestContext",
    "ReplyContext",
    "FailureContext",
    "ScriptExit",
]


class RequestContext(MessageContext, AccessFunctions):
    """
    C{msg} in C{request_route}: the request, where it came from, and the decisions the
    script makes about it.  L{t_relay} and L{sl_send_reply} end its handling.  Who may
    use sbc (permissions, authentication, the relay verdict) is in L{AccessFunctions}.
    """

    message: Request  # a request context's message is always a request

    def __init__(
        self,
        proxy: ScriptHost,
        request: Request,
        server: ServerTransaction,
        source: Address,
        local: Address,
        now: float,
    ) -> None:
        super().__init__(proxy, request, source)
        self.original = request
        self.server = server
        self.local = local
        self.now = now
        self.effects: list[Any] = []
        #: replied, relayed or dropped
        self.done = False
        self._du: Optional[SipUri] = None
        self._du_address: Optional[Address] = None
        self._branches: list[Hop] = []
        self._lookup_base: Optional[Request] = None
        #: After lookup(): the user has (or had) bindings; 480 rather than 404.
        self.known_user = False
        self._consumed: tuple = ()
        self._record_route = False
        self._rr_params = ""
        self._natted_register = False
        #: The caller is behind NAT (the script says so; rtp_policy "nated" reads it).
        self.natted = False
        #: rtp_offer() was called: anchor when [rtp] rtp_policy says so.
        self.media_requested = False
        self._path: Optional[bool] = None
        self.failure_route: Optional[Callable[[FailureContext], None]] = None
        self.keepalive = False
        self.authenticated: Optional[str] = None
        #: The socket every branch leaves from (force_send_socket, or the one a double
        #: Record-Route names); None: chosen per destination.
        self.send_socket: Optional[Address] = None

    @property
    def request(self) -> Request:
        message = self.message
        assert isinstance(message, Request)
        return message

    # -- pseudo-variables ------------------------------------------------------------------
    @property
    def method(self) -> str:
        """$rm."""
        return self.message.method

    def is_method(self, *names: str) -> bool:
        """is_method("INVITE", "SUBSCRIBE"): the method is one of C{names}."""
        method = self.message.method
        if method in names:
            return True
        for name in names:  # a loop, not any(): a script asks this several times a request
            if name.upper() == method:
                return True
        return False

    @property
    def user(self) -> Optional[str]:
        """$rU: the Request-URI's user part."""
        uri = self.message.uri
        return uri.user if isinstance(uri, SipUri) else None

    @property
    def is_sip_uri(self) -> bool:
        """The Request-URI is a sip: or sips: URI."""
        return isinstance(self.message.uri, SipUri)

    @property
    def registrar_uri(self) -> Optional[SipUri]:
        """[registrar] registrar_uri (None: the built-in registrar)."""
        return self._proxy.settings.registrar_uri

    @property
    def outbound_proxy(self) -> Optional[SipUri]:
        """[core] outbound_proxy."""
        return self._proxy.settings.outbound_proxy

    @property
    def first_hop(self) -> bool:
        """The request came straight from its UA (a single Via)."""
        return len(self.message.vias) == 1

    @property
    def initial(self) -> bool:
        """No To tag: the request starts a dialog or is outside one."""
        return self.message.to.tag is None

    @property
    def ru(self) -> str:
        """$ru: the Request-URI (writable)."""
        return str(self.request.uri)

    @ru.setter
    def ru(self, value: Union[str, SipUri]) -> None:
        new = self.request.with_uri(script_uri(value))
        self.message = new

    @property
    def du(self) -> Optional[str]:
        """$du: the destination URI (writable; None: route by the Request-URI)."""
        if self._du_address is not None:
            return source_uri(self._du_address)
        return str(self._du) if self._du is not None else None

    @du.setter
    def du(self, value: Union[str, SipUri, None]) -> None:
        self._du_address = None
        self._du = None if value is None or value == "" else script_uri(value)

    def is_myself(self, uri: Union[str, SipUri, None] = None) -> bool:
        """Does C{uri} (default: the Request-URI) name sbc?"""
        target = (
            self.message.uri if uri is None else parse_uri(uri) if isinstance(uri, str) else uri
        )
        return isinstance(target, SipUri) and self._proxy.identity.is_myself(target)

    def keepalive_socket(self, uri: Union[str, SipUri, None] = None) -> Optional[str]:
        """$keepalive.socket(uri): our socket the keepalive entry of C{uri} (default: the
        source) is pinged from."""
        table = self._proxy.keepalive
        if table is None:
            return None
        address = self._source
        if uri is not None:
            parsed = script_uri(uri)
            address = Address(parsed.transport, parsed.host, parsed.port or 5060)
        entry = table.endpoints.get(address)
        return str(entry.local) if entry is not None and entry.local else None

    # -- NAT ------------------------------------------------------------------------------
    def force_rport(self) -> bool:
        """Reply to the source port even without C{;rport} (RFC 3581 for the deaf)."""
        request = stamp_via(self.request, self.si, self.sp, force_rport=True)
        self.message = request
        self.server.peer = self._proxy.reply_peer(request, self._source)
        return True

    def fix_nated_register(self) -> bool:
        """Keep the source address with the bindings L{save} stores (the NAT binding)."""
        self._natted_register = True
        return True

    def handle_ruri_alias(self) -> Result:
        """The alias in the Request-URI becomes $du: 1 done, 2 no alias, -1 bad alias."""
        try:
            request, target = handle_ruri_alias(self.request)
        except AliasError:
            return Result(-1)
        if target is None:
            return Result(2)
        self.message = request
        self._du, self._du_address = None, target
        return Result(1)

    def nat_keepalive(self) -> bool:
        """nat_traversal's nat_keepalive(): keep the sender alive while the registration,
        subscription or dialog this request starts lives."""
        if self._proxy.keepalive is None or not self.is_method("REGISTER", "SUBSCRIBE", "INVITE"):
            return False
        self.keepalive = True
        return True

    # -- Record-Route and Route (Kamailio rr) ------------------------------------------------
    def record_route(self, params: str = "") -> bool:
        """Stay in the path: add our Record-Route (double when the sockets differ)."""
        self._record_route = True
        if params:
            self.add_rr_param(params)
        return True

    def add_rr_param(self, param: str) -> bool:
        """Add C{;param} to the Record-Route this request gets (if it gets one)."""
        self._rr_params += param if param.startswith(";") else ";" + param
        return True

    def loose_route(self) -> Result:
        """Kamailio's loose_route(): 1 the next hop came from Route (now $du, or the
        Request-URI), -1 no Route, -3 a preloaded Route to us was consumed.  Inside a
        dialog, only a Record-Route entry sbc signed for it routes (or a trusted peer's
        request, or an open relay): any other Route gives -2 and the request is left as
        it was, so that a Route copied from elsewhere does not make sbc relay."""
        routed = loose_route(self.request, self._proxy.identity)
        if routed.outcome is RouteOutcome.NEXT_HOP and self.has_totag():
            signed = self._proxy.routed_by_us(
                self.original, routed.consumed, self.now, routed.request
            )
            if not (signed or self.allow_source_address() or self.allow_relay):
                return Result(-2)
            self._signed = (routed.request, signed)  # the relay verdict asks again
        self.message = routed.request
        self._consumed = routed.consumed
        if len(routed.consumed) >= 2:
            # Our double Record-Route: the second entry names the socket towards the
            # next hop (Kamailio rr sets the send socket from it).
            uri = routed.consumed[1].uri
            if isinstance(uri, SipUri):
                transport = uri.transport if uri.transport in ("udp", "tcp", "tls") else "udp"
                port = uri.port or (5061 if transport == "tls" else 5060)
                socket = self._proxy.own_socket(f"{transport}:{uri.host}:{port}")
                if socket is not None:
                    self.send_socket = socket
        if routed.next_hop is not None:
            self.du = routed.next_hop
        return Result(int(routed.outcome))

    def force_send_socket(self, socket: str) -> bool:
        """Kamailio's force_send_socket(proto:ip:port): every branch leaves from this one
        of our sockets (False, and no change, when it is not one of ours)."""
        address = self._proxy.own_socket(socket)
        if address is None:
            return False
        self.send_socket = address
        return True

    def check_route_param(self, regex: str) -> bool:
        """Does a Route entry loose_route consumed carry parameters matching C{regex}?"""
        pattern = re.compile(regex)
        for entry in self._consumed:
            uri = entry.uri
            if not isinstance(uri, SipUri):
                continue
            text = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in uri.params)
            if pattern.search(text):
                return True
        return False

    def is_direction(self, direction: str) -> bool:
        """C{downstream} when the From tag is the one our Record-Route recorded."""
        for entry in self._consumed:
            uri = entry.uri
            ftag = uri.param("ftag") if isinstance(uri, SipUri) else None
            if ftag is not None:
                downstream = ftag == self.request.from_.tag
                return downstream if direction == "downstream" else not downstream
        return direction == "downstream"

    def path_received(self) -> bool:
        """A request along our own Path: $du becomes the NAT address the Path carried."""
        target = self._proxy.path_target(self._consumed)
        if target is None:
            return False
        self._du, self._du_address = None, target
        return True

    def add_path(self, received: bool = False) -> bool:
        """Add a Path naming sbc (RFC 3327) when the REGISTER is relayed, with the source
        as C{;received=} when C{received}."""
        self._path = received
        return True

    # -- location (Kamailio registrar) ----------------------------------------------------
    def save(self, table: str = "location") -> Result:
        """Store the REGISTER's bindings and answer it (200, 423, 400, ...).  With [auth]
        on, a REGISTER the script did not authenticate is challenged instead."""
        if self.challenge_unauthenticated():
            return Result(-1)
        status = self._proxy.save_location(self)
        self.done = True
        return Result(1 if status == 200 else -1)

    def lookup(self, table: str = "location") -> Result:
        """The user's live contacts become the branches: 1 found, -1 no contact found
        (L{known_user} tells a user whose bindings expired from one never registered)."""
        branches = self._proxy.lookup_location(self)
        self.known_user = branches is not None
        if not branches:
            return Result(-1)
        self._branches = branches
        self._lookup_base = self.request
        return Result(1)

    # -- media (Kamailio rtpengine) --------------------------------------------------------
    def rtp_offer(self) -> bool:
        """Anchor this call's media (Kamailio's rtpengine_offer) when [rtp] rtp_policy says so
        (C{always}; C{nated}: the caller is L{natted} or a callee has a private contact):
        the SDP of this request and of every later offer and answer in the call goes
        through the relay, and the session ends with the call."""
        self.media_requested = True
        return self._proxy.anchors_media and self._proxy.settings.rtp_policy != "never"

    def rtp_answer(self) -> bool:
        """Answers follow automatically once L{rtp_offer} anchored the call."""
        return self.original.call_id in self._proxy.media_calls

    def rtp_delete(self) -> bool:
        """End the call's media session now."""
        effects = self._proxy.release_media(self.original.call_id)
        self.effects += effects
        return bool(effects)

    # -- answers and forwarding -------------------------------------------------------------
    def sl_send_reply(self, code: Union[int, str], reason: Optional[str] = None) -> bool:
        """Answer the request (through its transaction)."""
        self._reply(int(code), reason)
        return True

    def send_options_reply(self) -> bool:
        """200 to an OPTIONS for sbc itself, with Allow, Supported and Accept."""
        self.effects += self._proxy.options_reply(self)
        self.done = True
        return True

    def _reply(self, code: int, reason: Optional[str] = None, headers=()) -> None:  # type: ignore[no-untyped-def]
        self.effects += self._proxy.reply_to(self, code, reason, headers)
        self.done = True

    def t_on_failure(self, route: Callable[[FailureContext], None]) -> bool:
        """Run C{route(msg)} when every branch of this request failed."""
        self.failure_route = route
        return True

    def t_relay(self) -> bool:
        """Forward statefully: to the branches L{lookup} made, else to $du, else to the
        Request-URI.  False (nothing sent, nothing answered) when there is no usable
        destination.  With [auth] on, an initial request from one of our users that the
        script did not authenticate is challenged instead (True: answered)."""
        if self.challenge_unauthenticated():
            return True
        started = self._proxy.relay(self)
        if started:
            self.done = True
        return started

    def drop(self) -> None:
        """Answer nothing and forget the request (Kamailio's drop)."""
        self._proxy.forget(self)
        self.done = True

    def exit(self) -> None:
        """Stop the route here."""
        raise ScriptExit()

    # -- for the proxy -----------------------------------------------------------------------
    def hops(self) -> list[Hop]:
        """Where t_relay sends: the lookup branches, or one hop to $du / the R-URI (an
        address, a URI needing DNS, or None when unusable)."""
        if self._branches:
            if self.request is self._lookup_base:  # nothing changed since lookup()
                return self._branches
            return [hop._replace(request=self._with_changes(hop.request)) for hop in self._branches]
        if self._du_address is not None:
            return [Hop(self.request, self._du_address, None)]
        uri = self._du if self._du is not None else self.request.uri
        target = self._proxy.hop_target(uri) if isinstance(uri, SipUri) else None
        return [Hop(self.request, target, None)]  # type: ignore[arg-type]

    def _with_changes(self, branch: Request) -> Request:
        """A lookup branch keeps the script's later header and body changes."""
        request = self.request
        out = Request(branch.method, branch.uri, [Header(h.name, h.value) for h in request.headers])
        out.body = request.body
        routes = branch.routes
        return with_routes(out, list(routes)) if routes else out

    @property
    def record_route_params(self) -> Optional[str]:
        """The Record-Route parameters (None: no Record-Route)."""
        return self._rr_params if self._record_route else None

    @property
    def path(self) -> Optional[bool]:
        return self._path

    @property
    def natted_register(self) -> bool:
        return self._natted_register


class ReplyContext(MessageContext):
    """C{msg} in C{reply_route}: a response from a next hop, before it is relayed."""

    def __init__(self, proxy: ScriptHost, response: Response, sent: Request, source: Address):
        super().__init__(proxy, response, source)
        self.sent = sent

    @property
    def response(self) -> Response:
        message = self.message
        assert isinstance(message, Response)
        return message

    @property
    def status(self) -> int:
        """$rs."""
        return self.response.status

    @property
    def method(self) -> str:
        """The method of the request this answers."""
        return self.sent.method

    @property
    def from_ua(self) -> bool:
        """No proxy beyond us added Record-Route entries: the sender is the UA itself."""
        return len(self.response.record_routes) <= len(self.sent.record_routes)


class FailureContext:
    """
    C{msg} in a failure route: every branch of a request failed; the script may try new
    destinations (serial forking) or answer; otherwise the best reply goes upstream.
    """

    def __init__(self, proxy: ScriptHost, forwarding: ResponseContext, best: Response, now: float):
        self._proxy = proxy
        self._forwarding = forwarding
        self.best = best
        self.now = now
        self.effects: list[Any] = []
        self.done = False
        self._du: Optional[SipUri] = None
        self.request = forwarding.relayed or forwarding.request

    @property
    def status(self) -> int:
        """The status of the best reply so far."""
        return self.best.status

    def t_check_status(self, regex: str) -> bool:
        """Does the status of the best reply match C{regex} (unanchored, as Kamailio's)?"""
        return re.search(regex, str(self.best.status)) is not None

    def t_is_canceled(self) -> bool:
        """Was the request CANCELled?"""
        return self._forwarding.cancel_requested

    def t_on_failure(self, route: Callable[[FailureContext], None]) -> bool:
        """Arm a failure route again for the branches this route adds."""
        self._forwarding.failure_route = route
        return True

    def t_branch_timeout(self) -> bool:
        """Did a branch end by timeout (a local 408)?"""
        return self._forwarding.timed_out()

    @property
    def ru(self) -> str:
        return str(self.request.uri)

    @ru.setter
    def ru(self, value: Union[str, SipUri]) -> None:
        self.request = self.request.with_uri(script_uri(value))

    @property
    def du(self) -> Optional[str]:
        return str(self._du) if self._du is not None else None

    @du.setter
    def du(self, value: Union[str, SipUri, None]) -> None:
        self._du = None if value is None or value == "" else script_uri(value)

    def t_relay(self) -> bool:
        """A new branch to $du or the Request-URI."""
        uri = self._du if self._du is not None else self.request.uri
        started = self._proxy.relay_again(self, uri)
        self.done = self.done or started
        return started

    def t_reply(self, code: Union[int, str], reason: Optional[str] = None) -> bool:
        """Answer upstream with C{code} instead of the best reply."""
        self.effects += self._proxy.reply_failure(self, int(code), reason)
        self.done = True
        return True

    sl_send_reply = t_reply
