"""
The pure core: SIP parsing, NAT rules, state machines and decisions, with no I/O.

It imports the standard library and itself only (no twisted, socket, time, threading or
global random): time and randomness are passed in.
"""
