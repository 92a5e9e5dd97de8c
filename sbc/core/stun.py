# -*- test-case-name: tests.core.test_stun -*-
"""
STUN Binding on the SIP ports (RFC 5389, and classic RFC 3489 requests), as Kamailio's
stun support does: a phone asks "what is my public address?" and gets the address its
packet came from.

L{looks_like_stun} tells STUN from SIP by the first bytes (SIP starts with a letter or a
line end, STUN with two zero bits) and the length; L{parse_request} checks a Binding
request; L{binding_response} builds the answer.  Pure functions over bytes: no socket.

The same codec serves ICE connectivity checks on the relay's media ports (RFC 8445 §7.3):
L{is_stun_datagram} tells STUN from RTP/RTCP (RFC 7983 §7), L{parse_check} reads a Binding
request with USERNAME and MESSAGE-INTEGRITY (short-term credentials, RFC 5389 §10.1 and
§15.4), L{check_success} and L{check_error} build the answers, and L{check_request} /
L{parse_check_success} are the client side (tests, probes).
"""

from __future__ import annotations

import hashlib
import hmac
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
    "is_stun_datagram",
    "IceCheck",
    "parse_check",
    "check_success",
    "check_error",
    "check_request",
    "parse_check_success",
]

MAGIC_COOKIE = 0x2112A442
HEADER = 20
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_BINDING_ERROR = 0x0111
_MAPPED_ADDRESS = 0x0001
_USERNAME = 0x0006
_MESSAGE_INTEGRITY = 0x0008
_PRIORITY = 0x0024
_USE_CANDIDATE = 0x0025
_ICE_CONTROLLED = 0x8029
_ICE_CONTROLLING = 0x802A
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
#: ... and those ICE adds (RFC 8445 §16.1).
_KNOWN_ICE = _KNOWN_REQUIRED | {_USE_CANDIDATE}
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


def _walk(data: bytes, known: set[int]) -> tuple[int, int, list[tuple[int, bytes, int]]]:
    """Check the header and every attribute of a STUN message.

    @return: its type, cookie, and (type, value, offset) of each attribute in order
    @raise StunError: bad size, header, padding or FINGERPRINT, or an unknown
        comprehension-required attribute (420)."""
    if len(data) < HEADER or len(data) > _MAX_STUN:
        raise StunError(400, "STUN message of impossible size")
    kind, length, cookie = struct.unpack_from("!HHI", data, 0)
    if kind & 0xC000 or length % 4 or HEADER + length != len(data):
        raise StunError(400, "bad STUN header")
    offset = HEADER
    found = []
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
        elif attr < 0x8000 and attr not in known:
            unknown.append(attr)
        found.append((attr, value, offset))
        offset += 4 + size + (-size % 4)
    if unknown:
        raise StunError(420, "unknown comprehension-required STUN attribute")
    return kind, cookie, found


def parse_request(data: bytes) -> StunRequest:
    """Check a Binding request.

    @raise StunError: not a well-formed Binding request (wrong type, bad length or padding,
        bad FINGERPRINT, unknown comprehension-required attributes)."""
    kind, cookie, found = _walk(data, _KNOWN_REQUIRED)
    if kind != _BINDING_REQUEST:
        raise StunError(400, "not a STUN Binding request")
    classic = cookie != MAGIC_COOKIE
    fingerprint = any(attr == _FINGERPRINT for attr, _, _ in found)
    change = 0
    for attr, value, _ in found:
        if attr == _CHANGE_REQUEST and len(value) == 4:
            change = struct.unpack("!I", value)[0] & 0x06
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


# -- ICE connectivity checks on the media ports (RFC 8445 §7.3) ---------------------------------


def is_stun_datagram(data: bytes) -> bool:
    """RFC 7983 §7: a first byte of 0..3 is STUN (RTP and RTCP start at 128, DTLS at 20)."""
    return bool(data) and data[0] < 4


@dataclass(frozen=True)
class IceCheck:
    """
    A Binding request as an ICE connectivity check, read but not yet authenticated.

    @ivar username: the USERNAME value (C{<receiver ufrag>:<sender ufrag>}), or L{None}.
    @ivar use_candidate: USE-CANDIDATE is present (the controlling agent nominates).
    @ivar integrity_at: offset of MESSAGE-INTEGRITY (L{None}: none).
    """

    transaction_id: bytes
    username: Optional[str]
    use_candidate: bool
    integrity_at: Optional[int]
    integrity: bytes
    data: bytes

    def verify(self, password: str) -> bool:
        """Is MESSAGE-INTEGRITY the HMAC-SHA1 of the message with C{password} as the
        short-term key (RFC 5389 §15.4)?"""
        if self.integrity_at is None or len(self.integrity) != 20:
            return False
        expected = _integrity(self.data[: self.integrity_at], password)
        return hmac.compare_digest(expected, self.integrity)


def parse_check(data: bytes) -> IceCheck:
    """Read an RFC 5389 Binding request (magic cookie required) for ICE.

    @raise StunError: malformed, not a Binding request, or not RFC 5389."""
    kind, cookie, found = _walk(data, _KNOWN_ICE)
    if kind != _BINDING_REQUEST or cookie != MAGIC_COOKIE:
        raise StunError(400, "not an RFC 5389 STUN Binding request")
    username: Optional[str] = None
    integrity_at: Optional[int] = None
    integrity = b""
    use_candidate = False
    for attr, value, offset in found:
        if integrity_at is not None and attr != _FINGERPRINT:
            continue  # RFC 5389 §15.4: attributes after MESSAGE-INTEGRITY are ignored
        if attr == _USERNAME and username is None:
            username = value.decode("utf-8", "replace")
        elif attr == _MESSAGE_INTEGRITY:
            integrity_at, integrity = offset, value
        elif attr == _USE_CANDIDATE:
            use_candidate = True
    return IceCheck(data[8:20], username, use_candidate, integrity_at, integrity, data)


def _integrity(head: bytes, password: str) -> bytes:
    """HMAC-SHA1 over C{head} (a message up to MESSAGE-INTEGRITY) with the length field set
    as if MESSAGE-INTEGRITY ended the message (RFC 5389 §15.4)."""
    length = len(head) - HEADER + 24
    adjusted = head[:2] + struct.pack("!H", length) + head[4:]
    return hmac.new(password.encode("utf-8"), adjusted, hashlib.sha1).digest()


def _finish(kind: int, transaction_id: bytes, body: bytes, password: Optional[str]) -> bytes:
    """Header + C{body}, then MESSAGE-INTEGRITY (with C{password}) and FINGERPRINT."""
    tail = struct.pack("!I", MAGIC_COOKIE) + transaction_id
    if password is not None:
        head = struct.pack("!HH", kind, len(body) + 24) + tail + body
        body += _attribute(_MESSAGE_INTEGRITY, _integrity(head, password))
    head = struct.pack("!HH", kind, len(body) + 8) + tail + body
    crc = (zlib.crc32(head) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    body += _attribute(_FINGERPRINT, struct.pack("!I", crc))
    return struct.pack("!HH", kind, len(body)) + tail + body


def check_success(check: IceCheck, mapped: Address, password: str) -> bytes:
    """The success response to a valid check: XOR-MAPPED-ADDRESS = the check's source,
    MESSAGE-INTEGRITY with the receiver's password, FINGERPRINT (RFC 8445 §7.3.1.3)."""
    key = struct.pack("!I", MAGIC_COOKIE) + check.transaction_id
    body = _attribute(_XOR_MAPPED_ADDRESS, _address_value(mapped, key))
    return _finish(_BINDING_SUCCESS, check.transaction_id, body, password)


def check_error(transaction_id: bytes, code: int, reason: str) -> bytes:
    """An error response (400, 401, ...) with ERROR-CODE and FINGERPRINT and no
    MESSAGE-INTEGRITY (RFC 5389 §10.1.2: the request could not be authenticated)."""
    value = struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")
    return _finish(_BINDING_ERROR, transaction_id, _attribute(_ERROR_CODE, value), None)


def check_request(
    transaction_id: bytes,
    username: str,
    password: str,
    *,
    priority: int = 0x6E0001FF,
    use_candidate: bool = False,
    tie_breaker: bytes = b"\0" * 8,
) -> bytes:
    """A connectivity check as a controlling agent sends it (RFC 8445 §7.2.2): USERNAME,
    PRIORITY, ICE-CONTROLLING, USE-CANDIDATE if asked, MESSAGE-INTEGRITY, FINGERPRINT."""
    body = _attribute(_USERNAME, username.encode("utf-8"))
    body += _attribute(_PRIORITY, struct.pack("!I", priority))
    body += _attribute(_ICE_CONTROLLING, tie_breaker)
    if use_candidate:
        body += _attribute(_USE_CANDIDATE, b"")
    return _finish(_BINDING_REQUEST, transaction_id, body, password)


def parse_check_success(data: bytes, transaction_id: bytes, password: str) -> Address:
    """The XOR-MAPPED-ADDRESS of a success response to our check, after verifying its
    transaction, MESSAGE-INTEGRITY (with the responder's C{password}) and FINGERPRINT.

    @raise StunError: not a success response to that check, or not authentic."""
    kind, cookie, found = _walk(data, _KNOWN_ICE)
    if kind != _BINDING_SUCCESS or cookie != MAGIC_COOKIE or data[8:20] != transaction_id:
        raise StunError(400, "not the success response to this check")
    attrs = [attr for attr, _, _ in found]
    if _FINGERPRINT not in attrs or _MESSAGE_INTEGRITY not in attrs:
        raise StunError(400, "response without MESSAGE-INTEGRITY or FINGERPRINT")
    mapped: Optional[Address] = None
    for attr, value, offset in found:
        if attr == _MESSAGE_INTEGRITY:
            if not hmac.compare_digest(_integrity(data[:offset], password), value):
                raise StunError(401, "bad MESSAGE-INTEGRITY")
            break
        if attr == _XOR_MAPPED_ADDRESS:
            mapped = _read_address(value, data[4:20])
    if mapped is None:
        raise StunError(400, "response without XOR-MAPPED-ADDRESS")
    return mapped


def _read_address(value: bytes, key: bytes) -> Address:
    if len(value) < 8:
        raise StunError(400, "short address attribute")
    family, port = struct.unpack_from("!xBH", value, 0)
    size = 4 if family == 0x01 else 16 if family == 0x02 else 0
    if not size or len(value) != 4 + size:
        raise StunError(400, "bad address family")
    port ^= MAGIC_COOKIE >> 16
    packed = bytes(a ^ b for a, b in zip(value[4:], key, strict=False))
    return Address("udp", str(ipaddress.ip_address(packed)), port)
