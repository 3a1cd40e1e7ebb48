"""A development TLS certificate for this machine: `python -m hub.devcert DIR`.

When DIR holds no certificate, makes a small certificate authority (`DIR/ca.pem`) and a
certificate for localhost, 127.0.0.1 and ::1 signed by it (`DIR/fullchain.pem`, with its
key in `DIR/privkey.pem`, readable by its owner only), the files nginx's `ssl_certificate`
and `ssl_certificate_key` take. A person trusts ca.pem once (the system's or the
browser's trust store, or `curl --cacert`), and browsers reach the hub over TLS, and so
over HTTP/2, without a warning. A certificate already there is kept untouched, whoever
made it.

The authority's own key is never written: it signs this one certificate and is gone, so
trusting ca.pem lets nothing else pass for a site.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERTIFICATE = "fullchain.pem"
KEY = "privkey.pem"
CA = "ca.pem"
DNS_NAMES = ("localhost",)
ADDRESSES = ("127.0.0.1", "::1")
# The longest a certificate from a locally trusted authority may live on Apple's systems.
VALID_DAYS = 825


class CertificateError(Exception):
    """The directory cannot hold, or already holds half of, a certificate."""


@dataclass(frozen=True)
class DevCertificate:
    certificate: Path
    key: Path
    ca: Path
    made: bool
    """False when the directory already held a certificate (kept as it was)."""


def ensure_certificate(directory: Path) -> DevCertificate:
    """The certificate in `directory`, made first (with ca.pem) if there is none."""
    found = DevCertificate(directory / CERTIFICATE, directory / KEY, directory / CA, made=False)
    has_certificate, has_key = found.certificate.exists(), found.key.exists()
    if has_certificate and has_key:
        return found
    if has_certificate or has_key:
        there, missing = (CERTIFICATE, KEY) if has_certificate else (KEY, CERTIFICATE)
        raise CertificateError(
            f"{directory / there} has no {missing} beside it: add it, "
            f"or remove {there} to make a new pair"
        )
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, certificate_pem, key_pem = _issue(datetime.datetime.now(datetime.UTC))
    _write(found.key, key_pem, 0o600)
    _write(found.ca, ca_pem, 0o644)
    # Last: the certificate's presence is what says the directory is complete.
    _write(found.certificate, certificate_pem, 0o644)
    return DevCertificate(found.certificate, found.key, found.ca, made=True)


def _issue(now: datetime.datetime) -> tuple[bytes, bytes, bytes]:
    """PEM of a new authority, of a server certificate it signed, and of that one's key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sse-hub development"),
            x509.NameAttribute(
                NameOID.COMMON_NAME,
                f"sse-hub development CA {socket.gethostname()[:20]} {now:%Y-%m-%d %H:%M}",
            ),
        ]
    )
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=VALID_DAYS)
    ca_identifier = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ca_identifier, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in DNS_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ADDRESSES]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DNS_NAMES[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_identifier),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), certificate.public_bytes(pem), key_pem


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its mode, never widened by the umask in between; an earlier file is replaced.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), mode)
        file.write(data)


def describe(result: DevCertificate) -> str:
    """What a person reads after running the command."""
    directory = result.certificate.parent
    if not result.made:
        return f"{directory} already holds a certificate ({CERTIFICATE}, {KEY}): kept as it is."
    names = ", ".join((*DNS_NAMES, *ADDRESSES))
    return (
        f"Made a development certificate for {names} in {directory}:\n"
        f"  {CERTIFICATE:<14} the certificate (nginx: ssl_certificate)\n"
        f"  {KEY:<14} its key, readable by its owner only (nginx: ssl_certificate_key)\n"
        f"  {CA:<14} the authority that signed it; its key was not kept\n"
        f"Trust {CA} once: import it into the system's or the browser's trust store (as an\n"
        f"authority, for websites), or name it per command:\n"
        f"  curl --cacert {result.ca} https://localhost:PORT/healthz"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub.devcert",
        description="Make a development TLS certificate for localhost in DIR, unless it has one.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR")
    arguments = parser.parse_args(argv)
    try:
        result = ensure_certificate(arguments.directory)
    except (CertificateError, OSError) as error:
        print(f"devcert: error: {error}", file=sys.stderr)
        return 1
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
