"""
Helpers for driving the proxy core without sockets: a proxy on fixed addresses, requests
from a caller, and the next hop's answers (what h11's pair-of-peers helper is to HTTP).
"""

from __future__ import annotations

from typing import Optional

from sbc.core.address import Address
from sbc.core.message import Message, Request, Response, parse
from sbc.core.nat import stamp_via
from sbc.core.proxy import Proxy, ProxySettings
from sbc.core.reply import make_response
from sbc.core.transaction import Send, Timers
from tests.helpers import make_proxy, request_bytes

SBC = Address("udp", "127.0.0.1", 5060)
SBC_TCP = Address("tcp", "127.0.0.1", 5060)
CALLER = Address("udp", "192.0.2.10", 5070)
BOB1 = Address("udp", "192.0.2.21", 5081)
BOB2 = Address("udp", "192.0.2.22", 5082)
TIMERS = Timers(fr_timer=30.0, fr_inv_timer=60.0)


def proxy(**kw) -> Proxy:  # type: ignore[no-untyped-def]
    return make_proxy([SBC, SBC_TCP], ProxySettings(timers=TIMERS, **kw))


def to_request(data: bytes, source: Address = CALLER) -> Request:
    m = parse(data)
    assert isinstance(m, Request)
    return stamp_via(m, source.host, source.port)


def send_request(
    p: Proxy, data: bytes, now: float = 0.0, source: Address = CALLER, local: Address = SBC
) -> list:
    return p.receive_request(to_request(data, source), source, local, now)


def sent(effects: list, peer: Optional[Address] = None) -> list[Message]:
    return [e.message for e in effects if isinstance(e, Send) and (peer is None or e.peer == peer)]


def statuses(effects: list, peer: Address = CALLER) -> list[int]:
    return [m.status for m in sent(effects, peer) if isinstance(m, Response)]


def invite(
    uri: str = "sip:bob@sbc.test",
    *,
    branch: str = "z9hG4bKc1",
    call_id: str = "c1",
    headers: tuple = (),
) -> bytes:
    return request_bytes(
        "INVITE",
        uri,
        via=f"SIP/2.0/UDP 192.0.2.10:5070;branch={branch};rport",
        call_id=call_id,
        headers=headers,
    )


def register(
    p: Proxy,
    contact: Address,
    user: str = "bob",
    cseq: int = 1,
    expires: int = 300,
    call_id: Optional[str] = None,
) -> list:
    data = request_bytes(
        "REGISTER",
        "sip:sbc.test",
        cseq=cseq,
        call_id=call_id or f"reg-{contact.port}",
        via=f"SIP/2.0/UDP {contact.host}:{contact.port};branch=z9hG4bKr{contact.port}{cseq}",
        headers=[
            ("Contact", f"<sip:{user}@{contact.host}:{contact.port}>"),
            ("Expires", str(expires)),
        ],
    )
    data = data.replace(b"To: <sip:bob@example.com>", f"To: <sip:{user}@sbc.test>".encode())
    return send_request(p, data, source=contact)


def answer(
    p: Proxy, request: Message, status: int, source: Address, now: float, to_tag: str = "callee"
) -> list:
    """The next hop answers the request it got from us."""
    assert isinstance(request, Request)
    response = make_response(request, status)
    if status > 100:
        response = response.with_header("To", f"{request.get('to')};tag={to_tag}")
    again = parse(response.to_bytes())
    assert isinstance(again, Response)
    return p.receive_response(again, source, now)
