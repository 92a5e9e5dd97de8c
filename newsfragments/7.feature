DNS for next hops named by host name (RFC 3263 NAPTR/SRV/A/AAAA on twisted.names, RFC 2782
weights, TTL-clamped and negative cache, `[dns]`), per-request failover on send failure,
ICMP unreachable, timeout, 503 and `failover_reply_codes`, and a destination blocklist
(`[blocklist]`, Retry-After on 503), proven against a real DNS server.
