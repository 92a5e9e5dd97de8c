"""Tests for L{sbc.core.stun}: Binding requests and responses, RFC 5389 and RFC 3489."""

from __future__ import annotations

import hashlib
import hmac
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
    check_error,
    check_request,
    check_success,
    is_stun_datagram,
    looks_like_stun,
    parse_check,
    parse_check_success,
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


# -- ICE connectivity checks (RFC 8445 §7.3, RFC 5389 §15.4) ------------------------------------

TXID = bytes(range(12))


def integrity_ok(message: bytes, password: str) -> bool:
    """MESSAGE-INTEGRITY recomputed here, independently of the codec."""
    offset = 20
    while offset < len(message):
        kind, size = struct.unpack_from("!HH", message, offset)
        if kind == 0x0008:
            head = bytearray(message[:offset])
            struct.pack_into("!H", head, 2, offset - 20 + 24)
            digest = hmac.new(password.encode(), bytes(head), hashlib.sha1).digest()
            return digest == message[offset + 4 : offset + 24]
        offset += 4 + size + (-size % 4)
    return False


def test_rtp_rtcp_and_stun_are_told_apart() -> None:
    """RFC 7983: first byte 0..3 is STUN; RTP/RTCP (128..191) and DTLS (20..63) are not."""
    assert is_stun_datagram(check_request(TXID, "a:b", "pw"))
    assert not is_stun_datagram(b"\x80\x00\x00\x01") and not is_stun_datagram(b"\x81\xc8")
    assert not is_stun_datagram(b"\x16\xfe\xfd") and not is_stun_datagram(b"")


def test_check_request_round_trip_and_integrity() -> None:
    """A check carries USERNAME, USE-CANDIDATE and a MESSAGE-INTEGRITY that verifies only
    with the right password; FINGERPRINT is last and correct."""
    data = check_request(TXID, "relay:peer", "secret-password", use_candidate=True)
    assert integrity_ok(data, "secret-password") and not integrity_ok(data, "wrong")
    check = parse_check(data)
    assert (check.transaction_id, check.username, check.use_candidate) == (TXID, "relay:peer", True)
    assert check.verify("secret-password") and not check.verify("secret-passwore")
    assert struct.unpack_from("!H", data, len(data) - 8)[0] == 0x8028
    plain = parse_check(check_request(TXID, "relay:peer", "pw"))
    assert not plain.use_candidate


def test_check_success_carries_xor_mapped_integrity_and_fingerprint() -> None:
    """The response names the check's source, authenticates with the password, and is read
    back by parse_check_success (which refuses another password or transaction)."""
    check = parse_check(check_request(TXID, "relay:peer", "pw-of-the-relay-1234567"))
    reply = check_success(check, MAPPED, "pw-of-the-relay-1234567")
    assert struct.unpack_from("!H", reply)[0] == 0x0101
    assert integrity_ok(reply, "pw-of-the-relay-1234567")
    assert parse_check_success(reply, TXID, "pw-of-the-relay-1234567") == MAPPED
    with pytest.raises(StunError):
        parse_check_success(reply, TXID, "another-password-000000")
    with pytest.raises(StunError):
        parse_check_success(reply, b"B" * 12, "pw-of-the-relay-1234567")
    v6 = Address("udp", "2001:db8::7", 5004)
    assert parse_check_success(check_success(check, v6, "k"), TXID, "k") == v6


def test_check_error_has_code_and_fingerprint_but_no_integrity() -> None:
    """401: ERROR-CODE class 4 number 1, FINGERPRINT, no MESSAGE-INTEGRITY."""
    reply = check_error(TXID, 401, "Unauthorized")
    assert struct.unpack_from("!H", reply)[0] == 0x0111 and reply[8:20] == TXID
    found = attributes(reply)
    assert found[0x0009][2:4] == b"\x04\x01" and 0x8028 in found and 0x0008 not in found


def test_parse_check_refuses_non_requests_and_classic_stun() -> None:
    """Only RFC 5389 Binding requests are checks."""
    check = parse_check(check_request(TXID, "a:b", "pw"))
    for data in (
        check_success(check, MAPPED, "pw"),
        request(classic=True),
        b"\x00\x01\x00\x00",
    ):
        with pytest.raises(StunError):
            parse_check(data)


@given(st.binary(max_size=120))
def test_arbitrary_bytes_only_raise_stun_errors_as_checks(data: bytes) -> None:
    """parse_check never raises anything but StunError."""
    try:
        parse_check(data)
    except StunError:
        pass
