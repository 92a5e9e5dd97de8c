"""Shared test helpers: message builders, RFC 4475 fixtures, free ports."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from typing import Optional

from sbc.core.address import Address
from sbc.core.identity import LocalIdentity
from sbc.core.proxy import Proxy, ProxySettings
from sbc.core.registrar import Registrar, RegistrarSettings

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


def make_proxy(
    sockets: list[Address],
    settings: ProxySettings = ProxySettings(),
    registrar: Optional[RegistrarSettings] = None,
    domains: Iterable[str] = ("sbc.test",),
) -> Proxy:
    """A proxy core on C{sockets}, authoritative for C{domains}, seeded randomness."""
    import random

    identity = LocalIdentity.from_addresses(sockets, domains=domains)
    return Proxy(
        identity, sockets, Registrar(registrar or RegistrarSettings()), settings, random.Random(7)
    )
