"""
Memory benchmark: what a finished call leaves in the proxy core while its transactions
linger (64*T1 after the last response: RFC 3261 Timers J/K/D, RFC 6026 Timers L/M), and
what is left once they are over.

    .venv/bin/python bench/memory.py [--seconds 40] [--rate 200] [--top 0]

Drives the call flow of bench/routescript.py (INVITE/180/200/ACK/BYE/200 to a registered
user, sbc's own routing policy, no sockets) with a fake clock advancing at C{--rate}
calls/s for C{--seconds} (longer than 64*T1, so that the window is in its steady state),
firing every timer as it comes due.  Figures are C{tracemalloc}'s: bytes
allocated and still alive, measured against the proxy before the first call.

 - retained/call: right after the last call, divided by the calls whose transactions still
   linger (those finished within the last 64*T1).
 - left over: 64*T1 + 1 s after the last call, when every per-call table must be empty.

The parser's bounded caches (parsed values, header lines) are emptied before each figure and their
size printed on its own: they are not per-call state.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from routescript import make_proxy, one_call  # noqa: E402

from sbc.core import routes_default  # noqa: E402
from sbc.core.caches import clear_parse_caches  # noqa: E402
from sbc.core.proxy import Proxy  # noqa: E402


def settle(proxy: Proxy, now: float) -> None:
    """Fire every timer due by C{now}."""
    while (deadline := proxy.next_deadline()) is not None and deadline <= now:
        proxy.handle_timer(deadline)


def traced() -> int:
    """Bytes alive now (after a full collection, parser caches emptied)."""
    clear_parse_caches()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def measure(calls: int, rate: float, top: int = 0) -> dict[str, float]:
    """Run C{calls} calls at C{rate} calls/s; bytes retained per lingering call and bytes
    left after 64*T1 (see the module docstring)."""
    proxy = make_proxy(routes_default)
    window = 64 * proxy.settings.timers.t1
    start = 1.0
    one_call(proxy, -1, start - 1.0)  # warm up caches and lazily built tables
    settle(proxy, start - 1.0 + window + 1)
    tracemalloc.start(25 if top else 1)
    base = traced()
    cached = 0
    before = tracemalloc.take_snapshot() if top else None
    now = start
    for n in range(calls):
        now = start + n / rate
        settle(proxy, now)
        one_call(proxy, n, now)
    lingering = sum(1 for n in range(calls) if start + n / rate > now - window)
    gc.collect()
    cached = tracemalloc.get_traced_memory()[0]
    held = traced() - base
    cached -= held + base
    if before is not None:
        stats = tracemalloc.take_snapshot().compare_to(before, "traceback")
        for stat in stats[:top]:
            print(f"{stat.size_diff / lingering:8.0f} B/call {stat.count_diff:8d} blocks")
            for line in stat.traceback.format()[-8:]:
                print("   ", line)
    sizes = proxy.sizes()
    settle(proxy, now + window + 1)
    left = traced() - base
    tracemalloc.stop()
    return {
        "lingering": lingering,
        "retained_per_call": held / lingering,
        "left_over": left,
        "parser_caches": cached,
        "server_transactions": sizes["server_transactions"],
        "client_transactions": sizes["client_transactions"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seconds", type=float, default=40.0, help="of calls")
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--top", type=int, default=0, help="print the N biggest sites")
    args = parser.parse_args()
    calls = int(args.seconds * args.rate)
    result = measure(calls, args.rate, args.top)
    print(
        f"{calls} calls at {args.rate:g} calls/s: {result['lingering']} lingering "
        f"({result['server_transactions']} server, {result['client_transactions']} client "
        "transactions)"
    )
    print(f"retained per finished call: {result['retained_per_call']:.0f} bytes")
    print(f"left over after 64*T1: {result['left_over']:.0f} bytes")
    print(f"(parser LRU caches, bounded, not counted: {result['parser_caches']:.0f} bytes)")


if __name__ == "__main__":
    main()
