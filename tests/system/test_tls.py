"""
System tests for TLS done right (RFC 5922 domain certificates): client certificates verified against
ca_list when required; outgoing TLS verifies the next hop's identity and fails closed with 503.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from sbc.app.devcert import make_certificates
from sbc.core.message import Response, parse
from tests.helpers import free_port, request_bytes
from tests.system.harness import SbcProcess

pytestmark = pytest.mark.system


def tls_config(
    path,
    certs: dict,
    tls_port: int,
    *,
    udp_port: int | None = None,  # type: ignore[no-untyped-def]
    cert: str = "certificate",
    key: str = "private_key",
    require: bool = False,
) -> str:
    listen = f"tls:127.0.0.1:{tls_port}" + (f" udp:127.0.0.1:{udp_port}" if udp_port else "")
    path.write_text(
        f"[core]\nlisten = {listen}\nalias = sbc.test\n[tm]\nfr_timer = 5000\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
        f"[tls]\ncertificate = {certs[cert]}\nprivate_key = {certs[key]}\n"
        f"ca_list = {certs['ca']}\nrequire_certificate = {'yes' if require else 'no'}\n"
    )
    return str(path)


def options_over_tls(port: int, context: ssl.SSLContext) -> Response:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="sbc.test") as tls:
            tls.sendall(
                request_bytes(
                    uri=f"sip:127.0.0.1:{port}", via="SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKt"
                )
            )
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
    response = parse(data)
    assert isinstance(response, Response)
    return response


def test_client_certificates_are_required_and_verified(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With require_certificate: a client certificate from the CA works; none or a
    self-signed one is refused."""
    certs = make_certificates(str(tmp_path / "tls"))
    port = free_port()
    with SbcProcess(tls_config(tmp_path / "sbc.ini", certs, port, require=True)) as sbc:
        sbc.wait_for("listening on ")
        context = ssl.create_default_context(cafile=certs["ca"])
        context.load_cert_chain(certs["client_certificate"], certs["client_key"])
        assert options_over_tls(port, context).status == 200
        for chain in (None, ("selfsigned_certificate", "selfsigned_key")):
            refused = ssl.create_default_context(cafile=certs["ca"])
            if chain:
                refused.load_cert_chain(certs[chain[0]], certs[chain[1]])
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                options_over_tls(port, refused)
        sbc.assert_clean_stop()


def test_outbound_tls_verifies_the_next_hop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A next hop whose certificate names another identity gets no request: 503 at once.
    One that presents the right certificate answers 200."""
    certs = make_certificates(str(tmp_path / "tls"))
    edge_tls, edge_udp, wrong, right = free_port(), free_port(), free_port(), free_port()
    configs = {
        "edge": tls_config(tmp_path / "edge.ini", certs, edge_tls, udp_port=edge_udp),
        "wrong": tls_config(
            tmp_path / "wrong.ini", certs, wrong, cert="other_certificate", key="other_key"
        ),
        "right": tls_config(tmp_path / "right.ini", certs, right),
    }
    with (
        SbcProcess(configs["edge"]) as edge,
        SbcProcess(configs["wrong"]) as other,
        SbcProcess(configs["right"]) as good,
    ):
        for process, count in ((edge, 2), (other, 1), (good, 1)):
            process.wait_for("listening on ", count=count)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp.settimeout(10)
            me = udp.getsockname()[1]
            for target, status in ((right, 200), (wrong, 503)):
                started = time.monotonic()
                udp.sendto(
                    request_bytes(
                        uri=f"sip:127.0.0.1:{target};transport=tls",
                        call_id=f"tls-{target}",
                        via=f"SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{target}",
                    ),
                    ("127.0.0.1", edge_udp),
                )
                response = parse(udp.recv(65535))
                assert isinstance(response, Response) and response.status == status, response
                assert time.monotonic() - started < 3.0
        assert any(
            "connection to tls:127.0.0.1:" in line and "failed" in line for line in edge.lines
        ), "\n".join(edge.lines[-20:])
        for process in (good, other, edge):
            process.assert_clean_stop()
