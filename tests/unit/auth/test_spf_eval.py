"""check_host() behaviour (RFC 7208 §4, §5, §6), bounds and hostile input.

Expected values come from the RFC text quoted in each test, not from our own output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import tracemalloc

import pytest

from mailmoat.auth.spf import (
    Identity,
    SPFOptions,
    SPFVerdict,
    check_helo,
    check_host,
    check_mailfrom,
)
from mailmoat.clock import FixedClock
from mailmoat.errors import DNSTemporaryError
from mailmoat.resolver import Answer, RRType
from mailmoat.resolver.fake import FakeResolver

pytestmark = pytest.mark.timeout(30)


def zone(**records: str | list[str]) -> FakeResolver:
    """TXT records by name (underscores in keyword names stand for dots; a key that has dots
    is taken as it is)."""
    fake = FakeResolver()
    for key, value in records.items():
        name = key if "." in key else key.replace("_", ".")
        for text in [value] if isinstance(value, str) else value:
            fake.add_txt(name, text)
    return fake


async def mailfrom(fake: FakeResolver, ip: str, sender: str = "alice@example.com",
                   helo: str = "mx.example.net", **kw: object):  # type: ignore[no-untyped-def]
    return await check_mailfrom(fake, ip, sender, helo, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------- basics ---

async def test_pass_fail_and_result_fields() -> None:
    fake = zone(example_com="v=spf1 ip4:192.0.2.0/24 -all")
    ok = await mailfrom(fake, "192.0.2.10")
    assert ok.result is SPFVerdict.PASS
    assert ok.mechanism == "ip4:192.0.2.0/24"
    assert (ok.domain, ok.identity, ok.lookups, ok.void_lookups) == (
        "example.com", Identity.MAILFROM, 0, 0)
    bad = await mailfrom(fake, "198.51.100.1")
    assert bad.result is SPFVerdict.FAIL
    assert bad.mechanism == "-all"
    with pytest.raises(dataclasses.FrozenInstanceError):
        bad.result = SPFVerdict.PASS  # type: ignore[misc]


async def test_default_result_is_neutral() -> None:
    # §4.7: no match and no redirect -> "neutral"
    fake = zone(example_com="v=spf1 ip4:192.0.2.1")
    assert (await mailfrom(fake, "192.0.2.2")).result is SPFVerdict.NEUTRAL


async def test_no_record_is_none_and_timeout_is_temperror() -> None:
    fake = zone(other_example="v=spf1 -all")
    r = await mailfrom(fake, "192.0.2.1")
    assert r.result is SPFVerdict.NONE  # §4.3 NXDOMAIN -> none
    fake.set_timeout("example.com")
    r = await mailfrom(fake, "192.0.2.1")
    assert r.result is SPFVerdict.TEMPERROR  # §4.4 timeout -> temperror
    assert r.problem
    assert "example.com" in r.problem


@pytest.mark.parametrize("domain", [
    "[192.0.2.1]", "localhost", "a..example.com", "x" * 64 + ".example.com", "",
    "example.123",
])
async def test_malformed_domains_are_none(domain: str) -> None:
    # §4.3: malformed, or not multi-label -> "none", without asking DNS
    fake = FakeResolver()
    r = await check_host(fake, "192.0.2.1", domain, f"a@{domain}")
    assert r.result is SPFVerdict.NONE
    assert fake.queries == []


async def test_mailfrom_identity_rules() -> None:
    fake = zone(example_com="v=spf1 exists:%{l}.users.example.com -all",
                mx_example_net="v=spf1 exists:%{l}.helo.example.com -all")
    fake.add_a("postmaster.users.example.com", "127.0.0.2")
    fake.add_a("postmaster.helo.example.com", "127.0.0.2")
    # §4.3: "If the <sender> has no local-part, substitute the string "postmaster""
    r = await mailfrom(fake, "192.0.2.1", "@example.com")
    assert r.result is SPFVerdict.PASS
    # §2.4: a null reverse-path checks postmaster@<HELO>
    for null in ("", "<>"):
        r = await mailfrom(fake, "192.0.2.1", null, "mx.example.net")
        assert r.result is SPFVerdict.PASS
        assert r.identity is Identity.HELO
        assert r.domain == "mx.example.net"
    r = await check_helo(fake, "192.0.2.1", "mx.example.net")
    assert r.identity is Identity.HELO
    assert r.result is SPFVerdict.PASS


# ----------------------------------------------------------------- mechanisms ---

async def test_a_mx_cidr_and_ipv6() -> None:
    fake = zone(example_com="v=spf1 a/24 mx//64 -all")
    fake.add_a("example.com", "192.0.2.1")
    fake.add_mx("example.com", 10, "mx1.example.com")
    fake.add_aaaa("mx1.example.com", "2001:db8:1::1")
    assert (await mailfrom(fake, "192.0.2.200")).result is SPFVerdict.PASS
    assert (await mailfrom(fake, "192.0.3.1")).result is SPFVerdict.FAIL
    assert (await mailfrom(fake, "2001:db8:1::ffff")).result is SPFVerdict.PASS
    assert (await mailfrom(fake, "2001:db8:2::1")).result is SPFVerdict.FAIL


async def test_ipv4_mapped_client_is_ipv4() -> None:
    # §5: "an IPv4-mapped IPv6 address [...] MUST still be considered an IPv4 address"
    fake = zone(example_com="v=spf1 ip6:::/0 exists:%{i}.%{v}.bl.example.com ip4:192.0.2.1 -all")
    r = await mailfrom(fake, "::ffff:192.0.2.1")
    assert r.result is SPFVerdict.PASS
    assert r.mechanism == "ip4:192.0.2.1"
    assert ("192.0.2.1.in-addr.bl.example.com", RRType.A) in fake.queries


async def test_exists_always_asks_a() -> None:
    # §5.7: "used for a DNS A RR lookup (even when the connection type is IPv6)"
    fake = zone(example_com="v=spf1 exists:%{ir}.%{v}.bl.example.com -all")
    fake.add_a("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.bl.example.com",
               "127.0.0.2")
    r = await mailfrom(fake, "2001:db8::1")
    assert r.result is SPFVerdict.PASS


async def test_include_result_table() -> None:
    # §5.2: pass -> match; fail/softfail/neutral -> no match; temperror -> temperror;
    # permerror -> permerror; none -> permerror
    for inner, want in [("v=spf1 +all", SPFVerdict.FAIL),  # match -> "-" qualifier
                        ("v=spf1 -all", SPFVerdict.SOFTFAIL),
                        ("v=spf1 ~all", SPFVerdict.SOFTFAIL),
                        ("v=spf1 ?all", SPFVerdict.SOFTFAIL),
                        ("v=spf1 bogus", SPFVerdict.PERMERROR)]:
        fake = zone(example_com="v=spf1 -include:inc.example.com ~all", inc_example_com=inner)
        assert (await mailfrom(fake, "192.0.2.1")).result is want, inner
    fake = zone(example_com="v=spf1 include:inc.example.com ~all")
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.PERMERROR
    fake.set_timeout("inc.example.com")
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.TEMPERROR


async def test_redirect_semantics() -> None:
    fake = zone(**{"example.com": "v=spf1 ip4:192.0.2.1 redirect=_spf.example.com",
                   "_spf.example.com": "v=spf1 a -all"})
    fake.add_a("_spf.example.com", "192.0.2.9")
    # §6.1: the redirect target becomes <domain> ("a" means _spf.example.com)
    assert (await mailfrom(fake, "192.0.2.9")).result is SPFVerdict.PASS
    assert (await mailfrom(fake, "192.0.2.8")).result is SPFVerdict.FAIL
    # §6.1: "Any "redirect" modifier MUST be ignored if there is an "all" mechanism"
    fake = zone(**{"example.com": "v=spf1 redirect=_spf.example.com ?all",
                   "_spf.example.com": "v=spf1 -all"})
    assert (await mailfrom(fake, "192.0.2.8")).result is SPFVerdict.NEUTRAL
    # §6.1: a redirect to a domain without a record is permerror, not none
    fake = zone(example_com="v=spf1 redirect=nothing.example.com")
    assert (await mailfrom(fake, "192.0.2.8")).result is SPFVerdict.PERMERROR


async def test_ptr_errors_do_not_match() -> None:
    # §5.5: "If a DNS error occurs while doing the PTR RR lookup, then this mechanism fails
    # to match." / A lookup errors skip that name.
    fake = zone(example_com="v=spf1 ptr -all")
    fake.set_timeout("1.2.0.192.in-addr.arpa")
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.FAIL
    fake = zone(example_com="v=spf1 ptr -all")
    fake.add_ptr("1.2.0.192.in-addr.arpa", "bad.example.com")
    fake.add_ptr("1.2.0.192.in-addr.arpa", "good.example.com")
    fake.set_timeout("bad.example.com")
    fake.add_a("good.example.com", "192.0.2.1")
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.PASS


# --------------------------------------------------------------------- limits ---

def _chain(n: int) -> FakeResolver:
    """example.com includes i1 ... each include is one DNS term; the last one passes."""
    fake = zone(example_com="v=spf1 include:i1.example.com -all")
    for k in range(1, n):
        fake.add_txt(f"i{k}.example.com", f"v=spf1 include:i{k + 1}.example.com")
    fake.add_txt(f"i{n}.example.com", "v=spf1 ip4:192.0.2.1")
    return fake


async def test_ten_dns_terms_ok_eleven_permerror() -> None:
    # §4.6.4: "SPF implementations MUST limit the total number of those terms to 10 during
    # SPF evaluation [...] If this limit is exceeded, the implementation MUST return
    # "permerror"."
    r = await mailfrom(_chain(10), "192.0.2.1")
    assert r.result is SPFVerdict.PASS
    assert r.lookups == 10
    r = await mailfrom(_chain(11), "192.0.2.1")
    assert r.result is SPFVerdict.PERMERROR
    assert "more than 10" in (r.problem or "")


async def test_configurable_limits() -> None:
    r = await mailfrom(_chain(3), "192.0.2.1", options=SPFOptions(max_dns_mechanisms=2))
    assert r.result is SPFVerdict.PERMERROR


async def test_void_lookups() -> None:
    # §4.6.4: "SPF implementations SHOULD limit "void lookups" to two."
    two = zone(example_com="v=spf1 a:n1.example.com a:n2.example.com ?all")
    r = await mailfrom(two, "192.0.2.1")
    assert (r.result, r.void_lookups) == (SPFVerdict.NEUTRAL, 2)
    three = zone(example_com="v=spf1 a:n1.example.com mx:n2.example.com exists:n3.example.com ?all")
    r = await mailfrom(three, "192.0.2.1")
    assert (r.result, r.void_lookups) == (SPFVerdict.PERMERROR, 3)


async def test_mx_limit_is_permerror() -> None:
    # §4.6.4: more than 10 MX records -> "the "mx" mechanism MUST produce a "permerror""
    for n, want in [(10, SPFVerdict.PASS), (11, SPFVerdict.PERMERROR)]:
        fake = zone(example_com="v=spf1 mx -all")
        for k in range(n):
            fake.add_mx("example.com", k, f"mx{k}.example.com")
            fake.add_a(f"mx{k}.example.com", f"192.0.2.{k + 1}")
        assert (await mailfrom(fake, f"192.0.2.{n}")).result is want, n


async def test_mx_timeout_on_any_exchange_is_temperror() -> None:
    # §5.4: "it performs an address lookup on each MX name returned"; §5: timeout -> temperror
    fake = zone(example_com="v=spf1 mx -all")
    fake.add_mx("example.com", 10, "good.example.com")
    fake.add_mx("example.com", 20, "slow.example.com")
    fake.add_a("good.example.com", "192.0.2.1")
    fake.set_timeout("slow.example.com")
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.TEMPERROR


async def test_ptr_names_beyond_ten_are_ignored() -> None:
    # §4.6.4: "If this limit is exceeded, all records other than the first 10 MUST be ignored."
    fake = zone(example_com="v=spf1 ptr:good.example.com -all")
    for k in range(10):
        fake.add_ptr("1.2.0.192.in-addr.arpa", f"n{k}.other.example")
        fake.add_a(f"n{k}.other.example", "192.0.2.1")
    fake.add_ptr("1.2.0.192.in-addr.arpa", "good.example.com")
    fake.add_a("good.example.com", "192.0.2.1")
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.FAIL
    asked = [name for name, _ in fake.queries]
    assert "good.example.com" not in asked


# ------------------------------------------------------------------- exp= ---

async def test_exp_only_on_fail_and_with_injected_clock() -> None:
    # §6.2: the explanation is computed when check_host() results in "fail"
    fake = zone(example_com="v=spf1 ~ip4:192.0.2.1 -all exp=why.example.com",
                why_example_com="%{c} may not send for %{d} at %{t} (%{r})")
    soft = await mailfrom(fake, "192.0.2.1")
    assert soft.result is SPFVerdict.SOFTFAIL
    assert soft.explanation is None
    assert ("why.example.com", RRType.TXT) not in fake.queries
    r = await mailfrom(fake, "192.0.2.2", clock=FixedClock(wall=1234567890.9),
                       options=SPFOptions(receiver="mx.receiver.example"))
    assert r.result is SPFVerdict.FAIL
    assert r.explanation == ("192.0.2.2 may not send for example.com at 1234567890 "
                             "(mx.receiver.example)")
    # §6.2: exp lookups are not DNS-querying terms
    assert r.lookups == 0


async def test_exp_errors_are_ignored() -> None:
    fake = zone(example_com="v=spf1 -all exp=why.example.com")
    fake.set_timeout("why.example.com")
    r = await mailfrom(fake, "192.0.2.2")
    assert (r.result, r.explanation) == (SPFVerdict.FAIL, None)


# ----------------------------------------------------------- hostile input ---

@pytest.mark.parametrize("junk", [
    "v=spf1 \x00\x01\x02 -all",
    "v=spf1 " + "a:" * 500,
    "v=spf1 ip4:999.1.1.1 -all",
    "v=spf1 include:%{%{%{ -all",
    "v=spf1 " + "%" * 1000,
    "v=spf1 -all " + "redirect=x.example.com " * 2,
])
async def test_junk_records_are_permerror(junk: str) -> None:
    fake = zone(example_com=junk)
    r = await mailfrom(fake, "192.0.2.1")
    assert r.result is SPFVerdict.PERMERROR, r
    assert r.problem


async def test_non_ascii_record_is_permerror_but_other_txt_is_ignored() -> None:
    fake = FakeResolver()
    fake.add_txt("example.com", b"v=spf1 a:\xef\xbb\xbfx.example.com -all")
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.PERMERROR
    fake = FakeResolver()
    fake.add_txt("example.com", b"\x96\xff")
    fake.add_txt("example.com", "v=spf1 -all")
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.FAIL


async def test_ten_thousand_character_record_bounded() -> None:
    big = "v=spf1 " + " ".join(f"ip4:10.{k // 256 % 256}.{k % 256}.1" for k in range(700))
    assert len(big) >= 10_000
    fake = zone(example_com=big)
    tracemalloc.start()
    try:
        r = await mailfrom(fake, "192.0.2.1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.result is SPFVerdict.PERMERROR
    assert "longer than" in (r.problem or "")
    assert peak < 2_000_000


async def test_two_records_permerror() -> None:
    # §4.5: "If the resultant record set includes more than one record, check_host()
    # produces the "permerror" result."
    fake = zone(example_com=["v=spf1 -all", "v=spf1 +all"])
    assert (await mailfrom(fake, "192.0.2.1")).result is SPFVerdict.PERMERROR


async def test_include_loop_is_permerror_with_bounded_queries() -> None:
    fake = zone(example_com="v=spf1 include:loop1.example.com -all",
                loop1_example_com="v=spf1 include:loop2.example.com",
                loop2_example_com="v=spf1 include:loop1.example.com")
    tracemalloc.start()
    try:
        r = await mailfrom(fake, "192.0.2.1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.result is SPFVerdict.PERMERROR
    assert len(fake.queries) <= 12
    assert peak < 2_000_000
    self_loop = zone(example_com="v=spf1 include:example.com -all")
    assert (await mailfrom(self_loop, "192.0.2.1")).result is SPFVerdict.PERMERROR
    redirect_loop = zone(example_com="v=spf1 redirect=example.com")
    assert (await mailfrom(redirect_loop, "192.0.2.1")).result is SPFVerdict.PERMERROR


async def test_cname_loop_is_no_match() -> None:
    # A CNAME loop never yields an address: the name is treated as non-existent (a void
    # lookup), as RFC 7208 §5.5 does for ptr names and pyspf does everywhere.
    fake = zone(example_com="v=spf1 a:loop.example.com ip4:192.0.2.1 -all")
    fake.add_cname("loop.example.com", "loop2.example.com")
    fake.add_cname("loop2.example.com", "loop.example.com")
    r = await mailfrom(fake, "192.0.2.1")
    assert (r.result, r.void_lookups) == (SPFVerdict.PASS, 1)
    fake2 = zone(example_com="v=spf1 include:loop.example.com -all")
    fake2.add_cname("loop.example.com", "loop.example.com")
    assert (await mailfrom(fake2, "192.0.2.1")).result is SPFVerdict.PERMERROR


class HangingResolver:
    """A resolver that never answers (a black-holed nameserver)."""

    def __init__(self) -> None:
        self.asked = 0

    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        self.asked += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_resolver_that_never_answers_is_temperror_in_time() -> None:
    # §4.6.4: an elapsed-time limit; "If such a limit is exceeded, the result of
    # authorization SHOULD be "temperror"."
    hang = HangingResolver()
    start = time.monotonic()
    r = await check_mailfrom(hang, "192.0.2.1", "a@example.com", "h.example.net",
                             options=SPFOptions(timeout=0.2))
    assert time.monotonic() - start < 2.0
    assert r.result is SPFVerdict.TEMPERROR
    assert "exceeded" in (r.problem or "")
    assert hang.asked == 1


class HangingAfterRecord(FakeResolver):
    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        if rrtype is RRType.MX:
            await asyncio.Event().wait()
        return await super().resolve(name, rrtype)


async def test_hang_mid_evaluation_keeps_counts() -> None:
    fake = HangingAfterRecord()
    fake.add_txt("example.com", "v=spf1 a:n1.example.com mx -all")
    r = await check_mailfrom(fake, "192.0.2.1", "a@example.com", options=SPFOptions(timeout=0.2))
    assert r.result is SPFVerdict.TEMPERROR
    assert (r.lookups, r.void_lookups) == (2, 1)


class FailingResolver:
    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        raise DNSTemporaryError("SERVFAIL")


async def test_servfail_is_temperror() -> None:
    r = await check_mailfrom(FailingResolver(), "192.0.2.1", "a@example.com")
    assert r.result is SPFVerdict.TEMPERROR


# ----------------------------------------------------------------- the trace ---

async def test_trace_names_the_steps() -> None:
    fake = zone(**{"example.com": "v=spf1 ip4:198.51.100.1 include:_spf.example.com -all",
                   "_spf.example.com": "v=spf1 a:mail.example.com ~all"})
    fake.add_a("mail.example.com", "192.0.2.25")
    r = await mailfrom(fake, "192.0.2.25")
    assert r.result is SPFVerdict.PASS
    assert r.mechanism == "include:_spf.example.com"
    steps = [(s.depth, s.domain, s.term, s.matched) for s in r.trace]
    assert (0, "example.com", "ip4:198.51.100.1", False) in steps
    assert (1, "_spf.example.com", "a:mail.example.com", True) in steps
    assert (0, "example.com", "include:_spf.example.com", True) in steps
    a_step = next(s for s in r.trace if s.term == "a:mail.example.com")
    assert a_step.queries == ("A mail.example.com: 1 record(s)",)
    quiet = await mailfrom(fake, "192.0.2.25", options=SPFOptions(trace=False))
    assert quiet.trace == ()
    assert quiet.result is SPFVerdict.PASS
    d = r.as_dict()
    assert {"result", "explanation", "lookups", "void_lookups", "trace"} <= d.keys()


async def test_ip_must_be_an_address() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        await check_host(FakeResolver(), "not-an-ip", "example.com", "a@example.com")


# --------------------------------------------------------------- edge cases ---

async def test_trailing_dot_domain_and_address_objects() -> None:
    import ipaddress

    fake = zone(example_com="v=spf1 ip4:192.0.2.1 -all")
    r = await check_host(fake, ipaddress.ip_address("::ffff:192.0.2.1"), "example.com.",
                         "a@example.com.")
    assert (r.result, r.domain) == (SPFVerdict.PASS, "example.com")
    r = await check_host(fake, ipaddress.ip_address("192.0.2.2"), "example.com", "a@example.com")
    assert r.result is SPFVerdict.FAIL
    with pytest.raises(ValueError, match="does not appear"):
        await check_host(fake, "1" * 100, "example.com", "a@example.com")


async def test_sender_without_at_sign_is_a_domain() -> None:
    fake = zone(example_com="v=spf1 exists:%{l}.u.example.com -all")
    fake.add_a("postmaster.u.example.com", "127.0.0.2")
    r = await mailfrom(fake, "192.0.2.1", "example.com")
    assert (r.result, r.domain) == (SPFVerdict.PASS, "example.com")


async def test_no_timeout_option() -> None:
    fake = zone(example_com="v=spf1 ip4:192.0.2.1 -all")
    r = await mailfrom(fake, "192.0.2.1", options=SPFOptions(timeout=None))
    assert r.result is SPFVerdict.PASS


async def test_long_literal_and_overlong_macro_targets() -> None:
    # §7.3 truncation applies to literal targets too; a single label over 63 octets can
    # never be asked: the mechanism does not match (no query, no void lookup).
    long_name = ".".join(["a" * 60] * 5) + ".example.com"  # 317 characters
    fake = zone(example_com=f"v=spf1 a:{long_name} exists:%{{l}}.example.com -all")
    kept = ".".join(["a" * 60] * 3) + ".example.com"
    fake.add_a(kept, "192.0.2.1")
    r = await mailfrom(fake, "192.0.2.1")
    assert r.result is SPFVerdict.PASS
    r = await mailfrom(fake, "192.0.2.2", "x" * 70 + "@example.com")
    # the a: target exists (not void); the 70-octet label is never asked (not void either)
    assert (r.result, r.void_lookups) == (SPFVerdict.FAIL, 0)
    assert all(len(name) <= 253 for name, _ in fake.queries)


async def test_ptr_names_are_looked_up_once() -> None:
    fake = zone(example_com="v=spf1 ptr:a.example ptr:mail.example.com -all")
    fake.add_ptr("1.2.0.192.in-addr.arpa", "mail.example.com")
    fake.add_a("mail.example.com", "192.0.2.1")
    r = await mailfrom(fake, "192.0.2.1")
    assert r.result is SPFVerdict.PASS
    assert fake.queries.count(("1.2.0.192.in-addr.arpa", RRType.PTR)) == 1
    assert r.lookups == 2


async def test_p_macro_prefers_the_domain_itself() -> None:
    # §7.3: "If the <domain> is present in the list of validated domains, it SHOULD be used."
    fake = zone(example_com="v=spf1 -all exp=why.example.com",
                why_example_com="from %{p}")
    fake.add_ptr("1.2.0.192.in-addr.arpa", "other.example.net")
    fake.add_ptr("1.2.0.192.in-addr.arpa", "example.com")
    fake.add_a("other.example.net", "192.0.2.1")
    fake.add_a("example.com", "192.0.2.1")
    r = await mailfrom(fake, "192.0.2.1")
    assert r.explanation == "from example.com"


async def test_exp_target_that_cannot_be_asked_is_ignored() -> None:
    fake = zone(example_com="v=spf1 -all exp=%{l}.example.com")
    r = await mailfrom(fake, "192.0.2.1", "x" * 70 + "@example.com")
    assert (r.result, r.explanation) == (SPFVerdict.FAIL, None)


async def test_p_macro_in_exp_survives_the_void_limit() -> None:
    # Two void lookups already; %{p} in the explanation would be the third: the explanation
    # still comes out, with "unknown" (§7.3: "if a DNS error occurs, the string "unknown"").
    fake = zone(example_com="v=spf1 a:n1.example.com a:n2.example.com -all exp=why.example.com",
                why_example_com="from %{p}")
    r = await mailfrom(fake, "192.0.2.1")
    assert (r.result, r.explanation) == (SPFVerdict.FAIL, "from unknown")


class EmptyAnswerResolver(FakeResolver):
    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        if rrtype is RRType.A:
            return Answer(name=name, rrtype=rrtype, records=(), ttl=0, canonical_name=name)
        return await super().resolve(name, rrtype)


async def test_an_empty_answer_counts_as_void() -> None:
    fake = EmptyAnswerResolver()
    fake.add_txt("example.com", "v=spf1 a ?all")
    r = await mailfrom(fake, "192.0.2.1")
    assert (r.result, r.void_lookups) == (SPFVerdict.NEUTRAL, 1)


class StubbornResolver(FakeResolver):
    """Ignores cancellation once and answers anyway (a misbehaving resolver)."""

    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        if rrtype is RRType.A:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return await super().resolve(name, rrtype)
        return await super().resolve(name, rrtype)


async def test_resolver_that_swallows_cancellation_still_ends() -> None:
    fake = StubbornResolver()
    fake.add_txt("example.com", "v=spf1 a -all")
    fake.add_a("example.com", "192.0.2.1")
    r = await mailfrom(fake, "192.0.2.1", options=SPFOptions(timeout=0.1))
    assert r.result in {SPFVerdict.PASS, SPFVerdict.TEMPERROR}


async def test_include_and_redirect_to_unaskable_targets_are_permerror() -> None:
    # §6.1: "if the <target-name> is malformed, the result is a "permerror""; an include of
    # a malformed name has no record: §5.2 none -> permerror.
    long_local = "x" * 70 + "@example.com"
    fake = zone(example_com="v=spf1 include:%{l}.example.com -all")
    assert (await mailfrom(fake, "192.0.2.1", long_local)).result is SPFVerdict.PERMERROR
    fake = zone(example_com="v=spf1 redirect=%{l}.example.com")
    assert (await mailfrom(fake, "192.0.2.1", long_local)).result is SPFVerdict.PERMERROR


async def test_exp_domain_with_p_macro_over_the_void_limit_is_ignored() -> None:
    fake = zone(example_com="v=spf1 a:n1.example.com a:n2.example.com -all exp=%{p}.example.com")
    r = await mailfrom(fake, "192.0.2.1")
    assert (r.result, r.explanation) == (SPFVerdict.FAIL, None)


async def test_single_label_longer_than_a_name_is_not_asked() -> None:
    fake = zone(example_com="v=spf1 exists:%{l} -all")
    r = await mailfrom(fake, "192.0.2.1", "x" * 300 + "@example.com")
    assert (r.result, r.void_lookups) == (SPFVerdict.FAIL, 0)
    assert fake.queries == [("example.com", RRType.TXT)]
