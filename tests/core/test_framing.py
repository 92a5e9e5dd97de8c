"""Tests for L{sbc.core.framing}: stream framing fed in any pieces, keepalives, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.core.framing import (
    FramingError,
    KeepalivePing,
    KeepalivePong,
    StreamFramer,
    is_udp_keepalive,
)
from tests.helpers import request_bytes

INVITE = request_bytes(method="INVITE", body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n")
OPTIONS = request_bytes()


def feed_bytewise(framer: StreamFramer, data: bytes) -> list:
    frames: list = []
    for i in range(len(data)):
        frames.extend(framer.feed(data[i : i + 1]))
    return frames


def test_messages_fed_byte_by_byte() -> None:
    """Two messages and a ping arriving one byte at a time come out whole and in order."""
    framer = StreamFramer()
    frames = feed_bytewise(framer, INVITE + b"\r\n\r\n" + OPTIONS)
    assert frames[0] == INVITE
    assert isinstance(frames[1], KeepalivePing)
    assert frames[2] == OPTIONS
    assert framer.buffered == 0


@given(st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_any_split_gives_the_same_frames(cuts: list[int]) -> None:
    """However the stream is cut, the frames are the same."""
    stream = INVITE + OPTIONS + b"\r\n\r\n" + INVITE
    framer = StreamFramer()
    frames: list = []
    pos = 0
    for cut in cuts * 50:
        if pos >= len(stream):
            break
        frames.extend(framer.feed(stream[pos : pos + cut]))
        pos += cut
    frames.extend(framer.feed(stream[pos:]))
    assert [f if isinstance(f, bytes) else "ping" for f in frames] == [
        INVITE,
        OPTIONS,
        "ping",
        INVITE,
    ]


def test_lone_crlf_is_a_pong() -> None:
    """A CRLF followed by a message is the peer's pong."""
    frames = StreamFramer().feed(b"\r\n" + OPTIONS)
    assert isinstance(frames[0], KeepalivePong) and frames[1] == OPTIONS


def test_partial_ping_waits() -> None:
    """CRLF CR is not yet anything."""
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r") == []
    assert isinstance(framer.feed(b"\n")[0], KeepalivePing)


def test_missing_content_length_means_empty_body() -> None:
    """A message without Content-Length on a stream ends at the blank line."""
    msg = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    assert StreamFramer().feed(msg + OPTIONS) == [msg, OPTIONS]


def test_compact_content_length() -> None:
    """l: counts as Content-Length."""
    msg = INVITE.replace(b"Content-Length:", b"l:")
    assert StreamFramer().feed(msg) == [msg]


@pytest.mark.parametrize(
    "data",
    [
        OPTIONS.replace(b"Content-Length: 0", b"Content-Length: -1"),
        OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 0"),
    ],
)
def test_bad_content_length_breaks_the_stream(data: bytes) -> None:
    """A stream whose framing cannot be trusted raises FramingError."""
    with pytest.raises(FramingError):
        StreamFramer().feed(data)


def test_buffer_is_bounded_without_end_of_headers() -> None:
    """Garbage without a blank line is refused once it exceeds the limit."""
    framer = StreamFramer(max_message_size=2048)
    framer.feed(b"x" * 2000)
    with pytest.raises(FramingError) as info:
        framer.feed(b"x" * 100)
    assert info.value.status == 513


def test_oversized_content_length_is_refused_early() -> None:
    """A Content-Length that would exceed the limit is refused before the body arrives."""
    with pytest.raises(FramingError):
        StreamFramer(max_message_size=4096).feed(
            OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 1000000")
        )


def test_udp_keepalives() -> None:
    """CRLF and 4-zero-byte datagrams are keepalives; SIP is not."""
    assert is_udp_keepalive(b"\r\n\r\n") and is_udp_keepalive(b"\x00\x00\x00\x00")
    assert not is_udp_keepalive(OPTIONS)
