"""Tests for L{sbc.core.address}."""

from __future__ import annotations

import pytest

from sbc.core.address import Address, normalise_host, parse_address


@pytest.mark.parametrize(
    "text, expected",
    [
        ("udp:127.0.0.1:5060", Address("udp", "127.0.0.1", 5060)),
        ("TCP:127.0.0.1", Address("tcp", "127.0.0.1", 5060)),
        ("tls:127.0.0.1", Address("tls", "127.0.0.1", 5061)),
        ("udp:[::1]:5070", Address("udp", "::1", 5070)),
        ("tls:[2001:DB8:0::1]", Address("tls", "2001:db8::1", 5061)),
        ("udp:127.0.0.1:0", Address("udp", "127.0.0.1", 0)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    """proto:ip[:port], IPv6 in brackets, default ports per transport."""
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "udp",
        "sctp:1.2.3.4:5",
        "udp:example.com:5060",
        "udp:1.2.3.4:x",
        "udp:[::1",
        "udp:::1:5060",
        "udp:1.2.3.4:70000",
    ],
)
def test_bad_addresses(text: str) -> None:
    """Anything else is a ValueError saying what was expected."""
    with pytest.raises(ValueError):
        parse_address(text)


def test_str_and_normalise() -> None:
    """IPv6 written with brackets; spellings normalised."""
    assert str(Address("udp", "::1", 5060)) == "udp:[::1]:5060"
    assert normalise_host("[2001:DB8::0:1]") == "2001:db8::1"
    assert normalise_host("Example.COM") == "example.com"
