# -*- test-case-name: tests.core.test_ng -*-
"""
rtpengine's ng control protocol (K: RTP-01..03): C{<cookie> <bencoded dictionary>} per
message, replies echo the cookie.  Bencode: C{<len>:<bytes>}, C{i<n>e}, C{l...e},
C{d...e} with byte-string keys.  Strings decode to C{str} where they are UTF-8 (SDP,
command names), else stay C{bytes}.  Pure codec: the adapter does the sockets and retries.
"""

from __future__ import annotations

from typing import Any, Union

__all__ = ["NgError", "bencode", "bdecode", "encode_message", "decode_message"]

Value = Union[int, str, bytes, list, dict]


class NgError(ValueError):
    """A malformed ng message (dropped and counted by the adapter)."""


def bencode(value: Any) -> bytes:
    """Encode ints, strings/bytes, lists and dicts (keys sorted, as bencode asks)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, (list, tuple)):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


_MAX_DEPTH = 32


def _decode(data: bytes, at: int, depth: int) -> tuple[Value, int]:
    if depth > _MAX_DEPTH:
        raise NgError("bencode nested too deeply")
    if at >= len(data):
        raise NgError("bencode ends early")
    c = data[at : at + 1]
    if c == b"i":
        end = data.find(b"e", at)
        if end < 0:
            raise NgError("unterminated integer")
        text = data[at + 1 : end]
        digits = text[1:] if text.startswith(b"-") else text
        if not digits.isdigit() or (digits.startswith(b"0") and text != b"0"):
            raise NgError("bad integer")  # no sign alone, no leading zeros, no -0
        return int(text), end + 1
    if c == b"l":
        at += 1
        items = []
        while data[at : at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        return items, at + 1
    if c == b"d":
        at += 1
        out: dict[str, Value] = {}
        while data[at : at + 1] != b"e":
            key, at = _decode(data, at, depth + 1)
            if not isinstance(key, (str, bytes)):
                raise NgError("dictionary key is not a string")
            value, at = _decode(data, at, depth + 1)
            out[key if isinstance(key, str) else key.decode("latin-1")] = value
        return out, at + 1
    if c.isdigit():
        colon = data.find(b":", at)
        if colon < 0 or not data[at:colon].isdigit():
            raise NgError("bad string length")
        length = int(data[at:colon])
        end = colon + 1 + length
        if end > len(data):
            raise NgError("string longer than the message")
        raw = data[colon + 1 : end]
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            return raw, end
    raise NgError("not bencode")


def bdecode(data: bytes) -> Value:
    """Decode exactly one value.

    @raise NgError: malformed or trailing bytes."""
    try:
        value, end = _decode(data, 0, 0)
    except RecursionError:
        raise NgError("bencode nested too deeply") from None
    if end != len(data):
        raise NgError("bytes after the bencoded value")
    return value


def encode_message(cookie: str, message: dict) -> bytes:
    """C{<cookie> <bencoded dict>}."""
    return cookie.encode() + b" " + bencode(message)


def decode_message(data: bytes) -> tuple[str, dict]:
    """Split a datagram into its cookie and dictionary.

    @raise NgError: no cookie, or the rest is not a bencoded dictionary."""
    cookie, space, rest = data.partition(b" ")
    if not space or not cookie:
        raise NgError("no cookie")
    value = bdecode(rest)
    if not isinstance(value, dict):
        raise NgError("not a dictionary")
    return cookie.decode("latin-1"), value
