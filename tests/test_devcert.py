"""hub.devcert: a development certificate for localhost, signed by a local authority."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from processes import REPO_ROOT

from hub.devcert import CertificateError, ensure_certificate


def test_the_certificate_passes_for_localhost_and_its_addresses_with_the_authority_trusted(
    tmp_path: Path,
) -> None:
    made = ensure_certificate(tmp_path / "tls")
    assert made.made
    ca = x509.load_pem_x509_certificate(made.ca.read_bytes())
    [certificate] = x509.load_pem_x509_certificates(made.certificate.read_bytes())
    store = verification.Store([ca])
    for name in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        verifier = verification.PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(certificate, [])
        assert chain[-1] == ca
    other = (
        verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.com"))
    )
    with pytest.raises(verification.VerificationError):
        other.verify(certificate, [])

    key = serialization.load_pem_private_key(made.key.read_bytes(), password=None)
    assert key.public_key() == certificate.public_key()
    assert certificate.not_valid_after_utc > datetime.datetime.now(
        datetime.UTC
    ) + datetime.timedelta(days=365)


def test_the_key_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    made = ensure_certificate(tmp_path)
    assert made.key.stat().st_mode & 0o777 == 0o600
    assert made.certificate.stat().st_mode & 0o777 == 0o644
    assert made.ca.stat().st_mode & 0o777 == 0o644


def test_a_certificate_already_there_is_kept_untouched(tmp_path: Path) -> None:
    (tmp_path / "fullchain.pem").write_bytes(b"a certificate someone put here\n")
    (tmp_path / "privkey.pem").write_bytes(b"its key\n")
    kept = ensure_certificate(tmp_path)
    assert not kept.made
    assert kept.certificate.read_bytes() == b"a certificate someone put here\n"
    assert kept.key.read_bytes() == b"its key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fullchain.pem", "privkey.pem"]

    made = ensure_certificate(tmp_path / "made")
    contents = [path.read_bytes() for path in (made.certificate, made.key, made.ca)]
    assert ensure_certificate(tmp_path / "made") == dataclasses.replace(made, made=False)
    assert [path.read_bytes() for path in (made.certificate, made.key, made.ca)] == contents


def test_a_key_without_its_certificate_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "privkey.pem").write_bytes(b"a lone key\n")
    with pytest.raises(CertificateError, match=r"no fullchain\.pem"):
        ensure_certificate(tmp_path)
    assert (tmp_path / "privkey.pem").read_bytes() == b"a lone key\n"


def run_devcert(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.devcert", str(directory)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def test_the_command_says_what_it_made_and_how_to_trust_it(tmp_path: Path) -> None:
    made = run_devcert(tmp_path / "tls")
    assert made.returncode == 0, made.stderr
    assert "ca.pem" in made.stdout and f"curl --cacert {tmp_path / 'tls' / 'ca.pem'}" in made.stdout
    kept = run_devcert(tmp_path / "tls")
    assert kept.returncode == 0 and "kept as it is" in kept.stdout

    (tmp_path / "tls" / "fullchain.pem").unlink()
    failed = run_devcert(tmp_path / "tls")
    assert failed.returncode != 0
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.startswith("devcert: error: ")
