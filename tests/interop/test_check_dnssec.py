"""``mailmoat check`` DNSSEC and TLSA through a real validating resolver.

Knot DNS serves ``example.com`` signed (automatic ECDSA P-256 signing) and ``insecure.example``
unsigned; unbound on 127.0.0.1 validates, with ``example.com``'s DNSKEY as its trust anchor
and stub zones pointing at knot. What unbound validates, it marks with the AD bit (RFC 4035
§3.2.3), which the posture check reads when told the resolver is trusted (``--dnssec``):
signed answers give DNSSEC ok and TLSA usable for DANE (RFC 7672 §2.2); unsigned ones give
"not validated" and TLSA that senders ignore.
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest
from unbound_fixture import start_validating

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


@pytest.fixture(scope="module")
def validating() -> Iterator[str]:
    with start_validating(ZONES, signed=["example.com"]) as (_knot, unbound):
        yield unbound.address


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
