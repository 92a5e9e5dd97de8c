"""Tests for L{sbc.core.syntax}: the pieces of SIP syntax shared by URIs and header values."""

from __future__ import annotations

import pytest

from sbc.core import syntax, uri
from sbc.core.errors import ParseError


def test_uri_reexports_the_syntax_names() -> None:
    """The names importers took from uri are the same objects as in syntax."""
    for name in (
        "Params",
        "escape_param",
        "unescape_param",
        "is_token",
        "is_ip_literal",
        "format_host",
        "split_commas",
    ):
        assert getattr(uri, name) is getattr(syntax, name)


def test_parameter_list_round_trip() -> None:
    """Parameters parse with LWS and quotes, are found in any case, set once, removed."""
    params = syntax.parse_header_params(' ; Branch = z9hG4bK1 ;rport;x="a;b"', "Via")
    assert params == (("Branch", "z9hG4bK1"), ("rport", None), ("x", '"a;b"'))
    assert syntax.param_value(params, "branch") == "z9hG4bK1"
    assert syntax.param_value(params, "rport") == ""
    assert syntax.has_param(params, "RPORT") and not syntax.has_param(params, "ttl")
    changed = syntax.set_param(params, "rport", "5060")
    assert syntax.format_params(changed) == ';Branch=z9hG4bK1;rport=5060;x="a;b"'
    assert syntax.format_params(syntax.without_param(changed, "x")) == ";Branch=z9hG4bK1;rport=5060"


@pytest.mark.parametrize(
    "text, expected",
    [("example.com", ("example.com", None)), ("[::1]:5061", ("[::1]", 5061))],
)
def test_split_hostport(text: str, expected: tuple[str, int | None]) -> None:
    """host[:port], IPv6 in brackets."""
    assert syntax.split_hostport(text, "test") == expected


@pytest.mark.parametrize("text", ["[::1", "host:65536", "host:x", "bad_host"])
def test_split_hostport_refuses(text: str) -> None:
    """Bad hosts and ports are a 400."""
    with pytest.raises(ParseError) as info:
        syntax.split_hostport(text, "test")
    assert info.value.status == 400
