Keepalives for NATed endpoints, Kamailio's nathelper (`[nathelper]`) and nat_traversal
(`[nat_traversal]`) styles in one engine, with a state file that keeps endpoints and
registrations across restarts; `bench/keepalive.py` measures it at 100 000 endpoints.
