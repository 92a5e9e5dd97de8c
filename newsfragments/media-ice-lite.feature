The built-in RTP relay enforces strict source after latching (RTP and RTCP from any other
address are dropped and counted in `rtp_foreign_dropped` and per session), marks every hold
form (`a=sendonly`, `a=inactive`, `c=0.0.0.0`) as held until a resume, and acts as an
ICE-lite peer (RFC 8445) towards a side whose SDP carries ICE: its own credentials and host
candidates in the SDP, connectivity checks answered with MESSAGE-INTEGRITY and FINGERPRINT
and latching that side, STUN never relayed. With rtpengine, sbc asks for `ICE=force`
towards a side that speaks ICE and `ICE=remove` towards one that does not.
