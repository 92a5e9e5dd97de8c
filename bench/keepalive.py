"""
Keepalive engine benchmark (memory and CPU per endpoint): 100 000 synthetic NAT endpoints.

    .venv/bin/python bench/keepalive.py [--endpoints 100000] [--interval 30]

Prints the memory each endpoint costs in the table (tracemalloc) and the CPU share the
engine needs to ping all of them once per interval (one tick per second, as the service
runs it), for 4-byte pings and for SIP OPTIONS pings (messages built, not sent).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from random import Random

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sbc.core.address import Address  # noqa: E402
from sbc.core.keepalive import KeepaliveSettings, KeepaliveTable  # noqa: E402

SOCKET = Address("udp", "203.0.113.1", 5060)


def fill(table: KeepaliveTable, count: int) -> None:
    for i in range(count):
        address = Address(
            "udp", f"198.{51 + i // 65025}.{(i // 255) % 255}.{i % 255 + 1}", 1024 + i % 60000
        )
        table.registered(address, SOCKET, 1e12, 0.0, natted=True)


def measure(method: str, count: int, interval: int) -> tuple[float, float]:
    settings = KeepaliveSettings(
        style="nathelper", interval=interval, method=method, from_uri="sip:pinger@sbc.test"
    )
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = KeepaliveTable(settings, Random(1))
    fill(table, count)
    per_endpoint = (tracemalloc.get_traced_memory()[0] - before) / count
    tracemalloc.stop()
    started = time.process_time()
    sent = 0
    for second in range(interval):
        sent += len(table.tick(float(second)))
    cpu = time.process_time() - started
    assert sent == count, (sent, count)
    return per_endpoint, 100 * cpu / interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--interval", type=int, default=30)
    args = parser.parse_args()
    print(f"{args.endpoints} endpoints, {args.interval} s interval, one core")
    print(f"{'ping':8} {'bytes/endpoint':>15} {'CPU share':>10}")
    for method in ("udp4", "OPTIONS"):
        per_endpoint, share = measure(method, args.endpoints, args.interval)
        print(f"{method:8} {per_endpoint:15.0f} {share:9.1f}%")


if __name__ == "__main__":
    main()
