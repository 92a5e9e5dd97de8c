# -*- test-case-name: tests.core.test_stun -*-
"""
STUN Binding on the SIP ports (RFC 5389, and classic RFC 3489 requests), as Kamailio's
stun support does: a phone asks "what is my public address?" and gets the address its
packet came from.

L{looks_like_stun} tells STUN from SIP by the first bytes (SIP starts with a letter or a
line end, STUN with two zero bits) and the length; L{parse_request} checks a Binding
request; L{binding_response} builds the answer.  Pure functions over bytes: no socket.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass
from typing import Optional

from sbc.core.address import Address
from sbc.core.errors import RemoteProtocolError

__all__ = [
    "MAGIC_COOKIE",
    "HEADER",
    "StunError",
    "StunRequest",
    "looks_like_stun",
    "stun_length",
    "parse_request",
    "binding_response",
]

MAGIC_COOKIE = 0x2112A442
HEADER = 20
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_BINDING_ERROR = 0x0111
_MAPPED_ADDRESS = 0x0001
_CHANGE_REQUEST = 0x0003
_SOURCE_ADDRESS = 0x0004
_CHANGED_ADDRESS = 0x0005
_ERROR_CODE = 0x0009
_UNKNOWN_ATTRIBUTES = 0x000A
_XOR_MAPPED_ADDRESS = 0x0020
_SOFTWARE = 0x8022
_FINGERPRINT = 0x8028
_FINGERPRINT_XOR = 0x5354554E
#: Attribute types below 0x8000 that a server must understand (RFC 5389 §15).
_KNOWN_REQUIRED = {
    _MAPPED_ADDRESS,
    _CHANGE_REQUEST,
    0x0006,
    0x0008,
    0x0014,
    0x0015,
    0x0024,
    _XOR_MAPPED_ADDRESS,
}
_MAX_STUN = 2048


class StunError(RemoteProtocolError):
    """A STUN message sbc will not answer (counted and dropped)."""


@dataclass(frozen=True)
class StunRequest:
    """
    A Binding request.

    @ivar classic: an RFC 3489 request (no magic cookie): answer with MAPPED-ADDRESS.
    @ivar transaction_id: 12 bytes (RFC 5389) or the 16 bytes after the length (classic).
    @ivar fingerprint: the request carried FINGERPRINT: so does the answer.
    @ivar change_request: CHANGE-REQUEST flags of a classic request (0: none).
    """

    classic: bool
    transaction_id: bytes
    fingerprint: bool
    change_request: int = 0


def looks_like_stun(data: bytes) -> bool:
    """Whether C{data} is (the start of) a STUN message rather than SIP."""
    return len(data) >= 2 and data[0] < 0x02 and data[0] not in (0x0D, 0x0A)


def stun_length(header: bytes) -> int:
    """The whole message length announced by a 20-byte header."""
    return HEADER + struct.unpack_from("!H", header, 2)[0]


def parse_request(data: bytes) -> StunRequest:
    """Check a Binding request.

    @raise StunError: not a well-formed Binding request (wrong type, bad length or padding,
        bad FINGERPRINT, unknown comprehension-required attributes)."""
    if len(data) < HEADER or len(data) > _MAX_STUN:
        raise StunError(400, "STUN message of impossible size")
    kind, length, cookie = struct.unpack_from("!HHI", data, 0)
    if kind & 0xC000 or length % 4 or HEADER + length != len(data):
        raise StunError(400, "bad STUN header")
    if kind != _BINDING_REQUEST:
        raise StunError(400, "not a STUN Binding request")
    classic = cookie != MAGIC_COOKIE
    offset = HEADER
    fingerprint = False
    change = 0
    unknown = []
    while offset < len(data):
        if offset + 4 > len(data):
            raise StunError(400, "truncated STUN attribute")
        attr, size = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4 : offset + 4 + size]
        if len(value) != size:
            raise StunError(400, "truncated STUN attribute")
        if attr == _FINGERPRINT:
            if size != 4 or offset + 8 != len(data):
                raise StunError(400, "FINGERPRINT not last")
            expected = (zlib.crc32(data[:offset]) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
            if struct.unpack("!I", value)[0] != expected:
                raise StunError(400, "bad STUN FINGERPRINT")
            fingerprint = True
        elif attr == _CHANGE_REQUEST and size == 4:
            change = struct.unpack("!I", value)[0] & 0x06
        elif attr < 0x8000 and attr not in _KNOWN_REQUIRED:
            unknown.append(attr)
        offset += 4 + size + (-size % 4)
    if unknown:
        raise StunError(420, "unknown comprehension-required STUN attribute")
    transaction = data[8:20] if not classic else data[4:20]
    return StunRequest(classic, transaction, fingerprint, change)


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _address_value(address: Address, xor_with: Optional[bytes]) -> bytes:
    ip = ipaddress.ip_address(address.host)
    packed = ip.packed
    port = address.port
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ b for a, b in zip(packed, xor_with, strict=False))
    family = 0x01 if ip.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, port) + packed


def binding_response(
    request: StunRequest,
    mapped: Address,
    local: Address,
    software: str = "sbc",
    fingerprint_always: bool = False,
) -> bytes:
    """
    The success response: XOR-MAPPED-ADDRESS (RFC 5389) or MAPPED-ADDRESS with
    SOURCE-ADDRESS and CHANGED-ADDRESS (classic), SOFTWARE, and FINGERPRINT when the
    request had one.  A classic request asking to change address or port gets a 420
    error: sbc has no alternate address.
    """
    if request.classic:
        header_tail = request.transaction_id
        if request.change_request:
            body = _attribute(_ERROR_CODE, struct.pack("!HBB", 0, 4, 20) + b"Unknown Attribute")
            body += _attribute(
                _UNKNOWN_ATTRIBUTES, struct.pack("!HH", _CHANGE_REQUEST, _CHANGE_REQUEST)
            )
            return struct.pack("!HH", _BINDING_ERROR, len(body)) + header_tail + body
        body = _attribute(_MAPPED_ADDRESS, _address_value(mapped, None))
        body += _attribute(_SOURCE_ADDRESS, _address_value(local, None))
        body += _attribute(_CHANGED_ADDRESS, _address_value(local, None))
    else:
        header_tail = struct.pack("!I", MAGIC_COOKIE) + request.transaction_id
        key = struct.pack("!I", MAGIC_COOKIE) + request.transaction_id
        body = _attribute(_XOR_MAPPED_ADDRESS, _address_value(mapped, key))
    name = software.encode()
    if request.classic:
        # RFC 3489 clients read 0x8022 as SERVER and want a length that is a multiple of 4.
        name += b" " * (-len(name) % 4)
    body += _attribute(_SOFTWARE, name)
    if request.fingerprint or fingerprint_always:
        head = struct.pack("!HH", _BINDING_SUCCESS, len(body) + 8) + header_tail
        crc = (zlib.crc32(head + body) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
        body += _attribute(_FINGERPRINT, struct.pack("!I", crc))
    return struct.pack("!HH", _BINDING_SUCCESS, len(body)) + header_tail + body
