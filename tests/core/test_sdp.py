"""Tests for L{sbc.core.sdp}: fix_nated_sdp (nathelper); media_streams and anchor_sdp."""

from __future__ import annotations

import pytest

from sbc.core.ice import IceCredentials
from sbc.core.sdp import (
    SdpError,
    anchor_sdp,
    fix_nated_sdp,
    media_connections,
    media_streams,
    parse_sdp,
    sdp_has_ice,
    session_connection,
)

BODY = (
    b"v=0\r\no=- 1 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\n"
    b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)
SRC = "198.51.100.20"


def lines(body: bytes) -> list[str]:
    return body.decode().split("\r\n")[:-1]


def test_tv13_flags_3() -> None:
    """c= rewritten, direction line at the media end, oldmediaip last."""
    body, changed = fix_nated_sdp(BODY, 3, SRC)
    assert changed
    assert lines(body) == [
        "v=0",
        "o=- 1 1 IN IP4 192.168.1.10",
        "s=-",
        "c=IN IP4 198.51.100.20",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "a=direction:active",
        "a=oldmediaip:192.168.1.10",
    ]


def test_tv13_flags_10() -> None:
    """o= and c= both rewritten; oldmediaip for c= then for o=."""
    body, _ = fix_nated_sdp(BODY, 10, SRC)
    assert lines(body)[1] == "o=- 1 1 IN IP4 198.51.100.20"
    assert lines(body)[3] == "c=IN IP4 198.51.100.20"
    assert lines(body)[-2:] == ["a=oldmediaip:192.168.1.10", "a=oldmediaip:192.168.1.10"]


def test_tv13_hold_address_untouched() -> None:
    """c=0.0.0.0 (hold) is left alone: nothing changed."""
    held = BODY.replace(b"c=IN IP4 192.168.1.10", b"c=IN IP4 0.0.0.0")
    assert fix_nated_sdp(held, 2, SRC) == (held, False)


def test_tv13_rtcp_line() -> None:
    """a=rtcp with an address is rewritten; its oldmediaip precedes the one for c=."""
    body = BODY + b"a=rtcp:4001 IN IP4 192.168.1.10\r\n"
    out, _ = fix_nated_sdp(body, 2, SRC)
    assert "a=rtcp:4001 IN IP4 198.51.100.20" in lines(out)
    assert lines(out)[-2:] == ["a=oldmediaip:192.168.1.10", "a=oldmediaip:192.168.1.10"]


def test_tv13_flags_6_and_explicit_address() -> None:
    """0x04 appends nortpproxy before oldmediaip; an explicit address is used."""
    out, _ = fix_nated_sdp(BODY, 6, "203.0.113.77")
    assert lines(out)[-2:] == ["a=nortpproxy:yes", "a=oldmediaip:192.168.1.10"]
    assert "c=IN IP4 203.0.113.77" in lines(out)


def test_mixed_families_are_refused() -> None:
    """c= lines of two families cannot be rewritten safely."""
    body = BODY + b"m=video 5000 RTP/AVP 31\r\nc=IN IP6 fd00::1\r\n"
    with pytest.raises(SdpError):
        fix_nated_sdp(body, 2, SRC)


def test_connections() -> None:
    """Session c= and per-media effective addresses."""
    body = BODY + b"m=video 5000 RTP/AVP 31\r\nc=IN IP4 10.0.0.9\r\n"
    sdp = parse_sdp(body)
    assert session_connection(sdp) == "192.168.1.10"
    assert media_connections(sdp) == ["192.168.1.10", "10.0.0.9"]
    with pytest.raises(SdpError):
        parse_sdp(b"hello")


# -- media_streams / anchor_sdp (RFC 3264) -------------------------------------------------------

RELAY = "203.0.113.1"
AUDIO = (
    b"v=0\r\no=alice 2890844526 7 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\n"
    b"t=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=ptime:20\r\n"
)
VIDEO = b"m=video 51372 RTP/AVP 96\r\nc=IN IP4 192.168.1.11\r\na=rtpmap:96 H264/90000\r\n"


def test_media_streams_audio_and_video() -> None:
    """Each m= section: media, ports, effective address, RTCP port+1, direction."""
    audio, video = media_streams(AUDIO + VIDEO)
    assert (audio.index, audio.media, audio.port, audio.protocol) == (0, "audio", 49170, "RTP/AVP")
    assert (audio.address, audio.rtcp_port, audio.rtcp_address) == (
        "192.168.1.10",
        49171,
        "192.168.1.10",
    )
    assert audio.direction == "sendrecv" and not audio.held and not audio.disabled
    assert (video.index, video.address, video.port, video.rtcp_port) == (
        1,
        "192.168.1.11",
        51372,
        51373,
    )


def test_media_streams_rtcp_attribute_hold_and_disabled() -> None:
    """a=rtcp (RFC 3605) wins over port+1; 0.0.0.0 or inactive is hold; port 0 is disabled."""
    body = (
        AUDIO
        + b"a=rtcp:53020 IN IP4 192.168.1.99\r\na=rtcp-mux\r\n"
        + VIDEO.replace(b"51372", b"0")
    )
    audio, video = media_streams(body)
    assert (audio.rtcp_port, audio.rtcp_address, audio.rtcp_mux) == (53020, "192.168.1.99", True)
    assert video.disabled and video.rtcp_port == 0
    held = media_streams(AUDIO.replace(b"c=IN IP4 192.168.1.10", b"c=IN IP4 0.0.0.0"))[0]
    assert held.held and held.address == "0.0.0.0"
    inactive = media_streams(AUDIO + b"a=inactive\r\n")[0]
    assert inactive.held and inactive.direction == "inactive"
    session_level = media_streams(AUDIO.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n"))[0]
    assert session_level.direction == "sendonly" and session_level.held
    recvonly = media_streams(AUDIO + b"a=recvonly\r\n")[0]
    assert recvonly.direction == "recvonly" and not recvonly.held


def test_media_streams_bad_port() -> None:
    """An m= port that is not a number is refused."""
    with pytest.raises(SdpError):
        media_streams(AUDIO.replace(b"49170", b"4x"))
    assert media_streams(b"v=0\r\n") == []


def test_anchor_single_audio() -> None:
    """m= port, session c=, o= version +1; every other line byte for byte."""
    out = anchor_sdp(AUDIO, RELAY, [30000])
    assert lines(out) == [
        "v=0",
        "o=alice 2890844526 8 IN IP4 192.168.1.10",
        "s=-",
        "c=IN IP4 203.0.113.1",
        "t=0 0",
        "m=audio 30000 RTP/AVP 0 8 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
    ]


def test_anchor_audio_and_video() -> None:
    """Each stream gets its own port; a media-level c= is rewritten too."""
    out = lines(anchor_sdp(AUDIO + VIDEO, RELAY, [30000, 30002]))
    assert "m=audio 30000 RTP/AVP 0 8 101" in out and "m=video 30002 RTP/AVP 96" in out
    assert out.count("c=IN IP4 203.0.113.1") == 2
    assert not any("192.168.1.11" in line for line in out)


def test_anchor_keeps_hold_address_and_direction() -> None:
    """c=0.0.0.0 stays (hold); a=sendonly/recvonly/inactive stay; the port still moves."""
    held = AUDIO.replace(b"c=IN IP4 192.168.1.10", b"c=IN IP4 0.0.0.0") + b"a=sendonly\r\n"
    out = lines(anchor_sdp(held, RELAY, [30000]))
    assert "c=IN IP4 0.0.0.0" in out and "a=sendonly" in out
    assert "m=audio 30000 RTP/AVP 0 8 101" in out
    for attribute in (b"a=recvonly", b"a=inactive"):
        assert attribute.decode() in lines(anchor_sdp(AUDIO + attribute + b"\r\n", RELAY, [30000]))


def test_anchor_leaves_disabled_stream() -> None:
    """Port 0 (or no relay port) leaves the stream as it was, with its old address."""
    body = AUDIO + b"m=video 0 RTP/AVP 96\r\n"
    out = lines(anchor_sdp(body, RELAY, [30000, 30002]))
    assert out[-1] == "m=video 0 RTP/AVP 96"
    out = lines(anchor_sdp(AUDIO + b"m=video 5000 RTP/AVP 96\r\n", RELAY, [30000, None]))
    assert out[-2:] == ["m=video 5000 RTP/AVP 96", "c=IN IP4 192.168.1.10"]


def test_anchor_ipv6() -> None:
    """An IPv6 relay writes IN IP6 (bridging an IPv4 offer)."""
    out = lines(anchor_sdp(AUDIO + b"a=rtcp:49171 IN IP4 192.168.1.10\r\n", "2001:db8::5", [30000]))
    assert "c=IN IP6 2001:db8::5" in out
    assert "a=rtcp:30001 IN IP6 2001:db8::5" in out
    v6 = AUDIO.replace(b"IN IP4 192.168.1.10", b"IN IP6 fd00::10")
    assert "c=IN IP4 203.0.113.1" in lines(anchor_sdp(v6, RELAY, [30000]))


def test_anchor_removes_ice() -> None:
    """Every ICE attribute goes, session and media level; others stay."""
    ice = (
        b"a=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\na=ice-options:trickle\r\n"
        b"a=candidate:1 1 UDP 2130706431 192.168.1.10 49170 typ host\r\n"
        b"a=candidate:2 1 UDP 1694498815 198.51.100.7 49170 typ srflx"
        b" raddr 192.168.1.10 rport 49170\r\n"
        b"a=remote-candidates:1 192.168.1.10 49170\r\na=end-of-candidates\r\n"
    )
    body = AUDIO.replace(b"t=0 0\r\n", b"t=0 0\r\na=ice-lite\r\n") + ice
    out = lines(anchor_sdp(body, RELAY, [30000]))
    assert not any(
        line.startswith(("a=ice", "a=candidate", "a=remote-cand", "a=end-of")) for line in out
    )
    assert "a=ptime:20" in out


def test_anchor_bumps_origin_only_on_change() -> None:
    """Anchoring an already anchored body changes nothing, not even the version."""
    once = anchor_sdp(AUDIO, RELAY, [30000])
    assert anchor_sdp(once, RELAY, [30000]) == once
    assert lines(anchor_sdp(once, RELAY, [30002]))[1] == "o=alice 2890844526 9 IN IP4 192.168.1.10"


def test_anchor_rtcp_attribute() -> None:
    """a=rtcp gets the relay port+1 and address, with or without an address before."""
    out = lines(anchor_sdp(AUDIO + b"a=rtcp:53020\r\n", RELAY, [30000]))
    assert "a=rtcp:30001 IN IP4 203.0.113.1" in out
    out = lines(anchor_sdp(AUDIO + b"a=rtcp:53020 IN IP4 10.1.1.1\r\n", RELAY, [30000]))
    assert "a=rtcp:30001 IN IP4 203.0.113.1" in out


def test_anchor_preserves_unknown_lines_and_line_ends() -> None:
    """Unknown lines, odd attributes and bytes that are not UTF-8 come out as they went in."""
    body = AUDIO.replace(b"s=-", b"s=\xff\xfe weird") + b"x=whatever 1 2\r\na=X-vendor:1;2\r\n"
    out = anchor_sdp(body, RELAY, [30000])
    assert b"s=\xff\xfe weird\r\n" in out and out.endswith(b"x=whatever 1 2\r\na=X-vendor:1;2\r\n")
    lf = anchor_sdp(AUDIO.replace(b"\r\n", b"\n"), RELAY, [30000])
    assert b"\r" not in lf and b"m=audio 30000 " in lf


def test_anchor_nortpproxy_and_origin() -> None:
    """nortpproxy goes to the session part once; replace_origin writes the relay into o=."""
    out = lines(anchor_sdp(AUDIO, RELAY, [30000], nortpproxy="a=nortpproxy:yes"))
    assert out.index("a=nortpproxy:yes") < out.index("m=audio 30000 RTP/AVP 0 8 101")
    again = anchor_sdp(
        anchor_sdp(AUDIO, RELAY, [30000], nortpproxy="nortpproxy:yes"),
        RELAY,
        [30000],
        nortpproxy="nortpproxy:yes",
    )
    assert lines(again).count("a=nortpproxy:yes") == 1
    out = lines(anchor_sdp(AUDIO, RELAY, [30000], replace_origin=True))
    assert out[1] == "o=alice 2890844526 8 IN IP4 203.0.113.1"


@pytest.mark.parametrize(
    "body",
    [
        b"hello",
        AUDIO.replace(b"c=IN IP4 192.168.1.10\r\n", b""),  # no address at all
        AUDIO.replace(b"c=IN IP4 192.168.1.10", b"c=IN IP4 224.2.1.1/127"),  # multicast
        AUDIO.replace(b"49170", b"49170/2"),  # several ports
        AUDIO.replace(b"o=alice 2890844526 7", b"o=alice 2890844526 x"),  # bad version
        AUDIO.replace(b"c=IN IP4", b"c=IN"),
        AUDIO.replace(b"a=ptime:20\r\n", b"a=ptime:20\nm=video 1 RTP/AVP 0\r\n"),  # mixed ends
        AUDIO.replace(b"o=alice 2890844526 7 IN IP4 192.168.1.10\r\n", b""),
    ],
    ids=["not-sdp", "no-c", "multicast", "port-count", "version", "short-c", "mixed-eol", "no-o"],
)
def test_anchor_refuses_what_it_cannot_change_safely(body: bytes) -> None:
    """Bodies that cannot be anchored raise SdpError."""
    with pytest.raises(SdpError):
        anchor_sdp(body, RELAY, [30000])


def test_anchor_caller_mistakes() -> None:
    """A wrong number of ports or a relay address that is not an IP is a ValueError."""
    with pytest.raises(ValueError):
        anchor_sdp(AUDIO, RELAY, [30000, 30002])
    with pytest.raises(ValueError):
        anchor_sdp(AUDIO, "relay.example", [30000])


# -- ICE-lite towards a side that speaks ICE (RFC 8445 §2.5) ------------------------------------

ICE_OFFER = AUDIO.replace(
    b"t=0 0\r\n", b"t=0 0\r\na=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
) + (
    b"a=candidate:1 1 UDP 2130706431 192.168.1.10 49170 typ host\r\n"
    b"a=candidate:1 2 UDP 2130706430 192.168.1.10 49171 typ host\r\n"
)


def test_media_streams_read_ice_session_and_media_level() -> None:
    """ICE is a=ice-ufrag, a=ice-pwd or a=candidate; the media-level ufrag wins."""
    [plain] = media_streams(AUDIO)
    assert not plain.ice and plain.ice_ufrag is None
    [ice] = media_streams(ICE_OFFER)
    assert ice.ice and (ice.ice_ufrag, ice.ice_pwd) == ("F7gI", "x9cml/YzichV2+XlhiMu8g")
    [own] = media_streams(ICE_OFFER + b"a=ice-ufrag:MEDIA\r\n")
    assert own.ice_ufrag == "MEDIA"
    [candidates_only] = media_streams(
        AUDIO + b"a=candidate:1 1 UDP 1 192.168.1.10 49170 typ host\r\n"
    )
    assert candidates_only.ice and candidates_only.ice_ufrag is None
    assert sdp_has_ice(ICE_OFFER) and not sdp_has_ice(AUDIO) and not sdp_has_ice(b"junk")


def test_anchor_presents_the_relay_as_ice_lite() -> None:
    """With credentials: a=ice-lite, our ufrag/pwd at session level, one host candidate per
    component at the relay's address and port; the peer's candidates are gone."""
    credentials = IceCredentials("Ab3+", "0123456789abcdef/+ABCDEFG")
    out = lines(anchor_sdp(ICE_OFFER, RELAY, [30000], ice=credentials))
    session = out[: out.index("m=audio 30000 RTP/AVP 0 8 101")]
    assert session[-3:] == ["a=ice-lite", "a=ice-ufrag:Ab3+", "a=ice-pwd:0123456789abcdef/+ABCDEFG"]
    candidates = [line for line in out if line.startswith("a=candidate")]
    assert candidates == [
        "a=candidate:1 1 UDP 2130706431 203.0.113.1 30000 typ host",
        "a=candidate:1 2 UDP 2130706430 203.0.113.1 30001 typ host",
    ]
    assert not any("F7gI" in line or "192.168.1.10 49170" in line for line in out)
    assert out.count("a=ice-ufrag:Ab3+") == 1


def test_anchor_ice_lite_with_rtcp_mux_has_one_component() -> None:
    """a=rtcp-mux: only the RTP candidate (component 1)."""
    credentials = IceCredentials("Ab3+", "0123456789abcdef/+ABCDEFG")
    out = lines(anchor_sdp(ICE_OFFER + b"a=rtcp-mux\r\n", RELAY, [30000], ice=credentials))
    assert [line for line in out if line.startswith("a=candidate")] == [
        "a=candidate:1 1 UDP 2130706431 203.0.113.1 30000 typ host"
    ]


def test_anchor_ice_lite_skips_disabled_streams_and_works_without_peer_ice() -> None:
    """A disabled stream gets no candidate; an SDP without ICE can still carry ours (the
    side receiving it is the one that speaks ICE)."""
    credentials = IceCredentials("Ab3+", "0123456789abcdef/+ABCDEFG")
    body = AUDIO + b"m=video 0 RTP/AVP 96\r\n"
    out = lines(anchor_sdp(body, RELAY, [30000, None], ice=credentials))
    assert "a=ice-lite" in out
    assert out[-1] == "m=video 0 RTP/AVP 96"
    assert sum(line.startswith("a=candidate") for line in out) == 2
