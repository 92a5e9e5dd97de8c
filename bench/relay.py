"""
Media relay benchmark: packets per second relayed and latency added, for the
built-in relay (sbc.net.relay, one Python process) and, when installed, rtpengine in
userspace mode, both on loopback.

    .venv/bin/python bench/relay.py                          # 1, 10, 100 sessions + flood
    .venv/bin/python bench/relay.py --sessions 1 10 --seconds 5 --no-rtpengine

Each session is a call with two endpoints; both send 172-byte RTP packets (12-byte header,
160 bytes of payload) at 50 packets/s through the relay, so one session is 100 relayed
packets/s.  The flood run keeps --window packets in flight through --flood-sessions
sessions as fast as the relay takes them.  For each run the table gives the packets sent
and received, the relayed rate, the relay's CPU share (all its threads), the rate that one
fully busy core would relay (rate / CPU share), and the one-way latency through the relay
(p50/p99; the direct row is the same load between the endpoints with no relay, so the
difference is what the relay adds).  The relay and rtpengine run as child processes, are
stopped by PID, and every run is bounded (--seconds, at most 30).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from sbc.core.ng import (  # noqa: E402
    answer_command,
    decode_message,
    encode_message,
    offer_command,
    ping_command,
)
from sbc.core.sdp import media_streams  # noqa: E402

LOOPBACK = "127.0.0.1"
PAYLOAD = 160
PPS = 50
MAX_SECONDS = 30.0
#: rtpengine's worker threads (--rtpengine-threads): 1 compares one core with one core.
RTPENGINE_THREADS = 1


def sdp(port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_range(count: int) -> int:
    """An even port with `count` ports after it, all free a moment ago."""
    for _ in range(200):
        base = (free_udp_port() & ~1) % 20000 + 30000
        try:
            for port in range(base, base + count):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((LOOPBACK, port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when this script dies (Linux PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- the built-in relay in its own process -------------------------------------------------------


def serve_relay() -> None:
    """Child mode: read the calls to set up on stdin, print their relay ports, relay."""
    from twisted.internet import reactor

    from sbc.core.address import Address
    from sbc.net.relay import RtpRelay

    request = json.loads(sys.stdin.readline())
    relay = RtpRelay(
        LOOPBACK, request["port_min"], request["port_max"], 60, bind_host=LOOPBACK, reactor=reactor
    )
    relay.startService()
    source = Address("udp", LOOPBACK, 5060)
    ports = []
    for n, (a_port, b_port) in enumerate(request["sessions"]):
        results: list[bytes] = []
        relay.offer(f"call-{n}", "A", None, sdp(a_port), source).addCallback(results.append)
        relay.answer(f"call-{n}", "A", "B", sdp(b_port), source).addCallback(results.append)
        offer, answer = results
        ports.append([media_streams(answer)[0].port, media_streams(offer)[0].port])
    print(json.dumps({"ports": ports}), flush=True)
    reactor.run()


def start_relay(pairs: list[tuple[int, int]]) -> tuple[subprocess.Popen, list[tuple[int, int]]]:
    base = port_range(4 * len(pairs) + 8)
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve-relay"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    assert process.stdin is not None and process.stdout is not None
    request = {"port_min": base, "port_max": base + 4 * len(pairs) + 7, "sessions": pairs}
    process.stdin.write(json.dumps(request) + "\n")
    process.stdin.flush()
    ready, _, _ = select.select([process.stdout], [], [], 20)
    if not ready:
        stop(process)
        raise RuntimeError("the relay did not start")
    ports = json.loads(process.stdout.readline())["ports"]
    return process, [(a, b) for a, b in ports]


# -- rtpengine -----------------------------------------------------------------------------------


class NgControl:
    """A blocking ng client, enough for setting up the benchmark calls."""

    def __init__(self, port: int) -> None:
        self.address = (LOOPBACK, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.5)
        self.sequence = 0

    def command(self, message: dict, tries: int = 4) -> dict:
        self.sequence += 1
        cookie = f"bench_{self.sequence}"
        for _ in range(tries):
            self.sock.sendto(encode_message(cookie, message), self.address)
            try:
                while True:
                    got, reply = decode_message(self.sock.recv(65535))
                    if got == cookie:
                        if reply.get("result") not in ("ok", "pong"):
                            raise RuntimeError(f"rtpengine: {reply}")
                        return reply
            except TimeoutError:
                continue
        raise RuntimeError("rtpengine did not answer")

    def close(self) -> None:
        self.sock.close()


def start_rtpengine(
    pairs: list[tuple[int, int]], folder: str
) -> tuple[subprocess.Popen, list[tuple[int, int]]]:
    rtpengine = shutil.which("rtpengine")
    assert rtpengine is not None
    ng_port = free_udp_port()
    base = port_range(4 * len(pairs) + 40)
    log = open(os.path.join(folder, "rtpengine.log"), "ab")
    process = subprocess.Popen(
        [
            rtpengine,
            "--config-file=none",
            "--foreground",
            "--log-stderr",
            "--log-level=4",
            "--table=-1",
            f"--interface={LOOPBACK}",
            f"--listen-ng={LOOPBACK}:{ng_port}",
            f"--port-min={base}",
            f"--port-max={base + 4 * len(pairs) + 39}",
            f"--pidfile={os.path.join(folder, 'rtpengine.pid')}",
            "--delete-delay=0",
            "--endpoint-learning=immediate",
            f"--num-threads={RTPENGINE_THREADS}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    log.close()
    control = NgControl(ng_port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                control.command(ping_command(), tries=1)
                break
            except RuntimeError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
        ports = []
        for n, (a_port, b_port) in enumerate(pairs):
            call_id = f"call-{n}"
            offer = control.command(offer_command(call_id, "A", sdp(a_port), flags="ICE=remove"))
            answer = control.command(
                answer_command(call_id, "A", "B", sdp(b_port), flags="ICE=remove")
            )
            to_a = media_streams(answer["sdp"].encode())[0].port
            to_b = media_streams(offer["sdp"].encode())[0].port
            ports.append((to_a, to_b))
    except Exception:
        stop(process)
        raise
    finally:
        control.close()
    return process, ports


# -- load ----------------------------------------------------------------------------------------


class Load:
    """2 endpoints per session, in this process; sends, receives, measures."""

    def __init__(self, sessions: int) -> None:
        self.sockets: list[tuple[socket.socket, socket.socket]] = []
        for _ in range(sessions):
            pair = []
            for _ in range(2):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                s.bind((LOOPBACK, 0))
                s.setblocking(False)
                pair.append(s)
            self.sockets.append((pair[0], pair[1]))
        self.by_fd = {s.fileno(): s for pair in self.sockets for s in pair}

    def endpoint_ports(self) -> list[tuple[int, int]]:
        return [(a.getsockname()[1], b.getsockname()[1]) for a, b in self.sockets]

    def senders(self, targets: list[tuple[int, int]]) -> list[tuple[socket.socket, tuple]]:
        """(socket, destination) for both directions of every session."""
        out = []
        for (a, b), (to_a, to_b) in zip(self.sockets, targets, strict=True):
            out.append((a, (LOOPBACK, to_a)))
            out.append((b, (LOOPBACK, to_b)))
        return out

    def close(self) -> None:
        for a, b in self.sockets:
            a.close()
            b.close()

    def run(
        self, targets: list[tuple[int, int]], seconds: float, flood: bool, window: int
    ) -> tuple[int, int, list[float], float]:
        """Send for `seconds`; return (sent, received, latencies in s, measured seconds)."""
        senders = self.senders(targets)
        header = struct.Struct("!BBHIId")
        pad = b"\xd5" * (PAYLOAD - 8)
        poller = select.epoll()
        for fd in self.by_fd:
            poller.register(fd, select.EPOLLIN)
        latencies: list[float] = []
        sent = received = 0
        interval = 1.0 / (PPS * len(senders))
        start = time.perf_counter()
        end = start + seconds
        next_send = start
        last_receive = start
        in_flight = 0
        j = 0

        def drain(fd: int) -> None:
            nonlocal received, last_receive
            s = self.by_fd[fd]
            while True:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    return
                now = time.perf_counter()
                last_receive = now
                received += 1
                if len(data) >= 20:
                    latencies.append(now - header.unpack_from(data)[5])

        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if flood:
                if in_flight - received >= window and now - last_receive > 0.05:
                    in_flight = received  # those were lost: stop waiting for them
                burst = 0
                while in_flight - received < window and burst < 64:
                    s, destination = senders[j % len(senders)]
                    packet = header.pack(0x80, 0, j & 0xFFFF, j * 160, j, time.perf_counter())
                    try:
                        s.sendto(packet + pad, destination)
                    except BlockingIOError:
                        break
                    j += 1
                    sent += 1
                    in_flight += 1
                    burst += 1
                timeout = 0.001
            else:
                while next_send <= now:
                    s, destination = senders[j % len(senders)]
                    packet = header.pack(0x80, 0, j & 0xFFFF, j * 160, j, time.perf_counter())
                    try:
                        s.sendto(packet + pad, destination)
                        sent += 1
                    except BlockingIOError:
                        pass
                    j += 1
                    next_send += interval
                timeout = max(0.0, next_send - time.perf_counter())
            for fd, _ in poller.poll(timeout):
                drain(fd)
        measured = time.perf_counter() - start
        drain_until = time.perf_counter() + 0.5
        while time.perf_counter() < drain_until:
            for fd, _ in poller.poll(0.05):
                drain(fd)
        poller.close()
        return sent, received, latencies, measured


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure(
    backend: str, sessions: int, seconds: float, flood: bool, window: int, folder: str
) -> dict:
    load = Load(sessions)
    process: Optional[subprocess.Popen] = None
    try:
        pairs = load.endpoint_ports()
        if backend == "relay":
            process, targets = start_relay(pairs)
        elif backend == "rtpengine":
            process, targets = start_rtpengine(pairs, folder)
        else:  # direct: each endpoint sends straight to its peer
            targets = [(b, a) for a, b in pairs]
        time.sleep(0.2)
        before = cpu_seconds(process.pid) if process else 0.0
        sent, received, latencies, measured = load.run(targets, seconds, flood, window)
        cpu = (cpu_seconds(process.pid) - before) / measured if process else float("nan")
    finally:
        if process is not None:
            stop(process)
        load.close()
    rate = received / measured
    return {
        "backend": backend,
        "mode": "flood" if flood else f"{PPS} pps",
        "sessions": sessions,
        "sent": sent,
        "received": received,
        "rate": rate,
        "cpu": cpu,
        # Below 5 % the CPU clock ticks (10 ms) make the ratio meaningless.
        "per_core": rate / cpu if cpu == cpu and cpu >= 0.05 else float("nan"),
        "p50": percentile(latencies, 50) * 1e6,
        "p99": percentile(latencies, 99) * 1e6,
    }


def show(rows: list[dict]) -> None:
    print(
        f"{'backend':<10} {'mode':<7} {'sess':>5} {'sent':>8} {'recv':>8} {'pkt/s':>8} "
        f"{'cpu %':>6} {'pkt/s/core':>10} {'p50 us':>7} {'p99 us':>7}"
    )
    for r in rows:
        cpu = "-" if r["cpu"] != r["cpu"] else f"{100 * r['cpu']:.0f}"
        per_core = "-" if r["per_core"] != r["per_core"] else f"{r['per_core']:.0f}"
        print(
            f"{r['backend']:<10} {r['mode']:<7} {r['sessions']:>5} {r['sent']:>8} "
            f"{r['received']:>8} {r['rate']:>8.0f} {cpu:>6} {per_core:>10} "
            f"{r['p50']:>7.0f} {r['p99']:>7.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--serve-relay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run, at most 30")
    parser.add_argument("--flood-sessions", type=int, default=10)
    parser.add_argument("--window", type=int, default=256, help="flood: packets in flight")
    parser.add_argument("--no-flood", action="store_true")
    parser.add_argument("--no-rtpengine", action="store_true")
    parser.add_argument("--rtpengine-threads", type=int, default=1)
    args = parser.parse_args()
    global RTPENGINE_THREADS
    RTPENGINE_THREADS = args.rtpengine_threads
    if args.serve_relay:
        serve_relay()
        return
    seconds = min(args.seconds, MAX_SECONDS)
    backends = ["relay"]
    if not args.no_rtpengine:
        if shutil.which("rtpengine"):
            backends.append("rtpengine")
        else:
            print("rtpengine not installed: its rows are skipped", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sbc-bench-relay-") as folder:
        for sessions in args.sessions:
            rows.append(measure("direct", sessions, seconds, False, args.window, folder))
            for backend in backends:
                rows.append(measure(backend, sessions, seconds, False, args.window, folder))
        if not args.no_flood:
            for backend in ["direct", *backends]:
                rows.append(
                    measure(backend, args.flood_sessions, seconds, True, args.window, folder)
                )
    print(f"loopback, {os.cpu_count()} CPUs, {seconds:.0f} s per run, {PAYLOAD}-byte payloads")
    show(rows)


if __name__ == "__main__":
    main()
