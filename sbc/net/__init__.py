"""Twisted adapters around the core: transports, timers, resolver, RTP sockets."""
