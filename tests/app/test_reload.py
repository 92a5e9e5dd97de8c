"""
Tests for L{sbc.app.reload}: a walk over the whole configuration schema.  For every key a
file with another valid value is reloaded into a built service; the key is then either
in force in the running part that uses it (and named as changed) or named as needing a
restart and still running with its old value.  A key added to the schema without a
sample value here fails the walk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

import sbc.app.service as service_module
from sbc.app import reload as reload_keys
from sbc.app.config import _SCHEMA, load
from sbc.app.service import (
    SbcService,
    build_service,
    keepalive_settings,
    proxy_settings,
    resolver_settings,
)
from sbc.core import routes_default
from sbc.net import log as sbc_log
from tests.helpers import ROOT

TLS = os.path.join(ROOT, "var", "tls")

#: (section, key) -> the value to change to (other lines of its section may be needed
#: with it, given as a second element).
SAMPLES: dict[tuple[str, str], str] = {
    ("websocket", "allowed_origins"): "https://phone.example",
    ("websocket", "keepalive_mechanism"): "none",
    ("websocket", "keepalive_timeout"): "45",
    ("websocket", "handshake_timeout"): "7",
    ("dialog", "default_timeout"): "600",
    ("dialog", "dlg_keepalive_interval"): "30",
    ("core", "listen"): "udp:127.0.0.1:5999 tcp:127.0.0.1:5060 tls:127.0.0.1:5061",
    ("core", "advertise"): "203.0.113.7:5060",
    ("core", "alias"): "other.test",
    ("core", "outbound_proxy"): "sip:core.example.net",
    ("core", "max_message_size"): "4096",
    ("core", "log_level"): "debug",
    ("core", "tcp_connection_lifetime"): "33",
    ("core", "max_headers"): "99",
    ("core", "max_header_length"): "999",
    ("core", "tcp_max_connections"): "77",
    ("core", "tcp_max_connections_per_source"): "7",
    ("core", "route_script"): "routes.py",
    ("core", "allow_relay"): "yes",
    ("tls", "certificate"): f"{TLS}/other.pem",
    ("tls", "private_key"): f"{TLS}/other.key",
    ("tls", "ca_list"): f"{TLS}/server.pem",
    ("tls", "verify_certificate"): "yes",
    ("tls", "require_certificate"): "yes",
    ("tls", "tls_method"): "TLSv1.3+",
    ("tls", "cipher_list"): "ECDHE+AESGCM",
    ("tm", "fr_timer"): "5000",
    ("tm", "fr_inv_timer"): "9000",
    ("tm", "retr_timer1"): "250",
    ("tm", "retr_timer2"): "2000",
    ("tm", "max_inv_lifetime"): "100000",
    ("tm", "max_noninv_lifetime"): "20000",
    ("tm", "wt_timer"): "32000",
    ("tm", "restart_fr_on_each_reply"): "no",
    ("tm", "remap_503_500"): "no",
    ("tm", "failover_reply_codes"): "code=403",
    ("dns", "use_dns_cache"): "no",
    ("dns", "use_dns_failover"): "no",
    ("dns", "dns_srv_lb"): "no",
    ("dns", "dns_try_naptr"): "no",
    ("dns", "dns_try_ipv6"): "no",
    ("dns", "dns_naptr_ignore_rfc"): "no",
    ("dns", "dns_cache_min_ttl"): "5",
    ("dns", "dns_cache_max_ttl"): "600",
    ("dns", "dns_cache_negative_ttl"): "9",
    ("dns", "nameservers"): "127.0.0.1:5353",
    ("dns", "hosts_file"): "hosts",
    ("dns", "dns_retr_time"): "3",
    ("dns", "dns_retr_no"): "3",
    ("rtp", "engine"): "off",
    ("rtp", "rtp_policy"): "always",
    ("rtp", "port_min"): "31000",
    ("rtp", "port_max"): "39000",
    ("rtp", "media_address"): "127.0.0.2",
    ("rtp", "media_timeout"): "30",
    ("rtp", "rtpengine_sock"): "udp:127.0.0.1:2224",
    ("rtp", "nortpproxy_str"): "a=nortpproxy:yes",
    ("blocklist", "use_dst_blocklist"): "no",
    ("blocklist", "dst_blocklist_expire"): "99",
    ("blocklist", "blst_503"): "yes",
    ("blocklist", "blst_503_def_timeout"): "5",
    ("blocklist", "blst_503_min_timeout"): "2",
    ("blocklist", "blst_503_max_timeout"): "100",
    ("blocklist", "blst_methods_add"): "INVITE MESSAGE",
    ("rr", "enable_double_rr"): "2",
    ("rr", "append_fromtag"): "no",
    ("rr", "secret"): "a-secret-of-twenty-chars",
    ("permissions", "trusted"): "udp:192.0.2.0/24",
    ("registrar", "default_expires"): "600",
    ("registrar", "min_expires"): "30",
    ("registrar", "max_expires"): "7200",
    ("registrar", "max_contacts"): "3",
    ("registrar", "received_param"): "nat",
    ("registrar", "registrar_uri"): "sip:registrar.example.net",
    ("nat", "nat_uac_test"): "3",
    ("nat", "contact_fix"): "rewrite",
    ("nat", "register_fix"): "off",
    ("nat", "force_rport"): "no",
    ("nat", "private_ranges"): "10.0.0.0/8",
    ("nat", "nat_addr_mode"): "0",
    ("nat", "fix_nated_sdp"): "1",
    ("nathelper", "natping_interval"): "17",
    ("nathelper", "ping_nated_only"): "yes",
    ("nathelper", "natping_method"): "crlf",
    ("nathelper", "sipping_method"): "NOTIFY",
    ("nathelper", "sipping_from"): "sip:pinger@sbc.test",
    ("nathelper", "keepalive_timeout"): "60",
    ("nat_traversal", "keepalive_interval"): "45",
    ("nat_traversal", "keepalive_method"): "OPTIONS",
    ("nat_traversal", "keepalive_from"): "sip:ka@sbc.test",
    ("nat_traversal", "keepalive_extra_headers"): "X-Ka: 1",
    ("nat_traversal", "keepalive_state_file"): "state.json",
    ("nat_traversal", "contact_match"): "1",
    ("manhole", "listen"): "tcp:2299:interface=127.0.0.1",
    ("manhole", "authorized_keys"): "keys",
    ("manhole", "host_key"): "host_key",
    ("manhole", "metrics_listen"): "tcp:9299:interface=127.0.0.1",
    ("auth", "realm"): "other.test",
    ("auth", "credentials_file"): "credentials2",
    ("auth", "nonce_expire"): "60",
    ("pike", "sampling_time_unit"): "5",
    ("pike", "reqs_density_per_unit"): "100",
    ("pike", "remove_latency"): "60",
    ("siptrace", "duplicate_uri"): "sip:127.0.0.1:9061",
    ("siptrace", "hep_capture_id"): "7",
    ("siptrace", "trace_on"): "no",
    ("acc", "log_file"): "acc.json",
    ("acc", "db_url"): "postgresql://sbc@127.0.0.1:1/acc",
    ("acc", "db_table_acc"): "calls",
    ("stun", "stun_allow_stun"): "no",
    ("stun", "stun_allow_fp"): "no",
}

#: The file every walk step starts from: TLS, auth and one keepalive style on, so that
#: their keys have a running part to change.
BASE = {
    "core": [
        "listen = udp:127.0.0.1:5060 tcp:127.0.0.1:5060 tls:127.0.0.1:5061",
        "alias = sbc.test",
    ],
    "tls": [
        f"certificate = {TLS}/server.pem",
        f"private_key = {TLS}/server.key",
        f"ca_list = {TLS}/ca.pem",
    ],
    "auth": ["realm = sbc.test", "credentials_file = credentials"],
    "nathelper": ["natping_interval = 10"],
    "siptrace": ["duplicate_uri = udp:127.0.0.1:9060"],
}

Probe = Callable[[SbcService, Any], object]


def _proxy(service: SbcService, new: Any) -> object:
    return service.proxy.settings == proxy_settings(new)


#: section -> what is in force, compared before and after (must move when the key moves).
PROBES: dict[str, Probe] = {
    "tm": _proxy,
    "rr": _proxy,
    "nat": _proxy,
    "permissions": _proxy,
    "websocket": lambda s, new: (
        all(f.settings == new.websocket for f in s._websocket_factories.values())
        and s.settings.websocket == new.websocket
    ),
    "dialog": lambda s, new: (
        s.proxy.dialogs.settings == new.dialog and s.proxy.settings == proxy_settings(new)
    ),
    "rtp": _proxy,
    "dns": lambda s, new: (
        s.resolver.settings == resolver_settings(new) and s.proxy.settings == proxy_settings(new)
    ),
    "blocklist": lambda s, new: (
        s.proxy.blocklist.settings == new.blocklist and s.proxy.settings == proxy_settings(new)
    ),
    "registrar": lambda s, new: (
        s.registrar.settings == new.registrar and s.proxy.settings == proxy_settings(new)
    ),
    "nathelper": lambda s, new: s.proxy.keepalive.settings == keepalive_settings(new),
    "nat_traversal": lambda s, new: s.proxy.keepalive.settings == keepalive_settings(new),
    # the users of the realm in force, read from the file in force
    "auth": lambda s, new: (
        s.proxy.auth.settings == new.auth
        and sorted(s.proxy.auth.credentials)
        == (["bob"] if new.auth.credentials_file.endswith("2") else ["alice"])
    ),
    "pike": lambda s, new: s.engine.pike.settings == new.pike,
    "stun": lambda s, new: (
        (s.engine.stun_enabled, s.engine.stun_fingerprint)
        == (new.stun.stun_allow_stun, new.stun.stun_allow_fp)
    ),
    "tls": lambda s, new: s.tls_options().settings == new.tls,
    "siptrace": lambda s, new: s.hep.settings == new.siptrace,
    "acc": lambda s, new: s.acc.settings == new.acc,
}

CORE_PROBES: dict[str, Probe] = {
    "alias": lambda s, new: s.proxy.identity.domains == frozenset(new.core.alias),
    "outbound_proxy": _proxy,
    "allow_relay": _proxy,
    "max_message_size": lambda s, new: (
        s.engine.limits.max_message_size == new.core.max_message_size
    ),
    "max_headers": lambda s, new: s.engine.limits.max_headers == new.core.max_headers,
    "max_header_length": lambda s, new: (
        s.engine.limits.max_header_length == new.core.max_header_length
    ),
    "log_level": lambda s, new: (
        sbc_log._levels.logLevelForNamespace("sbc").name == new.core.log_level
    ),
    "tcp_connection_lifetime": lambda s, new: (
        s.stream_factory("tcp").lifetime == new.core.tcp_connection_lifetime
    ),
    "tcp_max_connections": lambda s, new: (
        s.stream_factory("tcp").max_connections == new.core.tcp_max_connections
    ),
    "tcp_max_connections_per_source": lambda s, new: (
        s.stream_factory("tcp").max_connections_per_source
        == new.core.tcp_max_connections_per_source
    ),
    "route_script": lambda s, new: (
        (s.proxy.router is not routes_default) == bool(new.core.route_script)
    ),
}

#: Companions a sample needs to be a valid file (the checks that involve several keys).
COMPANIONS: dict[tuple[str, str], list[str]] = {
    ("nathelper", "natping_method"): ["sipping_from = sip:pinger@sbc.test"],
    ("nathelper", "sipping_method"): ["natping_method = sip", "sipping_from = sip:p@sbc.test"],
    ("tls", "certificate"): [f"private_key = {TLS}/other.key"],
    ("tls", "private_key"): [f"certificate = {TLS}/other.pem"],
}


def config_text(section: str, key: str, value: str | None) -> str:
    sections = {name: list(lines) for name, lines in BASE.items()}
    if section == "nat_traversal":
        sections.pop("nathelper")  # one keepalive style at a time
        sections["nat_traversal"] = ["keepalive_interval = 20"]
    if value is not None:
        extra = [f"{key} = {value}", *COMPANIONS.get((section, key), [])]
        replaced = {line.split(" = ")[0] for line in extra}
        lines = [line for line in sections.get(section, []) if line.split(" = ")[0] not in replaced]
        sections[section] = lines + extra
    return "".join(
        f"[{name}]\n" + "".join(f"{line}\n" for line in lines) for name, lines in sections.items()
    )


def all_keys() -> list[tuple[str, str]]:
    return [(section, key) for section, (_, keys) in _SCHEMA.items() for key in keys]


def test_every_key_has_a_sample() -> None:
    """The walk covers the whole schema."""
    assert sorted(SAMPLES) == sorted(all_keys())


@pytest.mark.parametrize("section, key", all_keys(), ids=lambda v: str(v))
def test_reload_keeps_its_word(tmp_path, section: str, key: str) -> None:  # type: ignore[no-untyped-def]
    """Changing the key and reloading: it applies live (in force, named as changed) or is
    named as needing a restart (still running with the old value), never both, never
    silently."""
    for name, user in (("credentials", "alice"), ("credentials2", "bob")):
        (tmp_path / name).write_text(
            "".join(f"{user}:{realm}:MD5:{'0' * 32}\n" for realm in ("sbc.test", "other.test"))
        )
    (tmp_path / "routes.py").write_text("def request_route(msg):\n    msg.sl_send_reply(403)\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    (tmp_path / "keys").write_text("")
    path = tmp_path / "sbc.ini"
    path.write_text(config_text(section, key, None))
    service = build_service(load(str(path)), MemoryReactorClock())
    service.tls_options()
    old = service.settings
    path.write_text(config_text(section, key, SAMPLES[(section, key)]))
    new = load(str(path))
    assert getattr(getattr(new, section), key) != getattr(getattr(old, section), key)
    probe = CORE_PROBES.get(key) if section == "core" else PROBES.get(section)
    before = probe(service, new) if probe else None
    result = service.reload()
    name = reload_keys.name(section, key)
    assert result["reloaded"], result
    if (section, key) in reload_keys.RESTART:
        assert name in result["needs_restart"] and name not in result["changed"], result
        assert getattr(getattr(service.settings, section), key) == getattr(
            getattr(old, section), key
        )
        return
    assert name in result["changed"] and name not in result["needs_restart"], result
    assert getattr(getattr(service.settings, section), key) == getattr(getattr(new, section), key)
    assert probe is not None, f"no probe shows {name} in force"
    assert not before and probe(service, new), f"{name} is not in force after the reload"


def test_advertise_is_refused_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new advertise changes neither Via/Record-Route (the proxy's settings) nor
    "myself" until a restart."""
    path = tmp_path / "sbc.ini"
    path.write_text("[core]\nlisten = udp:127.0.0.1:5060\n")
    service = build_service(load(str(path)), MemoryReactorClock())
    path.write_text("[core]\nlisten = udp:127.0.0.1:5060\nadvertise = 203.0.113.7:5060\n")
    result = service.reload()
    assert result["needs_restart"] == ["[core] advertise"] and result["changed"] == []
    assert service.proxy.settings.advertise is None
    assert "203.0.113.7" not in service.proxy.identity.hosts
    assert service.effective_settings()["source"] == str(path)


def test_a_broken_certificate_keeps_the_old_one(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """[tls] naming a certificate that does not load: the running context stays, the key
    is named as not applied, with the reason."""
    path = tmp_path / "sbc.ini"
    path.write_text(
        "[core]\nlisten = tls:127.0.0.1:5061\n"
        f"[tls]\ncertificate = {TLS}/server.pem\nprivate_key = {TLS}/server.key\n"
    )
    service = build_service(load(str(path)), MemoryReactorClock())
    context = service.tls_options()
    running = context._current
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate\n")
    # load() refuses such a file itself; here it broke after load() checked it
    new = replace(service.settings, tls=replace(service.settings.tls, certificate=str(broken)))
    monkeypatch.setattr(service_module, "load", lambda source: new)
    result = service.reload()
    assert result["needs_restart"] == ["[tls] certificate"] and result["changed"] == []
    assert "kept the old certificate" in result["tls"]
    assert context._current is running
    assert service.settings.tls.certificate == f"{TLS}/server.pem"


def test_reload_keeps_outstanding_nonces_valid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Re-reading [auth] (new users) keeps the nonce secret: a challenge sent before the
    reload can still be answered after it."""
    (tmp_path / "credentials").write_text(f"alice:sbc.test:MD5:{'0' * 32}\n")
    path = tmp_path / "sbc.ini"
    path.write_text("[auth]\nrealm = sbc.test\ncredentials_file = credentials\n")
    service = build_service(load(str(path)), MemoryReactorClock())
    auth = service.proxy.auth
    secret = auth.secret
    (tmp_path / "credentials").write_text(
        f"alice:sbc.test:MD5:{'0' * 32}\nbob:sbc.test:MD5:{'1' * 32}\n"
    )
    assert service.reload()["reloaded"]
    assert service.proxy.auth is auth and auth.secret == secret
    assert sorted(auth.credentials) == ["alice", "bob"]
