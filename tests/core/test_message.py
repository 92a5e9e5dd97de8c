"""Tests for L{sbc.core.message}: parsing, byte-exact serialisation, changes, RFC 4475."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.core.errors import ParseError, RemoteProtocolError
from sbc.core.message import Header, ParseLimits, Request, Response, parse
from tests.helpers import request_bytes, rfc4475, rfc4475_cases

CASES = rfc4475_cases()
VALID = [name for name, verdict in CASES if verdict.startswith("valid")]
INVALID = [name for name, verdict in CASES if verdict == "invalid"]
# Sections 3.3/3.4: parse; the application decides (some of them decide 400 in the parser).
APPLICATION = {
    "badbranch": None,
    "unkscm": None,
    "novelsc": None,
    "unksm2": None,
    "bext01": None,
    "invut": None,
    "regaut01": None,
    "bcast": None,
    "zeromf": None,
    "cparam01": None,
    "cparam02": None,
    "regescrt": None,
    "sdp01": None,
    "inv2543": None,
    "insuf": 400,
    "multi01": 400,
    "mcl01": 400,
}


def test_rfc4475_fixture_is_complete() -> None:
    """All 49 torture messages are listed with a verdict."""
    assert len(CASES) == 49
    assert len(VALID) == 13 and len(INVALID) == 19


@pytest.mark.parametrize("name", VALID)
def test_rfc4475_valid_messages_parse_and_serialise_unchanged(name: str) -> None:
    """The valid torture messages parse, and serialise byte for byte as received."""
    data = rfc4475(name)
    message = parse(data)
    if name == "dblreq":
        # Extra octets after Content-Length in a datagram are ignored (RFC 3261 §18.3).
        assert data.startswith(message.to_bytes()) and len(message.to_bytes()) < len(data)
    else:
        assert message.to_bytes() == data


@pytest.mark.parametrize("name", INVALID)
def test_rfc4475_invalid_messages_raise_remote_error(name: str) -> None:
    """The invalid torture messages raise an error that carries a status to answer."""
    with pytest.raises(RemoteProtocolError) as info:
        parse(rfc4475(name))
    assert info.value.status in (400, 505)


@pytest.mark.parametrize("name", sorted(APPLICATION))
def test_rfc4475_application_messages(name: str) -> None:
    """Sections 3.2-3.4 parse, except the three the RFC answers with 400 anyway."""
    status = APPLICATION[name]
    if status is None:
        assert parse(rfc4475(name)).to_bytes() == rfc4475(name)
    else:
        with pytest.raises(ParseError) as info:
            parse(rfc4475(name))
        assert info.value.status == status


def test_badvers_answers_505() -> None:
    """An unknown SIP version gets 505."""
    with pytest.raises(ParseError) as info:
        parse(rfc4475("badvers"))
    assert info.value.status == 505


def test_wsinv_values_survive_folding_and_white_space() -> None:
    """The tortuous INVITE yields the right values from folded, oddly spaced headers."""
    m = parse(rfc4475("wsinv"))
    assert isinstance(m, Request)
    assert m.method == "INVITE"
    assert m.max_forwards == 68
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert m.to.tag == "1918181833n"
    assert m.from_.tag == "98asjd8"
    assert m.from_.display == '"J Rosenberg \\\\\\""'
    assert [v.transport for v in m.vias] == ["UDP", "TCP", "UDP"]
    assert [v.branch for v in m.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert m.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.get("Subject") == ""
    contact = m.contacts[0]
    assert contact.param("newparam") == "newvalue" and contact.param("q") == "0.33"
    assert str(m.routes[0].uri) == "sip:services.example.com;lr;unknownwith=value;unknown-no-value"


def test_compact_forms_are_the_same_headers() -> None:
    """Compact names (v, f, t, i, m, l) are found under their full names."""
    m = parse(rfc4475("esc01"))
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"
    assert m.get("content-type") == "application/sdp"
    assert m.get("C") == "application/sdp"
    assert str(m.contacts[0].uri) == "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"


def test_escaped_header_name_is_another_header() -> None:
    """C%6Fntact is not Contact (esc02): two contacts, one unknown header."""
    m = parse(rfc4475("esc02"))
    assert len(m.contacts) == 2
    assert m.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_multi_value_headers_split_outside_quotes_and_brackets() -> None:
    """Comma lists split at commas, never inside quotes or <>."""
    data = request_bytes(
        headers=[
            ("Contact", '"Doe, John" <sip:a@h1>;q=0.5, <sip:b,c@h2>'),
            ("Route", "<sip:p1;lr>, <sip:p2;lr>"),
            ("Route", "<sip:p3;lr>"),
        ]
    )
    m = parse(data)
    assert [c.display for c in m.contacts] == ['"Doe, John"', None]
    assert [str(r.uri) for r in m.routes] == ["sip:p1;lr", "sip:p2;lr", "sip:p3;lr"]


def test_unchanged_message_serialises_to_the_same_object() -> None:
    """No work is done to serialise a message nobody changed."""
    data = rfc4475("intmeth")
    assert parse(data).to_bytes() is data


def test_changes_return_new_messages_and_keep_other_headers_verbatim() -> None:
    """Changing one header leaves the input alone and other headers byte-identical."""
    data = rfc4475("wsinv")
    m = parse(data)
    changed = m.with_header_first("Via", "SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKnew")
    assert m.to_bytes() == data
    out = changed.to_bytes()
    assert out.startswith(b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n")
    assert b"TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n" in out
    assert out.index(b"Via: SIP/2.0/UDP 203.0.113.1") < out.index(b"Via  : SIP  /   2.0")
    again = parse(out)
    assert again.top_via.branch == "z9hG4bKnew" and len(again.vias) == 4


def test_without_first_value_pops_one_element_of_a_list_header() -> None:
    """Removing the top Via keeps the other Vias of the same header field."""
    m = parse(
        request_bytes(
            via="SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/UDP b.example;branch=z9hG4bK2"
        )
    )
    popped = m.without_first_value("Via")
    assert [v.host for v in popped.vias] == ["b.example"]


def test_copies_see_their_changes_and_share_what_did_not_change() -> None:
    """Typed values read before a change are right in the copy: the changed header anew,
    the others the very objects the original parsed."""
    m = parse(
        request_bytes(
            method="INVITE",
            via="SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/UDP b.example;branch=z9hG4bK2",
            headers=[("Route", "<sip:r1.example;lr>, <sip:r2.example;lr>"), ("Contact", "<sip:c>")],
        )
    )
    to, vias, routes = m.to, m.vias, m.routes
    assert m.contacts and m.get_all("route") == ["<sip:r1.example;lr>, <sip:r2.example;lr>"]
    copy = m.with_header_first("Via", "SIP/2.0/TCP new.example;branch=z9hG4bK0")
    assert [v.host for v in copy.vias] == ["new.example", "a.example", "b.example"]
    assert copy.vias[1] is vias[0] and copy.to is to and [v.host for v in m.vias][0] == "a.example"
    popped = copy.without_first_value("Route")
    assert [str(r.uri) for r in popped.routes] == ["sip:r2.example;lr"] and m.routes == routes
    assert popped.get_all("Route") == ["<sip:r2.example;lr>"]
    assert popped.values("via")[0].endswith("z9hG4bK0")
    replaced = popped.with_first_value("Via", "SIP/2.0/UDP x.example;branch=z9hG4bK9")
    assert [v.host for v in replaced.vias] == ["x.example", "a.example", "b.example"]
    gone = replaced.without("Contact").with_header("To", "<sip:carol@example.com>;tag=t")
    assert gone.contacts == () and not gone.has("m") and gone.to.tag == "t" and m.to is to
    again = parse(gone.to_bytes())
    assert again.vias == replaced.vias and again.routes == popped.routes and again.to == gone.to


def test_with_body_sets_content_length() -> None:
    """A new body brings a matching Content-Length and Content-Type."""
    m = parse(request_bytes(method="INVITE"))
    new = m.with_body(b"v=0\r\n", "application/sdp")
    again = parse(new.to_bytes())
    assert again.body == b"v=0\r\n" and again.get("Content-Length") == "5"
    assert again.get("Content-Type") == "application/sdp"


def test_with_uri_rewrites_the_request_line() -> None:
    """A new Request-URI is written into the start line."""
    m = parse(request_bytes())
    assert isinstance(m, Request)
    from sbc.core.uri import parse_uri

    new = m.with_uri(parse_uri("sip:bob@192.0.2.7:5080"))
    assert new.to_bytes().startswith(b"OPTIONS sip:bob@192.0.2.7:5080 SIP/2.0\r\n")


def test_response_parses() -> None:
    """Responses: status, reason (possibly empty), headers."""
    m = parse(rfc4475("noreason"))
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (100, "")


@pytest.mark.parametrize(
    "data, status",
    [
        (b"OPTIONS sip:a SIP/2.0\r\n", 400),
        (b"\r\n\r\n", 400),
        (request_bytes(content_length=100), 400),
        (request_bytes(headers=[("Via", "SIP/2.0/UDP h;branch=x;;")]), 400),
        (request_bytes(headers=[("Max-Forwards", "256")]), 400),
        (request_bytes(headers=[("Date", "Fri, 01 Jan 2010 16:00:00 EST")]), 400),
        (request_bytes(uri="sip:a@b:99999"), 400),
        (request_bytes(uri="sip:a@[::1"), 400),
        (b"SIP/2.0 1000 Big\r\nVia: SIP/2.0/UDP h\r\n\r\n", 400),
    ],
)
def test_malformed_messages(data: bytes, status: int) -> None:
    """A selection of faults, each with the status to answer."""
    with pytest.raises(ParseError) as info:
        parse(data)
    assert info.value.status == status


def test_message_size_limit() -> None:
    """A message over max_message_size gets 513."""
    with pytest.raises(ParseError) as info:
        parse(request_bytes(body=b"x" * 2000), ParseLimits(max_message_size=1024))
    assert info.value.status == 513


def test_header_count_limit() -> None:
    """More header fields than max_headers is a 400."""
    data = request_bytes(headers=[("X-H", str(i)) for i in range(40)])
    with pytest.raises(ParseError, match="Too Many Headers"):
        parse(data, ParseLimits(max_headers=32))


def test_header_length_limit() -> None:
    """A header field longer than max_header_length is a 400 (folded ones too)."""
    long_value = "x" * 2000
    with pytest.raises(ParseError, match="Header Too Long"):
        parse(request_bytes(headers=[("X-Long", long_value)]), ParseLimits(max_header_length=1024))
    folded = request_bytes(headers=[("X-Folded", "a" * 600 + "\r\n " + "b" * 600)])
    with pytest.raises(ParseError, match="Header Too Long"):
        parse(folded, ParseLimits(max_header_length=1024))


def test_bare_lf_line_ends_are_accepted() -> None:
    """Bare LF line ends parse (and still serialise exactly)."""
    data = request_bytes().replace(b"\r\n", b"\n")
    assert parse(data).to_bytes() == data
    assert parse(data).cseq.number == 1


def test_stream_message_without_content_length_has_no_body() -> None:
    """On a stream, a missing Content-Length means an empty body."""
    data = request_bytes().replace(b"Content-Length: 0\r\n", b"")
    assert parse(data + b"junk", stream=True).body == b""
    assert parse(data + b"junk").body == b"junk"


def test_header_equality_is_by_key_and_value() -> None:
    """Header compares by canonical name and value, not spelling of the name."""
    assert Header("v", "x") == Header("Via", "x")


# -- property tests ----------------------------------------------------------------------------

_token = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
_host = st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True)
_value = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\r\n"), max_size=30
).map(str.strip)


FOLD = "\r\n "


@st.composite
def messages(draw) -> bytes:  # type: ignore[no-untyped-def]
    """Well-formed requests with random methods, hosts, extra headers, folding and bodies."""
    method = draw(_token)
    host = draw(_host)
    user = draw(st.one_of(st.none(), st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)))
    uri = f"sip:{user + '@' if user else ''}{host}"
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    branch = "z9hG4bK" + draw(st.from_regex(r"[a-zA-Z0-9]{1,10}", fullmatch=True))
    via = (
        f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {host}"
        + (f":{port}" if port else "")
        + f";branch={branch}"
    )
    extra = draw(
        st.lists(st.tuples(st.from_regex(r"X-[A-Za-z]{1,8}", fullmatch=True), _value), max_size=5)
    )
    folded = draw(st.booleans())
    body = draw(st.binary(max_size=64))
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <sip:a@{host}>;tag={draw(_token)}",
        f"To: <{uri}>",
        f"Call-ID: {draw(_token)}@{host}",
        f"CSeq: {draw(st.integers(0, 2**31 - 1))}{FOLD if folded else ' '}{method}",
    ]
    lines += [f"{k}: {v}" for k, v in extra]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@settings(max_examples=300, deadline=None)
@given(messages())
def test_serialise_parse_is_identity(data: bytes) -> None:
    """serialise(parse(m)) == m, and a rebuilt message parses back to the same values."""
    m = parse(data)
    assert m.to_bytes() == data
    rebuilt = m.with_headers(m.headers)
    again = parse(rebuilt.to_bytes())
    assert [(h.key, h.value) for h in again.headers] == [(h.key, h.value) for h in m.headers]
    assert again.body == m.body and again.cseq == m.cseq and again.vias == m.vias


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_parse_errors(data: bytes) -> None:
    """Whatever the bytes, parse returns a message or raises ParseError, nothing else."""
    try:
        m = parse(data)
    except ParseError:
        return
    m.to_bytes()


@settings(max_examples=300, deadline=None)
@given(messages(), st.integers(0, 400), st.binary(min_size=1, max_size=3))
def test_corrupted_messages_only_raise_parse_errors(data: bytes, at: int, junk: bytes) -> None:
    """A valid message with bytes spliced in anywhere still only raises ParseError."""
    at = at % len(data)
    corrupted = data[:at] + junk + data[at:]
    try:
        m = parse(corrupted)
        for attribute in ("vias", "from_", "to", "cseq", "contacts", "routes", "record_routes"):
            getattr(m, attribute)
    except ParseError:
        pass


@pytest.mark.parametrize(
    "old, new",
    [
        (b"Max-Forwards: 70", "Max-Forwards: \u00b2"),
        (b"Content-Length: 0", "Content-Length: \u00b2"),
        (b"CSeq: 1 OPTIONS", "CSeq: \u00b2 OPTIONS"),
    ],
)
def test_digits_that_are_not_ascii_are_a_400_not_a_crash(old: bytes, new: str) -> None:
    """str.isdigit() accepts '²', which int() refuses: such a number is a malformed
    message (400), never an exception out of the parser."""
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).replace(old, new.encode())
    with pytest.raises(ParseError) as raised:
        parse(data)
    assert raised.value.status == 400


def test_an_expires_of_other_digits_counts_as_absent() -> None:
    data = (
        "REGISTER sip:b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n"
        "Expires: \u00b2\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert parse(data).expires is None


def test_with_top_via_keeps_the_parsed_value_and_the_rest() -> None:
    from sbc.core.uri import parse_via

    message = parse(
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport, "
        b"SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK9\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n"
        b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    stamped = message.top_via.with_param("rport", "5070")
    new = message.with_top_via(stamped)
    assert new.top_via is stamped
    assert new.vias[1] == message.vias[1]
    again = parse(new.to_bytes())
    assert again.vias == (parse_via(str(stamped)), message.vias[1])
    assert message.top_via.rport == ""  # the original is unchanged
