"""
System tests with a real third-party phone: baresip (Debian's C{baresip-core}), two of
them, each behind its own NAT (network namespaces, iptables MASQUERADE, symmetric), sbc
with its built-in relay on the public side.  The phones register over UDP and over TCP,
call each other both ways with audio (an 8 kHz tone), hold and resume, send DTMF
(RFC 4733), and one comes back after its NAT binding died while blocklisting is on.  Two
phones with ICE (baresip's C{ice} module) find the relay as their ICE-lite peer.

RTP is counted where it crosses each NAT: iptables rules in the router namespaces (made by
the test) count G.711 packets between sbc's media address and the phone's RTP ports.
Without baresip the tests skip, except under C{CI=true}, where they fail.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Optional

import pytest

from tests.system.baresip import (
    Baresip,
    baresip_version,
    require_baresip,
    require_baresip_module,
)
from tests.system.harness import SbcProcess
from tests.system.netns import PRIVATE_UA2_IP, PRIVATE_UA_IP, SBC, SBC_IP, NatLab

pytestmark = pytest.mark.system

RTP_PORTS = (10000, 10019)
#: A 20 ms G.711 frame is a 200-byte IP packet (20 IP + 8 UDP + 12 RTP + 160); RTCP and
#: RFC 4733 events are smaller and not counted.
RTP_LENGTHS = "180:260"


class RtpCounter:
    """iptables rules in a NAT router's namespace counting RTP to and from its phone."""

    def __init__(self, lab: NatLab, namespace: str, private_dev: str) -> None:
        self.prefix = lab.prefix(namespace)
        ports = f"{RTP_PORTS[0]}:{RTP_PORTS[1]}"
        match = ["-p", "udp", "-m", "length", "--length", RTP_LENGTHS]
        self.rules = {
            "to_phone": ["-o", private_dev, "-s", SBC_IP, *match, "--dport", ports],
            "from_phone": ["-i", private_dev, "-d", SBC_IP, *match, "--sport", ports],
        }
        for name, rule in self.rules.items():
            subprocess.run(
                [
                    *self.prefix,
                    "iptables",
                    "-I",
                    "FORWARD",
                    *rule,
                    "-m",
                    "comment",
                    "--comment",
                    name,
                ],
                check=True,
                capture_output=True,
                timeout=10,
            )

    def read(self) -> dict[str, int]:
        """Packets counted so far in each direction."""
        out = subprocess.run(
            [*self.prefix, "iptables", "-L", "FORWARD", "-n", "-v", "-x"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        counts = {name: 0 for name in self.rules}
        for line in out.splitlines():
            for name in self.rules:
                if f"/* {name} */" in line:
                    counts[name] += int(line.split()[0])
        return counts


@pytest.fixture
def lab2() -> Iterator[NatLab]:
    """Two private networks behind two symmetric NATs, and sbc's public network."""
    require_baresip()
    NatLab.check()
    with NatLab(symmetric=True, second_nat=True) as built:
        yield built


def start_sbc(lab: NatLab, tmp_path) -> SbcProcess:  # type: ignore[no-untyped-def]
    """sbc with the built-in relay, short timers, the blocklist on (its defaults)."""
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:{SBC} tcp:{SBC}\nalias = sbc.test\n"
        "[tm]\nfr_timer = 2000\nfr_inv_timer = 15000\n"
        "[blocklist]\nuse_dst_blocklist = yes\nblst_methods_add = INVITE\n"
        f"[rtp]\nengine = relay\nmedia_address = {SBC_IP}\n"
        "port_min = 30000\nport_max = 30099\nmedia_timeout = 30\n"
    )
    return SbcProcess(str(config), prefix=tuple(lab.prefix(lab.pub)))


class Call:
    """Both phones, sbc and the RTP counters of one test."""

    def __init__(  # type: ignore[no-untyped-def]
        self, lab: NatLab, tmp_path, transport: str, medianat: Optional[str] = None
    ) -> None:
        self.lab = lab
        self.transport = transport
        self.stack = ExitStack()
        self.sbc = self.stack.enter_context(start_sbc(lab, tmp_path))
        self.sbc.wait_for("listening on ", count=2)
        self.counters = {
            "alice": RtpCounter(lab, lab.nat, "vnatpriv"),
            "bob": RtpCounter(lab, lab.nat2, "vnatbpriv"),
        }
        self.alice = Baresip(
            lab.prefix(lab.priv),
            lab.priv,
            tmp_path / "alice",
            "alice",
            PRIVATE_UA_IP,
            SBC_IP,
            transport,
            medianat=medianat,
            sip_trace=medianat is not None,
        )
        self.bob = Baresip(
            lab.prefix(lab.priv2),
            lab.priv2,
            tmp_path / "bob",
            "bob",
            PRIVATE_UA2_IP,
            SBC_IP,
            transport,
            medianat=medianat,
            sip_trace=medianat is not None,
        )
        self.stack.callback(self.alice.stop)
        self.stack.callback(self.bob.stop)

    def uri(self, user: str) -> str:
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{user}@{SBC_IP}{suffix}"

    def register(self) -> None:
        for phone in (self.alice, self.bob):
            phone.start()
        for phone in (self.alice, self.bob):
            phone.register()
        self.sbc.wait_for(r"registered: aor=bob ")

    def call(self, caller: Baresip, callee: Baresip) -> None:
        """C{caller} dials C{callee}, who answers; both see the call established."""
        started = time.monotonic()
        assert caller.command("dial", self.uri(callee.user))["ok"]
        callee.wait_event("CALL_INCOMING", after=started)
        assert callee.command("accept")["ok"]
        caller.wait_event("CALL_ESTABLISHED", after=started)
        callee.wait_event("CALL_ESTABLISHED", after=started)

    def hang_up(self, phone: Baresip, other: Baresip) -> None:
        started = time.monotonic()
        assert phone.command("hangup")["ok"]
        other.wait_event("CALL_CLOSED", after=started)

    def rtp_during(self, seconds: float) -> dict[str, int]:
        """RTP packets crossing the NATs during the next C{seconds}: alice->bob is what
        leaves alice's NAT towards sbc *and* reaches bob's phone (the smaller of the two)."""
        before = {name: c.read() for name, c in self.counters.items()}
        time.sleep(seconds)
        after = {name: c.read() for name, c in self.counters.items()}
        delta = {
            f"{name}:{key}": after[name][key] - before[name][key]
            for name in after
            for key in after[name]
        }
        return {
            "alice_to_bob": min(delta["alice:from_phone"], delta["bob:to_phone"]),
            "bob_to_alice": min(delta["bob:from_phone"], delta["alice:to_phone"]),
            **delta,
        }

    def close(self) -> None:
        self.alice.stop()
        self.bob.stop()
        self.sbc.assert_clean_stop()
        self.stack.close()

    def logs(self) -> str:
        return "\n".join(self.sbc.lines[-30:]) + "\n" + self.alice.log() + "\n" + self.bob.log()


@pytest.fixture
def calls(lab2, tmp_path, request) -> Iterator[Call]:  # type: ignore[no-untyped-def]
    setup = Call(lab2, tmp_path, getattr(request, "param", "udp"))
    try:
        yield setup
    finally:
        setup.stack.close()


@pytest.mark.parametrize("calls", ["udp", "tcp"], indirect=True)
def test_register_and_call_both_ways_with_audio_through_the_relay(calls: Call) -> None:
    """Both phones register (UDP, then TCP); alice calls bob, then bob calls alice; in each
    call the tone flows both ways through sbc's relay (50 packets/s each way)."""
    calls.register()
    figures = {}
    directions = (("a->b", calls.alice, calls.bob), ("b->a", calls.bob, calls.alice))
    for name, caller, callee in directions:
        calls.call(caller, callee)
        time.sleep(0.5)  # the relay latches to each side's first packet
        rtp = calls.rtp_during(2.0)
        figures[name] = rtp
        assert rtp["alice_to_bob"] >= 70 and rtp["bob_to_alice"] >= 70, (rtp, calls.logs())
        calls.hang_up(caller, callee)
    print(f"{baresip_version()}, RTP packets in 2 s ({calls.transport}): {figures}")
    sessions = [line for line in calls.sbc.lines if "rtp" in line.lower() and "session" in line]
    calls.close()
    stats = calls.sbc.statistics()
    assert stats["rtp_anchored"] >= 4 and stats["rtp_relayed_packets"] > 0, (stats, sessions)
    assert stats.get("rtp_sessions", 0) == 0, stats


@pytest.fixture
def ice_calls(lab2, tmp_path) -> Iterator[Call]:  # type: ignore[no-untyped-def]
    """Both phones with baresip's ice module (C{;medianat=ice}, host candidates only)."""
    require_baresip_module("ice")
    setup = Call(lab2, tmp_path, "udp", medianat="ice")
    try:
        yield setup
    finally:
        setup.stack.close()


def relay_ice_lite(sdp: str) -> list[str]:
    """What is wrong with an SDP a phone received, if it is not the relay as an ICE-lite
    peer: every C{c=} the relay's address, C{a=ice-lite} with ufrag and password, and in
    the stream exactly one host candidate per component, at the relay's RTP and RTCP ports
    (the ones in C{m=} and C{a=rtcp}); nothing of the other phone's ICE left."""
    lines = sdp.replace("\r\n", "\n").splitlines()
    problems = [line for line in lines if line.startswith("c=") and line != f"c=IN IP4 {SBC_IP}"]
    for needed in ("a=ice-lite", "a=ice-ufrag:", "a=ice-pwd:"):
        if not any(line.startswith(needed) for line in lines):
            problems.append(f"no {needed}")
    leftovers = ("a=remote-candidates", "a=ice-mismatch", "a=end-of-candidates")
    problems += [line for line in lines if line.startswith(leftovers)]
    [m_line] = [line for line in lines if line.startswith("m=audio ")]
    rtp_port = int(m_line.split()[1])
    [rtcp] = [line for line in lines if line.startswith("a=rtcp:")]
    rtcp_port = int(rtcp.split(":")[1].split()[0])
    expected = [
        f"a=candidate:1 1 UDP 2130706431 {SBC_IP} {rtp_port} typ host",
        f"a=candidate:1 2 UDP 2130706430 {SBC_IP} {rtcp_port} typ host",
    ]
    candidates = [line for line in lines if line.startswith("a=candidate")]
    if candidates != expected:
        problems.append(f"candidates {candidates} instead of {expected}")
    return problems


def test_ice_phones_have_audio_both_ways_through_the_ice_lite_relay(ice_calls: Call) -> None:
    """Both phones run ICE (baresip's ice module, host candidates only: their 10.x veth
    address).  alice calls bob: every SDP either phone receives (offers, answers and the
    re-INVITEs baresip sends once its checks found the NAT's address) makes the relay its
    ICE-lite peer with the relay as the only candidate; each phone's checks are answered
    (its ICE completes on the relay's ports, sbc counts them in C{rtp_stun_answered}) and
    the tone flows both ways through the relay for 2 s.  bob's first INVITE carries ICE
    too: given none, baresip takes the relay for a peer without ICE and never starts its
    media (bob would be heard only thanks to alice's re-INVITE)."""
    calls = ice_calls
    calls.register()
    calls.call(calls.alice, calls.bob)
    time.sleep(0.5)  # checks, then the re-INVITEs with the NAT's address
    rtp = calls.rtp_during(2.0)
    assert rtp["alice_to_bob"] >= 70 and rtp["bob_to_alice"] >= 70, (rtp, calls.logs())
    calls.hang_up(calls.alice, calls.bob)
    received, connected = {}, {}
    for phone in (calls.alice, calls.bob):
        received[phone.user] = phone.received_sdps()
        log = phone.full_log()
        assert "ICE not supported by peer" not in log, log
        connected[phone.user] = re.findall(r"mnat 'ice' connected: raddr (\S+) (\S+)", log)
    calls.close()
    stats = calls.sbc.statistics()
    for user, sdps in received.items():
        assert len(sdps) >= 2, (user, sdps)  # the first offer or answer, a re-INVITE's
        for start, sdp in sdps:
            assert not relay_ice_lite(sdp), (user, start, relay_ice_lite(sdp), sdp)
        # ICE completed on the candidates the relay offered this phone.
        ports = {
            int(line.split()[1])
            for _, sdp in sdps
            for line in sdp.split("\r\n")
            if line.startswith("m=audio ")
        }
        assert connected[user], (user, calls.logs())
        for rtp_address, rtcp_address in connected[user]:
            host, port = rtp_address.rsplit(":", 1)
            assert host == SBC_IP and int(port) in ports, (user, connected[user], ports)
            assert rtcp_address == f"{SBC_IP}:{int(port) + 1}", (user, connected[user])
    answered = stats.get("rtp_stun_answered", 0)
    # Each phone checks both components (RTP and RTCP): at least 2 checks each.
    assert answered >= 4, stats
    assert stats.get("rtp_stun_refused", 0) == 0 and stats.get("rtp_stun_dropped", 0) == 0, stats
    print(
        f"{baresip_version()} with ICE, RTP packets in 2 s: {rtp}; STUN checks answered: "
        f"{answered}; SDPs received: alice {len(received['alice'])}, bob {len(received['bob'])}"
    )


def test_hold_resume_and_dtmf(calls: Call) -> None:
    """alice holds bob (re-INVITE with a=sendonly through sbc and the relay): bob, now
    recvonly, stops sending (baresip's holder goes quiet too); resume brings both directions
    back; a DTMF digit sent by alice (RFC 4733 telephone-event) reaches bob as an event."""
    calls.register()
    calls.call(calls.alice, calls.bob)
    time.sleep(0.5)
    talking = calls.rtp_during(1.0)
    assert talking["alice_to_bob"] >= 30 and talking["bob_to_alice"] >= 30, talking

    assert calls.alice.command("hold")["ok"], calls.logs()
    time.sleep(0.7)  # the re-INVITE and its answer
    held = calls.rtp_during(1.5)
    assert held["bob_to_alice"] <= 5 and held["alice_to_bob"] <= 5, (held, calls.logs())

    assert calls.alice.command("resume")["ok"], calls.logs()
    time.sleep(0.7)
    resumed = calls.rtp_during(1.5)
    assert resumed["alice_to_bob"] >= 50 and resumed["bob_to_alice"] >= 50, (resumed, calls.logs())

    sent = time.monotonic()
    assert calls.alice.command("sndcode", "5")["ok"], calls.logs()
    _, event = calls.bob.wait_event("CALL_DTMF_START", after=sent, timeout=5)
    assert event.get("param") == "5", event
    print(f"RTP talking {talking}, held {held}, resumed {resumed}; DTMF event {event}")
    calls.hang_up(calls.alice, calls.bob)
    calls.close()


def test_phone_back_after_a_dead_binding_is_called_within_a_second(calls: Call) -> None:
    """alice's phone dies (killed: its socket is gone, the NAT binding stays); bob's call to
    her times out (fr_timer 2 s) with the blocklist on.  alice's phone starts again on the
    same address and registers; bob's call placed on her 200 OK reaches her within 1 s."""
    calls.register()
    [first] = [line for line in calls.sbc.lines if "registered: aor=alice " in line]
    calls.alice.stop(kill=True)
    started = time.monotonic()
    assert calls.bob.command("dial", calls.uri("alice"))["ok"]
    _, closed = calls.bob.wait_event("CALL_CLOSED", after=started, timeout=10)
    assert "408" in str(closed.get("param")), closed
    assert not [line for line in calls.sbc.lines if "blocklisted" in line], calls.logs()

    calls.alice.start()
    registered = calls.alice.register()
    assert calls.bob.command("dial", calls.uri("alice"))["ok"]
    reached, _ = calls.alice.wait_event("CALL_INCOMING", after=registered)
    delay = reached - registered
    print(f"INVITE reached alice {delay * 1000:.0f} ms after her REGISTER's 200 OK")
    assert delay < 1.0, calls.logs()
    # The same NAT address both times (the case the blocklist used to hide).
    again = [line for line in calls.sbc.lines if "registered: aor=alice " in line][-1]
    source = re.compile(r"source=(\S+)")
    assert source.search(first).group(1) == source.search(again).group(1), (first, again)  # type: ignore[union-attr]
    assert calls.alice.command("accept")["ok"]
    calls.bob.wait_event("CALL_ESTABLISHED", after=registered)
    calls.hang_up(calls.bob, calls.alice)
    calls.close()


def test_missing_baresip_skips_locally_but_fails_under_ci(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Without baresip the tests skip and say why; with CI=true they fail (CI must run them)."""
    from tests.system import baresip

    monkeypatch.setattr(baresip, "BARESIP", None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="baresip-core"):
        baresip.require_baresip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        baresip.require_baresip()


def test_missing_ice_module_skips_locally_but_fails_under_ci(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """baresip without its ice module: the ICE test skips saying so, or fails with CI=true."""
    from tests.system import baresip

    monkeypatch.setattr(baresip, "BARESIP", "/usr/bin/baresip")
    monkeypatch.setattr(baresip, "MODULE_PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="ice module"):
        baresip.require_baresip_module("ice")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        baresip.require_baresip_module("ice")
