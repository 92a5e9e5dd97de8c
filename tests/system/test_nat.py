"""
System tests through a real NAT: SIPp phones in a private namespace behind an
iptables MASQUERADE router (cone, and symmetric with --random-fully), sbc and a public
SIPp UA on the public side.  A phone behind NAT registers its private Contact (UDP and TCP)
and is called; it hangs up or is hung up on; it calls a public UA that hangs up on it.
The control test switches NAT fixing off and shows the inbound call failing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT
from tests.system.harness import SbcProcess, run_sipp, sipp_command, sipp_summary
from tests.system.netns import (
    PRIVATE_UA_IP,
    PUBLIC_UA_IP,
    SBC,
    SBC_IP,
    SHARED_CALL_ID,
    NatLab,
    finish,
    nat_phone,
)

pytestmark = pytest.mark.system


#: The routing script (Python, KEMI style) with Kamailio's classic NAT recipes: every test
#: but the control runs with sbc's own policy and with that script, unchanged.
RECIPES = os.path.join(ROOT, "etc", "routes_nat_recipes.py")


@pytest.fixture(params=["builtin", "recipes"])
def policy(request) -> str:  # type: ignore[no-untyped-def]
    """The [core] route_script line: none (sbc's own policy) or the NAT-recipes script."""
    return f"route_script = {RECIPES}\n" if request.param == "recipes" else ""


def start_sbc(lab: NatLab, tmp_path, nat_fixing: bool = True, policy: str = "") -> SbcProcess:  # type: ignore[no-untyped-def]
    config = tmp_path / "sbc.ini"
    text = (
        f"[core]\nlisten = udp:{SBC} tcp:{SBC}\nalias = sbc.test\n{policy}"
        "[tm]\nfr_timer = 3000\nfr_inv_timer = 5000\n"
    )
    if not nat_fixing:
        text += "[nat]\ncontact_fix = off\nregister_fix = off\n"
    config.write_text(text)
    return SbcProcess(str(config), prefix=tuple(lab.prefix(lab.pub)))


def phone(
    lab: NatLab,
    tmp_path,
    scenario: str,
    transport: str = "u1",  # type: ignore[no-untyped-def]
    timeout: float = 30.0,
) -> subprocess.Popen:
    """The phone behind NAT, registering with sbc and then answering."""
    return nat_phone(lab, tmp_path / f"phone-{scenario}-{transport}", scenario, transport, timeout)


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_public_caller_reaches_the_phone_behind_nat(lab, tmp_path, policy, transport: str) -> None:  # type: ignore[no-untyped-def]
    """REGISTER with a private Contact, then a public call in: full call, caller hangs up."""
    with start_sbc(lab, tmp_path, policy=policy) as sbc:
        sbc.wait_for("listening on ", count=2)
        ua = phone(lab, tmp_path, "nat_ua_answer.xml", transport)
        try:
            time.sleep(1.5)
            result = run_sipp(
                "uac_call.xml",
                SBC,
                "u1",
                local_ip=PUBLIC_UA_IP,
                cwd=str(tmp_path),
                extra=("-s", "alice", *SHARED_CALL_ID),
                prefix=tuple(lab.prefix(lab.pub)),
            )
            assert result.returncode == 0, sipp_summary(result) + "\n".join(sbc.lines[-20:])
        finally:
            code, out = finish(ua)
        assert code == 0, out
        sbc.assert_clean_stop()


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_phone_behind_nat_hangs_up(lab, tmp_path, policy, transport: str) -> None:  # type: ignore[no-untyped-def]
    """The NATed callee's BYE reaches the public caller."""
    with start_sbc(lab, tmp_path, policy=policy) as sbc:
        sbc.wait_for("listening on ", count=2)
        ua = phone(lab, tmp_path, "nat_ua_answer_bye.xml", transport)
        try:
            time.sleep(1.5)
            result = run_sipp(
                "uac_call_wait_bye.xml",
                SBC,
                "u1",
                local_ip=PUBLIC_UA_IP,
                cwd=str(tmp_path),
                extra=("-s", "alice", *SHARED_CALL_ID),
                prefix=tuple(lab.prefix(lab.pub)),
            )
            assert result.returncode == 0, sipp_summary(result)
        finally:
            code, out = finish(ua)
        assert code == 0, out
        sbc.assert_clean_stop()


def test_phone_behind_nat_calls_out_and_is_hung_up_on(lab, tmp_path, policy) -> None:  # type: ignore[no-untyped-def]
    """The NATed phone calls a public UA; the public side's BYE reaches the phone."""
    with start_sbc(lab, tmp_path, policy=policy) as sbc:
        sbc.wait_for("listening on ", count=2)
        pub = tuple(lab.prefix(lab.pub))
        registered = run_sipp(
            "register.xml",
            SBC,
            "u1",
            local_ip=PUBLIC_UA_IP,
            cwd=str(tmp_path),
            extra=("-s", "bob", "-key", "contact_port", "5080"),
            prefix=pub,
        )
        assert registered.returncode == 0, sipp_summary(registered)
        (tmp_path / "uas").mkdir()
        uas = subprocess.Popen(
            sipp_command(
                "uas_answer_bye.xml",
                None,
                "u1",
                local_ip=PUBLIC_UA_IP,
                extra=("-s", "bob", "-p", "5080"),
                prefix=pub,
            ),
            cwd=str(tmp_path / "uas"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            time.sleep(0.5)
            result = run_sipp(
                "uac_call_wait_bye.xml",
                SBC,
                "u1",
                local_ip=PRIVATE_UA_IP,
                cwd=str(tmp_path),
                extra=("-s", "bob", "-p", "5070"),
                prefix=tuple(lab.prefix(lab.priv)),
            )
            assert result.returncode == 0, sipp_summary(result) + "\n".join(sbc.lines[-20:])
        finally:
            code, out = finish(uas)
        assert code == 0, out
        sbc.assert_clean_stop()


def test_control_without_nat_fixing_the_inbound_call_fails(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With contact_fix and register_fix off, sbc sends to the private Contact: the phone
    never sees the INVITE and the caller gets 408 (so the passing tests mean something)."""
    with start_sbc(lab, tmp_path, nat_fixing=False) as sbc:
        sbc.wait_for("listening on ", count=2)
        ua = phone(lab, tmp_path, "nat_ua_answer.xml", timeout=12.0)
        try:
            time.sleep(1.5)
            result = run_sipp(
                "uac_timeout.xml",
                SBC,
                "u1",
                local_ip=PUBLIC_UA_IP,
                cwd=str(tmp_path),
                extra=("-s", "alice", *SHARED_CALL_ID),
                prefix=tuple(lab.prefix(lab.pub)),
            )
            assert result.returncode == 0, sipp_summary(result)
        finally:
            code, out = finish(ua, timeout=20)
        assert code != 0, "the phone behind NAT answered although NAT fixing was off"
        sbc.assert_clean_stop()


def test_edge_proxy_registers_upstream_with_path(lab, tmp_path, policy) -> None:  # type: ignore[no-untyped-def]
    """registrar_uri: the edge relays the phone's REGISTER to a core registrar with Path
    (RFC 3327); a call placed at the core comes back along that Path and through the NAT."""
    core_config = tmp_path / "core.ini"
    core_config.write_text(f"[core]\nlisten = udp:{SBC_IP}:5062\nalias = sbc.test\n{policy}")
    edge_config = tmp_path / "edge.ini"
    edge_config.write_text(
        f"[core]\nlisten = udp:{SBC} tcp:{SBC}\nalias = sbc.test\n{policy}"
        f"[registrar]\nregistrar_uri = sip:{SBC_IP}:5062\n"
    )
    pub = tuple(lab.prefix(lab.pub))
    with (
        SbcProcess(str(core_config), prefix=pub) as core,
        SbcProcess(str(edge_config), prefix=pub) as edge,
    ):
        core.wait_for("listening on ")
        edge.wait_for("listening on ", count=2)
        ua = phone(lab, tmp_path, "nat_ua_answer.xml")
        try:
            time.sleep(1.5)
            result = run_sipp(
                "uac_call.xml",
                f"{SBC_IP}:5062",
                "u1",
                local_ip=PUBLIC_UA_IP,
                cwd=str(tmp_path),
                extra=("-s", "alice", *SHARED_CALL_ID),
                prefix=pub,
            )
            assert result.returncode == 0, (
                sipp_summary(result) + "\n".join(core.lines[-15:]) + "\n".join(edge.lines[-15:])
            )
        finally:
            code, out = finish(ua)
        assert code == 0, out
        edge.assert_clean_stop()
        core.assert_clean_stop()


def _peer(lab: NatLab, namespace: str, role: str, local: str, stdin: bool = False):  # type: ignore[no-untyped-def]
    """tests/system/stale_phone.py in C{namespace}: the phone or a one-shot caller."""
    command = [*lab.prefix(namespace), sys.executable, "-m", "tests.system.stale_phone", role]
    command += ["--local", local, "--proxy", SBC]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_registering_again_after_a_dead_binding_is_reachable_at_once(lab, tmp_path, policy) -> None:  # type: ignore[no-untyped-def]
    """The phone's binding dies (it stops answering): a call to it times out (fr_timer 3 s,
    408) and its NAT address is not blocklisted (blocklist on, blst_methods_add INVITE).
    The phone registers again from the very same address; a call placed right after the
    200 OK reaches it within 1 s (it used to get 503 'no usable next hop' at once)."""
    with start_sbc(lab, tmp_path, policy=policy) as sbc:
        sbc.wait_for("listening on ", count=2)
        ua = _peer(lab, lab.priv, "phone", f"{PRIVATE_UA_IP}:5070", stdin=True)
        try:
            assert ua.stdin is not None and ua.stdout is not None
            assert ua.stdout.readline().strip() == "registered"
            first = _peer(lab, lab.pub, "call", f"{PUBLIC_UA_IP}:5090")
            code, out = finish(first, 20)
            assert out.split()[:2] == ["final", "408"], out + "\n".join(sbc.lines[-20:])
            assert not [line for line in sbc.lines if "blocklisted" in line], sbc.lines[-20:]
            ua.stdin.write("register\n")
            ua.stdin.flush()
            assert ua.stdout.readline().strip() == "registered"
            second = _peer(lab, lab.pub, "call", f"{PUBLIC_UA_IP}:5091")
            code, out = finish(second, 20)
            assert out.split()[:2] == ["final", "486"], out + "\n".join(sbc.lines[-20:])
            reached = ua.stdout.readline().split()
            assert reached[0] == "invite" and int(reached[1]) < 1000, reached
            print(f"INVITE reached the phone {reached[1]} ms after its 200 OK")
        finally:
            if ua.poll() is None:
                ua.kill()
            ua.wait(5)
        sbc.assert_clean_stop()
