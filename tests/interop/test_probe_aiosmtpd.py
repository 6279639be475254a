"""Interop: ``probe`` against aiosmtpd on 127.0.0.1 with STARTTLS (trustme certificate), and
``probe_starttls`` (the ``mailmoat check`` view of the same engine) against the same servers.

Expected values come from elsewhere than the probe: the server's own configuration (the TLS
versions and the one TLS 1.2 cipher it is allowed, the certificate we gave it), Python's
``smtplib`` as an independent client (the EHLO keywords before and after STARTTLS), and
``openssl s_client`` for a handshake of its own.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import aiosmtpd.controller as aiosmtpd_controller
import aiosmtpd.smtp as aiosmtpd_smtp
import pytest
import trustme
from cryptography import x509

from conftest import require_peer
from mailmoat.net.probe import ProbeReport, probe
from mailmoat.net.starttls_probe import ProbeResult, probe_starttls

pytestmark = pytest.mark.timeout(120)

CIPHER12 = "ECDHE-ECDSA-AES128-GCM-SHA256"


class Handler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    return aiosmtpd_smtp.AuthResult(success=False, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("mx.probe.test", "localhost")


@pytest.fixture(scope="module")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(leaf: trustme.LeafCert, *, max12: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if max12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(CIPHER12)
    return context


def _serve(context: ssl.SSLContext, **kwargs: Any) -> Iterator[Any]:
    controller = aiosmtpd_controller.Controller(
        Handler(), hostname="127.0.0.1", port=_free_port(), tls_context=context,
        authenticator=_authenticator, **kwargs,
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def tls12_server(leaf: trustme.LeafCert) -> Iterator[Any]:
    """TLS 1.2 only, one cipher; AUTH only after TLS."""
    yield from _serve(_server_context(leaf, max12=True), auth_require_tls=True)


@pytest.fixture
def auth_plain_server(leaf: trustme.LeafCert) -> Iterator[Any]:
    """TLS 1.2 and 1.3; AUTH offered before STARTTLS (the finding)."""
    yield from _serve(_server_context(leaf, max12=False), auth_require_tls=False)


def _smtplib_features(port: int, cafile: str) -> tuple[set[str], set[str]]:
    """EHLO keywords seen by Python's smtplib before and after STARTTLS."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        before = {k.upper() for k in client.esmtp_features}
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False  # we connect to 127.0.0.1; the chain is still checked
        client.starttls(context=context)
        client.ehlo("client.test")
        after = {k.upper() for k in client.esmtp_features}
    return before, after


async def _probe(port: int, cafile: str) -> ProbeReport:
    return await probe("127.0.0.1", port, server_name="mx.probe.test", cafile=cafile,
                       timeout=10, helo="client.test")


async def test_probe_tls12_server(tls12_server: Any, cafile: str,
                                  leaf: trustme.LeafCert) -> None:
    report = await _probe(tls12_server.port, cafile)
    assert report.error is None, report.error
    assert report.banner is not None
    assert report.banner.code == 220
    before, after = _smtplib_features(tls12_server.port, cafile)
    assert set(report.ehlo_before_tls or {}) == before
    assert set(report.ehlo_after_tls or {}) == after
    assert "STARTTLS" in (report.ehlo_before_tls or {})
    # What the server was configured to allow:
    assert report.tls_version == "TLSv1.2"
    assert report.cipher == CIPHER12
    accepted = {v.version for v in report.versions if v.status == "accepted"}
    assert accepted == {"TLSv1.2"}
    refused = {v.version for v in report.versions if v.status == "refused"}
    assert refused == {"TLSv1.3", "TLSv1", "TLSv1.1"}
    # The certificate we gave the server, and the CA that issued it:
    expected = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert report.chain[0].subject == expected.subject.rfc4514_string()
    assert report.chain[0].not_after == expected.not_valid_after_utc
    assert set(report.chain[0].san) == {"mx.probe.test", "localhost"}
    assert report.certificate_problem is None
    assert report.name_matches is True
    codes = {f.code for f in report.findings}
    assert "auth-before-tls" not in codes
    assert "no-tls13" in codes


async def test_probe_wrong_name_and_untrusted(tls12_server: Any, cafile: str) -> None:
    report = await probe("127.0.0.1", tls12_server.port, server_name="mx.other.test",
                         cafile=cafile, timeout=10, test_versions=False, helo="client.test")
    assert report.name_matches is False
    assert report.chain_trusted is True
    assert report.certificate_problem is not None
    untrusted = await probe("127.0.0.1", tls12_server.port, server_name="mx.probe.test",
                            timeout=10, test_versions=False, helo="client.test")
    assert untrusted.chain_trusted is False  # the system store does not know the trustme CA
    assert "certificate-unverified" in {f.code for f in untrusted.findings}


async def test_auth_before_tls_is_flagged(auth_plain_server: Any, cafile: str) -> None:
    with smtplib.SMTP("127.0.0.1", auth_plain_server.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("auth")  # the server really offers AUTH in cleartext
    report = await _probe(auth_plain_server.port, cafile)
    assert "AUTH" in (report.ehlo_before_tls or {})
    flagged = [f for f in report.findings if f.code == "auth-before-tls"]
    assert flagged
    assert flagged[0].severity == "high"
    assert report.tls_version == "TLSv1.3"
    accepted = {v.version for v in report.versions if v.status == "accepted"}
    assert accepted == {"TLSv1.2", "TLSv1.3"}


async def test_tls_version_matches_openssl(auth_plain_server: Any, cafile: str) -> None:
    """openssl s_client, a different TLS client, negotiates the same version and cipher."""
    openssl = require_peer("openssl")
    done = subprocess.run(
        [openssl, "s_client", "-starttls", "smtp", "-connect",
         f"127.0.0.1:{auth_plain_server.port}", "-brief", "-CAfile", cafile],
        input=b"QUIT\r\n", capture_output=True, timeout=30, check=False,
    )
    text = done.stderr.decode(errors="replace") + done.stdout.decode(errors="replace")
    fields = dict(
        line.split(": ", 1) for line in text.splitlines() if ": " in line
    )
    report = await _probe(auth_plain_server.port, cafile)
    assert fields.get("Protocol version") == report.tls_version
    assert fields.get("Ciphersuite") == report.cipher


# --- probe_starttls: what ``mailmoat check`` prints per MX ------------------------------------
#: The JSON keys of ``mx.hosts[].starttls`` in ``mailmoat check --json``.
CHECK_KEYS = {"host", "port", "connected", "banner", "starttls_offered", "tls",
              "certificate_valid", "certificate_problem", "error"}
CHECK_TLS_KEYS = {"version", "cipher", "bits", "server_name", "subject", "issuer", "san",
                  "not_before", "not_after", "verified", "verify_error"}


def _openssl_accepts(port: int, name: str, cafile: str | None) -> bool:
    """OpenSSL's own verdict on the server's certificate for ``name`` (chain and name)."""
    context = ssl.create_default_context(cafile=cafile)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        client._host = name  # smtplib sends SNI and checks the name it connected to
        try:
            client.starttls(context=context)
        except ssl.SSLCertVerificationError:
            return False
        return True


async def _check_probe(port: int, name: str, cafile: str | None) -> ProbeResult:
    return await probe_starttls(name, port=port, connect_to="127.0.0.1", cafile=cafile,
                                timeout=10, helo="client.test")


async def test_check_probe_describes_the_server(tls12_server: Any, cafile: str,
                                                leaf: trustme.LeafCert) -> None:
    result = await _check_probe(tls12_server.port, "mx.probe.test", cafile)
    data = result.as_dict()
    assert set(data) == CHECK_KEYS
    assert set(data["tls"]) == CHECK_TLS_KEYS
    assert (result.connected, result.starttls_offered, result.error) == (True, True, None)
    with smtplib.SMTP(timeout=10) as client:  # the greeting as smtplib reads it
        code, greeting = client.connect("127.0.0.1", tls12_server.port)
    assert code == 220
    assert result.banner == greeting.decode()
    assert result.tls is not None
    assert (result.tls.version, result.tls.cipher) == ("TLSv1.2", CIPHER12)  # as configured
    expected = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert result.tls.subject == expected.subject.rfc4514_string()
    assert result.tls.issuer == expected.issuer.rfc4514_string()
    assert result.tls.not_after == expected.not_valid_after_utc
    assert set(result.tls.san) == {"mx.probe.test", "localhost"}
    assert _openssl_accepts(tls12_server.port, "mx.probe.test", cafile)
    assert result.certificate_problem is None
    assert data["certificate_valid"] is True
    assert result.tls.verified is False  # received unenforced, judged afterwards
    assert result.tls.verify_error == ("not verified (verification disabled); the "
                                       "certificate would verify for mx.probe.test")


@pytest.mark.parametrize(("name", "trusted"), [
    ("mx.other.test", True),   # RFC 6125: the name is not in the certificate
    ("mx.probe.test", False),  # the system store does not know our test CA
])
async def test_check_probe_agrees_with_openssl(tls12_server: Any, cafile: str, name: str,
                                               trusted: bool) -> None:
    trust = cafile if trusted else None
    assert not _openssl_accepts(tls12_server.port, name, trust)
    result = await _check_probe(tls12_server.port, name, trust)
    assert result.tls is not None
    assert result.certificate_problem
    assert result.as_dict()["certificate_valid"] is False
    # One judgement, reported the same way in both places.
    assert result.tls.verify_error == (
        f"not verified (verification disabled); a check finds: {result.certificate_problem}")


async def test_check_probe_closed_port() -> None:
    closed = await _check_probe(_free_port(), "mx.probe.test", None)
    assert (closed.connected, closed.starttls_offered, closed.tls) == (False, None, None)
    assert closed.error is not None
    assert closed.error.startswith("cannot connect to 127.0.0.1:")
