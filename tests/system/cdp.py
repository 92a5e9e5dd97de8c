"""
Headless Chromium for system tests, driven over the Chrome DevTools Protocol with a small
wsproto client: started with a fresh profile, fake media devices and loopback-only
networking, and killed by PID afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import urlparse

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

__all__ = ["CHROMIUM", "Cdp", "chromium"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Flags for a quiet, loopback-only browser with a fake microphone that needs no prompt.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-pings",
    # Loopback only: every host name fails to resolve (no traffic leaves the machine).
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--ignore-certificate-errors",  # sbc's throw-away WSS certificate
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class Cdp:
    """One DevTools WebSocket (a page target): send commands, get their results."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=parsed.netloc, target=parsed.path)))
        self._next_id = 0
        self._parts: list[str] = []
        self._messages: list[dict] = []
        self._accepted = False
        while not self._accepted:
            self._pump()

    def _pump(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("DevTools connection closed")
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self._accepted = True
            elif isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    self._messages.append(json.loads("".join(self._parts)))
                    self._parts = []
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise ConnectionError("DevTools connection closed")

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict:
        self._next_id += 1
        ident = self._next_id
        payload = json.dumps({"id": ident, "method": method, "params": params})
        self.sock.sendall(self.ws.send(TextMessage(data=payload)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self._messages):
                if message.get("id") == ident:
                    del self._messages[i]
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})
            self._messages = [m for m in self._messages if "id" in m]  # drop events
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            self._pump()
        raise TimeoutError(method)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@contextlib.contextmanager
def chromium(url: str, profile: str, log_path: str) -> Iterator[Cdp]:
    """Chromium showing C{url}, its DevTools connection to that page; killed afterwards."""
    assert CHROMIUM is not None
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", url],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    cdp: Optional[Cdp] = None
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as f:
                    raise RuntimeError("chromium did not start:\n" + f.read()[-3000:])
            time.sleep(0.1)
        with open(port_file) as f:
            port = int(f.readline())
        page = None
        while page is None and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            page = next((t for t in targets if t.get("type") == "page"), None)
            if page is None:
                time.sleep(0.1)
        assert page is not None, "no page target"
        cdp = Cdp(page["webSocketDebuggerUrl"])
        yield cdp
    finally:
        if cdp is not None:
            cdp.close()
        if process.poll() is None:
            # Its own session: the renderer and GPU helpers go with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
