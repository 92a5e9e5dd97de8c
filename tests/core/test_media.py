"""Tests for L{sbc.core.media}: port pairs, legs by tag, latching, counters, timeouts."""

from __future__ import annotations

import random
import struct
from typing import Optional

import pytest

from sbc.core.media import (
    DROP_FOREIGN,
    DROP_STUN,
    Dropped,
    MediaSession,
    PortPool,
    PortsExhaustedError,
    Relayed,
    SessionTable,
    UnknownSessionError,
)
from sbc.core.sdp import MediaStream, media_streams

ALICE = ("192.0.2.10", 4000)
BOB = ("192.0.2.20", 6000)


def stream(
    address: Optional[str] = ALICE[0],
    port: int = ALICE[1],
    *,
    index: int = 0,
    media: str = "audio",
    rtcp_port: Optional[int] = None,
    rtcp_address: Optional[str] = None,
    direction: str = "sendrecv",
    rtcp_mux: bool = False,
) -> MediaStream:
    return MediaStream(
        index=index,
        media=media,
        port=port,
        port_count=1,
        protocol="RTP/AVP",
        address=address,
        rtcp_port=rtcp_port if rtcp_port is not None else (port + 1 if port else 0),
        rtcp_address=rtcp_address or address,
        direction=direction,
        rtcp_mux=rtcp_mux,
    )


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\x00" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, ssrc) + payload


def call(table: SessionTable, call_id: str = "c1", now: float = 0.0) -> tuple[int, int]:
    """Alice offers, Bob answers: (port facing Alice, port facing Bob)."""
    [to_bob] = table.offer(call_id, "A", None, [stream(*ALICE)], now)
    [to_alice] = table.answer(call_id, "A", "B", [stream(*BOB)], now)
    assert to_bob is not None and to_alice is not None
    return to_alice, to_bob


# -- PortPool ------------------------------------------------------------------------------------


def test_pool_pairs_are_even_and_fit() -> None:
    """An odd port_min rounds up; the last pair's RTCP port is within port_max."""
    pool = PortPool(30001, 30009)
    ports = [pool.allocate() for _ in range(pool.size)]
    assert ports == [30002, 30004, 30006, 30008]
    assert pool.allocate() is None
    assert PortPool(30000, 30009).size == 5 and PortPool(30000, 30008).size == 4


def test_pool_never_hands_out_a_pair_twice_and_reuses_late() -> None:
    """Released pairs go to the back of the queue; unknown releases change nothing."""
    pool = PortPool(40000, 40007)
    a, b = pool.allocate(), pool.allocate()
    assert a != b and a in pool
    assert pool.release(a) and not pool.release(a) and not pool.release(12345)
    assert [pool.allocate(), pool.allocate(), pool.allocate()] == [40004, 40006, 40000]
    assert pool.allocate() is None and pool.in_use == 4 and pool.free == 0


@pytest.mark.parametrize("low, high", [(30000, 30000), (0, 10), (30001, 30002), (5, 70000)])
def test_pool_refuses_ranges_without_a_pair(low: int, high: int) -> None:
    """A range that holds no pair (or is not a port range) is a configuration error."""
    with pytest.raises(ValueError):
        PortPool(low, high)


# -- offer / answer ------------------------------------------------------------------------------


def test_offer_and_answer_use_one_pair_per_leg_and_stream() -> None:
    """Two streams: four pairs, the offer names the ports facing Bob, the answer Alice's."""
    table = SessionTable(PortPool(30000, 30099))
    offer = [stream(*ALICE), stream("192.0.2.11", 5000, index=1, media="video")]
    to_bob = table.offer("c1", "A", None, offer, 0.0)
    assert table.pool.in_use == 4 and len(set(to_bob)) == 2
    answer = [stream(*BOB), stream("192.0.2.21", 7000, index=1, media="video")]
    to_alice = table.answer("c1", "A", "B", answer, 1.0)
    assert table.pool.in_use == 4
    assert not set(to_alice) & set(to_bob)
    session = table.get("c1")
    assert session is not None and session.tags == ["A", "B"] and session.established


def test_packets_are_relayed_both_ways() -> None:
    """Alice to the port facing her goes out of Bob's port to Bob's SDP address, and back."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table)
    assert table.receive(to_alice, ALICE, rtp(1), 1.0) == (to_bob, BOB)
    assert table.receive(to_bob, BOB, rtp(1), 1.0) == (to_alice, ALICE)
    assert table.receive(to_alice + 1, ALICE, b"\x81\xc8rtcp", 1.0) == (to_bob + 1, (BOB[0], 6001))
    assert table.receive(29998, ALICE, rtp(1), 1.0) is None  # not a relay port


def test_latching_to_the_first_source() -> None:
    """Symmetric RTP: replies go where the first packet came from, not to the SDP address."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table)
    nat = ("198.51.100.7", 61000)
    assert table.receive(to_alice, nat, rtp(1), 1.0) == (to_bob, BOB)
    assert table.receive(to_bob, BOB, rtp(1), 1.0) == (to_alice, nat)
    # RTCP before any RTCP came: the latched RTP address, port + 1.
    assert table.receive(to_bob + 1, BOB, b"\x81\xc8x", 1.0) == (to_alice + 1, (nat[0], 61001))
    assert table.receive(to_alice + 1, (nat[0], 61500), b"\x81\xc8x", 1.0)
    assert table.receive(to_bob + 1, BOB, b"\x81\xc8x", 1.0) == (to_alice + 1, (nat[0], 61500))
    # A second source does not move the latch.
    assert table.receive(to_alice, ("203.0.113.66", 1), rtp(2), 1.0) is None
    assert table.receive(to_bob, BOB, rtp(2), 1.0) == (to_alice, nat)


def test_strict_source_drops_and_counts_other_sources() -> None:
    """Once a leg latched, RTP and RTCP from any other source are dropped and counted."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table)
    stranger = ("203.0.113.66", 4000)
    assert table.route(to_alice, ALICE, rtp(1), 1.0) == Relayed(to_bob, BOB)
    assert table.route(to_alice, stranger, rtp(2), 1.0) == Dropped(DROP_FOREIGN)
    assert table.route(to_alice, (ALICE[0], 4002), rtp(3), 1.0) == Dropped(DROP_FOREIGN)
    # RTCP not yet latched: only from the host RTP latched to.
    assert table.route(to_alice + 1, stranger, b"\x81\xc8x", 1.0) == Dropped(DROP_FOREIGN)
    assert table.route(to_alice + 1, (ALICE[0], 4001), b"\x81\xc8x", 1.0) == Relayed(
        to_bob + 1, (BOB[0], 6001)
    )
    assert table.route(to_alice + 1, (ALICE[0], 4005), b"\x81\xc8x", 1.0) == Dropped(DROP_FOREIGN)
    # Bob has not sent yet: his first packet latches his leg, whatever the others did.
    assert table.route(to_bob, BOB, rtp(1), 1.0) == Relayed(to_alice, ALICE)
    assert table.route(to_alice, ALICE, rtp(4), 1.0) == Relayed(to_bob, BOB)
    session = table.get("c1")
    assert session is not None and session.streams[0] is not None
    leg = session.streams[0].legs[0]
    assert (leg.foreign, leg.dropped) == (4, 4)
    assert session.foreign_dropped == 4
    listed = session.as_dict()
    assert listed["foreign_dropped"] == 4
    assert listed["legs"][0]["streams"][0]["foreign_dropped"] == 4


def test_strict_source_off_relays_other_sources() -> None:
    """strict_source=False: a second source is relayed but does not move the latch."""
    table = SessionTable(PortPool(30000, 30099), strict_source=False)
    to_alice, to_bob = call(table)
    assert table.receive(to_alice, ALICE, rtp(1), 1.0)
    assert table.receive(to_alice, ("203.0.113.66", 1), rtp(2), 1.0) == (to_bob, BOB)
    assert table.receive(to_bob, BOB, rtp(1), 1.0) == (to_alice, ALICE)
    session = table.get("c1")
    assert session is not None and session.foreign_dropped == 0


def test_strict_source_relatches_only_after_a_new_sdp() -> None:
    """A new offer from the leg lets a new source latch; the other leg stays strict."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table)
    moved = ("198.51.100.8", 62000)
    table.receive(to_alice, ALICE, rtp(1), 1.0)
    table.receive(to_bob, BOB, rtp(1), 1.0)
    assert table.receive(to_alice, moved, rtp(2), 1.0) is None
    table.offer("c1", "A", "B", [stream(*moved)], 2.0)
    table.answer("c1", "A", "B", [stream(*BOB)], 2.0)
    assert table.receive(to_alice, moved, rtp(3), 2.0) == (to_bob, BOB)
    assert table.receive(to_alice, ALICE, rtp(4), 2.0) is None


def test_relatching_after_a_new_offer() -> None:
    """A re-INVITE from Alice forgets her latch (she moved); Bob's stays."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table)
    old, new = ("198.51.100.7", 61000), ("198.51.100.8", 62000)
    table.receive(to_alice, old, rtp(1), 1.0)
    bob_nat = ("198.51.100.9", 9000)
    table.receive(to_bob, bob_nat, rtp(1), 1.0)
    assert table.offer("c1", "A", "B", [stream("192.0.2.30", 4100)], 2.0) == [to_bob]
    assert table.receive(to_bob, bob_nat, rtp(2), 2.0) == (to_alice, ("192.0.2.30", 4100))
    table.receive(to_alice, new, rtp(2), 2.0)
    assert table.receive(to_bob, bob_nat, rtp(3), 2.0) == (to_alice, new)
    assert table.receive(to_alice, new, rtp(3), 2.0) == (to_bob, bob_nat)


def test_reinvite_from_the_callee_and_late_offer() -> None:
    """from_tag is always the offerer's: the callee's re-INVITE and a 2xx late offer."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table)
    assert table.offer("c1", "B", "A", [stream("192.0.2.40", 6100)], 2.0) == [to_alice]
    assert table.answer("c1", "B", "A", [stream(*ALICE)], 2.0) == [to_bob]
    assert table.receive(to_alice, ALICE, rtp(1), 3.0) == (to_bob, ("192.0.2.40", 6100))
    # Late offer: INVITE without SDP, the 200 OK offers (callee's tag), the ACK answers.
    [to_caller] = table.offer("c2", "B", "A", [stream(*BOB)], 0.0)
    [to_callee] = table.answer("c2", "B", "A", [stream(*ALICE)], 1.0)
    assert table.receive(to_callee, BOB, rtp(1), 1.0) == (to_caller, ALICE)
    assert table.receive(to_caller, ALICE, rtp(1), 1.0) == (to_callee, BOB)
    session = table.get("c2")
    assert session is not None and session.tags == ["B", "A"]


def test_tags_must_name_a_leg() -> None:
    """An answer without an offer, or from a stranger, is refused and changes nothing."""
    table = SessionTable(PortPool(30000, 30099))
    with pytest.raises(UnknownSessionError):
        table.answer("nope", "A", "B", [stream(*BOB)], 0.0)
    call(table)
    with pytest.raises(UnknownSessionError):
        table.offer("c1", "X", "Y", [stream(*ALICE)], 1.0)
    assert table.pool.in_use == 2


def test_another_fork_answering_takes_the_answerer_leg() -> None:
    """An answer with another To tag (a fork) replaces the answerer's tag and address."""
    table = SessionTable(PortPool(30000, 30099))
    [to_bob] = table.offer("c1", "A", None, [stream(*ALICE)], 0.0)
    [to_alice] = table.answer("c1", "A", "B1", [stream(*BOB)], 1.0)
    assert table.answer("c1", "A", "B2", [stream("192.0.2.22", 6200)], 1.0) == [to_alice]
    assert table.receive(to_alice, ALICE, rtp(1), 1.0) == (to_bob, ("192.0.2.22", 6200))
    session = table.get("c1")
    assert session is not None and session.tags == ["A", "B2"]


def test_private_sdp_address_guessed_from_the_signalling_source() -> None:
    """A private SDP address behind a public source: the source host is the first guess."""
    table = SessionTable(PortPool(30000, 30099))
    [to_bob] = table.offer("c1", "A", None, [stream("10.0.0.5", 4000)], 0.0, "198.51.100.7")
    [to_alice] = table.answer("c1", "A", "B", [stream(*BOB)], 1.0, "192.0.2.99")
    assert table.receive(to_bob, BOB, rtp(1), 1.0) == (to_alice, ("198.51.100.7", 4000))
    assert table.receive(to_alice, ALICE, rtp(1), 1.0) == (to_bob, BOB)  # public SDP kept


def test_disabled_and_added_streams() -> None:
    """Port 0 takes no pair; disabling later gives the pairs back; a new m= line gets pairs."""
    table = SessionTable(PortPool(30000, 30099))
    offer = [stream(*ALICE), stream(ALICE[0], 0, index=1, media="video")]
    ports = table.offer("c1", "A", None, offer, 0.0)
    assert ports[1] is None and table.pool.in_use == 2
    table.answer("c1", "A", "B", [stream(*BOB), stream(BOB[0], 0, index=1)], 0.0)
    video = stream("192.0.2.11", 5000, index=1, media="video")
    ports = table.offer("c1", "A", "B", [stream(*ALICE), video], 1.0)
    assert ports[1] is not None and table.pool.in_use == 4
    answer = table.answer("c1", "A", "B", [stream(*BOB), stream(BOB[0], 0, index=1)], 1.0)
    assert answer[1] is None and table.pool.in_use == 2
    assert table.receive(ports[1], ALICE, rtp(1), 1.0) is None  # released port
    assert table.offer("c1", "A", "B", [stream(*ALICE)], 2.0) and table.pool.in_use == 2


def test_exhaustion_changes_nothing() -> None:
    """Not enough pairs: PortsExhaustedError, no session, no pair taken; a re-offer keeps
    the call as it was."""
    table = SessionTable(PortPool(30000, 30007))  # four pairs: two one-stream calls
    call(table, "c1")
    offer = [stream(*ALICE), stream(ALICE[0], 5000, index=1)]
    with pytest.raises(PortsExhaustedError):
        table.offer("c2", "A", None, [*offer, stream(ALICE[0], 5002, index=2)], 0.0)
    assert "c2" not in table and table.pool.in_use == 2
    call(table, "c2")
    with pytest.raises(PortsExhaustedError):
        table.offer("c2", "A", "B", offer, 1.0)
    session = table.get("c2")
    assert session is not None and len(session.streams) == 1 and table.pool.free == 0


class Listener:
    def __init__(self, busy: set[int]) -> None:
        self.busy = busy
        self.open: set[int] = set()

    def open_pair(self, port: int) -> bool:
        if port in self.busy:
            return False
        self.open.add(port)
        return True

    def close_pair(self, port: int) -> None:
        self.open.remove(port)


def test_listener_opens_and_closes_and_busy_ports_are_skipped() -> None:
    """The table opens each pair it takes and closes each it gives back; a pair the
    listener cannot open is skipped."""
    listener = Listener({30000})
    table = SessionTable(PortPool(30000, 30099), listener=listener)
    to_alice, to_bob = call(table)
    assert listener.open == {to_alice, to_bob} and 30000 not in listener.open
    table.delete("c1")
    assert listener.open == set() and table.pool.in_use == 0


def test_every_port_busy_is_exhaustion() -> None:
    """When no pair can be opened, the offer fails as exhausted."""
    table = SessionTable(PortPool(30000, 30099), listener=Listener(set(range(30000, 30100))))
    with pytest.raises(PortsExhaustedError):
        table.offer("c1", "A", None, [stream(*ALICE)], 0.0)
    assert table.pool.in_use == 0


# -- counters ------------------------------------------------------------------------------------


def counters(table: SessionTable, side: int = 0) -> dict:
    return table.sessions()[0]["legs"][side]["streams"][0]


def test_counters_and_loss_with_wrap() -> None:
    """Packets, bytes, and gaps in the sequence across the 16-bit wrap."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, _ = call(table)
    for seq in (65533, 65534, 1, 2, 5):  # 65535, 0, 3, 4 missing
        table.receive(to_alice, ALICE, rtp(seq), 10.0)
    leg = counters(table)
    assert (leg["packets"], leg["bytes"], leg["lost"]) == (5, 5 * 172, 4)
    assert leg["last_packet"] == 10.0 and leg["latched"] == "192.0.2.10:4000"


def test_loss_late_duplicate_restart_and_new_ssrc() -> None:
    """A late packet fills a gap; duplicates and big jumps or a new SSRC are not losses."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, _ = call(table)
    for seq in (10, 13, 12, 13):
        table.receive(to_alice, ALICE, rtp(seq), 1.0)
    assert counters(table)["lost"] == 1
    table.receive(to_alice, ALICE, rtp(20000), 1.0)  # a restart
    table.receive(to_alice, ALICE, rtp(7, ssrc=99), 1.0)  # another source
    table.receive(to_alice, ALICE, rtp(8, ssrc=99), 1.0)
    assert counters(table)["lost"] == 1


def test_malformed_and_empty_datagrams() -> None:
    """Not RTP: counted and relayed; empty: dropped; muxed RTCP is not a loss; STUN
    (RFC 7983 first byte 0..3) on a leg without ICE: dropped, never relayed."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table)
    assert table.route(to_alice, ALICE, b"\x00\x01", 1.0) == Dropped(DROP_STUN)
    assert table.receive(to_alice, ALICE, b"\x40\x01", 1.0) == (to_bob, BOB)
    assert table.receive(to_alice, ALICE, b"", 1.0) is None
    table.receive(to_alice, ALICE, rtp(5), 1.0)
    table.receive(to_alice, ALICE, b"\x81\xc9" + b"\x00" * 10, 1.0)
    table.receive(to_alice, ALICE, rtp(6), 1.0)
    leg = counters(table)
    assert (leg["malformed"], leg["dropped"], leg["lost"], leg["packets"]) == (1, 2, 0, 5)
    assert leg["stun"] == 1


def test_rtcp_attribute_and_mux() -> None:
    """a=rtcp names the RTCP target; when both sides mux, RTCP goes to the RTP port."""
    table = SessionTable(PortPool(30000, 30099))
    table.offer("c1", "A", None, [stream(*ALICE, rtcp_port=4555, rtcp_address="192.0.2.55")], 0)
    [to_alice] = table.answer("c1", "A", "B", [stream(*BOB)], 0.0)
    session = table.get("c1")
    assert session is not None and session.streams[0] is not None
    to_bob = session.streams[0].legs[1].port
    assert table.receive(to_bob + 1, BOB, b"\x81\xc8", 1.0) == (to_alice + 1, ("192.0.2.55", 4555))
    table.offer("c2", "A", None, [stream(*ALICE, rtcp_mux=True)], 0.0)
    [m_alice] = table.answer("c2", "A", "B", [stream(*BOB, rtcp_mux=True)], 0.0)
    m_session = table.get("c2")
    assert m_session is not None and m_session.streams[0] is not None
    m_bob = m_session.streams[0].legs[1].port
    table.receive(to_alice, ALICE, rtp(1), 1.0)  # RTP from the SDP address: a=rtcp still holds
    assert table.receive(to_bob + 1, BOB, b"\x81\xc8", 1.0) == (to_alice + 1, ("192.0.2.55", 4555))
    assert table.receive(m_bob + 1, BOB, b"\x81\xc8", 1.0) == (m_alice + 1, ALICE)


def test_hold_with_null_address_has_no_target() -> None:
    """c=0.0.0.0: nowhere to send until the held side sends itself."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table)
    table.offer("c1", "A", "B", [stream("0.0.0.0", 4000)], 1.0)
    assert table.receive(to_bob, BOB, rtp(1), 1.0) is None
    assert table.receive(to_alice, ALICE, rtp(1), 1.0) == (to_bob, BOB)
    assert table.receive(to_bob, BOB, rtp(2), 1.0) == (to_alice, ALICE)


@pytest.mark.parametrize(
    "hold",
    [
        {"direction": "sendonly"},
        {"direction": "inactive"},
        {"address": "0.0.0.0"},
    ],
    ids=["sendonly", "inactive", "null-address"],
)
def test_every_hold_form_sets_held_and_resume_clears_it(hold: dict) -> None:
    """A hold offer (sendonly, inactive, c=0.0.0.0) sets held, whatever the answer says;
    a sendrecv re-offer clears it."""
    table = SessionTable(PortPool(30000, 30099))
    call(table)
    session = table.get("c1")
    assert session is not None and session.streams[0] is not None
    assert not session.held
    table.offer("c1", "A", "B", [stream(**{"address": ALICE[0], **hold})], 1.0)
    assert session.held and session.streams[0].held
    answer = "inactive" if hold.get("direction") == "inactive" else "recvonly"
    table.answer("c1", "A", "B", [stream(*BOB, direction=answer)], 1.0)
    assert session.held and session.as_dict()["held"]
    table.offer("c1", "A", "B", [stream(*ALICE)], 2.0)
    table.answer("c1", "A", "B", [stream(*BOB)], 2.0)
    assert not session.held and not session.streams[0].held


def test_hold_from_the_callee_and_session_level_sendonly() -> None:
    """The callee's re-INVITE with a session-level a=sendonly holds too."""
    table = SessionTable(PortPool(30000, 30099))
    call(table)
    body = (
        b"v=0\r\no=- 1 2 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
        b"a=sendonly\r\nm=audio 6000 RTP/AVP 0\r\n"
    )
    [held] = media_streams(body)
    assert held.held
    table.offer("c1", "B", "A", [held], 1.0)
    session = table.get("c1")
    assert session is not None and session.held
    table.answer("c1", "B", "A", [stream(*ALICE, direction="recvonly")], 1.0)
    assert session.held
    table.offer("c1", "B", "A", [stream(*BOB)], 2.0)
    assert not session.held


# -- timeouts, delete, listing -------------------------------------------------------------------


def test_media_timeout_after_the_last_packet() -> None:
    """Established calls expire media_timeout after their last packet or SDP."""
    table = SessionTable(PortPool(30000, 30099), media_timeout=60)
    to_alice, _ = call(table, now=100.0)
    assert table.expired(159.0) == [] and table.expired(160.0) == ["c1"]
    table.receive(to_alice, ALICE, rtp(1), 150.0)
    assert table.expired(209.0) == [] and table.expired(210.0) == ["c1"]
    table.offer("c1", "A", "B", [stream(*ALICE)], 230.0)  # a re-INVITE is a sign of life
    assert table.expired(289.0) == [] and table.expired(290.0) == ["c1"]


def test_unanswered_and_held_calls_use_their_own_timeouts() -> None:
    """A ringing call waits offer_timeout; a call on hold waits hold_timeout."""
    table = SessionTable(
        PortPool(30000, 30099), media_timeout=60, hold_timeout=600, offer_timeout=180
    )
    table.offer("ringing", "A", None, [stream(*ALICE)], 0.0)
    assert table.expired(179.0) == [] and table.expired(180.0) == ["ringing"]
    table.delete("ringing")
    call(table, "held")
    table.offer("held", "A", "B", [stream(*ALICE, direction="inactive")], 0.0)
    assert table.expired(599.0) == [] and table.expired(600.0) == ["held"]


def test_delete_by_call_and_by_tags() -> None:
    """Whole call by Call-ID; tags that are not the call's delete nothing."""
    table = SessionTable(PortPool(30000, 30099))
    call(table, "c1")
    call(table, "c2")
    assert not table.delete("c1", "X")
    assert not table.delete("c1", "A", "Z")
    assert table.delete("c1", "B", "A") and "c1" not in table
    assert not table.delete("c1")
    assert table.delete("c2") and len(table) == 0 and table.pool.in_use == 0
    table.offer("c3", "A", None, [stream(*ALICE)], 0.0)
    assert table.delete("c3", "A", "B")  # the To tag was never learnt
    assert table.clear() == [] and table.pool.free == table.pool.size


def test_sessions_listing() -> None:
    """The admin listing: call, tags, per-leg and per-stream counters."""
    table = SessionTable(PortPool(30000, 30099))
    to_alice, to_bob = call(table, now=5.0)
    table.receive(to_alice, ALICE, rtp(1), 6.0)
    [listed] = table.sessions()
    assert listed["call_id"] == "c1" and listed["created"] == 5.0
    assert listed["established"] and not listed["held"]
    assert (listed["packets"], listed["bytes"], listed["last_packet"]) == (1, 172, 6.0)
    alice, bob = listed["legs"]
    assert alice["tag"] == "A" and bob["tag"] == "B"
    assert alice["streams"][0]["local_port"] == to_alice
    assert bob["streams"][0]["local_port"] == to_bob
    assert bob["streams"][0]["sdp"] == "192.0.2.20:6000" and bob["streams"][0]["latched"] is None
    assert table.totals() == {"sessions": 1, "pairs_in_use": 2, "pairs_free": 48}


def test_streams_from_sdp() -> None:
    """The table takes media_streams() output as is."""
    body = (
        b"v=0\r\no=- 1 1 IN IP6 2001:db8::10\r\ns=-\r\nc=IN IP6 2001:db8::10\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\n"
    )
    table = SessionTable(PortPool(30000, 30099))
    [to_bob] = table.offer("c1", "A", None, media_streams(body), 0.0)
    [to_alice] = table.answer("c1", "A", "B", [stream(*BOB)], 0.0)
    assert to_bob is not None
    assert table.receive(to_bob, BOB, rtp(1), 0.0) == (to_alice, ("2001:db8::10", 4000))
    assert table.sessions()[0]["legs"][0]["streams"][0]["sdp"] == "[2001:db8::10]:4000"


def test_many_calls_leave_the_pool_full_and_the_table_empty() -> None:
    """After thousands of random offers, answers, re-offers, failures and deletes, every
    pair is free again and the table is empty."""
    rng = random.Random(42)
    pool = PortPool(30000, 30199)
    table = SessionTable(pool)
    live: list[str] = []
    for n in range(5000):
        op = rng.random()
        if op < 0.4 or not live:
            call_id = f"c{n}"
            count = rng.randint(1, 3)
            offer = [stream(ALICE[0], rng.choice([0, 4000 + 2 * i]), index=i) for i in range(count)]
            try:
                table.offer(call_id, "A", None, offer, float(n))
            except PortsExhaustedError:
                continue
            live.append(call_id)
            if rng.random() < 0.8:
                answer = [stream(*BOB, index=i) for i in range(count)]
                try:  # where the offer said port 0, this answer needs pairs
                    table.answer(call_id, "A", "B", answer, float(n))
                except PortsExhaustedError:
                    pass
        elif op < 0.6:
            call_id = rng.choice(live)
            offer = [stream(*ALICE, index=i) for i in range(rng.randint(1, 3))]
            try:
                table.offer(call_id, rng.choice(["A", "B"]), None, offer, float(n))
            except (PortsExhaustedError, UnknownSessionError):
                pass
        else:
            call_id = live.pop(rng.randrange(len(live)))
            session = table.get(call_id)
            assert session is not None
            assert table.delete(call_id, rng.choice([None, *filter(None, session.tags)]))
        assert pool.in_use == sum(len(s.pairs()) for s in _sessions(table))
    for call_id in live:
        assert table.delete(call_id)
    assert len(table) == 0 and pool.free == pool.size == 100 and table.sessions() == []
    assert not table._ports  # the packet index is empty too


def _sessions(table: SessionTable) -> list[MediaSession]:
    return [s for s in (table.get(d["call_id"]) for d in table.sessions()) if s is not None]


def test_host_name_in_sdp_is_not_a_target() -> None:
    """An SDP host name is never resolved: no target until the leg's first packet."""
    table = SessionTable(PortPool(30000, 30099))
    [to_bob] = table.offer("c1", "A", None, [stream("phone.example", 4000)], 0.0)
    [to_alice] = table.answer("c1", "A", "B", [stream(*BOB)], 0.0)
    assert to_bob is not None and to_alice is not None
    assert table.receive(to_bob, BOB, rtp(1), 0.0) is None
    assert table.receive(to_alice, ALICE, rtp(1), 0.0) == (to_bob, BOB)
    assert table.receive(to_bob, BOB, rtp(2), 0.0) == (to_alice, ALICE)


def test_a_failed_reoffer_learns_no_tag() -> None:
    """An answer that cannot get ports leaves the call's tags as they were."""
    table = SessionTable(PortPool(30000, 30003))  # two pairs: one stream
    table.offer("c1", "A", None, [stream(*ALICE), stream(ALICE[0], 0, index=1)], 0.0)
    two = [stream(*BOB), stream(BOB[0], 6002, index=1)]
    with pytest.raises(PortsExhaustedError):
        table.answer("c1", "A", "B", two, 0.0)
    session = table.get("c1")
    assert session is not None and session.tags == ["A", None] and not session.established
