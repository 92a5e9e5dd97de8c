# -*- test-case-name: tests.core.test_media_lifecycle -*-
"""
Which calls have their media anchored, as the proxy core decides it (Kamailio's
rtpengine_offer/answer/delete lifecycle): the policy on the initial INVITE
(C{[rtp] rtp_policy}), the SDP bodies waiting at the relay (one token per L{Anchor}), and
the rewritten 2xx bodies kept for 2xx retransmissions that outlive their transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from sbc.core.address import TRANSPORTS, Address
from sbc.core.effects import Anchor, ReleaseMedia
from sbc.core.forwardcopy import SocketChooser, branch_is_ours
from sbc.core.message import Message, Request, Response
from sbc.core.nat import PrivateRanges, response_target
from sbc.core.relaypolicy import RouteSigner
from sbc.core.transaction import Send
from sbc.core.uri import SipUri, is_ip_literal

__all__ = ["MediaCall", "MediaCalls", "has_sdp", "stray_2xx"]

#: What to do once the relay answered: the rewritten SDP (None: it failed) and C{now}.
Continuation = Callable[[Optional[bytes], float], list[Any]]


def has_sdp(message: Message) -> bool:
    """Does C{message} carry an SDP body?"""
    if not message.body:
        return False
    kind = message.get("content-type")
    if kind is None:
        return message.body.startswith(b"v=")
    return kind.split(";")[0].strip().lower() == "application/sdp"


@dataclass
class MediaCall:
    """A call whose media sbc anchors; the rewritten 2xx bodies by (To tag, CSeq)."""

    answers: dict[tuple[Optional[str], int], bytes] = field(default_factory=dict)


class MediaCalls:
    """The anchored calls by Call-ID and the anchoring steps in flight."""

    def __init__(self) -> None:
        self.calls: dict[str, MediaCall] = {}
        self.anchoring: dict[int, Continuation] = {}
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self.calls)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self.calls

    def get(self, call_id: str) -> Optional[MediaCall]:
        return self.calls.get(call_id)

    def decide(
        self,
        original: Request,
        hops: list[Request],
        natted: bool,
        policy: str,
        ranges: PrivateRanges,
    ) -> bool:
        """Is C{original} part of a call whose media sbc anchors?  Decided on the initial
        INVITE by C{policy}: C{always}, or C{nated} when the caller or a callee is behind
        NAT (a private contact address or a NAT alias); later offers (re-INVITE, UPDATE)
        of an anchored call follow."""
        call_id = original.call_id
        if call_id in self.calls:
            return original.method in ("INVITE", "UPDATE")
        if policy == "never" or original.method != "INVITE" or original.to.tag is not None:
            return False
        if policy == "nated" and not (natted or any(natted_hop(r, ranges) for r in hops)):
            return False
        self.calls[call_id] = MediaCall()
        return True

    def anchor(
        self,
        op: str,
        message: Message,
        from_tag: Optional[str],
        to_tag: Optional[str],
        source: Address,
        then: Continuation,
    ) -> Anchor:
        """The L{Anchor} effect for C{message}'s SDP; C{then} runs with the relay's answer."""
        token = next(self._tokens)
        self.anchoring[token] = then
        return Anchor(token, op, message.call_id, from_tag or "", to_tag, message.body, source)

    def anchored(self, token: int) -> Optional[Continuation]:
        """The continuation waiting for token C{token} (None: unknown or already done)."""
        return self.anchoring.pop(token, None)

    def release(self, call_id: str) -> list[ReleaseMedia]:
        """End the media session of C{call_id}, if sbc anchors that call."""
        if self.calls.pop(call_id, None) is None:
            return []
        return [ReleaseMedia(call_id)]

    def ended(self, call_id: str) -> None:
        """The relay ended the call's media (media_timeout): forget it."""
        self.calls.pop(call_id, None)


def natted_hop(request: Request, ranges: PrivateRanges) -> bool:
    """Does a branch go to a NATed callee (a private contact host or a NAT alias)?"""
    uri = request.uri
    if not isinstance(uri, SipUri):
        return False
    if uri.param("alias") is not None:
        return True
    host = uri.param("maddr") or uri.host
    return is_ip_literal(host) and ranges.contains(host)


def stray_2xx(
    response: Response, media: MediaCalls, chooser: SocketChooser, signer: RouteSigner
) -> list[Send]:
    """A 2xx retransmission to an INVITE whose branch is gone is relayed along the Vias
    (RFC 3261 §16.7 step 10), with the SDP the relay gave the first one; anything else
    unmatched, and a "2xx" naming a branch sbc did not make, goes nowhere."""
    if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
        return []
    if len(response.vias) < 2 or not branch_is_ours(
        response.top_via.branch or "", response.call_id, signer
    ):
        return []  # not ours: a forged "2xx" must not be reflected to its second Via
    out = response.without_first_value("Via")
    assert isinstance(out, Response)
    call = media.get(response.call_id)
    if call is not None and has_sdp(out):
        body = call.answers.get((response.to.tag, response.cseq.number))
        if body is not None:
            out = out.with_body(body)
    via = out.top_via
    transport = via.transport.lower()
    if transport not in TRANSPORTS:
        return []
    host, port = response_target(via)
    peer = Address(transport, host, port)
    socket = chooser.choose(peer, chooser.sockets[0]) if chooser.sockets else None
    return [Send(out, peer, socket)]
