"""
Fuzzing every parser a peer can reach: SIP messages, URIs, the stream framer, SDP,
STUN.  Each must either work or raise its own error type, and never hold more memory than
its bound.  CI runs a bounded number of examples; a long run is one command:

    HYPOTHESIS_PROFILE=fuzz .venv/bin/python -m pytest tests/fuzz -q
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbc.core.errors import ParseError, RemoteProtocolError
from sbc.core.framing import FramingError, StreamFramer
from sbc.core.message import ParseLimits, parse
from sbc.core.sdp import SdpError, anchor_sdp, fix_nated_sdp, media_streams, parse_sdp
from sbc.core.stun import StunError, parse_request
from sbc.core.uri import parse_name_addr, parse_uri, parse_via
from tests.helpers import request_bytes, rfc4475, rfc4475_cases

#: CI: a bounded run; HYPOTHESIS_PROFILE=fuzz: a long one.
FUZZ = settings(
    max_examples=200_000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SEEDS = [
    request_bytes(method="INVITE", body=b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n"),
    *[rfc4475(name) for name, _ in rfc4475_cases()],
]


@st.composite
def mutated(draw) -> bytes:  # type: ignore[no-untyped-def]
    """A seed message with bytes flipped, inserted or cut: close to valid, so deep paths run."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        choice = draw(st.integers(0, 2))
        if choice == 0 and data:
            data[at] = draw(st.integers(0, 255))
        elif choice == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


@FUZZ
@given(st.one_of(mutated(), st.binary(max_size=600)))
def test_message_parser(data: bytes) -> None:
    """parse() and every lazy header accessor raise only ParseError."""
    try:
        m = parse(data, ParseLimits(max_message_size=4096, max_headers=64, max_header_length=1024))
        for name in (
            "vias",
            "from_",
            "to",
            "cseq",
            "contacts",
            "routes",
            "record_routes",
            "max_forwards",
            "expires",
        ):
            getattr(m, name)
        m.to_bytes()
    except ParseError:
        pass


@FUZZ
@given(st.text(max_size=200))
def test_uri_name_addr_via_parsers(text: str) -> None:
    """The value parsers raise only ParseError on any text."""
    for parser in (parse_uri, parse_name_addr, parse_via):
        try:
            str(parser(text))
        except ParseError:
            pass


@FUZZ
@given(st.lists(st.one_of(mutated(), st.binary(max_size=300)), max_size=12))
def test_stream_framer_is_bounded(chunks: list[bytes]) -> None:
    """The framer raises only FramingError and never buffers more than its bound."""
    framer = StreamFramer(max_message_size=2048)
    try:
        for chunk in chunks:
            framer.feed(chunk)
            assert framer.buffered <= 2048 + len(chunk)
    except FramingError:
        pass


@FUZZ
@given(
    st.one_of(st.binary(max_size=400), st.text(max_size=300).map(str.encode)), st.integers(0, 15)
)
def test_sdp(body: bytes, flags: int) -> None:
    """SDP parsing and fixing raise only SdpError."""
    try:
        parse_sdp(body)
        fix_nated_sdp(body, flags, "198.51.100.20")
    except SdpError:
        pass


SDP_SEEDS = [
    b"v=0\r\no=- 1 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\n"
    b"a=ice-lite\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtcp:4001 IN IP4 192.168.1.10\r\n"
    b"a=candidate:1 1 UDP 2130706431 192.168.1.10 4000 typ host\r\na=sendonly\r\n"
    b"m=video 0 RTP/AVP 96\r\nm=video 5000/2 RTP/AVP 96\r\nc=IN IP6 ::\r\n",
    b"v=0\no=- 1 99999999999999999999 IN IP6 fd00::1\ns=-\nt=0 0\nm=audio 1 RTP/AVP 0\n"
    b"c=IN IP6 fd00::1\na=rtcp:2\n",
]


@st.composite
def mutated_sdp(draw) -> bytes:  # type: ignore[no-untyped-def]
    """An SDP seed with bytes flipped, inserted or cut."""
    data = bytearray(draw(st.sampled_from(SDP_SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        choice = draw(st.integers(0, 2))
        if choice == 0 and data:
            data[at] = draw(st.sampled_from(b"0123456789 =/:\r\nmcaov\xff"))
        elif choice == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        else:
            del data[at : at + draw(st.integers(1, 12))]
    return bytes(data)


@FUZZ
@given(
    st.one_of(mutated_sdp(), st.binary(max_size=400), st.text(max_size=300).map(str.encode)),
    st.sampled_from(["203.0.113.1", "2001:db8::1"]),
    st.booleans(),
)
def test_anchor_sdp(body: bytes, address: str, origin: bool) -> None:
    """media_streams and anchor_sdp return a result or raise SdpError, on any bytes."""
    try:
        streams = media_streams(body)
        ports = [None if i % 3 == 2 else 30000 + 2 * i for i in range(len(streams))]
        out = anchor_sdp(body, address, ports, nortpproxy="a=nortpproxy:yes", replace_origin=origin)
    except SdpError:
        return
    assert isinstance(out, bytes)
    assert len(media_streams(out)) == len(streams)


@FUZZ
@given(st.binary(max_size=300))
def test_stun(data: bytes) -> None:
    """STUN parsing raises only StunError (a RemoteProtocolError)."""
    try:
        parse_request(data)
    except StunError as error:
        assert isinstance(error, RemoteProtocolError)


@FUZZ
@given(
    st.booleans(),
    st.lists(st.one_of(mutated(), st.binary(max_size=300)), min_size=1, max_size=4),
)
def test_websocket_connection(upgraded: bool, chunks: list[bytes]) -> None:
    """A WebSocket connection (RFC 7118) fed garbage, before or after its upgrade, never
    raises: it answers, counts or closes, and holds no more than max_message_size."""
    from twisted.internet.task import Clock
    from wsproto.events import TextMessage

    from tests.net.test_websocket import Client, make_factory

    factory = make_factory(Clock())
    client = Client(factory)
    if upgraded:
        client.upgrade()
    for chunk in chunks:
        if upgraded and not client.transport.disconnecting and chunk[:1] == b"I":
            client.send(TextMessage(data=chunk.decode("latin-1")))
        else:
            client.raw(chunk)
    assert client.protocol._size <= factory.engine.limits.max_message_size
