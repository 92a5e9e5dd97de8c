# -*- test-case-name: tests.app.test_metrics -*-
"""
Prometheus metrics with C{prometheus_client}: counters as counters (C{_total}, with
labels), gauges as gauges, histograms for call set-up time, transaction duration, DNS
lookup time and keepalive round trips, and the process collector (CPU, memory, open
file descriptors).  One registry per sbc, served by C{prometheus_client}'s own Twisted
C{MetricsResource} on C{[manhole] metrics_listen}.

The Kamailio-named statistics (C{rcv_requests}, C{fwd_requests}, ...) stay what the
manhole's C{stats} command shows; here they are exported too, as C{sbc_<name>_total}
counters (or gauges for the few that are levels, not counts).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sbc.core.message import Request, Response
from sbc.core.wire import RECEIVED, Wire

__all__ = ["SbcMetrics", "GAUGE_STATISTICS"]

#: Kamailio-named statistics that are levels (set, not incremented): exported as gauges.
GAUGE_STATISTICS = frozenset(
    {
        "rtp_sessions",
        "keepalive_endpoints",
        "registered_endpoints",
        "subscribed_endpoints",
        "dialog_endpoints",
    }
)

#: Seconds: call set-up runs from milliseconds (a local phone) to a minute of ringing.
SETUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Seconds a server transaction lives (request in, final response out).
TRANSACTION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 32, 180)
#: Seconds a DNS resolution takes (cache hits are near zero).
DNS_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
#: Seconds from a keepalive ping to its reply.
RTT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
#: Seconds a garbage collection stops the process (young ones take microseconds).
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

#: Methods counted under their own name; any other method a peer invents is counted as
#: C{other}, so a peer cannot grow the label set (and the scrape) without bound.
KNOWN_METHODS = frozenset(
    "ACK BYE CANCEL INFO INVITE MESSAGE NOTIFY OPTIONS PRACK PUBLISH REFER REGISTER "
    "SUBSCRIBE UPDATE".split()
)

#: Open transactions, calls and pings remembered at most (a peer that never answers must
#: not grow memory); the oldest are forgotten first.
MAX_TRACKED = 100_000


def _disposition(status: int) -> str:
    """The outcome of an INVITE by its final status (Kamailio acc's reasons, grouped)."""
    if status < 300:
        return "answered"
    if status == 487:
        return "cancelled"
    if status in (486, 600):
        return "busy"
    if status in (603, 607, 608):
        return "declined"
    if status in (408, 480):
        return "unanswered"
    return "failed"


class _Bounded(OrderedDict[Any, Any]):
    def remember(self, key: Any, value: Any) -> None:
        self[key] = value
        if len(self) > MAX_TRACKED:
            self.popitem(last=False)


class _StateCollector(Collector):
    """Gauges read at scrape time from the live service, and the Kamailio statistics."""

    def __init__(
        self,
        statistics: Callable[[], dict[str, int]],
        gauges: Callable[[], dict[str, int]],
    ) -> None:
        self._statistics = statistics
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        levels = self._gauges()
        for name, value in sorted(levels.items()):
            yield GaugeMetricFamily(f"sbc_{name}", _GAUGE_HELP.get(name, name), value=value)
        for name, value in sorted(self._statistics().items()):
            if name in levels:
                continue
            metric = "sbc_" + "".join(c if c.isalnum() or c == "_" else "_" for c in name)
            if name in GAUGE_STATISTICS:
                yield GaugeMetricFamily(metric, f"Kamailio-named level {name}", value=value)
            else:
                yield CounterMetricFamily(metric, f"Kamailio-named statistic {name}", value=value)


_GAUGE_HELP = {
    "registrations": "Users with live bindings in the built-in registrar",
    "dialogs": "Early and confirmed dialogs",
    "keepalive_endpoints": "Endpoints kept alive by pings",
    "media_sessions": "Calls whose media is anchored",
    "blocklist_entries": "Destinations on the blocklist",
    "server_transactions": "Open server transactions",
    "client_transactions": "Open client transactions",
}


class SbcMetrics:
    """
    The metrics of one sbc: a L{sbc.net.engine.WireTap} for the message counters and
    timings, a DNS timing listener, and a collector for the levels read at scrape time.

    @ivar registry: what C{/metrics} serves.
    """

    def __init__(
        self,
        statistics: Callable[[], dict[str, int]] = dict,
        gauges: Callable[[], dict[str, int]] = dict,
        process: bool = True,
    ) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        registry.register(_StateCollector(statistics, gauges))
        self.requests_received = Counter(
            "sbc_requests_received",
            "SIP requests received",
            ["method", "transport"],
            registry=registry,
        )
        self.requests_sent = Counter(
            "sbc_requests_sent",
            "SIP requests sent (relayed or generated)",
            ["method", "transport"],
            registry=registry,
        )
        self.replies_received = Counter(
            "sbc_replies_received", "SIP responses received", ["class"], registry=registry
        )
        self.replies_sent = Counter(
            "sbc_replies_sent", "SIP responses sent", ["class"], registry=registry
        )
        self.calls = Counter(
            "sbc_calls",
            "Initial INVITEs by their final outcome",
            ["disposition"],
            registry=registry,
        )
        self.call_setup = Histogram(
            "sbc_call_setup_seconds",
            "From an initial INVITE received to its first 18x (stage=ringing) and to its "
            "2xx (stage=answered) sent back",
            ["stage"],
            buckets=SETUP_BUCKETS,
            registry=registry,
        )
        self.transaction_duration = Histogram(
            "sbc_transaction_duration_seconds",
            "From a request received to its final response sent",
            ["method"],
            buckets=TRANSACTION_BUCKETS,
            registry=registry,
        )
        self.dns_lookup = Histogram(
            "sbc_dns_lookup_seconds",
            "Time to resolve a next hop (RFC 3263), cache hits included",
            buckets=DNS_BUCKETS,
            registry=registry,
        )
        self.keepalive_rtt = Histogram(
            "sbc_keepalive_rtt_seconds",
            "From a SIP keepalive ping (OPTIONS/NOTIFY) to its reply",
            buckets=RTT_BUCKETS,
            registry=registry,
        )
        self.gc_pause = Histogram(
            "sbc_gc_pause_seconds",
            "How long each garbage collection stopped the process",
            buckets=GC_BUCKETS,
            registry=registry,
        )
        #: Labelled children by label values: C{labels()} takes a lock and builds a key on
        #: every call, this is one dict lookup per message.
        self._children: dict[tuple, Any] = {}
        self._transactions: _Bounded = _Bounded()
        self._calls: _Bounded = _Bounded()
        self._pings: _Bounded = _Bounded()

    # -- observers ------------------------------------------------------------------------
    def dns_lookup_took(self, seconds: float) -> None:
        """A resolution finished (an engine C{lookup_listeners} entry)."""
        self.dns_lookup.observe(max(0.0, seconds))

    def wire(self, record: Wire) -> None:
        """One SIP message received or sent (the engine's tap)."""
        message = record.message
        received = record.direction == RECEIVED
        if message is None:
            if not received:
                # A raw SIP keepalive ping (nathelper sipping, nat_traversal): time it.
                call_id = record.call_id
                if call_id:
                    self._pings.remember(call_id, record.time)
            return
        if isinstance(message, Request):
            method = message.method
            label = method if method in KNOWN_METHODS else "other"
            key = (received, label, record.transport)
            child = self._children.get(key)
            if child is None:
                counter = self.requests_received if received else self.requests_sent
                child = self._children[key] = counter.labels(label, record.transport)
            child.inc()
            if received:
                self._request_in(message, record.time)
        elif isinstance(message, Response):
            key = (received, message.status // 100)
            child = self._children.get(key)
            if child is None:
                counter = self.replies_received if received else self.replies_sent
                child = self._children[key] = counter.labels(f"{key[1]}xx")
            child.inc()
            if received:
                started = self._pings.pop(message.call_id, None)
                if started is not None:
                    self.keepalive_rtt.observe(max(0.0, record.time - started))
            else:
                self._response_out(message, record.time)

    def _request_in(self, request: Request, now: float) -> None:
        if request.method == "ACK":
            return
        cseq = request.cseq
        key = (request.call_id, cseq.number, cseq.method)
        if key in self._transactions:
            return  # a retransmission: the transaction started with the first copy
        self._transactions.remember(key, now)
        if request.method == "INVITE" and request.to.tag is None:
            self._calls.remember(key, [now, False])

    def _response_out(self, response: Response, now: float) -> None:
        cseq = response.cseq
        key = (response.call_id, cseq.number, cseq.method)
        status = response.status
        call = self._calls.get(key)
        if call is not None:
            if 180 <= status < 190 and not call[1]:
                call[1] = True
                self.call_setup.labels("ringing").observe(max(0.0, now - call[0]))
            elif status >= 200:
                del self._calls[key]
                if status < 300:
                    self.call_setup.labels("answered").observe(max(0.0, now - call[0]))
                self.calls.labels(_disposition(status)).inc()
        if status >= 200:
            started = self._transactions.pop(key, None)
            if started is not None:
                self.transaction_duration.labels(cseq.method).observe(max(0.0, now - started))
