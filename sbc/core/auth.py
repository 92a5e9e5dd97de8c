# -*- test-case-name: tests.core.test_auth -*-
"""
Digest authentication when sbc is the registrar (SEC-03; RFC 3261 §22, RFC 7616, RFC 8760):
REGISTERs are challenged with 401, initial INVITEs from our users with 407; SHA-256 is
offered before MD5; nonces carry their birth time and an HMAC (no server state to keep
them), expire, and each (nonce, nc) is accepted once (replay protection).  A REGISTER for
one user with another user's credentials is refused (no registration hijacking).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Optional

from sbc.core.message import Request
from sbc.core.uri import SipUri

__all__ = [
    "AuthSettings",
    "Credentials",
    "parse_credentials",
    "DigestAuth",
    "AuthResult",
    "digest_response",
]

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass(frozen=True)
class AuthSettings:
    """
    The C{[auth]} section.

    @ivar realm: the realm of challenges (empty: authentication off).
    @ivar nonce_expire: seconds a nonce stays valid (Kamailio auth's C{nonce_expire}).
    """

    realm: str = ""
    credentials_file: Optional[str] = None
    nonce_expire: int = 300

    @property
    def enabled(self) -> bool:
        return bool(self.realm and self.credentials_file)


#: user -> algorithm -> HA1 (hex)
Credentials = dict[str, dict[str, str]]


def parse_credentials(text: str, realm: str) -> tuple[Credentials, list[str]]:
    """Read C{user:realm:algorithm:ha1} lines (C{#} comments).  Lines for other realms are
    ignored; malformed ones are reported (by line number, never with their secret)."""
    credentials: Credentials = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 4 or parts[2] not in _HASHES or not re.fullmatch(r"[0-9a-f]+", parts[3]):
            problems.append(f"line {number}: expected user:realm:MD5|SHA-256:ha1-in-hex")
            continue
        user, line_realm, algorithm, ha1 = parts
        if line_realm == realm:
            credentials.setdefault(user, {})[algorithm] = ha1
    return credentials, problems


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()


def digest_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: Optional[str] = None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    """RFC 7616 §3.4.1 response for qop=auth (or RFC 2069 without qop)."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


_PARAM = re.compile(r'\s*([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]+)\s*,?')


def _parse_digest(value: str) -> Optional[dict[str, str]]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params = {}
    for m in _PARAM.finditer(rest):
        raw = m.group(2)
        params[m.group(1).lower()] = raw[1:-1] if raw.startswith('"') else raw
    return params


@dataclass(frozen=True)
class AuthResult:
    """
    The verdict on a request.

    @ivar ok: authenticated.
    @ivar status: what to answer otherwise: 401/407 (challenge, C{stale} when the nonce
        merely aged), 403 (credentials that may not be used for this request).
    """

    ok: bool
    status: int = 0
    stale: bool = False
    user: Optional[str] = None
    reason: str = ""


class DigestAuth:
    """Challenges and checks; C{secret} signs nonces (random per process)."""

    def __init__(self, settings: AuthSettings, credentials: Credentials, secret: bytes) -> None:
        self.settings = settings
        self.credentials = credentials
        self.secret = secret
        self._seen: dict[str, int] = {}  # nonce -> highest nc accepted
        self._issued = 0

    def nonce(self, now: float) -> str:
        """A nonce carrying its birth time and a serial (unique per challenge), signed."""
        self._issued += 1
        stamp = f"{int(now):x}-{self._issued:x}"
        mac = hmac.new(self.secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp}.{mac}"

    def _nonce_state(self, nonce: str, now: float) -> str:
        stamp, _, mac = nonce.partition(".")
        expected = hmac.new(self.secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, expected):
            return "bad"
        try:
            born = int(stamp.partition("-")[0], 16)
        except ValueError:
            return "bad"
        return "stale" if now - born > self.settings.nonce_expire or born > now + 5 else "ok"

    def challenge(self, request: Request, now: float, stale: bool = False) -> tuple[int, list]:
        """The 401 (REGISTER) or 407 status and its challenge headers, SHA-256 first."""
        status = 401 if request.method == "REGISTER" else 407
        name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        nonce = self.nonce(now)
        extra = ", stale=true" if stale else ""
        headers = [
            (
                name,
                f'Digest realm="{self.settings.realm}", nonce="{nonce}", '
                f'algorithm={algorithm}, qop="auth"{extra}',
            )
            for algorithm in ("SHA-256", "MD5")
        ]
        return status, headers

    def check(self, request: Request, now: float) -> AuthResult:
        """Verify the request's credentials for our realm."""
        status = 401 if request.method == "REGISTER" else 407
        header = "authorization" if status == 401 else "proxy-authorization"
        params = None
        for value in request.get_all(header):
            candidate = _parse_digest(value)
            if candidate is not None and candidate.get("realm") == self.settings.realm:
                params = candidate
                break
        if params is None:
            return AuthResult(False, status, reason="no credentials")
        user = params.get("username", "")
        algorithm = params.get("algorithm", "MD5").upper()
        nonce = params.get("nonce", "")
        ha1 = self.credentials.get(user, {}).get(algorithm)
        if ha1 is None or algorithm not in _HASHES:
            return AuthResult(False, status, reason="unknown user or algorithm")
        state = self._nonce_state(nonce, now)
        if state == "bad":
            return AuthResult(False, status, reason="bad nonce")
        qop = params.get("qop")
        nc = params.get("nc", "")
        expected = digest_response(
            algorithm,
            ha1,
            nonce,
            request.method,
            params.get("uri", ""),
            qop,
            nc,
            params.get("cnonce", ""),
        )
        if not hmac.compare_digest(expected, params.get("response", "")):
            return AuthResult(False, status, reason="wrong credentials")
        if state == "stale":
            return AuthResult(False, status, stale=True, reason="stale nonce")
        if qop:
            try:
                count = int(nc, 16)
            except ValueError:
                return AuthResult(False, status, reason="bad nc")
            if count <= self._seen.get(nonce, 0):
                return AuthResult(False, status, reason="replayed nonce")
            self._seen[nonce] = count
            self._forget_old(now)
        elif nonce in self._seen:
            return AuthResult(False, status, reason="replayed nonce")
        else:
            self._seen[nonce] = 1
        if request.method == "REGISTER":
            to_uri = request.to.uri
            if not isinstance(to_uri, SipUri) or to_uri.user != user:
                return AuthResult(False, 403, user=user, reason="credentials of another user")
        return AuthResult(True, user=user)

    def _forget_old(self, now: float) -> None:
        if len(self._seen) > 10_000:
            for nonce in list(self._seen):
                if self._nonce_state(nonce, now) != "ok":
                    del self._seen[nonce]
