"""Interop: ``probe`` against a private Postfix smtpd, compared with Postfix's own
``posttls-finger`` on the same server.

posttls-finger is the reference: the TLS version and cipher it negotiates, the certificate
fingerprints it prints (SHA-256 of the certificate and of its public key), whether it calls
the connection "Verified", the EHLO keywords it logs before and after STARTTLS, and which
protocol versions it can establish when restricted to one (``-p``). Our report must say the
same things. posttls-finger's public-key fingerprint is also, by definition, the data of a
DANE ``3 1 1`` TLSA record (RFC 6698 §2.1.2-§2.1.3), which must match the chain we received.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from postfix_smtpd_fixture import PostfixSMTPD

from conftest import require_peer
from mailmoat.auth.dane import DANEStatus, match_chain
from mailmoat.net.probe import ProbeReport, probe
from mailmoat.resolver import TLSA

pytestmark = pytest.mark.timeout(180)

NAME = "mx.probe.test"
_ESTABLISHED = re.compile(
    r"(?P<trust>Verified|Trusted|Untrusted|Anonymous) TLS connection established to "
    r"\S+: (?P<version>\S+) with cipher (?P<cipher>\S+) \((?P<bits>\d+)/")
_FINGERPRINTS = re.compile(r"fingerprint=(?P<cert>[0-9A-F:]+), pkey_fingerprint=(?P<pkey>[0-9A-F:]+)")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def postfix(ca: trustme.CA) -> Iterator[PostfixSMTPD]:
    program = require_peer("postfix")
    require_peer("posttls-finger")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master drops privileges)")
    leaf = ca.issue_cert(NAME, common_name=NAME)
    server = PostfixSMTPD(program, cert_pem=b"".join(b.bytes() for b in leaf.cert_chain_pems),
                          key_pem=leaf.private_key_pem.bytes())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _finger(server: PostfixSMTPD, *args: str, match: tuple[str, ...] = ()) -> str:
    """posttls-finger against the server, reading the instance's main.cf; ``match`` are the
    names the certificate must match at level secure."""
    finger = require_peer("posttls-finger")
    env = {**os.environ, "MAIL_CONFIG": str(server.config)}
    done = subprocess.run(
        [finger, "-o", "myhostname=client.test", *args, f"[127.0.0.1]:{server.port}", *match],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    return done.stdout + done.stderr


def _colon_hex(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()


@pytest.fixture(scope="module")
def report(postfix: PostfixSMTPD, cafile: str) -> ProbeReport:
    return asyncio.run(probe("127.0.0.1", postfix.port, server_name=NAME, cafile=cafile,
                             timeout=15, helo="client.test"))


def test_tls_and_certificate_match_posttls_finger(postfix: PostfixSMTPD, cafile: str,
                                                  report: ProbeReport) -> None:
    text = _finger(postfix, "-c", "-l", "secure", "-F", cafile, "-d", "sha256",
                   match=(NAME,))
    established = _ESTABLISHED.search(text)
    assert established, text
    assert established["trust"] == "Verified"
    assert report.error is None, report.error
    assert report.certificate_problem is None  # "Verified": chain and name, as Postfix says
    assert report.tls_version == established["version"]
    assert report.cipher == established["cipher"]
    assert str(report.cipher_bits) == established["bits"]
    prints = _FINGERPRINTS.search(text)
    assert prints, text
    assert _colon_hex(report.chain[0].sha256) == prints["cert"]
    cn = re.search(r"subject_CN=([^,]+),", text)
    assert cn
    assert f"CN={cn[1]}" in report.chain[0].subject.split(",")


def test_pkey_fingerprint_is_a_matching_dane_record(postfix: PostfixSMTPD, cafile: str,
                                                    report: ProbeReport) -> None:
    text = _finger(postfix, "-c", "-l", "secure", "-F", cafile, "-d", "sha256",
                   match=(NAME,))
    prints = _FINGERPRINTS.search(text)
    assert prints, text
    data = bytes.fromhex(prints["pkey"].replace(":", ""))
    good = TLSA(usage=3, selector=1, mtype=1, data=data)
    assert match_chain([good], report.chain_der, hostname=NAME).status is DANEStatus.MATCHED
    bad = TLSA(usage=3, selector=1, mtype=1, data=bytes(32))
    assert match_chain([bad], report.chain_der, hostname=NAME).status is DANEStatus.MISMATCH


def test_wrong_name_is_not_verified_by_either(postfix: PostfixSMTPD, cafile: str) -> None:
    text = _finger(postfix, "-c", "-l", "secure", "-F", cafile,
                   match=("mx.wrong.test",))
    assert "Verified TLS connection" not in text
    ours = asyncio.run(probe("127.0.0.1", postfix.port, server_name="mx.wrong.test",
                             cafile=cafile, timeout=15, test_versions=False, helo="client.test"))
    assert ours.certificate_problem is not None
    assert ours.name_matches is False


def _ehlo_keywords(text: str) -> tuple[set[str], set[str]]:
    """Keywords of the EHLO replies posttls-finger logged before and after STARTTLS."""
    before: set[str] = set()
    after: set[str] = set()
    current = before
    replies = 0
    for line in text.splitlines():
        match = re.search(r"< 250[- ](\S+)", line)
        if "> STARTTLS" in line:
            current = after
        elif "> EHLO" in line:
            replies += 1
            first = True
            continue
        elif match:
            if first:  # the first line names the server, not an extension
                first = False
                continue
            current.add(match[1].upper())
    return before, after


def test_ehlo_before_and_after_tls(postfix: PostfixSMTPD, cafile: str,
                                   report: ProbeReport) -> None:
    text = _finger(postfix, "-l", "secure", "-F", cafile,
                   match=(NAME,))
    before, after = _ehlo_keywords(text)
    assert before, text
    assert after, text
    assert set(report.ehlo_before_tls or {}) == before
    assert set(report.ehlo_after_tls or {}) == after
    assert "STARTTLS" in before
    assert "STARTTLS" not in after


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_each_version_as_posttls_finger(postfix: PostfixSMTPD, report: ProbeReport,
                                        cafile: str, version: str) -> None:
    """posttls-finger restricted to one protocol (``-p``) establishes TLS exactly when our
    one-version handshake is accepted, with the same cipher."""
    # Level secure: at "encrypt" posttls-finger also offers anonymous (aNULL) suites, which
    # Postfix's smtpd accepts at level "may" - a different question from ours.
    text = _finger(postfix, "-c", "-l", "secure", "-F", cafile, "-p", version, match=(NAME,))
    established = _ESTABLISHED.search(text)
    ours = next(v for v in report.versions if v.version == version)
    assert (ours.status == "accepted") == bool(established), (ours, text)
    if established:
        assert established["version"] == version
        assert ours.cipher == established["cipher"]


@pytest.mark.parametrize(("version", "flag"), [("TLSv1", "-tls1"), ("TLSv1.1", "-tls1_1")])
def test_legacy_versions(postfix: PostfixSMTPD, report: ProbeReport, cafile: str,
                         version: str, flag: str) -> None:
    """TLS 1.0/1.1. posttls-finger cannot be the oracle here: on this OpenSSL its own client
    refuses the handshake ("legacy sigalg disallowed") whatever cipher list it is given. So
    ``openssl s_client`` offering only that version at security level 0 (as our probe does)
    decides whether the server accepts it, and must agree with us."""
    openssl = require_peer("openssl")
    done = subprocess.run(
        [openssl, "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{postfix.port}",
         flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", cafile, "-brief"],
        input="QUIT\r\n", capture_output=True, text=True, timeout=60, check=False,
    )
    text = done.stdout + done.stderr
    established = re.search(r"Protocol version: (\S+)", text)
    cipher = re.search(r"Ciphersuite: (\S+)", text)
    ours = next(v for v in report.versions if v.version == version)
    assert (ours.status == "accepted") == bool(established), (ours, text)
    if established and cipher:
        assert established[1] == version
        assert ours.cipher == cipher[1]
    legacy = [f for f in report.findings if f.code == "legacy-tls"]
    assert bool(legacy) == bool(established)


def test_report_paths(report: ProbeReport, tmp_path: Path) -> None:
    """Nothing in the report is a finding of severity high for a good Postfix setup."""
    assert not [f for f in report.findings if f.severity == "high"], report.findings
