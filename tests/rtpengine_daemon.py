"""
A real rtpengine for tests: started in userspace-only mode (no kernel forwarding), on
loopback or inside a test's network namespace, and ended by PID afterwards.  It dies with
the test process even when that is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["RTPENGINE", "rtpengine_daemon", "ping_until_up"]

RTPENGINE = shutil.which("rtpengine")

#: Pings the ng port until rtpengine answers (run in the daemon's namespace).
_PINGER = """
import socket, sys, time
from sbc.core.ng import decode_message, encode_message, ping_command
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        s.sendto(encode_message("up", ping_command()), (host, port))
        try:
            if decode_message(s.recv(4096)) == ("up", {"result": "pong"}):
                sys.exit(0)
        except Exception:
            continue
sys.exit(1)
"""


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even if killed."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def ping_until_up(host: str, port: int, seconds: float = 20.0, prefix: tuple = ()) -> bool:
    """Ping rtpengine's ng port (from inside the namespace of C{prefix}) until it answers."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [*prefix, sys.executable, "-c", _PINGER, host, str(port), str(seconds)],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=root),
        capture_output=True,
        timeout=seconds + 10,
    )
    return result.returncode == 0


@contextlib.contextmanager
def rtpengine_daemon(
    folder,  # type: ignore[no-untyped-def]
    ng_port: int,
    media_min: int,
    interface: str = "127.0.0.1",
    prefix: tuple = (),
    threads: int = 2,
) -> Iterator[subprocess.Popen]:
    """rtpengine with its ng socket on 127.0.0.1:C{ng_port} and media ports from
    C{media_min} (100 of them) on C{interface}, for the length of the block."""
    assert RTPENGINE is not None
    log_path = folder / "rtpengine.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                *prefix,
                RTPENGINE,
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--table=-1",
                f"--interface={interface}",
                f"--listen-ng=127.0.0.1:{ng_port}",
                f"--port-min={media_min}",
                f"--port-max={media_min + 99}",
                f"--pidfile={folder / 'rtpengine.pid'}",
                "--delete-delay=0",
                "--endpoint-learning=immediate",
                f"--num-threads={threads}",
                "--log-level=6",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        if not ping_until_up("127.0.0.1", ng_port, prefix=prefix):
            raise RuntimeError(f"rtpengine did not answer ping:\n{log_path.read_text()[-4000:]}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
