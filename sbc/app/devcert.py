# -*- test-case-name: tests.app.test_devcert -*-
"""
Throw-away TLS material for development and tests: a private CA and a server certificate
signed by it, written as PEM files.  Nothing here is meant for production; no private key is
ever committed, they are made at run time.

    python -m sbc.app.devcert var/tls
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["make_certificates"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: str, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _leaf(
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    common_name: str,
    names: list[x509.GeneralName],
    now: datetime.datetime,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for C{names}, signed by C{issuer} (self-signed without one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def make_certificates(folder: str, hostname: str = "sbc.test", days: int = 30) -> dict[str, str]:
    """
    Write into C{folder}: C{ca.pem}; C{server.pem}/C{server.key} naming C{hostname},
    localhost, 127.0.0.1 and ::1; C{client.pem}/C{client.key} signed by the same CA (for
    client-certificate checks); C{other.pem}/C{other.key} naming only other.test (a server
    with the wrong identity); C{selfsigned.pem}/C{selfsigned.key} (a client nobody signed).

    @return: paths by role (C{ca}, C{certificate}, C{private_key}, C{client_certificate},
        C{client_key}, C{other_certificate}, C{other_key}, C{selfsigned_certificate},
        C{selfsigned_key}).
    """
    os.makedirs(folder, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("sbc throw-away CA"))
        .issuer_name(_name("sbc throw-away CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    pem = serialization.Encoding.PEM
    paths = {"ca": os.path.join(folder, "ca.pem")}
    _write(paths["ca"], ca.public_bytes(pem))
    for role, issuer, issuer_key, cn, names in (
        ("", ca, ca_key, hostname, server_names),
        ("client_", ca, ca_key, "sbc-test-client", [x509.DNSName("client.sbc.test")]),
        ("other_", ca, ca_key, "other.test", [x509.DNSName("other.test")]),
        ("selfsigned_", None, None, "nobody", [x509.DNSName("nobody.test")]),
    ):
        cert, key = _leaf(issuer, issuer_key, cn, names, now, days)
        stem = {"": "server", "client_": "client", "other_": "other"}.get(role, "selfsigned")
        paths[f"{role}certificate"] = os.path.join(folder, f"{stem}.pem")
        paths[f"{role}{'private_' if not role else ''}key"] = os.path.join(folder, f"{stem}.key")
        _write(paths[f"{role}certificate"], cert.public_bytes(pem))
        _write(
            paths[f"{role}{'private_' if not role else ''}key"],
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            private=True,
        )
    return paths


def main(argv: list[str]) -> int:
    """Command line: C{python -m sbc.app.devcert FOLDER} (no-op if FOLDER has them)."""
    if len(argv) != 2:
        sys.stderr.write("usage: python -m sbc.app.devcert FOLDER\n")
        return 2
    folder = argv[1]
    if all(os.path.exists(os.path.join(folder, n)) for n in ("ca.pem", "server.pem", "server.key")):
        return 0
    make_certificates(folder)
    print(f"throw-away TLS certificate written to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
