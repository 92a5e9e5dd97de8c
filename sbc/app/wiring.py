# -*- test-case-name: tests.app.test_service -*-
"""
From settings to the parts that use them: each function maps INI sections onto a core or
adapter object's own settings (or builds the object).  Used at start and by a reload.
"""

from __future__ import annotations

import os
import socket
from typing import Optional

from OpenSSL import crypto
from twisted.internet import ssl

from sbc.app.config import Settings, media_address
from sbc.app.routescript import load_script
from sbc.core import routes_default
from sbc.core.address import Address
from sbc.core.auth import AuthSettings, DigestAuth, parse_credentials
from sbc.core.keepalive import KeepaliveSettings
from sbc.core.nat import EXTRA_RANGES, NatPolicy, PrivateRanges
from sbc.core.proxy import ProxySettings
from sbc.core.relaypolicy import RouteSigner
from sbc.core.transaction import Timers
from sbc.net.engine import SipEngine
from sbc.net.log import logger
from sbc.net.media import MediaBackend
from sbc.net.relay import RtpRelay
from sbc.net.resolver import ResolverSettings
from sbc.net.rtpengine import RtpengineClient
from sbc.net.tls import read_pem_certificates

__all__ = [
    "proxy_settings",
    "route_signer",
    "media_backend",
    "route_script",
    "resolver_settings",
    "nat_policy",
    "keepalive_settings",
    "client_tls_options",
    "digest_auth",
]

log = logger(__name__)


def proxy_settings(settings: Settings) -> ProxySettings:
    """Map the [tm], [rr] and [core] keys onto the proxy core's settings (ms -> s)."""
    tm = settings.tm
    timers = Timers(
        t1=tm.retr_timer1 / 1000,
        t2=tm.retr_timer2 / 1000,
        fr_timer=tm.fr_timer / 1000,
        fr_inv_timer=tm.fr_inv_timer / 1000,
        restart_fr_on_each_reply=tm.restart_fr_on_each_reply,
        wait=tm.wt_timer / 1000,
    )
    return ProxySettings(
        timers=timers,
        max_inv_lifetime=tm.max_inv_lifetime / 1000,
        max_noninv_lifetime=tm.max_noninv_lifetime / 1000,
        remap_503_500=tm.remap_503_500,
        enable_double_rr=settings.rr.enable_double_rr,
        append_fromtag=settings.rr.append_fromtag,
        outbound_proxy=settings.core.outbound_proxy,
        advertise=settings.core.advertise,
        nat=nat_policy(settings),
        registrar_uri=settings.registrar.registrar_uri,
        rtp_policy=settings.rtp.rtp_policy,
        use_dns_failover=settings.dns.use_dns_failover,
        failover_reply_codes=tm.failover_reply_codes,
        blocklist=settings.blocklist,
        trusted=settings.permissions.trusted,
        allow_relay=settings.core.allow_relay,
        dialog=settings.dialog,
    )


def route_signer(settings: Settings) -> RouteSigner:
    """Signs our Record-Route/Path entries with [rr] secret, or a random secret (then
    in-dialog requests of dialogs set up before a restart are routed only for trusted
    peers)."""
    secret = settings.rr.secret.encode() if settings.rr.secret else os.urandom(32)
    return RouteSigner(secret)


def media_backend(settings: Settings, reactor, engine: SipEngine) -> Optional[MediaBackend]:  # type: ignore[no-untyped-def]
    """The [rtp] engine: the built-in relay, an rtpengine client, or None (off)."""
    rtp = settings.rtp
    if rtp.engine == "relay":
        address = media_address(settings)
        return RtpRelay(
            address,
            rtp.port_min,
            rtp.port_max,
            rtp.media_timeout,
            reactor=reactor,
            stats=engine.stats,
            on_timeout=engine.media_timed_out,
            nortpproxy=rtp.nortpproxy_str,
            private=nat_policy(settings).ranges,
            # Bound to the SDP address when it is ours, so that replies leave from the very
            # address the phones send to (a multi-homed host would pick another source).
            bind_host=address if _is_local_address(address) else None,
        )
    if rtp.engine == "rtpengine":
        assert rtp.rtpengine_sock is not None
        return RtpengineClient(
            str(rtp.rtpengine_sock),
            reactor=reactor,
            stats=engine.stats,
            on_timeout=engine.media_timed_out,
        )
    return None


def _is_local_address(host: str) -> bool:
    """Can sbc bind to C{host} (is it one of this host's addresses)?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def route_script(settings: Settings):  # type: ignore[no-untyped-def]
    """The routing script: [core] route_script, or sbc's own policy (the same API)."""
    if settings.core.route_script:
        return load_script(settings.core.route_script)
    return routes_default


def resolver_settings(settings: Settings) -> ResolverSettings:
    """Map [dns] onto the resolver's settings."""
    dns = settings.dns
    return ResolverSettings(
        use_dns_cache=dns.use_dns_cache,
        dns_srv_lb=dns.dns_srv_lb,
        dns_try_naptr=dns.dns_try_naptr,
        dns_try_ipv6=dns.dns_try_ipv6,
        dns_naptr_ignore_rfc=dns.dns_naptr_ignore_rfc,
        dns_cache_min_ttl=dns.dns_cache_min_ttl,
        dns_cache_max_ttl=dns.dns_cache_max_ttl,
        dns_cache_negative_ttl=dns.dns_cache_negative_ttl,
        nameservers=dns.nameservers,
        hosts_file=dns.hosts_file or "",
        timeout=(dns.dns_retr_time,) * dns.dns_retr_no,
    )


def nat_policy(settings: Settings) -> NatPolicy:
    """Map [nat] onto the core's NAT policy (nat_addr_mode 1 adds 192.0.0.0/24)."""
    nat = settings.nat
    extra = EXTRA_RANGES if nat.nat_addr_mode == 1 else ()
    return NatPolicy(
        nat_uac_test=nat.nat_uac_test,
        contact_fix=nat.contact_fix,
        register_fix=nat.register_fix,
        force_rport=nat.force_rport,
        ranges=PrivateRanges.of(nat.private_ranges + extra),
        fix_nated_sdp=nat.fix_nated_sdp,
    )


def keepalive_settings(settings: Settings) -> KeepaliveSettings:
    """Map [nathelper] or [nat_traversal] onto the keepalive engine (one style at a time)."""
    nathelper, traversal = settings.nathelper, settings.nat_traversal
    if nathelper.natping_interval:
        method = (
            nathelper.sipping_method
            if nathelper.natping_method == "sip"
            else (nathelper.natping_method)
        )
        return KeepaliveSettings(
            style="nathelper",
            interval=nathelper.natping_interval,
            method=method,
            from_uri=nathelper.sipping_from,
            ping_nated_only=nathelper.ping_nated_only,
            keepalive_timeout=nathelper.keepalive_timeout,
        )
    if traversal.keepalive_interval:
        interval = traversal.keepalive_interval
        if interval < 10:
            log.warn(
                "[nat_traversal] keepalive_interval {value} raised to 10 (minimum)", value=interval
            )
            interval = 10
        return KeepaliveSettings(
            style="nat_traversal",
            interval=interval,
            method=traversal.keepalive_method,
            from_uri=traversal.keepalive_from,
            extra_headers=traversal.keepalive_extra_headers,
            contact_match=traversal.contact_match,
        )
    return KeepaliveSettings()


def client_tls_options(settings: Settings, names: Optional[dict] = None):  # type: ignore[no-untyped-def]
    """Outgoing TLS: for each peer a context that verifies the peer's certificate
    against [tls] ca_list (or the system's roots) and its identity with service_identity
    (RFC 5922: the domain the next hop was looked up by, from C{names}; an IP-literal next
    hop must be named in the certificate), TLS 1.2 at least.  A peer that fails is never
    talked to: the connection dies and its branches get 503."""
    tls = settings.tls
    if tls.ca_list:
        trust = ssl.trustRootFromCertificates(
            [
                ssl.Certificate(crypto.X509.from_cryptography(c))
                for c in read_pem_certificates(tls.ca_list)
            ]
        )
    else:
        trust = ssl.platformTrust()

    def options(peer: Address):  # type: ignore[no-untyped-def]
        identity = (names or {}).get(peer, peer.host)
        return ssl.optionsForClientTLS(identity, trustRoot=trust)

    return options


def digest_auth(settings: AuthSettings) -> DigestAuth:
    """Digest authentication from [auth]: credentials read now (bad lines logged by number,
    never with their content), nonces signed with a random per-process secret."""
    assert settings.credentials_file is not None
    with open(settings.credentials_file, encoding="utf-8") as f:
        credentials, problems = parse_credentials(f.read(), settings.realm)
    for problem in problems:
        log.warn("{path}: {problem} (skipped)", path=settings.credentials_file, problem=problem)
    log.info(
        "digest authentication for realm {realm}: {count} user(s)",
        realm=settings.realm,
        count=len(credentials),
    )
    return DigestAuth(settings, credentials, os.urandom(32))
