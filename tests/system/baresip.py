"""
baresip (a real third-party softphone, Debian's C{baresip-core}) as a phone in a test's
network namespace, driven through its C{ctrl_tcp} module.

Each phone gets a generated config directory (C{baresip -f DIR}): one account registering
with sbc over UDP or TCP, PCMU/PCMA only, an 8 kHz mono WAV tone as audio source (the
C{aufile} module; C{ausine} needs 48 kHz), C{aubridge} as a player that goes nowhere, and
C{ctrl_tcp} on loopback inside the namespace.  The test talks to C{ctrl_tcp} over a socket
opened from a short-lived thread that entered the namespace (setns(2) changes only the
calling thread), so no helper process is needed.  ctrl_tcp frames JSON in netstrings
(C{len:json,}): commands C{{"command", "params", "token"}}, answers C{{"response": true,
"ok", "data", "token"}}, events C{{"event": true, "type", "class", "param", ...}}.

With C{medianat="ice"} the account uses baresip's C{ice} module (C{;medianat=ice}, no STUN
or TURN server: host candidates only, and inside the namespace the only address besides
loopback, which the module skips, is the phone's own).  With C{sip_trace} baresip runs with
C{-s} and its log holds every SIP message it sent and received (L{Baresip.received_sdps}).

baresip is stopped by its PID in L{Baresip.stop} (also on failure, from C{__exit__}).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Any, Optional

import pytest

BARESIP = shutil.which("baresip")
MODULE_PATH = "/usr/lib/baresip/modules"
_CLONE_NEWNET = 0x40000000
#: The line C{-s} writes before each SIP message: transport, source -> destination.
_TRACE = re.compile(rb"^(UDP|TCP|TLS) (\S+) -> (\S+)\r?\n", re.M)
_CONTENT_LENGTH = re.compile(r"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)


def require_baresip() -> str:
    """The baresip binary; skip saying why when it is missing, but fail under CI=true (CI
    must prove the baresip tests ran)."""
    if BARESIP is None or not os.path.isdir(MODULE_PATH):
        reason = "baresip is not installed (Debian package baresip-core; scripts/install-test-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + ", and CI=true requires it")
        pytest.skip(reason)
    return BARESIP


def require_baresip_module(name: str) -> str:
    """The path of baresip module C{name} (e.g. C{ice}); skip or, under CI=true, fail as
    L{require_baresip} does when it is missing."""
    require_baresip()
    path = os.path.join(MODULE_PATH, f"{name}.so")
    if not os.path.exists(path):
        reason = f"baresip's {name} module is not installed ({path}; Debian package baresip-core)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + ", and CI=true requires it")
        pytest.skip(reason)
    return path


def baresip_version() -> str:
    """The installed baresip's version line (e.g. C{baresip v1.0.0})."""
    out = subprocess.run([require_baresip(), "-h"], capture_output=True, text=True, timeout=10)
    first = (out.stdout + out.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0] if first else "baresip"


def write_tone(path: Path, seconds: float, frequency: float = 440.0, rate: int = 8000) -> Path:
    """An 8 kHz mono 16-bit WAV sine tone (what G.711 carries without resampling)."""
    frames = bytearray()
    for n in range(int(seconds * rate)):
        sample = int(8000 * math.sin(2 * math.pi * frequency * n / rate))
        frames += struct.pack("<h", sample)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def _connect_in_namespace(
    namespace: str, address: tuple[str, int], timeout: float
) -> socket.socket:
    """A TCP connection made from inside the network namespace C{namespace} (setns(2) in a
    thread of its own: the namespace change dies with the thread)."""
    result: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(f"/var/run/netns/{namespace}") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            deadline = time.monotonic() + timeout
            while True:
                try:
                    result["sock"] = socket.create_connection(address, timeout=1.0)
                    return
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "sock" not in result:
        raise result.get("error") or TimeoutError(f"ctrl_tcp in {namespace} did not answer")
    return result["sock"]


class Baresip:
    """One baresip phone in a namespace; use as a context manager."""

    def __init__(
        self,
        prefix: list[str],
        namespace: str,
        folder: Path,
        user: str,
        local_ip: str,
        registrar: str,
        transport: str = "udp",
        sip_port: int = 5060,
        rtp_ports: tuple[int, int] = (10000, 10019),
        ctrl_port: int = 4444,
        tone_seconds: float = 30.0,
        regint: int = 600,
        medianat: Optional[str] = None,
        sip_trace: bool = False,
    ) -> None:
        self.prefix = prefix
        self.namespace = namespace
        self.folder = folder
        self.user = user
        self.local_ip = local_ip
        self.registrar = registrar
        self.transport = transport
        self.sip_port = sip_port
        self.rtp_ports = rtp_ports
        self.ctrl_port = ctrl_port
        self.tone_seconds = tone_seconds
        self.regint = regint
        self.medianat = medianat
        self.sip_trace = sip_trace
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.events: list[tuple[float, dict]] = []
        self.responses: list[dict] = []
        self._sock: Optional[socket.socket] = None
        self._reader: Optional[threading.Thread] = None
        self._lock = threading.Condition()
        self._token = 0

    # -- configuration ------------------------------------------------------------------------
    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tone = self.folder / "tone.wav"
        if not tone.exists():
            write_tone(tone, self.tone_seconds)
        modules = ("g711", "aufile", "aubridge", "account", "menu", "ctrl_tcp")
        if self.medianat is not None:
            modules += (self.medianat,)
        lines = [
            "poll_method epoll",
            f"sip_listen {self.local_ip}:{self.sip_port}",
            "call_local_timeout 30",
            "call_max_calls 2",
            f"audio_path {self.folder}",
            f"audio_source aufile,{tone}",
            "audio_player aubridge,sink",
            "audio_alert aubridge,sink",
            "audio_level no",
            f"rtp_ports {self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "rtcp_mux no",
            "rtp_stats no",
            f"module_path {MODULE_PATH}",
            *(f"module {name}.so" for name in modules),
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
        ]
        (self.folder / "config").write_text("\n".join(lines) + "\n")
        # No account at start: L{register} adds it once ctrl_tcp is connected, so that the
        # test sees its REGISTER_OK event.
        (self.folder / "accounts").write_text("")
        (self.folder / "contacts").write_text("")

    @property
    def account(self) -> str:
        """The account line (baresip's accounts-file syntax)."""
        return (
            f"<sip:{self.user}@{self.registrar};transport={self.transport}>"
            f";regint={self.regint};answermode=manual;audio_codecs=PCMU,PCMA"
            + (f";medianat={self.medianat}" if self.medianat is not None else "")
        )

    def register(self, timeout: float = 10.0) -> float:
        """Create the account (C{uanew}), which registers it; the monotonic time its
        REGISTER_OK event (the 200 OK) arrived."""
        asked = time.monotonic()
        response = self.command("uanew", self.account)
        assert response.get("ok"), response
        at, _ = self.wait_event("REGISTER_OK", timeout=timeout, after=asked)
        return at

    # -- process ------------------------------------------------------------------------------
    def __enter__(self) -> Baresip:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start baresip (a new process, no account yet; events and responses start empty)."""
        self.write_config()
        self.events, self.responses = [], []
        log = open(self.folder / "baresip.log", "ab")
        try:
            self.process = subprocess.Popen(
                [
                    *self.prefix,
                    require_baresip(),
                    *(["-s"] if self.sip_trace else []),
                    "-f",
                    str(self.folder),
                ],
                cwd=str(self.folder),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self._sock = _connect_in_namespace(self.namespace, ("127.0.0.1", self.ctrl_port), 10.0)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, args=(self._sock,), daemon=True)
        self._reader.start()

    def stop(self, kill: bool = False) -> None:
        """Stop baresip by its PID: SIGKILL when C{kill} (the phone just dies), else SIGTERM
        (it unregisters); SIGKILL if it does not go."""
        process, self.process = self.process, None
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._reader is not None:
            self._reader.join(2)

    def log(self) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def full_log(self) -> str:
        """Everything baresip wrote so far (colour escapes removed)."""
        path = self.folder / "baresip.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return re.sub(r"\x1b\[[0-9;]*m", "", text)

    def received_sdps(self) -> list[tuple[str, str]]:
        """(start line, SDP) of every SIP message with a body that reached this phone, in
        order, from its SIP trace (C{sip_trace=True})."""
        path = self.folder / "baresip.log"
        data = path.read_bytes() if path.exists() else b""
        found = []
        for match in _TRACE.finditer(data):
            if not match.group(3).startswith(self.local_ip.encode() + b":"):
                continue
            end = data.find(b"\r\n\r\n", match.end())
            if end < 0:
                continue
            head = data[match.end() : end].decode(errors="replace")
            length = _CONTENT_LENGTH.search(head)
            size = int(length.group(1)) if length else 0
            if size:
                body = data[end + 4 : end + 4 + size].decode(errors="replace")
                found.append((head.split("\r\n", 1)[0], body))
        return found

    # -- ctrl_tcp -----------------------------------------------------------------------------
    def _read(self, sock: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while True:
                head, colon, rest = buffer.partition(b":")
                if not colon or not head.isdigit():
                    break
                size = int(head)
                if len(rest) < size + 1:
                    break
                payload, buffer = rest[:size], rest[size + 1 :]
                try:
                    message = json.loads(payload)
                except ValueError:
                    continue
                with self._lock:
                    if message.get("event"):
                        self.events.append((time.monotonic(), message))
                    elif message.get("response"):
                        self.responses.append(message)
                    self._lock.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        """Run a baresip command (menu module names: dial, accept, hangup, hold, resume,
        sndcode, ...); its response (C{ok}, C{data})."""
        assert self._sock is not None, "baresip is not running"
        self._token += 1
        token = str(self._token)
        body = {"command": command, "params": params, "token": token}
        self._sock.sendall(_netstring(json.dumps(body).encode()))
        deadline = time.monotonic() + timeout
        with self._lock:
            while time.monotonic() < deadline:
                for response in self.responses:
                    if response.get("token") == token:
                        return response
                self._lock.wait(max(0.01, deadline - time.monotonic()))
        raise AssertionError(f"no response to {command!r} from baresip {self.user}:\n{self.log()}")

    def wait_event(
        self, kind: str, timeout: float = 10.0, after: float = 0.0, param: Optional[str] = None
    ) -> tuple[float, dict]:
        """The first event of type C{kind} (e.g. C{REGISTER_OK}, C{CALL_INCOMING},
        C{CALL_ESTABLISHED}, C{CALL_DTMF_START}) received at or after C{after}: (monotonic
        time it arrived, event)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for at, event in self.events:
                    if at >= after and event.get("type") == kind:
                        if param is None or event.get("param") == param:
                            return at, event
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(min(left, 0.2))
        seen = [event.get("type") for _, event in self.events]
        raise AssertionError(f"baresip {self.user}: no {kind} event (saw {seen}):\n{self.log()}")
