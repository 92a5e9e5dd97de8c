The system tests drive a real third-party phone: two baresip softphones (Debian's
`baresip-core`, installed by `make test` when root) behind two NATs register with sbc over
UDP and TCP, call each other both ways with audio through the built-in relay, hold and
resume, send DTMF (RFC 4733), and come back after a dead NAT binding with the blocklist on.
Without baresip these tests skip, except under `CI=true`, where they fail. The README lists
the clients and versions the suite is tested with.
