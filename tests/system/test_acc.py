"""
System test for call records ([acc]): SIPp calls through a running sbc give one JSON line
per call in log_file with the right set-up time, duration, status and who hung up, and the
same records as rows in a real PostgreSQL (started by the test).  After a logrotate-style
move and SIGHUP, records go to a fresh file.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from datetime import datetime

import pytest

from tests.helpers import free_port
from tests.system.harness import SbcProcess, require_sipp
from tests.system.postgres import postgres_server, require_postgres
from tests.system.test_proxy_calls import call, register

pytestmark = pytest.mark.system

CALLS = 2


def records(path) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_records(path, count: int) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = records(path)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{len(records(path))} of {count} records in {path}")


def test_call_records_in_json_and_postgresql(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two 2-second calls hung up by the caller, one busy call: three JSON records with
    their durations; the same three rows in PostgreSQL; a new file after move + SIGHUP."""
    require_sipp()
    require_postgres()
    import psycopg

    with postgres_server() as url:
        port = free_port()
        config = tmp_path / "sbc.ini"
        log_file = tmp_path / "acc.json"
        config.write_text(
            f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
            "[permissions]\ntrusted = any:127.0.0.0/8\n"
            f"[acc]\nlog_file = acc.json\ndb_url = {url}\ndb_table_acc = calls\n"
        )
        with SbcProcess(str(config)) as sbc:
            sbc.wait_for("listening on ")
            sbc.port = port  # type: ignore[attr-defined]
            alice, bob = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
            register(sbc, tmp_path, "alice", alice)
            register(sbc, tmp_path, "bob", bob)
            call(
                sbc, tmp_path, "uas_answer.xml", "uac_call.xml", "alice", alice,
                calls=CALLS, extra=("-d", "2000"),
            )  # fmt: skip
            call(sbc, tmp_path, "uas_busy.xml", "uac_busy.xml", "bob", bob)
            written = wait_for_records(log_file, CALLS + 1)
            # logrotate: move the file away, SIGHUP, the next record starts a new file
            log_file.rename(tmp_path / "acc.json.1")
            sbc.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            sbc.wait_for(r"reloaded ")
            call(sbc, tmp_path, "uas_busy.xml", "uac_busy.xml", "bob", bob)
            [rotated] = wait_for_records(log_file, 1)
            sbc.assert_clean_stop()
        assert len(written) == CALLS + 1 and rotated["status"] == 486
        answered = [r for r in written if r["status"] == 200]
        busy = [r for r in written if r["status"] == 486]
        assert len(answered) == CALLS and len(busy) == 1
        for record in answered:
            assert 1.8 <= record["duration"] <= 3.5, record
            assert 0 <= record["setup_seconds"] < 1.5, record
            assert record["hung_up"] == "caller" and record["transport"] == "udp"
            assert record["source"].startswith("udp:127.0.0.1:")
            assert record["to"] == f"sip:alice@127.0.0.1:{port}"
            start, answer, end = (
                datetime.fromisoformat(record[k]) for k in ("start_time", "answer_time", "end_time")
            )
            assert start <= answer < end
            assert abs((end - answer).total_seconds() - record["duration"]) < 0.01
        [failed] = busy
        assert failed["hung_up"] == "callee" and failed["duration"] == 0.0
        assert failed["answer_time"] is None and failed["reason"] == "Busy Here"

        with psycopg.connect(url) as connection:
            rows = connection.execute(
                "SELECT call_id, status, duration, setup_seconds, hung_up, source, "
                '"from", "to", start_time, answer_time, end_time, legs FROM calls ORDER BY id'
            ).fetchall()
        assert len(rows) == CALLS + 2
        by_call = {row[0]: row for row in rows}
        for record in [*written, rotated]:
            row = by_call[record["call_id"]]
            assert row[1:8] == (
                record["status"], record["duration"], record["setup_seconds"],
                record["hung_up"], record["source"], record["from"], record["to"],
            )  # fmt: skip
            for value, key in zip(
                row[8:11], ("start_time", "answer_time", "end_time"), strict=True
            ):
                expected = record[key]
                assert (value is None and expected is None) or value == datetime.fromisoformat(
                    expected
                )
            assert row[11] == record["legs"]
