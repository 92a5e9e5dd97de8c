"""
System tests for STUN on the SIP port (RFC 5389, like Kamailio's stun module): Debian's stun client,
run on a phone behind a real NAT (cone and symmetric), learns the NAT's public address and port from
sbc's SIP port, while SIP keeps flowing on the same socket.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.system.harness import SCENARIOS, SbcProcess, run_sipp, sipp_summary
from tests.system.netns import PRIVATE_UA_IP, ROUTER_PUBLIC_IP, SBC_IP, NatLab

pytestmark = pytest.mark.system

SBC = f"{SBC_IP}:5060"


def stun_client(lab: NatLab) -> tuple[str, int]:
    """Run the stun client's first test (a Binding request) in the private namespace."""
    out = subprocess.run(
        [*lab.prefix(lab.priv), "stun", SBC, "1", "-v"], capture_output=True, text=True, timeout=20
    )
    text = out.stdout + out.stderr
    found = re.search(r"MappedAddress = ([\d.]+):(\d+)", text)
    assert found, text
    return found.group(1), int(found.group(2))


def test_stun_client_learns_the_public_address_while_sip_flows(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The mapped address is the NAT's public address, not the phone's; OPTIONS on the
    same socket are answered throughout."""
    if shutil.which("stun") is None:
        pytest.skip("the stun client is not installed (Debian package stun-client)")
    config = tmp_path / "sbc.ini"
    config.write_text(f"[core]\nlisten = udp:{SBC} tcp:{SBC}\nalias = sbc.test\n")
    with SbcProcess(str(config), prefix=tuple(lab.prefix(lab.pub))) as sbc:
        sbc.wait_for("listening on ", count=2)
        sip = subprocess.Popen(
            [
                *lab.prefix(lab.priv),
                "sipp",
                "-sf",
                f"{SCENARIOS}/options.xml",
                "-i",
                PRIVATE_UA_IP,
                "-m",
                "30",
                "-r",
                "10",
                "-nostdin",
                "-timeout",
                "30s",
                "-timeout_error",
                SBC,
            ],
            cwd=str(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            seen = [stun_client(lab) for _ in range(5)]
        finally:
            out, _ = sip.communicate(timeout=40)
        assert sip.returncode == 0, out[-2000:]
        for host, port in seen:
            assert host == ROUTER_PUBLIC_IP and port > 0
        result = run_sipp(
            "options.xml",
            SBC,
            "u1",
            local_ip=PRIVATE_UA_IP,
            cwd=str(tmp_path),
            prefix=tuple(lab.prefix(lab.priv)),
        )
        assert result.returncode == 0, sipp_summary(result)
        sbc.assert_clean_stop()
        stats = sbc.statistics()
    assert stats["stun_responses"] >= 5, stats
    assert stats.get("bad_msg_hdr", 0) == 0, stats
