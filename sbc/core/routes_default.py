# -*- test-case-name: tests.core.test_routescript -*-
"""
sbc's built-in routing policy, written as a routing script (see L{sbc.core.routescript}
for the API).  The [nat], [registrar], [core] and [rtp] settings steer it; copy this file
(it is also C{etc/routes_default.py}) and name the copy in C{[core] route_script} to
change what sbc does.
"""

from __future__ import annotations

from sbc.core.relaypolicy import Verdict

#: Methods whose initial request creates a dialog: sbc record-routes them.
DIALOG_CREATING = ("INVITE", "SUBSCRIBE", "REFER", "NOTIFY")
#: Replies from a NATed UAS are judged by these nat_uac_test flags only: the Via-based
#: ones (2, 4, 16) would look at sbc's own Via.
REPLY_TESTS = 1 | 8 | 32 | 128 | 256
#: nat_uac_test bit 64: the message came over a WebSocket.  RFC 7118 clients are always
#: treated as NATed (as Kamailio's websocket example configuration does): their Contact
#: host is a made-up .invalid name, reachable only through the alias of their connection.
WEBSOCKET_TEST = 64


def fix_nated(msg, nat) -> None:  # type: ignore[no-untyped-def]
    """Contact alias or rewrite, and SDP, for a message from a client behind NAT."""
    if nat.contact_fix == "alias":
        msg.add_contact_alias()
    elif nat.contact_fix == "rewrite":
        msg.fix_nated_contact()
    if nat.fix_nated_sdp and msg.has_body:
        msg.fix_nated_sdp(nat.fix_nated_sdp)


def request_route(msg) -> None:  # type: ignore[no-untyped-def]
    nat = msg.nat_policy
    # What the script changes (Route, Contact, SDP, the alias in the Request-URI) leaves
    # these as they are: read once.
    method, initial, first_hop = msg.method, msg.initial, msg.first_hop
    # Only the first hop judges and fixes a client: behind another proxy the client's NAT
    # was that proxy's to handle (and its alias must survive).
    natted = first_hop and msg.nat_uac_test(nat.nat_uac_test | WEBSOCKET_TEST)
    routed = msg.loose_route()  # inside a dialog: 1 only through our own signed Route
    if first_hop and msg.check_route_param(r";nat=yes(;|$)"):
        natted = True  # the dialog was marked NATed when it was set up
    if initial and method == "OPTIONS" and msg.user is None and msg.du is None:
        if msg.is_myself():
            msg.send_options_reply()  # a keepalive for sbc itself: no credentials needed
            return
    along_path = initial and msg.du is None and msg.path_received()
    if not allowed(msg, along_path):
        return
    if natted and method != "REGISTER":
        fix_nated(msg, nat)
    if natted:
        msg.natted = True
        msg.add_rr_param(";nat=yes")
    if initial and method in DIALOG_CREATING:
        msg.record_route()
    if method in ("REGISTER", "SUBSCRIBE") or (method == "INVITE" and initial):
        msg.nat_keepalive()
    if along_path:
        relay(msg)  # from the core registrar, along the Path we added and signed
        return
    # An alias in the Request-URI is a NAT binding sbc wrote into a Contact: followed
    # inside dialogs we route, and for trusted peers; from anyone else it would make sbc
    # relay to any address.
    if nat.contact_fix == "alias" and (msg.du is None or msg.du == msg.ru):
        if not initial or msg.allow_source_address():
            alias = msg.handle_ruri_alias()
            if alias == -1:
                msg.sl_send_reply(400, "Bad alias parameter in Request-URI")
                return
            if alias == 1:
                relay(msg)
                return
    if msg.du is None and routed == 1 and msg.is_sip_uri and not msg.is_myself():
        relay(msg)  # in dialog: our Route entries consumed, the Request-URI is the target
        return
    if msg.du is not None:
        relay(msg)
        return
    local(msg, natted)


def allowed(msg, along_path: bool) -> bool:  # type: ignore[no-untyped-def]
    """sbc is never an open relay: trusted peers ([permissions] trusted) go anywhere; our
    users authenticate when [auth] is on; others may reach our domains only; inside a
    dialog only our own signed Route (or a dialog sbc knows) routes.  Refused requests
    get 403 Relaying Forbidden or 404 Not Here (an ACK is absorbed)."""
    to_us = along_path or (msg.du is None and msg.is_myself())
    verdict = msg.relay_verdict(to_us)
    if verdict is Verdict.AUTHENTICATE:
        if msg.is_method("REGISTER") and msg.registrar_uri is not None:
            return True  # edge mode: the core registrar authenticates
        return authenticate(msg)
    if verdict is not Verdict.ACCEPT:
        msg.refuse(verdict)
        return False
    return True


def authenticate(msg) -> bool:  # type: ignore[no-untyped-def]
    """auth_check with the From (REGISTER: To) user tied to the credentials, as Kamailio's
    stock configuration does."""
    result = msg.auth_check(flags=1)
    if not result:
        msg.auth_challenge()  # 401/407, or 403 for another user's credentials
        return False
    if not msg.is_method("REGISTER"):
        msg.consume_credentials()
    return True


def relay(msg) -> None:  # type: ignore[no-untyped-def]
    msg.rtp_offer()  # anchors only when [rtp] rtp_policy says so
    if not msg.t_relay():
        msg.sl_send_reply(478, "Unresolvable destination")


def local(msg, natted: bool) -> None:  # type: ignore[no-untyped-def]
    """Requests for our domains (registrar, location, OPTIONS) or for others."""
    if msg.is_myself():
        if msg.method == "REGISTER":
            if msg.registrar_uri is not None:
                # Edge mode: relay to the core registrar with a Path naming us (RFC 3327).
                if natted and msg.nat_policy.register_fix != "off":
                    msg.add_rcv_param()
                    msg.add_path(received=True)
                else:
                    msg.add_path()
                msg.du = msg.registrar_uri
                relay(msg)
                return
            if natted and msg.nat_policy.register_fix == "received":
                msg.fix_nated_register()
            msg.save("location")
            return
        if msg.user is None or not msg.initial:
            if msg.is_method("OPTIONS"):
                msg.send_options_reply()
            else:
                msg.sl_send_reply(404)
            return
        if msg.lookup("location"):
            relay(msg)
        else:
            msg.sl_send_reply(480 if msg.known_user else 404)
        return
    if msg.outbound_proxy is not None:
        msg.du = msg.outbound_proxy
        relay(msg)
        return
    if msg.is_sip_uri:
        relay(msg)
        return
    msg.sl_send_reply(404)


def reply_route(msg) -> None:  # type: ignore[no-untyped-def]
    """A reply from a NATed UAS gets its Contact (and SDP) fixed like a request would."""
    nat = msg.nat_policy
    tests = (nat.nat_uac_test & REPLY_TESTS) | WEBSOCKET_TEST
    # The NAT test first: from_ua parses the reply's Record-Route, which nothing else reads.
    if tests and msg.is_present_hf("contact") and msg.nat_uac_test(tests) and msg.from_ua:
        fix_nated(msg, nat)
