"""
Call benchmark: calls per second through sbc (SIPp calls through a proxy at rising rates).

    .venv/bin/python bench/calls.py                       # starts sbc itself
    .venv/bin/python bench/calls.py --pin                 # sbc on core 0, SIPp on core 1
    .venv/bin/python bench/calls.py --profile var/sbc.pstats   # cProfile over the real engine
    .venv/bin/python bench/calls.py --proxy 127.0.0.1:5060 --pid 1234   # any other proxy

It registers --users users (SIPp, one REGISTER each, Contact = the benchmark UAS), then for
each rate in --rates drives INVITE/100/180/200/ACK/BYE/200 calls for --step-seconds and
prints: attempted, completed, failed, retransmissions, p50/p99 setup time (INVITE to 200),
the proxy's CPU % (summed over its process tree), CPU microseconds per call placed and RSS.
Every SIPp run is bounded by its call count and a timeout; everything started here is
stopped by PID.  bench/compare.py imports the functions below.
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
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
#: With --pin: the proxy runs on the first core, every SIPp process on the second.
PROXY_CORE = 0
SIPP_CORE = 1
#: A step counts as clean below this share of failed calls.
CLEAN = 0.01


@dataclass
class Row:
    """One step of the ladder: SIPp's counts and the proxy's resources in the step window."""

    rate: int
    attempted: int
    completed: int
    failed: int
    retrans: int
    p50_ms: float
    p99_ms: float
    cpu_percent: float
    cpu_us_per_call: float
    rss_mib: float
    #: CPU % of the proxy's core used by processes other than the proxy (None: not pinned).
    other_percent: Optional[float] = None
    #: Garbage collections during the step, and those over 5 ms (sbc's /metrics only).
    gc_count: Optional[int] = None
    gc_slow: Optional[int] = None
    gc_seconds: Optional[float] = None
    #: SIPp had to be stopped (it did not end within its timeout and a margin).
    overran: bool = False

    @property
    def failed_share(self) -> float:
        return self.failed / max(self.attempted, 1)

    @property
    def clean(self) -> bool:
        return self.attempted > 0 and self.failed_share < CLEAN


def free_port() -> int:
    """A UDP port on loopback nobody holds right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """C{pid} and all its descendants (Kamailio forks its workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes together."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pids: Sequence[int]) -> float:
    """Resident memory of these processes together, MiB (shared pages counted per process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def core_busy_seconds(core: int) -> float:
    """Seconds core C{core} spent busy (not idle or waiting for I/O), from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                ticks = [int(value) for value in line.split()[1:]]
                return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    raise ValueError(f"no cpu{core} in /proc/stat")


def wait_until_quiet(cores: Sequence[int], seconds: float = 30, busy: float = 0.1) -> float:
    """Wait (at most C{seconds}) until each of C{cores} is below C{busy} load over one
    second, so that a step does not share its cores with someone else's work; returns the
    last busiest share seen."""
    deadline = time.monotonic() + seconds
    while True:
        before = [core_busy_seconds(core) for core in cores]
        time.sleep(1)
        worst = max(core_busy_seconds(core) - b for core, b in zip(cores, before, strict=True))
        if worst < busy or time.monotonic() > deadline:
            return worst


def pinned(command: list[str], core: Optional[int]) -> list[str]:
    """C{command} run on one core with taskset (children inherit it), or as it is."""
    return command if core is None else ["taskset", "-c", str(core), *command]


def start_sbc(
    folder: str,
    port: int,
    core: Optional[int] = None,
    profile: Optional[str] = None,
    metrics_port: Optional[int] = None,
) -> subprocess.Popen:
    """Start sbc under twistd on a bench config (loopback only) and wait until it listens.

    @param profile: write a cProfile pstats file there (twistd's own --profile).
    @param metrics_port: serve /metrics on loopback at that port."""
    config = os.path.join(folder, "bench.ini")
    with open(config, "w") as f:
        f.write(
            f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
            "[registrar]\nmax_expires = 3600\nmax_contacts = 10\n"
        )
        if metrics_port:
            f.write(f"[manhole]\nmetrics_listen = tcp:{metrics_port}:interface=127.0.0.1\n")
    command = [TWISTD, "--pidfile=", "-n"]
    if profile:
        profile = os.path.abspath(profile)
        os.makedirs(os.path.dirname(profile), exist_ok=True)
        command += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
    log = os.path.join(folder, "sbc.log")
    process = subprocess.Popen(
        pinned([*command, "sbc", "--config", config], core),
        cwd=ROOT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    wait_for_line(process, log, "listening on", "sbc")
    return process


def wait_for_line(process: subprocess.Popen, log: str, text: str, name: str) -> None:
    """Wait (20 s at most) for C{text} in the log of a process just started."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(log, errors="replace") as f:
            if text in f.read():
                return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    stop([process])
    raise SystemExit(f"{name} did not start; see {log}")


def stop(processes: Sequence[subprocess.Popen], grace: float = 15) -> None:
    """SIGTERM what we started (newest first), SIGKILL what is still there after C{grace}."""
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def sipp_command(args: list[str], core: Optional[int]) -> list[str]:
    return pinned(["sipp", "-nostdin", "-i", "127.0.0.1", *args], core)


def write_users(path: str, domain: str, count: int, first: int = 0) -> str:
    """A SIPp CSV of C{count} distinct users bench<first>..; returns C{path}."""
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        f.writelines(f"bench{i};{domain}\n" for i in range(first, first + count))
    return path


def start_uas(folder: str, core: Optional[int]) -> tuple[subprocess.Popen, int]:
    """The benchmark callee (bench/uas_bench.xml), bounded to 15 minutes."""
    port = free_port()
    uas = subprocess.Popen(
        sipp_command(
            ["-p", str(port), "-sf", os.path.join(HERE, "uas_bench.xml"), "-timeout", "900s"],
            core,
        ),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return uas, port


def register(
    target: str,
    users: str,
    count: int,
    contact_port: int,
    folder: str,
    core: Optional[int],
    rate: int = 500,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """REGISTER C{count} users of the CSV C{users} with Contacts at C{contact_port}."""
    return subprocess.run(
        sipp_command(
            [
                "-sf",
                os.path.join(HERE, "register_bench.xml"),
                "-inf",
                users,
                "-m",
                str(count),
                "-r",
                str(rate),
                "-key",
                "contact_port",
                str(contact_port),
                "-trace_stat",
                "-fd",
                "1",
                "-timeout",
                f"{timeout:.0f}s",
                target,
            ],
            core,
        ),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )


def stat_rows(folder: str, pattern: str) -> list[dict[str, str]]:
    """Every row of the SIPp -trace_stat file matching C{pattern} in C{folder}."""
    [path] = glob.glob(os.path.join(folder, pattern))
    with open(path) as f:
        rows = list(csv.reader(f, delimiter=";"))
    return [dict(zip(rows[0], row, strict=False)) for row in rows[1:]]


def elapsed_seconds(value: str) -> float:
    """SIPp's C{ElapsedTime(C)} (C{HH:MM:SS:uuuuuu} or C{HH:MM:SS.uuuuuu}) in seconds."""
    hours, minutes, rest = value.split(":", 2)
    seconds = rest.replace(":", ".", 1)
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def placed_within(rows: list[dict[str, str]], window: float) -> int:
    """Calls SIPp had started when C{window} seconds had passed (its 1 s stat rows)."""
    placed = 0
    for row in rows:
        try:
            if elapsed_seconds(row["ElapsedTime(C)"]) > window + 0.5:
                break
        except (KeyError, ValueError):
            continue
        placed = int(row.get("OutgoingCall(C)", placed))
    return placed


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


def gc_pauses(
    metrics_port: Optional[int],
) -> tuple[Optional[int], Optional[int], Optional[float]]:
    """sbc's collections so far, those over 5 ms and the seconds they took in all, from
    C{sbc_gc_pause_seconds}."""
    if not metrics_port:
        return None, None, None
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None, None, None  # sbc too busy to answer in time
    count = fast = seconds = 0.0
    for line in text.splitlines():
        if line.startswith("sbc_gc_pause_seconds_count "):
            count = float(line.split()[1])
        elif line.startswith("sbc_gc_pause_seconds_sum "):
            seconds = float(line.split()[1])
        elif line.startswith('sbc_gc_pause_seconds_bucket{le="0.005"}'):
            fast = float(line.split()[1])
    return int(count), int(count - fast), seconds


def run_step(
    target: str,
    pids: Callable[[], Sequence[int]],
    users: str,
    rate: int,
    step_seconds: int,
    folder: str,
    core: Optional[int] = None,
    metrics_port: Optional[int] = None,
    proxy_core: Optional[int] = None,
) -> Row:
    """C{rate} calls/s for C{step_seconds}: SIPp's counts, the proxy's CPU in that window."""
    step = os.path.join(folder, f"rate-{rate}")
    os.makedirs(step)
    gc0 = gc_pauses(metrics_port)
    measured = bool(pids())
    cpu0 = cpu_seconds(pids())
    busy0 = core_busy_seconds(proxy_core) if proxy_core is not None else 0.0
    run = subprocess.Popen(
        sipp_command(
            [
                "-sf",
                os.path.join(HERE, "uac_bench.xml"),
                "-inf",
                users,
                "-r",
                str(rate),
                "-m",
                str(rate * step_seconds),
                "-trace_stat",
                "-fd",
                "1",
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-timeout",
                f"{step_seconds + 30}s",
                target,
            ],
            core,
        ),
        cwd=step,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # CPU while the calls are being placed (the step's window), not while SIPp waits
        # for stragglers afterwards.
        time.sleep(step_seconds)
        cpu = cpu_seconds(pids()) - cpu0 if measured else float("nan")
        busy = core_busy_seconds(proxy_core) - busy0 if proxy_core is not None else None
        rss = rss_mib(pids()) if measured else float("nan")
        try:
            run.wait(step_seconds + 45)
            overran = False
        except subprocess.TimeoutExpired:
            overran = True  # its stat file has a row per second: count what it had
    finally:
        stop([run])
    gc1 = gc_pauses(metrics_port)
    rows = stat_rows(step, "uac_bench_*_.csv")
    stats = rows[-1]
    done = int(stats.get("SuccessfulCall(C)", 0))
    attempted = int(stats.get("OutgoingCall(C)", 0))
    # A call still open when SIPp ended did not complete either.
    failed = max(int(stats.get("FailedCall(C)", 0)), attempted - done)
    placed = placed_within(rows, step_seconds) or int(stats.get("OutgoingCall(C)", 0))
    times = setup_times(step)
    return Row(
        rate=rate,
        attempted=attempted,
        completed=done,
        failed=failed,
        retrans=int(stats.get("Retransmissions(C)", 0)),
        p50_ms=percentile(times, 50),
        p99_ms=percentile(times, 99),
        cpu_percent=100 * cpu / step_seconds,
        cpu_us_per_call=1e6 * cpu / placed if placed else float("nan"),
        rss_mib=rss,
        other_percent=None if busy is None else max(0.0, 100 * (busy - cpu) / step_seconds),
        gc_count=None if gc0[0] is None or gc1[0] is None else gc1[0] - gc0[0],
        gc_slow=None if gc0[1] is None or gc1[1] is None else gc1[1] - gc0[1],
        gc_seconds=None if gc0[2] is None or gc1[2] is None else gc1[2] - gc0[2],
        overran=overran,
    )


HEADER = (
    f"{'rate':>5} {'attempted':>9} {'completed':>9} {'failed %':>8} {'retrans':>7} "
    f"{'p50 ms':>7} {'p99 ms':>7} {'cpu %':>6} {'cpu us/call':>11} {'rss MiB':>8}"
)


def format_row(row: Row) -> str:
    line = (
        f"{row.rate:>5} {row.attempted:>9} {row.completed:>9} {100 * row.failed_share:>8.2f} "
        f"{row.retrans:>7} {row.p50_ms:>7.1f} {row.p99_ms:>7.1f} {row.cpu_percent:>6.0f} "
        f"{row.cpu_us_per_call:>11.0f} {row.rss_mib:>8.1f}"
    )
    if row.other_percent is not None:
        line += f"  others {row.other_percent:.0f} %"
    if row.overran:
        line += "  (SIPp stopped: it overran its timeout)"
    if row.gc_count is not None:
        line += f"  gc {row.gc_count} ({row.gc_slow} > 5 ms"
        if row.gc_seconds is not None:
            line += f", {1000 * row.gc_seconds:.0f} ms in all"
        line += ")"
    return line


def run_steps(
    target: str,
    pids: Callable[[], Sequence[int]],
    users: str,
    rates: Sequence[int],
    step_seconds: int,
    folder: str,
    core: Optional[int] = None,
    metrics_port: Optional[int] = None,
    stop_share: float = 0.05,
    proxy_core: Optional[int] = None,
    quiet_wait: float = 30,
) -> list[Row]:
    """The ladder: one L{run_step} per rate, printed as it goes; stops after a step where
    more than C{stop_share} of the calls failed.  When pinned, each step first waits (up
    to C{quiet_wait} s) for both cores to be quiet, and reports what others used on the
    proxy's core ("others %")."""
    print(HEADER, flush=True)
    rows: list[Row] = []
    for rate in rates:
        if proxy_core is not None and core is not None:
            wait_until_quiet([proxy_core, core], quiet_wait)
        row = run_step(
            target, pids, users, rate, step_seconds, folder, core, metrics_port, proxy_core
        )
        rows.append(row)
        print(format_row(row), flush=True)
        if row.failed_share > stop_share or row.attempted == 0:
            print(f"more than {100 * stop_share:.0f} % failed: stopping here", flush=True)
            break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--proxy", help="host:port of a running proxy (default: start sbc)")
    parser.add_argument("--pid", type=int, help="PID of that proxy (its children count too)")
    parser.add_argument("--domain", default="sbc.test", help="domain the proxy serves")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rates", default="50,100,200,300,400", help="calls/s per step")
    parser.add_argument("--step-seconds", type=int, default=10)
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"run the sbc started here on core {PROXY_CORE} and SIPp on core {SIPP_CORE}",
    )
    parser.add_argument("--profile", help="cProfile sbc under twistd into this pstats file")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    if args.proxy and args.profile:
        raise SystemExit("--profile needs the sbc started here (no --proxy)")
    proxy_core = PROXY_CORE if args.pin else None
    sipp_core = SIPP_CORE if args.pin else None

    folder = tempfile.mkdtemp(prefix="sbc-bench-")
    started: list[subprocess.Popen] = []
    try:
        metrics_port = None
        if args.proxy:
            target, pid = args.proxy, args.pid
        else:
            port, metrics_port = free_port(), free_port()
            sbc = start_sbc(folder, port, proxy_core, args.profile, metrics_port)
            started.append(sbc)
            target, pid = f"127.0.0.1:{port}", sbc.pid
        users = write_users(os.path.join(folder, "users.csv"), args.domain, args.users)
        uas, uas_port = start_uas(folder, sipp_core)
        started.append(uas)
        reg = register(target, users, args.users, uas_port, folder, sipp_core)
        if reg.returncode != 0:
            raise SystemExit("registration failed:\n" + reg.stdout[-2000:])
        print(f"proxy {target}; {args.users} users registered; {args.step_seconds} s per step")
        run_steps(
            target,
            (lambda: process_tree(pid)) if pid else list,
            users,
            [int(r) for r in args.rates.split(",")],
            args.step_seconds,
            folder,
            sipp_core,
            metrics_port,
            proxy_core=proxy_core if args.proxy is None else None,
        )
    finally:
        stop(started)
        if args.profile:
            print(f"profile: {os.path.abspath(args.profile)} (python -m pstats)")
        print(f"(SIPp logs in {folder})")


if __name__ == "__main__":
    main()
