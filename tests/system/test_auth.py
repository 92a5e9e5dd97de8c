"""
System test for digest authentication (RFC 7616/8760) against the running sbc over a real socket:
the right password registers (SHA-256 and MD5), a wrong one and a replayed nonce are
refused, and alice cannot register with bob's credentials.
"""

from __future__ import annotations

import hashlib
import socket

import pytest

from sbc.core.auth import digest_response
from sbc.core.message import Response, parse
from tests.helpers import free_port, request_bytes
from tests.system.harness import SbcProcess

pytestmark = pytest.mark.system

REALM = "sbc.test"


def ha1(user: str, password: str, algorithm: str) -> str:
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    return h(f"{user}:{REALM}:{password}".encode()).hexdigest()


class Phone:
    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = port
        self.cseq = 0

    def register(self, user: str, authorization: str = "") -> Response:
        self.cseq += 1
        me = self.sock.getsockname()[1]
        headers = [("Contact", f"<sip:{user}@127.0.0.1:{me}>"), ("Expires", "60")]
        if authorization:
            headers.append(("Authorization", authorization))
        data = request_bytes(
            "REGISTER",
            "sip:sbc.test",
            cseq=self.cseq,
            call_id=f"auth-{user}",
            via=f"SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKa{self.cseq}",
            headers=headers,
        )
        self.sock.sendto(
            data.replace(b"To: <sip:bob@example.com>", f"To: <sip:{user}@sbc.test>".encode()),
            ("127.0.0.1", self.port),
        )
        response = parse(self.sock.recv(65535))
        assert isinstance(response, Response)
        return response


def credentials(
    user: str, password: str, challenge: Response, algorithm: str, nc: str = "00000001"
) -> str:
    offers = challenge.get_all("WWW-Authenticate")
    offer = next(o for o in offers if f"algorithm={algorithm}" in o)
    nonce = offer.split('nonce="')[1].split('"')[0]
    response = digest_response(
        algorithm,
        ha1(user, password, algorithm),
        nonce,
        "REGISTER",
        "sip:sbc.test",
        "auth",
        nc,
        "abc",
    )
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="sip:sbc.test", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="abc"'
    )


def test_digest_registration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Right password in; wrong password, replay and hijack out."""
    (tmp_path / "users").write_text(
        f"alice:{REALM}:SHA-256:{ha1('alice', 'secret', 'SHA-256')}\n"
        f"alice:{REALM}:MD5:{ha1('alice', 'secret', 'MD5')}\n"
        f"bob:{REALM}:MD5:{ha1('bob', 'hunter2', 'MD5')}\n"
    )
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
        f"[auth]\nrealm = {REALM}\ncredentials_file = users\n"
    )
    with SbcProcess(str(config)) as sbc:
        sbc.wait_for("listening on ")
        phone = Phone(port)
        challenge = phone.register("alice")
        assert challenge.status == 401
        for algorithm in ("SHA-256", "MD5"):
            answer = credentials("alice", "secret", phone.register("alice"), algorithm)
            assert phone.register("alice", answer).status == 200
            assert phone.register("alice", answer).status == 401  # the same nonce and nc again
        wrong = credentials("alice", "guess", phone.register("alice"), "SHA-256")
        assert phone.register("alice", wrong).status == 401
        hijack = credentials("bob", "hunter2", phone.register("alice"), "MD5")
        assert phone.register("alice", hijack).status == 403
        phone.sock.close()
        sbc.assert_clean_stop()
        assert not any("secret" in line or "hunter2" in line for line in sbc.lines)
