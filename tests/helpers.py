"""Shared test helpers: message builders, RFC 4475 fixtures, free ports."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Optional

from sbc.core.address import Address
from sbc.core.identity import LocalIdentity
from sbc.core.proxy import Proxy, ProxySettings
from sbc.core.registrar import Registrar, RegistrarSettings
from sbc.core.relaypolicy import TrustedPeers, parse_trusted

DATA = os.path.join(os.path.dirname(__file__), "data")
RFC4475 = os.path.join(DATA, "rfc4475")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rfc4475_cases() -> list[tuple[str, str]]:
    """(name, expected verdict) for every torture message, from the fixture README."""
    with open(os.path.join(RFC4475, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    return re.findall(r"^\| (\w+)\.dat \| [\d.]+ \| .*? \| (.*?) \|$", readme, re.M)


def rfc4475(name: str) -> bytes:
    """The bytes of torture message C{name}."""
    with open(os.path.join(RFC4475, f"{name}.dat"), "rb") as f:
        return f.read()


def request_bytes(
    method: str = "OPTIONS",
    uri: str = "sip:sbc.test",
    *,
    via: str = "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKtest1;rport",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    cseq: int = 1,
    call_id: str = "call-1@192.0.2.10",
    content_length: Optional[int] = None,
) -> bytes:
    """A well-formed request (what h2's FrameFactory is to frames)."""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=from1",
        "To: <sip:bob@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    lines += [f"{k}: {v}" for k, v in headers]
    length = len(body) if content_length is None else content_length
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on C{host} (for both TCP and UDP when possible)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


#: The callers of the proxy tests stand for trusted peers (a carrier, the core): they may
#: relay to any domain.  The relay policy itself is tested with untrusted sources in
#: tests/core/test_relaypolicy.py and tests/system/test_relay_policy.py.
TEST_TRUSTED = TrustedPeers(
    parse_trusted("any:192.0.2.0/24 any:198.51.100.0/24 any:203.0.113.0/24")
)


def make_proxy(
    sockets: list[Address],
    settings: ProxySettings = ProxySettings(),
    registrar: Optional[RegistrarSettings] = None,
    domains: Iterable[str] = ("sbc.test",),
    trusted: Optional[TrustedPeers] = TEST_TRUSTED,
    **collaborators: Any,
) -> Proxy:
    """A proxy core on C{sockets}, authoritative for C{domains}, seeded randomness; the
    test callers are C{trusted} peers unless the settings name others (None: nobody).
    C{collaborators} go to the constructor (auth, keepalive, resolves_names, ...)."""
    import random

    identity = LocalIdentity.from_addresses(sockets, domains=domains)
    if trusted is not None and not settings.trusted:
        settings = replace(settings, trusted=trusted)
    return Proxy(
        identity,
        sockets,
        Registrar(registrar or RegistrarSettings()),
        settings,
        random.Random(7),
        **collaborators,
    )


def sig(p: Proxy, *parts: str) -> str:
    """The C{;sig=} parameter C{p} puts on its Record-Route (parts: Call-ID and From tag;
    issued at time 0, as the tests' calls are) or Path (parts: the escaped received URI)
    entries."""
    if len(parts) == 2:
        return f";sig=0.{p.signer.sign(*parts, '0')}"
    return f";sig={p.signer.sign(*parts)}"
