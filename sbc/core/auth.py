# -*- test-case-name: tests.core.test_auth -*-
"""
Digest authentication when sbc is the registrar (RFC 3261 §22, RFC 7616, RFC 8760):
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

from sbc.core.errors import ParseError
from sbc.core.message import Request
from sbc.core.uri import SipUri, parse_uri

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


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    """RFC 3261 §22.4: the digest C{uri} must name the Request-URI (compared as URIs when
    the strings differ, so that case in the host or parameter order does not matter)."""
    if digest_uri == request_uri:
        return True
    try:
        return parse_uri(digest_uri) == parse_uri(request_uri)
    except ParseError:
        return False


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
    @ivar code: Kamailio's C{auth_check} result: 1 authenticated, -1 error (bad nonce,
        digest C{uri} not the Request-URI), -2 wrong password, -3 unknown user, -4 nonce
        expired, -5 no credentials, -6 nonce reused, -8 authenticated as another user.
    """

    ok: bool
    status: int = 0
    stale: bool = False
    user: Optional[str] = None
    reason: str = ""
    code: int = 1


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

    def check(self, request: Request, now: float, check_user: bool = True) -> AuthResult:
        """Verify the request's credentials for our realm (credentials for other realms
        are ignored).  With C{check_user} (C{auth_check} flag 1) the authenticated user
        must be the To user of a REGISTER and the From user of anything else."""
        status = 401 if request.method == "REGISTER" else 407

        def refused(reason: str, code: int, stale: bool = False) -> AuthResult:
            return AuthResult(False, status, stale=stale, reason=reason, code=code)

        params = self.credentials_of(request)
        if params is None:
            return refused("no credentials", -5)
        user = params.get("username", "")
        algorithm = params.get("algorithm", "MD5").upper()
        nonce = params.get("nonce", "")
        ha1 = self.credentials.get(user, {}).get(algorithm)
        if ha1 is None or algorithm not in _HASHES:
            return refused("unknown user or algorithm", -3)
        state = self._nonce_state(nonce, now)
        if state == "bad":
            return refused("bad nonce", -1)
        digest_uri = params.get("uri", "")
        if not _same_uri(digest_uri, str(request.uri)):
            return refused("digest uri is not the Request-URI", -1)
        qop = params.get("qop")
        nc = params.get("nc", "")
        expected = digest_response(
            algorithm, ha1, nonce, request.method, digest_uri, qop, nc, params.get("cnonce", "")
        )
        if not hmac.compare_digest(expected, params.get("response", "")):
            return refused("wrong credentials", -2)
        if state == "stale":
            return refused("stale nonce", -4, stale=True)
        if qop:
            try:
                count = int(nc, 16)
            except ValueError:
                return refused("bad nc", -1)
            if count <= self._seen.get(nonce, 0):
                return refused("replayed nonce", -6)
            self._seen[nonce] = count
            self._forget_old(now)
        elif nonce in self._seen:
            return refused("replayed nonce", -6)
        else:
            self._seen[nonce] = 1
        if check_user:
            claimed = request.to.uri if request.method == "REGISTER" else request.from_.uri
            if not isinstance(claimed, SipUri) or claimed.user != user:
                return AuthResult(
                    False, 403, user=user, reason="credentials of another user", code=-8
                )
        return AuthResult(True, user=user)

    def credentials_of(self, request: Request) -> Optional[dict[str, str]]:
        """The digest parameters of the request's credentials for our realm, if any."""
        header = "authorization" if request.method == "REGISTER" else "proxy-authorization"
        for value in request.get_all(header):
            candidate = _parse_digest(value)
            if candidate is not None and candidate.get("realm") == self.settings.realm:
                return candidate
        return None

    def is_ours(self, value: str) -> bool:
        """Is the credentials header value C{value} for our realm (consume_credentials)?"""
        params = _parse_digest(value)
        return params is not None and params.get("realm") == self.settings.realm

    def _forget_old(self, now: float) -> None:
        if len(self._seen) > 10_000:
            for nonce in list(self._seen):
                if self._nonce_state(nonce, now) != "ok":
                    del self._seen[nonce]
