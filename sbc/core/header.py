# -*- test-case-name: tests.core.test_message -*-
"""
SIP header fields (RFC 3261 §7.3, §20, §25.1): their names, compact forms, the text of one
field as it arrived, and the message head they are split from (start line included).

L{sbc.core.message} builds messages out of these and re-exports every public name here, so
C{from sbc.core.message import Header} keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, TypeVar, Union

from sbc.core.errors import ParseError
from sbc.core.syntax import is_digits, is_token, split_commas
from sbc.core.uri import SipUri, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "CRLF",
    "CSeq",
    "DEFAULT_LIMITS",
    "Header",
    "display_name",
    "find_head_end",
    "header_key",
    "index_fields",
    "make_header",
    "parse_cseq",
    "ParseLimits",
    "parse_fields",
    "parse_start_line",
    "split_fields",
]

CRLF = "\r\n"
_T = TypeVar("_T")

#: RFC 3261 §7.3.3 and later RFCs: compact form -> canonical lower-case name.
COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "r": "refer-to",
    "b": "referred-by",
    "o": "event",
    "u": "allow-events",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

_KEYS: dict[str, str] = {}


def header_key(name: str) -> str:
    """Return the canonical lower-case full name of header C{name} (compact forms expanded)."""
    try:
        return _KEYS[name]
    except KeyError:
        lname = name.lower()
        key = COMPACT_FORMS.get(lname, lname)
        if len(_KEYS) < 4096:  # peers choose names: keep the memo bounded
            _KEYS[name] = key
        return key


class Header:
    """
    One header field as it appears in a message.

    @ivar name: the name as written (C{v}, C{VIA}, C{Via} ...).
    @ivar key: the canonical lower-case full name, for lookups.
    @ivar value: the value with folding joined and outer white space stripped.
    @ivar raw: the exact text of the field including its line end(s), or L{None} for a field
        made here (then it is written as C{name: value CRLF}).

    Fields are shared between a message and the copies made from it, so the comma-split
    elements and the parsed values of a field are kept on the field and worked out once.
    """

    __slots__ = ("name", "key", "value", "raw", "_elements", "_parsed")

    def __init__(
        self, name: str, value: str, raw: Optional[str] = None, key: Optional[str] = None
    ) -> None:
        self.name = name
        self.key = key if key is not None else _KEYS.get(name) or header_key(name)
        self.value = value
        self.raw = raw
        self._elements: Optional[list[str]] = None
        self._parsed: Optional[tuple] = None

    def line(self) -> str:
        """The text of this field on the wire, line end included."""
        return self.raw if self.raw is not None else f"{self.name}: {self.value}{CRLF}"

    def parse(self, parse_one: Callable[[str], _T], what: str) -> tuple[_T, ...]:
        """Every element of the value parsed by C{parse_one}, worked out once (C{what} names
        them in the error for an empty element).  A field holds one kind of value: it is
        read with this or with L{parse_whole}, always with the same C{parse_one}."""
        items = self._parsed
        if items is None:
            parsed = []
            for element in self.elements():
                if not element:
                    raise ParseError(400, f"empty {what}")
                parsed.append(parse_one(element))
            items = self._parsed = tuple(parsed)
        return items  # type: ignore[return-value]

    def parse_whole(self, parse_one: Callable[[str], _T]) -> _T:
        """The value parsed as one by C{parse_one} (From, To, CSeq), worked out once."""
        items = self._parsed
        if items is None:
            items = self._parsed = (parse_one(self.value),)
        return items[0]  # type: ignore[no-any-return]

    def elements(self) -> list[str]:
        """The list elements of the value, split at commas (RFC 3261 §7.3.1); do not change
        the list, it is kept for the next caller."""
        elements = self._elements
        if elements is None:
            elements = self._elements = split_commas(self.value)
        return elements

    def __repr__(self) -> str:
        return f"Header({self.name!r}, {self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Header):
            return NotImplemented
        return self.key == other.key and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.key, self.value))


@dataclass(frozen=True)
class ParseLimits:
    """
    Bounds on what a peer may send.

    @ivar max_message_size: bytes in one message, start line to end of body (larger: 513).
    @ivar max_headers: header fields in one message (more: 400).
    @ivar max_header_length: characters in one header field, folding included (more: 400).
    """

    max_message_size: int = 65535
    max_headers: int = 256
    max_header_length: int = 8192


DEFAULT_LIMITS = ParseLimits()


@dataclass(frozen=True)
class CSeq:
    """The CSeq header: sequence number and method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_MAX_CSEQ = 2**31


def parse_cseq(value: str) -> CSeq:
    """The CSeq value C{number method} (RFC 3261 §20.16: number below 2**31)."""
    parts = value.split()
    if len(parts) != 2 or not is_digits(parts[0]) or not is_token(parts[1]):
        raise ParseError(400, "bad CSeq")
    number = int(parts[0])
    if number >= _MAX_CSEQ:
        raise ParseError(400, "CSeq number out of range")
    return CSeq(number, parts[1])


def parse_start_line(line: str) -> tuple[Optional[str], Any, Any]:
    """
    The parts of a start line (without its line end, RFC 3261 §7.1, §7.2): C{(method,
    Request-URI, None)} for a request, C{(None, status code, reason phrase)} for a response.

    @raise ParseError: a malformed line (400), a SIP version other than 2.0 (505).
    """
    if line.startswith("SIP/") or line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
            raise ParseError(400, "bad status line")
        code = parts[1]
        if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
            raise ParseError(400, "bad status code")
        return None, int(code), parts[2] if len(parts) == 3 else ""
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError(400, "bad request line")
    method, uri_text, version = parts
    if not is_token(method):
        raise ParseError(400, "bad method")
    if version.upper() != "SIP/2.0":
        if version[:4].upper() == "SIP/":
            raise ParseError(505, "Version Not Supported")
        raise ParseError(400, "bad request line")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        raise ParseError(400, "headers in Request-URI")
    return method, uri, None


def make_header(group: Sequence[str], max_length: int = 8192) -> Header:
    """
    One header field from its line and continuation lines (RFC 3261 §7.3.1 folding), each
    without its LF; the field keeps their exact text for serialisation.

    @raise ParseError: no colon, a bad name, or longer than C{max_length} (400).
    """
    first = group[0]
    if len(group) > 1 and sum(len(line) for line in group) > max_length:
        raise ParseError(400, "Header Too Long")
    colon = first.find(":")
    if colon <= 0:
        raise ParseError(400, "header line without a colon")
    name = first[:colon].rstrip(" \t")
    if not is_token(name):
        raise ParseError(400, "bad header name")
    if len(group) == 1:
        value = first[colon + 1 :]
        raw = first + "\n"
    else:
        value = "".join(line[:-1] if line.endswith("\r") else line for line in group)
        value = value[colon + 1 :]
        raw = "\n".join(group) + "\n"
    return Header(name, value.strip(" \t\r"), raw)


#: Field names as written that were found to be tokens -> their key (bounded, like L{_KEYS}).
_FIELD_KEYS: dict[str, str] = {}
#: Header lines as received (without LF) -> their field: the same lines come back in every
#: message of a dialog and in the responses to a request, and fields are never changed, so
#: messages share them with what was parsed from them.  Cleared when full; long lines are
#: not kept, so what a peer can make it hold stays small (4096 x 512 characters).
_LINES: dict[str, Header] = {}
_LINES_MAX = 4096
_LINE_KEPT = 512


class _Memo(dict):  # type: ignore[type-arg]
    """A dict that can carry a C{cache_clear} (see L{sbc.core.caches.clear_parse_caches})."""


#: Start lines as received -> a message with only that start line, for L{sbc.core.message}
#: to copy (method and URI, status and reason are immutable).  Bounded as L{_LINES}, and
#: emptied with the other parse caches.
START_LINES = _Memo()
START_LINES.cache_clear = START_LINES.clear  # type: ignore[attr-defined]


def split_fields(text: str, max_headers: int, max_length: int) -> list[Header]:
    """
    The header fields of a message from the text after its start line (up to and including
    the line end of the last field): L{parse_fields} with a fast path for the usual section,
    one field per line, each line seen before or with a name seen before.

    @raise ParseError: as L{parse_fields}.
    """
    lines = text.split("\n")
    lines.pop()  # the text after the last line end: always empty
    if len(lines) > max_headers:
        return parse_fields(lines, max_headers, max_length)
    # Folding (RFC 3261 §7.3.1) needs no search of its own: a continuation line starts with
    # white space, so it is neither in the memo nor a known name before a colon, and the
    # loop hands the section to parse_fields.
    memo = _LINES
    headers: list[Optional[Header]] = list(map(memo.get, lines))
    if all(headers) and max_length >= _LINE_KEPT:  # all seen before, none too long
        return headers  # type: ignore[return-value]
    for i, line in enumerate(lines):
        if headers[i] is None:
            colon = line.find(":")
            key = _FIELD_KEYS.get(line[:colon]) if colon > 0 else None
            if key is None:
                return parse_fields(lines, max_headers, max_length)
            field = Header(line[:colon], line[colon + 1 :].strip(" \t\r"), line + "\n", key)
            if len(line) <= _LINE_KEPT:
                if len(memo) >= _LINES_MAX:
                    memo.clear()
                memo[line] = field
            headers[i] = field
        if len(line) > max_length:
            return parse_fields(lines, max_headers, max_length)
    return headers  # type: ignore[return-value]


def parse_fields(lines: Sequence[str], max_headers: int, max_length: int) -> list[Header]:
    """
    The header fields of a message from its header lines (each without its LF).

    @raise ParseError: 400 for more than C{max_headers} fields, a line or field longer than
        C{max_length}, a continuation line first, or a field L{make_header} rejects.
    """
    headers: list[Header] = []
    append = headers.append
    n = len(lines)
    i = 0
    while i < n:
        line = lines[i]
        if len(line) > max_length:
            raise ParseError(400, "Header Too Long")
        if line[:1] in (" ", "\t"):
            raise ParseError(400, "continuation line before any header")
        if len(headers) >= max_headers:
            raise ParseError(400, "Too Many Headers")
        j = i + 1
        while j < n and lines[j][:1] in (" ", "\t"):  # folding, RFC 3261 §7.3.1
            if len(lines[j]) > max_length:
                raise ParseError(400, "Header Too Long")
            j += 1
        if j > i + 1:
            append(make_header(lines[i:j], max_length))
            i = j
            continue
        i = j
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(400, "header line without a colon")
        name = line[:colon]
        key = _FIELD_KEYS.get(name)
        if key is None:
            name = name.rstrip(" \t")
            if not is_token(name):
                raise ParseError(400, "bad header name")
            key = header_key(name)
            if len(name) == colon <= 64 and len(_FIELD_KEYS) < 4096:
                _FIELD_KEYS[name] = key
        append(Header(name, line[colon + 1 :].strip(" \t\r"), line + "\n", key))
    return headers


_DISPLAY = {"call-id": "Call-ID", "cseq": "CSeq", "max-forwards": "Max-Forwards"}


def display_name(key: str) -> str:
    """The usual spelling of lower-case header C{key} (C{call-id} -> C{Call-ID})."""
    return _DISPLAY.get(key) or "-".join(part.capitalize() for part in key.split("-"))


#: What an index of fields holds for a key: the one field, or a tuple of several in order.
Fields = Union[Header, tuple[Header, ...]]


def index_fields(headers: Iterable[Header]) -> dict[str, Fields]:
    """The fields of C{headers} by key (a tuple only where a key occurs more than once:
    most occur once, and a message may be kept for a while)."""
    if not isinstance(headers, (tuple, list)):
        headers = list(headers)
    index: dict[str, Fields] = {h.key: h for h in headers}
    if len(index) == len(headers):  # the usual case: no key twice
        return index
    index = {}
    for h in headers:
        found = index.get(h.key)
        if found is None:
            index[h.key] = h
        else:
            index[h.key] = (*found, h) if type(found) is tuple else (found, h)  # type: ignore
    return index


#: An empty line after a line end: CRLF CRLF, or with a bare LF on either side.
_BLANK_LINE = re.compile(rb"\n\r?\n")


def find_head_end(data: bytes) -> tuple[int, int]:
    """Return (end of the header section incl. the last line end, start of body), or (-1, -1).

    CRLF is the rule; a bare LF is accepted as a line end, as most stacks do."""
    # One pass for the usual message: when the first LF (CR) LF is the LF of a CRLF CRLF,
    # no bare LF comes before it and that is the end.  Any other case: the three searches.
    m = _BLANK_LINE.search(data)
    if m is None:
        return (-1, -1)
    at = m.start()
    if m.end() - at == 3 and at > 0 and data[at - 1] == 13:  # CR
        return (at + 1, at + 3)
    best = (-1, -1)
    i = data.find(b"\r\n\r\n")
    if i >= 0:
        best = (i + 2, i + 4)
    j = data.find(b"\n\n", 0, i if i >= 0 else len(data))
    if j >= 0 and (best[0] < 0 or j + 1 < best[0]):
        best = (j + 1, j + 2)
    k = data.find(b"\n\r\n", 0, i if i >= 0 else len(data))
    if k >= 0 and (best[0] < 0 or k + 1 < best[0]):
        best = (k + 1, k + 3)
    return best
