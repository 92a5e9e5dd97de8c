"""Tests for L{sbc.core.auth}: RFC 8760 digest with SHA-256 and MD5, nonces, replays."""

from __future__ import annotations

import hashlib
from typing import Optional

import pytest

from sbc.core.address import Address
from sbc.core.auth import AuthSettings, DigestAuth, digest_response, parse_credentials
from sbc.core.message import Request, Response, parse
from sbc.core.transaction import Send
from tests.helpers import make_proxy, request_bytes

REALM = "sbc.test"


def ha1(user: str, password: str, algorithm: str) -> str:
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    return h(f"{user}:{REALM}:{password}".encode()).hexdigest()


CREDENTIALS_FILE = "\n".join(
    [
        "# user:realm:algorithm:ha1",
        f"alice:{REALM}:SHA-256:{ha1('alice', 'secret', 'SHA-256')}",
        f"alice:{REALM}:MD5:{ha1('alice', 'secret', 'MD5')}",
        f"bob:{REALM}:MD5:{ha1('bob', 'hunter2', 'MD5')}",
        f"carol:other.realm:MD5:{ha1('carol', 'x', 'MD5')}",
        "garbage line",
    ]
)


def auth() -> DigestAuth:
    credentials, problems = parse_credentials(CREDENTIALS_FILE, REALM)
    assert problems == ["line 6: expected user:realm:MD5|SHA-256:ha1-in-hex"]
    assert set(credentials) == {"alice", "bob"}
    return DigestAuth(AuthSettings(REALM, "f", 300), credentials, b"k" * 32)


def register(user: str, authorization: Optional[str] = None, method: str = "REGISTER") -> Request:
    headers = [("Contact", f"<sip:{user}@192.0.2.5>")]
    if authorization:
        headers.append(
            ("Authorization" if method == "REGISTER" else "Proxy-Authorization", authorization)
        )
    data = request_bytes(method, "sip:sbc.test", headers=headers)
    data = data.replace(b"To: <sip:bob@example.com>", f"To: <sip:{user}@sbc.test>".encode())
    m = parse(data)
    assert isinstance(m, Request)
    return m


def answer(
    user: str,
    password: str,
    nonce: str,
    algorithm: str = "SHA-256",
    nc: str = "00000001",
    method: str = "REGISTER",
) -> str:
    response = digest_response(
        algorithm,
        ha1(user, password, algorithm),
        nonce,
        method,
        "sip:sbc.test",
        "auth",
        nc,
        "c0ffee",
    )
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="sip:sbc.test", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="c0ffee"'
    )


def test_challenge_offers_sha256_before_md5() -> None:
    """RFC 8760: one challenge per algorithm, SHA-256 first; 401 for REGISTER, 407 INVITE."""
    a = auth()
    status, headers = a.challenge(register("alice"), 1000.0)
    assert status == 401 and [h[0] for h in headers] == ["WWW-Authenticate"] * 2
    assert "algorithm=SHA-256" in headers[0][1] and "algorithm=MD5" in headers[1][1]
    assert a.challenge(register("alice", method="INVITE"), 1000.0)[0] == 407


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_right_password_registers(algorithm: str) -> None:
    """Correct credentials with either algorithm pass."""
    a = auth()
    nonce = a.nonce(1000.0)
    result = a.check(register("alice", answer("alice", "secret", nonce, algorithm)), 1001.0)
    assert result.ok and result.user == "alice"


def test_wrong_password_replay_stale_and_hijack_are_refused() -> None:
    """Wrong password; the same nonce+nc again; an old nonce; bob's credentials for alice."""
    a = auth()
    nonce = a.nonce(1000.0)
    assert a.check(register("alice", answer("alice", "wrong", nonce)), 1001.0).status == 401
    good = register("alice", answer("alice", "secret", nonce))
    assert a.check(good, 1001.0).ok
    replay = a.check(good, 1002.0)
    assert not replay.ok and replay.reason == "replayed nonce"
    assert a.check(register("alice", answer("alice", "secret", nonce, nc="00000002")), 1003.0).ok
    stale = a.check(register("alice", answer("alice", "secret", nonce, nc="00000003")), 2000.0)
    assert not stale.ok and stale.stale
    hijack = a.check(register("alice", answer("bob", "hunter2", a.nonce(2000.0), "MD5")), 2001.0)
    assert hijack.status == 403
    forged = a.check(register("alice", answer("alice", "secret", "abc.def")), 2001.0)
    assert not forged.ok and forged.reason == "bad nonce"


def test_proxy_challenges_register_and_invite_from_our_users() -> None:
    """End to end in the proxy core: 401, then 200; an INVITE from alice gets 407."""
    sbc = Address("udp", "127.0.0.1", 5060)
    p = make_proxy([sbc], trusted=None, auth=auth())
    source = Address("udp", "192.0.2.5", 5060)

    def send(request: Request) -> Response:
        [effect] = [
            e
            for e in p.receive_request(request, source, sbc, 1000.0)
            if isinstance(e, Send) and isinstance(e.message, Response) and e.message.status >= 200
        ]
        assert isinstance(effect.message, Response)
        return effect.message

    first = send(register("alice"))
    assert first.status == 401
    nonce = first.get("WWW-Authenticate").split('nonce="')[1].split('"')[0]  # type: ignore[union-attr]
    again = register("alice", answer("alice", "secret", nonce)).without_first_value("Via")
    again = again.with_header_first("Via", "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKsecond")
    assert isinstance(again, Request)
    assert send(again).status == 200
    invite = parse(
        request_bytes("INVITE", "sip:bob@sbc.test").replace(
            b"From: <sip:alice@example.com>", b"From: <sip:alice@sbc.test>"
        )
    )
    assert isinstance(invite, Request)
    assert send(invite).status == 407


def test_nonces_are_unique_even_within_one_second() -> None:
    """Two challenges in the same second carry different nonces."""
    a = auth()
    assert a.nonce(1000.0) != a.nonce(1000.0)
