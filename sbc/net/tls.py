# -*- test-case-name: tests.net.test_tls -*-
"""
TLS server contexts from C{[tls]} settings (Kamailio tls module names): certificate chain,
private key, minimum version (never below TLS 1.2), optional client-certificate checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.ssl import TLSVersion

__all__ = ["TlsSettings", "TLS_METHODS", "server_options", "read_pem_certificates"]

#: C{tls_method} values accepted: minimum version, and maximum when pinned to one version.
TLS_METHODS: dict[str, tuple[TLSVersion, Optional[TLSVersion]]] = {
    "TLSv1.2+": (TLSVersion.TLSv1_2, None),
    "TLSv1.3+": (TLSVersion.TLSv1_3, None),
    "TLSv1.2": (TLSVersion.TLSv1_2, TLSVersion.TLSv1_2),
    "TLSv1.3": (TLSVersion.TLSv1_3, TLSVersion.TLSv1_3),
}


@dataclass(frozen=True)
class TlsSettings:
    """The C{[tls]} section."""

    certificate: Optional[str] = None
    private_key: Optional[str] = None
    ca_list: Optional[str] = None
    verify_certificate: bool = False
    require_certificate: bool = False
    tls_method: str = "TLSv1.2+"
    cipher_list: str = ""


def read_pem_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate in PEM file C{path}, in file order.

    @raise ValueError: the file holds no certificate or one does not load."""
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def server_options(settings: TlsSettings, alpn: tuple[bytes, ...] = ()) -> ssl.CertificateOptions:
    """Build the server-side context factory; C{alpn}: the protocols it agrees to by ALPN
    (RFC 7301; C{http/1.1} for WSS: browsers offer it and Twisted's ALPN callback fails
    the handshake with internal_error when nothing overlaps).

    @raise ValueError: a file is missing or does not hold what it should.
    @raise OSError: a file cannot be read."""
    if not settings.certificate or not settings.private_key:
        raise ValueError("certificate and private_key are both needed")
    chain = read_pem_certificates(settings.certificate)
    with open(settings.private_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    minimum, maximum = TLS_METHODS[settings.tls_method]
    options: dict = {
        "privateKey": key,
        "certificate": chain[0],
        "extraCertChain": chain[1:],
        "raiseMinimumTo": minimum,
    }
    if maximum is not None:
        options["lowerMaximumSecurityTo"] = maximum
    if alpn:
        options["acceptableProtocols"] = list(alpn)
    if settings.cipher_list:
        options["acceptableCiphers"] = ssl.AcceptableCiphers.fromOpenSSLCipherString(
            settings.cipher_list
        )
    if settings.verify_certificate or settings.require_certificate:
        if not settings.ca_list:
            raise ValueError("ca_list is needed to verify client certificates")
        options["verify"] = True
        # Twisted's trust store still wants pyOpenSSL certificates.
        options["caCerts"] = [
            crypto.X509.from_cryptography(c) for c in read_pem_certificates(settings.ca_list)
        ]
        options["requireCertificate"] = settings.require_certificate
    context_factory = ssl.CertificateOptions(**options)
    # Build the context now, so a key that does not match the certificate stops start-up
    # instead of failing the first handshake.
    context_factory.getContext()
    return context_factory
