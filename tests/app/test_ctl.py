"""Tests for L{sbc.app.ctl} (sbcctl's output) and the Kamailio-named aliases of the admin
commands."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from sbc.app.config import defaults
from sbc.app.ctl import manhole_port, table
from sbc.app.manhole import AdminCommands, AdminError
from sbc.app.service import build_service


def test_table_of_records_and_of_a_mapping() -> None:
    """Records become aligned columns (union of their keys); a mapping name/value lines."""
    text = table([{"aor": "alice", "expires": 300}, {"aor": "bob", "q": 1.0}])
    assert text.splitlines() == [
        "aor    expires  q",
        "alice  300",
        "bob             1.0",
    ]
    assert table({"rcv_requests": 3, "dialogs": 0}) == "rcv_requests  3\ndialogs       0"
    assert table([]) == "" and table({"path": ["a", "b"]}) == 'path  ["a","b"]'


def test_port_from_the_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sbc.ini"
    path.write_text("[manhole]\nlisten = tcp:2299:interface=127.0.0.1\n")
    assert manhole_port(str(path)) == 2299 and manhole_port(None) == 2222


def test_kamailio_aliases() -> None:
    """ul.dump, dlg.list, stats.get_statistics all, tls.reload, siptrace.status."""
    commands = AdminCommands(build_service(defaults(), MemoryReactorClock()))
    assert commands.run("ul.dump") == commands.run("registrations") == []
    assert commands.run("dlg.list") == []
    assert commands.run("stats.get_statistics all") == commands.run("stats")
    assert commands.run("tls.reload") == {"reloaded": False, "reason": "no tls listener"}
    assert commands.run("siptrace.status")["trace_on"] is True
    assert commands.run("siptrace.status off")["trace_on"] is False
    with pytest.raises(AdminError):
        commands.run("ul.rm alice")
