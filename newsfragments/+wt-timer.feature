`[tm] wt_timer` (Kamailio tm's name and default, 5000 ms): how long a completed transaction
lingers to absorb retransmissions. It caps RFC 3261's Timers D, I, J, K and RFC 6026's L
and M (never lengthens them; Timer H, which resends a final response until its ACK, keeps
64·T1), so a finished call's state is gone 5 s after it ended instead of 32 s. Under load
that is a sixth of the memory the lingering calls held; `wt_timer = 32000` keeps the RFC's
full window. Reloaded live on SIGHUP.
