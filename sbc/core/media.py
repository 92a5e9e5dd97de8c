# -*- test-case-name: tests.core.test_media -*-
"""
The built-in media relay as a pure model: port pairs, sessions, latching, counters.

Theory of operation.  A call (keyed by Call-ID) has two I{legs}, each named by its SIP tag:
the offerer's (the From tag of the offer) and the answerer's.  As in rtpengine's ng
C{offer}/C{answer}, C{from_tag} is always the offerer's tag: a re-INVITE from the callee
is an offer with the callee's tag, a late offer in a 2xx C{offer(from_tag=callee, ...)}.

Every media stream (C{m=} line) of a call gets one relay port pair per leg: the pair I{facing}
that leg, where that leg sends and from where it receives.  The SDP that goes on to the other
side names the ports facing the other side.  A datagram arriving on leg A's RTP port (or
RTCP, port + 1) is sent from leg B's port of the same kind to leg B's address.

Addresses come from the SDP first (a private SDP address behind a public signalling source
is replaced by the source host), then from I{latching} (symmetric RTP, RFC 4961): the first
datagram on a leg's port fixes its address until a new offer or answer from the leg.  Once
latched, other sources are dropped and counted (rtpengine's C{strict-source} without
C{media-handover}); C{strict_source=False} relays them too.

ICE (RFC 8445): a leg whose SDP carries ICE (or, before its SDP, one offered ICE:
L{sbc.core.ice.IceSides}) gets the relay's own credentials (L{SessionTable.ice_towards},
written by L{sbc.core.sdp.anchor_sdp}); STUN on its ports (RFC 7983 §7) is answered as by
an ICE-lite agent, a valid check latches the leg (with USE-CANDIDATE even when latched
elsewhere).  STUN is never relayed.

The port pool is in L{sbc.core.ports}, a leg's state and the per-datagram verdicts in
L{sbc.core.leg} (both re-exported).  Time comes in as C{now}; the sockets live in
L{sbc.net.relay}, opened and closed through a L{PortListener} as ports come and go.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Optional

from sbc.core.ice import IceCredentials, IceSides, answer_check
from sbc.core.leg import (
    DROP_EMPTY,
    DROP_FOREIGN,
    DROP_NO_SESSION,
    DROP_NO_TARGET,
    DROP_STUN,
    Answered,
    Dropped,
    LegStream,
    Peer,
    Relayed,
    Verdict,
)
from sbc.core.nat import DEFAULT_PRIVATE_RANGES, PrivateRanges
from sbc.core.ports import PortListener, PortPool
from sbc.core.sdp import MediaStream
from sbc.core.stun import is_stun_datagram

__all__ = [
    "MediaError",
    "PortsExhaustedError",
    "UnknownSessionError",
    "PortPool",
    "PortListener",
    "LegStream",
    "StreamRelay",
    "MediaSession",
    "SessionTable",
    "Peer",
    "Relayed",
    "Answered",
    "Dropped",
    "Verdict",
    "DROP_NO_SESSION",
    "DROP_EMPTY",
    "DROP_FOREIGN",
    "DROP_NO_TARGET",
    "DROP_STUN",
]

#: How many port pairs to try when the listener cannot open one (in use by someone else).
OPEN_TRIES = 8


class MediaError(Exception):
    """The relay cannot do what was asked."""


class PortsExhaustedError(MediaError):
    """No free port pair is left in C{[rtp] port_min..port_max}."""


class UnknownSessionError(MediaError):
    """An answer for a call the relay has no offer for."""


@dataclass(slots=True, eq=False)
class StreamRelay:
    """One C{m=} line of a call: two legs, index 0 the offerer's side, 1 the answerer's.

    @ivar held: either leg's last SDP put the stream on hold (sendonly, inactive or a null
        address); a resume (C{sendrecv}) from the leg that held clears it.
    """

    index: int
    media: str
    legs: tuple[LegStream, LegStream]
    held: bool = False

    @property
    def muxed(self) -> bool:
        """RTCP multiplexed on RTP: both sides agreed to it (RFC 5761 §5.1.1)."""
        return self.legs[0].rtcp_mux and self.legs[1].rtcp_mux


@dataclass(eq=False)
class MediaSession:
    """
    The media of one call.

    @ivar tags: the offerer's tag and the answerer's (L{None} until known).
    @ivar streams: per C{m=} index, its relay, or L{None} for a disabled stream.
    @ivar established: an answer has been seen (media timeout applies from then).
    @ivar last_signal: time of the last offer or answer.
    @ivar last_packet: time of the last datagram from either leg.
    """

    call_id: str
    tags: list[Optional[str]]
    created: float
    streams: list[Optional[StreamRelay]] = field(default_factory=list)
    established: bool = False
    last_signal: float = 0.0
    last_packet: Optional[float] = None
    sources: list[Optional[str]] = field(default_factory=lambda: [None, None])
    ice: IceSides = field(default_factory=IceSides)

    def side(self, from_tag: str, to_tag: Optional[str]) -> tuple[int, list[Optional[str]]]:
        """
        Which side sends this SDP (0 the first offerer, 1 the other), and the tags once this
        SDP is applied: the other side's tag is learnt, or replaced when another fork of
        the call answers or offers.

        @raise UnknownSessionError: C{from_tag} is not a leg's and C{to_tag} is not the
            first offerer's.
        """
        first, other = self.tags
        if from_tag == first:
            return 0, [first, to_tag if to_tag is not None else other]
        if from_tag == other:
            return 1, [first, other]
        if to_tag is not None and to_tag == first:
            return 1, [first, from_tag]
        raise UnknownSessionError(f"call {self.call_id}: tag {from_tag!r} is not one of its legs")

    @property
    def foreign_dropped(self) -> int:
        """Datagrams dropped because they came from a source other than the latched one."""
        return sum(leg.foreign for s in self.streams if s is not None for leg in s.legs)

    @property
    def held(self) -> bool:
        """Every stream is disabled or on hold: no media is expected."""
        return all(s is None or s.held for s in self.streams)

    def pairs(self) -> list[int]:
        """Every RTP port the call holds."""
        return [leg.port for s in self.streams if s is not None for leg in s.legs]

    def as_dict(self) -> dict[str, Any]:
        """The call for the admin C{rtp_sessions} command."""
        legs = []
        for side in (0, 1):
            streams = []
            for stream in self.streams:
                if stream is None:
                    continue
                leg = stream.legs[side].as_dict()
                leg["index"], leg["media"] = stream.index, stream.media
                streams.append(leg)
            legs.append(
                {
                    "tag": self.tags[side],
                    "source": self.sources[side],
                    "packets": sum(s["packets"] for s in streams),
                    "bytes": sum(s["bytes"] for s in streams),
                    "lost": sum(s["lost"] for s in streams),
                    "streams": streams,
                }
            )
        return {
            "call_id": self.call_id,
            "created": self.created,
            "last_signal": self.last_signal,
            "last_packet": self.last_packet,
            "established": self.established,
            "held": self.held,
            "foreign_dropped": self.foreign_dropped,
            "packets": legs[0]["packets"] + legs[1]["packets"],
            "bytes": legs[0]["bytes"] + legs[1]["bytes"],
            "lost": legs[0]["lost"] + legs[1]["lost"],
            "legs": legs,
        }


class _NoListener:
    def open_pair(self, port: int) -> bool:
        return True

    def close_pair(self, port: int) -> None:
        pass


def _guess(address: str, source: Optional[str], private: PrivateRanges) -> str:
    """The SDP address, or the signalling source when the SDP one is private and it is not
    (same family only)."""
    if source is None or address == source or (":" in address) != (":" in source):
        return address
    if private.contains(address) and not private.contains(source):
        return source
    return address


def _usable(address: str) -> bool:
    """An IP literal that is not null (hold): something a datagram can be sent to (an SDP
    host name is not resolved: latching will find the peer)."""
    try:
        return not ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


class SessionTable:
    """
    Every relayed call, by Call-ID, and the index from relay port to leg that the packet
    path uses.

    @ivar media_timeout: an established call with no datagram for this long is dead.
    @ivar hold_timeout: ... the same, while every stream is on hold or disabled.
    @ivar offer_timeout: a call offered but never answered is dropped after this long.
    @ivar strict_source: once latched, drop datagrams from any other source (the default).
    @ivar rng: where ICE credentials come from (the adapter passes C{SystemRandom}).
    @ivar private: the ranges where an SDP address is not worth trying when the signalling
        came from outside them (C{[nat] private_ranges}).
    """

    def __init__(
        self,
        pool: PortPool,
        media_timeout: float = 60.0,
        *,
        hold_timeout: float = 3600.0,
        offer_timeout: float = 3600.0,
        strict_source: bool = True,
        listener: Optional[PortListener] = None,
        private: PrivateRanges = PrivateRanges.of(DEFAULT_PRIVATE_RANGES),
        rng: Optional[Random] = None,
    ) -> None:
        self.pool = pool
        self.rng = rng if rng is not None else Random()
        self.private = private
        self.media_timeout = media_timeout
        self.hold_timeout = hold_timeout
        self.offer_timeout = offer_timeout
        self.strict_source = strict_source
        self.listener: PortListener = listener or _NoListener()
        self._sessions: dict[str, MediaSession] = {}
        # port -> (session, leg the datagram comes from, leg it goes to, stream, is RTCP)
        self._ports: dict[int, tuple[MediaSession, LegStream, LegStream, StreamRelay, bool]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._sessions

    def get(self, call_id: str) -> Optional[MediaSession]:
        """The session of C{call_id}, if any."""
        return self._sessions.get(call_id)

    # -- signalling ------------------------------------------------------------------------------
    def offer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: Optional[str],
        streams: Sequence[MediaStream],
        now: float,
        source: Optional[str] = None,
    ) -> list[Optional[int]]:
        """
        An SDP offer from the leg tagged C{from_tag}.

        @param source: the host the offer's SIP message came from (first guess for a private
            SDP address).
        @return: per stream, the relay port to write into the offer sent on (the pair facing
            the other leg), or L{None} for a disabled stream.
        @raise PortsExhaustedError: not enough free pairs (nothing changed).
        @raise UnknownSessionError: C{from_tag} and C{to_tag} match neither leg of the call.
        """
        session = self._sessions.get(call_id)
        if session is None:
            session = MediaSession(call_id, [from_tag, to_tag], now, last_signal=now)
            ports = self._describe(session, 0, streams, now, source)  # changes nothing on error
            self._sessions[call_id] = session
            self._offer_ice(session, 0)
            return ports
        side, tags = session.side(from_tag, to_tag)
        ports = self._describe(session, side, streams, now, source)
        session.tags = tags
        self._offer_ice(session, side)
        return ports

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        streams: Sequence[MediaStream],
        now: float,
        source: Optional[str] = None,
    ) -> list[Optional[int]]:
        """
        The SDP answer to the offer from C{from_tag}, sent by the leg tagged C{to_tag}.

        @return: per stream, the relay port to write into the answer sent on (the pair facing
            the offerer), or L{None} for a rejected stream.
        @raise UnknownSessionError: no such call, or tags matching neither leg.
        @raise PortsExhaustedError: the answer has more streams than pairs are left.
        """
        session = self._sessions.get(call_id)
        if session is None:
            raise UnknownSessionError(f"no offer for call {call_id}")
        offerer, tags = session.side(from_tag, to_tag)
        ports = self._describe(session, 1 - offerer, streams, now, source, answering=True)
        session.tags = tags
        session.established = True
        return ports

    def _describe(
        self,
        session: MediaSession,
        side: int,
        streams: Sequence[MediaStream],
        now: float,
        source: Optional[str],
        answering: bool = False,
    ) -> list[Optional[int]]:
        """Apply one side's SDP to the call; all pairs are taken before anything changes."""
        have = session.streams
        needed = sum(
            1
            for i, s in enumerate(streams)
            if not s.disabled and (i >= len(have) or have[i] is None)
        )
        fresh: list[int] = []
        for _ in range(2 * needed):
            port = self._take()
            if port is None:
                for taken in fresh:
                    self._give_back(taken)
                raise PortsExhaustedError(
                    f"no free RTP port pair in {self.pool.port_min}..{self.pool.port_max}"
                    f" ({self.pool.in_use} pairs in use)"
                )
            fresh.append(port)
        session.last_signal = now
        session.sources[side] = source
        session.ice.learn(side, streams, answering, self.rng)
        ports: list[Optional[int]] = []
        for index, stream in enumerate(streams):
            relay = session.streams[index] if index < len(session.streams) else None
            if stream.disabled:
                if relay is not None:
                    self._drop_stream(session, index)
                ports.append(None)
                continue
            if relay is None:
                legs = (LegStream(fresh.pop()), LegStream(fresh.pop()))
                relay = StreamRelay(index, stream.media, legs)
                while len(session.streams) <= index:
                    session.streams.append(None)
                session.streams[index] = relay
                for this, other in ((legs[0], legs[1]), (legs[1], legs[0])):
                    self._ports[this.port] = (session, this, other, relay, False)
                    self._ports[this.port + 1] = (session, this, other, relay, True)
            leg = relay.legs[side]
            address = stream.address
            if address is None or not _usable(address):
                leg.sdp_rtp = leg.sdp_rtcp = None
            else:
                address = _guess(address, source, self.private)
                leg.sdp_rtp = (address, stream.port)
                rtcp_host = stream.rtcp_address or address
                if rtcp_host == stream.address:
                    rtcp_host = address
                usable = _usable(rtcp_host) and stream.rtcp_port
                leg.sdp_rtcp = (rtcp_host, stream.rtcp_port) if usable else None
            leg.rtcp_mux = stream.rtcp_mux
            leg.forget_latch()
            leg.ice = session.ice.credentials[side]
            leg.ice_ufrag = stream.ice_ufrag if leg.ice is not None else None
            leg.hold = stream.held
            relay.held = relay.legs[0].hold or relay.legs[1].hold
            relay.media = stream.media
            ports.append(relay.legs[1 - side].port)
        for index in range(len(streams), len(session.streams)):
            self._drop_stream(session, index)
        del session.streams[len(streams) :]
        return ports

    def _offer_ice(self, session: MediaSession, side: int) -> None:
        """The offer from C{side} goes on; the other side may be offered ICE before its
        answer is seen (L{IceSides.offer}), and its legs then answer its checks at once."""
        if session.ice.offer(side, self.rng):
            for relay in session.streams:
                if relay is not None:
                    relay.legs[1 - side].ice = session.ice.credentials[1 - side]

    def ice_towards(self, call_id: str, tag: Optional[str]) -> Optional[IceCredentials]:
        """The relay's ICE credentials towards the leg tagged C{tag} (for the SDP sent to
        it; C{tag} L{None}: the answerer not known yet), or L{None} when that leg's SDP
        carried no ICE (or, before it sent any, the offer it gets carries none)."""
        session = self._sessions.get(call_id)
        if session is None or tag not in session.tags:
            return None
        return session.ice.credentials[session.tags.index(tag)]

    def _take(self) -> Optional[int]:
        for _ in range(OPEN_TRIES):
            port = self.pool.allocate()
            if port is None:
                return None
            if self.listener.open_pair(port):
                return port
            self.pool.release(port)  # busy: to the back of the queue
        return None

    def _give_back(self, port: int) -> None:
        self.listener.close_pair(port)
        self.pool.release(port)
        self._ports.pop(port, None)
        self._ports.pop(port + 1, None)

    def _drop_stream(self, session: MediaSession, index: int) -> None:
        relay = session.streams[index]
        if relay is None:
            return
        session.streams[index] = None
        for leg in relay.legs:
            self._give_back(leg.port)

    def _release(self, session: MediaSession) -> None:
        for index in range(len(session.streams)):
            self._drop_stream(session, index)

    def delete(
        self, call_id: str, from_tag: Optional[str] = None, to_tag: Optional[str] = None
    ) -> bool:
        """
        End a call's media and give its ports back.  With tags, only if they name its legs
        (a To tag not yet learnt matches).

        @return: whether a session was deleted.
        """
        session = self._sessions.get(call_id)
        if session is None:
            return False
        tags = session.tags
        if from_tag is not None and from_tag not in tags:
            return False
        if to_tag is not None and to_tag not in tags and None not in tags:
            return False
        del self._sessions[call_id]
        self._release(session)
        return True

    def clear(self) -> list[str]:
        """Delete every call; return their Call-IDs."""
        call_ids = list(self._sessions)
        for call_id in call_ids:
            self.delete(call_id)
        return call_ids

    # -- media -----------------------------------------------------------------------------------
    def receive(
        self, port: int, source: Peer, data: bytes, now: float
    ) -> Optional[tuple[int, Peer]]:
        """
        A datagram reached relay port C{port} from C{source} (L{route} without the reason).

        @return: the relay port to send it from and where to, or L{None} to drop it.
        """
        verdict = self.route(port, source, data, now)
        return (verdict.port, verdict.target) if isinstance(verdict, Relayed) else None

    def owner(self, port: int) -> Optional[tuple[str, bool]]:
        """The Call-ID of the call relay port C{port} serves, and whether it is its RTCP
        port (for capture: Kamailio siptrace's correlation of RTCP to its call)."""
        entry = self._ports.get(port)
        return (entry[0].call_id, entry[4]) if entry is not None else None

    def route(self, port: int, source: Peer, data: bytes, now: float) -> Verdict:
        """
        What to do with a datagram that reached relay port C{port} from C{source}.

        @return: L{Relayed} (send it on), L{Answered} (send a reply back to C{source} from
            C{port}) or L{Dropped} with the reason.
        """
        entry = self._ports.get(port)
        if entry is None:
            return Dropped(DROP_NO_SESSION)
        session, leg, other, relay, rtcp = entry
        if is_stun_datagram(data):
            return self._check(session, leg, rtcp, source, data, now)
        leg.packets += 1
        leg.bytes += len(data)
        leg.last_packet = session.last_packet = now
        if not data:
            leg.dropped += 1
            return Dropped(DROP_EMPTY)
        if self.strict_source and not leg.accepts(source, rtcp):
            leg.dropped += 1
            leg.foreign += 1
            return Dropped(DROP_FOREIGN)
        if rtcp:
            if leg.latched_rtcp is None:
                leg.latched_rtcp = source
            target = other.rtcp_target(relay.muxed)
        else:
            if leg.latched_rtp is None:
                leg.latched_rtp = source
            leg.count_rtp(data)
            target = other.rtp_target()
        if target is None:
            leg.dropped += 1
            return Dropped(DROP_NO_TARGET)
        return Relayed((other.port + 1 if rtcp else other.port), target)

    def _check(
        self,
        session: MediaSession,
        leg: LegStream,
        rtcp: bool,
        source: Peer,
        data: bytes,
        now: float,
    ) -> Verdict:
        """A STUN datagram on a leg's port: an ICE connectivity check, or dropped."""
        leg.stun += 1
        if leg.ice is None:
            leg.dropped += 1
            return Dropped(DROP_STUN)
        answer = answer_check(data, source, leg.ice, leg.ice_ufrag)
        if answer.reply is None:
            leg.dropped += 1
            return Dropped(DROP_STUN)
        if not answer.valid:
            leg.stun_refused += 1
            return Answered(answer.reply, refused=True)
        if rtcp:
            if answer.use_candidate or leg.latched_rtcp is None:
                leg.latched_rtcp = source
        elif answer.use_candidate or leg.latched_rtp is None:
            leg.latched_rtp = source
        leg.last_packet = session.last_packet = now
        return Answered(answer.reply)

    # -- timeouts and listing --------------------------------------------------------------------
    def expired(self, now: float) -> list[str]:
        """
        Calls whose media is dead at C{now}: established ones with no datagram (nor new SDP)
        for C{media_timeout} (C{hold_timeout} while everything is on hold), and offers never
        answered for C{offer_timeout}.
        """
        dead = []
        for call_id, session in self._sessions.items():
            if not session.established:
                if now - session.last_signal >= self.offer_timeout:
                    dead.append(call_id)
                continue
            last = session.last_signal
            if session.last_packet is not None and session.last_packet > last:
                last = session.last_packet
            limit = self.hold_timeout if session.held else self.media_timeout
            if now - last >= limit:
                dead.append(call_id)
        return dead

    def sessions(self) -> list[dict[str, Any]]:
        """Every call as a dictionary (admin C{rtp_sessions}), oldest first."""
        return [s.as_dict() for s in sorted(self._sessions.values(), key=lambda s: s.created)]

    def totals(self) -> dict[str, int]:
        """Sessions, pairs in use and free."""
        return {
            "sessions": len(self._sessions),
            "pairs_in_use": self.pool.in_use,
            "pairs_free": self.pool.free,
        }
