"""
System test for the Prometheus endpoint: SIPp calls through a running sbc, C{/metrics}
scraped before, during and after, parsed with prometheus_client's own parser; the counters
and histogram buckets move by exactly what the calls did.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port
from tests.system.harness import SbcProcess, require_sipp
from tests.system.test_proxy_calls import call, register

pytestmark = pytest.mark.system

CALLS = 5


@pytest.fixture
def sbc(tmp_path):  # type: ignore[no-untyped-def]
    require_sipp()
    port, metrics = free_port(), free_port()
    config = tmp_path / "sbc.ini"
    config.write_text(
        f"[core]\nlisten = udp:127.0.0.1:{port}\nalias = sbc.test\n"
        "[permissions]\ntrusted = any:127.0.0.0/8\n"
        f"[manhole]\nmetrics_listen = tcp:{metrics}:interface=127.0.0.1\n"
    )
    with SbcProcess(str(config)) as process:
        process.wait_for("listening on ")
        process.port = port  # type: ignore[attr-defined]
        process.metrics = metrics  # type: ignore[attr-defined]
        yield process
        process.assert_clean_stop()


def scrape(sbc) -> dict[tuple[str, tuple], float]:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{sbc.metrics}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def moved(before: dict, after: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counters_and_histograms_move_with_a_sipp_run(sbc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """CALLS answered calls and one busy one: requests by method, replies by class, calls by
    disposition, set-up and transaction histograms (count, +Inf and a wide bucket); the
    dialog gauge is up while the calls last; the process collector is there."""
    alice = free_port(socket.SOCK_DGRAM)
    register(sbc, tmp_path, "alice", alice)
    before = scrape(sbc)
    assert before[("process_open_fds", ())] > 0
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call(
                sbc, tmp_path, "uas_answer.xml", "uac_call.xml", "alice", alice,
                calls=CALLS, extra=("-d", "2000"),
            )  # fmt: skip
        except BaseException as error:  # reported by the main thread
            failure.append(error)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    peak = 0.0
    deadline = time.monotonic() + 60
    while runner.is_alive() and time.monotonic() < deadline:
        peak = max(peak, scrape(sbc).get(("sbc_dialogs", ()), 0.0))
        time.sleep(0.2)
    runner.join(5)
    assert not runner.is_alive() and not failure, failure
    bob = free_port(socket.SOCK_DGRAM)
    register(sbc, tmp_path, "bob", bob)
    call(sbc, tmp_path, "uas_busy.xml", "uac_busy.xml", "bob", bob)
    after = scrape(sbc)

    assert peak >= 1, "sbc_dialogs never rose while calls were up"
    assert after[("sbc_dialogs", ())] == 0
    received, sent = "sbc_requests_received_total", "sbc_requests_sent_total"
    setup, transaction = "sbc_call_setup_seconds", "sbc_transaction_duration_seconds"
    expected = [
        (received, {"method": "INVITE", "transport": "udp"}, CALLS + 1),
        (received, {"method": "ACK", "transport": "udp"}, CALLS + 1),
        (received, {"method": "BYE", "transport": "udp"}, CALLS),
        (received, {"method": "REGISTER", "transport": "udp"}, 1),
        (sent, {"method": "INVITE", "transport": "udp"}, CALLS + 1),
        ("sbc_calls_total", {"disposition": "answered"}, CALLS),
        ("sbc_calls_total", {"disposition": "busy"}, 1),
        # 200 for each INVITE and BYE, and for bob's REGISTER; the 486
        ("sbc_replies_sent_total", {"class": "2xx"}, 2 * CALLS + 1),
        ("sbc_replies_sent_total", {"class": "4xx"}, 1),
        (setup + "_count", {"stage": "answered"}, CALLS),
        (setup + "_bucket", {"stage": "answered", "le": "+Inf"}, CALLS),
        (setup + "_bucket", {"stage": "answered", "le": "10.0"}, CALLS),
        (setup + "_count", {"stage": "ringing"}, CALLS),  # the busy callee never rings
        (transaction + "_count", {"method": "INVITE"}, CALLS + 1),
        (transaction + "_bucket", {"method": "INVITE", "le": "+Inf"}, CALLS + 1),
        (transaction + "_count", {"method": "BYE"}, CALLS),
        (transaction + "_count", {"method": "REGISTER"}, 1),
        # Kamailio's rcv_requests: every request above
        ("sbc_rcv_requests_total", {}, 3 * CALLS + 3),
    ]
    got = [(name, labels, moved(before, after, name, **labels)) for name, labels, _ in expected]
    assert got == expected
