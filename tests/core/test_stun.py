"""Tests for L{sbc.core.stun}: Binding requests and responses, RFC 5389 and RFC 3489."""

from __future__ import annotations

import ipaddress
import os
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.core.address import Address
from sbc.core.stun import (
    MAGIC_COOKIE,
    StunError,
    binding_response,
    looks_like_stun,
    parse_request,
)

MAPPED = Address("udp", "198.51.100.20", 40123)
LOCAL = Address("udp", "203.0.113.1", 5060)


def request(
    txid: bytes = b"A" * 12, fingerprint: bool = False, attrs: bytes = b"", classic: bool = False
) -> bytes:
    head_tail = os.urandom(16) if classic else struct.pack("!I", MAGIC_COOKIE) + txid
    body = attrs
    if fingerprint:
        head = struct.pack("!HH", 1, len(body) + 8) + head_tail
        crc = (zlib.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += struct.pack("!HHI", 0x8028, 4, crc)
    return struct.pack("!HH", 1, len(body)) + head_tail + body


def attributes(message: bytes) -> dict[int, bytes]:
    out = {}
    offset = 20
    while offset < len(message):
        kind, size = struct.unpack_from("!HH", message, offset)
        out[kind] = message[offset + 4 : offset + 4 + size]
        offset += 4 + size + (-size % 4)
    return out


def test_stun_is_told_apart_from_sip() -> None:
    """STUN starts with two zero bits; SIP with a letter or a line end."""
    assert looks_like_stun(request())
    assert not looks_like_stun(b"OPTIONS sip:a SIP/2.0\r\n")
    assert not looks_like_stun(b"\r\n\r\n")


def test_rfc5389_binding_with_xor_mapped_address_and_fingerprint() -> None:
    """XOR-MAPPED-ADDRESS decodes to the source; FINGERPRINT is valid; SOFTWARE present."""
    req = parse_request(request(fingerprint=True))
    assert not req.classic and req.fingerprint
    response = binding_response(req, MAPPED, LOCAL, software="sbc test")
    kind, length, cookie = struct.unpack_from("!HHI", response)
    assert (kind, cookie, response[8:20]) == (0x0101, MAGIC_COOKIE, b"A" * 12)
    assert length == len(response) - 20
    attrs = attributes(response)
    _, family, port = struct.unpack_from("!BBH", attrs[0x0020])
    address = bytes(
        a ^ b for a, b in zip(attrs[0x0020][4:], struct.pack("!I", MAGIC_COOKIE), strict=True)
    )
    assert family == 1 and port ^ (MAGIC_COOKIE >> 16) == 40123
    assert str(ipaddress.ip_address(address)) == "198.51.100.20"
    assert attrs[0x8022] == b"sbc test"
    crc = (zlib.crc32(response[:-8]) ^ 0x5354554E) & 0xFFFFFFFF
    assert struct.unpack("!I", attrs[0x8028])[0] == crc


def test_no_fingerprint_unless_asked() -> None:
    """Without FINGERPRINT in the request there is none in the answer."""
    response = binding_response(parse_request(request()), MAPPED, LOCAL)
    assert 0x8028 not in attributes(response)


def test_ipv6_xor_mapped_address() -> None:
    """IPv6 is XORed with cookie and transaction id."""
    req = parse_request(request(txid=bytes(range(12))))
    response = binding_response(req, Address("udp", "2001:db8::5", 5070), LOCAL)
    value = attributes(response)[0x0020]
    key = struct.pack("!I", MAGIC_COOKIE) + bytes(range(12))
    address = bytes(a ^ b for a, b in zip(value[4:], key, strict=True))
    assert value[1] == 2 and str(ipaddress.ip_address(address)) == "2001:db8::5"


def test_classic_request_gets_mapped_address() -> None:
    """RFC 3489: MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS, 16-byte transaction id."""
    data = request(classic=True)
    req = parse_request(data)
    assert req.classic
    response = binding_response(req, MAPPED, LOCAL)
    assert response[4:20] == data[4:20]
    attrs = attributes(response)
    assert attrs[0x0001] == struct.pack("!BBH", 0, 1, 40123) + bytes([198, 51, 100, 20])
    assert 0x0004 in attrs and 0x0005 in attrs and len(attrs[0x8022]) % 4 == 0


def test_change_request_gets_420() -> None:
    """sbc has no alternate address: a classic CHANGE-REQUEST is refused with 420."""
    data = request(classic=True, attrs=struct.pack("!HHI", 0x0003, 4, 0x06))
    response = binding_response(parse_request(data), MAPPED, LOCAL)
    assert struct.unpack_from("!H", response)[0] == 0x0111


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x00",  # short
        request()[:-1],  # length mismatch
        struct.pack("!HH", 0x0101, 0) + request()[4:],  # a response, not a request
        request(attrs=struct.pack("!HH", 0x0020, 8)),  # truncated attribute
        request(attrs=struct.pack("!HHI", 0x7777, 4, 0)),  # unknown required attribute
        request(fingerprint=True)[:-1] + b"\x00",  # bad fingerprint
    ],
)
def test_malformed_stun_is_refused(data: bytes) -> None:
    """Anything but a well-formed Binding request raises StunError."""
    with pytest.raises(StunError):
        parse_request(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_stun_errors(data: bytes) -> None:
    """parse_request never raises anything but StunError."""
    try:
        parse_request(data)
    except StunError:
        pass
