"""
Call benchmark: calls per second through sbc (SIPp calls through a proxy at rising rates).

    .venv/bin/python bench/calls.py                       # starts sbc itself
    .venv/bin/python bench/calls.py --proxy 127.0.0.1:5060 --pid 1234   # any other proxy

It registers --users users (SIPp, one REGISTER each, Contact = the benchmark UAS), then for
each rate in --rates drives INVITE/100/180/200/ACK/BYE/200 calls for --step-seconds and
prints: attempted, completed, failed, retransmissions, p50/p99 setup time (INVITE to 200),
the proxy's CPU % and RSS.  Every SIPp run is bounded by its call count and a timeout;
everything started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_sbc(folder: str, port: int) -> subprocess.Popen:
    config = os.path.join(folder, "bench.ini")
    with open(config, "w") as f:
        f.write(
            f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
            "[registrar]\nmax_expires = 3600\n"
        )
    process = subprocess.Popen(
        [TWISTD, "--pidfile=", "-n", "sbc", "--config", config],
        cwd=ROOT,
        stdout=open(os.path.join(folder, "sbc.log"), "w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(os.path.join(folder, "sbc.log")) as f:
            if "listening on" in f.read():
                return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit("sbc did not start; see " + os.path.join(folder, "sbc.log"))


def sipp(args: list[str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sipp", "-nostdin", "-i", "127.0.0.1", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_stats(folder: str, pattern: str) -> dict[str, str]:
    [path] = glob.glob(os.path.join(folder, pattern))
    with open(path) as f:
        rows = list(csv.reader(f, delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False))


def setup_times(folder: str) -> list[float]:
    times: list[float] = []
    for path in glob.glob(os.path.join(folder, "uac_bench_*_rtt.csv")):
        with open(path) as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) >= 2 and row[1].replace(".", "", 1).isdigit():
                    times.append(float(row[1]))
    return sorted(times)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--proxy", help="host:port of a running proxy (default: start sbc)")
    parser.add_argument("--pid", type=int, help="PID of that proxy, for CPU and RSS")
    parser.add_argument("--domain", default="sbc.test", help="domain the proxy serves")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rates", default="50,100,200,300,400", help="calls/s per step")
    parser.add_argument("--step-seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")

    folder = tempfile.mkdtemp(prefix="sbc-bench-")
    started: list[subprocess.Popen] = []
    try:
        if args.proxy:
            target, pid = args.proxy, args.pid
        else:
            port = free_port()
            sbc = start_sbc(folder, port)
            started.append(sbc)
            target, pid = f"127.0.0.1:{port}", sbc.pid
        users = os.path.join(folder, "users.csv")
        with open(users, "w") as f:
            f.write("SEQUENTIAL\n")
            f.writelines(f"bench{i};{args.domain}\n" for i in range(args.users))
        uas_port = free_port()
        uas = subprocess.Popen(
            [
                "sipp",
                "-nostdin",
                "-i",
                "127.0.0.1",
                "-p",
                str(uas_port),
                "-sf",
                os.path.join(HERE, "uas_bench.xml"),
                "-timeout",
                "900s",
            ],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(uas)
        reg = sipp(
            [
                "-sf",
                os.path.join(HERE, "register_bench.xml"),
                "-inf",
                users,
                "-m",
                str(args.users),
                "-r",
                "500",
                "-key",
                "contact_port",
                str(uas_port),
                "-timeout",
                "120s",
                target,
            ],
            folder,
            180,
        )
        if reg.returncode != 0:
            raise SystemExit("registration failed:\n" + reg.stdout[-2000:])
        print(f"proxy {target}; {args.users} users registered; {args.step_seconds} s per step")
        print(
            f"{'rate':>5} {'attempted':>9} {'completed':>9} {'failed':>6} {'retrans':>7} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'cpu %':>6} {'rss MiB':>8}"
        )
        for rate in (int(r) for r in args.rates.split(",")):
            step = os.path.join(folder, f"rate-{rate}")
            os.makedirs(step)
            calls = rate * args.step_seconds
            cpu0 = cpu_seconds(pid) if pid else 0.0
            run = subprocess.Popen(
                [
                    "sipp",
                    "-nostdin",
                    "-i",
                    "127.0.0.1",
                    "-sf",
                    os.path.join(HERE, "uac_bench.xml"),
                    "-inf",
                    users,
                    "-r",
                    str(rate),
                    "-m",
                    str(calls),
                    "-trace_stat",
                    "-fd",
                    "1",
                    "-trace_rtt",
                    "-rtt_freq",
                    "1",
                    "-timeout",
                    f"{args.step_seconds + 60}s",
                    target,
                ],
                cwd=step,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started.append(run)
            # CPU while the calls are being placed (the step's window), not while SIPp waits
            # for stragglers afterwards.
            time.sleep(args.step_seconds)
            cpu = 100 * (cpu_seconds(pid) - cpu0) / args.step_seconds if pid else float("nan")
            rss = rss_mib(pid) if pid else float("nan")
            run.wait(args.step_seconds + 90)
            stats = last_stats(step, "uac_bench_*_.csv")
            done = int(stats.get("SuccessfulCall(C)", 0))
            failed = int(stats.get("FailedCall(C)", 0))
            attempted = int(stats.get("OutgoingCall(C)", done + failed))
            retrans = int(stats.get("Retransmissions(C)", 0))
            times = setup_times(step)
            print(
                f"{rate:>5} {attempted:>9} {done:>9} {failed:>6} {retrans:>7} "
                f"{percentile(times, 50):>7.1f} {percentile(times, 99):>7.1f} {cpu:>6.0f} "
                f"{rss:>8.1f}",
                flush=True,
            )
            if run.returncode not in (0, 1) or failed > 0.05 * max(attempted, 1):
                print("more than 5 % failed: stopping here")
                break
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        print(f"(SIPp logs in {folder})")


if __name__ == "__main__":
    main()
