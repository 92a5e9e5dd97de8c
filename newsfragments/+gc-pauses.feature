Garbage-collector pauses are measured: `/metrics` has a `sbc_gc_pause_seconds` histogram
(one observation per collection) and sbc logs at shutdown how many collections ran, the
longest, and how many took over 5 ms.
A middle collection now runs every second young one (thresholds 500/2): with every
fourth, 2 % of them took 5–7 ms at 800 calls/s.
