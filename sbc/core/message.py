# -*- test-case-name: tests.core.test_message -*-
"""
SIP requests and responses: parse, inspect, change, serialise (RFC 3261 §7, §20, §25).

Theory of operation:
 - L{parse} splits a message into its start line, header fields and body.  Each header keeps
   the exact text it arrived as (folding, compact name, odd white space included), so a
   message that nobody changed serialises to the very bytes that were received.
 - The header fields that every element needs (Via, From, To, Call-ID, CSeq, Max-Forwards,
   Content-Length, Contact, Date) are checked while parsing, so a malformed message fails
   at the edge with a L{ParseError} carrying the status to answer; other headers are parsed
   only when somebody reads them.
 - Messages are immutable: the C{with_*}/C{without_*} methods return a new message whose
   untouched headers are shared with the old one and keep their original text.  Typed values
   are worked out once per field and message and carried over to copies where unchanged.

Text is decoded as UTF-8 with C{surrogateescape}, so any byte survives a round trip.
Single header fields (L{Header}, L{CSeq}, ...) live in L{sbc.core.header}, re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Optional, Union

from sbc.core.errors import ParseError
from sbc.core.header import (
    _KEYS,
    COMPACT_FORMS,
    DEFAULT_LIMITS,
    CSeq,
    Header,
    ParseLimits,
    header_key,
)
from sbc.core.header import CRLF as _CRLF
from sbc.core.header import START_LINES as _START_LINES
from sbc.core.header import Fields as _Fields
from sbc.core.header import display_name as _display_name
from sbc.core.header import find_head_end as _find_head_end
from sbc.core.header import index_fields as _index_of
from sbc.core.header import parse_cseq as _parse_cseq
from sbc.core.header import parse_start_line as _parse_start_line
from sbc.core.header import split_fields as _split_fields
from sbc.core.syntax import is_digits
from sbc.core.uri import (
    NameAddr,
    OpaqueUri,
    SipUri,
    Via,
    parse_name_addr,
    parse_via,
)

__all__ = [
    "ParseLimits",
    "Header",
    "CSeq",
    "Message",
    "Request",
    "Response",
    "parse",
    "header_key",
    "COMPACT_FORMS",
]

#: Headers that may appear once only (RFC 3261 §7.3.1: not defined as comma lists).
_SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type")
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT\Z"
)


class Message:
    """
    Behaviour shared by L{Request} and L{Response}.

    @ivar headers: the header fields in order.
    @ivar body: the message body (exactly Content-Length bytes when one was given).
    """

    __slots__ = ("headers", "body", "_raw", "_start_raw", "_blank", "_cache", "_index")

    def __init__(self, headers: Iterable[Header], body: bytes = b"") -> None:
        self.headers: tuple[Header, ...] = tuple(headers)
        self.body = body
        self._raw: Optional[bytes] = None
        self._start_raw: Optional[str] = None
        self._blank = _CRLF
        # Typed header values by header key, and the fields of each key in order; both are
        # worked out on first use (the headers never change after that).
        self._cache: dict[str, object] = {}
        self._index: Optional[dict[str, _Fields]] = None

    # -- start line, implemented by subclasses -------------------------------------------
    def start_line(self) -> str:
        """The start line without its line end."""
        raise NotImplementedError

    def _copy_start(self) -> Message:
        """A new message of this kind with this start line and nothing else set."""
        raise NotImplementedError

    # -- serialisation ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise: the received bytes when unchanged, otherwise rebuilt from the parts."""
        if self._raw is not None:
            return self._raw
        start = self._start_raw if self._start_raw is not None else self.start_line() + _CRLF
        lines = [h.raw if h.raw is not None else h.line() for h in self.headers]
        text = start + "".join(lines) + self._blank
        data = text.encode("utf-8", "surrogateescape") + self.body
        self._raw = data
        return data

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    # -- header access ------------------------------------------------------------------------
    def _fields(self, key: str) -> tuple[Header, ...]:
        """The fields whose key is C{key} (canonical), in order."""
        index = self._index
        if index is None:
            index = self._index = _index_of(self.headers)
        found = index.get(key, _NONE)
        return found if type(found) is tuple else (found,)  # type: ignore[return-value]

    def get(self, key: str) -> Optional[str]:
        """Return the value of the first header C{key} (any form of its name), or L{None}."""
        index = self._index
        if index is None:
            index = self._index = _index_of(self.headers)
        found = index.get(_KEYS.get(key) or header_key(key))
        if found is None:
            return None
        return found.value if type(found) is not tuple else found[0].value  # type: ignore

    def get_all(self, key: str) -> list[str]:
        """Return the value of every header C{key}, one item per header field."""
        return [h.value for h in self._fields(_KEYS.get(key) or header_key(key))]

    def values(self, key: str) -> list[str]:
        """Return every element of list header C{key}: all fields, split at commas."""
        fields = self._fields(_KEYS.get(key) or header_key(key))
        if len(fields) == 1:
            return list(fields[0].elements())
        out: list[str] = []
        for h in fields:
            out.extend(h.elements())
        return out

    def has(self, key: str) -> bool:
        """Say whether header C{key} is present."""
        index = self._index
        if index is None:
            index = self._index = _index_of(self.headers)
        return (_KEYS.get(key) or header_key(key)) in index

    def _parsed_list(self, key: str, parse_one: Callable[[str], Any], what: str) -> tuple:
        """Every element of list header C{key} parsed by C{parse_one} (see L{Header.parse})."""
        fields = self._fields(key)
        if len(fields) == 1:
            return fields[0].parse(parse_one, what)
        out: tuple[Any, ...] = ()
        for h in fields:
            out += h.parse(parse_one, what)
        return out

    @property
    def vias(self) -> tuple[Via, ...]:
        """Every Via value, topmost first."""
        vias = self._cache.get("via")
        if vias is None:
            vias = self._cache["via"] = self._parsed_list("via", parse_via, "Via element")
        return vias  # type: ignore[return-value]

    @property
    def top_via(self) -> Via:
        """The topmost Via value."""
        vias = self._cache.get("via") or self.vias
        if not vias:
            raise ParseError(400, "missing Via")
        return vias[0]  # type: ignore[index]

    def _single_name_addr(self, key: str) -> NameAddr:
        value = self._cache.get(key)
        if value is None:
            fields = self._fields(key)
            if not fields:
                raise ParseError(400, f"missing {key}")
            value = self._cache[key] = fields[0].parse_whole(parse_name_addr)
        return value  # type: ignore[return-value]

    @property
    def from_(self) -> NameAddr:
        """The From value."""
        value = self._cache.get("from")
        return value if value is not None else self._single_name_addr("from")  # type: ignore

    @property
    def to(self) -> NameAddr:
        """The To value."""
        value = self._cache.get("to")
        return value if value is not None else self._single_name_addr("to")  # type: ignore

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        value = self._cache.get("call-id")
        if value is None:
            value = self.get("call-id")
            if not value or " " in value or "\t" in value or "\r" in value or "\n" in value:
                raise ParseError(400, "bad Call-ID")
            self._cache["call-id"] = value
        return value  # type: ignore[return-value]

    @property
    def cseq(self) -> CSeq:
        """The CSeq value."""
        value = self._cache.get("cseq")
        if value is None:
            fields = self._fields("cseq")
            if not fields:
                raise ParseError(400, "missing CSeq")
            value = self._cache["cseq"] = fields[0].parse_whole(_parse_cseq)
        return value  # type: ignore[return-value]

    @property
    def max_forwards(self) -> Optional[int]:
        """The Max-Forwards value, or L{None} when absent."""
        value = self.get("max-forwards")
        if value is None:
            return None
        number = int(value) if is_digits(value) else 256
        if number > 255:
            raise ParseError(400, "bad Max-Forwards")
        return number

    @property
    def contacts(self) -> tuple[NameAddr, ...]:
        """Every Contact value (empty for C{Contact: *}; see L{contact_star})."""
        value = self._cache.get("contact")
        if value is None:
            if self.contact_star:
                value = ()
            else:
                value = self._parsed_list("contact", parse_name_addr, "element in contact")
            self._cache["contact"] = value
        return value  # type: ignore[return-value]

    @property
    def contact_star(self) -> bool:
        """True when the message carries C{Contact: *} (and nothing else in Contact)."""
        fields = self._fields("contact")
        elements = fields[0].elements() if len(fields) == 1 else self.values("contact")
        if "*" not in elements:
            return False
        if len(elements) != 1:
            raise ParseError(400, "Contact * mixed with other contacts")
        return True

    def _name_addrs(self, key: str) -> tuple[NameAddr, ...]:
        value = self._cache.get(key)
        if value is None:
            value = self._parsed_list(key, parse_name_addr, f"element in {key}")
            self._cache[key] = value
        return value  # type: ignore[return-value]

    @property
    def routes(self) -> tuple[NameAddr, ...]:
        """Every Route value, topmost first."""
        return self._name_addrs("route")

    @property
    def record_routes(self) -> tuple[NameAddr, ...]:
        """Every Record-Route value, topmost first."""
        return self._name_addrs("record-route")

    @property
    def expires(self) -> Optional[int]:
        """The Expires header in seconds, or L{None} when absent or not a number."""
        value = self.get("expires")
        if value is None or not is_digits(value):
            return None
        return min(int(value), 2**32 - 1)

    # -- changes: each returns a new message ------------------------------------------------
    def with_headers(self, headers: Iterable[Header]) -> Message:
        """Return a copy with the header list replaced."""
        new = self._derive(headers, None, ())
        new._cache = {}
        new._index = None
        return new

    def _derive(
        self, headers: Iterable[Header], key: Optional[str], fields: tuple[Header, ...]
    ) -> Message:
        """L{with_headers} where only the fields of C{key} (L{None}: none) changed, to
        C{fields}: what was worked out for the other keys carries over to the copy."""
        new = self._copy_start()
        new.headers = tuple(headers)
        new.body = self.body
        new._blank = self._blank
        new._raw = None
        new._cache = cache = self._cache.copy() if self._cache else {}
        cache.pop(key, None)  # type: ignore[arg-type]
        index = self._index
        if index is not None:
            index = index.copy()
            if key is not None:
                if fields:
                    index[key] = fields if len(fields) > 1 else fields[0]
                else:
                    index.pop(key, None)
        new._index = index
        return new

    def with_header_first(self, name: str, value: str) -> Message:
        """Return a copy with a new header field placed before all others of the same name."""
        key = header_key(name)
        header = Header(name, value, None, key)
        fields = self._fields(key)
        if not fields:
            return self._derive(self.headers + (header,), key, (header,))
        headers = list(self.headers)
        headers.insert(_position(headers, fields[0]), header)
        return self._derive(headers, key, (header, *fields))

    def with_header_appended(self, name: str, value: str) -> Message:
        """Return a copy with a new header field after all others."""
        header = Header(name, value)
        fields = (*self._fields(header.key), header)
        return self._derive(self.headers + (header,), header.key, fields)

    def with_header(self, name: str, value: str) -> Message:
        """Return a copy where header C{name} occurs once, with C{value}, in the first place
        it occurred (or at the end)."""
        key = header_key(name)
        header = Header(name, value, None, key)
        if not self._fields(key):
            return self._derive(self.headers + (header,), key, (header,))
        headers = []
        placed = False
        for h in self.headers:
            if h.key == key:
                if not placed:
                    headers.append(header)
                    placed = True
                continue
            headers.append(h)
        return self._derive(headers, key, (header,))

    def without(self, name: str) -> Message:
        """Return a copy without any header C{name}."""
        key = header_key(name)
        return self._derive([h for h in self.headers if h.key != key], key, ())

    def without_first_value(self, name: str) -> Message:
        """Return a copy with the first element of list header C{name} removed (e.g. the
        top Via or the top Route), keeping the other elements of the same field."""
        key = header_key(name)
        fields = list(self._fields(key))
        if not fields:
            return self._derive(self.headers, None, ())
        first = fields[0]
        rest = first.elements()[1:]
        headers = list(self.headers)
        i = _position(headers, first)
        if rest:
            headers[i] = fields[0] = Header(first.name, ", ".join(rest), None, key)
        else:
            del headers[i]
            del fields[0]
        return self._derive(headers, key, tuple(fields))

    def with_first_value(self, name: str, value: str) -> Message:
        """Return a copy where the first element of list header C{name} (the top Via, the
        first Contact) is replaced by C{value}, the other elements of that field kept."""
        key = header_key(name)
        fields = list(self._fields(key))
        if not fields:
            return self._derive(self.headers, None, ())
        first = fields[0]
        rest = first.elements()[1:]
        headers = list(self.headers)
        i = _position(headers, first)
        headers[i] = fields[0] = Header(first.name, ", ".join([value, *rest]), None, key)
        return self._derive(headers, key, tuple(fields))

    def with_top_via(self, via: Via) -> Message:
        """L{with_first_value} for the top Via, keeping C{via} as its parsed value."""
        new = self.with_first_value("via", str(via))
        new._cache["via"] = (via, *self.vias[1:])
        return new

    def with_body(self, body: bytes, content_type: Optional[str] = None) -> Message:
        """Return a copy with C{body}, Content-Length set to match (and Content-Type if
        given)."""
        new = self.with_header("Content-Length", str(len(body)))
        if content_type is not None:
            new = new.with_header("Content-Type", content_type)
        new.body = body
        return new


_NONE: tuple[Header, ...] = ()
_new = object.__new__


def _position(headers: list[Header], field: Header) -> int:
    i = 0
    for h in headers:
        if h is field:
            return i
        i += 1
    raise ValueError(field)


class Request(Message):
    """
    A SIP request.

    @ivar method: the method token, case-sensitive as RFC 3261 says.
    @ivar uri: the Request-URI.
    """

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: Union[SipUri, OpaqueUri],
        headers: Iterable[Header] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        """C{METHOD uri SIP/2.0}."""
        return f"{self.method} {self.uri} SIP/2.0"

    def _copy_start(self) -> Request:
        new = _new(Request)
        new.method = self.method
        new.uri = self.uri
        new._start_raw = self._start_raw
        return new

    def with_uri(self, uri: Union[SipUri, OpaqueUri]) -> Request:
        """Return a copy with a new Request-URI."""
        new = self._derive(self.headers, None, ())
        assert isinstance(new, Request)
        new.uri = uri
        new._start_raw = None
        return new

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """
    A SIP response.

    @ivar status: the status code, 100..699.
    @ivar reason: the reason phrase (may be empty).
    """

    __slots__ = ("status", "reason")

    def __init__(
        self, status: int, reason: str, headers: Iterable[Header] = (), body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        """C{SIP/2.0 code reason}."""
        return f"SIP/2.0 {self.status} {self.reason}"

    def _copy_start(self) -> Response:
        new = _new(Response)
        new.status = self.status
        new.reason = self.reason
        new._start_raw = self._start_raw
        return new

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _parse_start(line: str) -> Message:
    """A new message with start line C{line} (without its line end) and nothing else set."""
    proto = _START_LINES.get(line)
    if proto is None:
        method, first, second = _parse_start_line(line)
        proto = Request(method, first) if method is not None else Response(first, second)
        if len(line) <= 512:  # peers choose them: bounded as the header-line memo
            if len(_START_LINES) >= 1024:
                _START_LINES.clear()
            _START_LINES[line] = proto
    return proto._copy_start()


def parse(data: bytes, limits: ParseLimits = DEFAULT_LIMITS, *, stream: bool = False) -> Message:
    """
    Parse one SIP message.

    @param data: the message; for a datagram, the whole datagram (extra octets after
        Content-Length are ignored, RFC 3261 §18.3).
    @param stream: True when C{data} was framed from a stream, where a missing Content-Length
        means an empty body.
    @raise ParseError: the message is malformed; C{status} says what to answer (400, 505, 513).
    """
    if len(data) > limits.max_message_size:
        raise ParseError(513, "Message Too Large")
    head_end, body_start = _find_head_end(data)
    if head_end < 0:
        # A datagram is complete by definition: accept one whose sender left out the empty
        # line after the last header, as long as that header line is terminated.
        if stream or not data.endswith(b"\n"):
            raise ParseError(400, "no empty line after the headers")
        head_end = body_start = len(data)
    head = data[:head_end].decode("utf-8", "surrogateescape")
    first = head.find("\n") + 1  # head ends with a line end
    start = head[: first - 1]
    message = _parse_start(start[:-1] if start.endswith("\r") else start)
    message._start_raw = head[:first]
    message._blank = data[head_end:body_start].decode("ascii") or _CRLF
    message._cache = {}
    headers = _split_fields(head[first:], limits.max_headers, limits.max_header_length)
    message.headers = tuple(headers)
    index = message._index = _index_of(headers)

    length_field = index.get("content-length")
    if length_field is not None:
        if type(length_field) is tuple:
            raise ParseError(400, "multiple Content-Length headers")
        text = length_field.value  # type: ignore[union-attr]
        if not is_digits(text):
            raise ParseError(400, "bad Content-Length")
        length = int(text)
        end = body_start + length
        if end > len(data):
            raise ParseError(400, "Content-Length larger than the message")
        message.body = data[body_start:end]
        message._raw = data[:end] if end != len(data) else data
    elif stream:
        message.body = b""
        message._raw = data[:body_start]
    else:
        message.body = data[body_start:]
        message._raw = data
    _validate(message, index)
    return message


def _validate(message: Message, seen: dict[str, _Fields]) -> None:
    """Check the headers every SIP element relies on; raise L{ParseError} on the first fault."""
    for key in _REQUIRED:
        if key not in seen:
            raise ParseError(400, f"Missing {_display_name(key)} header")
    if len(seen) != len(message.headers):  # some key occurs more than once
        for key in _SINGLE:
            if type(seen.get(key)) is tuple:
                raise ParseError(400, f"multiple {_display_name(key)} headers")
    # Parsing is the check, in the order of the properties, straight from the index: From,
    # To and CSeq are single fields here (checked above).
    cache = message._cache
    via = seen["via"]
    if type(via) is tuple:
        message.vias  # noqa: B018
    else:
        cache["via"] = via.parse(parse_via, "Via element")  # type: ignore[union-attr]
    cache["from"] = seen["from"].parse_whole(parse_name_addr)  # type: ignore[union-attr]
    cache["to"] = seen["to"].parse_whole(parse_name_addr)  # type: ignore[union-attr]
    message.call_id  # noqa: B018
    cseq = cache["cseq"] = seen["cseq"].parse_whole(_parse_cseq)  # type: ignore[union-attr]
    if isinstance(message, Request) and cseq.method != message.method:
        raise ParseError(400, "CSeq method does not match the request method")
    message.max_forwards  # noqa: B018
    if "contact" in seen:
        message.contacts  # noqa: B018
    if "date" in seen:
        date = message.get("date") or ""
        if _DATE.match(date) is None:
            raise ParseError(400, "bad Date")
