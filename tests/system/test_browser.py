"""
A real browser phone calls a SIP phone through sbc (RFC 7118 and WebRTC media): headless
Chromium with a fake microphone loads a SIP.js page, registers over WSS, and calls a SIPp
UAS (plain RTP/AVP, echoing RTP) through rtpengine.  The test shows the registration, the
call setup time, RTP reaching SIPp and coming back (rtpengine's per-side packet counts) and
audio arriving in the browser (getStats inbound packets), then the browser hangs up.

Chromium, SIP.js (vendored into var/webphone by scripts/install-test-deps), SIPp and
rtpengine are needed: without them the test skips, and fails in CI (CI=true).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from typing import Any

import pytest

from sbc.app.devcert import make_certificates
from sbc.core.ng import decode_message, encode_message, query_command
from tests.helpers import ROOT, free_port
from tests.rtpengine_daemon import RTPENGINE, rtpengine_daemon
from tests.system.cdp import CHROMIUM, chromium
from tests.system.harness import SCENARIOS, SbcProcess, run_sipp, sipp_summary

pytestmark = pytest.mark.system

SIPJS = os.path.join(ROOT, "var", "webphone", "node_modules", "sip.js")
#: The browser's WebSocket scheme (SBC_BROWSER_WS=ws tries plain WebSocket).
SCHEME = os.environ.get("SBC_BROWSER_WS", "wss")
PAGE = os.path.join(os.path.dirname(__file__), "webphone", "index.html")


def require(found: object, what: str) -> None:
    """Skip without C{what} in a local run; in CI (CI=true) its absence is a failure."""
    if found:
        return
    message = f"{what} is missing (scripts/install-test-deps, run by make test as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def serve(folder: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    """The page and SIP.js over HTTP on loopback (a secure context for getUserMedia)."""
    handler = functools.partial(_QuietHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def rtpengine_packets(ng_port: int, call_id: str) -> dict[str, int]:
    """Packets rtpengine received from each side of the call (by tag)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(encode_message("q1", query_command(call_id)), ("127.0.0.1", ng_port))
        _, reply = decode_message(s.recv(65535))
    counts = {}
    for tag, info in (reply.get("tags") or {}).items():
        total = 0
        for media in info.get("medias", []):
            for stream in media.get("streams", []):
                total += int(stream.get("stats", {}).get("packets", 0))
        counts[tag if isinstance(tag, str) else tag.decode()] = total
    return counts


def test_browser_calls_sipp_through_sbc_and_rtpengine(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    require(CHROMIUM, "chromium (Debian package chromium)")
    require(os.path.exists(os.path.join(SIPJS, "lib", "index.js")), "SIP.js in var/webphone")
    require(shutil.which("sipp"), "sipp (Debian package sip-tester)")
    require(RTPENGINE, "rtpengine (Debian package rtpengine-daemon)")

    web = tmp_path / "web"
    web.mkdir()
    shutil.copy(PAGE, web / "index.html")
    os.symlink(SIPJS, web / "sip.js")
    http_server, http_port = serve(str(web))
    certs = make_certificates(str(tmp_path / "tls"))
    udp, wss, ws = free_port(), free_port(), free_port()
    ng_port = free_port(socket.SOCK_DGRAM)
    media_min = (free_port(socket.SOCK_DGRAM) & ~1) % 20000 + 40000
    uas_port, uas_media = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{udp} wss:127.0.0.1:{wss} ws:127.0.0.1:{ws}\n"
        "alias = sbc.test\n"
        f"[rtp]\nengine = rtpengine\nrtp_policy = always\n"
        f"rtpengine_sock = udp:127.0.0.1:{ng_port}\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
        f"[tls]\ncertificate = {certs['certificate']}\nprivate_key = {certs['private_key']}\n"
        f"[websocket]\nallowed_origins = http://127.0.0.1:{http_port}\n"
    )
    uas = None
    try:
        with rtpengine_daemon(tmp_path, ng_port, media_min), SbcProcess(str(config)) as sbc:
            sbc.wait_for(r"listening on ", count=3)
            registered = run_sipp(
                "register.xml",
                f"127.0.0.1:{udp}",
                local_ip="127.0.0.1",
                cwd=str(tmp_path),
                extra=("-s", "bob", "-key", "contact_port", str(uas_port)),
            )
            assert registered.returncode == 0, sipp_summary(registered)
            uas = subprocess.Popen(
                [
                    shutil.which("sipp") or "sipp",
                    "-sf",
                    os.path.join(SCENARIOS, "uas_answer.xml"),
                    "-s",
                    "bob",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(uas_port),
                    "-mp",
                    str(uas_media),
                    "-rtp_echo",
                    "-m",
                    "1",
                    "-nostdin",
                    "-timeout",
                    "60s",
                    "-timeout_error",
                ],
                cwd=str(tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            url = (
                f"http://127.0.0.1:{http_port}/index.html?user=alice&domain=sbc.test"
                f"&call=bob&server={SCHEME}://127.0.0.1:{wss if SCHEME == 'wss' else ws}"
            )
            profile = tmp_path / "chromium-profile"
            profile.mkdir()
            with chromium(url, str(profile), str(tmp_path / "chromium.log")) as page:
                phone = _wait_for_call(page, sbc)
                stats = _media_flowing(page)
                packets = rtpengine_packets(ng_port, phone["callId"])
                page.evaluate("window.phone.hangup()")
                out, _ = uas.communicate(timeout=30)
            registrations = [line for line in sbc.lines if "registered: aor=alice" in line]
            with capsys.disabled():  # the figures go to the run's output, also in CI
                print(
                    f"\nbrowser registered over {SCHEME.upper()}: "
                    f"{registrations[0].split('] ', 1)[-1]}"
                    f"\ncall setup (INVITE to 200 OK, in the browser): {phone['setupMs']:.0f} ms"
                    f"\nbrowser getStats: {stats['outbound']} packets sent, "
                    f"{stats['inbound']} received, DTLS {stats['dtls']}"
                    f"\nrtpengine packets received per side (tag: packets): {packets}"
                )
            assert uas.returncode == 0, out[-3000:]
            assert stats["inbound"] > 0 and stats["outbound"] > 0, json.dumps(stats)[:4000]
            assert len(packets) == 2 and all(count > 0 for count in packets.values()), packets
            sbc.assert_clean_stop()
    finally:
        http_server.shutdown()
        if uas is not None and uas.poll() is None:
            uas.kill()
            uas.wait(5)


def _media_flowing(page, seconds: float = 3.0) -> dict:  # type: ignore[no-untyped-def]
    """The browser's RTP counters once DTLS is up and audio came back, plus C{seconds}
    of media both ways."""
    deadline = time.monotonic() + 20
    stats = page.evaluate("window.phone.stats()")
    while time.monotonic() < deadline and not stats["inbound"]:
        time.sleep(0.2)
        stats = page.evaluate("window.phone.stats()")
    time.sleep(seconds)
    return page.evaluate("window.phone.stats()")


def _wait_for_call(page, sbc) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    phone: dict = {}
    while time.monotonic() < deadline:
        phone = page.evaluate("window.phone ? JSON.parse(JSON.stringify(window.phone)) : null")
        if phone and phone.get("error"):
            break
        if phone and phone.get("setupMs") is not None:
            return phone
        time.sleep(0.2)
    raise AssertionError(f"no call: {phone}\n" + "\n".join(sbc.lines[-40:]))
