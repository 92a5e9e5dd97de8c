"""
sbc against Kamailio 5.6 (bench/kamailio.cfg) on the same call ladder, one after the other.

    .venv/bin/python bench/compare.py                 # both ladders, then a summary line
    .venv/bin/python bench/compare.py --memory        # RSS after 60 s at 800 calls/s, 60 s later
    .venv/bin/python bench/compare.py --only sbc      # one proxy only

Each proxy runs alone on core 0 (taskset, its children too) and every SIPp process on core
1.  Per proxy it registers --users users, starts the benchmark UAS and runs bench/calls.py's
ladder; the table gives CPU summed over all the proxy's processes, and CPU microseconds per
call placed in the step window.  Clean means under 1 % failed calls; a ladder stops after a
step with more than 5 % failed.  Kamailio comes from Debian's package (installed here with
apt-get when running as root).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from calls import (  # noqa: E402
    HEADER,
    HERE,
    PROXY_CORE,
    SIPP_CORE,
    Row,
    format_row,
    free_port,
    gc_pauses,
    process_tree,
    register,
    rss_mib,
    run_step,
    run_steps,
    start_sbc,
    start_uas,
    stop,
    wait_until_quiet,
    write_users,
)

PROXIES = ("kamailio", "sbc")
#: Kamailio's shared and private memory pools, MiB (-m, -M): room for 100,000 bindings.
KAMAILIO_SHM = 512
KAMAILIO_PKG = 32


def ensure_kamailio() -> str:
    """The kamailio binary; installed with apt-get when missing and running as root."""
    found = shutil.which("kamailio")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("kamailio is not installed and this is not root: apt-get install kamailio")
    print("installing kamailio (apt-get)", flush=True)
    command = ["apt-get", "install", "-y", "-q", "kamailio"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, env=env, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, timeout=600)
        subprocess.run(command, env=env, timeout=600)
    found = shutil.which("kamailio")
    if not found:
        raise SystemExit("could not install kamailio with apt-get")
    return found


def control_socket(folder: str) -> str:
    return "unix:" + os.path.join(folder, "kamailio_ctl")


def start_kamailio(folder: str, port: int, core: Optional[int]) -> subprocess.Popen:
    """Kamailio in the foreground (-DD, logs to stderr) on bench/kamailio.cfg, and wait
    until it answers on C{port}."""
    binary = ensure_kamailio()
    command = [
        binary,
        "-DD",
        "-E",
        "-m",
        str(KAMAILIO_SHM),
        "-M",
        str(KAMAILIO_PKG),
        "-f",
        os.path.join(HERE, "kamailio.cfg"),
        "-l",
        f"udp:127.0.0.1:{port}",
        "-A",
        f'CTL_SOCKET="{control_socket(folder)}"',
        "-Y",
        folder,
        "-w",
        folder,
    ]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    log = os.path.join(folder, "kamailio.log")
    process = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    if not answers(port, 20, process):
        stop([process])
        raise SystemExit(f"kamailio did not start; see {log}")
    return process


def answers(port: int, seconds: float, process: subprocess.Popen) -> bool:
    """Whether a SIP OPTIONS to 127.0.0.1:C{port} gets any reply within C{seconds}."""
    import socket

    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        local = s.getsockname()[1]
        while time.monotonic() < deadline and process.poll() is None:
            ping = (
                f"OPTIONS sip:sbc.test SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{time.monotonic_ns()}\r\n"
                f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:sbc.test>\r\n"
                f"Call-ID: probe{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            s.sendto(ping.encode(), ("127.0.0.1", port))
            try:
                if s.recv(65535).startswith(b"SIP/2.0 "):
                    return True
            except OSError:
                pass
    return False


def kamailio_shm_mib(folder: str) -> Optional[float]:
    """Kamailio's used shared memory (kamcmd core.shmmem over the ctl socket), MiB."""
    if not shutil.which("kamcmd"):
        return None
    try:
        out = subprocess.run(
            ["kamcmd", "-s", control_socket(folder), "core.shmmem"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except subprocess.TimeoutExpired:
        return None
    match = re.search(r"\breal_used:\s*(\d+)", out) or re.search(r"\bused:\s*(\d+)", out)
    return int(match.group(1)) / 2**20 if match else None


def start_proxy(
    name: str, folder: str, port: int, core: Optional[int], metrics_port: Optional[int]
) -> subprocess.Popen:
    if name == "kamailio":
        return start_kamailio(folder, port, core)
    return start_sbc(folder, port, core, metrics_port=metrics_port)


def gc_line(folder: str) -> str:
    """sbc's shutdown line from L{sbc.app.gcwatch}, if it wrote one."""
    try:
        with open(os.path.join(folder, "sbc.log"), errors="replace") as f:
            lines = [line.split("] ", 1)[-1].strip() for line in f if "] gc: " in line]
    except OSError:
        return ""
    return lines[-1] if lines else ""


@dataclass
class Running:
    """A proxy started by L{proxy_running}: its process, where to send SIP, its folder, its
    metrics port (sbc only) and every process to stop at the end (add yours)."""

    process: subprocess.Popen
    target: str
    folder: str
    metrics_port: Optional[int]
    started: list[subprocess.Popen]


@contextmanager
def proxy_running(name: str, folder: str, proxy_core: Optional[int]) -> Iterator[Running]:
    """Start C{name} in its own folder under C{folder}; on the way out, stop it and every
    process added to C{started}."""
    here = os.path.join(folder, name)
    os.makedirs(here)
    port = free_port()
    metrics_port = free_port() if name == "sbc" else None
    started: list[subprocess.Popen] = []
    try:
        proxy = start_proxy(name, here, port, proxy_core, metrics_port)
        started.append(proxy)
        yield Running(proxy, f"127.0.0.1:{port}", here, metrics_port, started)
    finally:
        stop(started)


def with_proxy(
    name: str, folder: str, users: int, work, proxy_core: Optional[int], sipp_core: Optional[int]
):  # type: ignore[no-untyped-def]
    """Start C{name}, the UAS and C{users} registrations, then C{work(target, pids, users_csv,
    proxy_folder, metrics_port)}; everything started is stopped afterwards."""
    with proxy_running(name, folder, proxy_core) as proxy:
        here = proxy.folder
        csv = write_users(os.path.join(here, "users.csv"), "sbc.test", users)
        uas, uas_port = start_uas(here, sipp_core)
        proxy.started.append(uas)
        reg = register(proxy.target, csv, users, uas_port, here, sipp_core)
        if reg.returncode != 0:
            raise SystemExit(f"{name}: registration failed:\n" + reg.stdout[-2000:])
        pid = proxy.process.pid
        return work(proxy.target, lambda: process_tree(pid), csv, here, proxy.metrics_port)


def ladder(args: argparse.Namespace, folder: str) -> None:
    """Both ladders, then the summary line."""
    rates = [int(r) for r in args.rates.split(",")]
    results: dict[str, list[Row]] = {}
    for name in args.only or PROXIES:
        print(
            f"\n== {name} (core {PROXY_CORE}; SIPp on core {SIPP_CORE}; "
            f"{args.users} users; {args.step_seconds} s per step)",
            flush=True,
        )

        def work(target, pids, csv, here, metrics_port):  # type: ignore[no-untyped-def]
            return run_steps(
                target,
                pids,
                csv,
                rates,
                args.step_seconds,
                here,
                SIPP_CORE,
                metrics_port,
                proxy_core=PROXY_CORE,
                quiet_wait=args.quiet_wait,
            )

        results[name] = with_proxy(name, folder, args.users, work, PROXY_CORE, SIPP_CORE)
        if name == "sbc":
            print(gc_line(os.path.join(folder, name)) or "gc: no shutdown line", flush=True)
    print()
    print(summary(results))


def highest_clean(rows: Sequence[Row]) -> Optional[Row]:
    clean = [row for row in rows if row.clean]
    return max(clean, key=lambda row: row.rate) if clean else None


def summary(results: dict[str, list[Row]]) -> str:
    """Highest clean rate of each proxy; sbc/Kamailio CPU per call at the highest rate both
    sustain cleanly."""
    parts = []
    for name, rows in results.items():
        best = highest_clean(rows)
        parts.append(f"{name} highest clean rate {best.rate if best else 'none'} calls/s")
    sbc = {row.rate: row for row in results.get("sbc", []) if row.clean}
    kamailio = {row.rate: row for row in results.get("kamailio", []) if row.clean}
    common = sorted(set(sbc) & set(kamailio))
    if common:
        rate = common[-1]
        ratio = sbc[rate].cpu_us_per_call / kamailio[rate].cpu_us_per_call
        parts.append(
            f"at {rate} calls/s sbc uses {sbc[rate].cpu_us_per_call:.0f} us/call, Kamailio "
            f"{kamailio[rate].cpu_us_per_call:.0f} us/call: ratio {ratio:.2f}"
        )
    elif len(results) == 2:
        parts.append("no rate both sustain cleanly")
    return "summary: " + "; ".join(parts)


def memory(args: argparse.Namespace, folder: str) -> None:
    """RSS before, at the end of --memory-seconds of load, and --memory-seconds later."""
    for name in args.only or PROXIES:
        print(f"\n== {name}: {args.memory_rate} calls/s for {args.memory_seconds} s", flush=True)

        def work(target, pids, csv, here, metrics_port, name=name):  # type: ignore[no-untyped-def]
            before = rss_mib(pids())
            print(HEADER, flush=True)
            wait_until_quiet([PROXY_CORE, SIPP_CORE], args.quiet_wait)
            row = run_step(
                target,
                pids,
                csv,
                args.memory_rate,
                args.memory_seconds,
                here,
                SIPP_CORE,
                metrics_port,
                PROXY_CORE,
            )
            print(format_row(row), flush=True)
            time.sleep(args.memory_seconds)
            after = rss_mib(pids())
            line = (
                f"{name}: RSS {before:.1f} MiB before, {row.rss_mib:.1f} MiB at the end of "
                f"the load, {after:.1f} MiB {args.memory_seconds} s after it stopped"
            )
            if name == "kamailio":
                shm = kamailio_shm_mib(here)
                line += f"; shm used {shm:.1f} MiB" if shm is not None else ""
            else:
                count, slow, _ = gc_pauses(metrics_port)
                line += f"; gc {count} collections ({slow} > 5 ms) so far"
            print(line, flush=True)

        with_proxy(name, folder, args.users, work, PROXY_CORE, SIPP_CORE)
        if name == "sbc":
            print(gc_line(os.path.join(folder, name)) or "gc: no shutdown line", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rates", default="200,400,800,1200,1600,2400,3200")
    parser.add_argument("--step-seconds", type=int, default=8)
    parser.add_argument("--only", action="append", choices=PROXIES, help="this proxy only")
    parser.add_argument("--memory", action="store_true", help="the RSS run instead")
    parser.add_argument("--memory-rate", type=int, default=800)
    parser.add_argument("--memory-seconds", type=int, default=60)
    parser.add_argument(
        "--quiet-wait", type=float, default=30, help="seconds to wait for idle cores per step"
    )
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: the proxy on one, SIPp on the other")
    if "kamailio" in (args.only or PROXIES):
        ensure_kamailio()
    folder = tempfile.mkdtemp(prefix="sbc-compare-")
    try:
        if args.memory:
            memory(args, folder)
        else:
            ladder(args, folder)
    finally:
        print(f"(logs in {folder})")


if __name__ == "__main__":
    main()
