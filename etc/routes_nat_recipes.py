"""
Kamailio's classic NAT recipes as an sbc routing script (name it in [core] route_script).

The same steps a Kamailio configuration with nathelper and nat_traversal takes:
client_nat_test("3") -> fix_contact(); nat_uac_test("8") with SDP -> fix_nated_sdp("3");
nat_keepalive() for REGISTER, SUBSCRIBE and initial INVITE; record_route() for initial
INVITE (and the other dialog-creating requests); loose_route() for in-dialog requests;
save()/lookup() against the built-in location table; and the stock configuration's
safety: allow_source_address() for trusted peers, auth_check() for our users, 403 for
requests that would make sbc an open relay, 404 in dialogs it does not route.  sbc's own policy is
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

    if msg.has_totag():
        within_dialog(msg)
        return
    if msg.is_method("OPTIONS") and msg.user is None and msg.is_myself() and not msg.du:
        msg.send_options_reply()  # Kamailio's REQINIT keepalive answer, before route(AUTH)
        return

    # Kamailio's route(AUTH): trusted peers ([permissions]) go anywhere; our users prove
    # who they are, with the From (REGISTER: To) user tied to the credentials.
    trusted = msg.allow_source_address()
    edge_register = msg.is_method("REGISTER") and msg.registrar_uri is not None
    if not trusted and msg.auth_enabled and not edge_register:
        if (msg.is_method("REGISTER") and msg.is_myself()) or msg.is_from_local():
            if not msg.auth_check(flags=1):
                msg.auth_challenge()
                return
            if not msg.is_method("REGISTER"):
                msg.consume_credentials()

    if msg.is_method("REGISTER", "SUBSCRIBE") or msg.is_method("INVITE"):
        msg.nat_keepalive()
    # Stay in the path of the dialogs this request may create.
    if msg.is_method("INVITE", "SUBSCRIBE", "REFER", "NOTIFY"):
        msg.record_route()

    # Along the Path this proxy added (and signed) to a REGISTER: to the NAT binding.
    routed = msg.loose_route()
    if msg.path_received():
        relay(msg)
        return
    # Not an open relay: anything that leaves for another domain needs a trusted peer, an
    # authenticated user, or [core] allow_relay.
    leaves = routed == 1 or not msg.is_myself()
    if leaves and not (trusted or msg.authenticated or msg.allow_relay):
        msg.sl_send_reply(403, "Relaying Forbidden")
        return
    if routed == 1:
        relay(msg)
        return
    if not msg.is_myself():
        if msg.outbound_proxy is not None:
            msg.du = msg.outbound_proxy
        relay(msg)
        return

    if msg.is_method("REGISTER"):
        if edge_register:  # an edge proxy in front of a core registrar
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


def within_dialog(msg) -> None:  # type: ignore[no-untyped-def]
    """Kamailio's route(WITHINDLG): loose_route() routes only through a Record-Route entry
    this proxy signed; a dialog it knows goes by the Request-URI; anything else is 404
    (an ACK is absorbed)."""
    if msg.loose_route() or msg.is_known_dlg():
        if msg.du is None and msg.is_myself():
            if msg.is_method("OPTIONS"):
                msg.send_options_reply()
            else:
                msg.sl_send_reply(404, "Not Here")
            return
        relay(msg)
        return
    if msg.is_method("ACK"):
        msg.drop()
    elif msg.is_myself() and msg.is_method("OPTIONS"):
        msg.send_options_reply()
    else:
        msg.sl_send_reply(404, "Not Here")


def reply_route(msg) -> None:  # type: ignore[no-untyped-def]
    # A callee behind NAT: its Contact in the reply points at its NAT binding.
    if msg.from_ua and msg.client_nat_test("1"):
        msg.fix_contact()
    if msg.nat_uac_test("8") and msg.has_body:
        msg.fix_nated_sdp("3")
