"""
What a UDP send costs the sender when it wakes a receiver sleeping on the other core, alone
and in bursts: why sbc's UDP sockets send what a reactor pass produced together
(L{sbc.net.udp.SipDatagramProtocol}).

    .venv/bin/python bench/sendto_wakeup.py [--datagrams 20000]

A child process on core 1 blocks in C{recv} on a loopback socket; this process, on core 0,
sends 600-byte datagrams with about 150 µs of busy work per datagram between bursts (as a
proxy handling messages would), and times only the C{sendto} calls.  The child stops by
itself 3 s after the last datagram.
"""

from __future__ import annotations

import argparse
import os
import socket
import time


def _receive(sock: socket.socket) -> None:
    os.sched_setaffinity(0, {1})
    sock.settimeout(3)
    try:
        while True:
            sock.recv(2048)
    except OSError:
        pass


def sendto_cost(burst: int, datagrams: int) -> float:
    """Microseconds of sender time per C{sendto}, in bursts of C{burst}."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    address = receiver.getsockname()
    child = os.fork()
    if child == 0:
        try:
            _receive(receiver)
        finally:
            os._exit(0)
    receiver.close()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = b"x" * 600
    spent = 0.0
    try:
        for _ in range(datagrams // burst):
            until = time.perf_counter() + 150e-6 * burst
            while time.perf_counter() < until:
                pass
            started = time.perf_counter()
            for _ in range(burst):
                sender.sendto(data, address)
            spent += time.perf_counter() - started
    finally:
        sender.close()
        os.waitpid(child, 0)
    return spent / (datagrams // burst * burst) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--datagrams", type=int, default=20000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    for burst in (1, 2, 4, 8):
        print(f"bursts of {burst}: {sendto_cost(burst, args.datagrams):5.1f} us per sendto")


if __name__ == "__main__":
    main()
