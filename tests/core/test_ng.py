"""Tests for L{sbc.core.ng}: bencode and the ng message framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.core.ng import NgError, bdecode, bencode, decode_message, encode_message


def test_bencode_examples() -> None:
    """The four bencode types, dict keys sorted."""
    assert bencode(42) == b"i42e" and bencode(-3) == b"i-3e"
    assert bencode("sdp") == b"3:sdp" and bencode(b"\xff") == b"1:\xff"
    assert bencode(["a", 1]) == b"l1:ai1ee"
    assert bencode({"command": "ping", "b": 1}) == b"d1:bi1e7:command4:pinge"


def test_offer_round_trip() -> None:
    """An offer as Kamailio sends it decodes to the same dictionary."""
    offer = {
        "command": "offer",
        "call-id": "c1",
        "from-tag": "t1",
        "sdp": "v=0\r\n",
        "flags": ["trust-address"],
        "replace": ["origin"],
        "ICE": "remove",
    }
    data = encode_message("7_42_1", offer)
    assert data.startswith(b"7_42_1 d")
    assert decode_message(data) == ("7_42_1", offer)


def test_pong_reply() -> None:
    """rtpengine's answer to ping."""
    assert decode_message(b"abc d6:result4:ponge") == ("abc", {"result": "pong"})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"nocookie",
        b"c i1e",
        b"c d3:abe",
        b"c d1:ai1",
        b"c l",
        b"c di1ei2ee",
        b"c d1:ai01ee",
        b"c " + b"l" * 100 + b"e" * 100,
        b"c d1:a99:xe",
    ],
)
def test_malformed(data: bytes) -> None:
    """Broken messages raise NgError."""
    with pytest.raises(NgError):
        decode_message(data)


@given(
    st.recursive(
        st.one_of(st.integers(), st.text(max_size=20), st.binary(max_size=20)),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=20,
    )
)
def test_round_trip(value) -> None:  # type: ignore[no-untyped-def]
    """decode(encode(v)) gives v back (bytes that are UTF-8 come back as str)."""

    def normal(v):  # type: ignore[no-untyped-def]
        if isinstance(v, bytes):
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return v
        if isinstance(v, list):
            return [normal(x) for x in v]
        if isinstance(v, dict):
            return {k: normal(x) for k, x in v.items()}
        return v

    assert bdecode(bencode(value)) == normal(value)


@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    """Only NgError escapes."""
    try:
        decode_message(data)
    except NgError:
        pass
