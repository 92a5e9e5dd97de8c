"""Tests for L{sbc.app.metrics}: message counters and histograms fed by wire records, read
back through prometheus_client's own parser."""

from __future__ import annotations

import time

from prometheus_client import (
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import MemoryReactorClock

from sbc.app.config import defaults
from sbc.app.metrics import SbcMetrics
from sbc.app.service import build_service
from sbc.core.message import parse
from sbc.core.reply import make_response
from sbc.core.wire import RECEIVED, SENT, Wire
from tests.helpers import request_bytes

PHONE = ("192.0.2.10", 5070)
US = ("127.0.0.1", 5060)


def samples(metrics: SbcMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def call(metrics: SbcMetrics, call_id: str, t0: float, ring: float, final: int, at: float) -> None:
    data = request_bytes("INVITE", "sip:bob@sbc.test", call_id=call_id)
    invite = parse(data)
    metrics.wire(Wire(RECEIVED, "udp", PHONE, US, data, t0, invite))
    metrics.wire(Wire(RECEIVED, "udp", PHONE, US, data, t0 + 0.5, invite))  # retransmission
    for status, when in ((100, t0), (180, t0 + ring), (180, t0 + ring + 0.1), (final, at)):
        response = make_response(invite, status)  # type: ignore[arg-type]
        metrics.wire(Wire(SENT, "udp", US, PHONE, response.to_bytes(), when, response))


def test_counters_and_setup_histograms() -> None:
    """Requests by method and transport, replies by class, calls by disposition; the set-up
    histograms see the first 18x and the 2xx once per call, retransmissions not at all."""
    metrics = SbcMetrics(process=False)
    call(metrics, "a", 100.0, 0.2, 200, 101.0)
    call(metrics, "b", 200.0, 0.03, 486, 203.0)
    got = samples(metrics)
    assert got[("sbc_requests_received_total", (("method", "INVITE"), ("transport", "udp")))] == 4
    assert got[("sbc_replies_sent_total", (("class", "1xx"),))] == 6
    assert got[("sbc_replies_sent_total", (("class", "2xx"),))] == 1
    assert got[("sbc_calls_total", (("disposition", "answered"),))] == 1
    assert got[("sbc_calls_total", (("disposition", "busy"),))] == 1
    ringing = (("stage", "ringing"),)
    assert got[("sbc_call_setup_seconds_count", ringing)] == 2
    assert got[("sbc_call_setup_seconds_bucket", (("le", "0.05"), ("stage", "ringing")))] == 1
    assert got[("sbc_call_setup_seconds_bucket", (("le", "0.25"), ("stage", "ringing")))] == 2
    answered = (("stage", "answered"),)
    assert got[("sbc_call_setup_seconds_count", answered)] == 1
    assert got[("sbc_call_setup_seconds_sum", answered)] == 1.0
    method = (("method", "INVITE"),)
    assert got[("sbc_transaction_duration_seconds_count", method)] == 2
    assert got[("sbc_transaction_duration_seconds_sum", method)] == 4.0


def test_keepalive_round_trip_and_dns() -> None:
    """A raw SIP ping and the reply with its Call-ID make one RTT sample; DNS timings go
    to their histogram."""
    metrics = SbcMetrics(process=False)
    ping = request_bytes("OPTIONS", "sip:192.0.2.10:5070", call_id="ping-1")
    metrics.wire(Wire(SENT, "udp", US, PHONE, ping, 10.0))
    reply = make_response(parse(ping), 200)  # type: ignore[arg-type]
    metrics.wire(Wire(RECEIVED, "udp", PHONE, US, reply.to_bytes(), 10.04, reply))
    metrics.dns_lookup_took(0.002)
    got = samples(metrics)
    assert got[("sbc_keepalive_rtt_seconds_count", ())] == 1
    assert got[("sbc_keepalive_rtt_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("sbc_keepalive_rtt_seconds_bucket", (("le", "0.025"),))] == 0
    assert got[("sbc_dns_lookup_seconds_count", ())] == 1
    assert got[("sbc_replies_received_total", (("class", "2xx"),))] == 1


def test_service_registry_has_levels_statistics_and_process() -> None:
    """The service's registry: gauges for state, the Kamailio statistics as counters, and
    the process collector."""
    service = build_service(defaults(), MemoryReactorClock())
    service.engine.stats.incr("rcv_requests", 3)
    text = generate_latest(service.metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["sbc_rcv_requests"].type == "counter"
    assert families["sbc_rcv_requests"].samples[0].value == 3
    for gauge in ("sbc_registrations", "sbc_dialogs", "sbc_media_sessions", "sbc_blocklist_entries",
                  "sbc_keepalive_endpoints"):  # fmt: skip
        assert families[gauge].type == "gauge", gauge
    assert "process_open_fds" in families and "process_resident_memory_bytes" in families
    assert "sbc_call_setup_seconds" in families
    assert families["sbc_call_setup_seconds"].type == "histogram"


def test_grafana_dashboard_uses_metrics_sbc_exports() -> None:
    """Every sbc_ metric the dashboard queries is exported: one of the registry's families,
    or a Kamailio-named statistic sbc counts."""
    import glob
    import json
    import os
    import re

    from tests.helpers import ROOT

    with open(os.path.join(ROOT, "etc", "grafana-sbc.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    service = build_service(defaults(), MemoryReactorClock())
    text = generate_latest(service.metrics.registry).decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    source = ""
    for path in glob.glob(os.path.join(ROOT, "sbc", "*", "*.py")):
        with open(path, encoding="utf-8") as f:
            source += f.read()
    names = {n for e in exprs for n in re.findall(r"\b(sbc_\w+|process_\w+)", e)}
    assert len(names) > 15
    for name in names:
        base = re.sub(r"_(bucket|total|count|sum)$", "", name)
        assert base in families or f'"{base[4:]}"' in source, name


def test_invented_methods_share_one_label() -> None:
    """A peer sending made-up methods cannot grow the label set: they count as C{other}."""
    metrics = SbcMetrics(process=False)
    for i in range(50):
        request = parse(
            f"FOO{i} sip:x@sbc.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{i}\r\n"
            f"From: <sip:a@sbc.test>;tag=1\r\nTo: <sip:x@sbc.test>\r\nCall-ID: c{i}\r\n"
            f"CSeq: 1 FOO{i}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        metrics.wire(
            Wire(RECEIVED, "udp", ("192.0.2.1", 5060), ("127.0.0.1", 5060), b"", 0.0, request)
        )
        answer = make_response(request, 405)
        metrics.wire(
            Wire(SENT, "udp", ("127.0.0.1", 5060), ("192.0.2.1", 5060), b"", 0.5, answer)
        )
    got = samples(metrics)
    received = [k for k in got if k[0] == "sbc_requests_received_total"]
    assert received == [
        ("sbc_requests_received_total", (("method", "other"), ("transport", "udp")))
    ]
    assert got[received[0]] == 50
    durations = {
        dict(labels)["method"] for name, labels in got if name.startswith("sbc_transaction_dur")
    }
    assert durations == {"other"}
    assert got[("sbc_transaction_duration_seconds_count", (("method", "other"),))] == 50


#: What C{/metrics} showed for L{scrape_scenario} when the message counters were
#: prometheus_client C{Counter}s (bucket lines left out; C{_created} values are times).
SCRAPE_BEFORE = """\
# HELP sbc_requests_received_total SIP requests received
# TYPE sbc_requests_received_total counter
sbc_requests_received_total{method="INVITE",transport="udp"} 4.0
sbc_requests_received_total{method="other",transport="tls"} 1.0
# HELP sbc_requests_received_created SIP requests received
# TYPE sbc_requests_received_created gauge
sbc_requests_received_created{method="INVITE",transport="udp"} CREATED
sbc_requests_received_created{method="other",transport="tls"} CREATED
# HELP sbc_requests_sent_total SIP requests sent (relayed or generated)
# TYPE sbc_requests_sent_total counter
sbc_requests_sent_total{method="BYE",transport="tcp"} 1.0
# HELP sbc_requests_sent_created SIP requests sent (relayed or generated)
# TYPE sbc_requests_sent_created gauge
sbc_requests_sent_created{method="BYE",transport="tcp"} CREATED
# HELP sbc_replies_received_total SIP responses received
# TYPE sbc_replies_received_total counter
# HELP sbc_replies_sent_total SIP responses sent
# TYPE sbc_replies_sent_total counter
sbc_replies_sent_total{class="1xx"} 6.0
sbc_replies_sent_total{class="2xx"} 1.0
sbc_replies_sent_total{class="4xx"} 1.0
# HELP sbc_replies_sent_created SIP responses sent
# TYPE sbc_replies_sent_created gauge
sbc_replies_sent_created{class="1xx"} CREATED
sbc_replies_sent_created{class="2xx"} CREATED
sbc_replies_sent_created{class="4xx"} CREATED
# HELP sbc_calls_total Initial INVITEs by their final outcome
# TYPE sbc_calls_total counter
sbc_calls_total{disposition="answered"} 1.0
sbc_calls_total{disposition="busy"} 1.0
# HELP sbc_calls_created Initial INVITEs by their final outcome
# TYPE sbc_calls_created gauge
sbc_calls_created{disposition="answered"} CREATED
sbc_calls_created{disposition="busy"} CREATED
# HELP sbc_call_setup_seconds {SETUP}
# TYPE sbc_call_setup_seconds histogram
sbc_call_setup_seconds_count{stage="ringing"} 2.0
sbc_call_setup_seconds_sum{stage="ringing"} 0.23000000000000398
sbc_call_setup_seconds_count{stage="answered"} 1.0
sbc_call_setup_seconds_sum{stage="answered"} 1.0
# HELP sbc_call_setup_seconds_created {SETUP}
# TYPE sbc_call_setup_seconds_created gauge
sbc_call_setup_seconds_created{stage="ringing"} CREATED
sbc_call_setup_seconds_created{stage="answered"} CREATED
# HELP sbc_transaction_duration_seconds From a request received to its final response sent
# TYPE sbc_transaction_duration_seconds histogram
sbc_transaction_duration_seconds_count{method="INVITE"} 2.0
sbc_transaction_duration_seconds_sum{method="INVITE"} 4.0
# HELP sbc_transaction_duration_seconds_created From a request received to its final response sent
# TYPE sbc_transaction_duration_seconds_created gauge
sbc_transaction_duration_seconds_created{method="INVITE"} CREATED
# HELP sbc_dns_lookup_seconds Time to resolve a next hop (RFC 3263), cache hits included
# TYPE sbc_dns_lookup_seconds histogram
sbc_dns_lookup_seconds_count 0.0
sbc_dns_lookup_seconds_sum 0.0
# HELP sbc_dns_lookup_seconds_created Time to resolve a next hop (RFC 3263), cache hits included
# TYPE sbc_dns_lookup_seconds_created gauge
sbc_dns_lookup_seconds_created CREATED
# HELP sbc_keepalive_rtt_seconds From a SIP keepalive ping (OPTIONS/NOTIFY) to its reply
# TYPE sbc_keepalive_rtt_seconds histogram
sbc_keepalive_rtt_seconds_count 0.0
sbc_keepalive_rtt_seconds_sum 0.0
# HELP sbc_keepalive_rtt_seconds_created From a SIP keepalive ping (OPTIONS/NOTIFY) to its reply
# TYPE sbc_keepalive_rtt_seconds_created gauge
sbc_keepalive_rtt_seconds_created CREATED
# HELP sbc_gc_pause_seconds How long each garbage collection stopped the process
# TYPE sbc_gc_pause_seconds histogram
sbc_gc_pause_seconds_count 0.0
sbc_gc_pause_seconds_sum 0.0
# HELP sbc_gc_pause_seconds_created How long each garbage collection stopped the process
# TYPE sbc_gc_pause_seconds_created gauge
sbc_gc_pause_seconds_created CREATED
"""
SETUP_HELP = (
    "From an initial INVITE received to its first 18x (stage=ringing) and to its 2xx "
    "(stage=answered) sent back"
)


def scrape_scenario(metrics: SbcMetrics) -> None:
    call(metrics, "a", 100.0, 0.2, 200, 101.0)
    call(metrics, "b", 200.0, 0.03, 486, 203.0)
    bye = request_bytes("BYE", "sip:bob@sbc.test", call_id="a", cseq=2)
    metrics.wire(Wire(SENT, "tcp", US, PHONE, bye, 300.0, parse(bye)))
    foo = request_bytes("FOO", "sip:bob@sbc.test", call_id="z")
    metrics.wire(Wire(RECEIVED, "tls", PHONE, US, foo, 300.0, parse(foo)))


def test_scrape_text_unchanged() -> None:
    """The scrape after some messages is, line for line, what it was when the counters were
    prometheus_client Counters: names, HELP, TYPE, labels, values, the C{_created} samples
    (times taken while the test ran), and the order of it all."""
    start = time.time()
    metrics = SbcMetrics(process=False)
    scrape_scenario(metrics)
    text = generate_latest(metrics.registry).decode()
    end = time.time()
    lines = []
    for line in text.splitlines():
        if "_bucket{" in line:
            continue
        name, _, value = line.rpartition(" ")
        if not line.startswith("#") and name.split("{")[0].endswith("_created"):
            assert start <= float(value) <= end, line
            line = f"{name} CREATED"
        lines.append(line)
    assert "\n".join(lines) + "\n" == SCRAPE_BEFORE.replace("{SETUP}", SETUP_HELP)
    assert (
        metrics.registry.get_sample_value(
            "sbc_requests_received_total", {"method": "INVITE", "transport": "udp"}
        )
        == 4
    )
    assert metrics.registry.get_sample_value("sbc_replies_sent_total", {"class": "1xx"}) == 6


def test_created_samples_follow_the_library_switch() -> None:
    """With prometheus_client's C{_created} series switched off (the
    C{PROMETHEUS_DISABLE_CREATED_SERIES} environment variable), the counters have none."""
    metrics = SbcMetrics(process=False)
    scrape_scenario(metrics)
    disable_created_metrics()
    try:
        text = generate_latest(metrics.registry).decode()
    finally:
        enable_created_metrics()
    assert "sbc_requests_received_total{" in text
    assert "_created" not in text
