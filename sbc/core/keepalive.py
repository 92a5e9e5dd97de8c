# -*- test-case-name: tests.core.test_keepalive -*-
"""
The keepalive engine's core (Kamailio nathelper and nat_traversal): who needs a ping at C{now}.

One table of endpoints (the NAT bindings sbc may need to reach), each kept while at least
one condition lives: a registration, a subscription, or a dialog.  Two ways to configure
it, as Kamailio has two modules:

 - nathelper style: registered contacts are pinged every C{natping_interval} with four
   zero bytes, a SIP request (OPTIONS/NOTIFY without Contact) or CRLF on streams;
   C{ping_nated_only}; C{keepalive_timeout} evicts contacts whose pings go unanswered.
   As Kamailio nathelper's C{sipping_method}, the SIP request is addressed to the
   registered Contact (Request-URI and To) and sent to the NAT address it registered from,
   so the phone sees a request for itself.
 - nat_traversal style: endpoints kept while a registration, subscription or dialog
   condition lives, pinged with NOTIFY (C{Event: keep-alive}) or OPTIONS every
   C{keepalive_interval}.  Endpoints with no contact registered here (relayed
   registrations, subscriptions, dialogs) are addressed as C{sip:ip:port}, as Kamailio's
   nat_traversal does.

Any reply to a SIP ping, a 404 included, means the endpoint is alive.

Work is spread evenly: each endpoint has a slot (a stable hash of its address) and
L{KeepaliveTable.tick} at second C{s} handles slot C{s mod interval}.  The state file
format (L{encode_state}/L{decode_state}) keeps endpoints and registrar bindings across
restarts; reading and writing the file is the adapter's job.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from random import Random
from typing import Optional

from sbc.core.address import Address, parse_address
from sbc.core.message import Request, Response
from sbc.core.registrar import Binding
from sbc.core.syntax import is_digits
from sbc.core.uri import SipUri, format_host, parse_uri

__all__ = [
    "KeepaliveSettings",
    "Endpoint",
    "Ping",
    "KeepaliveTable",
    "endpoint_uri",
    "encode_state",
    "decode_state",
    "StateError",
]

_ZEROS = b"\x00\x00\x00\x00"
_CRLF_PING = b"\r\n\r\n"
#: Characters a contact must not carry into a ping's start line or To (the parser never
#: lets them through; this keeps a stored contact from ever splitting the message).
_NOT_IN_URI = frozenset(" \t\r\n<>\x00")


@dataclass(frozen=True)
class KeepaliveSettings:
    """
    The engine's settings, from C{[nathelper]} or C{[nat_traversal]}.

    @ivar style: C{nathelper}, C{nat_traversal} or C{off}.
    @ivar interval: seconds between two pings of one endpoint.
    @ivar method: C{udp4} (four zero bytes), C{crlf}, or a SIP method (OPTIONS, NOTIFY).
    @ivar from_uri: the From of SIP pings (C{sipping_from} / C{keepalive_from}); empty:
        C{sip:keepalive@<socket ip>}.
    @ivar ping_nated_only: nathelper: skip endpoints not detected behind NAT.
    @ivar keepalive_timeout: nathelper: evict endpoints silent this long (0: never).
    @ivar extra_headers: nat_traversal: raw header lines added to each ping.
    """

    style: str = "off"
    interval: int = 0
    method: str = "udp4"
    from_uri: str = ""
    ping_nated_only: bool = False
    keepalive_timeout: int = 0
    extra_headers: str = ""
    contact_match: int = 0

    @property
    def enabled(self) -> bool:
        return self.style != "off" and self.interval > 0


@dataclass
class Endpoint:
    """
    One NAT binding and why it is kept.

    @ivar address: where pings go (transport, public address, port).
    @ivar local: our socket it talks to.
    @ivar registered_until: registration condition expiry (0: none).
    @ivar subscribed_until: subscription condition expiry (0: none).
    @ivar dialogs: keys of the dialogs that keep it.
    @ivar last_reply: when it last answered a ping (or registered).
    @ivar contact: the Contact URI registered from C{address} with the built-in registrar
        (empty: none); SIP pings are addressed to it.
    """

    address: Address
    local: Optional[Address]
    registered_until: float = 0.0
    subscribed_until: float = 0.0
    dialogs: set = field(default_factory=set)
    natted: bool = False
    last_reply: float = 0.0
    contact: str = ""

    def alive(self, now: float) -> bool:
        return self.registered_until > now or self.subscribed_until > now or bool(self.dialogs)


@dataclass(frozen=True)
class Ping:
    """Send C{data} to C{address} from C{local} (the engine picks the socket)."""

    data: bytes
    address: Address
    local: Optional[Address]


def endpoint_uri(address: Address) -> str:
    """nat_traversal's endpoint key (C{$source_uri}): C{sip:ip:port}, C{;transport=} for streams."""
    uri = f"sip:{format_host(address.host)}:{address.port}"
    return uri if address.transport == "udp" else f"{uri};transport={address.transport}"


class KeepaliveTable:
    """The endpoints and their conditions, with the spread-out ping schedule."""

    def __init__(self, settings: KeepaliveSettings, rng: Optional[Random] = None) -> None:
        self.settings = settings
        self.rng = rng or Random(0)
        self.endpoints: dict[Address, Endpoint] = {}
        self._slots: dict[int, set[Address]] = {}
        self.enabled = True  # the runtime switch (nathelper.enable_ping)
        self.call_id_prefix = f"{self.rng.getrandbits(32):08x}"
        self._counter = 0
        self.sent = 0
        self.replies = 0
        self.evictions = 0
        self.evicted: list[Address] = []

    # -- conditions ----------------------------------------------------------------------------
    def _entry(self, address: Address, local: Optional[Address]) -> Endpoint:
        entry = self.endpoints.get(address)
        if entry is None:
            entry = Endpoint(address, local)
            self.restore(entry)
        elif local is not None:
            entry.local = local
        return entry

    def reconfigure(self, settings: KeepaliveSettings) -> None:
        """New settings (SIGHUP): the slots are recomputed for the new interval."""
        self.settings = settings
        self._slots = {}
        for address in self.endpoints:
            self._slots.setdefault(self.slot_of(address), set()).add(address)

    def restore(self, entry: Endpoint) -> None:
        """Add an endpoint (a new one, or one read from the state file)."""
        self.endpoints[entry.address] = entry
        self._slots.setdefault(self.slot_of(entry.address), set()).add(entry.address)

    def _remove(self, address: Address) -> None:
        self.endpoints.pop(address, None)
        self._slots.get(self.slot_of(address), set()).discard(address)

    def registered(
        self,
        address: Address,
        local: Optional[Address],
        until: float,
        now: float,
        natted: bool = False,
        contact: str = "",
    ) -> None:
        """A registration from C{address} lives until C{until}.  Unlike Kamailio's nat_traversal a
        de-registration (C{until <= now}) ends the condition at once.

        @param contact: the Contact URI the built-in registrar stored for it (SIP pings go
            to it, as nathelper's sipping does); empty keeps the one known."""
        if until <= now:
            entry = self.endpoints.get(address)
            if entry is not None:
                entry.registered_until = 0.0
                self._drop_if_dead(entry, now)
            return
        entry = self._entry(address, local)
        # a refresh never shortens the condition.
        entry.registered_until = max(entry.registered_until, until)
        entry.natted = entry.natted or natted
        entry.last_reply = now
        if contact:
            entry.contact = contact

    def restore_contacts(self, bindings: Iterable[tuple[str, Binding]]) -> None:
        """Bindings read back from the state file name the contacts their endpoints are
        pinged at (for each endpoint, the one that expires last)."""
        best: dict[Address, Binding] = {}
        for _, binding in bindings:
            known = best.get(binding.source)
            if known is None or binding.expires_at > known.expires_at:
                best[binding.source] = binding
        for address, binding in best.items():
            entry = self.endpoints.get(address)
            if entry is not None and entry.registered_until:
                entry.contact = str(binding.uri)

    def subscribed(
        self, address: Address, local: Optional[Address], until: float, now: float
    ) -> None:
        """A subscription from C{address} lives until C{until} (0 or past: ended)."""
        if until <= now:
            entry = self.endpoints.get(address)
            if entry is not None:
                entry.subscribed_until = 0.0
                self._drop_if_dead(entry, now)
            return
        entry = self._entry(address, local)
        entry.subscribed_until = until
        entry.last_reply = now

    def dialog_started(
        self,
        key: tuple,
        address: Address,
        local: Optional[Address],
        now: float,
        create: bool = True,
    ) -> None:
        """A dialog keeps C{address} (the caller; the callee only if it has an entry)."""
        if not create and address not in self.endpoints:
            return
        entry = self._entry(address, local)
        entry.dialogs.add(key)
        if not entry.last_reply:
            entry.last_reply = now

    def dialog_ended(self, key: tuple, now: float) -> None:
        """The dialog C{key} no longer keeps anybody."""
        for entry in list(self.endpoints.values()):
            if key in entry.dialogs:
                entry.dialogs.discard(key)
                self._drop_if_dead(entry, now)

    def _drop_if_dead(self, entry: Endpoint, now: float) -> None:
        if not entry.alive(now):
            self._remove(entry.address)

    # -- statistics -----------------------------------------------------------------------------
    def counts(self, now: float) -> dict[str, int]:
        """nat_traversal's statistics (keepalive_endpoints etc.)."""
        entries = list(self.endpoints.values())
        return {
            "keepalive_endpoints": len(entries),
            "registered_endpoints": sum(e.registered_until > now for e in entries),
            "subscribed_endpoints": sum(e.subscribed_until > now for e in entries),
            "dialog_endpoints": sum(len(e.dialogs) for e in entries),
        }

    # -- pinging ----------------------------------------------------------------------------------
    def slot_of(self, address: Address) -> int:
        """The second (mod interval) in which C{address} is handled: a stable hash."""
        return zlib.crc32(str(address).encode()) % max(1, self.settings.interval)

    def tick(self, now: float) -> list[Ping]:
        """Purge what expired and ping the endpoints of this second's slot."""
        settings = self.settings
        if not settings.enabled:
            return []
        slot = int(now) % settings.interval
        pings: list[Ping] = []
        for address in list(self._slots.get(slot, ())):
            entry = self.endpoints[address]
            if entry.registered_until and entry.registered_until <= now:
                entry.registered_until = 0.0
            if entry.subscribed_until and entry.subscribed_until <= now:
                entry.subscribed_until = 0.0
            if not entry.alive(now):
                self._remove(address)
                continue
            timeout = settings.keepalive_timeout
            if (
                timeout
                and settings.style == "nathelper"
                and self._sip_ping(entry)
                and (now - entry.last_reply > timeout)
            ):
                self._remove(address)
                self.evictions += 1
                self.evicted.append(entry.address)
                continue
            if not self.enabled:
                continue
            if settings.style == "nathelper" and settings.ping_nated_only and not entry.natted:
                continue
            ping = self.ping_for(entry)
            if ping is not None:
                pings.append(ping)
                self.sent += 1
        return pings

    def _sip_ping(self, entry: Endpoint) -> bool:
        return entry.address.transport == "udp" and self.settings.method not in ("udp4", "crlf")

    def ping_for(self, entry: Endpoint) -> Optional[Ping]:
        """The keepalive for one endpoint: CRLFCRLF on streams; on UDP four zero bytes or a
        SIP request (nat_traversal pings UDP endpoints only, as Kamailio does)."""
        address = entry.address
        if address.reliable:
            return Ping(_CRLF_PING, address, entry.local)
        if self.settings.method in ("udp4", "crlf"):
            return Ping(
                _ZEROS if self.settings.method == "udp4" else _CRLF_PING, address, entry.local
            )
        return Ping(self.sip_ping(entry), address, entry.local)

    def sip_ping(self, entry: Endpoint) -> bytes:
        """A stateless request to the endpoint (no Contact, one Via): to its registered
        Contact when it has one (Kamailio nathelper's sipping), else to C{sip:ip:port}
        (nat_traversal's keepalive)."""
        self._counter += 1
        method = self.settings.method.upper()
        local = entry.local or Address("udp", "0.0.0.0", 5060)
        host = format_host(local.host)
        uri = entry.contact
        if not uri or any(c in uri for c in _NOT_IN_URI):
            uri = endpoint_uri(entry.address)
        from_uri = self.settings.from_uri or f"sip:keepalive@{host}"
        branch = f"z9hG4bK{self.rng.randrange(10**7):07d}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{local.port};branch={branch}",
            f"From: <{from_uri}>;tag={self._counter:x}",
            f"To: <{uri}>",
            f"Call-ID: {self.call_id_prefix}-{self._counter:x}@{host}",
            f"CSeq: 1 {method}",
            "Max-Forwards: 70",
        ]
        if method == "NOTIFY":
            lines.append("Event: keep-alive")
        text = "\r\n".join(lines) + "\r\n"
        extra = self.settings.extra_headers
        if extra:
            text += extra if extra.endswith("\r\n") else extra + "\r\n"
        return (text + "Content-Length: 0\r\n\r\n").encode("utf-8", "surrogateescape")

    def reply(self, response: Response, source: Address, now: float) -> bool:
        """Consume a reply to one of our pings (consumed, never routed): True when it was one.
        It refreshes the endpoint's last reply time (for keepalive_timeout)."""
        if len(response.vias) != 1 or not response.call_id.startswith(self.call_id_prefix + "-"):
            return False
        if response.cseq.method.upper() != self.settings.method.upper():
            return False
        self.replies += 1
        entry = self.endpoints.get(source)
        if entry is not None:
            entry.last_reply = now
        return True

    def relayed_reply(
        self,
        request: Request,
        response: Response,
        peer: Address,
        local: Optional[Address],
        now: float,
    ) -> None:
        """nat_traversal: a 2xx to a REGISTER or SUBSCRIBE sbc relayed keeps its sender
        (C{peer}, reached from C{local}) alive while the registration or subscription
        lasts."""
        if request.method == "REGISTER" and not request.contact_star:
            seconds = self.register_reply_expiry(list(request.contacts), list(response.contacts))
            self.registered(peer, local, now + seconds if seconds else 0, now)
        elif request.method == "SUBSCRIBE":
            seconds = response.expires or 0
            self.subscribed(peer, local, now + seconds if seconds else 0, now)

    def register_reply_expiry(self, request_contacts: list, reply_contacts: list) -> int:
        """The largest C{;expires=} among the reply's Contacts that match one of the
        request's (exact URI text with contact_match 0; scheme, user, host, port and
        transport with 1); 0 when none matches."""

        def light(uri: object) -> object:
            if not isinstance(uri, SipUri):
                return str(uri)
            return (uri.scheme.lower(), uri.user, uri.host_bare, uri.port, uri.transport)

        wanted = {
            str(c.uri) if not self.settings.contact_match else light(c.uri)
            for c in request_contacts
        }
        best = 0
        for contact in reply_contacts:
            key = str(contact.uri) if not self.settings.contact_match else light(contact.uri)
            value = contact.param("expires")
            if key in wanted and value and is_digits(value):
                best = max(best, int(value))
        return best

    def take_evicted(self) -> list[Address]:
        """Endpoints evicted since the last call (the registrar drops their bindings)."""
        evicted, self.evicted = self.evicted, []
        return evicted


# -- state file --------------------------------------------------------------------------------


class StateError(ValueError):
    """A state file line that cannot be read."""


_HEADER = (
    "# sbc keepalive state v1: E endpoint local registered subscribed natted; "
    "B aor contact expires q call-id cseq source local received"
)


def _opt(address: Optional[Address]) -> str:
    return str(address) if address is not None else "-"


def encode_state(endpoints: Iterable[Endpoint], bindings: Iterable[tuple[str, Binding]]) -> str:
    """The state file text: endpoints (dialog conditions are not kept, as in nat_traversal) and the
    registrar's bindings, one per line, times in seconds since the epoch."""
    lines = [_HEADER]
    for e in endpoints:
        lines.append(
            f"E {e.address} {_opt(e.local)} {e.registered_until:.0f} "
            f"{e.subscribed_until:.0f} {int(e.natted)}"
        )
    for aor, b in bindings:
        q = "-" if b.q is None else f"{b.q:g}"
        lines.append(
            f"B {aor} {b.uri} {b.expires_at:.0f} {q} {b.call_id} {b.cseq} "
            f"{b.source} {_opt(b.local)} {_opt(b.received)}"
        )
    return "\n".join(lines) + "\n"


def _address(text: str) -> Optional[Address]:
    return None if text == "-" else parse_address(text)


def decode_state(
    text: str, now: float
) -> tuple[list[Endpoint], list[tuple[str, Binding]], list[str]]:
    """Read a state file: live endpoints and bindings (expired ones dropped), and one
    problem description per malformed line (skipped, reading goes on)."""
    endpoints: list[Endpoint] = []
    bindings: list[tuple[str, Binding]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        try:
            if parts[0] == "E" and len(parts) == 6:
                endpoint = Endpoint(
                    parse_address(parts[1]),
                    _address(parts[2]),
                    float(parts[3]),
                    float(parts[4]),
                    natted=parts[5] == "1",
                    last_reply=now,
                )
                if endpoint.alive(now):
                    endpoints.append(endpoint)
            elif parts[0] == "B" and len(parts) == 10:
                uri = parse_uri(parts[2])
                if not isinstance(uri, SipUri):
                    raise StateError("not a SIP URI")
                expires = float(parts[3])
                if expires > now:
                    q = None if parts[4] == "-" else float(parts[4])
                    bindings.append(
                        (
                            parts[1],
                            Binding(
                                uri,
                                expires,
                                q,
                                parts[5],
                                int(parts[6]),
                                parse_address(parts[7]),
                                _address(parts[8]),
                                (),
                                _address(parts[9]),
                            ),
                        )
                    )
            else:
                raise StateError("unknown record")
        except (ValueError, IndexError) as error:
            problems.append(f"line {number}: {error or 'malformed'}")
    return endpoints, bindings, problems
