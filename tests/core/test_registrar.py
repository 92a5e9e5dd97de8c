"""Tests for L{sbc.core.registrar}: RFC 3261 §10.3 with time passed in."""

from __future__ import annotations

from sbc.core.address import Address
from sbc.core.message import Request, parse
from sbc.core.registrar import Registrar, RegistrarSettings
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
