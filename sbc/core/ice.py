# -*- test-case-name: tests.core.test_ice -*-
"""
The built-in relay as an ICE-lite agent (RFC 8445 §2.5) towards a side that speaks ICE.

A lite agent gathers only host candidates and never sends checks: it answers the checks of
the full agent on the other end (which is then controlling, RFC 8445 §6.1.1).  The relay
offers one host candidate per component, its own address and port, and credentials of its
own per call side (L{new_credentials}; L{IceSides} decides which sides get them: those that
speak ICE, and one not heard yet when the offer it gets comes from a side that does).
L{answer_check} authenticates a connectivity check that reached a relay port and builds the
response; the session table latches the side to the check's source (RFC 8445 §7.3.1.4: the
nominated pair is the one media goes on).

Pure: randomness comes in as a C{random.Random} (the adapter passes C{SystemRandom}).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Optional, Protocol

from sbc.core.address import Address
from sbc.core.stun import StunError, check_error, check_success, parse_check

__all__ = [
    "IceCredentials",
    "IceSides",
    "IceSignals",
    "CheckAnswer",
    "new_credentials",
    "host_priority",
    "candidate_line",
    "answer_check",
    "UFRAG_LENGTH",
    "PWD_LENGTH",
]

#: ice-char (RFC 8839 §5.4): ALPHA / DIGIT / "+" / "/".
_ICE_CHARS = string.ascii_letters + string.digits + "+/"
#: RFC 8445 §5.3: at least 24 bits of randomness in the ufrag (4 chars) and 128 in the
#: password (22 chars); a little more of both.
UFRAG_LENGTH = 8
PWD_LENGTH = 24
#: RFC 8445 §5.1.2.2: the recommended type preference of a host candidate.
HOST_TYPE_PREFERENCE = 126
#: ... and the local preference of a single-homed agent.
LOCAL_PREFERENCE = 65535


@dataclass(frozen=True)
class IceCredentials:
    """The relay's C{a=ice-ufrag} and C{a=ice-pwd} towards one side of a call."""

    ufrag: str
    pwd: str


def new_credentials(rng: Random) -> IceCredentials:
    """Fresh random credentials (RFC 8445 §5.3)."""
    ufrag = "".join(rng.choice(_ICE_CHARS) for _ in range(UFRAG_LENGTH))
    pwd = "".join(rng.choice(_ICE_CHARS) for _ in range(PWD_LENGTH))
    return IceCredentials(ufrag, pwd)


class IceSignals(Protocol):
    """What L{IceSides.learn} reads of a media stream (L{sbc.core.sdp.MediaStream})."""

    @property
    def ice(self) -> bool: ...
    @property
    def ice_ufrag(self) -> Optional[str]: ...
    @property
    def disabled(self) -> bool: ...


@dataclass
class IceSides:
    """
    The relay's ICE towards the two sides of a call (0 the first offerer, 1 the other).

    @ivar credentials: per side, the relay's credentials in the SDP sent to it (L{None}:
        no ICE towards it).
    @ivar peer_ufrag: per side, the C{a=ice-ufrag} of its last SDP.
    @ivar described: per side, whether it has sent SDP in this call.
    """

    credentials: list[Optional[IceCredentials]] = field(default_factory=lambda: [None, None])
    peer_ufrag: list[Optional[str]] = field(default_factory=lambda: [None, None])
    described: list[bool] = field(default_factory=lambda: [False, False])

    def learn(self, side: int, streams: Sequence[IceSignals], answering: bool, rng: Random) -> None:
        """C{side} sent SDP: does it speak ICE (in a stream not disabled)?  The credentials
        towards it stay for the call, and are new when its ufrag changes in an offer (an
        ICE restart, RFC 8445 §9); an answer keeps the credentials the offer it answers
        gave it (its checks carry them)."""
        self.described[side] = True
        offered = [s for s in streams if s.ice and not s.disabled]
        if not offered:
            self.credentials[side] = self.peer_ufrag[side] = None
            return
        ufrag = next((s.ice_ufrag for s in offered if s.ice_ufrag), None)
        if self.credentials[side] is None or (not answering and ufrag != self.peer_ufrag[side]):
            self.credentials[side] = new_credentials(rng)
        self.peer_ufrag[side] = ufrag

    def offer(self, side: int, rng: Random) -> bool:
        """
        An offer from C{side} goes on to the other side.  Towards a side that has sent no
        SDP yet, ICE when the offerer speaks ICE (an answerer without ICE ignores the lines,
        RFC 4566 §5.13; one with ICE that got none takes the relay for a peer without ICE,
        and baresip then never starts its media), none otherwise.

        @return: whether that decided the other side's credentials (it had sent no SDP).
        """
        other = 1 - side
        if self.described[other]:
            return False
        if self.credentials[side] is None:
            self.credentials[other] = None
        elif self.credentials[other] is None:
            self.credentials[other] = new_credentials(rng)
        return True


def host_priority(component: int) -> int:
    """RFC 8445 §5.1.2.1: 2^24 * type preference + 2^8 * local preference + (256 - id)."""
    return (HOST_TYPE_PREFERENCE << 24) + (LOCAL_PREFERENCE << 8) + (256 - component)


def candidate_line(address: str, port: int, component: int) -> str:
    """The C{a=candidate} line (RFC 8839 §5.1) of the relay's host candidate."""
    priority = host_priority(component)
    return f"a=candidate:1 {component} UDP {priority} {address} {port} typ host"


@dataclass(frozen=True)
class CheckAnswer:
    """
    What to do with a STUN datagram on a relay port.

    @ivar reply: the response to send back to the source (L{None}: drop silently).
    @ivar valid: the check was authenticated: the side may latch to its source.
    @ivar use_candidate: ... and it nominates this pair (USE-CANDIDATE).
    """

    reply: Optional[bytes]
    valid: bool = False
    use_candidate: bool = False


def answer_check(
    data: bytes,
    source: tuple[str, int],
    local: IceCredentials,
    remote_ufrag: Optional[str],
) -> CheckAnswer:
    """
    Authenticate a connectivity check to the relay (RFC 8445 §7.3, RFC 5389 §10.1.2).

    USERNAME must be C{<local ufrag>:<remote ufrag>} (the remote part is only compared when
    the side's SDP gave one) and MESSAGE-INTEGRITY must verify with the local password.
    A check without them gets 400, one with wrong credentials 401; anything that is not
    a well-formed Binding request (responses, indications, unknown comprehension-required
    attributes, garbage) is dropped without an answer.
    """
    try:
        check = parse_check(data)
    except StunError:
        return CheckAnswer(None)
    if check.username is None or check.integrity_at is None:
        return CheckAnswer(check_error(check.transaction_id, 400, "Bad Request"))
    ours, colon, theirs = check.username.partition(":")
    if (
        not colon
        or ours != local.ufrag
        or (remote_ufrag is not None and theirs != remote_ufrag)
        or not check.verify(local.pwd)
    ):
        return CheckAnswer(check_error(check.transaction_id, 401, "Unauthorized"))
    reply = check_success(check, Address("udp", source[0], source[1]), local.pwd)
    return CheckAnswer(reply, valid=True, use_candidate=check.use_candidate)
