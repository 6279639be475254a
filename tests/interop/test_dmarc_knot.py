"""DMARC lookups through the real resolver (mailmoat.net.dns.DNSResolver) against Knot DNS.

knotd serves a ``test.`` zone publishing a Public Suffix Domain record (RFC 9989 §5.2: a PSO
"MUST include the "psd" tag ... with a value of "y"") and an ``example.test.`` zone. Expected
results are worked out by hand from the zone text by the RFC 9989 §4.10 rules (noted per case);
the same zones loaded into FakeResolver must give the same results (differential).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from knot_fixture import KnotServer, knot_server  # noqa: F401  (fixture)

from mailmoat.auth.dkim import DKIMResult, DKIMResultCode
from mailmoat.auth.dmarc import (
    DiscoveryMode,
    Disposition,
    DMARCResult,
    DMARCVerdict,
    Policy,
    check_dmarc,
)
from mailmoat.net.dns import DNSResolver
from mailmoat.resolver import FakeResolver, Resolver

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.timeout(120)]

TLD = """\
$ORIGIN test.
$TTL 300
@        IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60
         IN NS  ns1
ns1      IN A   127.0.0.1
_dmarc   IN TXT "v=DMARC1; p=reject; np=reject; psd=y"
"""

EXAMPLE = """\
$ORIGIN example.test.
$TTL 300
@        IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60
         IN NS  ns1
ns1      IN A   127.0.0.1
@        IN A   192.0.2.1
www      IN A   192.0.2.2
_dmarc   IN TXT "v=DMARC1; p=reject; sp=quarantine; " "np=reject; rua=mailto:d@example.test"
dept     IN A   192.0.2.3
a.dept   IN A   192.0.2.4
_dmarc.dept IN TXT "v=DMARC1; p=none; psd=n"
_dmarc.two  IN TXT "v=DMARC1; p=none"
_dmarc.two  IN TXT "v=DMARC1; p=reject"
"""

ZONES = {"test": TLD, "example.test": EXAMPLE}


def sig(domain: str) -> DKIMResult:
    return DKIMResult(result=DKIMResultCode.PASS, domain=domain, selector="s1")


#: (From domain, DKIM passes, expected result, policy tag, policy, disposition, org domain)
CASES = [
    # record at the Organizational Domain; relaxed DKIM alignment (same org example.test)
    ("www.example.test", ["example.test"], DMARCVerdict.PASS, "sp", Policy.QUARANTINE,
     Disposition.NONE, "example.test"),
    # existing subdomain, nothing aligned: "sp" (§4.10.1)
    ("www.example.test", [], DMARCVerdict.FAIL, "sp", Policy.QUARANTINE,
     Disposition.QUARANTINE, "example.test"),
    # NXDOMAIN subdomain: "np" (§4.10.1, §3.2.13)
    ("ghost.example.test", [], DMARCVerdict.FAIL, "np", Policy.REJECT, Disposition.REJECT,
     "example.test"),
    # psd=n makes dept.example.test its own Organizational Domain (§4.10.2 rule 1): the
    # parent's signature no longer aligns; the record has no sp, so p=none applies.
    ("a.dept.example.test", ["example.test"], DMARCVerdict.FAIL, "p", Policy.NONE,
     Disposition.NONE, "dept.example.test"),
    # no record below the PSD: org is one label below "test" (§4.10.2 rule 2); the PSD's
    # record applies; mail.noorg.test does not exist, so its "np".
    ("mail.noorg.test", [], DMARCVerdict.FAIL, "np", Policy.REJECT, Disposition.REJECT,
     "noorg.test"),
    # two records at _dmarc.two: discarded (§4.10 step 2); example.test's record applies,
    # two.example.test exists (an empty non-terminal, RFC 8020) so "sp".
    ("two.example.test", [], DMARCVerdict.FAIL, "sp", Policy.QUARANTINE,
     Disposition.QUARANTINE, "example.test"),
]


def _summary(result: DMARCResult) -> tuple[object, ...]:
    return (result.result, result.policy_tag, result.policy, result.disposition,
            result.org_domain)


async def _run(resolver: Resolver) -> list[tuple[object, ...]]:
    return [
        _summary(await check_dmarc(resolver, author, None, [sig(d) for d in passes]))
        for author, passes, *_ in CASES
    ]


async def test_dmarc_through_knot(knot_server: Callable[..., KnotServer]) -> None:  # noqa: F811
    server = knot_server(ZONES)
    resolver = DNSResolver([server.address], timeout=2, lifetime=5)
    expected = [tuple(case[2:]) for case in CASES]
    assert await _run(resolver) == expected
    # Differential: the same zone text in the fake resolver gives the same answers.
    assert await _run(FakeResolver.from_zones(ZONES)) == expected


async def test_psl_mode_through_knot(knot_server: Callable[..., KnotServer]) -> None:  # noqa: F811
    server = knot_server(ZONES)
    resolver = DNSResolver([server.address], timeout=2, lifetime=5)
    # RFC 7489 §6.6.3: _dmarc.www.example.test (none), then the PSL Organizational Domain
    # example.test ("test" is not listed: an unknown TLD counts as a public suffix).
    result = await check_dmarc(resolver, "www.example.test", None, [],
                               mode=DiscoveryMode.PSL)
    assert (result.result, result.policy_domain, result.policy) == (
        DMARCVerdict.FAIL, "example.test", Policy.QUARANTINE)
    assert result.record is not None
    # RFC 7489 §6.1 / RFC 9989 §4.5: the two character-strings are joined.
    assert result.record.text == ("v=DMARC1; p=reject; sp=quarantine; "
                                  "np=reject; rua=mailto:d@example.test")
    # §6.6.3 step 5: two records at the From domain end discovery (no DMARC).
    two = await check_dmarc(resolver, "two.example.test", None, [], mode=DiscoveryMode.PSL)
    assert two.result is DMARCVerdict.NONE
