# -*- test-case-name: tests.core.test_framing -*-
"""
Stream framing for SIP over TCP/TLS (RFC 3261 §18.3, RFC 5626 §4.4.1).

L{StreamFramer} takes bytes in whatever pieces they arrive and hands out complete messages
(delimited by Content-Length), keepalive pings (CRLFCRLF) and pongs (a lone CRLF).  Its
buffer is bounded: a peer that sends more than C{max_message_size} without completing a
message gets a L{FramingError} and the connection is closed.
"""

from __future__ import annotations

import re
from typing import Union

from sbc.core.errors import RemoteProtocolError
from sbc.core.stun import HEADER as STUN_HEADER
from sbc.core.stun import looks_like_stun, stun_length
from sbc.core.syntax import is_digits

__all__ = [
    "StreamFramer",
    "FramingError",
    "KeepalivePing",
    "KeepalivePong",
    "Frame",
    "is_udp_keepalive",
]


class FramingError(RemoteProtocolError):
    """The stream cannot be framed any more: the connection must be closed."""


class KeepalivePing:
    """A CRLFCRLF ping: answer with a CRLF pong (RFC 5626 §4.4.1)."""

    def __repr__(self) -> str:
        return "KeepalivePing()"


class KeepalivePong:
    """A lone CRLF: the peer's answer to our ping."""

    def __repr__(self) -> str:
        return "KeepalivePong()"


class StunFrame(bytes):
    """A STUN message on a stream flow (RFC 5626 §4.4.2 keepalive, or a Binding request)."""


PING = KeepalivePing()
PONG = KeepalivePong()

#: A framed item: SIP message bytes, a STUN message, or one of the keepalive singletons.
Frame = Union[bytes, StunFrame, KeepalivePing, KeepalivePong]
#: The largest STUN message accepted on a stream.
MAX_STUN = 2048

_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)


class StreamFramer:
    """
    Cut a byte stream into SIP messages.

    @ivar max_message_size: the most bytes one message (headers and body) may take.
    """

    def __init__(self, max_message_size: int = 65535) -> None:
        self.max_message_size = max_message_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add C{data}; return every frame now complete, in order.

        @raise FramingError: the stream is broken (oversized message, bad Content-Length)."""
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        while buf:
            if buf[0] in b"\r\n":
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    frames.append(PING)
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # could still become a ping
                if buf.startswith(b"\r\n"):
                    del buf[:2]
                    frames.append(PONG)
                    continue
                del buf[:1]  # stray LF or CR between messages
                continue
            if looks_like_stun(bytes(buf[:2])):
                if len(buf) < STUN_HEADER:
                    break
                total = stun_length(bytes(buf[:STUN_HEADER]))
                if total > MAX_STUN:
                    raise FramingError(400, "oversized STUN message")
                if len(buf) < total:
                    break
                frames.append(StunFrame(bytes(buf[:total])))
                del buf[:total]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_message_size:
                    raise FramingError(513, "Message Too Large")
                break
            head_end = end + 4
            lengths = _CONTENT_LENGTH.findall(buf, 0, head_end)
            if len(lengths) > 1:
                raise FramingError(400, "multiple Content-Length headers")
            if lengths:
                text = lengths[0].strip()
                if not is_digits(text):
                    raise FramingError(400, "bad Content-Length")
                length = int(text)
            else:
                length = 0
            total = head_end + length
            if total > self.max_message_size:
                raise FramingError(513, "Message Too Large")
            if len(buf) < total:
                break
            frames.append(bytes(buf[:total]))
            del buf[:total]
        return frames


#: Datagrams that are NAT keepalives, not SIP: CRLF pings and 4-byte zero pings (nathelper).
_UDP_KEEPALIVES = frozenset({b"", b"\r\n", b"\r\n\r\n", b"\n", b"\x00", b"\x00\x00\x00\x00"})


def is_udp_keepalive(datagram: bytes) -> bool:
    """Say whether C{datagram} is a keepalive to be absorbed silently."""
    return datagram in _UDP_KEEPALIVES
