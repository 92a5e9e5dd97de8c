Garbage-collector pauses are measured: `/metrics` has a `sbc_gc_pause_seconds` histogram
(one observation per collection) and sbc logs at shutdown how many collections ran, the
longest, and how many took over 5 ms.
