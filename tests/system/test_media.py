"""
System tests for media anchoring (RTP both ways through sbc): two phones behind two different NATs
(network namespaces, iptables MASQUERADE, cone and symmetric) register with sbc and one
calls the other; each sends RTP to the address in the SDP it received and counts what
arrives.  With the built-in relay both hear each other and both SDPs point at sbc's public
address; with C{engine = off} (the control) media cannot flow.  On loopback, calls ended
by BYE, CANCEL and media timeout leave no media session behind.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest

from tests.helpers import free_port
from tests.rtpengine_daemon import RTPENGINE, rtpengine_daemon
from tests.system.harness import ROOT, SbcProcess, require_sipp
from tests.system.netns import PRIVATE_UA2_IP, PRIVATE_UA_IP, SBC, SBC_IP, NatLab, finish

pytestmark = pytest.mark.system


@pytest.fixture(params=["cone", "symmetric"])
def lab2(request):  # type: ignore[no-untyped-def]
    """Two phones, each behind its own NAT (cone or symmetric), and sbc's public network."""
    NatLab.check()
    with NatLab(symmetric=request.param == "symmetric", second_nat=True) as built:
        yield built


NG_PORT = 2223


def start_sbc(lab: NatLab, tmp_path, engine: str) -> SbcProcess:  # type: ignore[no-untyped-def]
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:{SBC}\nalias = sbc.test\n"
        f"[rtp]\nengine = {engine}\nmedia_address = {SBC_IP}\n"
        "port_min = 30000\nport_max = 30099\nmedia_timeout = 30\n"
        f"rtpengine_sock = udp:127.0.0.1:{NG_PORT}\n"
    )
    return SbcProcess(str(config), prefix=tuple(lab.prefix(lab.pub)))


def phone(lab: NatLab, namespace: str, user: str, ip: str, rtp_port: int, call: str = ""):  # type: ignore[no-untyped-def]
    command = [*lab.prefix(namespace), sys.executable, "-m", "tests.system.rtp_ua"]
    command += ["--user", user, "--local", ip, "--proxy", SBC, "--rtp-port", str(rtp_port)]
    if call:
        command += ["--call", call]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def call_between_nats(lab: NatLab, tmp_path, engine: str) -> tuple[dict, dict, SbcProcess]:  # type: ignore[no-untyped-def]
    """bob (behind NAT 2) registers and waits; alice (behind NAT 1) calls him; both send
    and count RTP.  Returns what each phone saw, and the stopped sbc.  With rtpengine, the
    daemon runs next to sbc on its public address."""
    with contextlib.ExitStack() as stack:
        if engine == "rtpengine":
            if RTPENGINE is None:
                pytest.skip("rtpengine is not installed (scripts/install-test-deps)")
            prefix = tuple(lab.prefix(lab.pub))
            stack.enter_context(rtpengine_daemon(tmp_path, NG_PORT, 40000, SBC_IP, prefix))
        return _call(lab, tmp_path, engine)


def _call(lab: NatLab, tmp_path, engine: str) -> tuple[dict, dict, SbcProcess]:  # type: ignore[no-untyped-def]
    with start_sbc(lab, tmp_path, engine) as sbc:
        sbc.wait_for("listening on ")
        bob = phone(lab, lab.priv2, "bob", PRIVATE_UA2_IP, 7000)
        alice = None
        try:
            assert bob.stdout is not None
            assert bob.stdout.readline().strip() == "registered", bob.stdout.read()
            alice = phone(lab, lab.priv, "alice", PRIVATE_UA_IP, 6000, call="bob")
            code_a, out_a = finish(alice, 30)
            code_b, out_b = finish(bob, 30)
        finally:
            for process in (alice, bob):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(5)
        sbc.assert_clean_stop()
    caller, callee = json.loads(out_a.splitlines()[-1]), json.loads(out_b.splitlines()[-1])
    assert caller["call"] == "ok" and callee["call"] == "ok", (out_a, out_b, sbc.lines[-30:])
    return caller, callee, sbc


@pytest.mark.parametrize("engine", ["relay", "rtpengine"])
def test_two_phones_behind_two_nats_hear_each_other(lab2, tmp_path, engine: str) -> None:  # type: ignore[no-untyped-def]
    """Anchored (built-in relay or rtpengine), each SDP points at sbc's public address and
    RTP flows both ways."""
    caller, callee, sbc = call_between_nats(lab2, tmp_path, engine)
    assert caller["remote_media"].startswith(f"{SBC_IP}:"), caller
    assert callee["remote_media"].startswith(f"{SBC_IP}:"), callee
    # Until each side's first packet has latched the relay, a few packets may go nowhere.
    assert caller["rtp_received"] >= callee["rtp_sent"] // 2, json.dumps([caller, callee])
    assert callee["rtp_received"] >= caller["rtp_sent"] // 2, json.dumps([caller, callee])
    assert caller["rtp_from"].startswith(f"{SBC_IP}:") and callee["rtp_from"].startswith(SBC_IP)
    stats = sbc.statistics()
    assert stats["media_calls"] == 0 and stats["anchoring"] == 0, stats
    assert stats["rtp_anchored"] == 2, stats
    if engine == "relay":
        assert stats.get("rtp_sessions", 0) == 0 and stats["rtp_relayed_packets"] > 0, stats


def test_control_without_anchoring_media_does_not_flow(lab2, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """engine = off: each phone gets the other's private address, and neither hears the
    other (the caller nothing from the callee, the callee nothing from the caller)."""
    caller, callee, _ = call_between_nats(lab2, tmp_path, "off")
    assert caller["remote_media"] == f"{PRIVATE_UA2_IP}:7000", caller
    assert callee["remote_media"] == f"{PRIVATE_UA_IP}:6000", callee
    # Both sent, and there is silence both ways: one-way audio would be a failure too.
    assert caller["rtp_sent"] > 0 and callee["rtp_sent"] > 0, (caller, callee)
    assert caller["rtp_received"] == 0, (caller, callee)
    assert callee["rtp_received"] == 0, (caller, callee)


# -- no leaks on loopback: BYE, CANCEL, media timeout -------------------------------------------


@pytest.fixture
def loopback_sbc(tmp_path):  # type: ignore[no-untyped-def]
    """sbc on loopback anchoring every call (rtp_policy = always), media_timeout 2 s."""
    require_sipp()
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
        "[tm]\nfr_inv_timer = 3000\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
        "[rtp]\nengine = relay\nrtp_policy = always\nport_min = 31000\nport_max = 31099\n"
        "media_timeout = 2\n"
    )
    with SbcProcess(str(config)) as process:
        process.wait_for("listening on ")
        process.port = port  # type: ignore[attr-defined]
        yield process


def sipp_pair(sbc, tmp_path, uas: str, uac: str, extra: tuple[str, ...] = ()) -> None:  # type: ignore[no-untyped-def]
    """A registered SIPp UAS and a SIPp UAC calling it through sbc."""
    from tests.system.test_proxy_calls import call, register

    contact = free_port()
    register(sbc, tmp_path, "carol", contact)
    call(sbc, tmp_path, uas, uac, "carol", contact, extra=extra)


def assert_no_media_left(sbc) -> None:  # type: ignore[no-untyped-def]
    sbc.assert_clean_stop()
    stats = sbc.statistics()
    assert stats.get("rtp_anchored", 0) >= 2, "\n".join(sbc.lines[-40:])
    assert stats["media_calls"] == 0 and stats["anchoring"] == 0, stats
    assert stats.get("rtp_sessions", 0) == 0, stats


def test_bye_leaves_no_media_session(loopback_sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sipp_pair(loopback_sbc, tmp_path, "uas_answer.xml", "uac_call.xml")
    assert_no_media_left(loopback_sbc)


def test_cancel_leaves_no_media_session(loopback_sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sipp_pair(loopback_sbc, tmp_path, "uas_ring_cancelled.xml", "uac_cancel.xml")
    loopback_sbc.assert_clean_stop()
    stats = loopback_sbc.statistics()
    assert stats.get("rtp_anchored", 0) >= 1 and stats["media_calls"] == 0, stats
    assert stats.get("rtp_sessions", 0) == 0, stats


def test_media_timeout_ends_the_session(loopback_sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A call that sends no RTP for media_timeout (2 s) loses its media session while the
    call is still up (the SIPp call lasts 4 s)."""
    sipp_pair(loopback_sbc, tmp_path, "uas_answer.xml", "uac_call.xml", extra=("-d", "4000"))
    loopback_sbc.wait_for(r"media of .* timed out")
    assert_no_media_left(loopback_sbc)
