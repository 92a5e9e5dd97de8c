"""Tests for L{sbc.core.uri}."""

from __future__ import annotations

import pytest

from sbc.core.errors import ParseError
from sbc.core.uri import (
    OpaqueUri,
    SipUri,
    format_host,
    is_ip_literal,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_commas,
)


@pytest.mark.parametrize(
    "text, user, password, host, port",
    [
        ("sip:alice@example.com", "alice", None, "example.com", None),
        ("sips:alice:secret@example.com:5061", "alice", "secret", "example.com", 5061),
        ("sip:[2001:db8::1]:5070", None, None, "[2001:db8::1]", 5070),
        ("sip:bob@[::1]", "bob", None, "[::1]", None),
        (
            "sip:user;par=u%40example.net@example.com",
            "user;par=u%40example.net",
            None,
            "example.com",
            None,
        ),
        ("sip:203.0.113.9", None, None, "203.0.113.9", None),
    ],
)
def test_sip_uri_parts(text: str, user, password, host, port) -> None:  # type: ignore[no-untyped-def]
    """User, password, host (IPv6 references too) and port come apart correctly."""
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.password, uri.host, uri.port) == (user, password, host, port)
    assert str(uri) == text


def test_uri_params_and_headers() -> None:
    """Parameters keep order and valuelessness; headers follow ?."""
    uri = parse_uri("sip:a@h;transport=TCP;lr;maddr=10.0.0.1?Subject=hi&Priority=urgent")
    assert isinstance(uri, SipUri)
    assert uri.params == (("transport", "TCP"), ("lr", None), ("maddr", "10.0.0.1"))
    assert uri.param("LR") == "" and uri.param("x") is None
    assert uri.transport == "tcp"
    assert uri.headers == (("Subject", "hi"), ("Priority", "urgent"))


def test_uri_changes_rebuild_text() -> None:
    """with_param/without_param return new URIs written in canonical form."""
    uri = parse_uri("sip:a@h:5060;x=1")
    assert isinstance(uri, SipUri)
    assert str(uri.with_param("lr")) == "sip:a@h:5060;x=1;lr"
    assert str(uri.with_param("x", "2")) == "sip:a@h:5060;x=2"
    assert str(uri.without_param("x")) == "sip:a@h:5060"
    assert str(uri) == "sip:a@h:5060;x=1"
    assert str(uri.evolve(host="[2001:db8::2]", port=None)) == "sip:a@[2001:db8::2];x=1"


def test_uri_equality_is_case_insensitive_where_the_rfc_says() -> None:
    """Scheme and host compare without case, parameters in any order."""
    assert parse_uri("SIP:a@Example.COM;lr;x=1") == parse_uri("sip:a@example.com;x=1;lr")
    assert parse_uri("sip:A@example.com") != parse_uri("sip:a@example.com")


def test_default_transport() -> None:
    """sip: defaults to udp, sips: to tls."""
    assert parse_uri("sip:h").transport == "udp"  # type: ignore[union-attr]
    assert parse_uri("sips:h").transport == "tls"  # type: ignore[union-attr]


def test_other_schemes_are_opaque() -> None:
    """tel: and unknown schemes parse as opaque URIs (the application answers 416)."""
    uri = parse_uri("tel:+1-555-0100;phone-context=example.com")
    assert isinstance(uri, OpaqueUri) and uri.scheme == "tel"
    assert str(uri) == "tel:+1-555-0100;phone-context=example.com"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:a@",
        "sip:@h",
        "sip:h:port",
        "sip:h:70000",
        "sip:a b@h",
        "<sip:a@h>",
        "sip:[::1",
        "sip:h;;lr",
        "sip:h?x",
        "1sip:h",
        "sip:h_x.example",
    ],
)
def test_bad_uris(text: str) -> None:
    """Malformed URIs raise ParseError with status 400."""
    with pytest.raises(ParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


def test_name_addr_forms() -> None:
    """Quoted and token display names, bare addr-spec with params bound to the header."""
    na = parse_name_addr('"Alice \\"A\\"" <sip:alice@h;lr>;tag=1;q=0.5')
    assert na.display == '"Alice \\"A\\""' and str(na.uri) == "sip:alice@h;lr"
    assert na.tag == "1" and na.param("q") == "0.5"
    bare = parse_name_addr("sip:bob@h;tag=2")
    assert str(bare.uri) == "sip:bob@h" and bare.tag == "2" and not bare.angle
    tokens = parse_name_addr("Bob Smith<sip:bob@h>")
    assert tokens.display == "Bob Smith"


def test_name_addr_changes() -> None:
    """Adding a tag to a bare addr-spec encloses it in <> when the URI changes."""
    bare = parse_name_addr("sip:bob@h")
    assert str(bare.with_param("tag", "x")) == "sip:bob@h;tag=x"
    assert str(bare.evolve(uri=parse_uri("sip:bob@h;lr"))) == "<sip:bob@h;lr>"


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@h>',
        "< sip:a@h >",
        "Bell, Alexander <sip:a@h>",
        "sip:a@h?Route=x",
        "<sip:a@h>;;",
        "<sip:a@h",
        '"x" sip:a@h',
    ],
)
def test_bad_name_addrs(text: str) -> None:
    """RFC 4475 style faults in name-addr raise ParseError."""
    with pytest.raises(ParseError):
        parse_name_addr(text)


def test_via_parts() -> None:
    """Via: transport, sent-by, branch, received, rport, maddr."""
    via = parse_via("SIP/2.0/tcp [2001:db8::9]:5080;branch=z9hG4bKx;rport;received=2001:db8::1")
    assert via.transport == "TCP" and via.host == "[2001:db8::9]" and via.port == 5080
    assert via.branch == "z9hG4bKx" and via.rport == "" and via.received == "2001:db8::1"
    assert via.host_bare == "2001:db8::9"
    assert str(via.with_param("rport", "4000")) == (
        "SIP/2.0/TCP [2001:db8::9]:5080;branch=z9hG4bKx;rport=4000;received=2001:db8::1"
    )


@pytest.mark.parametrize(
    "plain, spaced",
    [
        (
            "SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport",
            "SIP / 2.0 / udp  h:5060 ; branch = z9hG4bK1;rport",
        ),
        ("SIP/2.0/TLS a.example;ttl=255;maddr=[::1]", "SIP/2.0/TLS a.example ;ttl=255;maddr=[::1]"),
    ],
)
def test_plain_and_spaced_vias_parse_alike(plain: str, spaced: str) -> None:
    """The plain form (no white space inside, the usual case) and the same via-parm with LWS
    give equal values; each keeps its own text."""
    assert parse_via(plain) == parse_via(spaced) and str(parse_via(plain)) == plain
    assert str(parse_via(spaced)) == spaced.strip()


def test_evolve_copies_fields_and_drops_the_text() -> None:
    """evolve() changes the named fields only, forgets the text and what was computed from
    the old fields, and refuses unknown names."""
    addr = parse_name_addr("<sip:a@h>;tag=1")
    assert addr.tag == "1"
    changed = addr.evolve(params=(("tag", "2"),))
    assert changed.tag == "2" and str(changed) == "<sip:a@h>;tag=2" and addr.tag == "1"
    via = parse_via("SIP/2.0/UDP h;branch=z9hG4bK1")
    assert str(via.evolve(port=5070)) == "SIP/2.0/UDP h:5070;branch=z9hG4bK1"
    with pytest.raises(TypeError):
        via.evolve(nonsense=1)


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/3.0/UDP h",
        "SIP/2.0 h",
        "SIP/2.0/UDP h;;",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h;ttl=300",
        "SIP/2.0/UDP h:0",
        "SIP/2.0/UDP h:65536",
        "SIP/2.0/UDP h;ttl",
        "SIP/2.0/UDP h;a=b=c",
        "SIP/2.0/UDP [1.2.3.4]",
    ],
)
def test_bad_vias(text: str) -> None:
    """Malformed via-parms raise ParseError."""
    with pytest.raises(ParseError):
        parse_via(text)


def test_split_commas() -> None:
    """Commas inside quotes and angle brackets do not split."""
    assert split_commas('"a,b" <sip:x,y@h>, <sip:z@h> ,') == ['"a,b" <sip:x,y@h>', "<sip:z@h>", ""]
    assert split_commas(" a ,b,, c") == ["a", "b", "", "c"] and split_commas(" a ") == ["a"]


def test_ip_literals() -> None:
    """IPv4 and IPv6 literals are recognised; names are not."""
    assert is_ip_literal("192.0.2.1") and is_ip_literal("::1") and is_ip_literal("[::1]")
    assert not is_ip_literal("example.com") and not is_ip_literal("300.1.1.1")
    assert format_host("::1") == "[::1]" and format_host("[::1]") == "[::1]"


def test_only_short_texts_are_kept_by_the_parse_caches() -> None:
    """Values a call repeats are parsed once; a peer's long values are parsed each time,
    so 4096 cache entries cannot hold megabytes of its text."""
    from sbc.core.uri import CACHED_TEXT, parse_name_addr, parse_uri, parse_via

    short = "sip:alice@192.0.2.1"
    assert parse_uri(short) is parse_uri(short)
    long_uri = "sip:" + "a" * CACHED_TEXT + "@192.0.2.1"
    assert parse_uri(long_uri) == parse_uri(long_uri)
    assert parse_uri(long_uri) is not parse_uri(long_uri)
    assert parse_name_addr(f"<{long_uri}>") is not parse_name_addr(f"<{long_uri}>")
    via = "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK" + "b" * CACHED_TEXT
    assert parse_via(via) is not parse_via(via)
