Server-side NAT traversal: Kamailio's nat_uac_test/client_nat_test, Contact aliasing (or
rewriting), NAT-aware registrations (received, same socket, same TCP connection), Path
when relaying REGISTER to a core registrar (`[registrar] registrar_uri`), fix_nated_sdp,
all configured in `[nat]`; proven through real cone and symmetric NATs in namespaces.
