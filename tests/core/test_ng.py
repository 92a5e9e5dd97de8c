"""Tests for L{sbc.core.ng}: bencode, the ng message framing, and the commands."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.core.ng import (
    NgError,
    answer_command,
    bdecode,
    bencode,
    decode_message,
    delete_command,
    encode_message,
    ice_flags,
    offer_command,
    parse_flags,
    parse_ng_url,
    ping_command,
    query_command,
)


def test_bencode_examples() -> None:
    """The four bencode types, dict keys sorted."""
    assert bencode(42) == b"i42e" and bencode(-3) == b"i-3e"
    assert bencode("sdp") == b"3:sdp" and bencode(b"\xff") == b"1:\xff"
    assert bencode(["a", 1]) == b"l1:ai1ee"
    assert bencode({"command": "ping", "b": 1}) == b"d1:bi1e7:command4:pinge"


def test_offer_round_trip() -> None:
    """An offer as Kamailio sends it decodes to the same dictionary."""
    offer = {
        "command": "offer",
        "call-id": "c1",
        "from-tag": "t1",
        "sdp": "v=0\r\n",
        "flags": ["trust-address"],
        "replace": ["origin"],
        "ICE": "remove",
    }
    data = encode_message("7_42_1", offer)
    assert data.startswith(b"7_42_1 d")
    assert decode_message(data) == ("7_42_1", offer)


def test_pong_reply() -> None:
    """rtpengine's answer to ping."""
    assert decode_message(b"abc d6:result4:ponge") == ("abc", {"result": "pong"})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"nocookie",
        b"c i1e",
        b"c d3:abe",
        b"c d1:ai1",
        b"c l",
        b"c di1ei2ee",
        b"c d1:ai01ee",
        b"c " + b"l" * 100 + b"e" * 100,
        b"c d1:a99:xe",
    ],
)
def test_malformed(data: bytes) -> None:
    """Broken messages raise NgError."""
    with pytest.raises(NgError):
        decode_message(data)


@given(
    st.recursive(
        st.one_of(st.integers(), st.text(max_size=20), st.binary(max_size=20)),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=20,
    )
)
def test_round_trip(value) -> None:  # type: ignore[no-untyped-def]
    """decode(encode(v)) gives v back (bytes that are UTF-8 come back as str)."""

    def normal(v):  # type: ignore[no-untyped-def]
        if isinstance(v, bytes):
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return v
        if isinstance(v, list):
            return [normal(x) for x in v]
        if isinstance(v, dict):
            return {k: normal(x) for k, x in v.items()}
        return v

    assert bdecode(bencode(value)) == normal(value)


@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    """Only NgError escapes."""
    try:
        decode_message(data)
    except NgError:
        pass


# -- commands as Kamailio's rtpengine module builds them -----------------------------------------

SDP = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\n"
)


def test_tv23_wire_forms() -> None:
    """Ping, a sorted delete dictionary, an error reply, an integer value."""
    assert encode_message("5323_1", ping_command()) == b"5323_1 d7:command4:pinge"
    assert decode_message(b"5323_1 d6:result4:ponge") == ("5323_1", {"result": "pong"})
    delete = {"call-id": "abc", "command": "delete", "from-tag": "F1"}
    assert bencode(delete) == b"d7:call-id3:abc7:command6:delete8:from-tag2:F1e"
    assert bdecode(b"d6:result5:error12:error-reason12:Unknown calle") == {
        "result": "error",
        "error-reason": "Unknown call",
    }
    assert bencode({"delete delay": 0}) == b"d12:delete delayi0ee"


def test_tv24_offer() -> None:
    """rtpengine_offer("replace-origin ICE=remove trust-address direction=priv
    direction=pub") on an INVITE from 198.51.100.20."""
    offer = offer_command(
        "c1@h",
        "F1",
        SDP,
        flags="replace-origin ICE=remove trust-address direction=priv direction=pub",
        received_from="198.51.100.20",
    )
    assert offer == {
        "supports": ["load limit"],
        "sdp": SDP,
        "direction": ["priv", "pub"],
        "replace": ["origin"],
        "ICE": "remove",
        "flags": ["trust-address"],
        "received-from": ["IP4", "198.51.100.20"],
        "call-id": "c1@h",
        "from-tag": "F1",
        "command": "offer",
        "sip-message-type": "sip_request",
    }
    assert "to-tag" not in offer


def test_tv24_answer_late_offer_and_delete() -> None:
    """The 200 OK answer, a late offer in a 200 OK (tags swapped), the BYE's delete."""
    answer = answer_command("c1@h", "F1", "T9", SDP)
    assert (answer["command"], answer["from-tag"], answer["to-tag"]) == ("answer", "F1", "T9")
    assert answer["sip-message-type"] == "sip_reply" and answer["sdp"] == SDP
    late = offer_command("c1@h", "T9", SDP, to_tag="F1", sip_message_type="sip_reply")
    assert (late["command"], late["from-tag"], late["to-tag"]) == ("offer", "T9", "F1")
    delete = delete_command("c1@h", "F1", to_tag="T9")
    assert (delete["command"], delete["call-id"], delete["from-tag"]) == ("delete", "c1@h", "F1")
    assert "to-tag" not in delete and "sdp" not in delete
    assert delete_command("c1@h", "F1", to_tag="T9", flags="to-tag")["to-tag"] == "T9"
    assert "from-tag" not in delete_command("c1@h")
    assert delete_command("c1@h", "F1", flags="delete-delay=0")["delete-delay"] == 0


def test_query_and_round_trip_of_a_command() -> None:
    """A query names the call; a command survives encoding."""
    assert query_command("c1@h", "F1") == {"command": "query", "call-id": "c1@h", "from-tag": "F1"}
    offer = offer_command("c1@h", "F1", SDP, flags="replace-origin replace-session-connection")
    assert offer["replace"] == ["origin", "session-connection"]
    assert decode_message(encode_message("1_2_3", offer)) == ("1_2_3", offer)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("", {}),
        ("internal external", {"direction": ["internal", "external"]}),
        ("rtcp-mux-demux SDES-off SDES-no-AES_CM_128_HMAC_SHA1_32", {
            "rtcp-mux": ["demux"], "SDES": ["off", "no-AES_CM_128_HMAC_SHA1_32"]}),
        ("codec-strip=PCMA codec-strip=G722 codec-offer=opus", {
            "codec": {"strip": ["PCMA", "G722"], "offer": ["opus"]}}),
        ("RTP AVPF", {"transport-protocol": "RTP/AVPF"}),
        ("SRTP AVP", {"transport-protocol": "RTP/SAVP"}),
        ("DTLS AVPF", {"transport-protocol": "UDP/TLS/RTP/SAVPF"}),
        ("RTP/SAVPF", {"transport-protocol": "RTP/SAVPF"}),
        ("TOS=184 address-family=IP6 media-address=203.0.113.1 record-call=on", {
            "TOS": 184, "address-family": "IP6", "media-address": "203.0.113.1",
            "record-call": "on"}),
        ("received-from=2001:db8::1 asymmetric", {
            "received-from": ["IP6", "2001:db8::1"], "flags": ["asymmetric"]}),
        ("T.38=decode", {"T.38": ["decode"]}),
    ],
)  # fmt: skip
def test_parse_flags(flags: str, expected: dict) -> None:
    """Kamailio's flag string, token by token."""
    assert parse_flags(flags) == expected


def test_flag_overrides() -> None:
    """force-answer, call-id=, from-tag=, to-tag= and an explicit received-from win."""
    cmd = offer_command(
        "c1",
        "F1",
        SDP,
        flags="force-answer call-id=c2 from-tag=X to-tag=Y received-from=192.0.2.1",
        received_from="198.51.100.20",
    )
    assert (cmd["command"], cmd["call-id"], cmd["from-tag"], cmd["to-tag"]) == (
        "answer",
        "c2",
        "X",
        "Y",
    )
    assert cmd["received-from"] == ["IP4", "192.0.2.1"]
    with pytest.raises(ValueError):
        parse_flags("TOS=high")


@pytest.mark.parametrize(
    "url, expected",
    [
        ("udp:127.0.0.1:2223", ("127.0.0.1", 2223)),
        ("udp6:[::1]:2223", ("::1", 2223)),
        ("udp6:::1:2223", ("::1", 2223)),
        ("udp:192.0.2.1:22222=2", ("192.0.2.1", 22222)),
    ],
)
def test_parse_ng_url(url: str, expected: tuple[str, int]) -> None:
    """Kamailio rtpengine_sock URLs."""
    assert parse_ng_url(url) == expected


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:2223", "udp:localhost:2223", "udp:127.0.0.1", "udp6:127.0.0.1:1",
            "udp:127.0.0.1:0", "udp:[::1]:2223"]
)  # fmt: skip
def test_parse_ng_url_refuses(url: str) -> None:
    """Only udp/udp6 with an IP address and a port."""
    with pytest.raises(ValueError):
        parse_ng_url(url)


@pytest.mark.parametrize(
    ("flags", "towards_ice", "expected"),
    [
        ("replace-origin ICE=remove", True, "replace-origin ICE=force"),
        ("replace-origin ICE=remove", False, "replace-origin ICE=remove"),
        ("replace-origin ICE=remove", None, "replace-origin ICE=remove"),
        ("replace-origin", True, "replace-origin ICE=force"),
        ("", False, "ICE=remove"),
        ("ICE=force-relay trust-address", False, "ICE=force-relay trust-address"),
    ],
)
def test_ice_flags_force_towards_an_ice_side(
    flags: str, towards_ice: bool | None, expected: str
) -> None:
    """ICE=force towards a side whose SDP carried ICE, ICE=remove otherwise (or unknown);
    an operator's own ICE= other than remove is kept."""
    assert ice_flags(flags, towards_ice) == expected
    assert parse_flags(ice_flags(flags, towards_ice))["ICE"] == expected.split("ICE=")[1].split()[0]


def test_webrtc_flags_per_direction() -> None:
    """Towards a WebRTC client: DTLS-SRTP/AVPF, ICE, rtcp-mux (offer or accept); towards a
    phone: RTP/AVP, no ICE/DTLS/SDES, RTCP demultiplexed; the operator's other flags stay
    and their own profile tokens are replaced."""
    from sbc.core.ng import webrtc_flags

    base = "replace-origin ICE=remove RTP/SAVP SDES-no-AES_CM_128_HMAC_SHA1_32"
    towards_browser = parse_flags(webrtc_flags(base, "offer", True, 6))
    assert towards_browser["transport-protocol"] == "UDP/TLS/RTP/SAVPF"
    assert (towards_browser["ICE"], towards_browser["DTLS"]) == ("force", "passive")
    assert towards_browser["rtcp-mux"] == ["offer"] and towards_browser["SDES"] == ["off"]
    assert towards_browser["address-family"] == "IP6"
    assert towards_browser["replace"] == ["origin"]
    answer = parse_flags(webrtc_flags(base, "answer", True))
    assert (answer["rtcp-mux"], answer["DTLS"]) == (["accept"], "active")
    towards_phone = parse_flags(webrtc_flags(base, "answer", False))
    assert towards_phone["transport-protocol"] == "RTP/AVP"
    assert (towards_phone["ICE"], towards_phone["DTLS"]) == ("remove", "off")
    assert towards_phone["rtcp-mux"] == ["demux"]


def test_sdp_is_dtls() -> None:
    """Only an m= line with a UDP/TLS/RTP/SAVP(F) profile counts."""
    from sbc.core.sdp import sdp_is_dtls

    assert sdp_is_dtls(b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")
    assert not sdp_is_dtls(b"v=0\r\nm=audio 9 RTP/SAVP 0\r\na=x:UDP/TLS/RTP/SAVPF\r\n")
