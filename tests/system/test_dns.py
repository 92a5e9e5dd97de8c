"""
System tests for DNS (RFC 3263, tm DNS failover, the dst blocklist): sbc runs against a real
authoritative DNS server (twisted.names, started by the fixture on loopback) serving NAPTR,
SRV and A records for a test zone, and calls go through it to SIPp-free counting UASes:

 - a priority-10 SRV target with no listener (ICMP port unreachable) is failed over at once;
 - a black-holed priority-10 target costs the first call fr_timer, then is blocklisted;
 - two equal-priority targets weighted 80/20 share 500 calls within ±8 %;
 - a 503 with Retry-After fails over and blocklists its sender for the clamped time.
"""

from __future__ import annotations

import socket
import time

import pytest

from sbc.core.message import Response, parse
from tests.dnsserver import dns_server
from tests.helpers import free_port, request_bytes
from tests.system.harness import SbcProcess, require_sipp, run_sipp, sipp_summary
from tests.system.mini_uas import MiniUas

pytestmark = pytest.mark.system

FR_TIMER_MS = 1500
BLST_503_MIN = 3


def zone(dead: int, hole: int, live: int, heavy: int, light: int, busy: int) -> str:
    srv = "SRV('_sip._udp.{name}.example.test', {prio}, {weight}, {port}, '{target}.example.test')"
    records = [
        "SOA('example.test', mname='ns.example.test', rname='root.example.test', serial=1,"
        " refresh=60, retry=60, expire=60, minimum=60, ttl=60)",
        "NS('example.test', 'ns.example.test')",
        "A('ns.example.test', '127.0.0.1')",
        # icmp: found through NAPTR, then SRV; the preferred target has no listener.
        "NAPTR('icmp.example.test', 10, 10, 's', 'SIP+D2U', '', '_sip._udp.icmp.example.test')",
        srv.format(name="icmp", prio=10, weight=0, port=dead, target="dead"),
        srv.format(name="icmp", prio=20, weight=0, port=live, target="live"),
        srv.format(name="live", prio=10, weight=0, port=live, target="live"),
        srv.format(name="hole", prio=10, weight=0, port=hole, target="hole"),
        srv.format(name="hole", prio=20, weight=0, port=live, target="live"),
        srv.format(name="lb", prio=10, weight=80, port=heavy, target="heavy"),
        srv.format(name="lb", prio=10, weight=20, port=light, target="light"),
        srv.format(name="busy", prio=10, weight=0, port=busy, target="busy"),
        srv.format(name="busy", prio=20, weight=0, port=live, target="live"),
    ]
    records += [
        f"A('{name}.example.test', '127.0.0.1')"
        for name in ("dead", "hole", "live", "heavy", "light", "busy")
    ]
    return "zone = [\n    " + ",\n    ".join(records) + ",\n]\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The DNS server, the UASes and sbc, for the whole module."""
    require_sipp()
    folder = tmp_path_factory.mktemp("dns")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]  # closed again: nobody listens there
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))  # bound, never read: requests vanish without ICMP
    uases = {name: MiniUas() for name in ("live", "heavy", "light")}
    uases["busy"] = MiniUas(status=503, retry_after=1)
    ports = {name: uas.port for name, uas in uases.items()}
    try:
        with dns_server(zone(dead, hole.getsockname()[1], **ports)) as server:
            port = free_port()
            config = folder / "sbc.ini"
            config.write_text(
                f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
                f"[tm]\nfr_timer = {FR_TIMER_MS}\n"
                "[permissions]\ntrusted = any:127.0.0.0/8\n"  # the core calls out
                f"[dns]\nnameservers = {server.host}:{server.port}\nhosts_file =\n"
                "dns_try_ipv6 = no\n"
                f"[blocklist]\nblst_503 = yes\nblst_503_min_timeout = {BLST_503_MIN}\n"
            )
            with SbcProcess(str(config)) as process:
                process.wait_for(r"listening on ")
                process.port = port  # type: ignore[attr-defined]
                process.uases = uases  # type: ignore[attr-defined]
                process.folder = folder  # type: ignore[attr-defined]
                process.dns = server  # type: ignore[attr-defined]
                yield process
                process.assert_clean_stop()
    finally:
        hole.close()
        for uas in uases.values():
            uas.close()


def calls(lab, name: str, count: int = 1, rate: int = 10) -> None:  # type: ignore[no-untyped-def]
    """SIPp calls sip:x@<name>.example.test through sbc; every one must complete."""
    result = run_sipp(
        "uac_call_domain.xml",
        f"127.0.0.1:{lab.port}",
        local_ip="127.0.0.1",
        calls=count,
        cwd=str(lab.folder),
        extra=("-s", "x", "-key", "domain", f"{name}.example.test", "-r", str(rate)),
        timeout=90,
    )
    assert result.returncode == 0, sipp_summary(result) + "\n".join(lab.lines[-30:])


def setup_time(lab, name: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds from an INVITE to sip:x@<name>.example.test until its 200 arrives."""
    status, seconds = final_answer(lab, name)
    assert status == 200, "\n".join(lab.lines[-40:])
    return seconds


def final_answer(lab, name: str) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """The final status an INVITE to sip:x@<name>.example.test gets, and after how long."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        call_id = f"timed-{name}-{time.monotonic_ns()}"
        invite = request_bytes(
            "INVITE",
            f"sip:x@{name}.example.test",
            via=f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id};rport",
            call_id=call_id,
            headers=[("Contact", f"<sip:t@127.0.0.1:{port}>")],
        )
        started = time.monotonic()
        sock.sendto(invite, ("127.0.0.1", lab.port))
        while True:
            response = parse(sock.recv(65535))
            assert isinstance(response, Response)
            if response.status >= 200:
                return response.status, time.monotonic() - started


def test_icmp_unreachable_target_fails_over_at_once(lab) -> None:  # type: ignore[no-untyped-def]
    """NAPTR → SRV: the priority-10 target's port is closed; the ICMP error moves the first
    call to the priority-20 target within 200 ms, and the rest skip the dead one."""
    live = lab.uases["live"]
    baseline = min(setup_time(lab, "live") for _ in range(3))
    first = setup_time(lab, "icmp")
    assert first - baseline < 0.2, (first, baseline)
    before = len(live.invites)
    calls(lab, "icmp", count=5)
    assert len(live.invites) == before + 5
    lab.wait_for(r"is unreachable \(port unreachable\)")
    lab.wait_for(r"failover: call_id=timed-icmp")


def test_black_holed_target_costs_fr_timer_once(lab) -> None:  # type: ignore[no-untyped-def]
    """No answer at all from the priority-10 target: the first call fails over after
    fr_timer; the blocklist sends the next calls to the priority-20 target at once."""
    first = setup_time(lab, "hole")
    assert first >= FR_TIMER_MS / 1000
    second = setup_time(lab, "hole")
    assert second < 0.5, second
    lab.wait_for(r"blocklisted: target=udp:127\.0\.0\.1:\d+ reason=0x10")
    calls(lab, "hole", count=3)


def test_weights_80_20_over_500_calls(lab) -> None:  # type: ignore[no-untyped-def]
    """Two equal-priority SRV targets weighted 80 and 20 share 500 calls within ±8 %."""
    heavy, light = lab.uases["heavy"], lab.uases["light"]
    calls(lab, "lb", count=500, rate=100)
    total = len(heavy.invites) + len(light.invites)
    assert total == 500
    share = len(heavy.invites) / total
    assert 0.72 <= share <= 0.88, (len(heavy.invites), len(light.invites))


def test_503_fails_over_and_blocklists_for_the_clamped_retry_after(lab) -> None:  # type: ignore[no-untyped-def]
    """503 with Retry-After: 1 from the first target: the call completes on the second;
    the first is blocklisted for blst_503_min_timeout (3 s), then tried again."""
    busy, live = lab.uases["busy"], lab.uases["live"]
    setup_time(lab, "busy")
    assert len(busy.invites) == 1
    setup_time(lab, "busy")
    assert len(busy.invites) == 1  # blocklisted: not asked
    lines = lab.wait_for(r"blocklisted: target=udp:127\.0\.0\.1:\d+ reason=0x20")
    assert str(busy.port) in lines[-1]
    time.sleep(BLST_503_MIN + 0.5)
    setup_time(lab, "busy")
    assert len(busy.invites) == 2
    assert live.invites


def test_answers_come_from_the_cache(lab) -> None:  # type: ignore[no-untyped-def]
    """Hundreds of calls, a handful of queries: each (name, type) was asked about once
    within its TTL."""
    queries = lab.dns.queries()
    assert queries.count(("_sip._udp.lb.example.test", "SRV")) == 1, queries
    assert len(queries) < 30, queries


def test_control_without_failover_the_dead_target_fails_the_call(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """use_dns_failover = no (and no blocklist): the same call to icmp.example.test ends
    with the dead priority-10 target's failure instead of reaching priority 20."""
    port = free_port()
    config = tmp_path / "nofailover.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
        f"[tm]\nfr_timer = {FR_TIMER_MS}\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
        f"[dns]\nnameservers = {lab.dns.host}:{lab.dns.port}\nhosts_file =\n"
        "dns_try_ipv6 = no\nuse_dns_failover = no\n"
        "[blocklist]\nuse_dst_blocklist = no\n"
    )
    with SbcProcess(str(config)) as other:
        other.wait_for(r"listening on ")
        other.port = port  # type: ignore[attr-defined]
        status, _ = final_answer(other, "icmp")
        assert status >= 500, status
        other.assert_clean_stop()
