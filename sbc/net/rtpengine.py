# -*- test-case-name: tests.net.test_rtpengine -*-
"""
The rtpengine backend: a client of rtpengine's ng control protocol over UDP.

Each command gets a unique cookie (C{<random>_<sequence>}) and is sent up to
C{tries} times, C{timeout} seconds apart; the reply with the same cookie from the daemon's
address fires the command's L{Deferred} (a duplicate reply to a retransmission is ignored).
After the last try, or on C{result: error} / C{load limit}, the Deferred fails with
L{RtpengineError}.  The dictionaries come from L{sbc.core.ng} as Kamailio builds them.

rtpengine enforces its own media timeout and deletes dead calls itself; this client only
remembers which calls it set up, for the admin listing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import DatagramProtocol
from typing_extensions import override

from sbc.core.address import WEBSOCKET, Address, normalise_host
from sbc.core.media import MediaError
from sbc.core.ng import (
    NgError,
    answer_command,
    decode_message,
    delete_command,
    encode_message,
    ice_flags,
    offer_command,
    parse_ng_url,
    ping_command,
    query_command,
    webrtc_flags,
)
from sbc.core.sdp import sdp_has_ice, sdp_is_dtls
from sbc.core.stats import Statistics
from sbc.net.log import logger
from sbc.net.media import TimeoutCallback

__all__ = ["RtpengineClient", "RtpengineError", "RtpengineTimeoutError", "DEFAULT_FLAGS"]

log = logger(__name__)

#: What sbc asks of rtpengine for every offer and answer (ng C{replace} list, C{ICE}); C{ICE=remove}
#: becomes C{ICE=force} towards a side whose SDP carried ICE (L{ice_flags}).
DEFAULT_FLAGS = "replace-origin replace-session-connection ICE=remove"


class RtpengineError(MediaError):
    """rtpengine answered C{error} (the reason is the message) or C{load limit}."""


class RtpengineTimeoutError(RtpengineError):
    """rtpengine did not answer any of the tries."""


@dataclass
class _Pending:
    deferred: Deferred[dict[str, Any]]
    data: bytes
    command: str
    tries_left: int
    timer: Optional[IDelayedCall] = None


class _ControlSocket(DatagramProtocol):
    noisy = False

    def __init__(self, client: RtpengineClient) -> None:
        self.client = client

    @override
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.client.reply_received(datagram, (addr[0], addr[1]))


class RtpengineClient(service.Service):
    """
    A L{sbc.net.media.MediaBackend} that asks an rtpengine daemon to relay the media.

    @ivar address: (host, port) of the daemon's ng socket.
    @ivar timeout: seconds to wait for a reply before sending again.
    @ivar tries: how many times a command is sent before it fails.
    @ivar flags: the Kamailio-style flag string for offers and answers.
    @ivar delete_flags: ... and for deletes (C{delete-delay=0}, say).
    """

    name = "rtpengine"

    def __init__(
        self,
        sock: str = "udp:127.0.0.1:2223",
        *,
        reactor: Any,
        timeout: float = 1.0,
        tries: int = 3,
        flags: str = DEFAULT_FLAGS,
        delete_flags: str = "",
        stats: Optional[Statistics] = None,
        cookie_prefix: Optional[str] = None,
        on_timeout: Optional[TimeoutCallback] = None,
    ) -> None:
        if tries < 1 or timeout <= 0:
            raise ValueError("rtpengine: tries >= 1 and timeout > 0 expected")
        self.reactor = reactor
        self.address = parse_ng_url(sock)
        self.timeout = timeout
        self.tries = tries
        self.flags = flags
        self.delete_flags = delete_flags
        self.stats = stats if stats is not None else Statistics()
        self.on_timeout = on_timeout
        self._prefix = cookie_prefix or secrets.token_hex(4)
        self._sequence = 0
        self._pending: dict[str, _Pending] = {}
        self._port: Optional[IListeningPort] = None
        self._protocol = _ControlSocket(self)
        self._calls: dict[str, dict[str, Any]] = {}
        # Call-ID -> tag -> whether that side's last SDP carried ICE (for ICE=force/remove).
        self._ice: dict[str, dict[str, bool]] = {}
        # Call-ID -> tag -> whether that side is a WebRTC client (DTLS-SRTP, AVPF, mux).
        self._webrtc: dict[str, dict[str, bool]] = {}

    # -- transport -------------------------------------------------------------------------------
    @override
    def startService(self) -> None:
        super().startService()
        host = self.address[0]
        loopback = host == "::1" or host.startswith("127.")
        interface = host if loopback else ("::" if ":" in host else "")
        self._port = self.reactor.listenUDP(0, self._protocol, interface=interface)

    @override
    def stopService(self) -> Deferred[Any]:  # type: ignore[override]
        super().stopService()
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.deferred.errback(RtpengineError(f"{entry.command}: the client stopped"))
        port, self._port = self._port, None
        closed = port.stopListening() if port is not None else None
        return closed if isinstance(closed, Deferred) else defer.succeed(None)

    def _cookie(self) -> str:
        self._sequence += 1
        return f"{self._prefix}_{self._sequence}"

    def command(self, message: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Send one ng command; fires with the reply dictionary (C{result} ok or pong)."""
        name = str(message.get("command", "?"))
        if self._port is None:
            return defer.fail(RtpengineError(f"{name}: the rtpengine client is not running"))
        cookie = self._cookie()
        entry = _Pending(Deferred(), encode_message(cookie, message), name, self.tries)
        self._pending[cookie] = entry
        self._send(cookie, entry)
        return entry.deferred

    def _send(self, cookie: str, entry: _Pending) -> None:
        entry.tries_left -= 1
        self.stats.incr("rtpengine_sent")
        try:
            assert self._port is not None
            self._port.write(entry.data, self.address)  # type: ignore[attr-defined]
        except Exception as error:  # any send error is one lost try
            self.stats.incr("rtpengine_send_errors")
            log.warn(
                "cannot send to rtpengine {address}: {error}", address=self.address, error=error
            )
        entry.timer = self.reactor.callLater(self.timeout, self._expired, cookie)

    def _expired(self, cookie: str) -> None:
        entry = self._pending.get(cookie)
        if entry is None:
            return
        if entry.tries_left > 0:
            self.stats.incr("rtpengine_retransmissions")
            self._send(cookie, entry)
            return
        del self._pending[cookie]
        self.stats.incr("rtpengine_timeouts")
        host, port = self.address
        entry.deferred.errback(
            RtpengineTimeoutError(
                f"{entry.command}: no reply from rtpengine at {host}:{port} "
                f"after {self.tries} tries"
            )
        )

    def reply_received(self, data: bytes, source: tuple[str, int]) -> None:
        """A datagram on the control socket: the reply to one pending command, or noise."""
        if (normalise_host(source[0]), source[1]) != self.address:
            self.stats.incr("rtpengine_foreign_replies")
            return
        try:
            cookie, reply = decode_message(data)
        except NgError:
            self.stats.incr("rtpengine_bad_replies")
            return
        entry = self._pending.pop(cookie, None)
        if entry is None:
            return  # the reply to a retransmission, or very late
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        result = reply.get("result")
        if result in ("ok", "pong"):
            if "warning" in reply:
                log.warn(
                    "rtpengine {command}: {warning}",
                    command=entry.command,
                    warning=reply["warning"],
                )
            entry.deferred.callback(reply)
            return
        self.stats.incr("rtpengine_errors")
        if result == "error":
            reason = reply.get("error-reason", "no reason given")
        elif result == "load limit":
            reason = f"load limit: {reply.get('message', '')}".rstrip(": ")
        else:
            reason = f"unexpected result {result!r}"
        entry.deferred.errback(RtpengineError(f"{entry.command}: {reason}"))

    # -- commands --------------------------------------------------------------------------------
    def ping(self) -> Deferred[None]:
        """Fires when rtpengine answers C{pong}."""

        def pong(reply: dict[str, Any]) -> None:
            if reply.get("result") != "pong":
                raise RtpengineError(f"ping: {reply.get('result')!r} instead of pong")

        return self.command(ping_command()).addCallback(pong)

    def offer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: Optional[str],
        sdp: bytes,
        source: Address,
        towards: Optional[Address] = None,
    ) -> Deferred[bytes]:
        """rtpengine's C{offer}; fires with the SDP for the answerer (C{towards}: where
        the offer goes, when known)."""
        options = self._sdp_options(source, self._ice_towards(call_id, from_tag, sdp, to_tag))
        webrtc = self._webrtc_towards(call_id, from_tag, sdp, source, to_tag, towards)
        if webrtc is not None:
            family = towards.family if towards is not None else None
            options["flags"] = webrtc_flags(self.flags, "offer", webrtc, family)
        message = offer_command(call_id, from_tag, sdp, to_tag=to_tag, **options)
        return self._rewrite(message, call_id, from_tag, to_tag)

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        source: Address,
        towards: Optional[Address] = None,
    ) -> Deferred[bytes]:
        """rtpengine's C{answer}; fires with the SDP for the offerer."""
        options = self._sdp_options(source, self._ice_towards(call_id, to_tag, sdp, from_tag))
        webrtc = self._webrtc_towards(call_id, to_tag, sdp, source, from_tag, towards)
        if webrtc is not None:
            options["flags"] = webrtc_flags(self.flags, "answer", webrtc)
        message = answer_command(call_id, from_tag, to_tag, sdp, **options)
        return self._rewrite(message, call_id, from_tag, to_tag)

    def _webrtc_towards(
        self,
        call_id: str,
        sender: str,
        sdp: bytes,
        source: Address,
        recipient: Optional[str],
        towards: Optional[Address],
    ) -> Optional[bool]:
        """Whether the side receiving rtpengine's SDP is a WebRTC client, when either side
        is one (L{None}: both are plain SIP phones, their SDP needs no bridging).  A side
        is WebRTC when its SIP came over a WebSocket (RFC 7118) or its SDP uses DTLS-SRTP;
        the recipient is judged by where the offer goes, else by its last SDP."""
        sides = self._webrtc.setdefault(call_id, {})
        sending = source.transport in WEBSOCKET or sdp_is_dtls(sdp)
        sides[sender] = sending
        receiving: Optional[bool] = None
        if towards is not None:
            receiving = towards.transport in WEBSOCKET
        elif recipient is not None:
            receiving = sides.get(recipient)
        if recipient is not None and receiving is not None:
            sides.setdefault(recipient, receiving)
        if not sending and not receiving:
            return None
        return bool(receiving)

    def _ice_towards(
        self, call_id: str, sender: str, sdp: bytes, recipient: Optional[str]
    ) -> Optional[bool]:
        """Note whether C{sender}'s SDP carries ICE; whether C{recipient}'s last one did,
        or, for a recipient that has sent no SDP yet, whether the sender's does (rtpengine's
        own default: an answerer without ICE ignores the lines, one with ICE that got none
        would take the call for one without ICE and, like baresip, send no media)."""
        sides = self._ice.setdefault(call_id, {})
        sides[sender] = sdp_has_ice(sdp)
        known = sides.get(recipient) if recipient is not None else None
        return known if known is not None else sides[sender]

    def _sdp_options(
        self, source: Optional[Address], towards_ice: Optional[bool]
    ) -> dict[str, Any]:
        """What offers and answers carry besides the call: flags (with C{ICE=force} towards
        a side that speaks ICE, L{ice_flags}) and the SIP source."""
        return {
            "flags": ice_flags(self.flags, towards_ice),
            "received_from": source.host if source is not None else None,
            "sip_message_type": None,  # rtpengine 10.5 warns about it on every command
        }

    def _rewrite(
        self, message: dict[str, Any], call_id: str, from_tag: str, to_tag: Optional[str]
    ) -> Deferred[bytes]:
        """Send an offer or answer; fires with the SDP rtpengine rewrote."""
        d = self.command(message).addCallback(self._sdp_of)
        return d.addCallback(self._remember, call_id, from_tag, to_tag)

    def delete(
        self, call_id: str, from_tag: Optional[str] = None, to_tag: Optional[str] = None
    ) -> Deferred[None]:
        """rtpengine's C{delete}: the whole call (to-tag only sent with the C{to-tag} flag)."""
        self._calls.pop(call_id, None)
        self._ice.pop(call_id, None)
        self._webrtc.pop(call_id, None)
        message = delete_command(
            call_id, from_tag, to_tag=to_tag, flags=self.delete_flags, sip_message_type=None
        )
        return self.command(message).addCallback(lambda _: None)

    def query(
        self, call_id: str, from_tag: Optional[str] = None, to_tag: Optional[str] = None
    ) -> Deferred[dict[str, Any]]:
        """rtpengine's C{query}: the reply dictionary (C{created}, C{tags}, C{totals}, ...)."""
        return self.command(query_command(call_id, from_tag, to_tag))

    def sessions(self) -> list[dict[str, Any]]:
        """The calls this client set up and has not deleted (rtpengine has the counters:
        L{query})."""
        return [dict(call, call_id=call_id) for call_id, call in self._calls.items()]

    def _remember(self, sdp: bytes, call_id: str, from_tag: str, to_tag: Optional[str]) -> bytes:
        call = self._calls.setdefault(
            call_id, {"backend": "rtpengine", "created": self.reactor.seconds(), "tags": []}
        )
        for tag in (from_tag, to_tag):
            if tag is not None and tag not in call["tags"]:
                call["tags"].append(tag)
        return sdp

    @staticmethod
    def _sdp_of(reply: dict[str, Any]) -> bytes:
        sdp = reply.get("sdp")
        if isinstance(sdp, str):
            return sdp.encode("utf-8")
        if isinstance(sdp, bytes):
            return sdp
        raise RtpengineError("rtpengine replied ok without an SDP")
