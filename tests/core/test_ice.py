"""Tests for L{sbc.core.ice} and the relay's ICE-lite side in L{sbc.core.media}."""

from __future__ import annotations

import struct
from random import Random

import pytest

from sbc.core.address import Address
from sbc.core.ice import (
    PWD_LENGTH,
    UFRAG_LENGTH,
    IceCredentials,
    answer_check,
    candidate_line,
    host_priority,
    new_credentials,
)
from sbc.core.media import DROP_STUN, Answered, Dropped, PortPool, Relayed, SessionTable
from sbc.core.sdp import MediaStream
from sbc.core.stun import check_request, parse_check_success

LOCAL = IceCredentials("RelY", "relay-password-0123456789")
PEER = ("192.0.2.10", 4000)
TXID = b"T" * 12


def error_code(reply: bytes) -> int:
    """The ERROR-CODE of an error response (0 for a success)."""
    if struct.unpack_from("!H", reply)[0] != 0x0111:
        return 0
    offset = 20
    while offset < len(reply):
        kind, size = struct.unpack_from("!HH", reply, offset)
        if kind == 0x0009:
            return reply[offset + 6] * 100 + reply[offset + 7]
        offset += 4 + size + (-size % 4)
    raise AssertionError("no ERROR-CODE")


def test_credentials_are_random_ice_chars_of_rfc_length() -> None:
    """RFC 8445 §5.3: ufrag >= 4 and password >= 22 ice-chars; two draws differ."""
    rng = Random(7)
    first, second = new_credentials(rng), new_credentials(rng)
    assert len(first.ufrag) == UFRAG_LENGTH >= 4 and len(first.pwd) == PWD_LENGTH >= 22
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")
    assert set(first.ufrag + first.pwd) <= allowed
    assert first != second


def test_host_priority_and_candidate_line() -> None:
    """RFC 8445 §5.1.2.1 with type preference 126 and local preference 65535."""
    assert host_priority(1) == 126 * 2**24 + 65535 * 2**8 + 255 == 2130706431
    assert host_priority(2) == 2130706430
    assert candidate_line("2001:db8::1", 30001, 2) == (
        "a=candidate:1 2 UDP 2130706430 2001:db8::1 30001 typ host"
    )


def test_a_valid_check_is_answered_with_integrity() -> None:
    """Right USERNAME and password: a success response for the source, signed with ours."""
    data = check_request(TXID, "RelY:peer", LOCAL.pwd, use_candidate=True)
    answer = answer_check(data, PEER, LOCAL, "peer")
    assert answer.valid and answer.use_candidate and answer.reply is not None
    assert parse_check_success(answer.reply, TXID, LOCAL.pwd) == Address("udp", *PEER)


@pytest.mark.parametrize(
    ("username", "password", "code"),
    [
        ("RelY:peer", "wrong-password-0123456789", 401),
        ("XXXX:peer", LOCAL.pwd, 401),
        ("RelY:other", LOCAL.pwd, 401),
        ("RelY", LOCAL.pwd, 401),
    ],
    ids=["password", "our-ufrag", "peer-ufrag", "no-colon"],
)
def test_wrong_credentials_get_401(username: str, password: str, code: int) -> None:
    """RFC 5389 §10.1.2: a check that does not authenticate gets an error, not success."""
    answer = answer_check(check_request(TXID, username, password), PEER, LOCAL, "peer")
    assert not answer.valid and answer.reply is not None and error_code(answer.reply) == code


def test_checks_without_credentials_or_not_requests() -> None:
    """No USERNAME/MESSAGE-INTEGRITY: 400; a response, an unknown comprehension-required
    attribute or garbage: dropped silently."""
    bare = struct.pack("!HHI", 1, 0, 0x2112A442) + TXID
    answer = answer_check(bare, PEER, LOCAL, None)
    assert answer.reply is not None and error_code(answer.reply) == 400
    success = answer_check(check_request(TXID, "RelY:peer", LOCAL.pwd), PEER, LOCAL, None).reply
    assert success is not None
    assert answer_check(success, PEER, LOCAL, None).reply is None
    assert answer_check(b"\x00\x01\x00", PEER, LOCAL, None).reply is None
    unknown = struct.pack("!HHI", 1, 8, 0x2112A442) + TXID + struct.pack("!HHI", 0x7777, 4, 0)
    assert answer_check(unknown, PEER, LOCAL, None).reply is None


# -- the session table -----------------------------------------------------------------------------


def stream(address: str, port: int, *, ufrag: str | None = None) -> MediaStream:
    return MediaStream(
        index=0,
        media="audio",
        port=port,
        port_count=1,
        protocol="RTP/AVP",
        address=address,
        rtcp_port=port + 1,
        rtcp_address=address,
        direction="sendrecv",
        rtcp_mux=False,
        ice=ufrag is not None,
        ice_ufrag=ufrag,
        ice_pwd="peer-password-xxxxxxxxxx" if ufrag else None,
    )


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + b"\x00" * 20


def ice_call(table: SessionTable) -> tuple[int, int]:
    """Alice offers with ICE, Bob answers without: (port facing Alice, port facing Bob)."""
    [to_bob] = table.offer("c1", "A", None, [stream("192.168.1.10", 4000, ufrag="alic")], 0.0)
    [to_alice] = table.answer("c1", "A", "B", [stream("192.0.2.20", 6000)], 0.0)
    assert to_alice is not None and to_bob is not None
    return to_alice, to_bob


def test_credentials_only_towards_the_side_that_speaks_ice() -> None:
    """ice_towards: Alice (ICE) has credentials of her own, Bob (no ICE) none; a re-offer
    keeps them, an ICE restart (new ufrag) renews them, an offer without ICE drops them."""
    table = SessionTable(PortPool(30000, 30099), rng=Random(1))
    ice_call(table)
    alice = table.ice_towards("c1", "A")
    assert alice is not None and table.ice_towards("c1", "B") is None
    assert table.ice_towards("c1", None) is None and table.ice_towards("nope", "A") is None
    table.offer("c1", "A", "B", [stream("192.168.1.10", 4000, ufrag="alic")], 1.0)
    assert table.ice_towards("c1", "A") == alice
    table.offer("c1", "A", "B", [stream("192.168.1.10", 4000, ufrag="new1")], 2.0)
    renewed = table.ice_towards("c1", "A")
    assert renewed is not None and renewed != alice
    table.offer("c1", "A", "B", [stream("192.168.1.10", 4000)], 3.0)
    assert table.ice_towards("c1", "A") is None


def test_an_ice_offer_offers_ice_lite_to_the_answerer_not_known_yet() -> None:
    """Alice (ICE) calls Bob, whose SDP the relay has not seen: the offer he gets makes the
    relay his ICE-lite peer too (baresip with ICE takes an offer without ICE for a peer
    without it, and then never starts its media).  Bob answers with ICE of his own: the
    credentials he was offered stay (his checks carry them), and his checks are answered,
    also one that beats his answer to the relay."""
    table = SessionTable(PortPool(30000, 30099), rng=Random(1))
    [to_bob] = table.offer("c1", "A", None, [stream("192.168.1.10", 4000, ufrag="alic")], 0.0)
    assert to_bob is not None
    offered = table.ice_towards("c1", None)
    assert offered is not None and offered != table.ice_towards("c1", "A")
    early = check_request(TXID, f"{offered.ufrag}:bobu", offered.pwd)
    verdict = table.route(to_bob, ("198.51.100.8", 62000), early, 0.5)
    assert isinstance(verdict, Answered) and not verdict.refused
    [to_alice] = table.answer("c1", "A", "B", [stream("10.0.1.10", 6000, ufrag="bobu")], 1.0)
    assert to_alice is not None and table.ice_towards("c1", "B") == offered
    bob_nat = ("198.51.100.8", 62000)
    nominate = check_request(TXID, f"{offered.ufrag}:bobu", offered.pwd, use_candidate=True)
    verdict = table.route(to_bob, bob_nat, nominate, 1.5)
    assert isinstance(verdict, Answered) and not verdict.refused
    assert parse_check_success(verdict.reply, TXID, offered.pwd) == Address("udp", *bob_nat)
    assert table.route(to_alice, ("192.168.1.10", 4000), rtp(1), 2.0) == Relayed(to_bob, bob_nat)
    # Another fork answering with ICE got the same offer: the same credentials.
    table.answer("c1", "A", "B2", [stream("10.0.1.11", 6000, ufrag="bob2")], 3.0)
    assert table.ice_towards("c1", "B2") == offered
    # A later offer from Bob with a new ufrag is an ICE restart: new credentials.
    table.offer("c1", "B2", "A", [stream("10.0.1.11", 6000, ufrag="bob3")], 4.0)
    restarted = table.ice_towards("c1", "B2")
    assert restarted is not None and restarted != offered


def test_no_ice_towards_the_unknown_answerer_of_an_offer_without_ice() -> None:
    """An offer without ICE gets none on (the answerer's ICE-ness is unknown), and an
    answerer that answers an ICE offer without ICE gets none in later offers; the late
    offer of a side that speaks ICE (in a 2xx) makes the relay the caller's ICE-lite peer."""
    table = SessionTable(PortPool(30000, 30099), rng=Random(1))
    table.offer("c1", "A", None, [stream("192.168.1.10", 4000)], 0.0)
    assert table.ice_towards("c1", None) is None
    other = SessionTable(PortPool(30000, 30099), rng=Random(1))
    ice_call(other)
    other.offer("c1", "A", "B", [stream("192.168.1.10", 4000, ufrag="alic")], 1.0)
    assert other.ice_towards("c1", "B") is None
    late = SessionTable(PortPool(30000, 30099), rng=Random(1))
    late.offer("c2", "B", "A", [stream("192.0.2.20", 6000, ufrag="bobu")], 0.0)
    assert late.ice_towards("c2", "A") is not None


def test_a_valid_check_latches_and_is_never_relayed() -> None:
    """Alice's check is answered (not relayed) and latches her leg to its source, so Bob's
    RTP goes there and RTP from anywhere else is dropped."""
    table = SessionTable(PortPool(30000, 30099), rng=Random(1))
    to_alice, to_bob = ice_call(table)
    credentials = table.ice_towards("c1", "A")
    assert credentials is not None
    nat = ("198.51.100.7", 61000)
    check = check_request(TXID, f"{credentials.ufrag}:alic", credentials.pwd)
    verdict = table.route(to_alice, nat, check, 1.0)
    assert isinstance(verdict, Answered) and not verdict.refused
    assert parse_check_success(verdict.reply, TXID, credentials.pwd) == Address("udp", *nat)
    assert table.route(to_bob, ("192.0.2.20", 6000), rtp(1), 1.0) == Relayed(to_alice, nat)
    assert table.route(to_alice, nat, rtp(1), 1.0) == Relayed(to_bob, ("192.0.2.20", 6000))
    assert isinstance(table.route(to_alice, ("203.0.113.9", 1), rtp(2), 1.0), Dropped)
    session = table.get("c1")
    assert session is not None and session.streams[0] is not None
    leg = session.streams[0].legs[0].as_dict()
    assert (leg["ice"], leg["stun"], leg["stun_refused"], leg["packets"]) == (True, 1, 0, 2)


def test_refused_checks_are_counted_and_do_not_latch() -> None:
    """Wrong password: 401, counted; the leg is still free to latch to the real peer."""
    table = SessionTable(PortPool(30000, 30099), rng=Random(1))
    to_alice, to_bob = ice_call(table)
    credentials = table.ice_towards("c1", "A")
    assert credentials is not None
    bad = check_request(TXID, f"{credentials.ufrag}:alic", "not-the-password-0000000")
    verdict = table.route(to_alice, ("203.0.113.9", 1), bad, 1.0)
    assert isinstance(verdict, Answered) and verdict.refused and error_code(verdict.reply) == 401
    good = check_request(TXID, f"{credentials.ufrag}:alic", credentials.pwd)
    assert isinstance(table.route(to_alice, PEER, good, 1.0), Answered)
    assert table.route(to_bob, ("192.0.2.20", 6000), rtp(1), 1.0) == Relayed(to_alice, PEER)
    session = table.get("c1")
    assert session is not None and session.streams[0] is not None
    assert session.streams[0].legs[0].stun_refused == 1


def test_use_candidate_moves_the_latch_a_plain_check_does_not() -> None:
    """Checks from a second candidate are answered; only a nomination moves the latch."""
    table = SessionTable(PortPool(30000, 30099), rng=Random(1))
    to_alice, to_bob = ice_call(table)
    credentials = table.ice_towards("c1", "A")
    assert credentials is not None
    username = f"{credentials.ufrag}:alic"
    host, srflx = ("192.168.1.10", 4000), ("198.51.100.7", 61000)
    table.route(to_alice, host, check_request(TXID, username, credentials.pwd), 1.0)
    table.route(to_alice, srflx, check_request(TXID, username, credentials.pwd), 1.0)
    bob = ("192.0.2.20", 6000)
    assert table.route(to_bob, bob, rtp(1), 1.0) == Relayed(to_alice, host)
    nominate = check_request(TXID, username, credentials.pwd, use_candidate=True)
    table.route(to_alice, srflx, nominate, 1.0)
    assert table.route(to_bob, bob, rtp(2), 1.0) == Relayed(to_alice, srflx)
    # Component 2 (RTCP) checks latch the RTCP side.
    table.route(to_alice + 1, ("198.51.100.7", 61001), nominate, 1.0)
    assert table.route(to_bob + 1, bob, b"\x81\xc8x", 1.0) == Relayed(
        to_alice + 1, ("198.51.100.7", 61001)
    )


def test_stun_on_a_leg_without_ice_is_dropped() -> None:
    """Bob has no ICE: STUN to his port is dropped, never relayed to Alice."""
    table = SessionTable(PortPool(30000, 30099), rng=Random(1))
    _, to_bob = ice_call(table)
    check = check_request(TXID, "x:y", "whatever")
    assert table.route(to_bob, ("192.0.2.20", 6000), check, 1.0) == Dropped(DROP_STUN)
