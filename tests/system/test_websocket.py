"""
System tests for SIP over WebSocket (RFC 7118) on a running sbc: a WSS client (the
Python UA of L{tests.system.ws_ua}) registers and is called from a UDP SIPp caller and from
another WSS client, BYE goes either way, a dead connection gives 480 (or 430 Flow Failed
for an RFC 5626 outbound registration), and bad input on one connection closes only that
connection.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import threading
import time

import pytest
from wsproto.events import AcceptConnection, BytesMessage, RejectConnection, TextMessage

from sbc.app.devcert import make_certificates
from sbc.core.message import Response, parse
from tests.helpers import free_port
from tests.system.harness import SCENARIOS, SbcProcess, require_sipp, run_sipp, sipp_summary
from tests.system.ws_ua import WsUa

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def sbc(tmp_path_factory):  # type: ignore[no-untyped-def]
    """sbc with UDP, WS and WSS listeners on loopback; SIPp callers stand for the core."""
    folder = tmp_path_factory.mktemp("sbc-ws")
    certs = make_certificates(str(folder / "tls"))
    udp, ws, wss = free_port(), free_port(), free_port()
    config = folder / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{udp} ws:127.0.0.1:{ws} wss:127.0.0.1:{wss}\n"
        "alias = sbc.test\nmax_message_size = 16384\n"
        "[tm]\nfr_inv_timer = 5000\n"
        "[rtp]\nrtp_policy = never\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
        f"[tls]\ncertificate = {certs['certificate']}\nprivate_key = {certs['private_key']}\n"
        "[websocket]\nallowed_origins = https://phone.example\nhandshake_timeout = 2\n"
    )
    with SbcProcess(str(config)) as process:
        process.wait_for(r"listening on ", count=3)
        process.udp, process.ws, process.wss = udp, ws, wss  # type: ignore[attr-defined]
        yield process
        process.assert_clean_stop()
        stats = process.statistics()
        print("sbc statistics:", {k: v for k, v in stats.items() if k.startswith("ws")})


def ua(sbc, user: str, **kw) -> WsUa:  # type: ignore[no-untyped-def]
    client = WsUa(sbc.wss, user, **kw)
    assert isinstance(client.handshake, AcceptConnection), client.handshake
    return client


def udp_invite(sbc, user: str) -> Response:  # type: ignore[no-untyped-def]
    """A UDP caller's INVITE to C{user}; its final response (ACKed)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(15)
    port = sock.getsockname()[1]
    call_id, branch = secrets.token_hex(6), "z9hG4bK" + secrets.token_hex(5)
    head = (
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
        f"From: <sip:caller@127.0.0.1>;tag=c1\r\nTo: <sip:{user}@sbc.test>\r\n"
        f"Call-ID: {call_id}\r\n"
    )
    try:
        sock.sendto(
            (
                f"INVITE sip:{user}@sbc.test SIP/2.0\r\n{head}CSeq: 1 INVITE\r\n"
                f"Max-Forwards: 70\r\nContact: <sip:caller@127.0.0.1:{port}>\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", sbc.udp),
        )
        while True:
            response = parse(sock.recv(65535))
            assert isinstance(response, Response)
            if response.status >= 200:
                break
        to = response.get("to")
        sock.sendto(
            (
                f"ACK sip:{user}@sbc.test SIP/2.0\r\n"
                + head.replace(f"To: <sip:{user}@sbc.test>", f"To: {to}")
                + "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", sbc.udp),
        )
        return response
    finally:
        sock.close()


def test_sipp_udp_caller_reaches_a_wss_client_and_hangs_up(sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """REGISTER over WSS; a UDP SIPp caller's INVITE reaches the client over its flow
    (WSS Via, double Record-Route across WSS/UDP); the caller's BYE arrives too."""
    require_sipp()
    alice = ua(sbc, "alice1")
    try:
        ok = alice.register()
        assert ok.status == 200, ok
        caller = subprocess.Popen(
            [
                *_sipp_uac("uac_call.xml", sbc, "alice1"),
            ],
            cwd=str(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            invite = alice.request("INVITE")
            assert invite.top_via.transport == "WSS"
            routes = invite.values("record-route")
            assert len(routes) == 2 and "transport=ws" in routes[0], routes
            alice.answer(invite)
            alice.request("ACK")
            bye = alice.request("BYE")
            alice.reply(bye)
            out, _ = caller.communicate(timeout=30)
            assert caller.returncode == 0, out[-3000:]
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.wait(5)
    finally:
        alice.close()


def _sipp_uac(scenario: str, sbc, user: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        require_sipp(),
        "-sf",
        f"{SCENARIOS}/{scenario}",
        "-t",
        "u1",
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port(socket.SOCK_DGRAM)),
        "-s",
        user,
        "-timeout",
        "25s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        f"127.0.0.1:{sbc.udp}",
    ]


def test_wss_client_hangs_up_on_a_sipp_caller(sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The WSS callee sends BYE along the route set: it reaches the UDP caller."""
    require_sipp()
    alice = ua(sbc, "alice2")
    try:
        assert alice.register().status == 200
        caller = subprocess.Popen(
            _sipp_uac("uac_call_wait_bye.xml", sbc, "alice2"),
            cwd=str(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            invite = alice.request("INVITE")
            dialog = alice.answer(invite)
            alice.request("ACK")
            call_id = alice.in_dialog(dialog, "BYE")
            assert alice.final(call_id, "BYE").status == 200
            out, _ = caller.communicate(timeout=30)
            assert caller.returncode == 0, out[-3000:]
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.wait(5)
    finally:
        alice.close()


def test_wss_client_calls_another_wss_client(sbc) -> None:  # type: ignore[no-untyped-def]
    """WSS to WSS through sbc: INVITE, 200, ACK; the caller hangs up, then a second call
    the callee hangs up."""
    alice, bob = ua(sbc, "alice3"), ua(sbc, "bob3")
    try:
        assert alice.register().status == 200 and bob.register().status == 200
        for hang_up_by_caller in (True, False):
            started = time.monotonic()
            bob.messages.clear()
            # bob answers as soon as the INVITE arrives: read it while alice waits.
            answered: dict = {}
            thread = threading.Thread(target=_answer, args=(bob, answered))
            thread.start()
            response, dialog = alice.invite("bob3")
            thread.join(15)
            assert response.status == 200, response
            print(f"WSS->WSS call set up in {1000 * (time.monotonic() - started):.0f} ms")
            if hang_up_by_caller:
                call_id = alice.in_dialog(dialog, "BYE")
                bob.reply(bob.request("BYE"))
                assert alice.final(call_id, "BYE").status == 200
            else:
                call_id = bob.in_dialog(answered["dialog"], "BYE")
                alice.reply(alice.request("BYE"))
                assert bob.final(call_id, "BYE").status == 200
    finally:
        alice.close()
        bob.close()


def _answer(callee: WsUa, answered: dict) -> None:
    invite = callee.request("INVITE")
    answered["dialog"] = callee.answer(invite)
    callee.request("ACK")


def test_dead_connection_gives_480_and_outbound_gives_430(sbc) -> None:  # type: ignore[no-untyped-def]
    """A client whose connection died: its registration went with it (480); an RFC 5626
    outbound registration stays and the call gets 430 Flow Failed; neither hangs."""
    plain = ua(sbc, "carol")
    assert plain.register().status == 200
    plain.kill()
    sbc.wait_for(r"ws.*closed: 1 registration\(s\) removed")
    started = time.monotonic()
    assert udp_invite(sbc, "carol").status == 480
    outbound = ua(sbc, "dave")
    assert outbound.register(outbound=True).status == 200
    outbound.kill()
    sbc.wait_for(r"closed: 0 registration\(s\) removed, 1 outbound")
    assert udp_invite(sbc, "dave").status == 430
    assert time.monotonic() - started < 5


def test_close_during_a_call(sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The WSS callee's connection closes mid-call: the caller's BYE gets 430 at once
    (sbc cannot reach a WebSocket client any other way), not a timeout."""
    require_sipp()
    alice = ua(sbc, "alice5")
    assert alice.register().status == 200
    caller = subprocess.Popen(
        _sipp_uac("uac_call.xml", sbc, "alice5") + ["-d", "1500"],
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        invite = alice.request("INVITE")
        alice.answer(invite)
        alice.request("ACK")
        alice.close()
        started = time.monotonic()
        caller.communicate(timeout=30)
        # The scenario expects 200 for its BYE: it fails on the 430 sbc answers instead,
        # at once (not after a transaction timeout).
        assert caller.returncode != 0
        assert time.monotonic() - started < 5
        errors = "".join(p.read_text() for p in tmp_path.glob("*errors.log"))
        assert "SIP/2.0 430 Flow Failed" in errors, errors[-2000:]
        sbc.wait_for(r"wss:127.0.0.1:\d+ closed")
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(5)


# -- protocol edge cases -----------------------------------------------------------------------


def test_bad_subprotocol_and_origin_are_refused(sbc) -> None:  # type: ignore[no-untyped-def]
    """No C{sip} subprotocol: 426; a page from a foreign origin: 403; the allowed origin
    gets in."""
    refused = WsUa(sbc.wss, "x", subprotocols=("chat",))
    assert isinstance(refused.handshake, RejectConnection)
    assert refused.handshake.status_code == 426
    foreign = WsUa(sbc.wss, "x", origin="https://evil.example")
    assert isinstance(foreign.handshake, RejectConnection)
    assert foreign.handshake.status_code == 403
    allowed = WsUa(sbc.ws, "x", tls=False, origin="https://phone.example")
    assert isinstance(allowed.handshake, AcceptConnection)
    allowed.close()


def test_bad_input_closes_only_that_connection(sbc) -> None:  # type: ignore[no-untyped-def]
    """Garbage frames, a huge message and a slow upgrade each close their own connection;
    a registered client on another connection is still served."""
    good = ua(sbc, "erin")
    assert good.register().status == 200
    # An unmasked frame: a protocol error (Close 1002).
    garbage = ua(sbc, "x")
    garbage.raw_send(b"\x81\x05hello")
    assert garbage.wait_closed().code == 1002
    # A message over max_message_size (16384): Close 1009.
    huge = ua(sbc, "x")
    huge.send_event(TextMessage(data="A" * 20000))
    assert huge.wait_closed().code == 1009
    # A binary message that is not SIP: counted, the connection stays.
    binary = ua(sbc, "x")
    binary.send_event(BytesMessage(data=b"\xff\xfe\x00garbage"))
    assert binary.register().status == 200
    binary.close()
    # A slow upgrade: closed after handshake_timeout (2 s).
    slow = socket.create_connection(("127.0.0.1", sbc.ws), timeout=10)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert slow.recv(100) == b""
    slow.close()
    # The well-behaved client is still registered and reachable.
    assert good.register().status == 200
    good.close()
    sbc.wait_for(r"no upgrade in time")


def test_sipp_over_udp_sees_our_statistics(sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A SIPp OPTIONS over UDP still works next to the WebSocket listeners."""
    result = run_sipp("options.xml", f"127.0.0.1:{sbc.udp}", cwd=str(tmp_path))
    assert result.returncode == 0, sipp_summary(result)


def test_edge_proxy_reaches_a_wss_client_registered_at_a_core(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """sbc as the WebSocket edge of a core registrar (a second sbc): the REGISTER goes on
    with a signed Path naming the client's flow (RFC 3327, the role of RFC 5626's flow
    token); a call to the core comes back along the Path and over the flow; once the
    connection is gone the call gets 430 Flow Failed from the edge."""
    certs = make_certificates(str(tmp_path / "tls"))
    core_port, edge_udp, edge_wss = free_port(), free_port(), free_port()
    common = (
        "alias = sbc.test\n[permissions]\ntrusted = any:127.0.0.0/8\n[tm]\nfr_inv_timer = 5000\n"
    )
    core_ini, edge_ini = tmp_path / "core.ini", tmp_path / "edge.ini"
    core_ini.write_text(f"[core]\nlisten = udp:127.0.0.1:{core_port}\n{common}")
    edge_ini.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{edge_udp} wss:127.0.0.1:{edge_wss}\n{common}"
        f"[registrar]\nregistrar_uri = sip:127.0.0.1:{core_port}\n"
        f"[tls]\ncertificate = {certs['certificate']}\nprivate_key = {certs['private_key']}\n"
    )
    with SbcProcess(str(core_ini)) as core, SbcProcess(str(edge_ini)) as edge:
        core.wait_for("listening on ")
        edge.wait_for("listening on ", count=2)
        core.udp = core_port  # type: ignore[attr-defined]
        client = WsUa(edge_wss, "frank")
        assert client.register().status == 200
        core.wait_for(r"registered: aor=frank")
        result: dict = {}
        caller = threading.Thread(target=lambda: result.update(r=udp_invite(core, "frank")))
        caller.start()
        invite = client.request("INVITE")
        assert invite.top_via.transport == "WSS"
        client.answer(invite)
        caller.join(15)
        assert result["r"].status == 200
        client.kill()
        time.sleep(0.5)  # the edge notices the closed connection
        assert udp_invite(core, "frank").status == 430
        edge.assert_clean_stop()
        core.assert_clean_stop()
