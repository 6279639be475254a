"""net.probe and ``mailmoat probe`` against scripted SMTP servers on 127.0.0.1.

Each server is a few lines of asyncio written here: what it says (banner, EHLO keywords,
STARTTLS, the TLS versions its context allows, the certificate it serves) is the expected
value the report must reproduce. DNS is a FakeResolver; the MTA-STS policy comes from an
httpx MockTransport.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailmoat.auth.dane import DANEStatus
from mailmoat.cli.main import main
from mailmoat.net.fetch import Fetcher
from mailmoat.net.probe import (
    ProbeError,
    ProbeReport,
    _version_context,
    default_mode,
    parse_target,
    probe,
)
from mailmoat.resolver import FakeResolver

pytestmark = pytest.mark.timeout(60)

NAME = "mx.probe.test"


@dataclass
class Script:
    """What the scripted server says."""

    greeting: bytes = b"220 mx.probe.test ESMTP scripted\r\n"
    ehlo_plain: bytes = b"250-mx.probe.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
    ehlo_tls: bytes = b"250-mx.probe.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
    starttls_reply: bytes = b"220 2.0.0 go ahead\r\n"
    tls: ssl.SSLContext | None = None
    implicit: bool = False
    silent: bool = False


async def _serve(script: Script, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    try:
        if script.silent:
            await asyncio.sleep(30)
            return
        writer.write(script.greeting)
        tls = script.implicit
        while line := await reader.readline():
            verb = line.strip().upper()
            if verb.startswith((b"EHLO", b"HELO")):
                writer.write(script.ehlo_tls if tls else script.ehlo_plain)
            elif verb == b"STARTTLS" and script.tls is not None:
                writer.write(script.starttls_reply)
                await writer.drain()
                if not script.starttls_reply.startswith(b"220 "):
                    continue
                await writer.start_tls(script.tls)
                tls = True
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"502 5.5.1 no\r\n")
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert(NAME)


@pytest.fixture(scope="module")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_tls(leaf: trustme.LeafCert, *, versions: tuple[ssl.TLSVersion, ssl.TLSVersion] = (
        ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    ctx.minimum_version, ctx.maximum_version = versions
    return ctx


Starter = Callable[[Script], Awaitable[int]]


@pytest.fixture
async def start() -> AsyncIterator[Starter]:
    servers: list[asyncio.Server] = []

    async def run(script: Script) -> int:
        server = await asyncio.start_server(
            lambda r, w: _serve(script, r, w), "127.0.0.1", 0,
            ssl=script.tls if script.implicit else None)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield run
    for server in servers:
        server.close()
        await server.wait_closed()


async def _probe(port: int, **kwargs: object) -> ProbeReport:
    options: dict[str, object] = {"server_name": NAME, "timeout": 5, "helo": "client.test"}
    options.update(kwargs)
    return await probe("127.0.0.1", port, **options)  # type: ignore[arg-type]


# --- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("target", "expected"), [
    ("mx.example.com", ("mx.example.com", 25)),
    ("mx.example.com.:587", ("mx.example.com", 587)),
    ("192.0.2.1:465", ("192.0.2.1", 465)),
    ("[2001:db8::1]:25", ("2001:db8::1", 25)),
    ("[2001:db8::1]", ("2001:db8::1", 25)),
    ("2001:db8::1", ("2001:db8::1", 25)),
])
def test_parse_target(target: str, expected: tuple[str, int]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["", "a:b:c", "host:0", "host:70000", "host:x", "[::1",
                                    "a b", "host\r\n:25", "[::1]x"])
def test_parse_target_refuses(target: str) -> None:
    with pytest.raises(ProbeError):
        parse_target(target)


def test_default_mode() -> None:
    """RFC 8314 §7.3: 465 is implicit TLS; 25 and 587 use STARTTLS."""
    assert default_mode(465) == "implicit-tls"
    assert default_mode(25) == default_mode(587) == "starttls"


def test_version_contexts() -> None:
    for version, member in (("TLSv1.2", ssl.TLSVersion.TLSv1_2),
                            ("TLSv1.3", ssl.TLSVersion.TLSv1_3)):
        ctx = _version_context(version)
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.minimum_version == ctx.maximum_version == member


async def test_bad_arguments() -> None:
    with pytest.raises(ProbeError):
        await probe("127.0.0.1", 0)
    with pytest.raises(ProbeError):
        await probe("127.0.0.1", 25, helo="bad name\r\nRSET")
    with pytest.raises(ProbeError):
        await probe("127.0.0.1", 25, timeout=0)


# --- sessions ------------------------------------------------------------------------------------
async def test_starttls_session(start: Starter, leaf: trustme.LeafCert,
                                cafile: str) -> None:
    tls = _server_tls(leaf)
    port = await start(Script(tls=tls))
    report = await _probe(port, cafile=cafile)
    assert report.error is None
    assert report.banner is not None
    assert report.banner.text == "mx.probe.test ESMTP scripted"
    assert dict(report.ehlo_before_tls or {}) == {"PIPELINING": "", "STARTTLS": "",
                                                  "8BITMIME": ""}
    assert dict(report.ehlo_after_tls or {}) == {"PIPELINING": "", "8BITMIME": ""}
    assert report.tls_version == "TLSv1.3"
    statuses = {v.version: v.status for v in report.versions}
    assert statuses["TLSv1.2"] == statuses["TLSv1.3"] == "accepted"
    assert statuses["TLSv1"] in ("refused", "not-offered-by-us")
    expected = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    der = expected.public_bytes(serialization.Encoding.DER)
    assert report.chain[0].sha256 == hashlib.sha256(der).hexdigest()
    assert report.chain[0].key_type == "EC P-256"
    assert report.certificate_problem is None
    assert [f.code for f in report.findings] == []
    as_json = json.loads(json.dumps(report.as_dict()))
    assert as_json["tls"]["version"] == "TLSv1.3"
    assert as_json["certificate"]["valid"] is True


async def test_implicit_tls(start: Starter, leaf: trustme.LeafCert,
                            cafile: str) -> None:
    tls = _server_tls(leaf, versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
    port = await start(Script(tls=tls, implicit=True))
    report = await _probe(port, cafile=cafile, mode="implicit-tls")
    assert report.mode == "implicit-tls"
    assert report.ehlo_before_tls is None
    assert "PIPELINING" in (report.ehlo_after_tls or {})
    assert report.tls_version == "TLSv1.2"
    statuses = {v.version: v.status for v in report.versions}
    assert statuses["TLSv1.2"] == "accepted"
    assert statuses["TLSv1.3"] == "refused"
    assert "no-tls13" in {f.code for f in report.findings}


async def test_legacy_only_server(start: Starter, leaf: trustme.LeafCert, cafile: str) -> None:
    """A server that only speaks TLS 1.1: a current client (TLS 1.2+) fails, the sweep finds
    TLS 1.1, and the certificate is still described from that handshake."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(tls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls.minimum_version = tls.maximum_version = ssl.TLSVersion.TLSv1_1
    tls.set_ciphers("DEFAULT:@SECLEVEL=0")
    port = await start(Script(tls=tls))
    report = await _probe(port, cafile=cafile)
    assert report.tls_version is None
    assert report.tls_error is not None
    statuses = {v.version: v.status for v in report.versions}
    assert statuses == {"TLSv1": "refused", "TLSv1.1": "accepted", "TLSv1.2": "refused",
                        "TLSv1.3": "refused"}
    expected = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert report.chain[0].subject == expected.subject.rfc4514_string()
    codes = {f.code for f in report.findings}
    assert {"tls-failed", "legacy-tls"} <= codes


async def test_no_starttls_and_auth_in_cleartext(start: Starter) -> None:
    port = await start(Script(
        ehlo_plain=b"250-mx.probe.test\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 1000\r\n"))
    report = await _probe(port)
    assert report.starttls_offered is False
    assert not report.tls
    assert report.versions == ()
    findings = {f.code: f for f in report.findings}
    assert findings["auth-before-tls"].severity == "high"
    assert "PLAIN LOGIN" in findings["auth-before-tls"].message
    assert findings["no-starttls"].severity == "high"


async def test_starttls_refused(start: Starter, leaf: trustme.LeafCert
                                ) -> None:
    port = await start(Script(tls=_server_tls(leaf),
                              starttls_reply=b"454 4.7.0 TLS not available\r\n"))
    report = await _probe(port)
    assert report.tls_error is not None
    assert "454" in report.tls_error
    assert "tls-failed" in {f.code for f in report.findings}


async def test_starttls_response_injection_refused(start: Starter,
                                                   leaf: trustme.LeafCert) -> None:
    """RFC 3207 §4.2 / CVE-2011-0411 class: octets after the 220 and before the handshake
    are refused, never read as if they came over TLS."""
    port = await start(Script(tls=_server_tls(leaf),
                              starttls_reply=b"220 go\r\n250 injected\r\n"))
    report = await _probe(port, test_versions=False)
    assert report.error is not None
    assert "protocol violation" in report.error
    assert not report.tls


async def test_refused_greeting(start: Starter) -> None:
    port = await start(Script(greeting=b"554 5.3.2 go away\r\n"))
    report = await _probe(port)
    assert report.banner is not None
    assert report.banner.code == 554
    assert report.error is not None
    assert "554" in report.error


async def test_silent_server_times_out(start: Starter) -> None:
    port = await start(Script(silent=True))
    loop = asyncio.get_running_loop()
    begin = loop.time()
    report = await _probe(port, timeout=0.5)
    assert loop.time() - begin < 5
    assert report.error is not None
    assert "no reply" in report.error


async def test_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        report = await _probe(port)
    assert not report.connected
    assert [f.code for f in report.findings] == ["unreachable"]


# --- DANE and MTA-STS ----------------------------------------------------------------------------
def _spki_sha256(leaf: trustme.LeafCert) -> bytes:
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


@pytest.mark.parametrize(("good", "authenticated", "status"), [
    (True, True, DANEStatus.MATCHED),
    (False, True, DANEStatus.MISMATCH),
    (True, False, DANEStatus.INSECURE),
])
async def test_dane(start: Starter, leaf: trustme.LeafCert, cafile: str,
                    good: bool, authenticated: bool, status: DANEStatus) -> None:
    port = await start(Script(tls=_server_tls(leaf)))
    fake = FakeResolver()
    name = f"_{port}._tcp.{NAME}"
    fake.add_tlsa(name, 3, 1, 1, _spki_sha256(leaf) if good else bytes(32))
    fake.set_authenticated(name, authenticated)
    report = await _probe(port, cafile=cafile, resolver=fake, test_versions=False)
    assert report.dane is not None
    assert report.dane.status is status
    assert report.dane_name == name
    assert ("dane-mismatch" in {f.code for f in report.findings}) is (
        status is DANEStatus.MISMATCH)


def _sts(policy: bytes) -> Fetcher:
    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == "https://mta-sts.example.test/.well-known/mta-sts.txt"
        return httpx.Response(200, content=policy, headers={"content-type": "text/plain"})

    return Fetcher(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("pattern", "failure"), [("*.probe.test", None),
                                                  ("mx.elsewhere.test", "validation-failure")])
async def test_mtasts(start: Starter, leaf: trustme.LeafCert, cafile: str,
                      pattern: str, failure: str | None) -> None:
    port = await start(Script(tls=_server_tls(leaf)))
    fake = FakeResolver()
    fake.add_txt("_mta-sts.example.test", "v=STSv1; id=20261128;")
    policy = f"version: STSv1\r\nmode: enforce\r\nmx: {pattern}\r\nmax_age: 86400\r\n"
    async with _sts(policy.encode()) as fetcher:
        report = await _probe(port, cafile=cafile, resolver=fake, mtasts_domain="example.test",
                              fetcher=fetcher, test_versions=False, dane=False)
    assert report.mtasts is not None
    assert report.mtasts.mode == "enforce"
    assert report.mtasts.failure == failure
    assert report.mtasts.deliver is (failure is None)
    assert ("mta-sts" in {f.code for f in report.findings}) is (failure is not None)


async def test_mtasts_untrusted_certificate(start: Starter,
                                            leaf: trustme.LeafCert) -> None:
    """RFC 8461 §4.2: the certificate must be PKIX-valid; without our CA it is not."""
    port = await start(Script(tls=_server_tls(leaf)))
    fake = FakeResolver()
    fake.add_txt("_mta-sts.example.test", "v=STSv1; id=1;")
    policy = b"version: STSv1\r\nmode: testing\r\nmx: mx.probe.test\r\nmax_age: 86400\r\n"
    async with _sts(policy) as fetcher:
        report = await _probe(port, resolver=fake, mtasts_domain="example.test",
                              fetcher=fetcher, test_versions=False, dane=False)
    assert report.mtasts is not None
    assert report.mtasts.failure == "certificate-not-trusted"
    assert report.mtasts.deliver  # testing mode
    assert [f.severity for f in report.findings if f.code == "mta-sts"] == ["medium"]


# --- CLI -----------------------------------------------------------------------------------------
def _cli_server(script: Script) -> tuple[int, Callable[[], None]]:
    """The scripted server in a thread of its own (CliRunner runs its own event loop)."""
    import threading

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main_() -> None:
        server = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", 0)
        box["port"] = server.sockets[0].getsockname()[1]
        box["server"] = server
        ready.set()

    def run() -> None:
        loop.run_until_complete(main_())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        async def close() -> None:
            server = box["server"]
            assert isinstance(server, asyncio.Server)
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    port = box["port"]
    assert isinstance(port, int)
    return port, stop


def test_cli_json_and_exit_code() -> None:
    port, stop = _cli_server(Script(
        ehlo_plain=b"250-mx.probe.test\r\n250 AUTH PLAIN\r\n"))
    try:
        result = CliRunner().invoke(main, ["probe", f"127.0.0.1:{port}", "--json", "--no-dane",
                                           "--timeout", "5", "--helo", "client.test"])
    finally:
        stop()
    assert result.exit_code == 1, result.output  # high findings
    data = json.loads(result.output)
    assert data["port"] == port
    assert data["mode"] == "starttls"
    assert data["ehlo_before_tls"] == {"AUTH": "PLAIN"}
    assert {f["code"] for f in data["findings"]} == {"auth-before-tls", "no-starttls"}


def test_cli_text_output() -> None:
    port, stop = _cli_server(Script())
    try:
        result = CliRunner().invoke(main, ["probe", f"127.0.0.1:{port}", "--no-dane",
                                           "--timeout", "5", "--helo", "client.test"])
    finally:
        stop()
    assert "mx.probe.test ESMTP scripted" in result.output
    assert "STARTTLS" in result.output


def test_cli_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["probe", "host:99999"]).exit_code == 2
    assert runner.invoke(main, ["probe", "host", "--dnssec"]).exit_code == 2


def test_cli_zone_dane_is_insecure(tmp_path: Path, leaf: trustme.LeafCert) -> None:
    """``--zone`` answers are never DNSSEC-authenticated: a matching TLSA record from a zone
    file is reported as insecure, not matched (RFC 7672 §2.1.3)."""
    tls = _server_tls(leaf)
    port, stop = _cli_server(Script(tls=tls))
    zone = tmp_path / "probe.zone"
    zone.write_text(f"$ORIGIN probe.test.\n_{port}._tcp.mx 300 IN TLSA 3 1 1 "
                    f"{_spki_sha256(leaf).hex()}\n")
    try:
        result = CliRunner().invoke(main, ["probe", f"127.0.0.1:{port}", "--name", NAME,
                                           "--zone", str(zone), "--json", "--no-versions",
                                           "--timeout", "5", "--helo", "client.test"])
    finally:
        stop()
    data = json.loads(result.output)
    assert data["dane"]["status"] == "insecure"
    assert data["dane"]["tlsa_name"] == f"_{port}._tcp.{NAME}"
