sbc runs as `twistd -n sbc --config etc/sbc.ini`: SIP over UDP, TCP and TLS (IPv4 and IPv6),
an RFC 4475-clean message parser, OPTIONS answered by sbc itself, malformed input answered
with 400 and counted, INI configuration with Kamailio's key names and one-line errors.
