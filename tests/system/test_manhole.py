"""
System tests for operations: a real SSH client with a generated key runs the admin commands
against a running sbc (a registration and a call show up; a wrong key is refused), the JSON
is parsed, the Prometheus endpoint is scraped, and SIGHUP applies a changed keepalive
interval without a restart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port, request_bytes
from tests.system.harness import SCENARIOS, SbcProcess, require_sipp

pytestmark = pytest.mark.system


def keygen(path) -> str:  # type: ignore[no-untyped-def]
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30
    )
    return str(path)


@pytest.fixture
def sbc(tmp_path):  # type: ignore[no-untyped-def]
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("the ssh client is not installed (Debian package openssh-client)")
    require_sipp()
    key = keygen(tmp_path / "admin")
    (tmp_path / "authorized_keys").write_text(open(key + ".pub").read())
    sip, ssh, metrics = free_port(), free_port(), free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{sip}\nalias = sbc.test\n"
        "[nathelper]\nnatping_interval = 5\n"
        f"[manhole]\nlisten = tcp:{ssh}:interface=127.0.0.1\n"
        f"authorized_keys = authorized_keys\nhost_key = host_key\n"
        f"metrics_listen = tcp:{metrics}:interface=127.0.0.1\n"
    )
    with SbcProcess(str(config)) as process:
        process.wait_for("listening on ")
        process.ports = (sip, ssh, metrics)  # type: ignore[attr-defined]
        process.key = key  # type: ignore[attr-defined]
        process.config_path = config  # type: ignore[attr-defined]
        yield process
        process.assert_clean_stop()
    assert oct(os.stat(tmp_path / "host_key").st_mode & 0o777) == "0o600"


def admin(sbc, command: str, key: str | None = None) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [
            "ssh",
            "-p",
            str(sbc.ports[1]),
            "-i",
            key or sbc.key,
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "admin@127.0.0.1",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def admin_json(sbc, command: str):  # type: ignore[no-untyped-def]
    result = admin(sbc, command)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def register(port: int, user: str, contact_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        data = request_bytes(
            "REGISTER",
            "sip:sbc.test",
            call_id=f"reg-{user}",
            via=f"SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch=z9hG4bKm;rport",
            headers=[("Contact", f"<sip:{user}@127.0.0.1:{contact_port}>"), ("Expires", "300")],
        )
        s.sendto(
            data.replace(b"To: <sip:bob@example.com>", f"To: <sip:{user}@sbc.test>".encode()),
            ("127.0.0.1", port),
        )
        assert s.recv(65535).startswith(b"SIP/2.0 200")


def test_admin_commands_over_ssh(sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """stats, registrations, dialogs, endpoints; a wrong key is refused."""
    sip = sbc.ports[0]
    uas_port = free_port(socket.SOCK_DGRAM)
    register(sip, "alice", uas_port)
    registrations = admin_json(sbc, "registrations")
    assert [(r["aor"], r["contact"]) for r in registrations] == [
        ("alice", f"sip:alice@127.0.0.1:{uas_port}")
    ]
    # a call that lasts a few seconds shows up as a dialog
    (tmp_path / "uas").mkdir()
    uas = subprocess.Popen(
        [
            "sipp",
            "-sf",
            f"{SCENARIOS}/uas_answer.xml",
            "-i",
            "127.0.0.1",
            "-p",
            str(uas_port),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "30s",
        ],
        cwd=str(tmp_path / "uas"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        uac = subprocess.Popen(
            [
                "sipp",
                "-sf",
                f"{SCENARIOS}/uac_call.xml",
                "-i",
                "127.0.0.1",
                "-s",
                "alice",
                "-m",
                "1",
                "-d",
                "4000",
                "-nostdin",
                "-timeout",
                "30s",
                f"127.0.0.1:{sip}",
            ],
            cwd=str(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(2.0)
        dialogs = admin_json(sbc, "dialogs()")
        assert [d["state"] for d in dialogs] == ["confirmed"]
        out, _ = uac.communicate(timeout=30)
        assert uac.returncode == 0, out[-2000:]
    finally:
        uas.wait(30)
    stats = admin_json(sbc, "stats")
    assert stats["rcv_requests"] >= 4 and stats["dialogs_created"] == 1
    assert stats["registered_endpoints"] == 1
    assert admin_json(sbc, "dialogs") == []
    assert admin_json(sbc, "enable_ping 0") == {"enabled": False}
    unknown = admin(sbc, "rm -rf /")
    assert unknown.returncode == 1 and "unknown command" in unknown.stdout
    # Each scripted run ends with the client's SSH_DISCONNECT_BY_APPLICATION (11): a normal
    # goodbye, not an error (twisted.conch logs every remote disconnect as one).
    time.sleep(0.5)
    noise = [line for line in sbc.lines if "#error]" in line and "remote error" in line.lower()]
    assert noise == [], "\n".join(noise)
    wrong = admin(sbc, "stats", key=keygen(tmp_path / "intruder"))
    assert wrong.returncode == 255 and "Permission denied" in wrong.stderr


def test_metrics_endpoint_carries_the_counters(sbc) -> None:  # type: ignore[no-untyped-def]
    """The Prometheus text has the same counters as stats, typed."""
    register(sbc.ports[0], "bob", 5999)
    body = urllib.request.urlopen(f"http://127.0.0.1:{sbc.ports[2]}/metrics", timeout=10).read()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["sbc_rcv_requests"].type == "counter"
    assert families["sbc_rcv_requests"].samples[0].value == 1
    assert families["sbc_registrations"].type == "gauge"
    assert families["sbc_registrations"].samples[0].value == 1
    stats = admin_json(sbc, "stats")
    assert families["sbc_rpl_sent"].samples[0].value == stats["rpl_sent"]


def test_sighup_applies_a_new_keepalive_interval(sbc) -> None:  # type: ignore[no-untyped-def]
    """Edit the file, SIGHUP: the new interval is in force without a restart."""
    assert admin_json(sbc, "settings")["keepalive"]["interval"] == 5
    path = sbc.config_path
    path.write_text(path.read_text().replace("natping_interval = 5", "natping_interval = 9"))
    sbc.process.send_signal(signal.SIGHUP)
    sbc.wait_for(r"reloaded .*: \[nathelper\] natping_interval")
    assert admin_json(sbc, "settings")["keepalive"]["interval"] == 9
    assert sbc.alive


def sbcctl(sbc, *args: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    script = os.path.join(os.path.dirname(sys.executable), "sbcctl")
    return subprocess.run(
        [script, "-p", str(sbc.ports[1]), "-i", sbc.key, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SBCCTL_INSECURE": "1"},
    )


def test_sbcctl_runs_commands_and_kamailio_aliases(sbc) -> None:  # type: ignore[no-untyped-def]
    """sbcctl stats / ul.dump / --table registrations / dlg.list / reload / tls.reload over
    the SSH manhole; an unknown command exits 1 with the error."""
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "sbcctl")):
        pytest.skip("sbcctl is not installed in this virtualenv (make venv)")
    register(sbc.ports[0], "carol", 5998)
    stats = sbcctl(sbc, "stats")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["rcv_requests"] >= 1
    every = json.loads(sbcctl(sbc, "stats.get_statistics", "all").stdout)
    assert set(json.loads(stats.stdout)) <= set(every)  # the same counters (values move)
    dump = json.loads(sbcctl(sbc, "ul.dump").stdout)
    assert [r["aor"] for r in dump] == ["carol"]
    table = sbcctl(sbc, "--table", "registrations")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["aor", "contact", "expires"]
    assert "carol" in table.stdout.splitlines()[1]
    assert json.loads(sbcctl(sbc, "dlg.list").stdout) == []
    reload = json.loads(sbcctl(sbc, "reload").stdout)
    assert reload["reloaded"] is True and reload["changed"] == []
    assert json.loads(sbcctl(sbc, "tls.reload").stdout)["reloaded"] is False
    wrong = sbcctl(sbc, "ul.rm", "carol")
    assert wrong.returncode == 1 and "unknown command" in wrong.stderr
