# -*- test-case-name: tests.core.test_proxy_lifecycle -*-
"""
The copy a proxy sends for each branch (RFC 3261 §16.6): the socket it leaves from,
Max-Forwards, Record-Route (signed, double when the sockets differ: Kamailio rr's
C{enable_double_rr}), Path for a relayed REGISTER (RFC 3327), our Via with a branch that
carries the loop-detection hash (§16.6 step 8), and the loop check of §16.3 step 4.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any, Optional

from sbc.core.address import Address
from sbc.core.message import Request
from sbc.core.relaypolicy import SIGNATURE_PARAM, RouteSigner, route_signature
from sbc.core.routing import record_route_value
from sbc.core.uri import format_host

__all__ = [
    "BRANCH_PREFIX",
    "branch_id",
    "branch_is_ours",
    "SocketChooser",
    "via_host",
    "prepare_copy",
    "path_entry",
    "loop_hash",
    "is_loop",
]

#: Our Via branches: the RFC 3261 magic cookie, then sbc's mark.
BRANCH_PREFIX = "z9hG4bKsbc"

#: Source address lookup: the local address the system would send from to a host (None:
#: unknown); the network layer answers it from the routing table.
SourceFor = Callable[[str], Optional[str]]


class SocketChooser:
    """
    Which of our sockets a message to C{target} leaves from: the one the script forced
    (C{force_send_socket}), else the preferred one (the socket the request came in on, or
    the one a binding was made with) when it fits the transport and family and is the only
    one that does, else -- with several sockets on one transport, like Kamailio's
    C{mhomed} -- the one whose address the system would use to reach C{target}.
    """

    def __init__(self, sockets: list[Address], source_for: Optional[SourceFor] = None):
        self.sockets = sockets  # the proxy's own list: sockets bound later count too
        self.source_for = source_for

    def choose(self, target: Address, preferred: Optional[Address]) -> Optional[Address]:
        fitting = [
            s for s in self.sockets if s.transport == target.transport and s.family == target.family
        ]
        if preferred is not None and preferred in fitting and len(fitting) == 1:
            return preferred
        if len(fitting) > 1 and self.source_for is not None:
            source = self.source_for(target.host)
            for socket in fitting:
                if socket.host == source:
                    return socket
        if (
            preferred is not None
            and preferred.transport == target.transport
            and preferred.family == target.family
        ):
            return preferred
        return fitting[0] if fitting else None


def branch_id(loop_hash: str, nonce: int, call_id: str, signer: RouteSigner) -> str:
    """Our Via branch for a forwarded request: the magic cookie and sbc's mark, the loop
    hash (§16.6 step 8), a random part and a short MAC over it and the Call-ID, so that a
    2xx claiming to answer one of our branches can be told from a forged one."""
    rand = f"{nonce:010x}"
    return f"{BRANCH_PREFIX}{loop_hash}.{rand}{signer.sign('branch', call_id, rand)[:8]}"


def branch_is_ours(branch: str, call_id: str, signer: RouteSigner) -> bool:
    """Did sbc make C{branch} (by L{branch_id}) for a request of C{call_id}?"""
    if not branch.startswith(BRANCH_PREFIX):
        return False
    _, dot, tail = branch.partition(".")
    if not dot or len(tail) != 18:
        return False
    return hmac.compare_digest(signer.sign("branch", call_id, tail[:10])[:8], tail[10:])


def via_host(socket: Address, advertise: Optional[tuple[str, Optional[int]]]) -> tuple[str, int]:
    """The host and port our Via, Record-Route and Path name for C{socket}."""
    if advertise is not None:
        return advertise[0], advertise[1] if advertise[1] is not None else socket.port
    return socket.host, socket.port


def prepare_copy(
    original: Request,
    request: Request,
    socket: Address,
    inbound: Address,
    branch: str,
    settings: Any,
    signer: RouteSigner,
    rr_params: Optional[str] = None,
    now: float = 0.0,
) -> Request:
    """The copy for one branch (§16.6): Max-Forwards decremented (70 when missing: step
    3), Record-Route when the script asked for it (signed over Call-ID and From tag, with
    its parameters; double when C{socket} is not C{inbound}), our Via."""
    mf = request.max_forwards
    out = request.with_header("Max-Forwards", str(mf - 1 if mf is not None else 70))
    if rr_params is not None:
        ftag = original.from_.tag if settings.append_fromtag else None
        signature = route_signature(signer, original.call_id, ftag or "", now)
        rr = {
            "ftag": ftag,
            "advertise": settings.advertise,
            "params": f"{rr_params};{SIGNATURE_PARAM}={signature}",
        }
        double = settings.enable_double_rr == 2 or (
            settings.enable_double_rr == 1 and socket != inbound
        )
        if double:
            out = out.with_header_first("Record-Route", record_route_value(inbound, r2=True, **rr))
            out = out.with_header_first("Record-Route", record_route_value(socket, r2=True, **rr))
        else:
            out = out.with_header_first("Record-Route", record_route_value(socket, **rr))
    host, port = via_host(socket, settings.advertise)
    via = f"SIP/2.0/{socket.transport.upper()} {format_host(host)}:{port};branch={branch}"
    out = out.with_header_first("Via", via)
    assert isinstance(out, Request)
    return out


def path_entry(
    socket: Address,
    advertise: Optional[tuple[str, Optional[int]]],
    received: Optional[str],
    signer: RouteSigner,
) -> str:
    """A Path entry naming C{socket} (RFC 3327), with the escaped NAT address as a signed
    C{;received=} when given."""
    host, port = via_host(socket, advertise)
    path = f"sip:{format_host(host)}:{port}"
    if socket.transport != "udp":
        path += f";transport={socket.transport}"
    path += ";lr"
    if received is not None:
        path += f";received={received};{SIGNATURE_PARAM}={signer.sign(received)}"
    return f"<{path}>"


def _ours(vias: Iterable[Any], mine: set[tuple[str, int]]) -> list[int]:
    return [i for i, v in enumerate(vias) if (v.host_bare, v.port or 5060) in mine]


def loop_hash(request: Request, previous_hop: Any) -> str:
    """A digest of what identifies a request at this hop (§16.6 step 8), over the Via of
    the hop it came from, so that a request coming back carries the hash it left with."""
    parts = (
        str(request.uri),
        request.from_.tag or "",
        request.to.tag or "",
        request.call_id,
        str(request.cseq.number),
        str(previous_hop),
        ",".join(request.get_all("proxy-require")),
    )
    text = "\0".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.blake2s(text, digest_size=6).hexdigest()


def is_loop(request: Request, mine: frozenset[tuple[str, int]]) -> bool:
    """§16.3 step 4: a loop when one of our Vias carries the hash this very request
    would get from the Via just below it (the hop it came from when we forwarded it,
    also when it came back through other proxies); a spiral, with another Request-URI,
    has another hash and passes."""
    vias = request.vias
    for i in _ours(vias, mine):
        if i + 1 >= len(vias):
            continue
        expected = BRANCH_PREFIX + loop_hash(request, vias[i + 1])
        if (vias[i].branch or "").startswith(expected):
            return True
    return False
