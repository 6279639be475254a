"""net.tls: policy, SNI, reload, errors, self-signed generation — with real handshakes.

Expected certificates come from trustme (an independent CA) and the peer view comes from the
stdlib client side of a real TLS handshake over loopback (OpenSSL is the oracle).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailmoat.errors import TLSConfigError
from mailmoat.net.tls import (
    CertificateSpec,
    ServerTLS,
    client_context,
    describe,
    generate_self_signed,
    load_certificate_names,
    peer_chain,
    server_context,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_cert(ca: trustme.CA, directory: Path, stem: str, *names: str, **kw: object) -> CertificateSpec:
    leaf = ca.issue_cert(*names, **kw)  # type: ignore[arg-type]
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return CertificateSpec(cert=cert, key=key)


def sans(der: bytes) -> list[str]:
    cert = x509.load_der_x509_certificate(der)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


class EchoServer:
    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.server: asyncio.Server | None = None
        self.port = 0
        self.server_objects: list[ssl.SSLObject] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server_objects.append(writer.get_extra_info("ssl_object"))
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[type[EchoServer]]:
    started: list[EchoServer] = []

    class Tracked(EchoServer):
        async def start(self) -> None:
            await super().start()
            started.append(self)

    yield Tracked
    for server in started:
        await server.stop()


async def connect(
    port: int, ctx: ssl.SSLContext, server_hostname: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_hostname),
        10,
    )


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = client_context(verify=True)
    ca.configure_trust(ctx)
    return ctx


async def peer_names(port: int, ctx: ssl.SSLContext, sni: str | None) -> list[str]:
    _, writer = await connect(port, ctx, sni)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return sans(der)


# --- SNI ----------------------------------------------------------------------------------


async def test_sni_selects_certificate(ca: trustme.CA, tmp_path: Path, echo: type[EchoServer]) -> None:
    a = write_cert(ca, tmp_path, "a", "a.example")
    b = write_cert(ca, tmp_path, "b", "b.example", "mx.b.example")
    w = write_cert(ca, tmp_path, "w", "*.wild.example")
    tls = ServerTLS([a, b, w])
    server = echo(tls.context)
    await server.start()
    client = trusting(ca)
    assert await peer_names(server.port, client, "b.example") == ["b.example", "mx.b.example"]
    assert await peer_names(server.port, client, "MX.B.example") == ["b.example", "mx.b.example"]
    assert await peer_names(server.port, client, "a.example") == ["a.example"]
    assert await peer_names(server.port, client, "x.wild.example") == ["*.wild.example"]
    # No SNI, or an unknown name: the default (first) certificate.
    loose = client_context(verify=False)
    assert await peer_names(server.port, loose, None) == ["a.example"]
    assert await peer_names(server.port, loose, "unknown.example") == ["a.example"]
    # A verifying client refuses the default cert for a name it does not carry.
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(server.port, client, "unknown.example")


async def test_explicit_names_override_san(ca: trustme.CA, tmp_path: Path, echo: type[EchoServer]) -> None:
    a = write_cert(ca, tmp_path, "a", "a.example")
    b = write_cert(ca, tmp_path, "b", "b.example")
    tls = ServerTLS([a, CertificateSpec(cert=b.cert, key=b.key, names=("alias.example",))])
    server = echo(tls.context)
    await server.start()
    loose = client_context(verify=False)
    assert await peer_names(server.port, loose, "alias.example") == ["b.example"]
    assert await peer_names(server.port, loose, "b.example") == ["a.example"]


async def test_requested_name_and_describe(ca: trustme.CA, tmp_path: Path, echo: type[EchoServer]) -> None:
    tls = ServerTLS([write_cert(ca, tmp_path, "a", "a.example")])
    server = echo(tls.context)
    await server.start()
    reader, writer = await connect(server.port, trusting(ca), "a.example")
    writer.write(b"ping\n")
    assert await reader.readline() == b"ping\n"
    client_obj = writer.get_extra_info("ssl_object")
    server_info = describe(server.server_objects[0], tls=tls)
    client_info = describe(client_obj)
    # The client's own view (OpenSSL) is the oracle for what the server reports.
    name, version, bits = client_obj.cipher()
    assert (server_info.version, server_info.cipher, server_info.bits) == (version, name, bits)
    assert server_info.version == "TLSv1.3"
    assert server_info.server_name == "a.example"
    assert server_info.peer_subject is None  # no client certificate
    assert client_info.verified is True
    assert client_info.server_name == "a.example"
    assert client_info.peer_subject is not None
    assert server_info.comment() == f"using TLSv1.3 with cipher {name} ({bits}/{bits} bits)"
    assert server.server_objects[0].compression() is None
    writer.close()


async def test_peer_chain_is_what_the_server_sent(ca: trustme.CA, tmp_path: Path,
                                                  echo: type[EchoServer]) -> None:
    # A leaf under an intermediate: the server sends both; trustme's PEMs are the oracle.
    intermediate = ca.create_child_ca()
    tls = ServerTLS([write_cert(intermediate, tmp_path, "c", "chain.example")])
    server = echo(tls.context)
    await server.start()
    with open(tmp_path / "c.crt", "rb") as f:
        expected = [c.public_bytes(serialization.Encoding.DER)
                    for c in x509.load_pem_x509_certificates(f.read())]
    assert len(expected) == 2  # leaf, intermediate
    for ctx in (client_context(verify=False), trusting(ca)):  # unverified and verified
        _, writer = await connect(server.port, ctx, "chain.example")
        ssl_object = writer.get_extra_info("ssl_object")
        assert peer_chain(ssl_object) == expected
        assert peer_chain(ssl_object, limit=1) == expected[:1]
        assert peer_chain(ssl_object)[0] == ssl_object.getpeercert(binary_form=True)
        writer.close()


# --- protocol policy ----------------------------------------------------------------------


def _legacy_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    return ctx


_OPEN: list[ssl.SSLSocket] = []


@pytest.fixture(autouse=True)
def _close_pairs() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def handshake_pair(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, sni: str | None = None
) -> tuple[ssl.SSLSocket | Exception, ssl.SSLSocket | Exception]:
    """A real blocking handshake over a socketpair; (client result, server result)."""
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    results: dict[str, ssl.SSLSocket | Exception] = {}

    def serve() -> None:
        try:
            results["server"] = server_ctx.wrap_socket(right, server_side=True)
        except Exception as exc:
            results["server"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        results["client"] = client_ctx.wrap_socket(left, server_hostname=sni)
    except Exception as exc:
        results["client"] = exc
    thread.join(10)
    _OPEN.extend(r for r in results.values() if isinstance(r, ssl.SSLSocket))
    return results["client"], results["server"]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_refused(ca: trustme.CA, tmp_path: Path) -> None:
    spec = write_cert(ca, tmp_path, "a", "a.example")
    # Control: prove this OpenSSL can speak TLS 1.1 at all, against a permissive server.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("ALL:@SECLEVEL=0")
    permissive.minimum_version = ssl.TLSVersion.TLSv1_1
    permissive.load_cert_chain(spec.cert, spec.key)
    client, _ = handshake_pair(permissive, _legacy_client(ssl.TLSVersion.TLSv1_1))
    if isinstance(client, Exception):
        pytest.skip(f"this OpenSSL cannot do TLS 1.1 at all: {client}")
    assert client.version() == "TLSv1.1"
    client.close()

    ours = ServerTLS([spec]).context
    client, server = handshake_pair(ours, _legacy_client(ssl.TLSVersion.TLSv1_1))
    assert isinstance(client, ssl.SSLError)
    assert "PROTOCOL_VERSION" in str(client).upper()  # the server's protocol_version alert
    assert isinstance(server, ssl.SSLError)
    assert "UNSUPPORTED_PROTOCOL" in str(server).upper()
    # TLS 1.2 is accepted by default.
    client, server = handshake_pair(ours, _legacy_client(ssl.TLSVersion.TLSv1_2))
    assert isinstance(client, ssl.SSLSocket), client
    assert client.version() == "TLSv1.2"
    client.close()
    assert isinstance(server, ssl.SSLSocket)
    server.close()


def test_min_version_13(ca: trustme.CA, tmp_path: Path) -> None:
    ours = ServerTLS([write_cert(ca, tmp_path, "a", "a.example")], min_version="1.3").context
    client, server = handshake_pair(ours, _legacy_client(ssl.TLSVersion.TLSv1_2))
    assert isinstance(client, ssl.SSLError)
    assert isinstance(server, ssl.SSLError)
    client, server = handshake_pair(ours, _legacy_client(ssl.TLSVersion.TLSv1_3))
    assert isinstance(client, ssl.SSLSocket), client
    assert client.version() == "TLSv1.3"
    client.close()
    assert isinstance(server, ssl.SSLSocket)
    server.close()


@pytest.mark.parametrize(
    ("cipher", "accepted"),
    [
        ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
        ("ECDHE-ECDSA-AES256-GCM-SHA384", True),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", True),
        ("ECDHE-ECDSA-AES128-SHA", False),  # CBC, no AEAD
        ("ECDHE-ECDSA-AES256-SHA384", False),  # CBC
    ],
)
def test_tls12_cipher_policy(ca: trustme.CA, tmp_path: Path, cipher: str, accepted: bool) -> None:
    ours = ServerTLS([write_cert(ca, tmp_path, "a", "a.example")]).context
    client_ctx = _legacy_client(ssl.TLSVersion.TLSv1_2)
    client_ctx.set_ciphers(f"{cipher}:@SECLEVEL=0")
    client, server = handshake_pair(ours, client_ctx)
    if accepted:
        assert isinstance(client, ssl.SSLSocket), client
        assert client.cipher()[0] == cipher
        client.close()
    else:
        assert isinstance(client, ssl.SSLError)
        assert isinstance(server, ssl.SSLError)
        assert "NO_SHARED_CIPHER" in str(server).upper()
    if isinstance(server, ssl.SSLSocket):
        server.close()


def test_unsupported_min_version() -> None:
    with pytest.raises(TLSConfigError, match=r"1\.1"):
        client_context(min_version="1.1")


# --- reload ------------------------------------------------------------------------------


async def test_reload_swaps_for_new_connections_only(
    ca: trustme.CA, tmp_path: Path, echo: type[EchoServer]
) -> None:
    live = write_cert(ca, tmp_path, "live", "old.example")
    fresh = write_cert(ca, tmp_path, "fresh", "new.example")
    tls = ServerTLS([live])
    server = echo(tls.context)
    await server.start()
    loose = client_context(verify=False)
    reader1, writer1 = await connect(server.port, loose, "old.example")
    assert sans(writer1.get_extra_info("ssl_object").getpeercert(binary_form=True)) == ["old.example"]

    assert tls.changed() is False
    assert tls.reload_if_changed() is False
    os.replace(fresh.cert, live.cert)
    os.replace(fresh.key, live.key)
    assert tls.changed() is True
    assert tls.reload_if_changed() is True
    assert tls.changed() is False

    assert await peer_names(server.port, loose, None) == ["new.example"]
    assert await peer_names(server.port, loose, "old.example") == ["new.example"]
    # The old connection is still up and still works.
    writer1.write(b"still here\n")
    assert await asyncio.wait_for(reader1.readline(), 5) == b"still here\n"
    writer1.close()


async def test_failed_reload_keeps_old_certificates(
    ca: trustme.CA, tmp_path: Path, echo: type[EchoServer]
) -> None:
    spec = write_cert(ca, tmp_path, "a", "a.example")
    other = write_cert(ca, tmp_path, "b", "b.example")
    tls = ServerTLS([spec])
    server = echo(tls.context)
    await server.start()
    os.replace(other.key, spec.key)  # key now mismatches the certificate
    with pytest.raises(TLSConfigError, match="does not match"):
        tls.reload()
    assert tls.reload_if_changed() is False  # logged, old kept
    assert tls.changed() is False  # not retried until the files change again
    assert await peer_names(server.port, client_context(verify=False), None) == ["a.example"]
    os.replace(other.cert, spec.cert)  # renewal completed: the pair matches again
    assert tls.reload_if_changed() is True
    assert await peer_names(server.port, client_context(verify=False), None) == ["b.example"]


async def test_watch_polls(ca: trustme.CA, tmp_path: Path, echo: type[EchoServer]) -> None:
    spec = write_cert(ca, tmp_path, "a", "a.example")
    other = write_cert(ca, tmp_path, "b", "b.example")
    tls = ServerTLS([spec])
    server = echo(tls.context)
    await server.start()
    task = asyncio.create_task(tls.watch(0.01))
    os.replace(other.cert, spec.cert)
    os.replace(other.key, spec.key)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if not tls.changed():
            break
    task.cancel()
    assert await peer_names(server.port, client_context(verify=False), None) == ["b.example"]


# --- start-up errors ---------------------------------------------------------------------


def test_mismatched_key_names_both_files(ca: trustme.CA, tmp_path: Path) -> None:
    a = write_cert(ca, tmp_path, "a", "a.example")
    b = write_cert(ca, tmp_path, "b", "b.example")
    with pytest.raises(TLSConfigError) as info:
        ServerTLS([CertificateSpec(cert=a.cert, key=b.key)])
    assert str(b.key) in str(info.value)
    assert str(a.cert) in str(info.value)
    assert "does not match" in str(info.value)


def test_missing_files(ca: trustme.CA, tmp_path: Path) -> None:
    a = write_cert(ca, tmp_path, "a", "a.example")
    with pytest.raises(TLSConfigError, match=f"{tmp_path}/nope.crt does not exist"):
        server_context(tmp_path / "nope.crt", a.key)
    with pytest.raises(TLSConfigError, match=f"{tmp_path}/nope.key does not exist"):
        server_context(a.cert, tmp_path / "nope.key")
    with pytest.raises(TLSConfigError, match="no certificate"):
        ServerTLS([])


def test_garbage_files(ca: trustme.CA, tmp_path: Path) -> None:
    a = write_cert(ca, tmp_path, "a", "a.example")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"hello\n")
    with pytest.raises(TLSConfigError, match=f"certificate file {junk} holds no valid PEM"):
        server_context(junk, a.key)
    with pytest.raises(TLSConfigError, match=f"private key file {junk} holds no valid PEM"):
        server_context(a.cert, junk)
    with pytest.raises(TLSConfigError, match="is a directory"):
        server_context(tmp_path, a.key)


def test_unreadable_key(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_cert(ca, tmp_path, "a", "a.example")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == a.key:  # what a chmod 000 does to a non-root process
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(TLSConfigError, match=f"private key file {a.key} is not readable"):
        server_context(a.cert, a.key)


async def test_starttls_upgrade_uses_sni(ca: trustme.CA, tmp_path: Path) -> None:
    """The STARTTLS path: a plain stream upgraded with the same front context."""
    tls = ServerTLS([write_cert(ca, tmp_path, "a", "a.example"),
                     write_cert(ca, tmp_path, "b", "b.example")])
    seen: list[str | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\r\n"
        writer.write(b"220 go ahead\r\n")
        await writer.drain()
        await writer.start_tls(tls.context)
        seen.append(describe(writer.get_extra_info("ssl_object"), tls=tls).server_name)
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\r\n")
        assert await reader.readline() == b"220 go ahead\r\n"
        await asyncio.wait_for(writer.start_tls(trusting(ca), server_hostname="b.example"), 10)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert sans(der) == ["b.example"]
        writer.write(b"EHLO x\r\n")
        assert await reader.readline() == b"EHLO x\r\n"
        assert seen == ["b.example"]
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


# --- self-signed generation --------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048"])
async def test_generate_self_signed(tmp_path: Path, echo: type[EchoServer], key_type: str) -> None:
    spec = generate_self_signed(
        tmp_path / "c.pem", tmp_path / "k.pem", ["mx.example.org", "mail.example.org", "127.0.0.1"],
        key_type=key_type,  # type: ignore[arg-type]
    )
    assert stat.S_IMODE(spec.key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(spec.cert.read_bytes())
    key = cert.public_key()
    if key_type == "ecdsa-p256":
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 2048
    assert load_certificate_names(spec.cert) == ("mx.example.org", "mail.example.org")
    # OpenSSL verifies it (trusting the cert itself), hostname included.
    server = echo(ServerTLS([spec]).context)
    await server.start()
    client = client_context(verify=True, cafile=spec.cert)
    _, w = await connect(server.port, client, "mail.example.org")
    w.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(server.port, client, "other.example.org")
