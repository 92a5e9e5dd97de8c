sbc is now a stateful SIP proxy and registrar: RFC 3261 transactions with Kamailio's tm
timers (`[tm]`), Record-Route and loose routing (`[rr]`), parallel forking to all
registered contacts, CANCEL, best-response selection, and a built-in registrar
(`[registrar]`). `bench/calls.py` measures calls per second through sbc or any other proxy.
