"""Tests for L{sbc.core.header}: single header fields, and their re-export by message."""

from __future__ import annotations

import pytest

from sbc.core import header, message
from sbc.core.errors import ParseError


def test_message_reexports_the_header_names() -> None:
    """Every public name of header that message used to define is the same object there."""
    for name in ("COMPACT_FORMS", "CSeq", "Header", "header_key"):
        assert getattr(message, name) is getattr(header, name)
        assert name in message.__all__


def test_make_header_keeps_folded_text() -> None:
    """A folded field joins its lines for the value and keeps them verbatim for the wire."""
    field = header.make_header(["Subject: a\r", " b\r"])
    assert (field.key, field.value, field.line()) == ("subject", "a b", "Subject: a\r\n b\r\n")


@pytest.mark.parametrize("value", ["1", "x INVITE", f"{2**31} INVITE", "1 IN VITE"])
def test_parse_cseq_refuses(value: str) -> None:
    """A CSeq without a number below 2**31 and one method token is a 400."""
    with pytest.raises(ParseError) as info:
        header.parse_cseq(value)
    assert info.value.status == 400


def test_display_name() -> None:
    """Error messages spell header names the usual way."""
    assert [header.display_name(k) for k in ("call-id", "cseq", "content-length")] == [
        "Call-ID",
        "CSeq",
        "Content-Length",
    ]
