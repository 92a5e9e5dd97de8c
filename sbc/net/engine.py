# -*- test-case-name: tests.net.test_engine -*-
"""
The engine: every transport hands it what it received; it runs the core's decisions and
sends what they say.  It owns the statistics and never lets a peer's input raise out of it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from sbc.core.errors import RemoteProtocolError
from sbc.core.message import ParseLimits, Request, Response, parse
from sbc.core.nat import response_target, stamp_via
from sbc.core.proxy import LocalIdentity, handle_request
from sbc.core.reply import error_response
from sbc.core.stats import Statistics
from sbc.net.flow import Flow
from sbc.net.log import logger

__all__ = ["SipEngine"]

log = logger(__name__)


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

    @ivar stats: the counters (Kamailio names plus C{<transport>_*}).
    """

    def __init__(
        self,
        identity: LocalIdentity,
        clock: IReactorTime,
        limits: ParseLimits = ParseLimits(),
        stats: Statistics | None = None,
    ) -> None:
        self.identity = identity
        self.limits = limits
        self.stats = stats if stats is not None else Statistics()
        self._malformed_log = _RateLimitedLog(clock)

    def receive(self, data: bytes, flow: Flow) -> None:
        """Handle one framed message (a datagram, or one message cut from a stream)."""
        self.stats.incr(f"{flow.transport}_received")
        try:
            message = parse(data, self.limits, stream=flow.reliable)
        except RemoteProtocolError as error:
            self._malformed(data, flow, error)
            return
        try:
            if isinstance(message, Request):
                self._request(message, flow)
            else:
                self._response(message, flow)
        except RemoteProtocolError as error:
            # A header parsed on demand (Route, Record-Route, ...) turned out malformed.
            self._malformed(data, flow, error)
        except Exception:
            self.stats.incr("internal_errors")
            log.failure("error handling a message from {remote}", remote=flow.remote)

    def _malformed(self, data: bytes, flow: Flow, error: RemoteProtocolError) -> None:
        self.stats.incr("bad_msg_hdr")
        self.stats.incr(f"{flow.transport}_malformed")
        reply = error_response(data, error)
        allowed, suppressed = self._malformed_log.allow()
        if allowed:
            log.info(
                "malformed message from {transport}:{host}:{port}: {status} {reason}{suppressed}",
                transport=flow.transport,
                host=flow.remote[0],
                port=flow.remote[1],
                status=error.status,
                reason=error.reason,
                suppressed=f" ({suppressed} more not logged)" if suppressed else "",
            )
        if reply is None:
            self.stats.incr("drop_requests" if not data.startswith(b"SIP/") else "drop_replies")
            return
        self.stats.incr("err_requests")
        self.stats.incr("rpl_generated")
        # The Via of a broken request is not trusted: the answer goes back where it came from.
        flow.send(reply)

    def _request(self, request: Request, flow: Flow) -> None:
        self.stats.incr("rcv_requests")
        request = stamp_via(request, flow.remote[0], flow.remote[1])
        response = handle_request(request, self.identity)
        if response is not None:
            self.stats.incr("rpl_generated")
            self.send_response(response, flow)

    def _response(self, response: Response, flow: Flow) -> None:
        self.stats.incr("rcv_replies")
        self.stats.incr("drop_replies")

    def send_response(self, response: Response, flow: Flow) -> None:
        """Send C{response} per RFC 3261 §18.2.2 / RFC 3581: on the connection the request
        came on, or on the same socket to the top Via's received/rport."""
        data = response.to_bytes()
        if flow.reliable:
            flow.send(data)
        else:
            flow.send(data, response_target(response.top_via))
        self.stats.incr("rpl_sent")
