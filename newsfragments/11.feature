STUN Binding requests (RFC 5389 and RFC 3489) are answered on the SIP ports, UDP and
TCP/TLS, so phones learn their public address from sbc (`[stun] stun_allow_stun`).
