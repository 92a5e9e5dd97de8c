"""
Kamailio's classic NAT recipes as an sbc routing script (name it in [core] route_script).

The same steps a Kamailio configuration with nathelper and nat_traversal takes:
client_nat_test("3") -> fix_contact(); nat_uac_test("8") with SDP -> fix_nated_sdp("3");
nat_keepalive() for REGISTER, SUBSCRIBE and initial INVITE; record_route() for initial
INVITE (and the other dialog-creating requests); loose_route() for in-dialog requests;
save()/lookup() against the built-in location table.  sbc's own policy is
etc/routes_default.py; the API is documented in sbc/core/routescript.py.
"""

from __future__ import annotations


def relay(msg) -> None:  # type: ignore[no-untyped-def]
    msg.rtp_offer()  # anchored when [rtp] rtp_policy says so
    if not msg.t_relay():
        msg.sl_send_reply(478, "Unresolvable destination")


def request_route(msg) -> None:  # type: ignore[no-untyped-def]
    # NAT detection: a private Contact (1) or a private address in the top Via (2).
    if msg.first_hop and msg.client_nat_test("3"):
        msg.natted = True
        msg.force_rport()
        msg.fix_contact()
    if msg.nat_uac_test("8") and msg.has_body:
        msg.fix_nated_sdp("3")
    if msg.is_method("REGISTER", "SUBSCRIBE") or (msg.is_method("INVITE") and msg.initial):
        msg.nat_keepalive()

    # Stay in the path of the dialogs this request may create.
    if msg.initial and msg.is_method("INVITE", "SUBSCRIBE", "REFER", "NOTIFY"):
        msg.record_route()

    # Follow the route set: in dialog, or along the Path this proxy added to a REGISTER.
    routed = msg.loose_route()
    if msg.path_received() or routed:
        relay(msg)
        return
    if not msg.initial:
        if msg.is_myself() and msg.is_method("OPTIONS"):
            msg.send_options_reply()
        elif msg.is_myself():
            msg.sl_send_reply(404)
        else:
            relay(msg)
        return

    if not msg.is_myself():
        if msg.outbound_proxy is not None:
            msg.du = msg.outbound_proxy
        relay(msg)
        return

    if msg.is_method("REGISTER"):
        if msg.registrar_uri is not None:  # an edge proxy in front of a core registrar
            msg.add_path(received=msg.natted)
            msg.du = msg.registrar_uri
            relay(msg)
            return
        msg.save("location")
        return
    if msg.user is None:
        if msg.is_method("OPTIONS"):
            msg.send_options_reply()
        else:
            msg.sl_send_reply(404)
        return
    if msg.lookup("location"):
        relay(msg)
    elif msg.known_user:
        msg.sl_send_reply(480, "Temporarily Unavailable")
    else:
        msg.sl_send_reply(404, "Not Found")


def reply_route(msg) -> None:  # type: ignore[no-untyped-def]
    # A callee behind NAT: its Contact in the reply points at its NAT binding.
    if msg.from_ua and msg.client_nat_test("1"):
        msg.fix_contact()
    if msg.nat_uac_test("8") and msg.has_body:
        msg.fix_nated_sdp("3")
