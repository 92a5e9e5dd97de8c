# -*- test-case-name: tests.core.test_relaypolicy -*-
"""
Who may make sbc relay what: the decisions that keep an edge proxy from being an open
relay, as pure functions.

- Trusted peers, like Kamailio's C{permissions} module and its C{allow_source_address()}:
  C{proto:ip[/prefix][:port]} entries (carriers, the core) whose requests skip digest
  authentication and may be relayed anywhere.
- Signed Record-Route and Path entries: the entries sbc inserts carry C{;sig=}, a short
  HMAC over the dialog's Call-ID and From tag (Record-Route) or over the NAT address a Path
  entry carries, so that a Route copied from elsewhere does not open the relay.
- The verdict on an initial request (Kamailio's stock configuration: C{auth_check} for our
  users, 403 for foreign-to-foreign) and on a request inside a dialog (404 unless our own
  Route entry routed it or sbc knows the dialog).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

from sbc.core.address import TRANSPORTS, Address
from sbc.core.uri import NameAddr, SipUri

__all__ = [
    "TrustedPeer",
    "TrustedPeers",
    "PermissionsSettings",
    "parse_trusted",
    "RouteSigner",
    "Verdict",
    "initial_verdict",
    "in_dialog_verdict",
    "SIGNATURE_PARAM",
    "signed_by_us",
    "route_signature",
]

#: The URI parameter that carries the signature of a Record-Route or Path entry.
SIGNATURE_PARAM = "sig"

_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_ENTRY = re.compile(
    r"(?P<proto>[a-z]+):"
    r"(?:\[(?P<v6>[0-9a-fA-F:.]+(?:/\d{1,3})?)\]|(?P<v4>[0-9.]+(?:/\d{1,2})?))"
    r"(?::(?P<port>\d{1,5}))?\Z"
)
_EXPECTED = "proto:ip[/prefix][:port] (proto udp, tcp, tls or any; IPv6 in [ ])"


@dataclass(frozen=True)
class TrustedPeer:
    """One C{[permissions] trusted} entry; C{transport} None and C{port} None match any."""

    transport: Optional[str]
    network: _Network
    port: Optional[int] = None

    def matches(self, address: Address) -> bool:
        if self.transport is not None and self.transport != address.transport:
            return False
        if self.port is not None and self.port != address.port:
            return False
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            return False
        return ip.version == self.network.version and ip in self.network

    def __str__(self) -> str:
        host = str(self.network) if self.network.version == 4 else f"[{self.network}]"
        return f"{self.transport or 'any'}:{host}" + (f":{self.port}" if self.port else "")


def _parse_entry(text: str) -> TrustedPeer:
    m = _ENTRY.match(text.strip().lower())
    if m is None:
        raise ValueError(_EXPECTED)
    proto = m.group("proto")
    if proto != "any" and proto not in TRANSPORTS:
        raise ValueError(_EXPECTED)
    try:
        network = ipaddress.ip_network(m.group("v6") or m.group("v4"), strict=False)
    except ValueError:
        raise ValueError(_EXPECTED) from None
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(_EXPECTED)
    return TrustedPeer(None if proto == "any" else proto, network, port)


def parse_trusted(text: str) -> tuple[TrustedPeer, ...]:
    """Read a whitespace- or comma-separated list of entries; ValueError says what a good
    entry looks like."""
    return tuple(_parse_entry(item) for item in re.split(r"[\s,]+", text.strip()) if item)


@dataclass(frozen=True)
class TrustedPeers:
    """The trusted peers (Kamailio's C{allow_source_address()} over an address table)."""

    entries: tuple[TrustedPeer, ...] = ()

    def allows(self, source: Address) -> bool:
        """Is C{source} (the transport address a request came from) a trusted peer?"""
        for entry in self.entries:
            if entry.matches(source):
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.entries)


@dataclass(frozen=True)
class PermissionsSettings:
    """The C{[permissions]} section: C{trusted} peers (Kamailio's permissions module
    with its address table, checked by C{allow_source_address()})."""

    trusted: TrustedPeers = TrustedPeers()


class RouteSigner:
    """Signs and checks the Record-Route and Path entries sbc inserts (HMAC-SHA256, cut to
    48 bits: a forger gets one try per request)."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("a route signing secret must not be empty")
        # The keyed state is set up once; each signature copies it (RFC 2104's inner and
        # outer pads are not hashed again per message).
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)

    def sign(self, *parts: str) -> str:
        """The signature over C{parts} (Call-ID and From tag; or a Path's NAT address)."""
        mac = self._keyed.copy()
        mac.update("\0".join(parts).encode("utf-8", "surrogateescape"))
        return mac.hexdigest()[:12]

    def valid(self, signature: Optional[str], *parts: str) -> bool:
        """Is C{signature} ours for C{parts}?"""
        return signature is not None and hmac.compare_digest(signature, self.sign(*parts))


def route_signature(signer: RouteSigner, call_id: str, ftag: str, now: float) -> str:
    """The C{;sig=} value of a Record-Route entry issued at C{now}: the issue time (hex
    seconds), a dot, the HMAC over Call-ID, From tag and that time."""
    issued = f"{max(0, int(now)):x}"
    return f"{issued}.{signer.sign(call_id, ftag, issued)}"


def signed_by_us(
    consumed: Sequence[NameAddr],
    call_id: str,
    tags: Sequence[Optional[str]],
    signer: RouteSigner,
    now: float,
    max_age: float,
) -> bool:
    """Did C{loose_route} consume a Record-Route entry sbc signed for this very dialog (its
    Call-ID, and the From tag it recorded is one of the request's C{tags}) no longer than
    C{max_age} seconds ago (a Route copied from elsewhere, or kept after its dialog ended,
    is no ticket to relay)?"""
    for entry in consumed:
        uri = entry.uri
        if not isinstance(uri, SipUri):
            continue
        ftag = uri.param("ftag") or ""
        if ftag and ftag not in tags:
            continue
        issued, _, mac = (uri.param(SIGNATURE_PARAM) or "").partition(".")
        try:
            born = int(issued, 16)
        except ValueError:
            continue
        if not born - 300 <= now <= born + max_age:
            continue
        if signer.valid(mac, call_id, ftag, issued):
            return True
    return False


class Verdict(enum.Enum):
    """What to do with a request before routing it."""

    #: Route it (to our registrar/location, or onwards).
    ACCEPT = "accept"
    #: Its sender must prove it is one of our users first (401/407, then accept).
    AUTHENTICATE = "authenticate"
    #: 403 Relaying Forbidden.
    FORBIDDEN = "forbidden"
    #: 404 Not Here: inside a dialog sbc does not route.
    NOT_HERE = "not_here"
    #: Drop without an answer (an ACK sbc cannot route).
    ABSORB = "absorb"


def initial_verdict(
    *,
    method: str,
    to_us: bool,
    from_local: bool,
    trusted: bool,
    auth_enabled: bool,
    allow_relay: bool,
) -> Verdict:
    """
    An initial request (no To tag) from a peer: trusted peers go anywhere; with
    authentication on, REGISTERs for our domains and every request whose From names one
    of our domains must authenticate (the authenticated user is then checked against the
    From/To user); requests from elsewhere may reach our users only.  Without
    authentication, requests for our domains are accepted and the rest refused unless the
    operator opened the relay (C{[core] allow_relay}).

    @param to_us: the request is for one of our domains or addresses (and no Route takes
        it elsewhere).
    @param from_local: its From URI names one of our domains or addresses.
    """
    if trusted:
        return Verdict.ACCEPT
    if method == "ACK":
        return Verdict.ABSORB  # an ACK starts nothing: there is no transaction to match
    if method == "REGISTER":
        if not to_us:
            return Verdict.ACCEPT if allow_relay else Verdict.FORBIDDEN
        return Verdict.AUTHENTICATE if auth_enabled else Verdict.ACCEPT
    if auth_enabled and from_local:
        return Verdict.AUTHENTICATE
    if to_us or allow_relay:
        return Verdict.ACCEPT
    return Verdict.FORBIDDEN


def in_dialog_verdict(
    *, method: str, routed_by_us: bool, known_dialog: bool, trusted: bool, allow_relay: bool
) -> Verdict:
    """
    A request with a To tag: relayed only when C{loose_route} consumed a Route entry sbc
    signed (C{routed_by_us}), when it matches a dialog sbc knows, or when it comes from a
    trusted peer (or the relay is open); otherwise 404, and an ACK is absorbed.  A forged
    To tag therefore neither skips authentication nor reaches anyone.
    """
    if routed_by_us or known_dialog or trusted or allow_relay:
        return Verdict.ACCEPT
    return Verdict.ABSORB if method == "ACK" else Verdict.NOT_HERE
