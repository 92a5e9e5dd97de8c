# -*- test-case-name: tests.core.test_wire -*-
"""
What crossed the wire: one SIP message received or sent, with the addresses it really
travelled between and when.  The engine reports every message it receives or sends as a
L{Wire}; observers (Prometheus metrics, HEP capture as Kamailio's siptrace does, call
records as Kamailio's acc does) read it.  Pure data, no I/O.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional, Union

from sbc.core.message import Message, Request, Response

__all__ = ["Wire", "RECEIVED", "SENT", "raw_call_id", "looks_like_sip", "tap_while"]

RECEIVED = "received"
SENT = "sent"

HostPort = tuple[str, int]


class Wire(NamedTuple):
    """
    One SIP message on the wire.  Built for every message while any tap is on, so a named
    tuple: as unchangeable as a frozen dataclass, made in a third of the time (a frozen
    dataclass sets each field through C{object.__setattr__}).

    @ivar direction: L{RECEIVED} or L{SENT}.
    @ivar transport: C{udp}, C{tcp} or C{tls}.
    @ivar source: (host, port) it came from (ours when sent; C{("", 0)} when the local
        end of a stream connection is not known).
    @ivar destination: (host, port) it went to.
    @ivar data: the bytes exactly as they crossed the wire.
    @ivar time: seconds since the epoch.
    @ivar message: the parsed message, when there is one (raw keepalive pings have none).
    """

    direction: str
    transport: str
    source: HostPort
    destination: HostPort
    data: bytes
    time: float
    message: Optional[Union[Request, Response, Message]] = None

    @property
    def call_id(self) -> Optional[str]:
        """The message's Call-ID (read from the bytes when it was not parsed)."""
        if self.message is not None:
            try:
                return self.message.call_id
            except Exception:
                return None
        return raw_call_id(self.data)


_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_START = re.compile(rb"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3})\r?\n")


def raw_call_id(data: bytes) -> Optional[str]:
    """The Call-ID of a serialised SIP message, without parsing it (RFC 3261 §20.8,
    compact form C{i})."""
    head = data.split(b"\r\n\r\n", 1)[0]
    m = _CALL_ID.search(head)
    return m.group(1).decode("utf-8", "replace") if m else None


def looks_like_sip(data: bytes) -> bool:
    """Does C{data} start with a SIP request or status line (not a CRLF or 4-byte
    keepalive)?"""
    return _START.match(data[:200]) is not None


def tap_while(taps: list[Any], tap: Any, on: bool) -> None:
    """Keep C{tap} in C{taps} (the engine's wire taps) while it is C{on}, and out of them
    while it is off: a tap that would return at once costs the engine nothing per message.
    Called by a tap whenever its settings change (start-up, reload, an admin command)."""
    if on:
        if tap not in taps:
            taps.append(tap)
    elif tap in taps:
        taps.remove(tap)
