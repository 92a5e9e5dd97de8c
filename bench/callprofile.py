"""
Where a call's time goes in the proxy core: the call flow of bench/routescript.py
(INVITE/180/200/ACK/BYE/200 from a NATed caller to a registered user, sbc's own policy,
parsing included, no sockets) under cProfile.

    .venv/bin/python bench/callprofile.py [--calls 5000] [--top 25] [--out var/profile.pstats]

Prints microseconds per call and the top functions by own time; the pstats file can be
read with `python -m pstats FILE` (or turned into a flame graph by any pstats viewer).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from routescript import run  # noqa: E402

from sbc.core import routes_default  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=os.path.join("var", "profile.pstats"))
    args = parser.parse_args()
    run(routes_default, 300)  # warm up
    seconds = run(routes_default, args.calls)
    print(f"{args.calls} calls: {seconds / args.calls * 1e6:.0f} us/call without the profiler")
    profiler = cProfile.Profile()
    profiler.enable()
    run(routes_default, args.calls)
    profiler.disable()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    profiler.dump_stats(args.out)
    stats = pstats.Stats(args.out)
    stats.sort_stats("tottime").print_stats(args.top)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
