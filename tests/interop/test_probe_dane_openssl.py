"""Differential: our DANE matching (``auth.dane.match_chain``) against OpenSSL's DANE
verifier (``openssl s_client -dane_tlsa_domain -dane_tlsa_rrdata``) on the same chains.

A TLS server on 127.0.0.1 presents a trustme chain; for every TLSA record set, OpenSSL (set up
as Postfix sets it up for SMTP: ``-dane_ee_no_namechecks``, RFC 7672 §3.1.1) either verifies
the handshake or not, and our verdict on the chain the probe received must be the same.
PKIX-TA(0)/PKIX-EE(1) records are left out: RFC 7672 §3.1.3 makes them unusable for SMTP,
where OpenSSL's generic DANE would still try them.
"""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import require_peer
from mailmoat.auth.dane import DANEStatus, match_chain
from mailmoat.net.probe import probe
from mailmoat.resolver import TLSA

pytestmark = pytest.mark.timeout(180)

HOST = "mx.example.test"


@dataclass
class Server:
    port: int
    chain: list[bytes]  # DER, as presented
    root: bytes


def _tls_server(context: ssl.SSLContext) -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"554 5.3.2 not an SMTP server\r\n")
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _make(root: trustme.CA, *names: str, expired: bool = False) -> Iterator[Server]:
    intermediate = root.create_child_ca()
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    leaf = intermediate.issue_cert(
        *names, not_before=past if expired else None,
        not_after=past + datetime.timedelta(days=2) if expired else None)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    chain = [_der(b.bytes()) for b in leaf.cert_chain_pems]
    for port in _tls_server(context):
        yield Server(port=port, chain=chain, root=_der(root.cert_pem.bytes()))


@pytest.fixture(scope="module")
def root() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server(root: trustme.CA) -> Iterator[Server]:
    yield from _make(root, HOST)


@pytest.fixture(scope="module")
def wildcard(root: trustme.CA) -> Iterator[Server]:
    yield from _make(root, "*.example.test")


@pytest.fixture(scope="module")
def expired(root: trustme.CA) -> Iterator[Server]:
    yield from _make(root, HOST, expired=True)


def _openssl_verifies(port: int, records: list[str], domain: str) -> bool:
    openssl = require_peer("openssl")
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", domain,
            "-dane_tlsa_domain", domain, "-dane_ee_no_namechecks", "-verify_return_error",
            "-brief"]
    for record in records:
        args += ["-dane_tlsa_rrdata", record]
    done = subprocess.run(args, input=b"", capture_output=True, timeout=30, check=False)
    text = (done.stdout + done.stderr).decode(errors="replace")
    return "Verification: OK" in text


def _content(der: bytes, selector: int) -> bytes:
    if selector == 0:
        return der
    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _rr(usage: int, selector: int, mtype: int, der: bytes) -> str:
    content = _content(der, selector)
    data = {0: content, 1: hashlib.sha256(content).digest(),
            2: hashlib.sha512(content).digest()}[mtype]
    return f"{usage} {selector} {mtype} {data.hex()}"


def _tlsa(text: str) -> TLSA:
    usage, selector, mtype, data = text.split()
    return TLSA(usage=int(usage), selector=int(selector), mtype=int(mtype),
                data=bytes.fromhex(data))


async def _compare(server: Server, records: list[str], domain: str = HOST) -> bool:
    report = await probe("127.0.0.1", server.port, mode="implicit-tls", server_name=domain,
                         timeout=10, test_versions=False, helo="client.test")
    # The TLS server refuses SMTP (554) right after the handshake: the probe stops there,
    # with the chain.
    assert report.chain_der == tuple(server.chain)
    ours = match_chain([_tlsa(r) for r in records], list(report.chain_der), hostname=domain,
                       now=datetime.datetime.now(datetime.UTC))
    theirs = _openssl_verifies(server.port, records, domain)
    assert (ours.status is DANEStatus.MATCHED) == theirs, (records, ours)
    return theirs


LEAF = "leaf"
INTERMEDIATE = "intermediate"
ROOT = "root"
CASES = [
    # (records as (usage, selector, mtype, which certificate), name, expected by RFC 7672)
    ([(3, 1, 1, LEAF)], HOST, True),
    ([(3, 0, 1, LEAF)], HOST, True),
    ([(3, 1, 2, LEAF)], HOST, True),
    ([(3, 0, 0, LEAF)], HOST, True),
    ([(3, 1, 1, INTERMEDIATE)], HOST, False),
    ([(3, 1, 1, LEAF)], "other.example.test", True),  # DANE-EE: no name check (§3.1.1)
    ([(2, 1, 1, INTERMEDIATE)], HOST, True),
    ([(2, 0, 1, INTERMEDIATE)], HOST, True),
    ([(2, 1, 1, INTERMEDIATE)], "other.example.test", False),  # DANE-TA: names (§3.2.2)
    ([(2, 0, 1, ROOT)], HOST, False),  # TA digest, but the root is not sent
    ([(2, 0, 0, ROOT)], HOST, True),  # the full TA certificate in the record
    ([(2, 1, 1, LEAF)], HOST, False),  # a TA record for the leaf is not a TA
    ([(3, 1, 2, INTERMEDIATE), (3, 1, 1, LEAF)], HOST, False),  # digest agility (RFC 7671 §9)
]


def _records(server: Server, spec: list[tuple[int, int, int, str]]) -> list[str]:
    pick = {LEAF: server.chain[0], INTERMEDIATE: server.chain[1], ROOT: server.root}
    return [_rr(u, s, m, pick[which]) for u, s, m, which in spec]


@pytest.mark.parametrize(("spec", "name", "expected"), CASES)
async def test_against_openssl(server: Server, spec: list[tuple[int, int, int, str]],
                               name: str, expected: bool) -> None:
    assert await _compare(server, _records(server, spec), name) is expected


@pytest.mark.parametrize(("name", "expected"), [
    ("mx.example.test", True), ("example.test", False), ("a.mx.example.test", False)])
async def test_wildcard_against_openssl(wildcard: Server, name: str, expected: bool) -> None:
    records = _records(wildcard, [(2, 1, 1, INTERMEDIATE)])
    assert await _compare(wildcard, records, name) is expected


@pytest.mark.parametrize(("spec", "expected"), [
    ([(3, 1, 1, LEAF)], True),  # DANE-EE ignores validity dates (§3.1.1)
    ([(2, 1, 1, INTERMEDIATE)], False),  # DANE-TA: an expired leaf fails
])
async def test_expired_against_openssl(expired: Server, spec: list[tuple[int, int, int, str]],
                                       expected: bool) -> None:
    assert await _compare(expired, _records(expired, spec)) is expected

