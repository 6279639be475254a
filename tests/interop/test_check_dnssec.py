"""``mailmoat check`` DNSSEC and TLSA through a real validating resolver.

Knot DNS serves ``example.com`` signed (automatic ECDSA P-256 signing) and ``insecure.example``
unsigned; unbound on 127.0.0.1 validates, with ``example.com``'s DNSKEY as its trust anchor
and stub zones pointing at knot. What unbound validates, it marks with the AD bit (RFC 4035
§3.2.3), which the posture check reads when told the resolver is trusted (``--dnssec``):
signed answers give DNSSEC ok and TLSA usable for DANE (RFC 7672 §2.2); unsigned ones give
"not validated" and TLSA that senders ignore.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest
from knot_fixture import start_knot

from conftest import require_peer
from mailmoat.gateway.posture import PostureOptions, Severity, check_domain
from mailmoat.net.dns import DNSResolver

pytestmark = [pytest.mark.peer("unbound"), pytest.mark.timeout(120)]

SOA = ("$TTL 300\n@ 3600 IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60\n"
       "@ IN NS ns1\nns1 IN A 127.0.0.1\n")
ZONES = {
    "example.com": "$ORIGIN example.com.\n" + SOA + """
@            IN MX 10 mx1
@            IN TXT "v=spf1 mx -all"
mx1          IN A 127.0.0.1
_dmarc       IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.com"
_25._tcp.mx1 IN TLSA 3 1 1 """ + "cd" * 32 + "\n",
    "insecure.example": "$ORIGIN insecure.example.\n" + SOA + """
@            IN MX 10 mx1
@            IN TXT "v=spf1 mx -all"
mx1          IN A 127.0.0.1
_dmarc       IN TXT "v=DMARC1; p=reject; rua=mailto:d@insecure.example"
_25._tcp.mx1 IN TLSA 3 1 1 """ + "cd" * 32 + "\n",
    "com": "$ORIGIN com.\n" + SOA,
    "example": "$ORIGIN example.\n" + SOA,
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return int(udp.getsockname()[1])


def _dnskeys(port: int, zone: str) -> list[str]:
    """The zone's DNSKEY RRset as master-file lines (waits for knot's signing)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        query = dns.message.make_query(zone + ".", dns.rdatatype.DNSKEY, want_dnssec=True)
        with contextlib.suppress(Exception):
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.DNSKEY:
                    return [f"{zone}. IN DNSKEY {rr.to_text()}" for rr in rrset if rr.flags & 0x1]
        time.sleep(0.2)
    raise RuntimeError(f"no DNSKEY for {zone} from knot")


@contextlib.contextmanager
def start_unbound(knot_port: int, anchors: list[str], stubs: list[str]) -> Iterator[str]:
    unbound = require_peer("unbound")
    workdir = Path(tempfile.mkdtemp(prefix="unbound-"))
    port = _free_port()
    lines = [
        "server:",
        "  interface: 127.0.0.1", f"  port: {port}", "  do-daemonize: no",
        '  chroot: ""', '  username: ""', f'  directory: "{workdir}"', '  pidfile: ""',
        "  use-syslog: no", f'  logfile: "{workdir / "unbound.log"}"', "  verbosity: 1",
        "  do-not-query-localhost: no", "  module-config: \"validator iterator\"",
        "  access-control: 127.0.0.0/8 allow", "  val-log-level: 2",
        "  harden-dnssec-stripped: yes", "  qname-minimisation: no", "  do-ip6: no",
        *(f'  trust-anchor: "{anchor}"' for anchor in anchors),
        'remote-control:', '  control-enable: no',
    ]
    for zone in stubs:
        lines += ["stub-zone:", f'  name: "{zone}."', f"  stub-addr: 127.0.0.1@{knot_port}"]
    conf = workdir / "unbound.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.Popen([unbound, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                log = (workdir / "unbound.log")
                raise RuntimeError(f"unbound exited: {log.read_text() if log.exists() else ''}")
            query = dns.message.make_query("example.com.", dns.rdatatype.SOA)
            try:
                dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()  # this PID only
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def validating() -> Iterator[str]:
    with start_knot(ZONES, signed=["example.com"]) as knot:
        anchors = _dnskeys(knot.port, "example.com")
        with start_unbound(knot.port, anchors, list(ZONES)) as address:
            yield address


async def test_signed_zone_validates(validating: str) -> None:
    resolver = DNSResolver([validating], trust_ad=True)
    options = PostureOptions(smtp=False, common_selectors=False, dnssec_validating=True)
    report = await check_domain("example.com", resolver, options=options)
    assert [f.severity for f in report.by_check("dnssec")] == [Severity.OK], report.findings
    assert [f.severity for f in report.by_check("tlsa")] == [Severity.OK]
    assert report.details["dnssec"]["status"] == "validated"


async def test_unsigned_zone_is_not_validated(validating: str) -> None:
    resolver = DNSResolver([validating], trust_ad=True)
    options = PostureOptions(smtp=False, common_selectors=False, dnssec_validating=True)
    report = await check_domain("insecure.example", resolver, options=options)
    assert [f.severity for f in report.by_check("dnssec")] == [Severity.WARNING]
    # RFC 7672 §2.2: TLSA records from an unsigned zone are unusable for DANE
    assert [f.severity for f in report.by_check("tlsa")] == [Severity.ERROR]


def test_ad_bit_is_really_set(validating: str) -> None:
    host, port = validating.split(":")
    query = dns.message.make_query("example.com.", dns.rdatatype.MX, want_dnssec=True)
    query.flags |= dns.flags.AD
    response = dns.query.udp(query, host, port=int(port), timeout=3)
    assert response.flags & dns.flags.AD  # unbound validated knot's signatures
