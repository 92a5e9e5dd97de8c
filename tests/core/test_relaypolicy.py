"""Tests for L{sbc.core.relaypolicy}: trusted peers, signed routes and the relay verdicts,
table-driven."""

from __future__ import annotations

import pytest

from sbc.core.address import Address
from sbc.core.relaypolicy import (
    RouteSigner,
    TrustedPeers,
    Verdict,
    in_dialog_verdict,
    initial_verdict,
    parse_trusted,
    route_signature,
    signed_by_us,
)
from sbc.core.uri import parse_name_addr

TRUSTED = TrustedPeers(
    parse_trusted("udp:203.0.113.10:5060, tcp:198.51.100.0/24 any:[2001:db8::/32] tls:10.1.2.3")
)


@pytest.mark.parametrize(
    "source, allowed",
    [
        (Address("udp", "203.0.113.10", 5060), True),
        (Address("udp", "203.0.113.10", 5061), False),  # port named: must match
        (Address("tcp", "203.0.113.10", 5060), False),  # transport named: must match
        (Address("tcp", "198.51.100.77", 40000), True),  # a prefix, any port
        (Address("udp", "198.51.100.77", 5060), False),
        (Address("udp", "2001:db8::5", 5060), True),  # any transport
        (Address("tls", "2001:db9::5", 5061), False),
        (Address("tls", "10.1.2.3", 5061), True),
        (Address("tls", "10.1.2.4", 5061), False),
        (Address("udp", "::ffff:203.0.113.10", 5060), False),  # no family mixing
    ],
)
def test_trusted_peers_match_transport_address_and_port(source: Address, allowed: bool) -> None:
    assert TRUSTED.allows(source) is allowed


def test_nobody_is_trusted_by_default() -> None:
    assert not TrustedPeers().allows(Address("udp", "127.0.0.1", 5060))
    assert not TrustedPeers()


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1",  # no transport
        "sctp:10.0.0.1",
        "udp:carrier.example",  # names are not addresses
        "udp:10.0.0.0/33",
        "udp:10.0.0.1:0",
        "udp:10.0.0.1:70000",
        "udp:2001:db8::1",  # IPv6 needs brackets
        "udp:[2001:db8::/129]",
    ],
)
def test_bad_trusted_entries_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"proto:ip\[/prefix\]\[:port\]"):
        parse_trusted(text)


def test_trusted_entries_print_as_they_are_written() -> None:
    assert [str(e) for e in TRUSTED.entries] == [
        "udp:203.0.113.10/32:5060",
        "tcp:198.51.100.0/24",
        "any:[2001:db8::/32]",
        "tls:10.1.2.3/32",
    ]


def test_signatures_bind_the_dialog() -> None:
    signer = RouteSigner(b"k" * 16)
    signature = signer.sign("call-1", "ftag-1")
    assert len(signature) == 12 and signer.valid(signature, "call-1", "ftag-1")
    assert not signer.valid(signature, "call-2", "ftag-1")  # another dialog's Call-ID
    assert not signer.valid(signature, "call-1", "ftag-2")
    assert not signer.valid(None, "call-1", "ftag-1")
    assert not RouteSigner(b"x" * 16).valid(signature, "call-1", "ftag-1")  # another secret
    with pytest.raises(ValueError):
        RouteSigner(b"")


def test_signed_by_us_binds_the_dialog_its_tags_and_an_age() -> None:
    signer = RouteSigner(b"k" * 16)
    issued = route_signature(signer, "c", "a", 1000.0)
    good = f"<sip:127.0.0.1;lr;ftag=a;sig={issued}>"
    forged = "<sip:127.0.0.1;lr;ftag=a;sig=3e8.000000000000>"
    unsigned = "<sip:127.0.0.1;lr;ftag=a>"

    def check(entries: list[str], call_id: str = "c", tags=("a", "b"), now=1010.0) -> bool:
        consumed = [parse_name_addr(e) for e in entries]
        return signed_by_us(consumed, call_id, tags, signer, now, 3600)

    assert check([unsigned, good])
    assert not check([forged]) and not check([unsigned]) and not check([])
    assert not check([good], call_id="other-call")  # another dialog's Route
    assert not check([good], tags=("x", "y"))  # this dialog's Route with other tags
    assert check([good], tags=("b", "a"))  # the callee's requests carry the tag in To
    assert not check([good], now=1000.0 + 3601)  # kept after its dialog could have lived
    assert not check([good.replace("ftag=a", "ftag=z")], tags=("z", "b"))


# Columns: method, to_us, from_local, trusted, auth_enabled, allow_relay -> verdict
A, F, R, N, X = (
    Verdict.ACCEPT,
    Verdict.FORBIDDEN,
    Verdict.AUTHENTICATE,
    Verdict.NOT_HERE,
    Verdict.ABSORB,
)
INITIAL = [
    # Authentication on: our users prove who they are, wherever they call.
    ("INVITE", False, True, False, True, False, R),  # alice -> trunk
    ("INVITE", True, True, False, True, False, R),  # alice -> bob
    ("MESSAGE", False, True, False, True, False, R),
    ("SUBSCRIBE", True, True, False, True, False, R),
    ("OPTIONS", False, True, False, True, False, R),
    ("REGISTER", True, False, False, True, False, R),
    ("REGISTER", True, True, False, True, False, R),
    # ... others reach our users only, never the trunk.
    ("INVITE", True, False, False, True, False, A),  # the internet -> bob
    ("INVITE", False, False, False, True, False, F),  # attacker -> trunk
    ("MESSAGE", False, False, False, True, False, F),
    ("REGISTER", False, False, False, True, False, F),  # someone else's registrar
    # Authentication off: our domains only, unless the operator opened the relay.
    ("INVITE", True, True, False, False, False, A),
    ("INVITE", True, False, False, False, False, A),
    ("INVITE", False, True, False, False, False, F),  # a From of ours proves nothing
    ("INVITE", False, False, False, False, False, F),
    ("REGISTER", True, False, False, False, False, A),
    ("REGISTER", False, False, False, False, False, F),
    ("INVITE", False, False, False, False, True, A),  # allow_relay = yes
    ("REGISTER", False, False, False, False, True, A),
    ("INVITE", False, True, False, True, True, R),  # open, but our users still prove it
    # Trusted peers skip authentication and go anywhere.
    ("INVITE", False, False, True, True, False, A),
    ("INVITE", False, True, True, True, False, A),
    ("REGISTER", True, False, True, True, False, A),
    ("INVITE", False, False, True, False, False, A),
    # An ACK outside any transaction starts nothing.
    ("ACK", True, False, False, False, False, X),
    ("ACK", False, False, False, False, True, X),
    ("ACK", False, False, True, False, False, A),
]


@pytest.mark.parametrize(
    "method, to_us, from_local, trusted, auth_enabled, allow_relay, verdict", INITIAL
)
def test_initial_verdict(
    method: str,
    to_us: bool,
    from_local: bool,
    trusted: bool,
    auth_enabled: bool,
    allow_relay: bool,
    verdict: Verdict,
) -> None:
    assert (
        initial_verdict(
            method=method,
            to_us=to_us,
            from_local=from_local,
            trusted=trusted,
            auth_enabled=auth_enabled,
            allow_relay=allow_relay,
        )
        is verdict
    )


# Columns: method, routed_by_us, known_dialog, trusted, allow_relay -> verdict
IN_DIALOG = [
    ("BYE", True, False, False, False, A),
    ("BYE", False, True, False, False, A),
    ("INVITE", False, False, False, False, N),  # a forged To tag
    ("MESSAGE", False, False, False, False, N),
    ("ACK", False, False, False, False, X),
    ("ACK", True, False, False, False, A),
    ("INVITE", False, False, True, False, A),
    ("INVITE", False, False, False, True, A),
]


@pytest.mark.parametrize(
    "method, routed_by_us, known_dialog, trusted, allow_relay, verdict", IN_DIALOG
)
def test_in_dialog_verdict(
    method: str,
    routed_by_us: bool,
    known_dialog: bool,
    trusted: bool,
    allow_relay: bool,
    verdict: Verdict,
) -> None:
    assert (
        in_dialog_verdict(
            method=method,
            routed_by_us=routed_by_us,
            known_dialog=known_dialog,
            trusted=trusted,
            allow_relay=allow_relay,
        )
        is verdict
    )
