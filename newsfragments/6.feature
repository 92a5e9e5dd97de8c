Media anchoring (`[rtp]`): SDP rewritten to sbc's media address and RTP/RTCP relayed by the
built-in relay (latching, media timeout, counters) or by an rtpengine over the ng protocol,
tied to the dialog (offer, answer, late offer, delete on BYE/CANCEL/failure); two phones
behind two NATs hear each other; `bench/relay.py` measures the relay.
