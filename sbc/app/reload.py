# -*- test-case-name: tests.app.test_reload -*-
"""
What a reload (SIGHUP, the admin C{reload}, Kamailio's C{cfg.reload}) may change, key by
key.  Every key of the schema is either applied to the running sbc or named as needing a
restart; a key that needs a restart keeps its running value, so C{settings} and the
reply never claim what is not in force.

C{[core] advertise} is one of those: it names sbc in Via and Record-Route, counts as
"myself" and may be the media address, so it changes everywhere at once, at a restart,
never half-way.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

__all__ = ["RESTART", "split", "changed_keys"]

#: (section, key) -> why it needs a restart.
RESTART: dict[tuple[str, str], str] = {
    ("core", "listen"): "sockets are bound at start",
    ("core", "advertise"): "Via, Record-Route, myself and the media address change together",
    ("rr", "secret"): "Record-Route entries signed with the old secret would stop routing",
    ("rtp", "engine"): "the media engine is chosen at start",
    ("rtp", "port_min"): "the relay's port pool is built at start",
    ("rtp", "port_max"): "the relay's port pool is built at start",
    ("rtp", "media_address"): "the relay binds to it at start",
    ("rtp", "media_timeout"): "the media engine is built at start",
    ("rtp", "rtpengine_sock"): "the rtpengine client connects at start",
    ("rtp", "nortpproxy_str"): "the media engine is built at start",
    ("manhole", "listen"): "the SSH port is bound at start",
    ("manhole", "authorized_keys"): "the SSH checker is built at start",
    ("manhole", "host_key"): "the SSH host key is loaded at start",
    ("manhole", "metrics_listen"): "the metrics port is bound at start",
    ("nat_traversal", "keepalive_state_file"): "state is read from it at start",
}

#: Sections whose keys only apply while the keepalive engine runs (it starts with sbc).
KEEPALIVE_SECTIONS = ("nathelper", "nat_traversal")


def changed_keys(old: Any, new: Any) -> list[tuple[str, str]]:
    """Every (section, key) whose value differs between two L{Settings}."""
    out = []
    for section in fields(old):
        if section.name == "source":
            continue
        before, after = getattr(old, section.name), getattr(new, section.name)
        for key in fields(before):
            if getattr(before, key.name) != getattr(after, key.name):
                out.append((section.name, key.name))
    return out


def split(
    old: Any, new: Any, keepalive_running: bool
) -> tuple[Any, list[tuple[str, str]], list[tuple[str, str]]]:
    """
    Which changes apply live and which wait for a restart.

    @return: the settings to run with (C{new}, except that keys needing a restart keep
        their running value), the keys applied, the keys needing a restart.
    """
    applied, restart = [], []
    for section, key in changed_keys(old, new):
        if (section, key) in RESTART or (section in KEEPALIVE_SECTIONS and not keepalive_running):
            restart.append((section, key))
        else:
            applied.append((section, key))
    effective = new
    for section, key in restart:
        part = getattr(effective, section)
        part = replace(part, **{key: getattr(getattr(old, section), key)})
        effective = replace(effective, **{section: part})
    return effective, applied, restart


def why(section: str, key: str, keepalive_running: bool) -> str:
    """Why (section, key) needs a restart."""
    if (section, key) in RESTART:
        return RESTART[(section, key)]
    if section in KEEPALIVE_SECTIONS and not keepalive_running:
        return "keepalives were off at start"
    return ""


def name(section: str, key: str) -> str:
    """C{[section] key}, as the configuration file writes it."""
    return f"[{section}] {key}"
