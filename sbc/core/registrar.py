# -*- test-case-name: tests.core.test_registrar -*-
"""
The built-in registrar (RFC 3261 §10.3; Kamailio registrar/usrloc behaviour): bindings per
address-of-record with expiry driven by C{now}, C{q}, C{Contact: *}, 423 with Min-Expires.

Users whose last binding went are remembered for a while (L{Registrar.retention}), so that a
request for them gets 480 rather than 404 (RFC 3261 §21.4.5, §21.4.18), then forgotten; at most
L{KNOWN_USERS_MAX} of them are remembered, the oldest forgotten first, so a peer registering
under ever new names cannot grow the registrar without bound.

Address-of-record keys are the user part of the To URI, as Kamailio's usrloc does with its
default C{use_domain=0}: C{sip:bob@sbc.test} and C{sip:bob@127.0.0.1} are the same user.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Optional

from sbc.core.address import Address
from sbc.core.message import Request
from sbc.core.natfix import source_uri
from sbc.core.syntax import is_digits
from sbc.core.uri import NameAddr, SipUri, parse_name_addr

__all__ = [
    "KNOWN_USERS_MAX",
    "RegistrarSettings",
    "Binding",
    "is_outbound",
    "Registrar",
    "RegisterResult",
    "aor_of",
]

#: Most users without bindings remembered (for 480 rather than 404); the oldest go first.
KNOWN_USERS_MAX = 100_000
#: Seconds a user without bindings is remembered when C{max_expires} is 0 (unbounded).
DEFAULT_RETENTION = 3600


@dataclass(frozen=True)
class RegistrarSettings:
    """
    The C{[registrar]} section (seconds).

    @ivar max_expires: longest interval granted; 3600 as Kamailio registrar's C{max_expires};
        0 means no upper bound.
    @ivar max_contacts: contacts per user; 0 means no limit (Kamailio registrar's default),
        sbc's default is 10.
    """

    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 3600
    max_contacts: int = 10
    received_param: str = "received"
    #: Empty: sbc is the registrar.  Else REGISTERs go there, with Path (RFC 3327).
    registrar_uri: Optional[SipUri] = None


@dataclass(frozen=True)
class Binding:
    """
    One registered contact.

    @ivar uri: the contact URI as the UA sent it.
    @ivar expires_at: absolute time (same clock as C{now}).
    @ivar source: the transport address the REGISTER came from (for NAT handling and
        connection reuse).
    @ivar local: the socket it arrived on.
    @ivar received: set when the client is behind NAT (fix_nated_register): requests for it
        go to this address, from C{local}, instead of to the Contact.
    """

    uri: SipUri
    expires_at: float
    q: Optional[float]
    call_id: str
    cseq: int
    source: Address
    local: Optional[Address] = None
    params: tuple[tuple[str, Optional[str]], ...] = field(default=())
    received: Optional[Address] = None
    path: tuple[NameAddr, ...] = ()

    def expires_in(self, now: float) -> int:
        """Whole seconds left (never negative)."""
        return max(0, int(self.expires_at - now + 0.5))


@dataclass(frozen=True)
class RegisterResult:
    """What to answer: status, reason (empty: the default one) and extra headers."""

    status: int
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()


def is_outbound(binding: Binding) -> bool:
    """RFC 5626 §4.2: the UA asked for outbound (its Contact carries C{reg-id} and
    C{+sip.instance})."""
    names = {name.lower() for name, _ in binding.params}
    return "reg-id" in names and "+sip.instance" in names


def _asks_outbound(request: Request) -> bool:
    """RFC 5626 §4.2: a REGISTER supporting outbound whose Contacts carry C{reg-id} and
    C{+sip.instance}."""
    supported = {t.strip().lower() for v in request.values("supported") for t in v.split(",")}
    if "outbound" not in supported or request.contact_star:
        return False
    return any(
        c.param("reg-id") is not None and c.param("+sip.instance") is not None
        for c in request.contacts
    )


def aor_of(uri: object) -> Optional[str]:
    """The address-of-record key for a URI (its user part), or L{None} when it has none."""
    if isinstance(uri, SipUri) and uri.user:
        return uri.user
    return None


def _q_value(contact: NameAddr) -> Optional[float]:
    text = contact.param("q")
    if text is None:
        return None
    try:
        q = float(text)
    except ValueError:
        raise ValueError("bad q") from None
    if not 0.0 <= q <= 1.0:
        raise ValueError("bad q")
    return q


class Registrar:
    """
    In-memory bindings: C{aor -> [Binding]}, expired lazily and by L{expire}.

    @ivar known_max: most users without bindings remembered (L{KNOWN_USERS_MAX}).
    """

    def __init__(
        self, settings: RegistrarSettings = RegistrarSettings(), known_max: int = KNOWN_USERS_MAX
    ) -> None:
        self.settings = settings
        self.known_max = known_max
        self._bindings: dict[str, list[Binding]] = {}
        #: Users without bindings -> when they are forgotten, in the order they lost their
        #: bindings (so the oldest is first).
        self._known: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(b) for b in self._bindings.values())

    def aors(self) -> list[str]:
        """Every address-of-record that has at least one binding."""
        return sorted(self._bindings)

    def all_bindings(self) -> list[tuple[str, Binding]]:
        """Every stored binding with its address-of-record (for the state file)."""
        return [(aor, b) for aor, bs in self._bindings.items() for b in bs]

    @property
    def retention(self) -> int:
        """Seconds a user is remembered after their last binding went: C{max_expires}, or
        3600 when that is 0 (unbounded)."""
        return self.settings.max_expires or DEFAULT_RETENTION

    def remembered(self) -> int:
        """How many users without bindings are remembered (for 480 rather than 404)."""
        return len(self._known)

    def _remember(self, aor: str, now: float) -> None:
        known = self._known
        known[aor] = now + self.retention
        known.move_to_end(aor)
        while len(known) > self.known_max:
            known.popitem(last=False)

    def _forget_due(self, now: float) -> None:
        known = self._known
        while known:
            aor, until = next(iter(known.items()))
            if until > now:
                break
            known.popitem(last=False)

    def restore(self, aor: str, binding: Binding) -> None:
        """Put back a binding read from the state file (its user is known again; once the
        binding expires, they are remembered like any other)."""
        self._known.pop(aor, None)
        self._bindings.setdefault(aor, []).append(binding)

    def bindings_from(self, aor: str, source: Address, now: float) -> list[Binding]:
        """The live bindings of C{aor} that were registered from C{source}."""
        return [b for b in self._bindings.get(aor, []) if b.source == source and b.expires_at > now]

    def evict(self, address: Address, now: float) -> int:
        """Bindings reached through C{address} expire within 10 s (nathelper keepalive_timeout)."""
        count = 0
        for bindings in self._bindings.values():
            for i, b in enumerate(bindings):
                if (b.received or b.source) == address and b.expires_at > now + 10:
                    bindings[i] = replace(b, expires_at=now + 10)
                    count += 1
        return count

    def flow_lost(self, flow: Address, now: float) -> tuple[int, int]:
        """The connection C{flow} closed (a WebSocket flow, RFC 7118): its bindings are
        bound to it.  Outbound bindings (RFC 5626 §6: C{reg-id} and C{+sip.instance}) stay
        until the client registers a new flow, and a request for them gets 430 Flow Failed;
        the others go at once (Kamailio's usrloc C{handle_lost_tcp}), so their user gets
        480.  Returns (bindings removed, outbound bindings kept)."""
        removed = kept = 0
        for aor in list(self._bindings):
            bindings = self._bindings[aor]
            keep = []
            for b in bindings:
                if b.source != flow or b.path:
                    keep.append(b)
                elif is_outbound(b):
                    keep.append(b)
                    kept += 1
                else:
                    removed += 1
            if len(keep) == len(bindings):
                continue
            if keep:
                self._bindings[aor] = keep
            else:
                del self._bindings[aor]
                self._remember(aor, now)
        return removed, kept

    def lookup(self, aor: str, now: float) -> Optional[list[Binding]]:
        """The live bindings of C{aor}, highest q first; L{None} when the user never
        registered (404), an empty list when all bindings are gone (480)."""
        if aor not in self._bindings:
            until = self._known.get(aor)
            return None if until is None or until <= now else []
        live = [b for b in self._bindings.get(aor, []) if b.expires_at > now]
        return sorted(live, key=lambda b: -(b.q if b.q is not None else 1.0))

    def expire(self, now: float) -> int:
        """Drop expired bindings and forget users whose retention ran out; return how many
        bindings went."""
        gone = 0
        for aor in list(self._bindings):
            keep = [b for b in self._bindings[aor] if b.expires_at > now]
            gone += len(self._bindings[aor]) - len(keep)
            if keep:
                self._bindings[aor] = keep
            else:
                del self._bindings[aor]
                self._remember(aor, now)
        self._forget_due(now)
        return gone

    def next_expiry(self) -> Optional[float]:
        """When the next binding expires, or L{None}."""
        times = [b.expires_at for bs in self._bindings.values() for b in bs]
        return min(times) if times else None

    def _expires_for(self, request: Request, contact: Optional[NameAddr]) -> int:
        text = contact.param("expires") if contact is not None else None
        if text is not None and is_digits(text):
            value = int(text)
        elif request.expires is not None:
            value = request.expires
        else:
            value = self.settings.default_expires
        if self.settings.max_expires and value > self.settings.max_expires:
            value = self.settings.max_expires
        return value

    def register(
        self,
        request: Request,
        source: Address,
        local: Optional[Address],
        now: float,
        received: Optional[Address] = None,
    ) -> RegisterResult:
        """Apply a REGISTER (RFC 3261 §10.3 steps 5-8) and say what to answer.

        @param received: the NAT address to store with the new bindings (fix_nated_register)."""
        aor = aor_of(request.to.uri)
        if aor is None:
            return RegisterResult(400, "Bad To: no user part")
        current = [b for b in self._bindings.get(aor, []) if b.expires_at > now]
        call_id, cseq = request.call_id, request.cseq.number
        if request.contact_star:
            if self._expires_for(request, None) != 0 or request.expires is None:
                return RegisterResult(400, "Contact * needs Expires: 0")
            for b in current:
                if b.call_id == call_id and b.cseq >= cseq:
                    return RegisterResult(500, "Out of order CSeq")
            self._bindings.pop(aor, None)
            self._remember(aor, now)
            return self._ok(aor, now, ())
        # RFC 3327: the Path is stored with the bindings and echoed in the 200.
        path = tuple(parse_name_addr(v) for v in request.values("path") if v)
        changes: list[tuple[NameAddr, int]] = []
        for contact in request.contacts:
            if not isinstance(contact.uri, SipUri):
                return RegisterResult(400, "Contact is not a SIP URI")
            expires = self._expires_for(request, contact)
            if 0 < expires < self.settings.min_expires:
                return RegisterResult(423, "", (("Min-Expires", str(self.settings.min_expires)),))
            try:
                _q_value(contact)
            except ValueError:
                return RegisterResult(400, "Bad q value")
            changes.append((contact, expires))
        updated = list(current)
        for contact, expires in changes:
            uri = contact.uri
            assert isinstance(uri, SipUri)
            old = next((b for b in updated if b.uri == uri), None)
            if old is not None:
                if old.call_id == call_id and old.cseq >= cseq:
                    return RegisterResult(500, "Out of order CSeq")
                updated.remove(old)
            if expires == 0:
                continue
            updated.append(
                Binding(
                    uri,
                    now + expires,
                    _q_value(contact),
                    call_id,
                    cseq,
                    source,
                    local,
                    contact.params,
                    received,
                    path,
                )
            )
        limit = self.settings.max_contacts
        if limit and len(updated) > limit:
            return RegisterResult(503, "Too many registered contacts")
        if updated:
            self._bindings[aor] = updated
            self._known.pop(aor, None)
        else:
            self._bindings.pop(aor, None)
            self._remember(aor, now)
        result = self._ok(aor, now, path)
        if _asks_outbound(request):
            # RFC 5626 §6: the registrar tells the UA its flows are kept (and a request for
            # a failed flow gets 430) by requiring outbound in its answer.
            result = replace(result, headers=(*result.headers, ("Require", "outbound")))
        return result

    def _ok(self, aor: str, now: float, path: tuple[NameAddr, ...]) -> RegisterResult:
        name = self.settings.received_param
        contacts = []
        for b in self._bindings.get(aor, []):
            value = f"<{b.uri}>;expires={b.expires_in(now)}"
            if b.received is not None and name:
                value += f';{name}="{source_uri(b.received)}"'
            contacts.append(("Contact", value))
        if path:
            contacts.append(("Path", ", ".join(str(p) for p in path)))
            contacts.append(("Supported", "path"))
        return RegisterResult(200, "", tuple(contacts))
