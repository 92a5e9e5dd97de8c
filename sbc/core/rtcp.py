# -*- test-case-name: tests.core.test_rtcp -*-
"""
RTCP sender and receiver reports (RFC 3550 §6.4) read into the JSON shape Homer's HEP
collectors expect for protocol type 5 (the shape heplify and rtpengine send): the quality
a phone reports (loss, jitter, round trip inputs) goes to Homer with the call's Call-ID.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

__all__ = ["is_rtcp", "reports"]

SR, RR = 200, 201


def is_rtcp(data: bytes) -> bool:
    """RTP version 2 with an RTCP packet type (RFC 5761 §4: 200..207 cannot be RTP
    payload types on a multiplexed port)."""
    return len(data) >= 8 and data[0] >> 6 == 2 and 200 <= data[1] <= 207


def _blocks(data: bytes, offset: int, count: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        if offset + 24 > len(data):
            break
        ssrc, lost_word, highest, jitter, lsr, dlsr = struct.unpack(
            "!IIIIII", data[offset : offset + 24]
        )
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:  # signed 24 bits (RFC 3550 §6.4.1)
            lost -= 1 << 24
        out.append(
            {
                "source_ssrc": ssrc,
                "fraction_lost": lost_word >> 24,
                "packets_lost": lost,
                "highest_seq_no": highest,
                "ia_jitter": jitter,
                "lsr": lsr,
                "dlsr": dlsr,
            }
        )
        offset += 24
    return out


def reports(data: bytes) -> Optional[dict[str, Any]]:
    """The first SR or RR of a compound RTCP packet, or None when it has none."""
    offset = 0
    while offset + 8 <= len(data):
        first, kind, words = struct.unpack("!BBH", data[offset : offset + 4])
        end = offset + 4 * (words + 1)
        if first >> 6 != 2 or end > len(data):
            return None
        count = first & 0x1F
        (ssrc,) = struct.unpack("!I", data[offset + 4 : offset + 8])
        if kind == SR and offset + 28 <= end:
            ntp_sec, ntp_frac, rtp_ts, packets, octets = struct.unpack(
                "!IIIII", data[offset + 8 : offset + 28]
            )
            return {
                "type": SR,
                "ssrc": ssrc,
                "report_count": count,
                "sender_information": {
                    "ntp_timestamp_sec": ntp_sec,
                    "ntp_timestamp_usec": ntp_frac * 1_000_000 >> 32,
                    "rtp_timestamp": rtp_ts,
                    "packets": packets,
                    "octets": octets,
                },
                "report_blocks": _blocks(data[:end], offset + 28, count),
            }
        if kind == RR:
            return {
                "type": RR,
                "ssrc": ssrc,
                "report_count": count,
                "report_blocks": _blocks(data[:end], offset + 8, count),
            }
        offset = end
    return None
