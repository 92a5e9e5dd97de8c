"""
Tests for L{sbc.net.rtpengine}: the ng client against a fake socket (cookies, retries,
errors) and against a real rtpengine on loopback (skipped, with the reason, when the
C{rtpengine} binary is missing: C{scripts/install-test-deps} installs rtpengine-daemon).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.defer import DeferredQueue
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sbc.core.address import Address
from sbc.core.media import MediaError
from sbc.core.ng import bencode, decode_message, encode_message
from sbc.core.sdp import media_streams
from sbc.core.stats import Statistics
from sbc.net.media import MediaBackend
from sbc.net.rtpengine import RtpengineClient, RtpengineError, RtpengineTimeoutError
from tests.helpers import free_port
from tests.rtpengine_daemon import RTPENGINE, rtpengine_daemon

DAEMON = ("127.0.0.1", 2223)
SOURCE = Address("udp", "198.51.100.20", 5060)


def sdp(port: int, host: str = "127.0.0.1") -> bytes:
    return (
        f"v=0\r\no=- 42 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


#: What a browser offers (Chromium's shape: DTLS-SRTP, AVPF, ICE, rtcp-mux).
WEBRTC_SDP = (
    b"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    b"a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n"
    b"m=audio {port} UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 127.0.0.1\r\n"
    b"a=rtcp:9 IN IP4 0.0.0.0\r\n"
    b"a=candidate:1 1 udp 2113937151 127.0.0.1 {port} typ host generation 0\r\n"
    b"a=ice-ufrag:Fr0w\r\na=ice-pwd:3Yc5f1l7yWxZ6yR3u8G2k1pQ\r\na=ice-options:trickle\r\n"
    b"a=fingerprint:sha-256 "
    b"D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F"
    b"\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    b"a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;"
    b"useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n"
)


class FakeControlPort:
    def __init__(self, protocol: DatagramProtocol) -> None:
        self.protocol = protocol
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def write(self, data: bytes, address: tuple[str, int]) -> None:
        self.written.append((data, address))

    def stopListening(self) -> None:  # noqa: N802 - Twisted's name
        self.stopped = True


class FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.port: Any = None

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "") -> Any:  # noqa: N802
        self.port = FakeControlPort(protocol)
        return self.port


def client(**kwargs: Any) -> tuple[RtpengineClient, FakeReactor]:
    fake = FakeReactor()
    engine = RtpengineClient("udp:127.0.0.1:2223", reactor=fake, **kwargs)
    engine.startService()
    return engine, fake


def reply(engine: RtpengineClient, data: bytes, **message: Any) -> None:
    cookie, _ = decode_message(data)
    engine.reply_received(encode_message(cookie, message), DAEMON)


class ClientTests(SynchronousTestCase):
    """The client's protocol logic, no daemon needed."""

    def test_is_a_media_backend(self) -> None:
        """The client provides the MediaBackend protocol."""
        engine, _ = client()
        backend: MediaBackend = engine
        self.assertEqual(backend.sessions(), [])

    def test_ping_pong_and_unique_cookies(self) -> None:
        """Every command has its own cookie; the reply with that cookie fires it."""
        engine, fake = client(cookie_prefix="7")
        first, second = engine.ping(), engine.ping()
        (data1, address), (data2, _) = fake.port.written
        self.assertEqual(address, DAEMON)
        self.assertEqual((data1, data2), (b"7_1 d7:command4:pinge", b"7_2 d7:command4:pinge"))
        engine.reply_received(b"7_2 d6:result4:ponge", DAEMON)
        self.assertNoResult(first)
        self.assertIsNone(self.successResultOf(second))
        engine.reply_received(b"7_1 d6:result4:ponge", DAEMON)
        self.successResultOf(first)

    def test_retries_then_fails(self) -> None:
        """No reply: sent `tries` times, `timeout` apart, then RtpengineTimeoutError."""
        stats = Statistics()
        engine, fake = client(tries=3, timeout=1.0, stats=stats)
        d = engine.ping()
        fake.advance(0.99)
        self.assertEqual(len(fake.port.written), 1)
        fake.advance(0.01)
        fake.advance(1.0)
        self.assertEqual(len(fake.port.written), 3)
        self.assertEqual(len({data for data, _ in fake.port.written}), 1)  # same cookie
        self.assertNoResult(d)
        fake.advance(1.0)
        failure = self.failureResultOf(d, RtpengineTimeoutError)
        self.assertIn("after 3 tries", str(failure.value))
        self.assertEqual(stats.get("rtpengine_retransmissions"), 2)
        self.assertEqual(stats.get("rtpengine_timeouts"), 1)
        self.assertEqual(fake.getDelayedCalls(), [])

    def test_reply_after_a_retry_and_its_duplicate(self) -> None:
        """The reply to a retransmission fires once; the duplicate is ignored."""
        engine, fake = client()
        d = engine.ping()
        fake.advance(1.0)
        reply(engine, fake.port.written[0][0], result="pong")
        reply(engine, fake.port.written[1][0], result="pong")
        self.successResultOf(d)
        self.assertEqual(fake.getDelayedCalls(), [])

    def test_error_and_load_limit(self) -> None:
        """result error carries error-reason; load limit is an error too."""
        engine, fake = client()
        d = engine.delete("c1", "F1")
        reply(engine, fake.port.written[0][0], result="error", **{"error-reason": "Unknown call"})
        failure = self.failureResultOf(d, RtpengineError)
        self.assertEqual(str(failure.value), "delete: Unknown call")
        self.assertIsInstance(failure.value, MediaError)
        d = engine.offer("c2", "F1", None, sdp(4000), SOURCE)
        reply(engine, fake.port.written[1][0], result="load limit")
        self.assertIn("load limit", str(self.failureResultOf(d, RtpengineError).value))

    def test_foreign_and_malformed_replies_are_ignored(self) -> None:
        """Only the daemon's address is believed; garbage is counted."""
        stats = Statistics()
        engine, fake = client(stats=stats)
        d = engine.ping()
        cookie, _ = decode_message(fake.port.written[0][0])
        engine.reply_received(encode_message(cookie, {"result": "pong"}), ("127.0.0.2", 2223))
        engine.reply_received(b"garbage", DAEMON)
        engine.reply_received(cookie.encode() + b" " + bencode(["not", "a", "dict"]), DAEMON)
        self.assertNoResult(d)
        self.assertEqual(stats.get("rtpengine_foreign_replies"), 1)
        self.assertEqual(stats.get("rtpengine_bad_replies"), 2)

    def test_offer_answer_delete_dictionaries(self) -> None:
        """Offer, answer and delete dictionaries on the wire as Kamailio's rtpengine module sends
        them; the reply's SDP comes back as bytes."""
        engine, fake = client()
        d = engine.offer("c1@h", "F1", None, sdp(4000), SOURCE)
        _, offer = decode_message(fake.port.written[0][0])
        self.assertEqual(offer["command"], "offer")
        self.assertEqual(offer["replace"], ["origin", "session-connection"])
        self.assertEqual(offer["ICE"], "remove")
        self.assertEqual(offer["received-from"], ["IP4", "198.51.100.20"])
        self.assertEqual((offer["call-id"], offer["from-tag"]), ("c1@h", "F1"))
        self.assertNotIn("to-tag", offer)
        self.assertEqual(offer["sdp"], sdp(4000).decode())
        reply(engine, fake.port.written[0][0], result="ok", sdp="v=0\r\n")
        self.assertEqual(self.successResultOf(d), b"v=0\r\n")
        d = engine.answer("c1@h", "F1", "T9", sdp(6000), SOURCE)
        _, answer = decode_message(fake.port.written[1][0])
        self.assertEqual((answer["command"], answer["to-tag"]), ("answer", "T9"))
        reply(engine, fake.port.written[1][0], result="ok")  # no SDP: an error
        self.failureResultOf(d, RtpengineError)
        self.assertEqual([s["tags"] for s in engine.sessions()], [["F1"]])
        d = engine.delete("c1@h", "F1")
        _, delete = decode_message(fake.port.written[2][0])
        self.assertEqual(
            {k: delete[k] for k in ("command", "call-id", "from-tag")},
            {"command": "delete", "call-id": "c1@h", "from-tag": "F1"},
        )
        reply(engine, fake.port.written[2][0], result="ok")
        self.successResultOf(d)
        self.assertEqual(engine.sessions(), [])

    def test_ice_force_towards_a_side_whose_sdp_carried_ice(self) -> None:
        """The offer with ICE goes to a callee not heard yet: ICE=force (as the offerer
        speaks it); the answer goes to the caller, whose offer carried ICE: ICE=force; a
        re-offer from the callee (no ICE) towards the caller: ICE=force; the caller's
        re-offer towards the callee, known now not to speak ICE: remove."""
        engine, fake = client()
        ice = sdp(4000) + b"a=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"

        def sent(index: int) -> dict[str, Any]:
            return decode_message(fake.port.written[index][0])[1]

        engine.offer("c1@h", "F1", None, ice, SOURCE)
        engine.answer("c1@h", "F1", "T9", sdp(6000), SOURCE)
        engine.offer("c1@h", "T9", "F1", sdp(6000), SOURCE)
        engine.offer("c1@h", "F1", "T9", ice, SOURCE)
        self.assertEqual([sent(i)["ICE"] for i in range(4)], ["force", "force", "force", "remove"])
        self.assertEqual(sent(1)["replace"], ["origin", "session-connection"])
        engine.delete("c1@h")
        self.assertEqual(engine._ice, {})
        engine.offer("c2@h", "F1", None, sdp(4000), SOURCE)
        last = len(fake.port.written) - 1
        self.assertEqual(sent(last)["ICE"], "remove")  # a plain offerer: none to the callee

    def test_webrtc_profiles_are_chosen_per_side(self) -> None:
        """A browser over WSS calls a UDP phone: the offer towards the phone asks for plain
        RTP/AVP (no ICE, DTLS, SDES; RTCP demultiplexed); the answer towards the browser
        for DTLS-SRTP with AVPF, ICE and rtcp-mux.  The other way round the offer towards
        the browser offers rtcp-mux and names the address family."""
        engine, fake = client()

        def sent(index: int) -> dict[str, Any]:
            return decode_message(fake.port.written[index][0])[1]

        browser = Address("wss", "127.0.0.1", 40000)
        phone = Address("udp", "127.0.0.1", 5070)
        engine.offer(
            "w1", "B", None, WEBRTC_SDP.replace(b"{port}", b"40000"), browser, towards=phone
        )
        engine.answer("w1", "B", "P", sdp(6000), phone)
        to_phone, to_browser = sent(0), sent(1)
        self.assertEqual(to_phone["transport-protocol"], "RTP/AVP")
        self.assertEqual(
            (to_phone["ICE"], to_phone["DTLS"], to_phone["SDES"], to_phone["rtcp-mux"]),
            ("remove", "off", ["off"], ["demux"]),
        )
        self.assertEqual(to_browser["transport-protocol"], "UDP/TLS/RTP/SAVPF")
        self.assertEqual(
            (to_browser["ICE"], to_browser["DTLS"], to_browser["rtcp-mux"]),
            ("force", "active", ["accept"]),
        )
        self.assertEqual(to_phone["replace"], ["origin", "session-connection"])
        engine.offer("w2", "P", None, sdp(6000), phone, towards=browser)
        offer = sent(2)
        self.assertEqual(offer["transport-protocol"], "UDP/TLS/RTP/SAVPF")
        self.assertEqual((offer["rtcp-mux"], offer["address-family"]), (["offer"], "IP4"))
        engine.delete("w1")
        self.assertNotIn("w1", engine._webrtc)

    def test_plain_calls_keep_their_flags(self) -> None:
        """Two SIP phones: no profile flags are added (an SDES phone stays SDES)."""
        engine, fake = client()
        phone = Address("udp", "127.0.0.1", 5070)
        engine.offer("p1", "A", None, sdp(4000), SOURCE, towards=phone)
        message = decode_message(fake.port.written[0][0])[1]
        self.assertNotIn("transport-protocol", message)
        self.assertNotIn("DTLS", message)

    def test_stop_fails_pending_and_later_commands(self) -> None:
        """stopService errbacks what is pending and closes the socket."""
        engine, fake = client()
        d = engine.ping()
        self.successResultOf(engine.stopService())
        self.failureResultOf(d, RtpengineError)
        self.assertTrue(fake.port.stopped)
        self.assertEqual(fake.getDelayedCalls(), [])
        self.failureResultOf(engine.ping(), RtpengineError)

    def test_bad_settings(self) -> None:
        """A bad URL or retry policy is refused at construction."""
        self.assertRaises(ValueError, RtpengineClient, "ws://127.0.0.1:2223", reactor=Clock())
        self.assertRaises(ValueError, RtpengineClient, tries=0, reactor=Clock())


# -- a real rtpengine (pytest-twisted runs the reactor) -----------------------------------------

needs_rtpengine = pytest.mark.skipif(
    RTPENGINE is None,
    reason="rtpengine is not installed (scripts/install-test-deps installs rtpengine-daemon)",
)


@pytest.fixture
def rtpengine_port(tmp_path: Any) -> Iterator[int]:
    """A userspace rtpengine on 127.0.0.1 (its ng port); terminated by PID afterwards."""
    ng_port = free_port(socket.SOCK_DGRAM)
    media_min = (free_port(socket.SOCK_DGRAM) & ~1) % 20000 + 40000
    with rtpengine_daemon(tmp_path, ng_port, media_min):
        yield ng_port


@pytest.fixture
def rtpengine(rtpengine_port: int) -> Iterator[RtpengineClient]:
    """A started client of that daemon."""
    engine = RtpengineClient(
        f"udp:127.0.0.1:{rtpengine_port}", reactor=reactor, timeout=0.5, tries=3
    )
    engine.startService()
    yield engine
    pytest_twisted.blockon(engine.stopService())


class Endpoint(DatagramProtocol):
    noisy = False

    def __init__(self) -> None:
        self.queue: DeferredQueue[tuple[bytes, tuple[str, int]]] = DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        self.queue.put((datagram, (addr[0], addr[1])))

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        return await self.queue.get().addTimeout(5, reactor)


@pytest.fixture
def endpoints() -> Iterator[list[tuple[Endpoint, int]]]:
    """Two endpoints on 127.0.0.1 (protocol, port), closed afterwards."""
    made, ports = [], []
    for _ in range(2):
        endpoint = Endpoint()
        port = reactor.listenUDP(0, endpoint, interface="127.0.0.1")
        ports.append(port)
        made.append((endpoint, port.getHost().port))
    yield made
    for port in ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xBEEF) + b"\xd5" * 160


@needs_rtpengine
@pytest_twisted.ensureDeferred
async def test_real_offer_answer_rtp_both_ways_query_delete(
    rtpengine: RtpengineClient, endpoints: list[tuple[Endpoint, int]]
) -> None:
    """The rewritten SDPs name rtpengine's ports; RTP flows both ways; query sees the tags;
    delete ends the call."""
    (alice, alice_port), (bob, bob_port) = endpoints
    offer = await rtpengine.offer("call-1", "A", None, sdp(alice_port), SOURCE)
    answer = await rtpengine.answer("call-1", "A", "B", sdp(bob_port), SOURCE)
    [to_bob], [to_alice] = media_streams(offer), media_streams(answer)
    assert (to_bob.address, to_alice.address) == ("127.0.0.1", "127.0.0.1")
    assert to_bob.port not in (alice_port, bob_port)
    alice.transport.write(rtp(1), ("127.0.0.1", to_alice.port))
    assert await bob.receive() == (rtp(1), ("127.0.0.1", to_bob.port))
    bob.transport.write(rtp(2), ("127.0.0.1", to_bob.port))
    assert await alice.receive() == (rtp(2), ("127.0.0.1", to_alice.port))
    query = await rtpengine.query("call-1")
    assert query["result"] == "ok" and sorted(query["tags"]) == ["A", "B"]
    assert [s["call_id"] for s in rtpengine.sessions()] == ["call-1"]
    await rtpengine.delete("call-1", "A")
    assert rtpengine.sessions() == []
    with pytest.raises(RtpengineError):
        await rtpengine.query("call-1")


@needs_rtpengine
@pytest_twisted.ensureDeferred
async def test_real_errors_come_back_as_errbacks(rtpengine: RtpengineClient) -> None:
    """An answer for an unknown call and a body that is not SDP fail with the reason."""
    assert await rtpengine.ping() is None
    with pytest.raises(RtpengineError, match="Unknown call-id"):
        await rtpengine.answer("nope", "A", "B", sdp(4000), SOURCE)
    with pytest.raises(RtpengineError):
        await rtpengine.offer("bad", "A", None, b"hello", SOURCE)


@needs_rtpengine
@pytest_twisted.ensureDeferred
async def test_real_ice_forced_only_towards_the_ice_side(
    rtpengine: RtpengineClient, endpoints: list[tuple[Endpoint, int]]
) -> None:
    """Alice offers ICE: rtpengine offers its own ICE to Bob (not heard yet; Alice's
    credentials never pass); Bob answers without: the answer to Alice has ICE
    (ICE=force)."""
    (_, alice_port), (_, bob_port) = endpoints
    ice = (
        sdp(alice_port)
        + b"a=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
        + f"a=candidate:1 1 UDP 2130706431 127.0.0.1 {alice_port} typ host\r\n".encode()
    )
    offer = await rtpengine.offer("call-ice", "A", None, ice, SOURCE)
    answer = await rtpengine.answer("call-ice", "A", "B", sdp(bob_port), SOURCE)
    assert b"a=ice-ufrag" in offer and b"F7gI" not in offer
    assert b"a=ice-ufrag" in answer and b"a=candidate" in answer
    assert b"F7gI" not in answer
    await rtpengine.delete("call-ice", "A")


@needs_rtpengine
@pytest_twisted.ensureDeferred
async def test_real_webrtc_to_plain_rtp(
    rtpengine: RtpengineClient, endpoints: list[tuple[Endpoint, int]]
) -> None:
    """A browser's DTLS-SRTP offer over WSS reaches the phone as plain RTP/AVP without ICE
    or fingerprint; the phone's answer reaches the browser as UDP/TLS/RTP/SAVPF with ICE,
    rtpengine's own fingerprint and rtcp-mux."""
    (_, browser_port), (_, phone_port) = endpoints
    browser = Address("wss", "127.0.0.1", 40000)
    phone = Address("udp", "127.0.0.1", phone_port)
    offer = await rtpengine.offer(
        "call-webrtc",
        "B",
        None,
        WEBRTC_SDP.replace(b"{port}", str(browser_port).encode()),
        browser,
        towards=phone,
    )
    assert b" RTP/AVP " in offer and b"a=fingerprint" not in offer
    assert b"a=ice-ufrag" not in offer and b"a=rtcp-mux" not in offer
    answer = await rtpengine.answer("call-webrtc", "B", "P", sdp(phone_port), phone)
    assert b"UDP/TLS/RTP/SAVPF" in answer and b"a=fingerprint" in answer
    assert b"a=ice-ufrag" in answer and b"a=rtcp-mux" in answer
    await rtpengine.delete("call-webrtc", "B")
