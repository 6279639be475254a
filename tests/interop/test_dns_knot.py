"""DNSResolver against a real authoritative server (Knot DNS), and FakeResolver against both.

Knot serves the zones below on 127.0.0.1; the expected answers are written from the zone text
by hand (RFC 1034/1035/2308 semantics), and the same zone text loaded into
``FakeResolver.from_zone_text`` must give the same answers as knot through ``DNSResolver``
(differential).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable

import pytest
from knot_fixture import KnotServer, knot_server  # noqa: F401  (fixture)

from mailmoat.clock import FixedClock
from mailmoat.errors import DNSError, DNSPermanentError, DNSTemporaryError
from mailmoat.net.dns import DNSResolver
from mailmoat.resolver import MX, TLSA, TXT, Answer, FakeResolver, NoData, NXDomain, RRType

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.timeout(120)]

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

#: A DKIM-style key long enough to need several character-strings (RFC 6376 §3.6.2.2).
KEY = base64.b64encode(bytes(range(256)) + bytes(range(255, -1, -1))[:136]).decode()
KEY_PARTS = [KEY[i : i + 200] for i in range(0, len(KEY), 200)]
TLSA_HEX = "8f" * 32
BIG = [f"{i:02d}" + "b" * 248 for i in range(8)]  # 8 x 250 octets: over 1232, so TC over UDP

EXAMPLE = f"""
$ORIGIN example.com.
$TTL 300
@       3600 IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60
             IN NS  ns1
             IN MX  10 mx1
             IN MX  20 mx2.example.com.
             IN TXT "v=spf1 mx a:relay.example.com include:_spf.example.com -all"
             IN A    192.0.2.10
             IN AAAA 2001:db8::10
ns1          IN A    192.0.2.53
mx1     600  IN A    192.0.2.25
mx1     600  IN AAAA 2001:db8::25
mx2          IN A    192.0.2.26
relay        IN A    192.0.2.27
_spf         IN TXT  "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:100::/48 ~all"
sel1._domainkey IN TXT ( "v=DKIM1; k=rsa; "
                         {" ".join(f'"{p}"' for p in KEY_PARTS)} )
_dmarc       IN TXT  "v=DMARC1; p=reject; rua=mailto:dmarc@example.com; adkim=s"
_mta-sts     IN TXT  "v=STSv1; id=20260101T000000"
_smtp._tls   IN TXT  "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"
quoted       IN TXT  "semi;colon" "quote\\"in" "dec\\059imal" "sp ace"
two          IN TXT  "first record"
two          IN TXT  "second" "record"
big          IN TXT  {" ".join(f'"{s}"' for s in BIG[:1])}
""" + "".join(f'big IN TXT "{s}"\n' for s in BIG[1:]) + f"""
alias   120  IN CNAME alias2
alias2       IN CNAME MX1.example.com.
dangling     IN CNAME nowhere
loop1        IN CNAME loop2
loop2        IN CNAME loop1
a.b.ent      IN TXT  "deep"
MiXeD        IN A    192.0.2.99
_25._tcp.mx1 IN TLSA 3 1 1 {TLSA_HEX}
"""

REVERSE = """
$TTL 300
@  IN SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 120
   IN NS  ns1.example.com.
25 IN PTR mx1.example.com.
26 IN PTR MX2.Example.COM.
26 IN PTR other.example.net.
"""

ZONES = {"example.com": EXAMPLE, "2.0.192.in-addr.arpa": REVERSE}

KnotFactory = Callable[..., KnotServer]


async def test_typed_answers_from_knot(knot_server: KnotFactory) -> None:  # noqa: F811
    server = knot_server(ZONES)
    resolver = DNSResolver([server.address], timeout=2, lifetime=5)

    mx = await resolver.resolve("example.com", RRType.MX)
    assert set(mx.records) == {MX(preference=10, exchange="mx1.example.com"),
                               MX(preference=20, exchange="mx2.example.com")}
    assert mx.ttl == 300

    spf = await resolver.resolve("Example.COM.", RRType.TXT)
    assert spf.records == (
        TXT(strings=(b"v=spf1 mx a:relay.example.com include:_spf.example.com -all",)),)

    (dkim,) = (await resolver.resolve("sel1._domainkey.example.com", RRType.TXT)).records
    assert isinstance(dkim, TXT)
    assert dkim.strings == (b"v=DKIM1; k=rsa; ", *(p.encode() for p in KEY_PARTS))
    assert dkim.joined == b"v=DKIM1; k=rsa; " + KEY.encode()

    (dmarc,) = (await resolver.resolve("_dmarc.example.com", RRType.TXT)).records
    assert dmarc == TXT(strings=(b"v=DMARC1; p=reject; rua=mailto:dmarc@example.com; adkim=s",))

    (quoted,) = (await resolver.resolve("quoted.example.com", RRType.TXT)).records
    assert quoted == TXT(strings=(b"semi;colon", b'quote"in', b"dec;imal", b"sp ace"))

    two = await resolver.resolve("two.example.com", RRType.TXT)
    assert set(two.records) == {TXT(strings=(b"first record",)),
                                TXT(strings=(b"second", b"record"))}

    a = await resolver.resolve("mx1.example.com", RRType.A)
    assert (a.records, a.ttl) == ((V4("192.0.2.25"),), 600)
    aaaa = await resolver.resolve("mx1.example.com", RRType.AAAA)
    assert aaaa.records == (V6("2001:db8::25"),)
    assert (await resolver.resolve("mixed.EXAMPLE.com", RRType.A)).records == (V4("192.0.2.99"),)

    # CNAME chain inside the zone: alias -> alias2 -> mx1 (TTL: the smallest, 120)
    chained = await resolver.resolve("alias.example.com", RRType.A)
    assert chained.canonical_name == "mx1.example.com"
    assert chained.records == (V4("192.0.2.25"),)
    assert chained.ttl == 120
    assert (await resolver.resolve("alias.example.com", RRType.CNAME)).records == (
        "alias2.example.com",)

    tlsa = await resolver.resolve("_25._tcp.mx1.example.com", RRType.TLSA)
    assert tlsa.records == (TLSA(usage=3, selector=1, mtype=1, data=bytes.fromhex(TLSA_HEX)),)

    ptr = await resolver.resolve("26.2.0.192.in-addr.arpa", RRType.PTR)
    assert set(ptr.records) == {"mx2.example.com", "other.example.net"}

    # Negative answers (RFC 2308): NXDOMAIN, NODATA, an empty non-terminal (RFC 8020).
    with pytest.raises(NXDomain):
        await resolver.resolve("nope.example.com", RRType.TXT)
    with pytest.raises(NoData):
        await resolver.resolve("mx2.example.com", RRType.AAAA)
    with pytest.raises(NoData):
        await resolver.resolve("b.ent.example.com", RRType.TXT)
    with pytest.raises(NoData):
        await resolver.resolve("ent.example.com", RRType.A)
    # RFC 6604 §3: a CNAME to a missing name is NXDOMAIN for the name asked.
    with pytest.raises(NXDomain):
        await resolver.resolve("dangling.example.com", RRType.A)
    with pytest.raises(DNSPermanentError, match="loop"):
        await resolver.resolve("loop1.example.com", RRType.TXT)
    assert resolver.stats.failures == 0


async def test_tcp_fallback_against_knot(knot_server: KnotFactory) -> None:  # noqa: F811
    server = knot_server(ZONES)
    resolver = DNSResolver([server.address], timeout=2, lifetime=5)
    answer = await resolver.resolve("big.example.com", RRType.TXT)
    assert {r.joined for r in answer.records if isinstance(r, TXT)} == {
        s.encode() for s in BIG}
    assert resolver.stats.tcp_fallbacks == 1
    assert resolver.stats.queries_sent == 1


async def test_cache_and_negative_cache_with_knot(knot_server: KnotFactory) -> None:  # noqa: F811
    server = knot_server(ZONES)
    clock = FixedClock()
    resolver = DNSResolver([server.address], clock=clock, timeout=2, lifetime=5)
    await resolver.resolve("example.com", RRType.MX)
    await resolver.resolve("example.com", RRType.MX)
    assert (resolver.stats.queries_sent, resolver.stats.cache_hits) == (1, 1)
    # NXDOMAIN is cached for min(SOA TTL 3600, SOA MINIMUM 60) = 60 s (RFC 2308 §5).
    for _ in range(2):
        with pytest.raises(NXDomain):
            await resolver.resolve("nope.example.com", RRType.A)
    assert resolver.stats.queries_sent == 2
    clock.advance(60)
    with pytest.raises(NXDomain):
        await resolver.resolve("nope.example.com", RRType.A)
    assert resolver.stats.queries_sent == 3


async def test_knot_refuses_other_zones(knot_server: KnotFactory) -> None:  # noqa: F811
    # An authoritative server REFUSES names outside its zones: a temporary failure for us.
    server = knot_server(ZONES)
    resolver = DNSResolver([server.address], timeout=2, lifetime=5)
    with pytest.raises(DNSTemporaryError, match="REFUSED"):
        await resolver.resolve("example.org", RRType.TXT)


QUESTIONS = [
    (name, rrtype)
    for name in ["example.com", "ns1.example.com", "mx1.example.com", "mx2.example.com",
                 "_spf.example.com", "sel1._domainkey.example.com", "_dmarc.example.com",
                 "_mta-sts.example.com", "_smtp._tls.example.com", "quoted.example.com",
                 "two.example.com", "big.example.com", "alias.example.com",
                 "alias2.example.com", "dangling.example.com", "loop1.example.com",
                 "a.b.ent.example.com", "b.ent.example.com", "ent.example.com",
                 "MIXED.example.com", "nope.example.com", "x.nope.example.com",
                 "_25._tcp.mx1.example.com", "25.2.0.192.in-addr.arpa",
                 "26.2.0.192.in-addr.arpa", "27.2.0.192.in-addr.arpa"]
    for rrtype in RRType
]


def _outcome(result: Answer | BaseException) -> object:
    if isinstance(result, Answer):
        return ("answer", result.rrtype, frozenset(result.records), result.canonical_name,
                result.ttl)
    return type(result).__name__


async def test_fake_resolver_agrees_with_knot(knot_server: KnotFactory) -> None:  # noqa: F811
    """Differential: the same zone text through knot+DNSResolver and through FakeResolver."""
    server = knot_server(ZONES)
    real = DNSResolver([server.address], timeout=2, lifetime=5, cache_size=0)
    fake = FakeResolver.from_zones(ZONES)
    disagreements = []
    for name, rrtype in QUESTIONS:
        results: list[Answer | BaseException] = []
        for resolver in (real, fake):
            try:
                results.append(await resolver.resolve(name, rrtype))
            except DNSError as exc:
                results.append(exc)
        if _outcome(results[0]) != _outcome(results[1]):
            disagreements.append((name, rrtype, _outcome(results[0]), _outcome(results[1])))
    assert disagreements == []
    assert real.stats.queries_sent == len(QUESTIONS)
    assert len(fake.queries) == len(QUESTIONS)


async def test_signed_zone_is_served(knot_server: KnotFactory) -> None:  # noqa: F811
    """knot signs a zone on load (for later DNSSEC/DANE tests); plain answers are unchanged
    and carry no AD bit from an authoritative server (RFC 4035 §3.1.6)."""
    server = knot_server(ZONES, signed=["example.com"])
    resolver = DNSResolver([server.address], timeout=2, lifetime=5, trust_ad=True)
    answer = await resolver.resolve("mx1.example.com", RRType.A)
    assert answer.records == (V4("192.0.2.25"),)
    assert answer.authenticated is False
