"""
System tests for the proxy and registrar: SIPp UAs register with sbc, a SIPp UAC calls them
through it (full call with Record-Route and BYE along the route set, CANCEL while ringing,
408 after fr_inv_timer, 486 relayed, calls under packet loss), and REGISTER edge cases
against the running server over a real socket.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from typing import Optional

import pytest

from sbc.core.message import Response, parse
from sbc.core.uri import SipUri
from tests.helpers import free_port, request_bytes
from tests.system.harness import SCENARIOS, SbcProcess, require_sipp, run_sipp, sipp_summary
from tests.system.mini_uas import MiniUas

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def sbc(tmp_path_factory):  # type: ignore[no-untyped-def]
    """sbc on a free port, fr_inv_timer 2 s, min_expires 1 s (for the expiry test)."""
    require_sipp()
    folder = tmp_path_factory.mktemp("sbc")
    port = free_port()
    config = folder / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port} tcp:127.0.0.1:{port}\nalias = sbc.test\n"
        "[tm]\nfr_inv_timer = 2000\n"
        "[registrar]\nmin_expires = 1\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"  # SIPp callers stand for the core
    )
    with SbcProcess(str(config)) as process:
        process.wait_for(r"listening on ", count=2)
        process.port = port  # type: ignore[attr-defined]
        yield process
        process.assert_clean_stop()


def register(sbc, tmp_path, user: str, contact_port: int) -> None:  # type: ignore[no-untyped-def]
    result = run_sipp(
        "register.xml",
        f"127.0.0.1:{sbc.port}",
        "u1",
        local_ip="127.0.0.1",
        cwd=str(tmp_path),
        extra=("-s", user, "-key", "contact_port", str(contact_port)),
    )
    assert result.returncode == 0, sipp_summary(result)


def call(
    sbc,
    tmp_path,
    uas: str,
    uac: str,
    user: str,
    contact_port: int,
    *,  # type: ignore[no-untyped-def]
    calls: int = 1,
    uac_transport: str = "u1",
    extra: tuple[str, ...] = (),
    uas_extra: tuple[str, ...] = (),
    min_success: Optional[int] = None,
) -> None:
    """Run a SIPp UAS on the registered contact port and a SIPp UAC calling C{user}.

    Every call must succeed on both sides, unless C{min_success} says how many of the
    caller's calls must (a lossy callee may give up on a call of its own)."""
    sipp = require_sipp()
    uas_dir = tmp_path / f"uas-{contact_port}"
    uas_dir.mkdir(exist_ok=True)
    uas_process = subprocess.Popen(
        [
            sipp,
            "-sf",
            f"{SCENARIOS}/{uas}",
            "-s",
            user,
            "-i",
            "127.0.0.1",
            "-p",
            str(contact_port),
            "-m",
            str(calls),
            "-nostdin",
            "-trace_err",
            "-timeout",
            "40s",
            "-timeout_error",
            *uas_extra,
        ],
        cwd=str(uas_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.5)
        rate = ("-r", "5") if calls > 1 else ()
        result = run_sipp(
            uac,
            f"127.0.0.1:{sbc.port}",
            uac_transport,
            local_ip="127.0.0.1",
            calls=calls,
            cwd=str(tmp_path),
            extra=("-s", user, *rate, *extra),
        )
        out, _ = uas_process.communicate(timeout=45)
        if min_success is not None:
            found = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", result.stdout)
            assert found and int(found.group(1)) >= min_success, sipp_summary(result)
            return
        assert result.returncode == 0, sipp_summary(result) + "\n".join(sbc.lines[-30:])
        assert uas_process.returncode == 0, out[-3000:]
    finally:
        if uas_process.poll() is None:
            uas_process.kill()
            uas_process.wait(5)


@pytest.fixture(scope="module")
def users(sbc, tmp_path_factory):  # type: ignore[no-untyped-def]
    """alice and bob registered, each with a SIPp UAS port."""
    tmp = tmp_path_factory.mktemp("reg")
    ports = {"alice": free_port(socket.SOCK_DGRAM), "bob": free_port(socket.SOCK_DGRAM)}
    for user, port in ports.items():
        register(sbc, tmp, user, port)
    return ports


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_full_call_through_sbc(sbc, users, tmp_path, user: str) -> None:  # type: ignore[no-untyped-def]
    """INVITE/180/200/ACK/BYE: the 200 carries sbc's Record-Route, ACK and BYE follow it,
    and the UAS sees sbc's Via on the ACK."""
    call(sbc, tmp_path, "uas_answer.xml", "uac_call.xml", user, users[user])


def test_tcp_caller_udp_callee_gets_double_record_route(sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A caller on TCP and a callee on UDP: the INVITE the callee receives carries two
    Record-Route entries (RFC 5658 §4, Kamailio rr enable_double_rr), the outgoing UDP socket
    first and the incoming TCP socket (transport=tcp) second, both with r2=on; the call,
    ACK and BYE included, completes over both transports."""
    with MiniUas() as uas:
        register(sbc, tmp_path, "frank", uas.port)
        result = run_sipp(
            "uac_call.xml",
            f"127.0.0.1:{sbc.port}",
            "t1",
            local_ip="127.0.0.1",
            cwd=str(tmp_path),
            extra=("-s", "frank"),
        )
        assert result.returncode == 0, sipp_summary(result) + "\n".join(sbc.lines[-30:])
        invites = [r for r in uas.received if r.method == "INVITE"]
        methods = [r.method for r in uas.received]
    assert invites and "ACK" in methods and "BYE" in methods, methods
    routes = invites[0].record_routes
    assert len(routes) == 2, invites[0].get_all("Record-Route")
    outgoing, incoming = (route.uri for route in routes)
    assert isinstance(outgoing, SipUri) and isinstance(incoming, SipUri)
    assert (
        (outgoing.host, outgoing.port) == (incoming.host, incoming.port) == ("127.0.0.1", sbc.port)
    )
    assert outgoing.param("transport") in (None, "udp")
    assert incoming.param("transport") == "tcp"
    for uri in (outgoing, incoming):
        assert uri.param("r2") == "on" and uri.has_param("lr"), str(uri)


def test_cancel_while_ringing(sbc, users, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The caller CANCELs during 180: 200 for the CANCEL, the callee's 487 relayed."""
    call(sbc, tmp_path, "uas_ring_cancelled.xml", "uac_cancel.xml", "alice", users["alice"])


def test_unanswered_call_gives_408_after_fr_inv_timer(sbc, users, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A callee that rings forever is CANCELled by sbc and the caller gets 408."""
    started = time.monotonic()
    call(sbc, tmp_path, "uas_ring_cancelled.xml", "uac_timeout.xml", "bob", users["bob"])
    assert time.monotonic() - started >= 2.0


def test_busy_reaches_the_caller(sbc, users, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """486 from the callee is relayed (and ACKed hop by hop)."""
    call(sbc, tmp_path, "uas_busy.xml", "uac_busy.xml", "bob", users["bob"])


def test_calls_complete_through_packet_loss(sbc, users, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With both SIPps dropping 10 % of what they send and receive, retransmissions (sbc's
    Timer A/E towards the callee, relayed 2xx retransmissions, the caller's own) complete
    the calls: at least 9 of 10 (a run of losses can exhaust a SIPp's own budget).

    SIPp's retransmission budget is raised (default 5 for INVITE, 7 otherwise) so that the
    test measures the SIP retransmissions, not SIPp giving up after a run of losses."""
    call(
        sbc,
        tmp_path,
        "uas_answer.xml",
        "uac_call.xml",
        "alice",
        users["alice"],
        calls=10,
        extra=("-lost", "10", "-max_retrans", "12"),
        uas_extra=("-lost", "10", "-max_retrans", "12"),
        min_success=9,
    )


# -- REGISTER edge cases over a real socket ---------------------------------------------------


class Client:
    """A UDP SIP client with its own socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.target = ("127.0.0.1", port)
        self.cseq = 0

    def register(
        self, user: str, contacts: list[str], expires: Optional[int] = None, call_id: str = "edge-1"
    ) -> Response:
        self.cseq += 1
        local = self.sock.getsockname()
        headers = [("Contact", c) for c in contacts]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        data = request_bytes(
            "REGISTER",
            "sip:sbc.test",
            cseq=self.cseq,
            call_id=call_id,
            via=f"SIP/2.0/UDP {local[0]}:{local[1]};rport;branch=z9hG4bKe{self.cseq}",
            headers=headers,
        )
        data = data.replace(b"To: <sip:bob@example.com>", f"To: <sip:{user}@sbc.test>".encode())
        return self.send(data)

    def send(self, data: bytes) -> Response:
        self.sock.sendto(data, self.target)
        while True:
            response = parse(self.sock.recv(65535))
            assert isinstance(response, Response)
            if response.status >= 200:
                return response

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(sbc):  # type: ignore[no-untyped-def]
    c = Client(sbc.port)
    yield c
    c.close()


def contact_uris(response: Response) -> dict[str, str]:
    return {str(c.uri): c.param("expires") or "" for c in response.contacts}


def test_register_423_refresh_star_and_multiple_contacts(client) -> None:  # type: ignore[no-untyped-def]
    """423 below min_expires is not possible here (min 1 s), so: several contacts, refresh,
    one removed, all removed with *, and a too-short interval with a higher min."""
    r = client.register("carol", ["<sip:carol@192.0.2.1:5001>", "<sip:carol@192.0.2.2:5002>"], 60)
    assert r.status == 200
    assert set(contact_uris(r)) == {"sip:carol@192.0.2.1:5001", "sip:carol@192.0.2.2:5002"}
    r = client.register("carol", ["<sip:carol@192.0.2.1:5001>;expires=120"])
    assert contact_uris(r)["sip:carol@192.0.2.1:5001"] == "120"
    r = client.register("carol", ["<sip:carol@192.0.2.2:5002>;expires=0"])
    assert set(contact_uris(r)) == {"sip:carol@192.0.2.1:5001"}
    r = client.register("carol", [], None)  # query
    assert set(contact_uris(r)) == {"sip:carol@192.0.2.1:5001"}
    r = client.register("carol", ["*"], 0)
    assert r.status == 200 and not r.has("Contact")
    assert client.register("carol", ["*"], 10).status == 400


def test_register_423(sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A registrar with min_expires 60 answers 423 with Min-Expires to expires=30."""
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n[registrar]\nmin_expires = 60\n"
    )
    with SbcProcess(str(config)) as other:
        other.wait_for(r"listening on ")
        c = Client(port)
        try:
            r = c.register("dave", ["<sip:dave@192.0.2.4:5004>"], 30)
            assert r.status == 423 and r.get("Min-Expires") == "60"
            assert c.register("dave", ["<sip:dave@192.0.2.4:5004>"], 60).status == 200
        finally:
            c.close()
        other.assert_clean_stop()


def test_expired_registration_gives_480_and_unknown_user_404(client) -> None:  # type: ignore[no-untyped-def]
    """After its expiry a user is 480; a user never seen is 404."""
    assert client.register("erin", ["<sip:erin@192.0.2.5:5005>"], 1).status == 200
    time.sleep(1.5)
    invite = request_bytes(
        "INVITE",
        "sip:erin@sbc.test",
        call_id="inv-erin",
        via="SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKinv1",
    )
    assert client.send(invite).status == 480
    unknown = request_bytes(
        "INVITE",
        "sip:nobody@sbc.test",
        call_id="inv-nobody",
        via="SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKinv2",
    )
    assert client.send(unknown).status == 404


def test_callee_of_a_timed_out_forked_call_gets_its_cancel(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A call forked to two contacts of one user: one rings at once, the other only after
    the call reached max_inv_lifetime (its 180 comes 4 s in, the cap is 2.5 s).  The caller
    gets 408; both callees get a CANCEL, the late one when its 180 arrives (RFC 3261 §9.1:
    a CANCEL is owed to every branch with a provisional), and both end with 487/ACK."""
    sipp = require_sipp()
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
        "[tm]\nmax_inv_lifetime = 2500\nfr_inv_timer = 20000\nfr_timer = 8000\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
    )
    with SbcProcess(str(config)) as sbc:
        sbc.wait_for(r"listening on ")
        sbc.port = port  # type: ignore[attr-defined]
        ringing, late = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        register(sbc, tmp_path, "bob", ringing)
        register(sbc, tmp_path, "bob", late)
        callees = []
        try:
            for scenario, contact_port in (
                ("uas_ring_cancelled.xml", ringing),
                ("uas_late_ring_cancelled.xml", late),
            ):
                folder = tmp_path / f"uas-{contact_port}"
                folder.mkdir()
                callees.append(
                    subprocess.Popen(
                        [
                            sipp,
                            "-sf",
                            f"{SCENARIOS}/{scenario}",
                            "-s",
                            "bob",
                            "-i",
                            "127.0.0.1",
                            "-p",
                            str(contact_port),
                            "-m",
                            "1",
                            "-nostdin",
                            "-trace_err",
                            "-timeout",
                            "30s",
                            "-timeout_error",
                        ],
                        cwd=str(folder),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            time.sleep(0.5)
            started = time.monotonic()
            result = run_sipp(
                "uac_timeout.xml",
                f"127.0.0.1:{port}",
                "u1",
                local_ip="127.0.0.1",
                cwd=str(tmp_path),
                extra=("-s", "bob"),
            )
            assert result.returncode == 0, sipp_summary(result)
            assert 2.0 <= time.monotonic() - started < 8.0
            for callee in callees:
                out, _ = callee.communicate(timeout=40)
                # Each callee's scenario ends only after CANCEL, 200, 487 and the ACK.
                assert callee.returncode == 0, out[-3000:]
        finally:
            for callee in callees:
                if callee.poll() is None:
                    callee.kill()
                    callee.wait(5)
        sbc.assert_clean_stop()
