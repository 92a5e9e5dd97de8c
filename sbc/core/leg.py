# -*- test-case-name: tests.core.test_media -*-
"""
One leg of one relayed stream (L{LegStream}): where its peer is, what it latched to, its
counters; and what the session table decides for a datagram (L{Relayed}, L{Answered},
L{Dropped}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from sbc.core.ice import IceCredentials

__all__ = [
    "Peer",
    "LegStream",
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

#: (host, port)
Peer = tuple[str, int]

#: RFC 3550 appendix A.1: a forward jump larger than this is a restart, not a loss.
MAX_DROPOUT = 3000
#: ... and a packet up to this far behind is a late one (it fills a gap counted as lost).
MAX_MISORDER = 100

#: Why L{SessionTable.route} dropped a datagram.
DROP_NO_SESSION = "no-session"
DROP_EMPTY = "empty"
DROP_FOREIGN = "foreign"
DROP_NO_TARGET = "no-target"
DROP_STUN = "stun"


@dataclass(frozen=True, slots=True)
class Relayed:
    """Send the datagram on from relay port C{port} to C{target}."""

    port: int
    target: Peer


@dataclass(frozen=True, slots=True)
class Answered:
    """Send C{reply} back to the datagram's source from the port it arrived on (a STUN
    response; C{refused}: an error response to a check that failed authentication)."""

    reply: bytes
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Dropped:
    """Relay nothing; C{reason} is one of the C{DROP_*} names."""

    reason: str


#: What L{SessionTable.route} decides for one datagram.
Verdict = Union[Relayed, Answered, Dropped]


@dataclass(slots=True, eq=False)
class LegStream:
    """
    One leg of one stream: the relay pair facing the leg and what is known of the leg's peer.

    @ivar port: the relay's RTP port facing this leg (RTCP: C{port + 1}).
    @ivar sdp_rtp: where the leg's SDP says it receives RTP (L{None}: unknown or on hold).
    @ivar sdp_rtcp: ... and RTCP.
    @ivar rtcp_mux: the leg's SDP offers or accepts C{a=rtcp-mux}.
    @ivar latched_rtp: the source of the first RTP datagram since the leg's last SDP.
    @ivar latched_rtcp: ... of the first RTCP datagram.
    @ivar packets: datagrams received from the leg (RTP and RTCP).
    @ivar bytes: their size in bytes (UDP payload).
    @ivar lost: RTP sequence numbers skipped (RFC 3550 A.1, 16-bit wrap handled).
    @ivar malformed: datagrams on the RTP port that are not RTP (still relayed if not empty).
    @ivar dropped: datagrams not relayed (nowhere to send, empty, not the latched source with
        C{strict_source}, STUN that is not a check to answer).
    @ivar foreign: of those, datagrams from a source other than the latched one.
    @ivar hold: the leg's last SDP put the stream on hold (L{MediaStream.held}).
    @ivar ice: the relay's ICE credentials towards the leg (L{None}: the leg has no ICE).
    @ivar ice_ufrag: the leg's own C{a=ice-ufrag} (the second half of a check's USERNAME).
    @ivar stun: STUN datagrams from the leg (never relayed).
    @ivar stun_refused: ... of those, checks that failed authentication.
    @ivar last_packet: when the last datagram came from the leg.
    """

    port: int
    sdp_rtp: Optional[Peer] = None
    sdp_rtcp: Optional[Peer] = None
    rtcp_mux: bool = False
    latched_rtp: Optional[Peer] = None
    latched_rtcp: Optional[Peer] = None
    packets: int = 0
    bytes: int = 0
    lost: int = 0
    malformed: int = 0
    dropped: int = 0
    foreign: int = 0
    hold: bool = False
    ice: Optional[IceCredentials] = None
    ice_ufrag: Optional[str] = None
    stun: int = 0
    stun_refused: int = 0
    last_packet: Optional[float] = None
    seq: int = -1
    ssrc: bytes = b""

    def rtp_target(self) -> Optional[Peer]:
        """Where RTP for this leg goes: the latched source, else the SDP address."""
        return self.latched_rtp or self.sdp_rtp

    def rtcp_target(self, muxed: bool) -> Optional[Peer]:
        """Where RTCP for this leg goes: its latched RTCP source; else the SDP's RTCP address
        if RTP came from the SDP's address; else the latched RTP source's port + 1 (its
        RTP target when RTCP is multiplexed)."""
        if muxed:
            return self.rtp_target()
        if self.latched_rtcp is not None:
            return self.latched_rtcp
        rtp = self.latched_rtp
        if rtp is None or (rtp == self.sdp_rtp and self.sdp_rtcp is not None):
            return self.sdp_rtcp  # nothing learnt, or RTP comes from where the SDP said
        return (rtp[0], rtp[1] + 1)  # behind NAT: the SDP's RTCP address is no better

    def accepts(self, source: Peer, rtcp: bool) -> bool:
        """Strict source: is C{source} the one this leg latched to for this kind of packet
        (or, before the first packet of this kind, on the host latched by the other kind)?"""
        latched = self.latched_rtcp if rtcp else self.latched_rtp
        if latched is not None:
            return latched == source
        sibling = self.latched_rtp if rtcp else self.latched_rtcp
        return sibling is None or sibling[0] == source[0]

    def forget_latch(self) -> None:
        """A new SDP from the leg: learn its address again."""
        self.latched_rtp = self.latched_rtcp = None
        self.seq = -1
        self.ssrc = b""

    def count_rtp(self, data: bytes) -> None:
        """Loss accounting from the RTP header (version 2, sequence number, SSRC)."""
        if len(data) < 12 or data[0] & 0xC0 != 0x80:
            self.malformed += 1
            return
        if 192 <= data[1] <= 223:
            return  # RTCP multiplexed on the RTP port (RFC 5761 §4)
        seq = (data[2] << 8) | data[3]
        ssrc = data[8:12]
        if ssrc != self.ssrc or self.seq < 0:
            self.ssrc, self.seq = ssrc, seq
            return
        gap = (seq - self.seq) & 0xFFFF
        if gap == 0:
            return  # duplicate
        if gap < 0x8000:
            if gap <= MAX_DROPOUT:
                self.lost += gap - 1
            self.seq = seq
        elif 0x10000 - gap <= MAX_MISORDER and self.lost > 0:
            self.lost -= 1  # a late packet fills a gap counted as lost

    def as_dict(self) -> dict[str, Any]:
        """The leg of this stream for the admin listing."""
        return {
            "local_port": self.port,
            "sdp": _peer_text(self.sdp_rtp),
            "latched": _peer_text(self.latched_rtp),
            "latched_rtcp": _peer_text(self.latched_rtcp),
            "packets": self.packets,
            "bytes": self.bytes,
            "lost": self.lost,
            "malformed": self.malformed,
            "dropped": self.dropped,
            "foreign_dropped": self.foreign,
            "ice": self.ice is not None,
            "stun": self.stun,
            "stun_refused": self.stun_refused,
            "last_packet": self.last_packet,
        }


def _peer_text(peer: Optional[Peer]) -> Optional[str]:
    if peer is None:
        return None
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
