"""Tests for L{sbc.core.hep} and L{sbc.core.rtcp}: HEP3 chunks and RTCP reports."""

from __future__ import annotations

import struct

import pytest

from sbc.core.hep import PROTO_RTCP, PROTO_SIP, HepError, HepPacket, decode, encode
from sbc.core.rtcp import is_rtcp, reports


def packet(**changes: object) -> HepPacket:
    values: dict = dict(
        proto_type=PROTO_SIP,
        transport="udp",
        source=("192.0.2.10", 5070),
        destination=("127.0.0.1", 5060),
        time=1700000000.123456,
        capture_id=2001,
        payload=b"OPTIONS sip:x SIP/2.0\r\n\r\n",
    )
    values.update(changes)
    return HepPacket(**values)


def test_encode_layout() -> None:
    """HEP3 header with the total length, then vendor-0 chunks in network byte order."""
    data = encode(packet())
    assert data[:4] == b"HEP3" and struct.unpack("!H", data[4:6])[0] == len(data)
    assert struct.pack("!HHHB", 0, 1, 7, 2) in data  # IPv4
    assert struct.pack("!HHHB", 0, 2, 7, 17) in data  # UDP
    assert struct.pack("!HHH", 0, 3, 10) + bytes([192, 0, 2, 10]) in data
    assert struct.pack("!HHHH", 0, 7, 8, 5070) in data
    assert struct.pack("!HHHI", 0, 10, 10, 123456) in data
    assert struct.pack("!HHHI", 0, 12, 10, 2001) in data
    assert data.endswith(b"OPTIONS sip:x SIP/2.0\r\n\r\n")


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"source": ("2001:db8::1", 5060), "destination": ("::1", 5062), "transport": "tcp"},
        {"proto_type": PROTO_RTCP, "correlation_id": "abc@host", "payload": b"{}"},
    ],
)
def test_round_trip(changes: dict) -> None:
    """What is encoded decodes to the same packet (time to the microsecond)."""
    original = packet(**changes)
    back = decode(encode(original))
    assert back.time == pytest.approx(original.time, abs=1e-6)
    assert back == HepPacket(**{**original.__dict__, "time": back.time})


def test_unknown_local_end_is_unspecified() -> None:
    """A stream whose local end is not known is written with the unspecified address."""
    back = decode(encode(packet(source=("", 0), destination=("2001:db8::2", 5061))))
    assert back.source == ("::", 0)


def test_decode_refuses_garbage() -> None:
    with pytest.raises(HepError):
        decode(b"HEP2\x00\x06")
    with pytest.raises(HepError):
        decode(encode(packet())[:-5] + b"HEP3"[:0])


def rr(lost: int = 3, fraction: int = 12, jitter: int = 40) -> bytes:
    block = struct.pack("!IIIIII", 0x1111, (fraction << 24) | lost, 1000, jitter, 7, 8)
    return struct.pack("!BBHI", 0x81, 201, 7, 0x2222) + block


def test_rtcp_receiver_report() -> None:
    """RFC 3550 §6.4.2: the report block read into Homer's JSON names."""
    assert is_rtcp(rr()) and not is_rtcp(b"\x80\x00" + b"\x00" * 10)
    report = reports(rr())
    assert report == {
        "type": 201,
        "ssrc": 0x2222,
        "report_count": 1,
        "report_blocks": [
            {
                "source_ssrc": 0x1111,
                "fraction_lost": 12,
                "packets_lost": 3,
                "highest_seq_no": 1000,
                "ia_jitter": 40,
                "lsr": 7,
                "dlsr": 8,
            }
        ],
    }


def test_rtcp_sender_report_and_junk() -> None:
    """An SR carries sender information; a truncated packet gives nothing."""
    sr = struct.pack("!BBHI", 0x80, 200, 6, 0x3333) + struct.pack("!IIIII", 10, 1 << 31, 5, 6, 7)
    report = reports(sr)
    assert report is not None and report["sender_information"]["packets"] == 6
    assert report["sender_information"]["ntp_timestamp_usec"] == 500000
    assert reports(sr[:10]) is None
