"""Tests for L{sbc.core.registrar}: RFC 3261 §10.3 with time passed in."""

from __future__ import annotations

import pytest

from sbc.core.address import Address
from sbc.core.message import Request, parse
from sbc.core.registrar import KNOWN_USERS_MAX, Registrar, RegistrarSettings
from tests.helpers import request_bytes

SOURCE = Address("udp", "192.0.2.5", 5070)


def register(
    contacts: list[str], *, expires: int | None = None, cseq: int = 1, call_id: str = "reg-1"
) -> Request:
    headers = [("Contact", c) for c in contacts]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    data = request_bytes(
        method="REGISTER", uri="sip:sbc.test", headers=headers, cseq=cseq, call_id=call_id
    )
    data = data.replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@sbc.test>")
    m = parse(data)
    assert isinstance(m, Request)
    return m


def test_register_lookup_and_expiry() -> None:
    """A binding lives for its expires and is found under the To user."""
    r = Registrar()
    result = r.register(register(["<sip:alice@192.0.2.5:5070>"], expires=120), SOURCE, None, 0.0)
    assert result.status == 200
    assert result.headers == (("Contact", "<sip:alice@192.0.2.5:5070>;expires=120"),)
    assert [str(b.uri) for b in r.lookup("alice", 100.0) or []] == ["sip:alice@192.0.2.5:5070"]
    assert r.lookup("alice", 121.0) == []
    assert r.lookup("bob", 0.0) is None


def test_default_and_contact_expires() -> None:
    """Contact expires beats Expires, which beats default_expires."""
    r = Registrar(RegistrarSettings(default_expires=900))
    r.register(register(["<sip:a@h1>;expires=60", "<sip:a@h2>"], expires=300), SOURCE, None, 0.0)
    r.register(register(["<sip:a@h3>"], cseq=2), SOURCE, None, 0.0)
    left = {str(b.uri): b.expires_in(0.0) for b in r.lookup("alice", 0.0) or []}
    assert left == {"sip:a@h1": 60, "sip:a@h2": 300, "sip:a@h3": 900}


def test_423_below_min_expires() -> None:
    """Too short an interval: 423 with Min-Expires; nothing stored."""
    r = Registrar(RegistrarSettings(min_expires=60))
    result = r.register(register(["<sip:a@h1>"], expires=30), SOURCE, None, 0.0)
    assert result.status == 423 and result.headers == (("Min-Expires", "60"),)
    assert r.lookup("alice", 0.0) is None


def test_max_expires_clamps() -> None:
    """max_expires caps the granted interval."""
    r = Registrar(RegistrarSettings(max_expires=600))
    result = r.register(register(["<sip:a@h1>"], expires=7200), SOURCE, None, 0.0)
    assert result.headers == (("Contact", "<sip:a@h1>;expires=600"),)


def test_refresh_and_remove_one() -> None:
    """A refresh moves expiry; expires=0 removes that contact only."""
    r = Registrar()
    r.register(register(["<sip:a@h1>", "<sip:a@h2>"], expires=100), SOURCE, None, 0.0)
    r.register(register(["<sip:a@h1>"], expires=100, cseq=2), SOURCE, None, 50.0)
    assert {b.expires_in(60.0) for b in r.lookup("alice", 60.0) or []} == {40, 90}
    result = r.register(register(["<sip:a@h2>;expires=0"], cseq=3), SOURCE, None, 60.0)
    assert result.headers == (("Contact", "<sip:a@h1>;expires=90"),)


def test_star_removes_everything() -> None:
    """Contact: * with Expires: 0 removes all bindings; then the user is 480, not 404."""
    r = Registrar()
    r.register(register(["<sip:a@h1>", "<sip:a@h2>"], expires=100), SOURCE, None, 0.0)
    result = r.register(register(["*"], expires=0, cseq=2), SOURCE, None, 1.0)
    assert result.status == 200 and result.headers == ()
    assert r.lookup("alice", 1.0) == []


def test_star_needs_expires_zero() -> None:
    """Contact: * without Expires: 0 is a 400."""
    r = Registrar()
    assert r.register(register(["*"], expires=60), SOURCE, None, 0.0).status == 400
    assert r.register(register(["*"]), SOURCE, None, 0.0).status == 400


def test_out_of_order_cseq_fails() -> None:
    """Same Call-ID with a CSeq not higher than the stored one: refused."""
    r = Registrar()
    r.register(register(["<sip:a@h1>"], expires=100, cseq=5), SOURCE, None, 0.0)
    assert (
        r.register(register(["<sip:a@h1>"], expires=100, cseq=5), SOURCE, None, 1.0).status == 500
    )
    assert (
        r.register(
            register(["<sip:a@h1>"], expires=100, cseq=1, call_id="other"), SOURCE, None, 1.0
        ).status
        == 200
    )


def test_q_ordering_and_max_contacts() -> None:
    """Lookup returns highest q first; max_contacts refuses one too many."""
    r = Registrar(RegistrarSettings(max_contacts=2))
    r.register(register(["<sip:a@h1>;q=0.1", "<sip:a@h2>;q=0.9"], expires=100), SOURCE, None, 0.0)
    assert [str(b.uri) for b in r.lookup("alice", 0.0) or []] == ["sip:a@h2", "sip:a@h1"]
    assert (
        r.register(register(["<sip:a@h3>"], expires=100, cseq=2), SOURCE, None, 0.0).status == 503
    )


def test_query_without_contact_lists_bindings() -> None:
    """A REGISTER without Contact is a query: 200 with the current bindings."""
    r = Registrar()
    r.register(register(["<sip:a@h1>"], expires=100), SOURCE, None, 0.0)
    result = r.register(register([], cseq=2), SOURCE, None, 10.0)
    assert result.headers == (("Contact", "<sip:a@h1>;expires=90"),)


def test_expire_drops_old_bindings() -> None:
    """expire(now) forgets what has run out."""
    r = Registrar()
    r.register(register(["<sip:a@h1>"], expires=100), SOURCE, None, 0.0)
    assert r.expire(50.0) == 0 and len(r) == 1
    assert r.expire(100.0) == 1 and len(r) == 0


def test_defaults_bound_expires_and_contacts() -> None:
    """max_expires defaults to 3600 (Kamailio's registrar) and max_contacts to 10; 0 for
    either still means no bound."""
    settings = RegistrarSettings()
    assert (settings.max_expires, settings.max_contacts) == (3600, 10)
    r = Registrar()
    result = r.register(register(["<sip:a@h1>"], expires=86400), SOURCE, None, 0.0)
    assert result.headers == (("Contact", "<sip:a@h1>;expires=3600"),)
    many = [f"<sip:a@h{i}>" for i in range(11)]
    assert r.register(register(many, expires=60, cseq=2), SOURCE, None, 0.0).status == 503
    unbounded = Registrar(RegistrarSettings(max_expires=0, max_contacts=0))
    result = unbounded.register(register(many, expires=86400), SOURCE, None, 0.0)
    assert result.status == 200 and len(unbounded) == 11
    assert {b.expires_in(0.0) for b in unbounded.lookup("alice", 0.0) or []} == {86400}


def named(user: str, request: Request) -> Request:
    """C{request} with the To user replaced."""
    renamed = request.with_header("To", f"<sip:{user}@sbc.test>")
    assert isinstance(renamed, Request)
    return renamed


@pytest.mark.parametrize(
    "max_expires, how, checks",
    [
        # (max_expires, how the last binding went, [(now, lookup result)])
        (600, "expiry", [(59.0, 1), (60.0, []), (600.0, []), (659.0, []), (671.0, None)]),
        (0, "expiry", [(60.0, []), (3659.0, []), (3671.0, None)]),
        (600, "star", [(10.0, []), (608.0, []), (611.0, None)]),
        (600, "expires=0", [(10.0, []), (608.0, []), (611.0, None)]),
    ],
)
def test_users_are_remembered_for_a_while(
    max_expires: int, how: str, checks: list[tuple[float, object]]
) -> None:
    """After the last binding went, the user is 480 (an empty list) for max_expires
    seconds (3600 when unbounded), then 404 (None); expire() runs every 10 s as the
    proxy's housekeeping does."""
    r = Registrar(RegistrarSettings(max_expires=max_expires))
    r.register(register(["<sip:a@h1>"], expires=60), SOURCE, None, 0.0)
    if how == "star":
        r.register(register(["*"], expires=0, cseq=2), SOURCE, None, 9.0)
    elif how == "expires=0":
        r.register(register(["<sip:a@h1>"], expires=0, cseq=2), SOURCE, None, 9.0)
    now = 0.0
    for when, expected in checks:
        while now + 10.0 <= when:
            now += 10.0
            r.expire(now)
        found = r.lookup("alice", when)
        assert (len(found) if found else found) == expected, when
    assert r.remembered() == 0 and r.aors() == []


def test_restored_bindings_keep_their_user_known() -> None:
    """A binding read back from the state file makes its user known; once it expires the
    user is remembered like any other."""
    r = Registrar(RegistrarSettings(max_expires=600))
    r.register(register(["<sip:a@h1>"], expires=60), SOURCE, None, 0.0)
    [(aor, binding)] = r.all_bindings()
    fresh = Registrar(RegistrarSettings(max_expires=600))
    fresh.restore(aor, binding)
    assert len(fresh.lookup("alice", 30.0) or []) == 1
    fresh.expire(70.0)
    assert fresh.lookup("alice", 70.0) == [] and fresh.remembered() == 1
    fresh.expire(671.0)
    assert fresh.lookup("alice", 671.0) is None and fresh.remembered() == 0


def test_remembered_users_have_a_cap_oldest_first() -> None:
    """Beyond known_max users without bindings, the oldest are forgotten first."""
    r = Registrar(known_max=3)
    base = register([], cseq=1)
    for i, user in enumerate(["u0", "u1", "u2", "u3", "u4"]):
        assert r.register(named(user, base), SOURCE, None, float(i)).status == 200
    assert r.remembered() == 3
    assert [r.lookup(u, 5.0) for u in ["u0", "u1", "u2", "u3", "u4"]] == [None, None, [], [], []]


def test_many_users_leave_nothing_behind() -> None:
    """200 000 distinct users registering and expiring: after expiry the remembered users
    are capped at KNOWN_USERS_MAX, and after the retention the tables are empty."""
    r = Registrar()
    base = register(["<sip:a@192.0.2.5:5070>"], expires=60)
    for i in range(200_000):
        assert r.register(named(f"u{i}", base), SOURCE, None, 0.0).status == 200
    assert len(r) == 200_000
    assert r.expire(60.0) == 200_000
    assert len(r) == 0 and r.aors() == [] and r.remembered() == KNOWN_USERS_MAX
    assert r.lookup("u0", 60.0) is None and r.lookup("u199999", 60.0) == []
    r.expire(60.0 + r.retention)
    assert r.remembered() == 0 and r._bindings == {} and not r._known
    assert r.lookup("u199999", 60.0 + r.retention) is None


WS_FLOW = Address("wss", "198.51.100.7", 40123)
OUTBOUND = '<sip:carol@x.invalid;transport=ws;ob>;reg-id=1;+sip.instance="<urn:uuid:1>"'


def test_bindings_go_with_their_websocket_flow() -> None:
    """A closed WebSocket flow takes its plain bindings with it (480 for the user); an
    RFC 5626 outbound binding stays for its client's next flow (430 meanwhile)."""
    r = Registrar()
    r.register(register(["<sip:alice@x.invalid;transport=ws>"], expires=600), WS_FLOW, None, 0)
    r.register(register(["<sip:alice@192.0.2.5:5070>"], expires=600, cseq=2), SOURCE, None, 0)
    assert r.flow_lost(WS_FLOW, 1.0) == (1, 0)
    assert [str(b.uri) for b in r.lookup("alice", 2.0) or []] == ["sip:alice@192.0.2.5:5070"]
    r.register(register([OUTBOUND], expires=600, call_id="reg-2"), WS_FLOW, None, 0)
    assert r.flow_lost(WS_FLOW, 1.0) == (0, 1)
    assert len(r.lookup("alice", 2.0) or []) == 2
    assert r.flow_lost(SOURCE, 1.0) == (1, 0)
    assert len(r.lookup("alice", 2.0) or []) == 1


def test_outbound_registration_is_answered_with_require_outbound() -> None:
    """RFC 5626 §6: reg-id, +sip.instance and Supported: outbound get Require: outbound;
    without Supported: outbound, no Require."""
    r = Registrar()
    request = register([OUTBOUND], expires=600)
    assert ("Require", "outbound") not in r.register(request, WS_FLOW, None, 0).headers
    supported = request.with_header("Supported", "path, outbound")
    assert isinstance(supported, Request)
    result = r.register(supported.with_header("CSeq", "2 REGISTER"), WS_FLOW, None, 0)  # type: ignore[arg-type]
    assert ("Require", "outbound") in result.headers
