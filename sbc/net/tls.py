# -*- test-case-name: tests.net.test_tls -*-
"""
TLS server contexts from C{[tls]} settings (Kamailio tls module names): certificate chain,
private key, minimum version (never below TLS 1.2), optional client-certificate checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.ssl import TLSVersion

__all__ = [
    "TlsSettings",
    "TLS_METHODS",
    "server_options",
    "read_pem_certificates",
    "ReloadableServerOptions",
]

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


def _fingerprint(path: Optional[str]) -> Optional[tuple[int, int, int]]:
    """What tells a changed file: (mtime in ns, size, inode); None when it cannot be read."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ReloadableServerOptions:
    """
    The TLS server context of every listener, replaceable while they run (Kamailio's
    C{tls.reload}): Twisted asks C{getContext()} for each new connection, so a new
    certificate serves the next handshake while established connections keep theirs.
    A certificate that does not load keeps the old context.

    @ivar settings: the C{[tls]} settings of the context in use.
    """

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self._current = server_options(settings)
        self._seen = self._files(settings)
        #: The same certificate agreeing to ALPN protocols (built when first asked for).
        self._alpn: dict[tuple[bytes, ...], ssl.CertificateOptions] = {}

    def for_alpn(self, alpn: tuple[bytes, ...]) -> _AlpnServerOptions:
        """The context for listeners that agree to C{alpn} (RFC 7301), reloaded with
        this one."""
        return _AlpnServerOptions(self, alpn)

    def context_for(self, alpn: tuple[bytes, ...]):  # type: ignore[no-untyped-def]
        """A new connection's context with C{alpn}."""
        options = self._alpn.get(alpn)
        if options is None:
            options = self._alpn[alpn] = server_options(self.settings, alpn)
        return options.getContext()

    @staticmethod
    def _files(settings: TlsSettings) -> tuple[object, ...]:
        return tuple(
            _fingerprint(p) for p in (settings.certificate, settings.private_key, settings.ca_list)
        )

    def getContext(self):  # type: ignore[no-untyped-def]  # noqa: N802 - Twisted's name
        """The context for one new connection."""
        return self._current.getContext()

    def reload(self, settings: Optional[TlsSettings] = None) -> Optional[str]:
        """Build a context from C{settings} (default: the same files, read again) and use
        it for new handshakes.

        @return: None when it took effect, else why not (the old context stays)."""
        settings = settings if settings is not None else self.settings
        seen = self._files(settings)
        try:
            options = server_options(settings)
        except Exception as error:  # ValueError, OSError or OpenSSL.SSL.Error
            self._seen = seen  # do not retry a broken file until it changes again
            text = str(error) or type(error).__name__
            return text.splitlines()[0][:200]
        self._current, self.settings, self._seen = options, settings, seen
        self._alpn = {}  # rebuilt from the new files when next asked for
        return None

    def files_changed(self) -> bool:
        """Have the certificate, key or CA files changed since they were last read?"""
        return self._files(self.settings) != self._seen


class _AlpnServerOptions:
    """A view of L{ReloadableServerOptions} agreeing to ALPN protocols (WSS listeners)."""

    def __init__(self, parent: ReloadableServerOptions, alpn: tuple[bytes, ...]) -> None:
        self.parent = parent
        self.alpn = alpn

    def getContext(self):  # type: ignore[no-untyped-def]  # noqa: N802 - Twisted's name
        return self.parent.context_for(self.alpn)
