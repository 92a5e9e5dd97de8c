"""
System test for HEP capture ([siptrace]): a call with anchored media goes through a running
sbc while a collector socket receives its HEP3 stream; the datagrams are written to a pcap
file and decoded by tshark (with tests/system/hep3.lua: Wireshark 4.0 has no HEP dissector
of its own).  The INVITE, its 200 and the BYE are there with the addresses they really
travelled between, and the SIP inside each is byte for byte what crossed the wire; an RTCP
report the caller sent to the relay arrives with the call's Call-ID as correlation id.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import time

import pytest

from sbc.core.message import Request, Response, parse
from sbc.core.reply import make_response
from tests.helpers import free_port
from tests.system.harness import SbcProcess
from tests.system.test_manhole import register

pytestmark = pytest.mark.system

LUA = os.path.join(os.path.dirname(__file__), "hep3.lua")
CALL_ID = "hep-call-1@127.0.0.1"
CAPTURE_ID = 2345


def require_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        message = "tshark is not installed (Debian package tshark; scripts/install-test-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def sdp(port: int) -> bytes:
    return (
        "v=0\r\no=ua 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


class Endpoint:
    """A UDP SIP endpoint that keeps every datagram it sent and received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.address = self.sock.getsockname()
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sent.append(data)
        self.sock.sendto(data, to)

    def expect(self, want) -> Request | Response:  # type: ignore[no-untyped-def]
        """The next message C{want(message)} accepts (others are kept but skipped)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data, _ = self.sock.recvfrom(65535)
            self.received.append(data)
            message = parse(data)
            if want(message):
                return message  # type: ignore[return-value]
        raise AssertionError("expected message did not come")


def request(method: str, uri: str, caller: Endpoint, cseq: int, extra: str = "", body=b"") -> bytes:  # type: ignore[no-untyped-def]
    host, port = caller.address
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{method.lower()}{cseq};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@sbc.test>;tag=a1\r\n"
        f"{extra}Call-ID: {CALL_ID}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:alice@{host}:{port}>\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def pcap(datagrams: list[tuple[float, bytes, tuple[str, int], tuple[str, int]]]) -> bytes:
    """A pcap file (LINKTYPE_RAW: IPv4 + UDP) of the captured HEP datagrams."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for when, payload, source, destination in datagrams:
        udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
            socket.inet_aton(source[0]), socket.inet_aton(destination[0]),
        )  # fmt: skip
        total = sum(struct.unpack("!10H", header))
        total = (total & 0xFFFF) + (total >> 16)
        checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
        packet = header[:10] + struct.pack("!H", checksum) + header[12:] + udp
        seconds = int(when)
        out.append(
            struct.pack("<IIII", seconds, int((when - seconds) * 1e6), len(packet), len(packet))
        )
        out.append(packet)
    return b"".join(out)


FIELDS = (
    "hep3.src_ip", "hep3.src_port", "hep3.dst_ip", "hep3.dst_port", "hep3.proto_type",
    "hep3.capture_id", "hep3.correlation_id", "hep3.payload", "sip.Method", "sip.Status-Code",
    "sip.CSeq.method",
)  # fmt: skip


def decode_with_tshark(tshark: str, path: str, port: int) -> list[dict[str, str]]:
    result = subprocess.run(
        [tshark, "-n", "-r", path, "-X", f"lua_script:{LUA}", "-T", "fields",
         "-E", "separator=|", "-E", "occurrence=f", *[a for f in FIELDS for a in ("-e", f)]],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HEP_PORT": str(port)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [
        dict(zip(FIELDS, line.split("|"), strict=True))
        for line in result.stdout.splitlines()
        if line
    ]


def test_hep_capture_decoded_by_tshark(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """INVITE, 200 and BYE decoded from the capture, payloads equal to the wire bytes and
    addresses right; an RTCP receiver report correlated with the Call-ID."""
    tshark = require_tshark()
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(0.5)
    hep_port = collector.getsockname()[1]
    sip = free_port()
    rtp = random.randrange(42000, 48000, 100)
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{sip}\nalias = sbc.test\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
        f"[rtp]\nrtp_policy = always\nport_min = {rtp}\nport_max = {rtp + 99}\n"
        f"[siptrace]\nduplicate_uri = sip:127.0.0.1:{hep_port}\nhep_capture_id = {CAPTURE_ID}\n"
        "[acc]\nlog_file = acc.json\n"
    )
    sbc_address = ("127.0.0.1", sip)
    caller, callee = Endpoint(), Endpoint()
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp.bind(("127.0.0.1", 0))
    rtcp_address = rtcp.getsockname()
    try:
        with SbcProcess(str(config)) as sbc:
            sbc.wait_for("listening on ")
            register(sip, "bob", callee.address[1])
            invite = request(
                "INVITE", "sip:bob@sbc.test", caller, 1, "To: <sip:bob@sbc.test>\r\n", sdp(40000)
            )  # noqa: E501
            caller.send(invite, sbc_address)
            relayed = callee.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
            assert isinstance(relayed, Request)
            ok = make_response(
                relayed, 200,
                headers=[("Record-Route", str(rr)) for rr in relayed.record_routes]
                + [("Contact", f"<sip:bob@127.0.0.1:{callee.address[1]}>")],
                body=sdp(40010), content_type="application/sdp",
            )  # fmt: skip
            callee.send(ok.to_bytes(), sbc_address)
            answer = caller.expect(lambda m: isinstance(m, Response) and m.status == 200)
            assert isinstance(answer, Response)
            to = f"To: {answer.get('to')}\r\n"
            routes = "".join(f"Route: {r}\r\n" for r in reversed(answer.record_routes))
            contact = str(answer.contacts[0].uri)
            caller.send(request("ACK", contact, caller, 1, to + routes), sbc_address)
            relay_host, relay_port = parse_media(answer.body)
            report = struct.pack("!BBHI", 0x81, 201, 7, 0xA1) + struct.pack(
                "!IIIIII", 0xB2, (25 << 24) | 4, 77, 12, 0, 0
            )
            caller.sock.sendto(
                b"\x80\x00\x00\x01" + b"\x00" * 8 + b"x" * 160, (relay_host, relay_port)
            )
            rtcp.sendto(report, (relay_host, relay_port + 1))
            time.sleep(0.3)
            bye = request("BYE", contact, caller, 2, to + routes)
            caller.send(bye, sbc_address)
            got_bye = callee.expect(lambda m: isinstance(m, Request) and m.method == "BYE")
            callee.send(make_response(got_bye, 200).to_bytes(), sbc_address)  # type: ignore[arg-type]
            caller.expect(lambda m: isinstance(m, Response) and m.cseq.method == "BYE")
            time.sleep(0.5)
            sbc.assert_clean_stop()
        datagrams = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data, source = collector.recvfrom(65535)
            except TimeoutError:
                break
            datagrams.append((time.time(), data, source, ("127.0.0.1", hep_port)))
    finally:
        collector.close()
        rtcp.close()
        caller.sock.close()
        callee.sock.close()
    path = tmp_path / "hep.pcap"
    path.write_bytes(pcap(datagrams))
    rows = decode_with_tshark(tshark, str(path), hep_port)
    assert rows and all(r["hep3.capture_id"] == str(CAPTURE_ID) for r in rows)

    def find(**match: str) -> list[dict[str, str]]:
        return [r for r in rows if all(r[k] == v for k, v in match.items())]

    def payload(row: dict[str, str]) -> bytes:
        return bytes.fromhex(row["hep3.payload"].replace(":", ""))

    def addresses(row: dict[str, str]) -> tuple[tuple[str, int], tuple[str, int]]:
        return (
            (row["hep3.src_ip"], int(row["hep3.src_port"])),
            (row["hep3.dst_ip"], int(row["hep3.dst_port"])),
        )

    # The INVITE as the caller sent it, received by sbc from the caller's address.
    [invite_in] = [r for r in find(**{"sip.Method": "INVITE"}) if payload(r) == invite]
    assert addresses(invite_in) == (caller.address, sbc_address)
    # The INVITE sbc relayed, as the callee received it.
    [invite_out] = [r for r in find(**{"sip.Method": "INVITE"}) if payload(r) in callee.received]
    assert addresses(invite_out) == (sbc_address, callee.address)
    # The 200 to the INVITE that reached the caller, and the BYE in both directions.
    oks = [r for r in find(**{"sip.Status-Code": "200", "sip.CSeq.method": "INVITE"})]
    [ok_out] = [r for r in oks if payload(r) in caller.received]
    assert addresses(ok_out) == (sbc_address, caller.address)
    [ok_in] = [r for r in oks if payload(r) == ok.to_bytes()]
    assert addresses(ok_in) == (callee.address, sbc_address)
    [bye_in] = [r for r in find(**{"sip.Method": "BYE"}) if payload(r) == bye]
    assert addresses(bye_in) == (caller.address, sbc_address)
    [bye_out] = [r for r in find(**{"sip.Method": "BYE"}) if payload(r) in callee.received]
    assert addresses(bye_out) == (sbc_address, callee.address)
    # RTCP: Homer's JSON report, correlated with the call, from the caller's RTCP socket.
    [report_row] = find(**{"hep3.proto_type": "5"})
    assert report_row["hep3.correlation_id"] == CALL_ID
    assert addresses(report_row) == (rtcp_address, (relay_host, relay_port + 1))
    decoded = json.loads(payload(report_row))
    assert decoded["type"] == 201 and decoded["report_blocks"][0]["packets_lost"] == 4
    assert decoded["report_blocks"][0]["fraction_lost"] == 25
    # The call's record ([acc]) has the relay's per-leg counters as they were at the BYE.
    [record] = [json.loads(line) for line in (tmp_path / "acc.json").read_text().splitlines()]
    assert record["call_id"] == CALL_ID and record["hung_up"] == "caller"
    legs = {leg["side"]: leg for leg in record["legs"]}
    # one RTP packet (172 bytes) and the RTCP report (32 bytes) from the caller
    assert (legs["caller"]["packets"], legs["caller"]["bytes"]) == (2, 204), legs
    assert legs["callee"]["packets"] == 0, legs


def parse_media(body: bytes) -> tuple[str, int]:
    text = body.decode()
    host = next(line[9:] for line in text.split("\r\n") if line.startswith("c=IN IP4 "))
    port = next(int(line.split()[1]) for line in text.split("\r\n") if line.startswith("m=audio"))
    return host.strip(), port


def test_hep_capture_over_tcp_has_both_real_ends(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An OPTIONS over TCP and sbc's 200: both captured as TCP (IP protocol 6) with the
    client's and sbc's real addresses, payloads as on the wire."""
    from sbc.core.hep import decode
    from tests.helpers import request_bytes

    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(2)
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = tcp:127.0.0.1:{port}\nalias = sbc.test\n"
        f"[siptrace]\nduplicate_uri = udp:127.0.0.1:{collector.getsockname()[1]}\n"
    )
    try:
        with SbcProcess(str(config)) as sbc:
            sbc.wait_for("listening on ")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                here = client.getsockname()
                options = request_bytes(
                    uri=f"sip:127.0.0.1:{port}",
                    via=f"SIP/2.0/TCP {here[0]}:{here[1]};branch=z9hG4bKtcp",
                )
                client.sendall(options)
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += client.recv(4096)
            packets = [decode(collector.recvfrom(65535)[0]) for _ in range(2)]
            sbc.assert_clean_stop()
    finally:
        collector.close()
    received, sent = packets
    assert (received.transport, received.source, received.destination) == (
        "tcp", here, ("127.0.0.1", port),
    )  # fmt: skip
    assert received.payload == options
    assert (sent.transport, sent.source, sent.destination) == ("tcp", ("127.0.0.1", port), here)
    assert sent.payload == answer and answer.startswith(b"SIP/2.0 200")
