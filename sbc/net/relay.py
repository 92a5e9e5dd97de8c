# -*- test-case-name: tests.net.test_relay -*-
"""
The built-in RTP relay: UDP sockets for the port pairs of L{sbc.core.media}.

Each pair a call takes gets two sockets (RTP, RTCP) bound to C{bind_host}; a datagram on one
is handed to the session table, which says from which of our ports and to where it goes.  A
L{LoopingCall} ends calls whose media died (C{media_timeout}) and tells the engine through
C{on_timeout}.  Everything runs on the reactor thread; nothing here raises into Twisted.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from random import SystemRandom
from typing import Any, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from typing_extensions import override

from sbc.core.address import Address
from sbc.core.media import (
    DROP_FOREIGN,
    DROP_STUN,
    Answered,
    Dropped,
    MediaError,
    PortPool,
    PortsExhaustedError,
    SessionTable,
)
from sbc.core.nat import DEFAULT_PRIVATE_RANGES, PrivateRanges
from sbc.core.rtcp import is_rtcp
from sbc.core.sdp import MediaStream, SdpError, anchor_sdp, media_streams, sdp_is_dtls
from sbc.core.stats import Statistics
from sbc.net.log import logger
from sbc.net.media import TimeoutCallback

__all__ = ["RtpRelay"]

#: Media streams one SDP may have anchored (each takes two port pairs).
MAX_STREAMS = 8

log = logger(__name__)

#: (Call-ID, RTCP datagram, its source, the relay address it reached, time)
RtcpListener = Callable[[str, bytes, tuple[str, int], tuple[str, int], float], None]

#: Send errors that mean "this datagram is lost", not "the socket is broken".
_TRANSIENT = frozenset(
    {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH,
     errno.ENETUNREACH, errno.EMSGSIZE, errno.EPERM, errno.EACCES, errno.EINVAL}
)  # fmt: skip


class _RelaySocket(DatagramProtocol):
    """One relay port: every datagram goes to the relay with the port it arrived on."""

    noisy = False

    def __init__(self, relay: RtpRelay, port: int) -> None:
        self.relay = relay
        self.port = port
        self.sock: Optional[socket.socket] = None

    @override
    def startProtocol(self) -> None:
        self.sock = self.transport.socket  # type: ignore[attr-defined]

    @override
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.relay.relay(self.port, datagram, addr)


class RtpRelay(service.Service):
    """
    The built-in media relay: a L{sbc.net.media.MediaBackend}.

    @ivar media_address: the address written into SDP (the relay's public address).
    @ivar bind_host: where the sockets listen (C{0.0.0.0}/C{::} by default).
    @ivar table: the pure session table.
    @ivar on_timeout: called with a Call-ID when its media timed out.
    """

    name = "rtp-relay"

    def __init__(
        self,
        media_address: str,
        port_min: int,
        port_max: int,
        media_timeout: float,
        *,
        bind_host: Optional[str] = None,
        reactor: Any,
        stats: Optional[Statistics] = None,
        on_timeout: Optional[TimeoutCallback] = None,
        check_interval: float = 1.0,
        hold_timeout: float = 3600.0,
        offer_timeout: float = 3600.0,
        strict_source: bool = True,
        nortpproxy: str = "",
        replace_origin: bool = False,
        private: PrivateRanges = PrivateRanges.of(DEFAULT_PRIVATE_RANGES),
    ) -> None:
        self.reactor = reactor
        self.media_address = media_address
        self.ipv6 = ":" in media_address
        self.bind_host = bind_host or ("::" if self.ipv6 else "0.0.0.0")
        self.stats = stats if stats is not None else Statistics()
        self.on_timeout = on_timeout
        self.check_interval = check_interval
        self.nortpproxy = nortpproxy
        self.replace_origin = replace_origin
        self.pool = PortPool(port_min, port_max)
        self.table = SessionTable(
            self.pool,
            media_timeout,
            hold_timeout=hold_timeout,
            offer_timeout=offer_timeout,
            strict_source=strict_source,
            listener=self,
            private=private,
            rng=SystemRandom(),  # ICE passwords must not be guessable (RFC 8445 §5.3)
        )
        self._listening: dict[int, IListeningPort] = {}
        self._sockets: dict[int, _RelaySocket] = {}
        self._closing: list[Deferred[Any]] = []
        self._loop: Optional[LoopingCall] = None
        #: told of every RTCP packet relayed: (Call-ID, data, source, relay address, time)
        self.rtcp_listeners: list[
            Callable[[str, bytes, tuple[str, int], tuple[str, int], float], None]
        ] = []
        ipaddress.ip_address(media_address)  # ValueError early, not at the first call

    # -- sockets (the table's PortListener) ------------------------------------------------------
    def open_pair(self, port: int) -> bool:
        """Listen on C{port} (RTP) and C{port + 1} (RTCP); C{False} if either is taken."""
        opened: list[int] = []
        for number in (port, port + 1):
            protocol = _RelaySocket(self, number)
            try:
                listening = self.reactor.listenUDP(number, protocol, interface=self.bind_host)
            except CannotListenError as error:
                log.warn("RTP port {port} unavailable: {error}", port=number, error=error)
                self.stats.incr("rtp_port_busy")
                for done in opened:
                    self._close(done)
                return False
            self._listening[number] = listening
            self._sockets[number] = protocol
            opened.append(number)
        return True

    def close_pair(self, port: int) -> None:
        """Stop listening on C{port} and C{port + 1}."""
        self._close(port)
        self._close(port + 1)

    def _close(self, number: int) -> None:
        self._sockets.pop(number, None)
        listening = self._listening.pop(number, None)
        if listening is not None:
            closed = listening.stopListening()
            if isinstance(closed, Deferred):
                self._closing.append(closed)
                closed.addBoth(self._closed, closed)

    def _closed(self, result: Any, closed: Deferred[Any]) -> Any:
        if closed in self._closing:
            self._closing.remove(closed)
        return result

    @property
    def open_ports(self) -> list[int]:
        """Every port with a socket (RTP and RTCP)."""
        return sorted(self._listening)

    # -- packets ---------------------------------------------------------------------------------
    def relay(self, port: int, data: bytes, addr: Any) -> None:
        """A datagram on relay port C{port}: send it on, or count it as dropped."""
        stats = self.stats
        try:
            verdict = self.table.route(port, (addr[0], addr[1]), data, self.reactor.seconds())
        except Exception:
            stats.incr("rtp_errors")
            log.failure("relaying a datagram on port {port} failed", port=port)
            return
        if isinstance(verdict, Dropped):
            stats.incr("rtp_dropped_packets")
            if verdict.reason == DROP_FOREIGN:
                stats.incr("rtp_foreign_dropped")
            elif verdict.reason == DROP_STUN:
                stats.incr("rtp_stun_dropped")
            return
        if isinstance(verdict, Answered):
            stats.incr("rtp_stun_refused" if verdict.refused else "rtp_stun_answered")
            self._reply(port, verdict.reply, (addr[0], addr[1]))
            return
        out, destination = verdict.port, verdict.target
        sender = self._sockets.get(out)
        sock = sender.sock if sender is not None else None
        if sock is None or (":" in destination[0]) != (sock.family == socket.AF_INET6):
            stats.incr("rtp_dropped_packets")
            return
        try:
            sock.sendto(data, destination)
        except OSError as error:
            stats.incr("rtp_send_errors")
            if error.errno not in _TRANSIENT:
                owner = self.table.owner(port)
                log.warn(
                    "RTP send from {port} to {destination} failed: {error} call_id={call_id}",
                    port=out,
                    destination=destination,
                    error=error,
                    call_id=owner[0] if owner else None,
                )
            return
        stats.incr("rtp_relayed_packets")
        stats.incr("rtp_relayed_bytes", len(data))
        if self.rtcp_listeners:
            self._rtcp_seen(port, data, (addr[0], addr[1]))

    def _rtcp_seen(self, port: int, data: bytes, source: tuple[str, int]) -> None:
        """Tell the RTCP listeners (HEP capture) of an RTCP packet relayed on C{port}:
        on the RTCP port of a pair, or multiplexed on the RTP port (RFC 5761 §4)."""
        owner = self.table.owner(port)
        if owner is None or not is_rtcp(data):
            return
        now = self.reactor.seconds()
        for listener in self.rtcp_listeners:
            try:
                listener(owner[0], data, source, (self.media_address, port), now)
            except Exception:
                log.failure("RTCP listener failed")

    def _reply(self, port: int, data: bytes, destination: tuple[str, int]) -> None:
        """Send C{data} back from relay port C{port} (a STUN response to an ICE check)."""
        receiver = self._sockets.get(port)
        sock = receiver.sock if receiver is not None else None
        if sock is None:
            return
        try:
            sock.sendto(data, destination)
        except OSError:
            self.stats.incr("rtp_send_errors")

    # -- signalling (MediaBackend) ---------------------------------------------------------------
    def offer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: Optional[str],
        sdp: bytes,
        source: Address,
        towards: Optional[Address] = None,
    ) -> Deferred[bytes]:
        """Anchor an offer; fires with the SDP for the answerer."""
        return self._describe(True, call_id, from_tag, to_tag, sdp, source)

    def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, source: Address
    ) -> Deferred[bytes]:
        """Anchor an answer; fires with the SDP for the offerer."""
        return self._describe(False, call_id, from_tag, to_tag, sdp, source)

    def _describe(
        self,
        is_offer: bool,
        call_id: str,
        from_tag: str,
        to_tag: Optional[str],
        sdp: bytes,
        source: Optional[Address],
    ) -> Deferred[bytes]:
        try:
            if sdp_is_dtls(sdp):
                # DTLS-SRTP (RFC 5764) needs a DTLS handshake and SRTP keys per side, which
                # this relay does not do: relaying the packets untouched would break the
                # call's encryption on one side.  Refused; engine = rtpengine bridges it.
                self.stats.incr("rtp_dtls_refused")
                log.warn(
                    "not anchoring {call_id}: its SDP from {source} uses DTLS-SRTP "
                    "(UDP/TLS/RTP/SAVPF), which the built-in relay cannot terminate; "
                    "use [rtp] engine = rtpengine for WebRTC clients",
                    call_id=call_id,
                    source=str(source),
                )
                raise SdpError("DTLS-SRTP media is not anchored by the built-in relay")
            streams = media_streams(sdp)
            if len(streams) > MAX_STREAMS:
                # One SDP must not take the pool: refused, the call goes on unanchored.
                raise SdpError(f"{len(streams)} media streams, at most {MAX_STREAMS} anchored")
            if streams and all(self._is_ours(s) for s in streams):
                # Already anchored here: a spiral through sbc (e.g. out to a core proxy
                # and back).  Anchoring it again would make the relay send RTP to itself.
                return defer.succeed(sdp)
            # Refuse what cannot be rewritten before any port is taken.
            anchor_sdp(sdp, self.media_address, [s.port or None for s in streams])
            now = self.reactor.seconds()
            host = source.host if source is not None else None
            if is_offer:
                ports = self.table.offer(call_id, from_tag, to_tag, streams, now, host)
                recipient = to_tag
            else:
                assert to_tag is not None
                ports = self.table.answer(call_id, from_tag, to_tag, streams, now, host)
                recipient = from_tag
            body = anchor_sdp(
                sdp,
                self.media_address,
                ports,
                nortpproxy=self.nortpproxy,
                replace_origin=self.replace_origin,
                # ICE-lite towards a side that speaks ICE; its ICE lines removed otherwise.
                ice=self.table.ice_towards(call_id, recipient),
            )
        except PortsExhaustedError as error:
            self.stats.incr("rtp_port_exhausted")
            log.warn(
                "RTP ports exhausted for call {call_id}: {error}", call_id=call_id, error=error
            )
            return defer.fail(error)
        except (MediaError, SdpError) as error:
            self.stats.incr("rtp_refused")
            return defer.fail(error)
        except Exception as error:
            self.stats.incr("rtp_errors")
            log.failure("anchoring the SDP of call {call_id} failed", call_id=call_id)
            return defer.fail(error)
        self.stats.set("rtp_sessions", len(self.table))
        return defer.succeed(body)

    def _is_ours(self, stream: MediaStream) -> bool:
        """Does C{stream} point at one of this relay's open ports (or is it disabled)?"""
        return stream.disabled or (
            stream.address == self.media_address and stream.port in self._listening
        )

    def delete(
        self, call_id: str, from_tag: Optional[str] = None, to_tag: Optional[str] = None
    ) -> Deferred[None]:
        """End a call's media and close its sockets (no error for an unknown call)."""
        self.table.delete(call_id, from_tag, to_tag)
        self.stats.set("rtp_sessions", len(self.table))
        return defer.succeed(None)

    def sessions(self) -> list[dict[str, Any]]:
        """Every relayed call with its counters."""
        return self.table.sessions()

    # -- timeouts and lifecycle ------------------------------------------------------------------
    def check(self) -> list[str]:
        """End every call whose media died; never raises (it runs in a LoopingCall)."""
        ended: list[str] = []
        try:
            for call_id in self.table.expired(self.reactor.seconds()):
                self.table.delete(call_id)
                ended.append(call_id)
                self.stats.incr("rtp_timeouts")
                log.info("media timeout: call {call_id} ended", call_id=call_id)
                if self.on_timeout is not None:
                    try:
                        self.on_timeout(call_id)
                    except Exception:
                        self.stats.incr("internal_errors")
                        log.failure("on_timeout({call_id}) failed", call_id=call_id)
            self.stats.set("rtp_sessions", len(self.table))
        except Exception:
            self.stats.incr("internal_errors")
            log.failure("media timeout check failed")
        return ended

    @override
    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(self.check_interval, now=False)

    @override
    def stopService(self) -> Deferred[Any]:  # type: ignore[override]
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self.table.clear()
        self.stats.set("rtp_sessions", 0)
        for number in list(self._listening):
            self._close(number)
        closing = list(self._closing)
        return defer.gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)
