"""``mailmoat check`` against real peers: zones served by Knot DNS, MTA-STS policies over HTTPS
from a local test CA, STARTTLS probed on a private Postfix ``smtpd`` (and on mailmoat's own
listeners).

Two domains: ``example.com`` set up right, ``broken.example`` broken in every area. The
expected severities follow the RFC rule behind each check (RFC 7208 §4.5 one SPF record,
RFC 7489 §7.1 report authorisation, RFC 6376 §3.6.1 revoked key, RFC 8461 §4.1 MX matching,
RFC 8460 §3 record syntax, RFC 6125 certificate names). The MTA-STS policy host
``mta-sts.<domain>`` resolves to 127.0.0.1 in the zones; the fetcher connects to the test
server's port while SNI and the certificate check use the real name.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from https_fixture import StaticHTTPS, mta_sts_files, serve_https
from knot_fixture import KnotServer, knot_server  # noqa: F401  (fixture)

from conftest import missing, require_peer
from mailmoat.auth.dkim import key_record, txt_strings
from mailmoat.cli.main import main
from mailmoat.gateway.posture import (
    DomainReport,
    PostureOptions,
    Severity,
    address_resolver,
    check_domains,
)
from mailmoat.net.dns import DNSResolver
from mailmoat.net.fetch import Fetcher
from mailmoat.net.mtasts import fetch_policy
from mailmoat.net.starttls_probe import ProbeResult, probe_starttls

trustme = pytest.importorskip("trustme")

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.timeout(180)]

GOOD_POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 604800\r\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" version="1.2" baseProfile="tiny-ps"/>'
BROKEN_POLICY = b"version: STSv1\nmode: enforce\nmx: mail.broken.example\nmax_age: 604800\n"


def _quoted(text: str) -> str:
    return " ".join(f'"{part}"' for part in txt_strings(text))


def zones() -> dict[str, str]:
    key = key_record(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    soa = "@ 3600 IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60\n@ IN NS ns1\n" \
          "ns1 IN A 127.0.0.1\n"
    good = f"""$ORIGIN example.com.
$TTL 300
{soa}
@             IN MX  10 mx1
@             IN TXT "v=spf1 mx include:_spf.example.com -all"
_spf          IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
mx1           IN A   127.0.0.1
mta-sts       IN A   127.0.0.1
_mta-sts      IN TXT "v=STSv1; id=20261128T0000"
_smtp._tls    IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"
_dmarc        IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"
s1._domainkey IN TXT ( {_quoted(key)} )
default._bimi IN TXT "v=BIMI1; l=https://logo.example.com/logo.svg"
_25._tcp.mx1  IN TLSA 3 1 1 {"ab" * 32}
"""
    broken = f"""$ORIGIN broken.example.
$TTL 300
{soa}
@              IN MX  10 mx
@              IN TXT "v=spf1 +all"
@              IN TXT "v=spf1 mx -all"
mx             IN A   127.0.0.1
mta-sts        IN A   127.0.0.1
_mta-sts       IN TXT "v=STSv1; id=1"
_smtp._tls     IN TXT "v=TLSRPTv1; rua=reports@broken.example"
_dmarc         IN TXT "v=DMARC1; p=none; rua=mailto:d@thirdparty.example"
old._domainkey IN TXT "v=DKIM1; k=rsa; p="
"""
    # the parent zones answer the DMARC tree walk's questions (RFC 9989 §4.10) authoritatively
    tld = "$TTL 300\n" + soa
    return {"example.com": good, "broken.example": broken, "com": "$ORIGIN com.\n" + tld,
            "example": "$ORIGIN example.\n" + tld}


# ----------------------------------------------------------------------- HTTPS server ---

@dataclass
class Peers:
    knot: KnotServer
    https_port: int
    smtp_port: int
    cafile: Path

    def fetcher(self) -> Fetcher:
        return Fetcher(cafile=self.cafile, timeout=10, addresses={
            "mta-sts.example.com": ("127.0.0.1", self.https_port),
            "mta-sts.broken.example": ("127.0.0.1", self.https_port),
            "logo.example.com": ("127.0.0.1", self.https_port),
        })

    def prober(self) -> Callable[[str, Sequence[str]], Any]:
        async def probe(host: str, addresses: Sequence[str]) -> ProbeResult:
            # the address comes from knot (A 127.0.0.1); the port is Postfix's
            return await probe_starttls(host, port=self.smtp_port, timeout=15,
                                        connect_to=addresses[0], cafile=self.cafile)
        return probe


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def cafile(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def https(ca: Any) -> Iterator[int]:
    files = mta_sts_files({"mta-sts.example.com": GOOD_POLICY,
                           "mta-sts.broken.example": BROKEN_POLICY})
    files[("logo.example.com", "/logo.svg")] = ("image/svg+xml", SVG)
    server = StaticHTTPS(("127.0.0.1", 0), files)
    with serve_https(server, ca, ["mta-sts.example.com", "mta-sts.broken.example",
                                  "logo.example.com"]) as port:
        yield port


@pytest.fixture(scope="module")
def postfix(ca: Any) -> Iterator[int]:
    import os

    from postfix_smtpd_fixture import PostfixSMTPD
    program = require_peer("postfix")
    if os.geteuid() != 0:
        missing("a private Postfix instance needs root")
    cert = ca.issue_cert("mx1.example.com")
    server = PostfixSMTPD(program, cert_pem=cert.private_key_and_cert_chain_pem.bytes(),
                          key_pem=cert.private_key_pem.bytes())
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


@pytest.fixture
def peers(knot_server: Callable[..., KnotServer], https: int, postfix: int,  # noqa: F811
          cafile: Path) -> Peers:
    return Peers(knot=knot_server(zones()), https_port=https, smtp_port=postfix, cafile=cafile)


def sev(report: DomainReport, check: str) -> list[Severity]:
    return [f.severity for f in report.by_check(check)]


# -------------------------------------------------------------------------------- tests ---

async def test_posture_against_knot_https_and_postfix(peers: Peers) -> None:
    resolver = DNSResolver([peers.knot.address])
    options = PostureOptions(selectors=("s1", "old"), common_selectors=False)
    async with peers.fetcher() as fetcher:
        good, broken = await check_domains(["example.com", "broken.example"], resolver,
                                           options=options, fetcher=fetcher,
                                           prober=peers.prober())  # type: ignore[arg-type]
    # example.com: every area right; DNSSEC unknown and TLSA unverifiable are information
    assert [f for f in good.findings if f.severity in (Severity.WARNING, Severity.ERROR)] == []
    for check in ("mx", "spf", "dmarc", "dkim", "bimi", "mta-sts", "tls-rpt", "starttls"):
        assert Severity.OK in sev(good, check), (check, good.findings)
    tls = good.details["mx"]["hosts"][0]["starttls"]["tls"]
    assert tls["version"] in ("TLSv1.2", "TLSv1.3")  # Postfix negotiated it
    assert good.details["mta_sts"]["policy"]["mx"] == ["mx1.example.com"]
    assert good.details["mx"]["hosts"][0]["tlsa"][0]["usage"] == 3
    # broken.example
    assert sev(broken, "spf") == [Severity.ERROR]  # two v=spf1 records
    assert Severity.WARNING in sev(broken, "dmarc")  # p=none
    assert any("thirdparty.example has not authorised" in f.message
               for f in broken.by_check("dmarc"))
    assert any("revoked" in f.message for f in broken.by_check("dkim"))
    assert Severity.ERROR in sev(broken, "mta-sts")  # MX not in the enforce policy
    assert sev(broken, "tls-rpt") == [Severity.ERROR]
    # Postfix's certificate names mx1.example.com, not mx.broken.example
    assert broken.details["mx"]["hosts"][0]["starttls"]["certificate_valid"] is False
    assert sev(broken, "starttls") == [Severity.ERROR, Severity.ERROR]


async def test_fetcher_resolves_through_knot(peers: Peers) -> None:
    resolve = address_resolver(DNSResolver([peers.knot.address]))
    assert await resolve("mta-sts.example.com") == ["127.0.0.1"]
    async with Fetcher(cafile=peers.cafile, resolve=resolve, timeout=10) as fetcher:
        result = await fetcher.get(
            f"https://mta-sts.example.com:{peers.https_port}/.well-known/mta-sts.txt")
    assert result.body == GOOD_POLICY
    async with peers.fetcher() as fetcher:
        fetched = await fetch_policy(fetcher, "broken.example")
    assert fetched.policy is not None
    assert fetched.policy.mx == ("mail.broken.example",)


def test_cli_json(peers: Peers) -> None:
    args = ["check", "example.com", "broken.example", "--resolver", peers.knot.address,
            "--cafile", str(peers.cafile), "--selector", "s1", "--selector", "old",
            "--no-common-selectors", "--timeout", "15",
            "--map-host", f"mta-sts.example.com=127.0.0.1:{peers.https_port}",
            "--map-host", f"mta-sts.broken.example=127.0.0.1:{peers.https_port}",
            "--map-host", f"logo.example.com=127.0.0.1:{peers.https_port}",
            "--map-host", f"mx1.example.com=127.0.0.1:{peers.smtp_port}",
            "--map-host", f"mx.broken.example=127.0.0.1:{peers.smtp_port}"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 1, result.output  # broken.example has errors
    data = json.loads(result.output)
    worst = {d["domain"]: d["worst"] for d in data["domains"]}
    assert worst == {"example.com": "info", "broken.example": "error"}
    human = CliRunner().invoke(main, args)
    assert "example.com: worst info" in human.output


async def test_probe_mailmoat_listener(tmp_path: Path) -> None:
    from server_fixture import make_data_dir, start_server

    config = make_data_dir(tmp_path / "mm", listeners=(("starttls", "mx"),))
    server = start_server(config)
    try:
        result = await probe_starttls("mx.test", port=server.port("starttls", "mx"),
                                      connect_to="127.0.0.1", cafile=server.cert, timeout=10)
    finally:
        server.stop()
    assert result.connected
    assert result.starttls_offered
    assert result.tls is not None
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert "mx.test" in (result.tls.subject or "") + " ".join(result.tls.san)


async def test_probe_server_without_starttls() -> None:
    # aiosmtpd without a TLS context offers no STARTTLS (an independent SMTP server)
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object
                              ) -> str:
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        result = await probe_starttls("mx.example.com", port=port, connect_to="127.0.0.1",
                                      timeout=10)
    finally:
        controller.stop()
    assert result.connected
    assert result.starttls_offered is False
    assert result.tls is None


def test_key_text_is_split() -> None:
    # the DKIM key in the zone needs several character-strings (RFC 6376 §3.6.2.2)
    key = key_record(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert len(txt_strings(key)) > 1
    assert base64.b64decode(key.split("p=")[1])
