"""Tests for L{sbc.core.sdp}: fix_nated_sdp as TV-13 says."""

from __future__ import annotations

import pytest

from sbc.core.sdp import SdpError, fix_nated_sdp, media_connections, parse_sdp, session_connection

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
