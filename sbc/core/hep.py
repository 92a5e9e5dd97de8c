# -*- test-case-name: tests.core.test_hep -*-
"""
HEP version 3 (the Homer Encapsulation Protocol), as Kamailio's C{siptrace} module sends it
to a Homer capture server (C{duplicate_uri}, C{hep_mode_on}, C{hep_version = 3},
C{hep_capture_id}): a C{HEP3} header, then chunks of (vendor, type, length, value), all in
network byte order.  Chunk types (vendor 0, the generic ones):

  1 IP family, 2 IP protocol, 3/4 IPv4 source/destination, 5/6 IPv6 source/destination,
  7/8 source/destination port, 9/10 timestamp seconds/microseconds, 11 protocol type
  (1 SIP, 5 RTCP), 12 capture agent id, 14 authentication key, 15 payload,
  17 correlation id (the Call-ID that ties RTCP to its call).

Pure bytes; sending is L{sbc.net.hep}'s business.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional

from sbc.core.address import Address

__all__ = [
    "SiptraceSettings",
    "HepPacket",
    "encode",
    "decode",
    "PROTO_SIP",
    "PROTO_RTCP",
    "HepError",
]

#: Chunk 11 values (Homer's protocol types).
PROTO_SIP = 1
PROTO_RTCP = 5

_FAMILY = {4: 2, 6: 10}  # AF_INET, AF_INET6 as HEP writes them
_IP_PROTO = {"udp": 17, "tcp": 6, "tls": 6, "sctp": 132}


@dataclass(frozen=True)
class SiptraceSettings:
    """
    The C{[siptrace]} section (Kamailio siptrace's parameter names).

    @ivar duplicate_uri: where HEP packets go (UDP); None: no capture.
    @ivar hep_capture_id: this capture agent's id (chunk 12).
    @ivar trace_on: capture now (switched at run time by a reload).
    """

    duplicate_uri: Optional[Address] = None
    hep_capture_id: int = 1
    trace_on: bool = True

    @property
    def enabled(self) -> bool:
        return self.trace_on and self.duplicate_uri is not None


class HepError(ValueError):
    """Bytes that are not a HEP3 packet."""


@dataclass(frozen=True)
class HepPacket:
    """One captured packet: what it carried, between which addresses, when."""

    proto_type: int
    transport: str
    source: tuple[str, int]
    destination: tuple[str, int]
    time: float
    capture_id: int
    payload: bytes
    correlation_id: Optional[str] = None


def _chunk(kind: int, value: bytes) -> bytes:
    return struct.pack("!HHH", 0, kind, 6 + len(value)) + value


def encode(packet: HepPacket, auth_key: Optional[str] = None) -> bytes:
    """The HEP3 bytes of C{packet}; an unknown source (the local end of a stream) is
    written as the unspecified address.

    @raise ValueError: an address is not an IP literal."""
    destination = ipaddress.ip_address(packet.destination[0] or "0.0.0.0")
    unspecified = "::" if destination.version == 6 else "0.0.0.0"
    source = ipaddress.ip_address(packet.source[0] or unspecified)
    if source.version != destination.version:  # a local end not known: unspecified
        source = ipaddress.ip_address(unspecified)
    seconds = int(packet.time)
    micros = min(999_999, int(round((packet.time - seconds) * 1_000_000)))
    v6 = destination.version == 6
    chunks = [
        _chunk(1, struct.pack("!B", _FAMILY[destination.version])),
        _chunk(2, struct.pack("!B", _IP_PROTO.get(packet.transport, 17))),
        _chunk(5 if v6 else 3, source.packed),
        _chunk(6 if v6 else 4, destination.packed),
        _chunk(7, struct.pack("!H", packet.source[1] & 0xFFFF)),
        _chunk(8, struct.pack("!H", packet.destination[1] & 0xFFFF)),
        _chunk(9, struct.pack("!I", seconds & 0xFFFFFFFF)),
        _chunk(10, struct.pack("!I", micros)),
        _chunk(11, struct.pack("!B", packet.proto_type)),
        _chunk(12, struct.pack("!I", packet.capture_id & 0xFFFFFFFF)),
    ]
    if auth_key:
        chunks.append(_chunk(14, auth_key.encode()))
    if packet.correlation_id:
        chunks.append(_chunk(17, packet.correlation_id.encode()))
    chunks.append(_chunk(15, packet.payload))
    body = b"".join(chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def decode(data: bytes) -> HepPacket:
    """Read a HEP3 packet back (for tests and diagnostics).

    @raise HepError: not HEP3, or a chunk runs past the end."""
    if len(data) < 6 or data[:4] != b"HEP3":
        raise HepError("not a HEP3 packet")
    (total,) = struct.unpack("!H", data[4:6])
    if total > len(data):
        raise HepError("truncated HEP3 packet")
    values: dict[int, bytes] = {}
    offset = 6
    while offset + 6 <= total:
        _, kind, length = struct.unpack("!HHH", data[offset : offset + 6])
        if length < 6 or offset + length > total:
            raise HepError(f"chunk {kind} runs past the end")
        values[kind] = data[offset + 6 : offset + length]
        offset += length
    v6 = 5 in values
    source = ipaddress.ip_address(values[5 if v6 else 3])
    destination = ipaddress.ip_address(values[6 if v6 else 4])
    proto = values.get(2, b"\x11")[0]
    transport = {17: "udp", 6: "tcp", 132: "sctp"}.get(proto, str(proto))
    (seconds,) = struct.unpack("!I", values[9])
    (micros,) = struct.unpack("!I", values[10])
    correlation = values.get(17)
    return HepPacket(
        proto_type=values[11][0],
        transport=transport,
        source=(str(source), struct.unpack("!H", values[7])[0]),
        destination=(str(destination), struct.unpack("!H", values[8])[0]),
        time=seconds + micros / 1_000_000,
        capture_id=struct.unpack("!I", values[12])[0],
        payload=values.get(15, b""),
        correlation_id=correlation.decode("utf-8", "replace") if correlation else None,
    )
