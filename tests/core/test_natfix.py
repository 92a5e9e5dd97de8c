"""Tests for L{sbc.core.natfix}: add_contact_alias, handle_ruri_alias,
fix_nated_register's source URI, fix_nated_contact and the rest of nathelper's fixes."""

from __future__ import annotations

import pytest

from sbc.core.address import Address
from sbc.core.message import Request, parse
from sbc.core.natfix import (
    AliasError,
    add_contact_alias,
    decode_alias,
    fix_nated_contact,
    handle_ruri_alias,
    source_uri,
)
from tests.helpers import request_bytes

UDP_SRC = Address("udp", "198.51.100.20", 40123)
TCP_SRC = Address("tcp", "198.51.100.20", 40123)


def with_contact(contact: str, uri: str = "sip:bob@example.com") -> Request:
    m = parse(request_bytes("INVITE", uri, headers=[("Contact", contact)] if contact else []))
    assert isinstance(m, Request)
    return m


def contact_of(m) -> str:  # type: ignore[no-untyped-def]
    return m.get("Contact")


def test_tv05_alias_inserted_after_hostport() -> None:
    """The alias goes right after host:port, before existing URI params."""
    out = add_contact_alias(with_contact("<sip:alice@192.168.1.10:5060;ob>"), UDP_SRC)
    assert contact_of(out) == "<sip:alice@192.168.1.10:5060;alias=198.51.100.20~40123~1;ob>"


def test_tv05_unbracketed_contact_over_tcp() -> None:
    """A bare addr-spec is enclosed in <>, its former params stay header params."""
    out = add_contact_alias(with_contact("sip:alice@192.168.1.10:5060;expires=60"), TCP_SRC)
    assert contact_of(out) == "<sip:alice@192.168.1.10:5060;alias=198.51.100.20~40123~2>;expires=60"


def test_tv05_ipv6_tls_and_star() -> None:
    """IPv6 sources are bracketed; Contact: * is left alone."""
    out = add_contact_alias(with_contact("<sip:a@10.0.0.1>"), Address("tls", "2001:db8::5", 5070))
    assert ";alias=[2001:db8::5]~5070~3" in contact_of(out)
    star = with_contact("*")
    assert add_contact_alias(star, UDP_SRC) is star


def test_alias_is_idempotent_and_replaces_a_stale_one() -> None:
    """Applying twice gives one alias; a foreign alias is replaced by ours."""
    once = add_contact_alias(with_contact("<sip:alice@10.0.0.2>"), UDP_SRC)
    assert contact_of(add_contact_alias(once, UDP_SRC)) == contact_of(once)
    stale = with_contact("<sip:a@10.0.0.2;alias=1.2.3.4~5060~1>")
    assert (
        contact_of(add_contact_alias(stale, UDP_SRC))
        == "<sip:a@10.0.0.2;alias=198.51.100.20~40123~1>"
    )


def test_no_alias_when_contact_is_the_source() -> None:
    """A public UA whose Contact is its source needs no alias (no ;transport= means UDP)."""
    m = with_contact("<sip:bob@203.0.113.5:5060>")
    assert add_contact_alias(m, Address("udp", "203.0.113.5", 5060)) is m
    assert add_contact_alias(m, Address("tcp", "203.0.113.5", 5060)) is not m


def test_tv08_handle_ruri_alias() -> None:
    """The alias leaves the R-URI and names the destination."""
    r = with_contact("", "sip:alice@192.168.1.10:5060;alias=198.51.100.20~40123~1;ob")
    out, target = handle_ruri_alias(r)
    assert str(out.uri) == "sip:alice@192.168.1.10:5060;ob"
    assert target == UDP_SRC
    assert decode_alias("198.51.100.20~40123~2") == TCP_SRC
    assert decode_alias("[2001:db8::5]~5070~3") == Address("tls", "2001:db8::5", 5070)
    plain = with_contact("", "sip:alice@192.168.1.10")
    assert handle_ruri_alias(plain) == (plain, None)


@pytest.mark.parametrize("value", ["1.2.3.4~5060", "1.2.3.4~5060~9", "x~5060~1", "1.2.3.4~0~1"])
def test_tv08_bad_aliases(value: str) -> None:
    """Malformed aliases are refused."""
    with pytest.raises(AliasError):
        decode_alias(value)


@pytest.mark.parametrize("digit, transport", [("5", "ws"), ("6", "wss")])
def test_websocket_aliases(digit: str, transport: str) -> None:
    """Kamailio's digits 5 and 6 name a WebSocket flow (RFC 7118), reached over its
    connection."""
    assert decode_alias(f"192.0.2.1~40000~{digit}") == Address(transport, "192.0.2.1", 40000)


def test_tv08_first_or_last_alias() -> None:
    """mode 0 uses the first alias, any other the last."""
    r = with_contact("", "sip:a@h;alias=192.0.2.1~1~1;alias=192.0.2.2~2~1")
    assert handle_ruri_alias(r)[1] == Address("udp", "192.0.2.1", 1)
    assert handle_ruri_alias(r, last=True)[1] == Address("udp", "192.0.2.2", 2)


def test_tv10_source_uri() -> None:
    """What a registrar stores as received."""
    assert source_uri(UDP_SRC) == "sip:198.51.100.20:40123"
    assert source_uri(TCP_SRC) == "sip:198.51.100.20:40123;transport=tcp"
    assert source_uri(Address("tls", "2001:db8::5", 5061)) == "sip:[2001:db8::5]:5061;transport=tls"


def test_tv12_fix_nated_contact() -> None:
    """host:port replaced by the source, params kept, maddr dropped."""
    m = with_contact("<sip:alice@192.168.1.10;transport=udp;maddr=10.0.0.1>")
    assert (
        contact_of(fix_nated_contact(m, UDP_SRC)) == "<sip:alice@198.51.100.20:40123;transport=udp>"
    )
    v6 = fix_nated_contact(
        with_contact("<sip:alice@192.168.1.10;transport=udp>"), Address("udp", "2001:db8::5", 5062)
    )
    assert contact_of(v6) == "<sip:alice@[2001:db8::5]:5062;transport=udp>"
    done = fix_nated_contact(m, UDP_SRC)
    assert fix_nated_contact(done, UDP_SRC) is done


from sbc.core.natfix import add_contact_alias_to, add_rcv_param, alias_to_uri, set_contact_alias  # noqa: E402


def test_tv06_explicit_alias() -> None:
    """add_contact_alias(ip, port, proto): always added; bad arguments refused."""
    m = with_contact("<sip:a@10.0.0.1:5061;transport=tls>")
    out = add_contact_alias_to(m, "203.0.113.9", "5061", "TLS")
    assert contact_of(out) == "<sip:a@10.0.0.1:5061;alias=203.0.113.9~5061~3;transport=tls>"
    for args in (
        ("203.0.113.9", "0", "udp"),
        ("203.0.113.9", "70000", "udp"),
        ("203.0.113.9", "5060", "foo"),
        ("abc", "5060", "udp"),
    ):
        with pytest.raises(AliasError):
            add_contact_alias_to(m, *args)


def test_tv07_set_contact_alias() -> None:
    """Appended at the URI end even when addresses match; trim replaces a trailing alias."""
    out = set_contact_alias(with_contact("<sip:alice@10.0.0.2;ob>"), UDP_SRC)
    assert contact_of(out) == "<sip:alice@10.0.0.2;ob;alias=198.51.100.20~40123~1>"
    trimmed = set_contact_alias(
        with_contact("<sip:a@10.0.0.2;alias=1.2.3.4~5060~1>"), UDP_SRC, True
    )
    assert contact_of(trimmed) == "<sip:a@10.0.0.2;alias=198.51.100.20~40123~1>"


def test_tv09_alias_to_uri() -> None:
    """The Contact's alias as a URI, transport always written."""
    m = with_contact("<sip:a@10.0.0.2;alias=198.51.100.20~40123~1>")
    assert alias_to_uri(m) == "sip:198.51.100.20:40123;transport=udp"
    with pytest.raises(AliasError):
        alias_to_uri(with_contact("<sip:a@10.0.0.2>"))


def test_tv11_add_rcv_param() -> None:
    """received= as a quoted header parameter, or as a URI parameter over UDP only."""
    m = with_contact("<sip:alice@192.168.1.10:5060>;expires=3600")
    assert contact_of(add_rcv_param(m, UDP_SRC)) == (
        '<sip:alice@192.168.1.10:5060>;expires=3600;received="sip:198.51.100.20:40123"'
    )
    assert contact_of(add_rcv_param(m, UDP_SRC, uri_param=True)) == (
        "<sip:alice@192.168.1.10:5060;received=sip:198.51.100.20:40123>;expires=3600"
    )
    with pytest.raises(AliasError):
        add_rcv_param(m, TCP_SRC, uri_param=True)
