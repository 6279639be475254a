"""SPF through the real resolver: mailmoat.net.dns.DNSResolver against Knot DNS on 127.0.0.1.

The zone is served by knotd; expected results are worked out from the zone text by the RFC 7208
rules (noted per case), and the same zone loaded into FakeResolver must give the same results.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from knot_fixture import KnotServer, knot_server  # noqa: F401  (fixture)

from mailmoat.auth.spf import SPFVerdict, check_mailfrom
from mailmoat.cli.main import main
from mailmoat.net.dns import DNSResolver
from mailmoat.resolver.fake import FakeResolver

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.timeout(120)]

ZONE = """\
$ORIGIN spf.test.
$TTL 300
@        IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60
         IN NS  ns1
ns1      IN A   127.0.0.1
@        IN TXT "v=spf1 mx ip6:2001:db8::/32 include:_inc.spf.test -all exp=why.spf.test"
@        IN MX  10 mx1
@        IN MX  20 mx2
mx1      IN A   192.0.2.10
mx2      IN A   192.0.2.20
_inc     IN TXT "v=spf1 a:relay.spf.test exists:%{i}.allow.spf.test ?all"
relay    IN CNAME relay-real
relay-real IN A 198.51.100.7
203.0.113.9.allow IN A 127.0.0.2
why      IN TXT "%{i} is not a mail server of %{d}"
long     IN TXT "v=spf1 ip4:192.0.2.1 ip4:192.0.2.2 ip4:192.0.2.3 ip4:192.0.2.4 " "ip4:192.0.2.5 -all"
void     IN TXT "v=spf1 a:n1.spf.test a:n2.spf.test a:n3.spf.test +all"
"""

CASES = [
    # ip, sender, result, explanation
    ("192.0.2.20", "a@spf.test", SPFVerdict.PASS, None),          # mx: mx2's A
    ("2001:db8::1", "a@spf.test", SPFVerdict.PASS, None),         # ip6
    ("198.51.100.7", "a@spf.test", SPFVerdict.PASS, None),        # include -> a via CNAME
    ("203.0.113.9", "a@spf.test", SPFVerdict.PASS, None),         # include -> exists %{i}
    ("203.0.113.10", "a@spf.test", SPFVerdict.FAIL,               # -all, exp= expanded
     "203.0.113.10 is not a mail server of spf.test"),
    ("192.0.2.5", "a@long.spf.test", SPFVerdict.PASS, None),      # two strings joined (§3.3)
    ("192.0.2.9", "a@void.spf.test", SPFVerdict.PERMERROR, None),  # 3 void lookups (§4.6.4)
    ("192.0.2.9", "a@nothing.spf.test", SPFVerdict.NONE, None),    # NXDOMAIN (§4.3)
]


async def test_spf_through_knot(knot_server: Callable[..., KnotServer]) -> None:  # noqa: F811
    server = knot_server({"spf.test": ZONE})
    resolver = DNSResolver([server.address])
    fake = FakeResolver.from_zone_text(ZONE)
    for ip, sender, want, explanation in CASES:
        real = await check_mailfrom(resolver, ip, sender, "helo.example")
        offline = await check_mailfrom(fake, ip, sender, "helo.example")
        assert (real.result, real.explanation) == (want, explanation), (ip, sender, real)
        assert (offline.result, offline.explanation, offline.lookups, offline.void_lookups) == (
            real.result, real.explanation, real.lookups, real.void_lookups)
    # warm cache: the same evaluation again sends the server nothing
    sent = resolver.stats.queries_sent
    again = await check_mailfrom(resolver, "192.0.2.20", "a@spf.test", "helo.example")
    assert again.result is SPFVerdict.PASS
    assert resolver.stats.queries_sent == sent
    assert resolver.stats.cache_hits > 0


def test_cli_with_resolver_option(knot_server: Callable[..., KnotServer]) -> None:  # noqa: F811
    server = knot_server({"spf.test": ZONE})
    result = CliRunner().invoke(main, ["spf", "--ip", "203.0.113.10", "--mail-from",
                                       "a@spf.test", "--resolver", server.address, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["result"] == "fail"
    assert data["explanation"] == "203.0.113.10 is not a mail server of spf.test"
