# -*- test-case-name: tests.core.test_reply -*-
"""
Responses that sbc generates itself (RFC 3261 §8.2.6): from a parsed request, or, for a
request too broken to parse, from whatever of its Via/From/To/Call-ID/CSeq lines survive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Optional

from sbc.core.errors import RemoteProtocolError
from sbc.core.message import Header, Request, Response, header_key

__all__ = ["REASONS", "make_response", "error_response", "to_tag_for"]

#: Default reason phrases (RFC 3261 §21 and friends).
REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
}

_COPIED = frozenset(("via", "from", "to", "call-id", "cseq"))


def to_tag_for(call_id: str, from_tag: str, branch: str) -> str:
    """A To tag that is the same for every retransmission of one request, so that a
    stateless reply to a retransmission matches the first one."""
    text = f"{call_id}\0{from_tag}\0{branch}".encode("utf-8", "surrogateescape")
    digest = hashlib.blake2s(text, digest_size=8)
    return digest.hexdigest()


def _tag_for(request: Request) -> str:
    return to_tag_for(request.call_id, request.from_.tag or "", request.top_via.branch or "")


def _with_to_tag(value: str, tag: str) -> str:
    return f"{value};tag={tag}"


def make_response(
    request: Request,
    status: int,
    reason: Optional[str] = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: Optional[str] = None,
) -> Response:
    """
    Build a response to C{request}: its Via, From, Call-ID and CSeq fields copied as they
    were, To copied with a tag added for any status above 100, then C{headers}, then
    Content-Type/Content-Length.
    """
    out: list[Header] = []
    tag: Optional[str] = None  # for To: worked out once, when first needed
    for h in request.headers:
        key = h.key
        if key in _COPIED:
            if key == "to" and status > 100:
                if tag is None:
                    tag = "" if request.to.tag is not None else _tag_for(request)
                if tag:
                    out.append(Header(h.name, _with_to_tag(h.value, tag), None, key))
                    continue
            out.append(Header(h.name, h.value, None, key))
    out.extend(Header(name, value) for name, value in headers)
    if content_type is not None:
        out.append(Header("Content-Type", content_type, None, "content-type"))
    out.append(Header("Content-Length", str(len(body)), None, "content-length"))
    return Response(status, reason or REASONS.get(status, ""), out, body)


def error_response(data: bytes, error: RemoteProtocolError) -> Optional[bytes]:
    """
    Build the error response to a request that failed to parse, or return L{None} when no
    response can be built (it is a response, or it has no Via to send one along).

    The fields needed for a response are copied from the raw lines without further checks,
    so a client can still match the error to its transaction.
    """
    text = data[:8192].decode("utf-8", "replace")
    first, _, rest = text.partition("\n")
    if first.upper().startswith("SIP/") or " " not in first.strip():
        return None
    fields: dict[str, list[str]] = {}
    last: Optional[str] = None
    for line in rest.split("\n"):
        line = line.rstrip("\r")
        if not line:
            break
        if line[0] in " \t" and last is not None:
            fields[last][-1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            last = None
            continue
        key = header_key(name.strip())
        last = key if key in _COPIED else None
        if last is not None:
            fields.setdefault(key, []).append(value.strip())
    if "via" not in fields:
        return None
    status = error.status
    reason = error.reason[:1].upper() + error.reason[1:]
    lines = [f"SIP/2.0 {status} {_safe(reason)}"]
    for key, name in (
        ("via", "Via"),
        ("from", "From"),
        ("to", "To"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
    ):
        for value in fields.get(key, ()):
            if key == "to" and ";tag=" not in value.replace(" ", "").lower():
                value = _with_to_tag(value, to_tag_for("", "", value))
            lines.append(f"{name}: {_safe(value)}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")


def _safe(text: str) -> str:
    """Strip control characters that could split a header line."""
    return "".join(c for c in text if c >= " " or c == "\t")
