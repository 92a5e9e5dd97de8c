"""Tests for L{sbc.app.config}: typed settings, defaults, one-line errors."""

from __future__ import annotations

import os
import textwrap

import pytest

from sbc.app.config import ConfigError, defaults, load
from sbc.app.devcert import make_certificates
from sbc.core.address import Address
from tests.exampleconfig import example_copy


def write(tmp_path, text: str) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "sbc.ini"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_listen_only_is_a_complete_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A file with only [core] listen is valid; everything else takes its default."""
    settings = load(write(tmp_path, "[core]\nlisten = udp:127.0.0.1:5070, tcp:[::1]:5070\n"))
    assert settings.core.listen == (Address("udp", "127.0.0.1", 5070), Address("tcp", "::1", 5070))
    assert settings.core.tcp_connection_lifetime == defaults().core.tcp_connection_lifetime
    assert settings.tls == defaults().tls


def test_dns_blocklist_rtp_values(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The [dns], [blocklist], [rtp] and failover keys reach their settings."""
    settings = load(
        write(
            tmp_path,
            "[tm]\nfailover_reply_codes = code=403;class=5\n"
            "[dns]\nnameservers = 127.0.0.1:5353 [::1]\n"
            "[blocklist]\nblst_methods_add = INVITE REGISTER\n"
            "[rtp]\nengine = rtpengine\nrtpengine_sock = udp:127.0.0.1:2224\n",
        )
    )
    assert settings.tm.failover_reply_codes == frozenset({403, *range(500, 600)})
    assert settings.dns.nameservers == (("127.0.0.1", 5353), ("::1", 53))
    assert settings.blocklist.blst_methods_add == 33
    assert settings.rtp.rtpengine_sock == Address("udp", "127.0.0.1", 2224)


def test_registrar_defaults_are_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """[registrar] max_expires defaults to 3600 (Kamailio's registrar) and max_contacts to
    10; 0 in the file still means unbounded, and a long min_expires is fine with max 0."""
    assert (defaults().registrar.max_expires, defaults().registrar.max_contacts) == (3600, 10)
    settings = load(write(tmp_path, "[core]\nlisten = udp:127.0.0.1:5070\n"))
    assert (settings.registrar.max_expires, settings.registrar.max_contacts) == (3600, 10)
    settings = load(
        write(
            tmp_path,
            "[registrar]\nmax_expires = 0\nmax_contacts = 0\nmin_expires = 7200\n",
        )
    )
    assert (settings.registrar.max_expires, settings.registrar.max_contacts) == (0, 0)


def test_example_config_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """etc/sbc.ini is valid (copied, with throw-away certificates beside it in tmp_path)."""
    path, certs = example_copy(tmp_path)
    settings = load(path)
    assert os.path.samefile(settings.tls.certificate, certs["certificate"])
    assert "sbc.test" in settings.core.alias
    assert {a.transport for a in settings.core.listen} == {"udp", "tcp", "tls", "ws", "wss"}
    # A safe edge: authentication on, one trusted trunk, the relay closed.
    assert settings.auth.enabled and not settings.core.allow_relay
    assert settings.permissions.trusted.allows(Address("udp", "203.0.113.10", 5060))
    assert not settings.permissions.trusted.allows(Address("udp", "203.0.113.11", 5060))


def test_kamailio_spellings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Booleans, log levels and lists accept Kamailio's spellings."""
    certs = make_certificates(str(tmp_path / "tls"))
    settings = load(
        write(
            tmp_path,
            f"""
        [core]
        listen = udp:127.0.0.1:5060
        alias = Sbc.Test other.example
        advertise = 198.51.100.1:5060
        outbound_proxy = sip:core.example;lr
        log_level = 3
        [tls]
        certificate = {certs["certificate"]}
        private_key = tls/server.key
        verify_certificate = on
        require_certificate = 0
        ca_list = tls/ca.pem
        """,
        )
    )
    assert settings.core.alias == ("sbc.test", "other.example")
    assert settings.core.advertise == ("198.51.100.1", 5060)
    assert str(settings.core.outbound_proxy) == "sip:core.example;lr"
    assert settings.core.log_level == "debug"
    assert settings.tls.verify_certificate is True and settings.tls.require_certificate is False
    assert settings.tls.private_key == certs["private_key"]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[core]\nlisten = udp:1.2.3.4:99999\n",
            "sbc.ini:2: [core] listen: expected a port number 0..65535, got 'udp:1.2.3.4:99999'",
        ),
        (
            "[core]\nlisten = udp:127.0.0.1\n\nfoo = 1\n",
            "sbc.ini:4: [core] foo: expected one of listen, advertise, alias, outbound_proxy, "
            "max_message_size, log_level, tcp_connection_lifetime, max_headers, "
            "max_header_length, tcp_max_connections, tcp_max_connections_per_source, route_script, "
            "allow_relay, got an unknown key",
        ),
        (
            "[core]\nmax_message_size = 10\n",
            "sbc.ini:2: [core] max_message_size: expected an integer from 1024 to 1048576, "
            "got '10'",
        ),
        (
            "[tls]\nverify_certificate = maybe\n",
            "sbc.ini:2: [tls] verify_certificate: expected yes/no, on/off, true/false or 1/0, "
            "got 'maybe'",
        ),
        (
            "[tls]\ntls_method = TLSv1.0\n",
            "sbc.ini:2: [tls] tls_method: expected one of TLSv1.2+, TLSv1.3+, TLSv1.2, TLSv1.3 "
            "(TLS 1.2 or newer), got 'TLSv1.0'",
        ),
        (
            "[tls]\ncertificate = missing.pem\n",
            "sbc.ini:2: [tls] certificate: expected a readable file, got 'missing.pem'",
        ),
        (
            "[core]\nlisten = tls:127.0.0.1:5061\n",
            "sbc.ini:2: [core] listen: expected [tls] certificate and private_key for a tls "
            "or wss listener, got none",
        ),
        (
            "[core]\nlisten = wss:127.0.0.1:8443\n",
            "sbc.ini:2: [core] listen: expected [tls] certificate and private_key for a tls "
            "or wss listener, got none",
        ),
        (
            "[websocket]\nallowed_origins = example.com\n",
            "sbc.ini:2: [websocket] allowed_origins: expected origins like "
            "https://example.com[:port], got 'example.com'",
        ),
        (
            "[rtpengine]\nx = 1\n",
            "sbc.ini:1: [rtpengine]: expected a section among core, tls, tm, dns, rtp, blocklist, "
            "rr, permissions, dialog, registrar, nat, nathelper, nat_traversal, manhole, auth, "
            "pike, siptrace, acc, websocket, stun",
        ),
        (
            "[permissions]\ntrusted = udp:10.0.0.1 carrier.example\n",
            "sbc.ini:2: [permissions] trusted: expected proto:ip[/prefix][:port] (proto udp, "
            "tcp, tls or any; IPv6 in [ ]), got 'udp:10.0.0.1 carrier.example'",
        ),
        (
            "[rr]\nsecret = short\n",
            "sbc.ini:2: [rr] secret: expected at least 16 characters (empty: a random secret "
            "per start), got 'short'",
        ),
        (
            "[core]\nlisten = udp:127.0.0.1\nlisten = udp:127.0.0.2\n",
            "sbc.ini:3: [core] listen: expected each key once, got it twice",
        ),
        (
            "listen = udp:127.0.0.1\n",
            "sbc.ini:1: expected a [section] header, got 'listen = udp:127.0.0.1'",
        ),
        (
            "[core]\noutbound_proxy = tel:+1555\n",
            "sbc.ini:2: [core] outbound_proxy: expected a sip: or sips: URI, or nothing, "
            "got 'tel:+1555'",
        ),
        (
            "[core]\nadvertise = bad host\n",
            "sbc.ini:2: [core] advertise: expected host[:port] (IPv6 in brackets), got 'bad host'",
        ),
        (
            "[dns]\nnameservers = 127.0.0.1:5353 ns.example.com\n",
            "sbc.ini:2: [dns] nameservers: expected a list of ip[:port] (IPv6 in brackets), "
            "or nothing, got '127.0.0.1:5353 ns.example.com'",
        ),
        (
            "[tm]\nfailover_reply_codes = code=200\n",
            "sbc.ini:2: [tm] failover_reply_codes: expected code=NNN (300..699) and class=N "
            "(3..6) items joined by ';', got 'code=200'",
        ),
        (
            "[blocklist]\nblst_methods_add = INVITE FROB\n",
            "sbc.ini:2: [blocklist] blst_methods_add: expected a method bitmap (1 = INVITE) or "
            "a list of SIP methods, got 'INVITE FROB'",
        ),
        (
            "[tm]\nretr_timer1 = 800\nretr_timer2 = 600\n",
            "sbc.ini:3: [tm] retr_timer2: expected at least retr_timer1 (800), got 600",
        ),
        (
            "[dns]\ndns_cache_min_ttl = 60\ndns_cache_max_ttl = 30\n",
            "sbc.ini:3: [dns] dns_cache_max_ttl: expected at least dns_cache_min_ttl (60), got 30",
        ),
        (
            "[blocklist]\nblst_503_min_timeout = 90\nblst_503_max_timeout = 60\n",
            "sbc.ini:3: [blocklist] blst_503_max_timeout: expected at least "
            "blst_503_min_timeout (90), got 60",
        ),
        (
            "[registrar]\nmin_expires = 60\nmax_expires = 30\n",
            "sbc.ini:3: [registrar] max_expires: expected 0 or at least min_expires (60), got 30",
        ),
        (
            "[registrar]\nmin_expires = 7200\n",
            "sbc.ini:2: [registrar] min_expires: expected at most max_expires (3600, its "
            "default; set max_expires too), got 7200",
        ),
        (
            "[rtp]\nengine = rtpproxy\n",
            "sbc.ini:2: [rtp] engine: expected relay, rtpengine or off, got 'rtpproxy'",
        ),
        (
            "[rtp]\nport_min = 30000\nport_max = 30001\n",
            "sbc.ini:3: [rtp] port_max: expected at least port_min + 3 (30003, two RTP/RTCP "
            "pairs), got 30001",
        ),
        (
            "[core]\nlisten = udp:0.0.0.0:5060\n",
            "sbc.ini:2: [rtp] media_address: expected an IP address for SDP (the listen "
            "addresses are all wildcards and there is no [core] advertise), got none",
        ),
    ],
)
def test_errors_are_one_line_naming_file_line_section_key(
    tmp_path, text: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    """Every fault is one line: file:line: [section] key: expected ..., got ..."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{os.path.dirname(path)}/{message}"
    assert "\n" not in str(info.value)


def test_certificate_that_does_not_match_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A certificate and key that do not belong together stop start-up at the certificate line."""
    a = make_certificates(str(tmp_path / "a"))
    b = make_certificates(str(tmp_path / "b"))
    path = write(
        tmp_path,
        f"""
        [core]
        listen = tls:127.0.0.1:5061
        [tls]
        certificate = {a["certificate"]}
        private_key = {b["private_key"]}
        """,
    )
    with pytest.raises(ConfigError, match=r"sbc.ini:5: \[tls\] certificate: expected a PEM"):
        load(path)


def test_unreadable_file() -> None:
    """A missing file is one line too."""
    with pytest.raises(ConfigError, match="nope.ini: cannot read"):
        load("/nonexistent/nope.ini")
