"""
System test: [tm] wt_timer over real UDP sockets.  A MESSAGE relayed to a registered
phone, answered 200, then sent again with the same branch: inside wt_timer sbc answers
the copy itself from its lingering transaction; once wt_timer has run out the copy is a
new transaction and reaches the phone again.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers import free_port
from tests.system.harness import SbcProcess

pytestmark = pytest.mark.system

#: Milliseconds: short, so that the test waits little for it to run out.
WT_TIMER = 1000


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def _answer(request: bytes, status: str = "200 OK") -> bytes:
    """The phone's response: the request's Via, From, To (with a tag), Call-ID and CSeq."""
    head = request.split(b"\r\n\r\n", 1)[0].decode()
    copied = []
    for line in head.split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            copied.append(line)
        elif name in ("to", "t"):
            copied.append(line if ";tag=" in line else line + ";tag=phone")
    return ("\r\n".join([f"SIP/2.0 {status}", *copied, "Content-Length: 0"]) + "\r\n\r\n").encode()


def _nothing_for(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        sock.recvfrom(65535)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_a_retransmission_is_absorbed_inside_wt_timer_and_relayed_after_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Inside wt_timer the copy gets the 200 again from sbc; after it, the phone gets it."""
    port = free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n[tm]\nwt_timer = {WT_TIMER}\n"
    )
    sbc_address = ("127.0.0.1", port)
    phone, sender = _socket(), _socket()
    try:
        with SbcProcess(str(config)) as sbc:
            sbc.wait_for(r"listening on ")
            phone_port = phone.getsockname()[1]
            phone.sendto(
                (
                    "REGISTER sip:sbc.test SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{phone_port};branch=z9hG4bKreg1;rport\r\n"
                    "Max-Forwards: 70\r\nFrom: <sip:bob@sbc.test>;tag=r1\r\n"
                    "To: <sip:bob@sbc.test>\r\nCall-ID: reg1\r\nCSeq: 1 REGISTER\r\n"
                    f"Contact: <sip:bob@127.0.0.1:{phone_port}>\r\nExpires: 600\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode(),
                sbc_address,
            )
            assert phone.recvfrom(65535)[0].startswith(b"SIP/2.0 200 ")
            sender_port = sender.getsockname()[1]
            message = (
                "MESSAGE sip:bob@sbc.test SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{sender_port};branch=z9hG4bKmsg1;rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:alice@sbc.test>;tag=a1\r\n"
                "To: <sip:bob@sbc.test>\r\nCall-ID: msg1\r\nCSeq: 1 MESSAGE\r\n"
                "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
            ).encode()
            sender.sendto(message, sbc_address)
            relayed, _ = phone.recvfrom(65535)
            assert relayed.startswith(b"MESSAGE ")
            phone.sendto(_answer(relayed), sbc_address)
            assert sender.recvfrom(65535)[0].startswith(b"SIP/2.0 200 ")
            answered = time.monotonic()

            # Inside wt_timer: the lingering transaction answers the copy, the phone hears
            # nothing of it.
            sender.sendto(message, sbc_address)
            assert sender.recvfrom(65535)[0].startswith(b"SIP/2.0 200 ")
            assert _nothing_for(phone, 0.3)
            assert time.monotonic() - answered < WT_TIMER / 1000, "too slow to test inside"

            # After it: the copy is a new transaction and is relayed to the phone again.
            time.sleep(max(0.0, answered + WT_TIMER / 1000 + 1.0 - time.monotonic()))
            sender.sendto(message, sbc_address)
            again, _ = phone.recvfrom(65535)
            assert again.startswith(b"MESSAGE ")
            phone.sendto(_answer(again), sbc_address)
            assert sender.recvfrom(65535)[0].startswith(b"SIP/2.0 200 ")
            sbc.assert_clean_stop()
    finally:
        phone.close()
        sender.close()
