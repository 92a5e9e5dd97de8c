"""
System test for flood protection (like Kamailio pike): one source floods sbc with 20 000 requests
while another places calls; the calls complete (under 1 % failures) and the flood sees 503s.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time

import pytest

from tests.helpers import free_port, request_bytes
from tests.system.harness import SCENARIOS, SbcProcess, require_sipp, run_sipp, sipp_summary

pytestmark = pytest.mark.system

FLOOD = 20_000
FLOOD_RATE = 2_000  # requests per second: well above the density, bounded in count and time
CALLS = 100


def flood(port: int, result: dict) -> None:
    """Send FLOOD OPTIONS from 127.0.0.2 at FLOOD_RATE/s; count the 503s that come back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    local = sock.getsockname()[1]
    answers = 0
    started = time.monotonic()
    try:
        for i in range(FLOOD):
            data = request_bytes(
                uri=f"sip:127.0.0.1:{port}",
                call_id=f"flood-{i}",
                via=f"SIP/2.0/UDP 127.0.0.2:{local};branch=z9hG4bKf{i}",
            )
            sock.sendto(data, ("127.0.0.1", port))
            if i % 100 == 99:
                while True:
                    try:
                        answers += sock.recv(65535).startswith(b"SIP/2.0 503")
                    except BlockingIOError:
                        break
                ahead = (i + 1) / FLOOD_RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                if time.monotonic() - started > 60:
                    break
    finally:
        sock.close()
    result["503"] = answers


def cumulative(output: str, label: str) -> int:
    m = re.search(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", output)
    return int(m.group(1)) if m else -1


def test_flood_from_one_source_spares_the_others(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Calls from 127.0.0.1 complete while 127.0.0.2 floods; the flood gets 503s."""
    require_sipp()
    port = free_port()
    uas_port = free_port(socket.SOCK_DGRAM)
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
        "[pike]\nsampling_time_unit = 2\nreqs_density_per_unit = 300\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
    )
    with SbcProcess(str(config)) as sbc:
        sbc.wait_for("listening on ")
        registered = run_sipp(
            "register.xml",
            f"127.0.0.1:{port}",
            "u1",
            local_ip="127.0.0.1",
            cwd=str(tmp_path),
            extra=("-s", "alice", "-key", "contact_port", str(uas_port)),
        )
        assert registered.returncode == 0, sipp_summary(registered)
        (tmp_path / "uas").mkdir()
        uas = subprocess.Popen(
            [
                "sipp",
                "-sf",
                f"{SCENARIOS}/uas_answer.xml",
                "-i",
                "127.0.0.1",
                "-p",
                str(uas_port),
                "-m",
                str(CALLS),
                "-nostdin",
                "-timeout",
                "90s",
            ],
            cwd=str(tmp_path / "uas"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result: dict = {}
        flooder = threading.Thread(target=flood, args=(port, result))
        try:
            flooder.start()
            calls = run_sipp(
                "uac_call.xml",
                f"127.0.0.1:{port}",
                "u1",
                local_ip="127.0.0.1",
                cwd=str(tmp_path),
                calls=CALLS,
                timeout=90,
                extra=("-s", "alice", "-r", "10"),
            )
        finally:
            flooder.join(90)
            uas.wait(60)
        done = cumulative(calls.stdout, "Successful call")
        failed = cumulative(calls.stdout, "Failed call")
        assert done + failed == CALLS and failed <= CALLS // 100, sipp_summary(calls)
        sbc.assert_clean_stop()
        stats = sbc.statistics()
    assert result["503"] > 100, result
    assert stats["pike_limited"] > 100 and stats["pike_dropped"] > 1000, stats
