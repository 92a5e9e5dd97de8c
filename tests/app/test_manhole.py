"""Tests for L{sbc.app.manhole} and the [manhole] configuration."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from twisted.internet.testing import MemoryReactorClock

from sbc.app.config import ConfigError, defaults, endpoint_is_loopback, load
from sbc.app.manhole import AdminCommands, AdminError, load_or_create_host_key
from sbc.app.service import build_service


def commands() -> AdminCommands:
    return AdminCommands(build_service(defaults(), MemoryReactorClock()))


def test_run_parses_the_scriptable_forms() -> None:
    """name, name(), name arg and name(arg) all work; unknown names are refused."""
    c = commands()
    assert c.run("stats")["server_transactions"] == 0
    assert c.run(" stats() ") == c.run("stats")
    assert c.run("registrations") == [] and c.run("dialogs()") == []
    assert "stats: Every counter and gauge, Kamailio's names first-class." in c.run("help")
    with pytest.raises(AdminError):
        c.run("__import__('os')")
    with pytest.raises(AdminError, match="NATping disabled"):
        c.run("enable_ping 1")
    json.dumps(c.run("settings"))


@pytest.mark.parametrize(
    "description, loopback",
    [
        ("tcp:2222:interface=127.0.0.1", True),
        ("tcp6:2222:interface=\\:\\:1", True),
        ("tcp:2222", False),
        ("tcp:2222:interface=0.0.0.0", False),
        ("unix:/run/sbc", True),
    ],
)
def test_loopback_detection(description: str, loopback: bool) -> None:
    """What counts as loopback for the manhole's listen address."""
    assert endpoint_is_loopback(description) is loopback


def test_public_manhole_without_keys_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A non-loopback manhole needs authorized_keys."""
    path = tmp_path / "sbc.ini"
    path.write_text("[manhole]\nlisten = tcp:2222:interface=0.0.0.0\n")
    with pytest.raises(ConfigError, match=r"sbc.ini:2: \[manhole\] listen: expected a loopback"):
        load(str(path))


def test_no_manhole_without_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without authorized_keys the manhole is not started at all."""
    service = build_service(defaults(), MemoryReactorClock())
    assert "manhole" not in [s.name for s in service]


def test_manhole_and_metrics_services(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With keys, the manhole and the metrics endpoint are children of the service tree."""
    (tmp_path / "keys").write_text("")
    path = tmp_path / "sbc.ini"
    path.write_text(
        "[manhole]\nauthorized_keys = keys\nhost_key = host_key\n"
        "metrics_listen = tcp:9999:interface=127.0.0.1\n"
    )
    service = build_service(load(str(path)), MemoryReactorClock())
    names = [s.name for s in service]
    assert "manhole" in names and "metrics" in names
    assert (tmp_path / "host_key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_host_key(str(tmp_path / "host_key")).isPublic() is False


def test_json_log_observer() -> None:
    """The --logger factory returns an observer."""
    from sbc.app.logjson import observer

    assert callable(observer())


def test_blocklist_commands() -> None:
    """blocklist_add / blocklist_view / blocklist_delete_all (Kamailio dst_blocklist.add/view)."""
    c = commands()
    assert c.run("blocklist_add 192.0.2.9 5060 0") == {"blocked": "any:192.0.2.9:5060"}
    [entry] = c.run("blocklist_view")
    assert entry["host"] == "192.0.2.9" and entry["transport"] == "any"
    assert entry["reasons"] == ["admin"] and 0 < entry["expires"] <= 60
    for bad in ("blocklist_add example.com 5060", "blocklist_add 192.0.2.9 5060 9"):
        with pytest.raises(AdminError):
            c.run(bad)
    c.run("blocklist_delete_all")
    assert c.run("blocklist_view") == []
    json.dumps(c.run("help"))


def test_rtp_sessions_command() -> None:
    """rtp_sessions lists the relay's calls (none yet); with engine = off it says so."""
    assert commands().run("rtp_sessions") == []
    settings = defaults()
    off = AdminCommands(
        build_service(
            replace(settings, rtp=replace(settings.rtp, engine="off")), MemoryReactorClock()
        )
    )
    with pytest.raises(AdminError, match="engine = off"):
        off.run("rtp_sessions")


@pytest.mark.parametrize(
    "code, errors",
    [
        (11, []),  # SSH_DISCONNECT_BY_APPLICATION: the end of every `ssh host command`
        (2, [2]),  # SSH_DISCONNECT_PROTOCOL_ERROR: still an error
        (3, [3]),  # SSH_DISCONNECT_KEY_EXCHANGE_FAILED
    ],
)
def test_normal_client_disconnect_is_not_an_error(tmp_path, code: int, errors: list) -> None:  # type: ignore[no-untyped-def]
    """A client's SSH_MSG_DISCONNECT with reason 11 is logged below error level; other
    reasons stay errors (RFC 4253 §11.1)."""
    from twisted.internet.address import IPv4Address
    from twisted.logger import LogLevel, globalLogPublisher

    from sbc.app.manhole import manhole_factory

    (tmp_path / "keys").write_text("")
    factory = manhole_factory(commands(), str(tmp_path / "keys"), str(tmp_path / "host_key"))
    factory.doStart()
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    factory.doStop()
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        protocol.receiveError(code, b"disconnected by user")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e.get("code") for e in events if e["log_level"] >= LogLevel.error] == errors
