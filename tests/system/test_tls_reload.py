"""
System test for TLS certificate reload (Kamailio's tls.reload): certificates swapped under a
running sbc are served from the next handshake on, after SIGHUP and, without it, when the
files change; a connection made before stays up; a broken certificate keeps the old one
and says why in the log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl

import pytest

from sbc.app.devcert import make_certificates
from tests.helpers import free_port, request_bytes
from tests.system.harness import SbcProcess

pytestmark = pytest.mark.system


def context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test compares fingerprints itself
    return ctx


def connect(port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context().wrap_socket(raw, server_hostname="sbc.test")


def served(port: int) -> str:
    """The SHA-256 fingerprint of the certificate a new handshake gets."""
    with connect(port) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def fingerprint(path: str) -> str:
    with open(path, encoding="ascii") as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def install(certs: dict, prefix: str, live) -> None:  # type: ignore[no-untyped-def, type-arg]
    """Put a certificate and its key in place the way a renewal tool does: write aside,
    then rename over the live files."""
    key = "private_key" if not prefix else f"{prefix}key"
    for source, name in ((certs[f"{prefix}certificate"], "cert.pem"), (certs[key], "key.pem")):
        shutil.copyfile(source, live / (name + ".new"))
        os.replace(live / (name + ".new"), live / name)


def options(tls: ssl.SSLSocket, port: int) -> bytes:
    tls.sendall(
        request_bytes(uri=f"sip:127.0.0.1:{port}", via="SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKr")
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_certificates_swapped_under_a_running_sbc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGHUP serves the new certificate, an old connection still works; a broken file
    keeps the certificate in use (logged); a changed file is picked up without SIGHUP."""
    certs = make_certificates(str(tmp_path / "tls"))
    live = tmp_path / "live"
    live.mkdir()
    install(certs, "", live)
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = tls:127.0.0.1:{port}\nalias = sbc.test\n"
        f"[tls]\ncertificate = {live}/cert.pem\nprivate_key = {live}/key.pem\n"
    )
    first, second = fingerprint(certs["certificate"]), fingerprint(certs["other_certificate"])
    with SbcProcess(str(config)) as sbc:
        sbc.wait_for("listening on ")
        assert served(port) == first
        with connect(port) as before:
            assert options(before, port).startswith(b"SIP/2.0 200")
            install(certs, "other_", live)
            sbc.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            sbc.wait_for(r"TLS certificate reloaded")
            assert served(port) == second
            # established before the swap: still up, still answered
            assert options(before, port).startswith(b"SIP/2.0 200")
        failed = r"TLS reload \(files changed\) failed, keeping the old certificate"
        seen = len([line for line in sbc.lines if "keeping the old certificate" in line])
        (live / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
        sbc.wait_for(failed, count=seen + 1)
        assert served(port) == second
        seen = len([line for line in sbc.lines if "TLS certificate reloaded (files" in line])
        install(certs, "", live)
        sbc.wait_for(r"TLS certificate reloaded \(files changed\)", count=seen + 1)
        assert served(port) == first
        assert sbc.alive
        sbc.assert_clean_stop()
