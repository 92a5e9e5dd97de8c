"""
Registration benchmark: 100,000 distinct users REGISTER with sbc and with Kamailio 5.6.

    .venv/bin/python bench/registrations.py                    # both, 100,000 users
    .venv/bin/python bench/registrations.py --only sbc --users 20000

The users are split over rising rates (--rates) so that every step lasts about as long;
each step registers its own users (SIPp, bench/register_bench.xml, one REGISTER each).  Per
step: REGISTERs placed and answered 200, failed %, retransmissions, the rate achieved (200s
over SIPp's own run time), the proxy's CPU % and CPU microseconds per REGISTER (CPU of the
whole SIPp run / REGISTERs placed).  Clean: under 1 % failed and at least 95 % of the rate
achieved.  At the end, memory per binding: (RSS after - RSS before) / bindings, the RSS
taken --settle seconds after the last REGISTER so that its transactions have expired; for
Kamailio also its used shared memory (kamcmd core.shmmem) per binding, the better figure,
since the RSS sum counts a shared page once per process that touched it.  The proxy runs on
core 0 and SIPp on core 1, as in bench/compare.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from calls import (  # noqa: E402
    CLEAN,
    PROXY_CORE,
    SIPP_CORE,
    core_busy_seconds,
    cpu_seconds,
    free_port,
    process_tree,
    register,
    rss_mib,
    stat_rows,
    wait_until_quiet,
    write_users,
)
from compare import (  # noqa: E402
    PROXIES,
    ensure_kamailio,
    gc_line,
    kamailio_shm_mib,
    proxy_running,
)


@dataclass
class Step:
    """One rate: SIPp's counts and the proxy's CPU over the whole SIPp run."""

    rate: int
    placed: int
    registered: int
    failed: int
    retrans: int
    seconds: float
    cpu_seconds: float
    other_seconds: float

    @property
    def achieved(self) -> float:
        return self.registered / self.seconds if self.seconds else 0.0

    @property
    def failed_share(self) -> float:
        return self.failed / max(self.placed, 1)

    @property
    def clean(self) -> bool:
        return self.failed_share < CLEAN and self.achieved >= 0.95 * self.rate


HEADER = (
    f"{'rate':>5} {'placed':>7} {'200 OK':>7} {'failed %':>8} {'retrans':>7} {'REG/s':>6} "
    f"{'cpu %':>6} {'cpu us/REG':>10} {'others %':>8}"
)


def format_step(step: Step) -> str:
    seconds = max(step.seconds, 1e-9)
    return (
        f"{step.rate:>5} {step.placed:>7} {step.registered:>7} {100 * step.failed_share:>8.2f} "
        f"{step.retrans:>7} {step.achieved:>6.0f} {100 * step.cpu_seconds / seconds:>6.0f} "
        f"{1e6 * step.cpu_seconds / max(step.placed, 1):>10.0f} "
        f"{100 * step.other_seconds / seconds:>8.0f}"
    )


def sipp_seconds(stats: dict[str, str]) -> float:
    """From SIPp's start to its last stat row (the epoch is the last tab-separated field
    of C{StartTime} and C{CurrentTime}); 0.0 if they are missing."""
    try:
        start = float(stats["StartTime"].split("\t")[-1])
        return float(stats["CurrentTime"].split("\t")[-1]) - start
    except (KeyError, ValueError):
        return 0.0


def split(users: int, rates: list[int]) -> list[int]:
    """Users per rate, proportional to the rate (equal step lengths), summing to C{users}."""
    shares = [users * rate // sum(rates) for rate in rates]
    shares[-1] += users - sum(shares)
    return shares


def run_proxy(
    name: str, folder: str, users: int, rates: list[int], quiet: float, settle: float
) -> None:
    with proxy_running(name, folder, PROXY_CORE) as running:
        proxy, target, here = running.process, running.target, running.folder
        contact_port = free_port()  # nobody calls these users: nothing needs to listen
        time.sleep(1)
        rss_before = rss_mib(process_tree(proxy.pid))
        shm_before = kamailio_shm_mib(here) if name == "kamailio" else None
        print(HEADER, flush=True)
        first = 0
        steps: list[Step] = []
        for rate, count in zip(rates, split(users, rates), strict=True):
            step_folder = os.path.join(here, f"rate-{rate}")
            os.makedirs(step_folder)
            csv = write_users(os.path.join(step_folder, "users.csv"), "sbc.test", count, first)
            first += count
            wait_until_quiet([PROXY_CORE, SIPP_CORE], quiet)
            pids = process_tree(proxy.pid)
            cpu0, busy0, t0 = cpu_seconds(pids), core_busy_seconds(PROXY_CORE), time.monotonic()
            run = register(
                target, csv, count, contact_port, step_folder, SIPP_CORE, rate, timeout=120
            )
            cpu = cpu_seconds(process_tree(proxy.pid)) - cpu0
            busy = core_busy_seconds(PROXY_CORE) - busy0
            stats = stat_rows(step_folder, "register_bench_*_.csv")[-1]
            seconds = sipp_seconds(stats) or time.monotonic() - t0
            step = Step(
                rate=rate,
                placed=int(stats.get("OutgoingCall(C)", 0)),
                registered=int(stats.get("SuccessfulCall(C)", 0)),
                failed=int(stats.get("FailedCall(C)", 0)),
                retrans=int(stats.get("Retransmissions(C)", 0)),
                seconds=seconds,
                cpu_seconds=cpu,
                other_seconds=max(0.0, busy - cpu),
            )
            steps.append(step)
            print(format_step(step), flush=True)
            if run.returncode not in (0, 1) and step.placed == 0:
                raise SystemExit(f"{name}: SIPp failed:\n" + run.stdout[-2000:])
        bound = sum(step.registered for step in steps)
        clean = [step.rate for step in steps if step.clean]
        print(f"{name}: highest clean REGISTER rate {max(clean) if clean else 'none'}/s")
        time.sleep(2)
        rss_loaded = rss_mib(process_tree(proxy.pid))
        # Server transactions of the last REGISTERs (and their retransmissions) linger for
        # wt_timer (5 s in both by default; RFC 3261's Timer J is 32 s over UDP): wait them
        # out before counting the bindings.
        time.sleep(settle)
        rss_after = rss_mib(process_tree(proxy.pid))
        line = (
            f"{name}: {bound} bindings; RSS {rss_before:.1f} MiB before, {rss_loaded:.1f} MiB "
            f"2 s after the last REGISTER, {rss_after:.1f} MiB {settle:.0f} s later = "
            f"{(rss_after - rss_before) * 2**20 / max(bound, 1):.0f} bytes per binding"
        )
        if name == "kamailio":
            shm_after = kamailio_shm_mib(here)
            if shm_before is not None and shm_after is not None:
                line += (
                    f"; shm used {shm_before:.1f} -> {shm_after:.1f} MiB = "
                    f"{(shm_after - shm_before) * 2**20 / max(bound, 1):.0f} bytes per binding"
                )
            else:
                line += "; kamcmd core.shmmem unavailable"
        print(line, flush=True)
    if name == "sbc":
        print(gc_line(here) or "gc: no shutdown line", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000", help="REGISTER/s steps")
    parser.add_argument("--only", action="append", choices=PROXIES, help="this proxy only")
    parser.add_argument(
        "--quiet-wait", type=float, default=30, help="seconds to wait for idle cores per step"
    )
    parser.add_argument(
        "--settle", type=float, default=35, help="seconds to wait before the final RSS"
    )
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    if "kamailio" in (args.only or PROXIES):
        ensure_kamailio()
    rates = [int(rate) for rate in args.rates.split(",")]
    folder = tempfile.mkdtemp(prefix="sbc-registrations-")
    try:
        for name in args.only or PROXIES:
            print(f"\n== {name}: {args.users} users over {args.rates} REGISTER/s", flush=True)
            run_proxy(name, folder, args.users, rates, args.quiet_wait, args.settle)
    finally:
        print(f"(logs in {folder})")


if __name__ == "__main__":
    main()
