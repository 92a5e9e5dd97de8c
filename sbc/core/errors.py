# -*- test-case-name: tests.core.test_message -*-
"""
Errors split by whose fault they are (as h11 does): a peer's malformed input is a
L{RemoteProtocolError} carrying the status to answer with; our own misuse is a
L{LocalProtocolError}.
"""

from __future__ import annotations

__all__ = ["RemoteProtocolError", "ParseError", "LocalProtocolError"]


class RemoteProtocolError(Exception):
    """
    The peer sent something we cannot accept.

    @ivar status: the SIP status code a server answers with (400, 505, 513, ...).
    @ivar reason: a short reason phrase naming the fault, safe to send back.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class ParseError(RemoteProtocolError):
    """A message, header or URI does not follow the grammar."""


class LocalProtocolError(Exception):
    """sbc itself tried to build or send something invalid: a bug, never the peer's fault."""
