"""Tests for L{sbc.app.metrics}: message counters and histograms fed by wire records, read
back through prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client import generate_latest
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
    got = samples(metrics)
    received = [k for k in got if k[0] == "sbc_requests_received_total"]
    assert received == [
        ("sbc_requests_received_total", (("method", "other"), ("transport", "udp")))
    ]
    assert got[received[0]] == 50
