"""
sbc at the edge is never an open relay: attacks sent over real UDP sockets to a running sbc
with [auth] on, an outbound proxy (a carrier trunk on 127.0.0.2) that is also the one
trusted peer, and the default policy.  Nothing an attacker sends reaches the trunk or a
callee; the legitimate paths still work (authenticated user to the trunk, trunk to a
registered user, in-dialog BYE both ways, a trusted peer relaying).
"""

from __future__ import annotations

import hashlib
import socket
import time
from typing import Optional

import pytest

from sbc.core.auth import digest_response
from sbc.core.message import Request, Response, parse
from sbc.core.relaypolicy import RouteSigner
from tests.helpers import free_port
from tests.system.harness import SbcProcess
from tests.system.mini_uas import MiniUas

pytestmark = pytest.mark.system

REALM = "sbc.test"
PASSWORDS = {"alice": "secret", "bob": "hunter2"}


def ha1(user: str) -> str:
    return hashlib.md5(f"{user}:{REALM}:{PASSWORDS[user]}".encode()).hexdigest()


class Agent:
    """A SIP endpoint on a real UDP socket that builds requests by hand."""

    def __init__(self, sbc_port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(3)
        self.host, self.port = self.sock.getsockname()
        self.sbc = ("127.0.0.1", sbc_port)
        self.n = 0

    def request(
        self,
        method: str,
        uri: str,
        sender: str,
        *,
        to: str = "<sip:bob@sbc.test>",
        call_id: Optional[str] = None,
        headers: tuple = (),
        cseq: int = 1,
    ) -> bytes:
        self.n += 1
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch=z9hG4bK{self.port}x{self.n}",
            "Max-Forwards: 70",
            f"From: <sip:{sender}>;tag=f{self.port}",
            f"To: {to}",
            f"Call-ID: {call_id or f'{method}-{self.port}-{self.n}'}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{sender.split('@')[0]}@{self.host}:{self.port}>",
            *[f"{name}: {value}" for name, value in headers],
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def send(self, data: bytes, to: Optional[tuple[str, int]] = None) -> None:
        self.sock.sendto(data, to or self.sbc)

    def receive(self, timeout: float = 3.0) -> Optional[object]:
        """The next message (None after C{timeout}); 100 Trying is skipped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            message = parse(data)
            if isinstance(message, Response) and message.status == 100:
                continue
            return message
        return None

    def ask(self, data: bytes) -> Response:
        self.send(data)
        answer = self.receive()
        assert isinstance(answer, Response), f"no answer to {data[:60]!r}"
        return answer

    def authorized(self, challenge: Response, data: bytes, user: str) -> bytes:
        """C{data} again (a new branch) with credentials answering C{challenge}."""
        request = parse(data)
        assert isinstance(request, Request)
        header = challenge.get("Proxy-Authenticate") or challenge.get("WWW-Authenticate") or ""
        offer = (
            next(
                o
                for o in challenge.get_all("Proxy-Authenticate")
                + challenge.get_all("WWW-Authenticate")
                if "algorithm=MD5" in o
            )
            or header
        )
        nonce = offer.split('nonce="')[1].split('"')[0]
        uri = str(request.uri)
        response = digest_response(
            "MD5", ha1(user), nonce, request.method, uri, "auth", "00000001", "c0ffee"
        )
        value = (
            f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"'
        )
        name = "Authorization" if request.method == "REGISTER" else "Proxy-Authorization"
        self.n += 1
        text = (
            data.decode()
            .replace(";branch=z9hG4bK", f";branch=z9hG4bKauth{self.n}", 1)
            .replace("Content-Length: 0", f"{name}: {value}\r\nContent-Length: 0")
        )
        return text.encode()

    def close(self) -> None:
        self.sock.close()


def ack_and_bye(agent: Agent, ok: Response, invite: bytes, sender: str) -> bytes:
    """The ACK for C{ok} along its route set, and a BYE the same way (returned, unsent)."""
    routes = ", ".join(reversed([str(r) for r in ok.record_routes]))
    contact = ok.contacts[0].uri if ok.contacts else None
    target = str(contact)
    to = ok.get("To")
    request = parse(invite)
    assert isinstance(request, Request)
    headers = (("Route", routes),) if routes else ()
    agent.send(
        agent.request("ACK", target, sender, to=to, call_id=request.call_id, headers=headers)
    )
    return agent.request(
        "BYE", target, sender, to=to, call_id=request.call_id, headers=headers, cseq=2
    )


@pytest.fixture
def edge(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "users").write_text(
        "".join(f"{user}:{REALM}:MD5:{ha1(user)}\n" for user in PASSWORDS)
    )
    trunk = MiniUas(host="127.0.0.2")
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
        f"outbound_proxy = sip:127.0.0.2:{trunk.port};lr\n"
        f"[permissions]\ntrusted = udp:127.0.0.2\n"
        f"[auth]\nrealm = {REALM}\ncredentials_file = users\n"
        "[tm]\nfr_timer = 2000\nfr_inv_timer = 3000\n"
    )
    agents: list[Agent] = []
    try:
        with SbcProcess(str(config)) as sbc:
            sbc.wait_for("listening on ")

            def agent(host: str = "127.0.0.1") -> Agent:
                made = Agent(port, host)
                agents.append(made)
                return made

            yield sbc, trunk, agent
    finally:
        for made in agents:
            made.close()
        trunk.close()


def register(agent: Agent, user: str) -> None:
    data = agent.request(
        "REGISTER", "sip:sbc.test", f"{user}@sbc.test", to=f"<sip:{user}@sbc.test>"
    )
    challenge = agent.ask(data)
    assert challenge.status == 401
    assert agent.ask(agent.authorized(challenge, data, user)).status == 200


def test_attacks_reach_nobody(edge) -> None:  # type: ignore[no-untyped-def]
    sbc, trunk, agent = edge
    attacker, bob = agent(), agent()
    register(bob, "bob")
    signed_elsewhere = RouteSigner(b"another sbc's secret").sign("copied", f"f{attacker.port}")
    attacks = [
        # foreign From to a trunk number
        (
            attacker.request("INVITE", "sip:+15551234@trunk.example", "attacker@evil.example"),
            403,
        ),
        # our user's From with a forged To tag and no Route
        (
            attacker.request(
                "INVITE", "sip:+15551234@trunk.example", "alice@sbc.test", to="<sip:x@y>;tag=1"
            ),
            404,
        ),
        # MESSAGE from our user to a trunk number: challenged
        (attacker.request("MESSAGE", "sip:+15551234@trunk.example", "alice@sbc.test"), 407),
        # an IP literal R-URI with a foreign From
        (attacker.request("INVITE", "sip:+1555@203.0.113.77", "x@evil.example"), 403),
        # REGISTER for an existing user without credentials
        (
            attacker.request("REGISTER", "sip:sbc.test", "bob@sbc.test", to="<sip:bob@sbc.test>"),
            401,
        ),
        # a Route header copied from another sbc's dialog
        (
            attacker.request(
                "INVITE",
                f"sip:+1555@127.0.0.2:{trunk.port}",
                "alice@sbc.test",
                to="<sip:x@y>;tag=2",
                call_id="copied",
                headers=(
                    (
                        "Route",
                        f"<sip:127.0.0.1:{attacker.sbc[1]};lr;ftag=f{attacker.port};"
                        f"sig={signed_elsewhere}>",
                    ),
                ),
            ),
            404,
        ),
        # a forged BYE for bob's phone
        (
            attacker.request(
                "BYE",
                f"sip:bob@127.0.0.1:{bob.port}",
                "x@evil.example",
                to="<sip:bob@sbc.test>;tag=3",
            ),
            404,
        ),
    ]
    for data, status in attacks:
        answer = attacker.ask(data)
        assert answer.status == status, (data[:50], answer.status)
    attacker.send(
        attacker.request(
            "ACK", f"sip:x@127.0.0.2:{trunk.port}", "x@evil.example", to="<sip:x@y>;tag=4"
        )
    )
    time.sleep(0.5)
    assert trunk.requests == []
    assert bob.receive(0.2) is None  # nothing reached the registered phone either
    assert len(sbc.wait_for("relay_forbidden: ")) == 1  # one line, then rate-limited
    sbc.stop()
    stats = sbc.statistics()
    assert stats.get("relay_forbidden") == 2 and stats.get("not_here") == 3


def test_legitimate_paths_still_work(edge) -> None:  # type: ignore[no-untyped-def]
    sbc, trunk, agent = edge
    alice, bob, carrier = agent(), agent(), agent("127.0.0.2")
    register(bob, "bob")

    # Our authenticated user calls a trunk number; BYE through our signed Record-Route.
    invite = alice.request("INVITE", "sip:+15551234@trunk.example", "alice@sbc.test")
    challenge = alice.ask(invite)
    assert challenge.status == 407
    invite = alice.authorized(challenge, invite, "alice")
    ok = alice.ask(invite)
    assert ok.status == 200 and ";sig=" in (ok.get("Record-Route") or "")
    assert alice.ask(ack_and_bye(alice, ok, invite, "alice@sbc.test")).status == 200
    assert [m for m, _ in trunk.requests] == ["INVITE", "ACK", "BYE"]

    # The trusted carrier calls bob; bob hangs up (BYE the other way).
    call = carrier.request("INVITE", "sip:bob@sbc.test", "+15551234@carrier.example")
    carrier.send(call)
    incoming = bob.receive()
    assert isinstance(incoming, Request) and incoming.method == "INVITE"
    rr = [("Record-Route", str(r)) for r in incoming.record_routes]
    lines = [
        "SIP/2.0 200 OK",
        *[f"Via: {v}" for v in incoming.get_all("Via")],
        *[f"{n}: {v}" for n, v in rr],
        f"From: {incoming.get('From')}",
        f"To: {incoming.get('To')};tag=bobtag",
        f"Call-ID: {incoming.call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:bob@127.0.0.1:{bob.port}>",
        "Content-Length: 0",
    ]
    bob.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    ok = carrier.receive()
    assert isinstance(ok, Response) and ok.status == 200
    ack_and_bye(carrier, ok, call, "+15551234@carrier.example")
    ack = bob.receive()
    assert isinstance(ack, Request) and ack.method == "ACK"
    # bob's BYE: route set = the Record-Route as received, towards the carrier
    caller_contact = incoming.contacts[0].uri
    bye = bob.request(
        "BYE",
        str(caller_contact),
        "bob@sbc.test",
        to=incoming.get("From") or "",
        call_id=incoming.call_id,
        headers=(("Route", ", ".join(str(r) for r in incoming.record_routes)),),
        cseq=1,
    ).replace(f"tag=f{bob.port}".encode(), b"tag=bobtag")
    bob.send(bye)
    got = carrier.receive()
    assert isinstance(got, Request) and got.method == "BYE"

    # A trusted peer may relay anywhere (here: to the trunk by its address).
    before = len(trunk.requests)
    relayed = carrier.ask(
        carrier.request("OPTIONS", f"sip:+1@127.0.0.2:{trunk.port}", "c@carrier.example")
    )
    assert relayed.status == 200 and trunk.requests[before:] == [("OPTIONS", trunk.requests[-1][1])]
    sbc.stop()
    assert sbc.statistics().get("relay_forbidden", 0) == 0
