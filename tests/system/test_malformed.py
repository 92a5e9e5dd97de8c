"""
System test: thousands of malformed datagrams and a TCP stream of garbage do not bring sbc
down; it counts them, answers 400 where it can, and still answers OPTIONS.
"""

from __future__ import annotations

import random
import socket
import time

import pytest

from tests.helpers import free_port, request_bytes, rfc4475, rfc4475_cases
from tests.system.harness import SbcProcess, run_sipp, sipp_summary

pytestmark = pytest.mark.system

DATAGRAMS = 3000


def malformed_datagrams(rng: random.Random, count: int) -> list[bytes]:
    """A bounded mix: RFC 4475 invalid messages, random bytes, truncated and corrupted
    requests, oversized messages."""
    invalid = [rfc4475(name) for name, verdict in rfc4475_cases() if verdict == "invalid"]
    good = request_bytes(method="INVITE", body=b"v=0\r\n" * 20)
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            out.append(invalid[i % len(invalid)])
        elif kind == 1:
            out.append(rng.randbytes(rng.randint(5, 600)))
        elif kind == 2:
            out.append(good[: rng.randint(10, len(good) - 1)])
        elif kind == 3:
            at = rng.randrange(len(good))
            out.append(good[:at] + rng.randbytes(3) + good[at + 3 :])
        else:
            out.append(request_bytes(body=b"x" * 5000))  # over max_message_size
    return out


def test_flood_of_malformed_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """sbc survives a malformed flood on UDP and TCP, counts it, and keeps serving."""
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port} tcp:127.0.0.1:{port}\nmax_message_size = 4096\n"
    )
    rng = random.Random(4475)
    with SbcProcess(str(config)) as sbc:
        sbc.wait_for(r"listening on ", count=2)

        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        udp.setblocking(False)
        replies = 0
        deadline = time.monotonic() + 60
        try:
            for i, datagram in enumerate(malformed_datagrams(rng, DATAGRAMS)):
                udp.sendto(datagram, ("127.0.0.1", port))
                if i % 50 == 49:
                    time.sleep(0.01)  # stay below the socket buffer, not a rate test
                    assert time.monotonic() < deadline
            time.sleep(0.5)
            while True:
                try:
                    data = udp.recv(65535)
                except BlockingIOError:
                    break
                assert data.startswith(b"SIP/2.0 ")
                replies += 1
        finally:
            udp.close()

        # A TCP stream of garbage: the connection is closed, nothing else happens.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as garbage:
            try:
                for _ in range(20):
                    garbage.sendall(rng.randbytes(1000))
                garbage.settimeout(10)
                assert garbage.recv(65535) == b""
            except (ConnectionResetError, BrokenPipeError):
                pass
        # Framed but malformed requests on TCP get 400 and the connection keeps serving.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as tcp:
            tcp.sendall(rfc4475("mismatch01") + request_bytes(uri=f"sip:127.0.0.1:{port}"))
            received = b""
            while received.count(b"\r\n\r\n") < 2:
                chunk = tcp.recv(65535)
                assert chunk, received
                received += chunk
            assert received.startswith(b"SIP/2.0 400 ")
            assert b"SIP/2.0 200 OK" in received

        assert sbc.alive
        result = run_sipp(
            "options.xml", f"127.0.0.1:{port}", "u1", local_ip="127.0.0.1", cwd=str(tmp_path)
        )
        assert result.returncode == 0, sipp_summary(result)
        sbc.assert_clean_stop()
        stats = sbc.statistics()

    # Every datagram was received and counted (UDP on loopback may drop a few under load);
    # most are malformed (a corrupted body or header value can still be a valid request).
    assert stats["udp_received"] >= DATAGRAMS * 0.95, stats
    assert stats["udp_malformed"] >= DATAGRAMS * 0.8, stats
    assert stats["tcp_malformed"] >= 2, stats
    assert replies >= DATAGRAMS * 0.2, (replies, stats)
    assert stats.get("internal_errors", 0) == 0, stats
