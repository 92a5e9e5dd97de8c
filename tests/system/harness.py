"""
Real peers for system tests: sbc started by the README's command line (twistd -n sbc) as a
child process, and SIPp.  Everything started here is stopped by PID in a finally block.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

import pytest

from tests.helpers import ROOT

SCENARIOS = os.path.join(os.path.dirname(__file__), "scenarios")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def require_sipp() -> str:
    """The sipp binary, or skip the test saying why (a failure under CI=true: tests.ci_skips)."""
    path = shutil.which("sipp")
    if path is None:
        message = "sipp is not installed (Debian package sip-tester; scripts/install-test-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI installs it: missing there is a fault, not a skip
        pytest.skip(message)
    return path


def sipp_has_tls() -> bool:
    """Whether this SIPp was built with TLS (Debian's is not)."""
    path = shutil.which("sipp")
    if path is None:
        return False
    out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10).stdout
    return "TLS" in out


class SbcProcess:
    """sbc running under twistd, its log captured; use as a context manager."""

    def __init__(self, config: str, cwd: str = ROOT, prefix: tuple[str, ...] = ()) -> None:
        self.config = config
        self.cwd = cwd
        self.prefix = list(prefix)
        self.process: Optional[subprocess.Popen[str]] = None
        self.lines: list[str] = []
        self._reader: Optional[threading.Thread] = None

    def __enter__(self) -> SbcProcess:
        self.process = subprocess.Popen(
            [*self.prefix, TWISTD, "--pidfile=", "-n", "sbc", "--config", self.config],
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        """Wait until C{count} log lines match C{pattern}; fail with the log otherwise."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if regex.search(line)]
            if len(found) >= count:
                return found
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {count}x {pattern!r} in sbc's log:\n" + "\n".join(self.lines))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not go.  Return the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return self.process.returncode

    def assert_clean_stop(self) -> None:
        """SIGTERM stops sbc cleanly: twistd's shutdown completes (it then exits 0 or
        re-raises SIGTERM as its exit status, as twistd does)."""
        code = self.stop()
        log = "\n".join(self.lines)
        assert code in (0, -signal.SIGTERM), log
        assert "Server Shut Down." in log, log
        assert "Traceback" not in log, log

    def statistics(self) -> dict[str, int]:
        """The counters sbc logged when it stopped."""
        [line] = self.wait_for(r"statistics at stop: ", timeout=1)
        return {k: int(v) for k, v in re.findall(r"'([\w:]+)': (\d+)", line)}

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()


def run_sipp(
    scenario: str,
    target: str,
    transport: str = "u1",
    *,
    local_ip: Optional[str] = None,
    calls: int = 1,
    cwd: str,
    extra: tuple[str, ...] = (),
    timeout: float = 60.0,
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run SIPp with a scenario from tests/system/scenarios until it ends by itself."""
    command = sipp_command(
        scenario,
        target,
        transport,
        local_ip=local_ip,
        calls=calls,
        extra=extra,
        timeout=timeout,
        prefix=prefix,
    )
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def sipp_command(
    scenario: str,
    target: Optional[str],
    transport: str = "u1",
    *,
    local_ip: Optional[str] = None,
    calls: int = 1,
    extra: tuple[str, ...] = (),
    timeout: float = 60.0,
    prefix: tuple[str, ...] = (),
) -> list[str]:
    """The SIPp command line for a scenario; it stops by itself after C{calls} calls or
    C{timeout} seconds."""
    sipp = require_sipp()
    command = [
        *prefix,
        sipp,
        "-sf",
        os.path.join(SCENARIOS, scenario),
        "-t",
        transport,
        "-m",
        str(calls),
        "-timeout",
        f"{int(timeout) - 5}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        *extra,
    ]
    if local_ip:
        command += ["-i", local_ip]
    if target:
        command.append(target)
    return command


def sipp_summary(result: subprocess.CompletedProcess[str]) -> str:
    """The part of SIPp's output worth printing on failure."""
    return result.stdout[-3000:] + result.stderr[-2000:]
