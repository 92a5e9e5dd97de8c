"""Tests for DNS failover and the blocklist in L{sbc.core.proxy} (Kamailio tm with
use_dns_failover and failover_reply_codes, blst_503, dst_blocklist), driven with resolved
address lists and float time."""

from __future__ import annotations

import pytest

from sbc.core.address import Address
from sbc.core.blocklist import BlocklistSettings
from sbc.core.message import Request, Response
from sbc.core.proxy import Proxy, ProxySettings, Resolve, failover_codes
from sbc.core.reply import make_response
from sbc.core.transaction import Send
from tests.core.proxyhelpers import (
    SBC,
    SBC_TCP,
    TIMERS,
    answer,
    invite,
    send_request,
    sent,
    statuses,
)
from tests.helpers import make_proxy, request_bytes

FIRST = Address("udp", "192.0.2.31", 5060)
SECOND = Address("udp", "192.0.2.32", 5060)
THIRD = Address("udp", "192.0.2.33", 5060)
TRUNK = "sip:x@svc.example.test"


def dns_proxy(**kw) -> Proxy:  # type: ignore[no-untyped-def]
    return make_proxy([SBC], ProxySettings(timers=TIMERS, **kw), resolves_names=True)


def start_call(p: Proxy, targets: list[Address], now: float = 0.0, **kw) -> list:  # type: ignore[no-untyped-def]
    effects = send_request(p, invite(TRUNK, **kw), now)
    [resolve] = [e for e in effects if isinstance(e, Resolve)]
    assert str(resolve.uri) == TRUNK
    return p.resolved(resolve.token, targets, now)


def request_to(effects: list, peer: Address) -> Request:
    [message] = sent(effects, peer)
    assert isinstance(message, Request)
    return message


def test_name_without_resolver_is_478() -> None:
    """Without DNS wired, a host name as next hop is 478 as before."""
    p = make_proxy([SBC], ProxySettings(timers=TIMERS))
    assert 478 in statuses(send_request(p, invite(TRUNK)))


def test_resolution_waits_then_forwards_to_the_first_target() -> None:
    p = dns_proxy()
    effects = send_request(p, invite(TRUNK))
    assert statuses(effects) == [100] and not sent(effects, FIRST)
    [resolve] = [e for e in effects if isinstance(e, Resolve)]
    forwarded = p.resolved(resolve.token, [FIRST, SECOND], 0.1)
    assert request_to(forwarded, FIRST).method == "INVITE"
    assert p.sizes()["resolving"] == 0


def test_nothing_resolved_is_478() -> None:
    p = dns_proxy()
    assert statuses(start_call(p, [])) == [478]


def test_timeout_without_any_reply_fails_over_and_blocklists() -> None:
    """An INVITE with no reply for fr_timer → blocklisted, next target tried."""
    p = dns_proxy()
    out = request_to(start_call(p, [FIRST, SECOND]), FIRST)
    effects = p.handle_timer(TIMERS.fr_timer + 0.1)
    second = request_to(effects, SECOND)
    assert second.top_via.branch != out.top_via.branch
    assert p.blocklist.blocked(FIRST, 31.0)
    answer(p, second, 180, SECOND, 31.0)
    effects = answer(p, second, 200, SECOND, 31.5)
    assert statuses(effects) == [200]
    # The next call skips the blocklisted target without delay.
    effects = start_call(p, [FIRST, SECOND], 32.0, call_id="c2", branch="z9hG4bKc2")
    assert not sent(effects, FIRST) and request_to(effects, SECOND)


def test_timeout_after_a_provisional_does_not_fail_over() -> None:
    """Only a branch that never got any reply fails over."""
    p = dns_proxy()
    out = request_to(start_call(p, [FIRST, SECOND]), FIRST)
    answer(p, out, 180, FIRST, 1.0)
    effects = p.handle_timer(1.0 + TIMERS.fr_inv_timer + 0.1)
    assert not sent(effects, SECOND)
    assert not p.blocklist.blocked(FIRST, 100.0)


def test_503_fails_over_and_blocklists_for_the_clamped_retry_after() -> None:
    """Through the proxy: blst_503 on, Retry-After 30 clamped up to min 60."""
    p = dns_proxy(
        blocklist=BlocklistSettings(
            blst_503=True, blst_503_min_timeout=60, blst_503_max_timeout=3600
        )
    )
    out = request_to(start_call(p, [FIRST, SECOND]), FIRST)
    response = make_response(out, 503).with_header("Retry-After", "30")
    assert isinstance(response, Response)
    effects = p.receive_response(response, FIRST, 1.0)
    request_to(effects, SECOND)
    assert p.blocklist.blocked(FIRST, 60.9) and not p.blocklist.blocked(FIRST, 61.1)


def test_503_without_blst_503_fails_over_without_blocklisting() -> None:
    p = dns_proxy()
    out = request_to(start_call(p, [FIRST, SECOND]), FIRST)
    effects = answer(p, out, 503, FIRST, 1.0)
    request_to(effects, SECOND)
    assert not p.blocklist.blocked(FIRST, 2.0)


@pytest.mark.parametrize(
    "status, fails_over",
    [(403, True), (500, True), (599, True), (503, True), (404, False), (486, False)],
)
def test_failover_reply_codes(status: int, fails_over: bool) -> None:
    """failover_reply_codes=code=403;class=5."""
    p = dns_proxy(failover_reply_codes=failover_codes("code=403;class=5"))
    out = request_to(start_call(p, [FIRST, SECOND]), FIRST)
    effects = answer(p, out, status, FIRST, 1.0)
    assert bool(sent(effects, SECOND)) is fails_over
    if not fails_over:
        assert statuses(effects) == [status]


def test_failover_codes_syntax() -> None:
    assert failover_codes("") == frozenset()
    assert failover_codes("code=488; class=5") == frozenset({488, *range(500, 600)})
    for bad in ("code=200", "class=2", "cod=403", "code=abc"):
        with pytest.raises(ValueError):
            failover_codes(bad)


def test_last_target_failing_gives_the_best_reply() -> None:
    """Every target fails: the best of their replies goes upstream (503 remapped to 500)."""
    p = dns_proxy()
    out = request_to(start_call(p, [FIRST, SECOND]), FIRST)
    second = request_to(answer(p, out, 503, FIRST, 1.0), SECOND)
    assert statuses(answer(p, second, 503, SECOND, 2.0)) == [500]


def test_send_failure_fails_over_at_once() -> None:
    """A transport failure (refused connection, ICMP unreachable) fails over at once."""
    p = dns_proxy()
    request_to(start_call(p, [FIRST, SECOND]), FIRST)
    effects = p.transport_failed(FIRST, 0.05)
    assert request_to(effects, SECOND).method == "INVITE"
    assert p.blocklist.blocked(FIRST, 1.0)


def test_every_target_blocklisted_is_503_at_once() -> None:
    p = dns_proxy()
    p.blocklist.add(FIRST, 0x40, 0.0)
    p.blocklist.add(SECOND, 0x40, 0.0)
    assert statuses(start_call(p, [FIRST, SECOND])) == [503]


def test_failover_is_off_when_disabled() -> None:
    p = dns_proxy(use_dns_failover=False)
    out = request_to(start_call(p, [FIRST, SECOND]), FIRST)
    effects = answer(p, out, 503, FIRST, 1.0)
    assert not sent(effects, SECOND) and statuses(effects) == [500]


def test_no_failover_after_the_lifetime_cap() -> None:
    """No DNS failover branch is added after max_inv_lifetime."""
    p = dns_proxy(max_inv_lifetime=10.0)
    out = request_to(start_call(p, [FIRST, SECOND, THIRD]), FIRST)
    effects = answer(p, out, 503, FIRST, 11.0)
    assert not sent(effects, SECOND)


def test_cursor_belongs_to_the_transaction() -> None:
    """One call exhausting its targets does not change what another call tries."""
    p = dns_proxy(blocklist=BlocklistSettings(use_dst_blocklist=False))
    out = request_to(start_call(p, [FIRST, SECOND]), FIRST)
    second = request_to(answer(p, out, 503, FIRST, 1.0), SECOND)
    answer(p, second, 503, SECOND, 2.0)
    effects = start_call(p, [FIRST, SECOND], 3.0, call_id="c2", branch="z9hG4bKc2")
    assert request_to(effects, FIRST)


def test_cancel_while_resolving_gives_487_when_resolved() -> None:
    p = dns_proxy()
    effects = send_request(p, invite(TRUNK))
    [resolve] = [e for e in effects if isinstance(e, Resolve)]
    cancel = request_bytes(
        "CANCEL", TRUNK, via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKc1;rport", call_id="c1"
    )
    assert statuses(send_request(p, cancel, 0.5)) == [200]
    assert statuses(p.resolved(resolve.token, [FIRST], 1.0)) == [487]


def test_dns_that_never_answers_ends_at_the_lifetime_cap() -> None:
    p = dns_proxy(max_inv_lifetime=5.0)
    effects = send_request(p, invite(TRUNK))
    [resolve] = [e for e in effects if isinstance(e, Resolve)]
    assert statuses(p.handle_timer(5.1)) == [408]
    assert p.resolved(resolve.token, [FIRST], 6.0) == []
    assert p.sizes()["resolving"] == 0


def test_ack_for_2xx_to_a_name_is_resolved_too() -> None:
    p = dns_proxy()
    ack = request_bytes("ACK", TRUNK, via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKa1;rport")
    [resolve] = [e for e in send_request(p, ack) if isinstance(e, Resolve)]
    [send] = [e for e in p.resolved(resolve.token, [SECOND], 0.1) if isinstance(e, Send)]
    assert send.peer == SECOND and send.message.method == "ACK"  # type: ignore[union-attr]


def test_a_late_dns_answer_after_the_lifetime_leaves_nothing_pending() -> None:
    """The lifetime cap ends a request still waiting for DNS with 408; the late answer is
    absorbed and a new request through the same proxy completes normally."""
    p = dns_proxy(max_inv_lifetime=5.0)
    [resolve] = [e for e in send_request(p, invite(TRUNK)) if isinstance(e, Resolve)]
    assert statuses(p.handle_timer(5.1)) == [408]
    assert p.resolved(resolve.token, [FIRST], 6.0) == []
    effects = start_call(p, [SECOND], 7.0, call_id="c2", branch="z9hG4bKc2")
    out = request_to(effects, SECOND)
    assert statuses(answer(p, out, 486, SECOND, 8.0)) == [486]


# -- location bindings and the blocklist -----------------------------------------------------------

PHONE_NAT = Address("udp", "198.51.100.20", 40123)  # the public side of a phone's NAT binding
PHONE_TCP = Address("tcp", "198.51.100.21", 50123)  # a registration's TCP connection


def register_from(p: Proxy, source: Address, cseq: int, now: float) -> list:
    """alice registers from behind NAT (private Contact) from C{source}."""
    transport = source.transport.upper()
    data = request_bytes(
        "REGISTER",
        "sip:sbc.test",
        cseq=cseq,
        call_id="reg-alice",
        via=f"SIP/2.0/{transport} 10.0.0.10:5070;branch=z9hG4bKreg{cseq};rport",
        headers=[("Contact", "<sip:alice@10.0.0.10:5070>"), ("Expires", "300")],
    )
    data = data.replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")
    local = SBC_TCP if source.reliable else SBC
    effects = send_request(p, data, now, source=source, local=local)
    assert statuses(effects, source) == [200]
    return effects


def call_alice(p: Proxy, n: int, now: float) -> list:
    data = invite("sip:alice@sbc.test", call_id=f"a{n}", branch=f"z9hG4bKa{n}")
    return send_request(p, data, now)


@pytest.mark.parametrize("phone", [PHONE_NAT, PHONE_TCP])
def test_timeout_to_a_binding_does_not_blocklist_it(phone: Address) -> None:
    """A call to a dead NAT binding (or registration flow) times out with 408, but the
    address is not blocklisted: the next call still goes there."""
    p = make_proxy([SBC, SBC_TCP], ProxySettings(timers=TIMERS))
    register_from(p, phone, 1, 0.0)
    request_to(call_alice(p, 1, 1.0), phone)
    effects = p.handle_timer(1.0 + TIMERS.fr_timer + 0.1)
    assert statuses(effects) == [408]
    assert not p.blocklist.blocked(phone, 40.0) and len(p.blocklist) == 0
    assert request_to(call_alice(p, 2, 40.0), phone).method == "INVITE"


def test_timeout_to_a_binding_alias_does_not_blocklist_it() -> None:
    """A binding whose Contact carries C{;alias=} is reached at the alias (taken out of the
    Request-URI), and its timeout does not blocklist the alias address either."""
    p = make_proxy([SBC], ProxySettings(timers=TIMERS))
    data = request_bytes(
        "REGISTER",
        "sip:sbc.test",
        call_id="reg-alias",
        via="SIP/2.0/UDP 198.51.100.20:40123;branch=z9hG4bKreg1;rport",
        headers=[
            ("Contact", "<sip:alice@192.0.2.77:5070;alias=198.51.100.20~40123~1>"),
            ("Expires", "300"),
        ],
    )
    data = data.replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")
    assert statuses(send_request(p, data, source=PHONE_NAT), PHONE_NAT) == [200]
    out = request_to(call_alice(p, 1, 1.0), PHONE_NAT)
    assert str(out.uri) == "sip:alice@192.0.2.77:5070"
    assert statuses(p.handle_timer(1.0 + TIMERS.fr_timer + 0.1)) == [408]
    assert len(p.blocklist) == 0


def test_register_lifts_the_blocklist_entry_of_its_source() -> None:
    """A send failure blocklists the binding; the phone registers again from the very same
    address and the next call reaches it at once (no 503 'no usable next hop')."""
    p = make_proxy([SBC], ProxySettings(timers=TIMERS))
    register_from(p, PHONE_NAT, 1, 0.0)
    request_to(call_alice(p, 1, 1.0), PHONE_NAT)
    effects = p.transport_failed(PHONE_NAT, 1.05)
    assert statuses(effects) == [503] and p.blocklist.blocked(PHONE_NAT, 2.0)
    # Blocked: the next call is refused without a try (what the phone's user saw).
    effects = call_alice(p, 2, 2.0)
    assert statuses(effects) == [100, 503] and not sent(effects, PHONE_NAT)
    effects = register_from(p, PHONE_NAT, 2, 3.0)
    assert not p.blocklist.blocked(PHONE_NAT, 3.0)
    assert any(getattr(e, "event", None) == "blocklist_lifted" for e in effects)
    assert request_to(call_alice(p, 3, 5.0), PHONE_NAT).method == "INVITE"


def test_any_request_lifts_the_entry_but_not_an_operators() -> None:
    """An OPTIONS from a blocklisted trunk lifts its entry (the wildcard-transport one too);
    an entry the operator added (blocklist_add) stays."""
    p = dns_proxy()
    p.blocklist.add(FIRST, 0x10, 0.0)
    p.blocklist.add(Address("", FIRST.host, FIRST.port), 0x02, 0.0)
    p.blocklist.add(SECOND, 0x40, 0.0)  # ADMIN
    send_request(p, request_bytes("OPTIONS", "sip:sbc.test"), 1.0, source=FIRST)
    send_request(
        p,
        request_bytes("OPTIONS", "sip:sbc.test", via="SIP/2.0/UDP x;branch=z9hG4bKo2"),
        1.0,
        source=SECOND,
    )
    assert not p.blocklist.blocked(FIRST, 1.0) and len(p.blocklist) == 1
    assert p.blocklist.blocked(SECOND, 1.0)
