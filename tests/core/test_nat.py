"""Tests for L{sbc.core.nat}: RFC 3581 received/rport and response targets."""

from __future__ import annotations

import pytest

from sbc.core.message import Request, parse
from sbc.core.nat import response_target, stamp_via
from sbc.core.uri import parse_via
from tests.helpers import request_bytes


def request(via: str) -> Request:
    m = parse(request_bytes(via=via))
    assert isinstance(m, Request)
    return m


@pytest.mark.parametrize(
    "via, source, expected",
    [
        # sent-by equals the source and no rport: untouched (RFC 3261 §18.2.1)
        (
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
            ("192.0.2.1", 5060),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
        ),
        # behind NAT: received added
        (
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1",
            ("203.0.113.7", 40000),
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=203.0.113.7",
        ),
        # rport asked for: filled in, received always added (RFC 3581 §4)
        (
            "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1",
            ("192.0.2.1", 5060),
            "SIP/2.0/UDP 192.0.2.1:5060;rport=5060;branch=z9hG4bK1;received=192.0.2.1",
        ),
        # a host name is always stamped
        (
            "SIP/2.0/TCP pc.example.com;branch=z9hG4bK1",
            ("192.0.2.9", 1234),
            "SIP/2.0/TCP pc.example.com;branch=z9hG4bK1;received=192.0.2.9",
        ),
        # IPv6 source, bare in received
        (
            "SIP/2.0/UDP [2001:db8::5];rport;branch=z9hG4bK1",
            ("2001:db8::6", 5062),
            "SIP/2.0/UDP [2001:db8::5];rport=5062;branch=z9hG4bK1;received=2001:db8::6",
        ),
    ],
)
def test_stamp_via(via: str, source: tuple[str, int], expected: str) -> None:
    """received/rport on the top Via follow RFC 3261 §18.2.1 and RFC 3581."""
    stamped = stamp_via(request(via), *source)
    assert str(stamped.top_via) == expected


def test_stamp_via_leaves_the_input_alone_and_other_vias_verbatim() -> None:
    """The input message is unchanged; lower Vias in the same field are kept."""
    original = request(
        "SIP/2.0/UDP 10.0.0.5;rport;branch=z9hG4bK1, SIP/2.0/UDP p.example;branch=z9hG4bK0"
    )
    stamped = stamp_via(original, "203.0.113.7", 4000)
    assert original.top_via.rport == ""
    assert stamped.top_via.rport == "4000"
    assert str(stamped.vias[1]) == "SIP/2.0/UDP p.example;branch=z9hG4bK0"


def test_force_rport() -> None:
    """force_rport stamps rport even when the client did not ask."""
    stamped = stamp_via(
        request("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1"), "203.0.113.7", 4000, force_rport=True
    )
    assert stamped.top_via.rport == "4000" and stamped.top_via.received == "203.0.113.7"


@pytest.mark.parametrize(
    "via, target",
    [
        ("SIP/2.0/UDP 10.0.0.5:5070;rport=4000;received=203.0.113.7", ("203.0.113.7", 4000)),
        ("SIP/2.0/UDP 10.0.0.5:5070;received=203.0.113.7", ("203.0.113.7", 5070)),
        ("SIP/2.0/UDP 192.0.2.1", ("192.0.2.1", 5060)),
        ("SIP/2.0/TLS 192.0.2.1", ("192.0.2.1", 5061)),
        ("SIP/2.0/UDP h.example;maddr=239.1.1.1;received=192.0.2.3", ("239.1.1.1", 5060)),
        ("SIP/2.0/UDP [2001:db8::5];rport=5062;received=2001:db8::6", ("2001:db8::6", 5062)),
        # Parameter names in any case; the first of a repeated one counts; rport
        # without a value leaves the sent-by port.
        ("SIP/2.0/UDP 10.0.0.5;RPort=4000;Received=192.0.2.9;rport=9", ("192.0.2.9", 4000)),
        (
            "SIP/2.0/UDP 10.0.0.5:5070;rport;received=192.0.2.9;received=192.0.2.1",
            ("192.0.2.9", 5070),
        ),
    ],
)
def test_response_target(via: str, target: tuple[str, int]) -> None:
    """Responses go to maddr, else received:rport, else sent-by (RFC 3261 §18.2.2, RFC 3581)."""
    assert response_target(parse_via(via)) == target


# -- detection: nat_uac_test, client_nat_test, is_rfc1918 ----------------------------------------

from sbc.core.address import Address  # noqa: E402
from sbc.core.nat import (  # noqa: E402
    BASE_RANGES,
    EXTRA_RANGES,
    PrivateRanges,
    client_nat_test,
    is_rfc1918,
    nat_uac_test,
)

RANGES = PrivateRanges.of(BASE_RANGES + EXTRA_RANGES)
NT_RANGES = PrivateRanges.of(BASE_RANGES)


def tv01() -> Request:
    return request("SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKx;rport")


def with_contact_and_sdp(via: str, contact: str, sdp: bytes = b"") -> Request:
    data = request_bytes(
        via=via,
        headers=[("Contact", contact)] + ([("Content-Type", "application/sdp")] if sdp else []),
        body=sdp,
    )
    m = parse(data)
    assert isinstance(m, Request)
    return m


@pytest.mark.parametrize(
    "bit, expected",
    [
        (1, True),
        (2, True),
        (4, True),
        (8, False),
        (16, True),
        (32, False),
        (64, False),
        (128, True),
        (256, False),
        (512, False),
    ],
)
def test_tv01_register_behind_nat(bit: int, expected: bool) -> None:
    """A REGISTER from behind NAT: every nat_uac_test bit as expected."""
    m = with_contact_and_sdp(
        "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKx;rport", "<sip:alice@192.168.1.10:5060>"
    )
    src = Address("udp", "198.51.100.20", 40123)
    assert nat_uac_test(m, src, bit, RANGES) is expected


def test_tv01_combinations() -> None:
    """19 true, 96 false; client_nat_test 3 and 4 true."""
    m = with_contact_and_sdp(
        "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKx;rport", "<sip:alice@192.168.1.10:5060>"
    )
    src = Address("udp", "198.51.100.20", 40123)
    assert nat_uac_test(m, src, 19, RANGES) and not nat_uac_test(m, src, 96, RANGES)
    assert client_nat_test(m, src, 3, NT_RANGES) and client_nat_test(m, src, 4, NT_RANGES)


SDP_PUBLIC = (
    b"v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\n"
    b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)


def test_tv02_public_ua() -> None:
    """A public UA: nothing says NAT."""
    m = with_contact_and_sdp(
        "SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKx", "<sip:bob@203.0.113.5>", SDP_PUBLIC
    )
    src = Address("udp", "203.0.113.5", 5060)
    assert not nat_uac_test(m, src, 511, RANGES)
    assert not client_nat_test(m, src, 7, NT_RANGES)


def test_tv03_rport_only_nat() -> None:
    """Only the source port differs: bit 2 false, 16 and 128 true, client_nat_test 2 true."""
    m = with_contact_and_sdp(
        "SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKx", "<sip:bob@203.0.113.5>", SDP_PUBLIC
    )
    src = Address("udp", "203.0.113.5", 5070)
    assert not nat_uac_test(m, src, 2, RANGES)
    assert nat_uac_test(m, src, 16, RANGES) and nat_uac_test(m, src, 128, RANGES)
    assert client_nat_test(m, src, 2, NT_RANGES)


@pytest.mark.parametrize(
    "host, mode, expected",
    [
        ("100.64.0.0", 1, True),
        ("100.127.255.255", 1, True),
        ("100.128.0.0", 1, False),
        ("172.31.255.255", 1, True),
        ("172.32.0.1", 1, False),
        ("192.0.0.7", 0, True),
        ("192.0.0.7", 1, True),
        ("192.0.0.200", 1, True),
        ("192.0.0.200", 0, False),
        ("10.1.2.3", 1, True),
        ("fd00::1", 1, False),
        ("host.example", 1, False),
    ],
)
def test_tv04_private_range_edges(host: str, mode: int, expected: bool) -> None:
    """is_rfc1918 at the range edges in both nat_addr_modes."""
    assert is_rfc1918(host, mode) is expected


def test_tv04_client_nat_test_uses_the_base_list() -> None:
    """192.0.0.200 is private for nathelper (mode 1) but not for nat_traversal."""
    m = with_contact_and_sdp("SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKx", "<sip:a@192.0.0.200>")
    src = Address("udp", "203.0.113.5", 5060)
    assert not client_nat_test(m, src, 1, NT_RANGES)
    assert nat_uac_test(m, src, 1, RANGES)


def test_sdp_bits() -> None:
    """Bit 8: a private media address; bit 256: session c= differs from the source."""
    sdp = SDP_PUBLIC.replace(b"c=IN IP4 203.0.113.5", b"c=IN IP4 10.0.0.5")
    m = with_contact_and_sdp(
        "SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKx", "<sip:bob@203.0.113.5>", sdp
    )
    src = Address("udp", "203.0.113.5", 5060)
    assert nat_uac_test(m, src, 8, RANGES) and nat_uac_test(m, src, 256, RANGES)


def test_ipv6_ula_is_private_in_sbc_ranges() -> None:
    """sbc's default ranges include fc00::/7 so IPv6 test networks can be NATed too."""
    assert PrivateRanges.of(("fc00::/7",)).contains("[fd00::1]")
    assert not RANGES.contains("fd00::1")


def test_private_ranges_memo_is_bounded_and_answers_as_before(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The memo of answers gives the same answers, keeps no long host (a peer's) and is
    emptied when full; ranges built alike still compare equal and hash alike."""
    import sbc.core.nat as nat

    ranges = PrivateRanges.of(BASE_RANGES)
    for host in ("10.0.0.5", "192.0.2.1", "example.com", "[fd00::1]", "10.0.0.5"):
        assert ranges.contains(host) == ranges._lookup(host)
    assert ranges.contains("10.0.0.5") and not ranges.contains("192.0.2.1")
    long_name = "a" * 48 + ".example.com"
    assert not ranges.contains(long_name) and long_name not in ranges._memo
    monkeypatch.setattr(nat, "_MEMO_SIZE", 3)
    for i in range(5):
        ranges.contains(f"10.0.0.{i}")
    assert len(ranges._memo) <= 3
    assert ranges == PrivateRanges.of(BASE_RANGES) and hash(ranges) == hash(NT_RANGES)
