Observability: `/metrics` is real Prometheus exposition from `prometheus_client` (counters
with labels, gauges, histograms for call set-up, transaction duration, DNS lookups and
keepalive round trips, the process collector) with a Grafana dashboard in `etc/`; HEP3
capture for Homer (`[siptrace]`, RTCP correlated by Call-ID); call records as JSON lines and
in PostgreSQL (`[acc]`); TLS certificates reloaded without a restart (SIGHUP, changed files,
`tls.reload`); a reload names every key it could not apply and keeps its running value
(`advertise` is refused whole); `sbcctl`, an operator CLI with Kamailio's RPC names; the
Call-ID on every log line about a call.
