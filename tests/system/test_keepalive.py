"""
System tests for the keepalive engine through a real NAT whose UDP bindings expire after a few
seconds (a short conntrack UDP timeout): a phone registered from behind the NAT stays reachable for
an inbound call after idling several timeouts long, with 4-byte, OPTIONS and NOTIFY pings; without
keepalives the same call fails (control); and after a restart of sbc the saved state brings both the
registration and the keepalives back.  On loopback, a UDP socket registers and receives the OPTIONS
ping addressed to the contact it registered.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Optional

import pytest

from sbc.core.message import Request, parse
from sbc.core.reply import make_response
from tests.helpers import ROOT, free_port, request_bytes
from tests.system.harness import SbcProcess, run_sipp, sipp_summary
from tests.system.netns import (
    PUBLIC_UA_IP,
    SBC,
    SHARED_CALL_ID,
    NatLab,
    finish,
    nat_phone,
)

pytestmark = pytest.mark.system

CONNTRACK_TIMEOUT = 4
IDLE = 3 * CONNTRACK_TIMEOUT
RECIPES = os.path.join(ROOT, "etc", "routes_nat_recipes.py")
SIP_PING = "natping_method = sip\nsipping_from = sip:pinger@sbc.test\nsipping_method = "
PINGS = {
    "udp4": "natping_method = udp4\n",
    "OPTIONS": SIP_PING + "OPTIONS\n",
    "NOTIFY": SIP_PING + "NOTIFY\n",
}


@pytest.fixture(params=["cone", "symmetric"])
def short_lab(request):  # type: ignore[no-untyped-def]
    """The NAT lab with UDP bindings that expire after CONNTRACK_TIMEOUT seconds."""
    NatLab.check()
    with NatLab(symmetric=request.param == "symmetric", udp_timeout=CONNTRACK_TIMEOUT) as lab:
        yield lab


def config(tmp_path, ping: Optional[str], state_file: str = "", script: str = "") -> str:  # type: ignore[no-untyped-def]
    text = f"[core]\nlisten = udp:{SBC}\nalias = sbc.test\n"
    if script:
        text += f"route_script = {script}\n"
    text += "[tm]\nfr_timer = 3000\n"
    if ping is not None:
        text += "[nathelper]\nnatping_interval = 1\n" + PINGS[ping]
    if state_file:
        text += f"[nat_traversal]\nkeepalive_state_file = {state_file}\n"
    path = tmp_path / "sbc.ini"
    path.write_text(text)
    return str(path)


def phone(lab: NatLab, tmp_path) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    """The phone behind NAT: registers, answers pings (-aa), then waits for a call."""
    return nat_phone(
        lab, tmp_path / "phone", "nat_ua_answer.xml", timeout=IDLE + 40, extra=("-aa",)
    )


def call(lab: NatLab, tmp_path, scenario: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return run_sipp(
        scenario,
        SBC,
        "u1",
        local_ip=PUBLIC_UA_IP,
        cwd=str(tmp_path),
        extra=("-s", "alice", *SHARED_CALL_ID),
        prefix=tuple(lab.prefix(lab.pub)),
    )


@pytest.mark.parametrize(
    "ping, script",
    [("udp4", ""), ("OPTIONS", ""), ("NOTIFY", ""), ("udp4", RECIPES)],
    ids=["udp4", "OPTIONS", "NOTIFY", "udp4-recipes-script"],
)
def test_idle_phone_stays_reachable_with_keepalives(
    short_lab, tmp_path, ping: str, script: str
) -> None:  # type: ignore[no-untyped-def]
    """After idling three NAT timeouts, the inbound call still reaches the phone (also
    with the NAT-recipes routing script, whose nat_keepalive() asks for the pings)."""
    path = config(tmp_path, ping, script=script)
    with SbcProcess(path, prefix=tuple(short_lab.prefix(short_lab.pub))) as sbc:
        sbc.wait_for("listening on ")
        ua = phone(short_lab, tmp_path)
        try:
            time.sleep(IDLE)
            result = call(short_lab, tmp_path, "uac_call.xml")
            assert result.returncode == 0, sipp_summary(result)
        finally:
            code, out = finish(ua)
        assert code == 0, out
        sbc.assert_clean_stop()
        stats = sbc.statistics()
    assert stats["keepalive_pings_sent"] >= IDLE - 2, stats
    if ping != "udp4":
        assert stats["keepalive_replies"] >= IDLE - 4, stats  # consumed, never routed
        assert stats.get("drop_replies", 0) == 0, stats


def test_control_without_keepalives_the_binding_expires(short_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same idle phone without keepalives is unreachable: the caller gets 408."""
    with SbcProcess(config(tmp_path, None), prefix=tuple(short_lab.prefix(short_lab.pub))) as sbc:
        sbc.wait_for("listening on ")
        ua = phone(short_lab, tmp_path)
        try:
            time.sleep(IDLE)
            result = call(short_lab, tmp_path, "uac_timeout.xml")
            assert result.returncode == 0, sipp_summary(result)
        finally:
            ua.kill()
            finish(ua, timeout=10)
        sbc.assert_clean_stop()


def test_restart_keeps_registrations_and_keepalives(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM saves the state; the restarted sbc pings within one interval and the call
    still reaches the phone after a long idle."""
    NatLab.check()
    state = tmp_path / "keepalive.state"
    with NatLab(udp_timeout=CONNTRACK_TIMEOUT) as lab:
        path = config(tmp_path, "OPTIONS", str(state))
        pub = tuple(lab.prefix(lab.pub))
        ua = phone(lab, tmp_path)
        try:
            with SbcProcess(path, prefix=pub) as first:
                first.wait_for("listening on ")
                time.sleep(2)
                first.assert_clean_stop()
            assert "sip:alice@10.0.0.10:5070" in state.read_text()
            with SbcProcess(path, prefix=pub) as second:
                second.wait_for(r"restored 1 keepalive endpoint\(s\) and 1 registration\(s\)")
                time.sleep(IDLE)
                result = call(lab, tmp_path, "uac_call.xml")
                assert result.returncode == 0, sipp_summary(result) + "\n".join(second.lines[-20:])
                second.assert_clean_stop()
        finally:
            code, out = finish(ua)
        assert code == 0, out


def test_sip_ping_goes_to_the_nat_address_addressed_to_the_contact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """nathelper's sipping on loopback: a socket registers a contact that is not its own
    address (as a phone behind NAT does); the OPTIONS ping reaches the socket with the
    contact as Request-URI and To, and the phone's 404 still counts as an answer."""
    port = free_port(socket.SOCK_DGRAM)
    path = tmp_path / "sbc.ini"
    path.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
        "[nathelper]\nnatping_interval = 1\n" + PINGS["OPTIONS"]
    )
    contact = "sip:alice@10.0.0.10:5070"
    with SbcProcess(str(path)) as sbc, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        sbc.wait_for("listening on ")
        ua.bind(("127.0.0.1", 0))
        ua.settimeout(5)
        data = request_bytes(
            "REGISTER",
            "sip:sbc.test",
            via="SIP/2.0/UDP 10.0.0.10:5070;branch=z9hG4bKka;rport",
            headers=[("Contact", f"<{contact}>"), ("Expires", "300")],
        ).replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")
        ua.sendto(data, ("127.0.0.1", port))
        assert ua.recv(65535).startswith(b"SIP/2.0 200")
        ping, source = ua.recvfrom(65535)
        request = parse(ping)
        assert isinstance(request, Request) and request.method == "OPTIONS", ping
        assert str(request.uri) == str(request.to.uri) == contact
        assert source == ("127.0.0.1", port)
        ua.sendto(make_response(request, 404).to_bytes(), source)
        time.sleep(1.5)
        sbc.assert_clean_stop()
        stats = sbc.statistics()
    assert stats["keepalive_replies"] >= 1 and stats.get("drop_replies", 0) == 0, stats
