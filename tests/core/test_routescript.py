"""Tests for the routing-script API (L{sbc.core.routescript}) driven through the proxy
with small scripts, and for the seed recipes written against it."""

from __future__ import annotations

from types import SimpleNamespace

from sbc.core.address import Address
from sbc.core.effects import OperatorEvent
from sbc.core.message import Request, Response, parse
from sbc.core.proxy import Proxy, ProxySettings
from sbc.core.reply import make_response
from sbc.core.routescript import Result
from tests.core.proxyhelpers import (
    BOB1,
    BOB2,
    CALLER,
    SBC,
    TIMERS,
    invite,
    register,
    send_request,
    sent,
    statuses,
)
from tests.helpers import make_proxy, request_bytes, sig


def scripted(request_route, keepalive=None, **routes) -> Proxy:  # type: ignore[no-untyped-def]
    p = make_proxy([SBC], ProxySettings(timers=TIMERS), keepalive=keepalive)
    p.router = SimpleNamespace(request_route=request_route, **routes)
    return p


def notices(effects: list, event: str) -> list[OperatorEvent]:
    return [e for e in effects if isinstance(e, OperatorEvent) and e.event == event]


def answer(p: Proxy, out: Request, status: int, source: Address, now: float = 1.0) -> list:
    response = make_response(out, status).with_header("To", f"{out.get('to')};tag=t{status}")
    again = parse(response.to_bytes())
    assert isinstance(again, Response)
    return p.receive_response(again, source, now)


def test_pseudo_variables() -> None:
    seen = {}

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        seen.update(
            si=msg.si,
            sp=msg.sp,
            pr=msg.pr,
            ru=msg.ru,
            du=msg.du,
            method=msg.method,
            rr_count=msg.rr_count,
            source_uri=msg.source_uri,
            user=msg.user,
            first_hop=msg.first_hop,
            initial=msg.initial,
            myself=msg.is_myself(),
        )
        msg.sl_send_reply(404)

    assert statuses(send_request(scripted(route), invite())) == [100, 404]
    assert seen == {
        "si": "192.0.2.10",
        "sp": 5070,
        "pr": "udp",
        "ru": "sip:bob@sbc.test",
        "du": None,
        "method": "INVITE",
        "rr_count": 0,
        "source_uri": "sip:192.0.2.10:5070",
        "user": "bob",
        "first_hop": True,
        "initial": True,
        "myself": True,
    }


def test_du_headers_and_record_route() -> None:
    """$du decides the next hop; append_hf/remove_hf and record_route shape the copy."""

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.du = "sip:192.0.2.22:5082"
        msg.append_hf("X-Tenant: blue\r\n")
        assert msg.remove_hf("Max-Forwards") == 1
        msg.record_route()
        msg.add_rr_param("nat=yes")
        assert msg.t_relay()

    p = scripted(route)
    [out] = sent(send_request(p, invite()), BOB2)
    assert isinstance(out, Request) and str(out.uri) == "sip:bob@sbc.test"
    assert out.get("X-Tenant") == "blue" and out.max_forwards == 70  # added (§16.6 step 3)
    assert (
        out.get("Record-Route") == f"<sip:127.0.0.1;lr;ftag=from1;nat=yes{sig(p, 'c1', 'from1')}>"
    )


def test_a_raising_script_answers_500_and_says_where() -> None:
    def route(msg) -> None:  # type: ignore[no-untyped-def]
        return 1 // 0

    p = scripted(route)
    effects = send_request(p, invite())
    assert statuses(effects) == [100, 500]
    [notice] = notices(effects, "script_error")
    details = dict(notice.fields)
    assert details["route"] == "request_route"
    assert details["error"].startswith("ZeroDivisionError: integer division or modulo by zero (")
    assert "test_routescript.py" in details["error"] and "in route" in details["error"]
    # and the proxy keeps serving
    assert statuses(send_request(p, invite(branch="z9hG4bKc2", call_id="c2"))) == [100, 500]


def test_a_script_that_decides_nothing_gets_500_and_exit_stops_the_route() -> None:
    def route(msg) -> None:  # type: ignore[no-untyped-def]
        if msg.is_method("OPTIONS"):
            msg.send_options_reply()
            msg.exit()
        return None

    p = scripted(route)
    effects = send_request(p, invite())
    assert statuses(effects) == [100, 500] and notices(effects, "script_no_action")
    assert statuses(send_request(p, request_bytes())) == [200]


def test_drop_answers_nothing_and_forgets() -> None:
    p = scripted(lambda msg: msg.drop())
    assert statuses(send_request(p, request_bytes())) == []
    assert p.sizes()["server_transactions"] == 0


def test_loose_route_results_and_route_params() -> None:
    results = []

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        results.append((int(msg.loose_route()), msg.check_route_param("nat=yes"), msg.du))
        results.append(msg.is_direction("downstream"))
        msg.sl_send_reply(404)

    p = scripted(route)
    send_request(p, request_bytes("OPTIONS", "sip:sbc.test"))
    bye = request_bytes(
        "BYE",
        "sip:bob@192.0.2.21:5081",
        headers=[("Route", "<sip:127.0.0.1;lr;ftag=from1;nat=yes>")],
    ).replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x")
    send_request(p, bye)
    assert results == [(-1, False, None), True, (1, True, None), True]
    assert not Result(-1) and Result(1) and Result(-3) == -3


def test_lookup_results() -> None:
    codes = []

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        if msg.is_method("REGISTER"):
            msg.save("location")
            return
        found = msg.lookup("location")
        codes.append((int(found), msg.known_user))
        if found:
            msg.t_relay()
        else:
            msg.sl_send_reply(480 if msg.known_user else 404)

    p = scripted(route)
    assert statuses(send_request(p, invite("sip:nobody@sbc.test"))) == [100, 404]
    register(p, BOB1)
    effects = send_request(p, invite(branch="z9hG4bKc3", call_id="c3"))
    assert sent(effects, BOB1) and codes == [(-1, False), (1, True)]


def test_failure_route_forks_serially_or_answers() -> None:
    """t_on_failure: after a 486 the failure route tries another destination; the route
    runs once, so when that fails too the best reply of both goes upstream."""
    attempts = []

    def failure(msg) -> None:  # type: ignore[no-untyped-def]
        attempts.append(msg.status)
        if len(attempts) == 1 and msg.t_check_status("4[0-9][0-9]"):
            msg.du = "sip:192.0.2.22:5082"
            msg.t_relay()
        else:
            msg.t_reply(603, "Declined By Script")

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.du = "sip:192.0.2.21:5081"
        msg.t_on_failure(failure)
        msg.t_relay()

    p = scripted(route)
    [first] = sent(send_request(p, invite()), BOB1)
    assert isinstance(first, Request)
    [second] = sent(answer(p, first, 486, BOB1), BOB2)
    assert isinstance(second, Request) and second.method == "INVITE"
    assert statuses(answer(p, second, 500, BOB2, 2.0)) == [486]
    assert attempts == [486]  # the failure route runs once per transaction


def test_failure_route_reply() -> None:
    def failure(msg) -> None:  # type: ignore[no-untyped-def]
        msg.t_reply(603, "Declined By Script")

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.du = "sip:192.0.2.21:5081"
        msg.t_on_failure(failure)
        msg.t_relay()

    p = scripted(route)
    [first] = sent(send_request(p, invite()), BOB1)
    assert isinstance(first, Request)
    effects = answer(p, first, 486, BOB1)
    assert statuses(effects) == [603]


def test_reply_route_sees_and_changes_replies() -> None:
    def reply(msg) -> None:  # type: ignore[no-untyped-def]
        if msg.status == 200:
            msg.append_hf("X-Seen: yes")

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.du = "sip:192.0.2.21:5081"
        msg.t_relay()

    p = scripted(route, reply_route=reply)
    [out] = sent(send_request(p, invite()), BOB1)
    assert isinstance(out, Request)
    [ok] = sent(answer(p, out, 200, BOB1), CALLER)
    assert ok.get("X-Seen") == "yes"


def test_unresolvable_du_lets_the_script_answer() -> None:
    def route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.du = "sip:trunk.example.test"
        if not msg.t_relay():
            msg.sl_send_reply(478, "Unresolvable destination")

    assert statuses(send_request(scripted(route), invite())) == [100, 478]


def test_handle_ruri_alias_results() -> None:
    results = []

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        results.append(int(msg.handle_ruri_alias()))
        results.append(msg.du)
        msg.sl_send_reply(404)

    p = scripted(route)
    send_request(p, invite("sip:bob@10.0.0.5:5070;alias=203.0.113.7~40000~1"))
    send_request(p, invite("sip:bob@10.0.0.5", branch="z9hG4bKc2", call_id="c2"))
    send_request(p, invite("sip:bob@10.0.0.5;alias=bogus", branch="z9hG4bKc3", call_id="c3"))
    assert results == [1, "sip:203.0.113.7:40000", 2, None, -1, None]


def test_failure_route_relays_the_processed_request() -> None:
    """A failure-route branch starts from the request as it was relayed: our own Route
    entry, consumed by loose_route, does not come back."""

    def failure(msg) -> None:  # type: ignore[no-untyped-def]
        msg.du = "sip:192.0.2.22:5082"
        msg.t_relay()

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        msg.loose_route()
        msg.t_on_failure(failure)
        msg.t_relay()

    p = scripted(route)
    data = request_bytes(
        "MESSAGE",
        "sip:bob@192.0.2.21:5081",
        headers=[("Route", "<sip:127.0.0.1;lr>")],
    )
    [first] = sent(send_request(p, data), BOB1)
    assert isinstance(first, Request) and not first.has("route")
    [second] = sent(answer(p, first, 500, BOB1), BOB2)
    assert isinstance(second, Request) and not second.has("route")
    assert len(second.vias) == 2


def test_contact_fixes_and_keepalive_socket() -> None:
    """set_contact_alias, add_rcv_param, fix_nated_register + save, is_rfc1918 and
    keepalive_socket on a REGISTER from behind NAT."""
    from sbc.core.keepalive import KeepaliveSettings, KeepaliveTable

    nat = Address("udp", "203.0.113.7", 40000)
    seen = {}

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        seen["private"] = msg.is_rfc1918("10.0.0.5") and not msg.is_rfc1918(msg.si)
        if msg.is_method("REGISTER"):
            msg.fix_nated_register()
            msg.nat_keepalive()
            msg.save("location")
            seen["socket"] = msg.keepalive_socket()
            return
        msg.set_contact_alias()
        msg.add_rcv_param()
        msg.du = "sip:192.0.2.22:5082"
        msg.t_relay()

    p = scripted(route, KeepaliveTable(KeepaliveSettings(style="nathelper", interval=30)))
    data = request_bytes(
        "REGISTER",
        "sip:sbc.test",
        via="SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKr1",
        headers=[("Contact", "<sip:bob@10.0.0.5:5070>"), ("Expires", "300")],
    ).replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@sbc.test>")
    assert statuses(send_request(p, data, source=nat), nat) == [200]
    [binding] = p.registrar.lookup("bob", 1.0) or []
    assert binding.received == nat
    assert seen == {"private": True, "socket": "udp:127.0.0.1:5060"}
    invite_data = invite().replace(
        b"Max-Forwards: 70", b"Contact: <sip:alice@10.0.0.9:5070>\r\nMax-Forwards: 70"
    )
    [out] = sent(send_request(p, invite_data), BOB2)
    contact = out.get("Contact") or ""
    assert ";alias=192.0.2.10~5070~1" in contact and 'received="sip:192.0.2.10:5070"' in contact


def test_rr_top_count_follows_pv02() -> None:
    """2 for a double Record-Route (r2 on the top URI), 1 for a single one, 0 for none."""
    counts = []

    def route(msg) -> None:  # type: ignore[no-untyped-def]
        counts.append((msg.rr_count, msg.rr_top_count))
        msg.sl_send_reply(404)

    p = scripted(route)
    send_request(p, request_bytes())
    double = "<sip:198.51.100.1;r2=on;lr>, <sip:198.51.100.1;transport=tcp;r2=on;lr>"
    via = "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKrr{}"
    send_request(p, request_bytes(via=via.format(2), headers=[("Record-Route", double)]))
    single = [("Record-Route", "<sip:p1;lr>, <sip:p2;lr>")]
    send_request(p, request_bytes(via=via.format(3), headers=single))
    assert counts == [(0, 0), (2, 2), (2, 1)]
