"""Properties of the SPF parser and evaluator on arbitrary input (Hypothesis)."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.auth.spf import SPFVerdict, check_mailfrom, parse_record
from mailmoat.auth.spf._record import _parse_uncached
from mailmoat.errors import ParseError
from mailmoat.resolver import Answer, RRType
from mailmoat.resolver.fake import FakeResolver

TERMS = st.sampled_from([
    "a", "mx", "ptr", "all", "-all", "~all", "?all", "+all", "include:", "exists:", "ip4:",
    "ip6:", "redirect=", "exp=", "a:", "mx:", "/", "//", ":", "=", "%{", "%{d}", "%{ir}", "%%",
    "%-", "%_", "}", ".", "example.com", "192.0.2.1", "2001:db8::1", "24", "64", "x", " ",
    "\t", "\x00", "\u00e9",
])
RECORDS = st.lists(TERMS, max_size=30).map("".join) | st.text(max_size=200)


@settings(max_examples=400, deadline=None)
@given(RECORDS)
def test_parser_accepts_or_raises_parse_error(body: str) -> None:
    try:
        parse_record("v=spf1 " + body)
    except ParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(RECORDS, st.sampled_from(["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"]))
def test_evaluation_always_returns_a_value(body: str, ip: str) -> None:
    fake = FakeResolver()
    fake.add_txt("example.com", "v=spf1 " + body)
    fake.add_a("example.com", "192.0.2.1")
    fake.add_txt("x.example.com", "v=spf1 include:example.com")
    result = asyncio.run(check_mailfrom(fake, ip, "a@example.com", "h.example.net"))
    assert isinstance(result.result, SPFVerdict)
    assert result.lookups <= 11
    assert result.void_lookups <= 3


def test_parse_time_is_linear() -> None:
    """A record 8x longer takes at most ~8x (+ slack) as long: no quadratic paths."""
    def cost(n: int) -> float:
        text = "v=spf1 " + " ".join(f"a:h{k}.%{{d2}}.example.com/24" for k in range(n))
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(10):
                _parse_uncached(text)  # the cache would hide the work
            best = min(best, time.perf_counter() - start)
        return best

    small, big = cost(10), cost(80)
    assert big < small * 8 * 3 + 0.01


class SlowResolver(FakeResolver):
    """Every answer really suspends (as a network resolver does)."""

    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        await asyncio.sleep(0)
        return await super().resolve(name, rrtype)


async def test_suspending_resolver_gives_the_same_results() -> None:
    fake = SlowResolver()
    fake.add_txt("example.com", "v=spf1 mx include:_spf.example.com -all exp=why.example.com")
    fake.add_txt("_spf.example.com", "v=spf1 a:relay.example.com ~all")
    fake.add_txt("why.example.com", "%{i} denied")
    fake.add_mx("example.com", 10, "mx.example.com")
    fake.add_a("mx.example.com", "192.0.2.10")
    fake.add_a("relay.example.com", "192.0.2.20")
    for ip, want in [("192.0.2.10", SPFVerdict.PASS), ("192.0.2.20", SPFVerdict.PASS),
                     ("192.0.2.30", SPFVerdict.FAIL)]:
        r = await check_mailfrom(fake, ip, "a@example.com")
        assert r.result is want
    assert r.explanation == "192.0.2.30 denied"


async def test_caller_cancellation_propagates() -> None:
    class Hang(FakeResolver):
        async def resolve(self, name: str, rrtype: RRType) -> Answer:
            await asyncio.Event().wait()
            raise AssertionError

    task = asyncio.ensure_future(check_mailfrom(Hang(), "192.0.2.1", "a@example.com"))
    await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("cancellation was swallowed")
    assert task.cancelled()
