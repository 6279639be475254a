"""End to end DANE: ``probe`` with TLSA records from a DNSSEC-signed zone (knot) through a
validating resolver (unbound) - the only setup in which the AD bit means anything.

* knotd serves ``example.test`` (signed on load) and ``plain.test`` (unsigned), both with
  TLSA records for the SMTP server's port;
* unbound validates ``example.test`` with its DNSKEYs as trust anchors (read from knot) and
  has no anchor for ``plain.test`` (so its answers are insecure, never AD);
* ``DNSResolver([unbound], trust_ad=True)`` is the resolver the probe uses;
* the SMTP server is a few lines of asyncio with STARTTLS and a trustme certificate.

Expected verdicts follow RFC 7672: a matching ``3 1 1`` record from the signed zone is
"matched", a non-matching one "mismatch", a matching one from the unsigned zone "insecure".
The AD bit itself is checked with dnspython straight against unbound (the oracle for
"authenticated").
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import trustme
from unbound_fixture import spki_sha256, start_validating

from mailmoat.auth.dane import DANEStatus
from mailmoat.net.dns import DNSResolver
from mailmoat.net.probe import probe

pytestmark = pytest.mark.timeout(120)

SIGNED = "example.test"
UNSIGNED = "plain.test"


def _query(port: int, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    query.flags |= dns.flags.AD
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=2)


async def _smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                context: ssl.SSLContext) -> None:
    try:
        writer.write(b"220 mx ESMTP test\r\n")
        tls = False
        while line := await reader.readline():
            verb = line.strip().upper()
            if verb.startswith(b"EHLO"):
                writer.write(b"250-mx\r\n250 PIPELINING\r\n" if tls
                             else b"250-mx\r\n250 STARTTLS\r\n")
            elif verb == b"STARTTLS":
                writer.write(b"220 go\r\n")
                await writer.drain()
                await writer.start_tls(context)
                tls = True
                continue
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"502 no\r\n")
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
def leaf() -> trustme.LeafCert:
    return trustme.CA().issue_cert(f"mx.{SIGNED}", f"bad.{SIGNED}", f"mx.{UNSIGNED}")


@pytest.fixture
async def smtp_port(leaf: trustme.LeafCert) -> AsyncIterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    server = await asyncio.start_server(lambda r, w: _smtp(r, w, context), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def _zone(origin: str, port: int, good: str) -> str:
    return f"""\
$ORIGIN {origin}.
$TTL 300
@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300
@ IN NS ns.{origin}.
ns IN A 127.0.0.1
mx IN A 127.0.0.1
bad IN A 127.0.0.1
_{port}._tcp.mx IN TLSA 3 1 1 {good}
_{port}._tcp.bad IN TLSA 3 1 1 {"00" * 32}
"""


@pytest.fixture
def resolver_port(smtp_port: int, leaf: trustme.LeafCert) -> Iterator[int]:
    good = spki_sha256(leaf.cert_chain_pems[0].bytes())
    zones = {SIGNED: _zone(SIGNED, smtp_port, good), UNSIGNED: _zone(UNSIGNED, smtp_port, good)}
    with start_validating(zones, signed=[SIGNED]) as (_knot, unbound):
        yield unbound.port


async def test_ad_bit_oracle(resolver_port: int, smtp_port: int) -> None:
    """unbound sets AD for the signed zone and not for the unsigned one (dnspython, direct)."""
    signed = _query(resolver_port, f"_{smtp_port}._tcp.mx.{SIGNED}.", dns.rdatatype.TLSA)
    unsigned = _query(resolver_port, f"_{smtp_port}._tcp.mx.{UNSIGNED}.", dns.rdatatype.TLSA)
    assert signed.flags & dns.flags.AD
    assert signed.answer
    assert not unsigned.flags & dns.flags.AD
    assert unsigned.answer


@pytest.mark.parametrize(("host", "status"), [
    (f"mx.{SIGNED}", DANEStatus.MATCHED),
    (f"bad.{SIGNED}", DANEStatus.MISMATCH),
    (f"mx.{UNSIGNED}", DANEStatus.INSECURE),
    (f"none.{SIGNED}", DANEStatus.NO_TLSA),
])
async def test_probe_dane(resolver_port: int, smtp_port: int, host: str,
                          status: DANEStatus) -> None:
    resolver = DNSResolver([f"127.0.0.1:{resolver_port}"], trust_ad=True)
    report = await probe("127.0.0.1", smtp_port, server_name=host, timeout=10,
                         test_versions=False, resolver=resolver, helo="client.test")
    assert report.tls_version is not None
    assert report.dane is not None
    assert report.dane.status is status, report.dane.reason


async def test_ad_not_trusted_without_trust_ad(resolver_port: int, smtp_port: int) -> None:
    """RFC 7672 §2.1 / ARCHITECTURE: the AD bit counts only from a resolver we configured to
    trust; the same answer through DNSResolver(trust_ad=False) is "insecure"."""
    resolver = DNSResolver([f"127.0.0.1:{resolver_port}"], trust_ad=False)
    report = await probe("127.0.0.1", smtp_port, server_name=f"mx.{SIGNED}", timeout=10,
                         test_versions=False, resolver=resolver, helo="client.test")
    assert report.dane is not None
    assert report.dane.status is DANEStatus.INSECURE
