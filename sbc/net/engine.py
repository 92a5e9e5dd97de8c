# -*- test-case-name: tests.net.test_engine -*-
"""
The engine: every transport hands it what it received; it runs the core's decisions
(L{sbc.core.proxy.Proxy}) and carries out their effects: sending on the right socket or
connection, re-arming the one timer, telling dialog subscribers.  It owns the statistics
and never lets a peer's input raise out of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Optional, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sbc import __version__
from sbc.core.address import Address
from sbc.core.dialog import DialogCreated, DialogEvent, DialogTerminated
from sbc.core.effects import (
    Anchor,
    Effect,
    OperatorEvent,
    RelayRefused,
    ReleaseMedia,
    Resolve,
    ScriptFailed,
)
from sbc.core.errors import RemoteProtocolError
from sbc.core.message import Message, ParseLimits, Request, parse
from sbc.core.nat import stamp_via
from sbc.core.pike import Pike, PikeSettings, Verdict
from sbc.core.proxy import Proxy
from sbc.core.reply import error_response, make_response
from sbc.core.stats import Statistics
from sbc.core.stun import StunError, binding_response, parse_request
from sbc.core.transaction import Send
from sbc.core.uri import SipUri, is_ip_literal
from sbc.core.wire import RECEIVED, SENT, Wire, looks_like_sip, raw_call_id
from sbc.net.flow import Flow
from sbc.net.log import logger
from sbc.net.media import MediaBackend
from sbc.net.probe import UnreachableProbe
from sbc.net.timers import DeadlineTimer

__all__ = ["SipEngine"]

log = logger(__name__)

#: Events about registrations, not calls (no Call-ID added to their lines).
_NOT_CALLS = frozenset({"registered", "unregistered"})

#: Seconds between two log lines about refused requests of one kind.
REFUSAL_LOG_INTERVAL = 10.0


#: The limits on bad or oversized input, each counted when a peer hits it.
_LIMIT_COUNTERS = {
    "Message Too Large": "limit_message_size",
    "Too Many Headers": "limit_headers",
    "Header Too Long": "limit_header_length",
}


class WireTap(Protocol):
    """An observer of every SIP message the engine receives or sends (metrics, HEP
    capture, call records).  It must be quick; what it raises is logged, never passed on."""

    def wire(self, record: Wire) -> None: ...


class Resolver(Protocol):
    """What the engine needs from DNS: a URI's next hops in the order to try them."""

    def resolve(self, uri: SipUri) -> Deferred[list[Address]]: ...


class _RateLimitedLog:
    """At most C{burst} lines per second for one kind of event; the rest are counted and
    reported with the next line that gets through, so a flood cannot flood the log."""

    def __init__(self, clock: IReactorTime, burst: int = 10) -> None:
        self._clock = clock
        self._burst = burst
        self._second = -1
        self._count = 0
        self._suppressed = 0

    def allow(self) -> tuple[bool, int]:
        now = int(self._clock.seconds())
        if now != self._second:
            self._second = now
            self._count = 0
        self._count += 1
        if self._count > self._burst:
            self._suppressed += 1
            return False, 0
        suppressed, self._suppressed = self._suppressed, 0
        return True, suppressed


class SipEngine:
    """
    Receive SIP messages from any flow and act on them.

    @ivar proxy: the core that decides.
    @ivar stats: the counters (Kamailio names plus C{<transport>_*}).
    @ivar datagram_sockets: our UDP sockets by bound address (set by the listeners).
    @ivar send_stream: sends bytes to a stream peer (connection reuse or a new connection);
        set by the wiring.
    @ivar dialog_listeners: callables told of every dialog event.
    @ivar resolver: looks up next hops named by host name (None: they get 478).
    @ivar probe: finds unreachable UDP destinations fast (ICMP unreachable); None: off.
    @ivar media: the media relay (built in or rtpengine) that rewrites SDP; None: off.
    @ivar taps: told of every SIP message received and sent (L{Wire}).
    @ivar lookup_listeners: told how many seconds each DNS resolution took.
    """

    def __init__(
        self,
        proxy: Proxy,
        clock: IReactorTime,
        limits: ParseLimits = ParseLimits(),
        stats: Optional[Statistics] = None,
    ) -> None:
        self.proxy = proxy
        self.clock = clock
        self.limits = limits
        self.stats = stats if stats is not None else Statistics()
        self._refusal_log: dict[str, tuple[Optional[float], int]] = {}
        self.datagram_sockets: dict[Address, Callable[[bytes, tuple[str, int]], None]] = {}
        self.send_stream: Optional[Callable[[Address, bytes], bool]] = None
        self.send_stream_existing: Optional[Callable[[Address, bytes], bool]] = None
        self.dialog_listeners: list[Callable[[DialogEvent], None]] = []
        self.timer = DeadlineTimer(clock, self._on_timer)
        self._malformed_log = _RateLimitedLog(clock)
        #: [stun] stun_allow_stun / stun_allow_fp
        self.stun_enabled = True
        self.stun_fingerprint = True
        self._stun_log = _RateLimitedLog(clock)
        #: [pike] flood protection (off unless reqs_density_per_unit is set)
        self.pike = Pike(PikeSettings())
        self.resolver: Optional[Resolver] = None
        self.probe: Optional[UnreachableProbe] = None
        self.media: Optional[MediaBackend] = None
        #: The domain each TLS next hop found by DNS was looked up by: the identity its
        #: certificate must show (RFC 5922 §4), not its address.
        self.tls_names: dict[Address, str] = {}
        #: UDP next hops found by DNS: the only ones probed for ICMP errors (a registered
        #: phone's NAT binding would answer a probe from another port with an ICMP error).
        self.dns_targets: set[Address] = set()
        self.taps: list[WireTap] = []
        #: Our end of the connection held with a stream peer, when there is one (for the
        #: source address of what the taps see); set by the wiring.
        self.stream_local: Optional[Callable[[Address], Optional[tuple[str, int]]]] = None
        #: The Call-ID of the message or callback being handled: every log line about a
        #: call names it, so grep on one Call-ID shows the call's whole life.
        self._call_id: Optional[str] = None
        self._token_calls: dict[int, Optional[str]] = {}
        self.lookup_listeners: list[Callable[[float], None]] = []

    @property
    def identity(self):  # type: ignore[no-untyped-def]
        """Who we are (the proxy's view)."""
        return self.proxy.identity

    # -- input -------------------------------------------------------------------------------
    def receive(self, data: bytes, flow: Flow) -> None:
        """Handle one framed message (a datagram, or one message cut from a stream)."""
        self.stats.incr(f"{flow.transport}_received")
        try:
            message = parse(data, self.limits, stream=flow.reliable)
        except RemoteProtocolError as error:
            self._malformed(data, flow, error)
            return
        except Exception:
            # A parser bug must not become a way to make sbc drop input silently: the
            # message is counted and dropped, the traceback logged.
            self.stats.incr("internal_errors")
            self.stats.incr("bad_msg_hdr")
            log.failure("parser error on a message from {remote}", remote=flow.remote)
            return
        if self.taps:
            self._tap(RECEIVED, flow.transport, flow.remote, flow.local, data, message)
        try:
            self._dispatch(message, flow)
        except RemoteProtocolError as error:
            # A header parsed on demand (Route, Record-Route, ...) turned out malformed.
            self._malformed(data, flow, error)
        except Exception:
            self.stats.incr("internal_errors")
            log.failure(
                "error handling a message from {remote} call_id={call_id}",
                remote=flow.remote,
                call_id=raw_call_id(data),
            )
        finally:
            self._call_id = None
        self.timer.rearm(self.proxy.next_deadline())

    def receive_stun(self, data: bytes, flow: Flow) -> None:
        """Answer a STUN Binding request with the address it came from (RFC 5389/3489).
        Anything else that looks like STUN is counted and dropped, never parsed as SIP."""
        if not self.stun_enabled:
            self.stats.incr("stun_dropped")
            return
        self.stats.incr("stun_requests")
        try:
            request = parse_request(data)
        except StunError as error:
            self.stats.incr("stun_errors")
            self._log_bad_input(self._stun_log, "STUN", flow, error)
            return
        if not self.stun_fingerprint:
            request = replace(request, fingerprint=False)
        mapped = Address(flow.transport, flow.remote[0], flow.remote[1])
        local = Address(flow.transport, flow.local[0], flow.local[1])
        flow.send(binding_response(request, mapped, local, software=f"sbc {__version__}"))
        self.stats.incr("stun_responses")

    def _dispatch(self, message: Message, flow: Flow) -> None:
        self._call_id = message.get("call-id")
        now = self.clock.seconds()
        source = Address(flow.transport, flow.remote[0], flow.remote[1])
        if self.probe is not None and not flow.reliable:
            self.probe.heard_from(flow.remote[0], flow.remote[1])
        if isinstance(message, Request):
            self.stats.incr("rcv_requests")
            verdict = self.pike.hit(flow.remote[0], now)
            if verdict is not Verdict.PASS:
                self._flooded(message, flow, verdict)
                return
            local = Address(flow.transport, flow.local[0], flow.local[1])
            effects = self.proxy.receive_request(message, source, local, now)
        else:
            self.stats.incr("rcv_replies")
            effects = self.proxy.receive_response(message, source, now)
        self.execute(effects)

    def count_limit(self, error: RemoteProtocolError) -> None:
        """Count an input limit a peer hit (message size, headers, header length)."""
        limit = _LIMIT_COUNTERS.get(error.reason)
        if limit is not None:
            self.stats.incr(limit)

    def _flooded(self, request: Request, flow: Flow, verdict: Verdict) -> None:
        """Flood protection (as Kamailio's pike): a source above its request density gets 503
        with Retry-After; above twice the density, nothing (answering a flood feeds it)."""
        if verdict is Verdict.DROP:
            self.stats.incr("pike_dropped")
            return
        self.stats.incr("pike_limited")
        if request.method == "ACK":
            return
        stamped = stamp_via(request, flow.remote[0], flow.remote[1], force_rport=True)
        retry = str(max(1, self.pike.settings.sampling_time_unit))
        response = make_response(
            stamped, 503, "Too Many Requests", headers=[("Retry-After", retry)]
        )
        data = response.to_bytes()
        flow.send(data)
        self.stats.incr("rpl_generated")
        if self.taps:
            self._tap(SENT, flow.transport, flow.local, flow.remote, data, response)

    def _malformed(self, data: bytes, flow: Flow, error: RemoteProtocolError) -> None:
        self.stats.incr("bad_msg_hdr")
        self.count_limit(error)
        self.stats.incr(f"{flow.transport}_malformed")
        reply = error_response(data, error)
        self._log_bad_input(self._malformed_log, "message", flow, error, raw_call_id(data))
        if reply is None:
            self.stats.incr("drop_requests" if not data.startswith(b"SIP/") else "drop_replies")
            return
        self.stats.incr("err_requests")
        self.stats.incr("rpl_generated")
        # The Via of a broken request is not trusted: the answer goes back where it came from.
        flow.send(reply)
        if self.taps:
            self._tap(SENT, flow.transport, flow.local, flow.remote, reply, None)

    @staticmethod
    def _log_bad_input(
        limiter: _RateLimitedLog,
        what: str,
        flow: Flow,
        error: RemoteProtocolError,
        call_id: Optional[str] = None,
    ) -> None:
        """One log line per bad input, at most a burst a second (a flood is summarised)."""
        allowed, suppressed = limiter.allow()
        if allowed:
            log.info(
                "malformed {what} from {transport}:{host}:{port}: {status} {reason}{more}",
                what=what,
                transport=flow.transport,
                host=flow.remote[0],
                port=flow.remote[1],
                status=error.status,
                reason=error.reason,
                more=(f" call_id={call_id}" if call_id else "")
                + (f" ({suppressed} more not logged)" if suppressed else ""),
            )

    def transport_failed(self, peer: Address, reason: str, block: bool = True) -> None:
        """A connection to C{peer} failed before answering: its branches fail at once
        (and C{peer} is blocklisted, unless C{block} is false: a TLS peer that failed the
        identity a request asked for may still be fine for others)."""
        self.stats.incr(f"{peer.transport}_transport_failures")
        try:
            self.execute(self.proxy.transport_failed(peer, self.clock.seconds(), block))
        except Exception:
            self.stats.incr("internal_errors")
            log.failure("error failing branches to {peer}", peer=str(peer))
        self.timer.rearm(self.proxy.next_deadline())

    def flow_closed(self, peer: Address) -> None:
        """A WebSocket connection closed (RFC 7118): the registrations bound to it go, or
        (RFC 5626 outbound) wait for the client's new flow, answered 430 meanwhile."""
        try:
            removed, kept = self.proxy.registrar.flow_lost(peer, self.clock.seconds())
        except Exception:
            self.stats.incr("internal_errors")
            log.failure("error dropping the registrations of {peer}", peer=str(peer))
            return
        if removed or kept:
            log.info(
                "{peer} closed: {removed} registration(s) removed, {kept} outbound "
                "registration(s) kept until a new flow",
                peer=str(peer),
                removed=removed,
                kept=kept,
            )

    def unreachable(self, peer: Address, why: str) -> None:
        """An ICMP error says C{peer} cannot be reached: fail its branches now."""
        log.info("{peer} is unreachable ({why})", peer=str(peer), why=why)
        self.stats.incr("icmp_unreachable")
        self.transport_failed(peer, why)

    def _resolve(self, effect: Resolve) -> None:
        """Ask the resolver; its answer (possibly at once, from the cache) goes back to
        the proxy, and a resolver fault counts as no address."""
        if self.resolver is None:
            self._resolved(effect.token, [])
            return
        if len(self._token_calls) > 10_000:  # bounded: only log lines lose their Call-ID
            self._token_calls.clear()
        self._token_calls[effect.token] = self._call_id
        self.stats.incr("dns_lookups")
        started = self.clock.seconds()
        try:
            pending = self.resolver.resolve(effect.uri)
        except Exception:
            log.failure("resolver failed for {uri}", uri=str(effect.uri))
            self._resolved(effect.token, [])
            return

        def failed(failure: Failure) -> list[Address]:
            log.failure("resolver failed for {uri}", failure, uri=str(effect.uri))
            return []

        def timed(targets: list[Address]) -> list[Address]:
            took = self.clock.seconds() - started
            for listener in self.lookup_listeners:
                try:
                    listener(took)
                except Exception:
                    log.failure("DNS timing listener failed")
            return targets

        pending.addErrback(failed)
        pending.addCallback(timed)
        pending.addCallback(lambda targets: self._resolved(effect.token, targets, effect.uri))

    def _resolved(self, token: int, targets: list[Address], uri: Optional[SipUri] = None) -> None:
        self._call_id = self._token_calls.pop(token, self._call_id)
        if not targets:
            self.stats.incr("dns_unresolvable")
        if len(self.dns_targets) > 10_000:  # bounded: learnt again at the next lookup
            self.dns_targets.clear()
        self.dns_targets.update(t for t in targets if t.transport == "udp")
        if (
            uri is not None
            and not is_ip_literal(uri.host)
            and any(t.transport == "tls" for t in targets)
        ):
            if len(self.tls_names) > 10_000:  # bounded: names are learnt again when needed
                self.tls_names.clear()
            domain = uri.host.rstrip(".").lower()
            for target in targets:
                if target.transport == "tls":
                    self.tls_names[target] = domain
        try:
            self.execute(self.proxy.resolved(token, targets, self.clock.seconds()))
        except Exception:
            self.stats.incr("internal_errors")
            log.failure("error forwarding after DNS call_id={call_id}", call_id=self._call_id)
        finally:
            self._call_id = None
        self.timer.rearm(self.proxy.next_deadline())

    def _anchor(self, effect: Anchor) -> None:
        """Have the media relay rewrite the SDP; the proxy goes on with the result (or
        with the original SDP when the relay fails: the call is not lost for it)."""
        media = self.media
        if media is None:
            self._anchored(effect, None)
            return
        try:
            if effect.op == "offer" and effect.towards is not None:
                pending = media.offer(
                    effect.call_id,
                    effect.from_tag,
                    effect.to_tag,
                    effect.sdp,
                    effect.source,
                    towards=effect.towards,
                )
            elif effect.op == "offer":
                pending = media.offer(
                    effect.call_id, effect.from_tag, effect.to_tag, effect.sdp, effect.source
                )
            else:
                pending = media.answer(
                    effect.call_id, effect.from_tag, effect.to_tag or "", effect.sdp, effect.source
                )
        except Exception as error:
            pending = fail(error)

        def done(result: object) -> None:
            body: Optional[bytes] = None
            if isinstance(result, Failure):
                self.stats.incr("rtp_anchor_failures")
                log.warn(
                    "media {op} for {call_id} failed, SDP left as is: {error}",
                    op=effect.op,
                    call_id=effect.call_id,
                    error=result.getErrorMessage(),
                )
            elif isinstance(result, bytes):
                body = result
                self.stats.incr("rtp_anchored")
            self._call_id = effect.call_id
            try:
                self.execute(self.proxy.anchored(effect.token, body, self.clock.seconds()))
            except Exception:
                self.stats.incr("internal_errors")
                log.failure(
                    "error forwarding after media anchoring call_id={call_id}",
                    call_id=effect.call_id,
                )
            finally:
                self._call_id = None
            self.timer.rearm(self.proxy.next_deadline())

        pending.addBoth(done)

    def _release_media(self, effect: ReleaseMedia) -> None:
        if self.media is None:
            return
        try:
            self.media.delete(effect.call_id).addErrback(
                lambda failure: log.info(
                    "media delete for {call_id}: {error}",
                    call_id=effect.call_id,
                    error=failure.getErrorMessage(),
                )
            )
        except Exception:
            log.failure("media delete failed for {call_id}", call_id=effect.call_id)

    def media_timed_out(self, call_id: str) -> None:
        """The relay ended a call's media for lack of RTP (media_timeout)."""
        self.stats.incr("rtp_media_timeouts")
        log.info("media of {call_id} timed out", call_id=call_id)
        self.proxy.media_ended(call_id)

    def _on_timer(self, now: float) -> None:
        try:
            self.execute(self.proxy.handle_timer(now))
        except Exception:
            self.stats.incr("internal_errors")
            log.failure("error in timer processing")
        self.timer.rearm(self.proxy.next_deadline())

    # -- output ------------------------------------------------------------------------------
    def execute(self, effects: list[Effect]) -> None:
        """Carry out the core's effects in order."""
        for effect in effects:
            if isinstance(effect, Send):
                self.transmit(effect)
            elif isinstance(effect, Resolve):
                self._resolve(effect)
            elif isinstance(effect, Anchor):
                self._anchor(effect)
            elif isinstance(effect, ReleaseMedia):
                self._release_media(effect)
            elif isinstance(effect, ScriptFailed):
                self.stats.incr("script_errors")
                log.error("routing script error: {details}", details=self._details(effect))
            elif isinstance(effect, RelayRefused):
                self._refused(effect)
            elif isinstance(effect, OperatorEvent):
                log.info("{event}: {details}", event=effect.event, details=self._details(effect))
            else:
                if isinstance(effect, DialogCreated):
                    self.stats.incr("dialogs_created")
                elif isinstance(effect, DialogTerminated):
                    self.stats.incr("dialogs_terminated")
                for listener in list(self.dialog_listeners):
                    try:
                        listener(effect)
                    except Exception:
                        log.failure(
                            "dialog listener failed call_id={call_id}",
                            call_id=effect.dialog.call_id,
                        )

    def _details(self, notice: OperatorEvent) -> str:
        """A notice's fields as C{key=value}, with the Call-ID of the message or callback
        being handled when the notice does not name one (and it is about a call)."""
        fields = list(notice.fields)
        if self._call_id is not None and notice.event not in _NOT_CALLS:
            if not any(key == "call_id" for key, _ in fields):
                fields.append(("call_id", self._call_id))
        return " ".join(f"{k}={v}" for k, v in fields)

    def _refused(self, notice: RelayRefused) -> None:
        """A request the relay policy refused: counted; logged at most once per
        L{REFUSAL_LOG_INTERVAL} seconds per kind, with how many went unlogged (an attacker
        probing for an open relay must not flood the log)."""
        self.stats.incr(notice.event)
        now = self.clock.seconds()
        last, suppressed = self._refusal_log.get(notice.event, (None, 0))
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            self._refusal_log[notice.event] = (last, suppressed + 1)
            return
        self._refusal_log[notice.event] = (now, 0)
        log.warn(
            "{event}: {details}{more}",
            event=notice.event,
            details=self._details(notice),
            more=f" ({suppressed} more since the last line)" if suppressed else "",
        )

    def _datagram_socket(
        self, local: Optional[Address], peer: Address
    ) -> tuple[Optional[Address], Optional[Callable[[bytes, tuple[str, int]], None]]]:
        """The UDP socket to send from and its address: C{local} when we have it, else
        one of the peer's address family."""
        socket = self.datagram_sockets.get(local) if local else None
        if socket is not None:
            return local, socket
        return next(
            ((a, s) for a, s in self.datagram_sockets.items() if a.family == peer.family),
            (None, None),
        )

    def _local_end(self, peer: Address) -> tuple[str, int]:
        """Our (host, port) on the connection to stream peer C{peer}; C{("", 0)} while it
        is still being set up."""
        if self.stream_local is not None:
            try:
                found = self.stream_local(peer)
            except Exception:
                found = None
            if found is not None:
                return found
        return ("", 0)

    def _tap(
        self,
        direction: str,
        transport: str,
        source: tuple[str, int],
        destination: tuple[str, int],
        data: bytes,
        message: Optional[Message],
    ) -> None:
        """Tell every tap about one message on the wire; a failing tap is logged."""
        record = Wire(
            direction, transport, source, destination, data, self.clock.seconds(), message
        )
        for tap in self.taps:
            try:
                tap.wire(record)
            except Exception:
                log.failure("wire tap {tap!r} failed", tap=tap)

    def send_raw(self, data: bytes, peer: Address, local: Optional[Address]) -> None:
        """Send bytes that are not a parsed message (keepalives): UDP from C{local} (or
        any socket of the family), streams only over a connection we already hold."""
        source: Optional[Address] = local
        if peer.transport == "udp":
            source, socket = self._datagram_socket(local, peer)
            if socket is None:
                return
            socket(data, (peer.host, peer.port))
        elif self.send_stream_existing is None or not self.send_stream_existing(peer, data):
            return
        if self.taps and looks_like_sip(data):
            here = (source.host, source.port) if source is not None else self._local_end(peer)
            self._tap(SENT, peer.transport, here, (peer.host, peer.port), data, None)

    def transmit(self, send: Send) -> None:
        """Send one message: UDP from the chosen socket, streams over a held connection or a
        new one."""
        data = send.message.to_bytes()
        peer = send.peer
        self.stats.incr("fwd_requests" if isinstance(send.message, Request) else "rpl_sent")
        if peer.transport == "udp":
            source, socket = self._datagram_socket(send.local, peer)
            if socket is None:
                self.stats.incr("udp_send_errors")
                log.warn(
                    "no UDP socket for {peer} call_id={call_id}",
                    peer=str(peer),
                    call_id=send.message.get("call-id"),
                )
                return
            socket(data, (peer.host, peer.port))
            if self.taps and source is not None:
                here = (source.host, source.port)
                self._tap(SENT, "udp", here, (peer.host, peer.port), data, send.message)
            message = send.message
            if (
                self.probe is not None
                and peer in self.dns_targets
                and isinstance(message, Request)
                and message.method != "ACK"
            ):
                self.probe.check(peer)
            return
        if self.send_stream is None or not self.send_stream(peer, data):
            self.stats.incr(f"{peer.transport}_send_errors")
            return
        if self.taps:
            here = self._local_end(peer)
            self._tap(SENT, peer.transport, here, (peer.host, peer.port), data, send.message)
