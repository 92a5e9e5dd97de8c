# -*- test-case-name: tests.app.test_metrics -*-
"""
Prometheus metrics with C{prometheus_client}: counters as counters (C{_total}, with
labels; the per-message ones are plain integers in dicts, exported by a collector at
scrape time), gauges as gauges, histograms for call set-up time, transaction duration, DNS
lookup time and keepalive round trips, and the process collector (CPU, memory, open
file descriptors).  One registry per sbc, served by C{prometheus_client}'s own Twisted
C{MetricsResource} on C{[manhole] metrics_listen}.

The Kamailio-named statistics (C{rcv_requests}, C{fwd_requests}, ...) stay what the
manhole's C{stats} command shows; here they are exported too, as C{sbc_<name>_total}
counters (or gauges for the few that are levels, not counts).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client import metrics as prometheus_metrics
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


#: Label values of the reply counters by status class (C{2} for a 200, ...).
_CLASS_LABELS = {n: (f"{n}xx",) for n in range(1, 7)}


class _Counts(dict[tuple[str, ...], int]):
    """
    One counter family: its value by label values, as plain integers (one dict operation
    per message, no lock: messages are counted and C{/metrics} is rendered on the reactor
    thread, L{sbc.app.manhole.MetricsResource}).  The time each label set was first
    counted is kept for its C{_created} sample, as a C{prometheus_client} C{Counter} child
    exports it.
    """

    __slots__ = ("name", "documentation", "labelnames", "created")

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        super().__init__()
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.created: dict[tuple[str, ...], float] = {}

    def __missing__(self, key: tuple[str, ...]) -> int:
        self.created[key] = time.time()
        return 0

    def family(self, with_created: bool) -> CounterMetricFamily:
        """The family as C{/metrics} shows it (C{<name>_total} and C{<name>_created})."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = self.created
        for key, value in self.items():
            family.add_metric(key, float(value), created[key] if with_created else None)
        return family


class _CounterCollector(Collector):
    """The per-message counters, exported at scrape time as C{prometheus_client}'s own
    labelled C{Counter}s showed them (same names, HELP, labels and samples)."""

    def __init__(self, counters: list[_Counts]) -> None:
        self._counters = counters

    def describe(self) -> Iterator[Metric]:
        for counts in self._counters:
            yield CounterMetricFamily(counts.name, counts.documentation, labels=counts.labelnames)

    def collect(self) -> Iterator[Metric]:
        # PROMETHEUS_DISABLE_CREATED_SERIES (or disable_created_metrics()) drops the
        # _created samples of every counter: these follow the library's switch.
        with_created = getattr(prometheus_metrics, "_use_created", True)
        for counts in self._counters:
            yield counts.family(with_created)


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
        self._requests_received = _Counts(
            "sbc_requests_received", "SIP requests received", ("method", "transport")
        )
        self._requests_sent = _Counts(
            "sbc_requests_sent", "SIP requests sent (relayed or generated)", ("method", "transport")
        )
        self._replies_received = _Counts(
            "sbc_replies_received", "SIP responses received", ("class",)
        )
        self._replies_sent = _Counts("sbc_replies_sent", "SIP responses sent", ("class",))
        self._calls_by_disposition = _Counts(
            "sbc_calls", "Initial INVITEs by their final outcome", ("disposition",)
        )
        registry.register(
            _CounterCollector(
                [
                    self._requests_received,
                    self._requests_sent,
                    self._replies_received,
                    self._replies_sent,
                    self._calls_by_disposition,
                ]
            )
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
        #: Histogram children by label value: C{labels()} takes a lock and checks its
        #: arguments on every call, this is one dict lookup.  Made on first use, so that a
        #: scrape shows no label set before it has been observed.
        self._setup_children: dict[str, Any] = {}
        self._transaction_children: dict[str, Any] = {}
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
            counts = self._requests_received if received else self._requests_sent
            counts[method if method in KNOWN_METHODS else "other", record.transport] += 1
            if received:
                self._request_in(message, record.time)
        elif isinstance(message, Response):
            status = message.status
            try:
                key = _CLASS_LABELS[status // 100]
            except KeyError:
                key = (f"{status // 100}xx",)
            if received:
                self._replies_received[key] += 1
                started = self._pings.pop(message.call_id, None)
                if started is not None:
                    self.keepalive_rtt.observe(max(0.0, record.time - started))
            else:
                self._replies_sent[key] += 1
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
                self._observe(self._setup_children, self.call_setup, "ringing", now - call[0])
            elif status >= 200:
                del self._calls[key]
                if status < 300:
                    self._observe(self._setup_children, self.call_setup, "answered", now - call[0])
                self._calls_by_disposition[(_disposition(status),)] += 1
        if status >= 200:
            started = self._transactions.pop(key, None)
            if started is not None:
                method = cseq.method
                self._observe(
                    self._transaction_children,
                    self.transaction_duration,
                    method if method in KNOWN_METHODS else "other",  # a peer's own word
                    now - started,
                )

    @staticmethod
    def _observe(
        children: dict[str, Any], histogram: Histogram, label: str, seconds: float
    ) -> None:
        """C{histogram.labels(label).observe(seconds)}, the child looked up in C{children}
        (bounded by the labels: set-up stages, and methods as L{KNOWN_METHODS} or C{other})."""
        child = children.get(label)
        if child is None:
            child = children[label] = histogram.labels(label)
        child.observe(max(0.0, seconds))
