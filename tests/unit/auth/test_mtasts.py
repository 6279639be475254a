"""MTA-STS (RFC 8461): TXT record, policy parser, MX matching, delivery decision, cache model.

Expected values come from the RFC's text and examples (§3.1, §3.2, §4.1, §5, §5.1).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat import limits
from mailmoat.auth.mtasts import (
    CachedPolicy,
    FetchPlan,
    Mode,
    Policy,
    PolicyCache,
    RecordLookup,
    RecordStatus,
    TLSState,
    allowed_mx,
    decide,
    lookup_record,
    mx_matches,
    parse_policy,
    parse_record,
    plan,
    select_record,
)
from mailmoat.clock import FixedClock
from mailmoat.errors import ParseError
from mailmoat.resolver import TXT, FakeResolver

# RFC 8461 §3.2 example policy.
RFC_POLICY = (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
              b"mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n")


# ------------------------------------------------------------------------ TXT record ---

def test_rfc_example_record() -> None:
    # §3.1 example: _mta-sts.example.com. IN TXT "v=STSv1; id=20160831085700Z;"
    record = parse_record("v=STSv1; id=20160831085700Z;")
    assert record.id == "20160831085700Z"
    assert record.extensions == ()


def test_record_without_trailing_delimiter_and_extension() -> None:
    record = parse_record("v=STSv1; id=abc123; ext_1=v\x21lue")
    assert record.id == "abc123"
    assert record.extensions == (("ext_1", "v!lue"),)


@pytest.mark.parametrize("text", [
    "v=STSv1;",  # no id (sts-field required)
    "v=STSv1; id=",  # 1*32(ALPHA / DIGIT)
    "v=STSv1; id=" + "a" * 33,  # more than 32
    "v=STSv1; id=abc-def",  # "-" not allowed in id
    "v=STSv2; id=1",  # wrong version
    "v=stsv1; id=1",  # %s: case-sensitive
    "id=1; v=STSv1",  # version must come first
    "v=STSv1; id=1; id=2",  # id twice
    "v=STSv1; id=1; junk",  # not name=value
    "v=STSv1; id=1; e=a=b",  # "=" not allowed in sts-ext-value
    "v=STSv1; id=\u00e91",
])
def test_bad_records(text: str) -> None:
    with pytest.raises(ParseError):
        parse_record(text)


def test_record_too_long() -> None:
    with pytest.raises(ParseError):
        parse_record("v=STSv1; id=1; x=" + "a" * limits.MAIL_POLICY_RECORD_MAX)


def _txt(*texts: str) -> list[TXT]:
    return [TXT(strings=(t.encode(),)) for t in texts]


def test_select_discards_non_sts_records() -> None:
    # §3.1: "records that do not begin with "v=STSv1;" are discarded"
    found = select_record("example.com", _txt("v=spf1 -all", "v=STSv1; id=42"))
    assert found.status is RecordStatus.FOUND
    assert found.id == "42"


def test_select_multiple_is_no_policy() -> None:
    # §3.1: "If the number of resulting records is not one [...] MUST assume [...] does not
    # have an available MTA-STS Policy"
    found = select_record("example.com", _txt("v=STSv1; id=1", "v=STSv1; id=2"))
    assert found.status is RecordStatus.MULTIPLE
    assert found.record is None


def test_select_invalid_and_none() -> None:
    assert select_record("e.com", _txt("v=STSv1; id=bad-id")).status is RecordStatus.INVALID
    assert select_record("e.com", _txt("something else")).status is RecordStatus.NONE
    # "v=STSv1" without ";" does not begin with "v=STSv1;"
    assert select_record("e.com", _txt("v=STSv1 id=1")).status is RecordStatus.NONE


async def test_lookup_record_dns_outcomes() -> None:
    fake = FakeResolver()
    fake.add_txt("_mta-sts.good.example", "v=STSv1; ", "id=20260101")  # strings joined
    fake.add_cname("_mta-sts.alias.example", "_mta-sts.good.example")
    fake.add_a("nothing.example", "192.0.2.1")
    fake.add_txt("_mta-sts.broken.example", "v=STSv1; id=1")
    fake.set_servfail("_mta-sts.broken.example")
    good = await lookup_record(fake, "good.example")
    assert (good.status, good.id) == (RecordStatus.FOUND, "20260101")
    alias = await lookup_record(fake, "alias.example")
    assert alias.id == "20260101"
    assert (await lookup_record(fake, "nothing.example")).status is RecordStatus.NONE
    assert (await lookup_record(fake, "broken.example")).status is RecordStatus.TEMPERROR


# ------------------------------------------------------------------------ policy file ---

def test_rfc_example_policy() -> None:
    policy = parse_policy(RFC_POLICY)
    assert policy.mode is Mode.ENFORCE
    assert policy.max_age == 604800
    assert policy.mx == ("mail.example.com", "*.example.net", "backupmx.example.com")


def test_lf_lines_no_final_newline_and_trailing_space() -> None:
    # erratum 6253 / sts-policy-term = LF / CRLF; [sts-policy-term] at the end is optional
    body = b"version: STSv1\nmode: testing  \nmx: MX.Example.ORG\nmax_age:86400"
    policy = parse_policy(body)
    assert policy.mode is Mode.TESTING
    assert policy.mx == ("mx.example.org",)
    assert policy.max_age == 86400


def test_duplicates_keep_the_first_and_unknown_fields_are_kept_aside() -> None:
    # §3.2: "If any non-repeated field [...] is duplicated, all entries except for the first
    # SHOULD be ignored." Unknown fields SHOULD be ignored.
    body = (b"version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\n"
            b"max_age: 100\nmax_age: 200\nfuture_field: some value\n")
    policy = parse_policy(body)
    assert policy.mode is Mode.TESTING
    assert policy.max_age == 100
    assert policy.extensions == (("future_field", "some value"),)
    assert len(policy.warnings) == 2


def test_mode_none_needs_no_mx() -> None:
    policy = parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n")
    assert policy.mode is Mode.NONE
    assert policy.mx == ()


@pytest.mark.parametrize("body", [
    b"mode: enforce\nmx: a.example\nmax_age: 1\n",  # no version
    b"version: STSv1\nmx: a.example\nmax_age: 1\n",  # no mode
    b"version: STSv1\nmode: enforce\nmx: a.example\n",  # no max_age
    b"version: STSv1\nmode: enforce\nmax_age: 1\n",  # enforce without mx
    b"version: STSv1\nmode: testing\nmax_age: 1\n",  # testing without mx
    b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
    b"version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n",  # %s case-sensitive
    b"version: STSv1\nmode: report\nmx: a.example\nmax_age: 1\n",
    b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",  # > 31557600
    b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",  # 11 digits
    b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
    b"version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n",
    b"version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
    b"version: STSv1\nmode: enforce\nmx: -a.example\nmax_age: 1\n",
    b"version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n",
    b"version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1\n",  # no ":"
    b" version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",  # leading WSP
    b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n\xff\n",  # not UTF-8
])
def test_bad_policies(body: bytes) -> None:
    with pytest.raises(ParseError):
        parse_policy(body)


def test_max_age_limit_is_accepted() -> None:
    body = b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557600\n"
    assert parse_policy(body).max_age == 31557600


def test_policy_size_bound() -> None:
    padding = b"x: " + b"a" * (limits.MTASTS_POLICY_MAX) + b"\n"
    with pytest.raises(ParseError, match="larger than"):
        parse_policy(RFC_POLICY + padding)


def test_too_many_mx_patterns() -> None:
    many = b"".join(b"mx: h%d.example\n" % i for i in range(limits.MTASTS_MAX_MX_PATTERNS + 1))
    with pytest.raises(ParseError, match="mx patterns"):
        parse_policy(b"version: STSv1\nmode: enforce\nmax_age: 1\n" + many)


def test_as_text_round_trips() -> None:
    policy = parse_policy(RFC_POLICY + b"ext: v\n")
    assert parse_policy(policy.as_text().encode()) == Policy(
        mode=policy.mode, max_age=policy.max_age, mx=policy.mx, extensions=policy.extensions)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parser_never_crashes(body: bytes) -> None:
    try:
        parse_policy(body)
    except ParseError:
        pass


# ------------------------------------------------------------------------ MX matching ---

@pytest.mark.parametrize(("pattern", "host", "expected"), [
    # §4.1: "*.example.com" would match "mail.example.com" but not "example.com" or
    # "foo.bar.example.com"
    ("*.example.com", "mail.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "foo.bar.example.com", False),
    ("mail.example.com", "mail.example.com", True),
    ("mail.example.com", "MAIL.Example.COM.", True),
    ("mail.example.com", "mail2.example.com", False),
    ("*.example.com", "mail.example.org", False),
    ("*.example.com", ".example.com", False),
])
def test_mx_matching(pattern: str, host: str, expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


def test_policy_matches_and_allowed_mx() -> None:
    policy = parse_policy(RFC_POLICY)
    assert policy.matches("mx1.example.net")
    assert not policy.matches("evil.example.org")
    assert allowed_mx(policy, ["evil.example.org", "mail.example.com"]) == ("mail.example.com",)
    testing = parse_policy(RFC_POLICY.replace(b"enforce", b"testing"))
    assert allowed_mx(testing, ["evil.example.org"]) == ("evil.example.org",)


# ---------------------------------------------------------------------------- decision ---

ENFORCE = parse_policy(RFC_POLICY)
TESTING = parse_policy(RFC_POLICY.replace(b"enforce", b"testing"))
NONE = parse_policy(b"version: STSv1\nmode: none\nmax_age: 1\n")


def test_enforce_refuses_unmatched_mx_and_bad_tls() -> None:
    # §5: enforce: "MUST NOT deliver the message to hosts that fail MX matching or certificate
    # validation or that do not support STARTTLS"
    assert not decide(ENFORCE, "evil.example.org", TLSState.VALID).deliver
    assert not decide(ENFORCE, "mail.example.com", TLSState.NO_STARTTLS).deliver
    bad = decide(ENFORCE, "mail.example.com", TLSState.INVALID_CERTIFICATE)
    assert not bad.deliver
    assert bad.enforced
    ok = decide(ENFORCE, "mx9.example.net", TLSState.VALID)
    assert ok.deliver
    assert ok.failure is None


def test_testing_delivers_but_reports() -> None:
    # §5: testing: "messages SHOULD be delivered as though there were no MTA-STS validation
    # failure"; failures are reported (RFC 8460)
    outcome = decide(TESTING, "evil.example.org", TLSState.NO_STARTTLS)
    assert outcome.deliver
    assert outcome.failure is not None
    assert not outcome.enforced


def test_none_and_no_policy_deliver() -> None:
    assert decide(NONE, "anything.example", TLSState.NO_STARTTLS).deliver
    assert decide(None, "anything.example", TLSState.NO_STARTTLS).deliver


# ------------------------------------------------------------------------------- cache ---

FOUND_1 = RecordLookup(domain="example.com", status=RecordStatus.FOUND,
                       record=parse_record("v=STSv1; id=1"))
FOUND_2 = RecordLookup(domain="example.com", status=RecordStatus.FOUND,
                       record=parse_record("v=STSv1; id=2"))
GONE = RecordLookup(domain="example.com", status=RecordStatus.NONE)
DNS_DOWN = RecordLookup(domain="example.com", status=RecordStatus.TEMPERROR)


def _entry(policy_id: str = "1", fetched_at: float = 1000.0) -> CachedPolicy:
    return CachedPolicy(domain="example.com", policy=ENFORCE, policy_id=policy_id,
                        fetched_at=fetched_at)


def test_plan_rules() -> None:
    entry = _entry()  # expires at 1000 + 604800
    assert plan(None, FOUND_1, 2000) is FetchPlan.FETCH
    assert plan(entry, FOUND_1, 2000) is FetchPlan.USE_CACHED
    # §3.1 id changed: a new policy
    assert plan(entry, FOUND_2, 2000) is FetchPlan.FETCH
    # expired (max_age): fetch again even with the same id
    assert plan(entry, FOUND_1, 1000 + 604800) is FetchPlan.FETCH
    # §5.1: no live policy via DNS, but a fresh cached one: "MUST apply that cached policy"
    assert plan(entry, GONE, 2000) is FetchPlan.USE_CACHED
    assert plan(entry, DNS_DOWN, 2000) is FetchPlan.USE_CACHED
    assert plan(entry, GONE, 1000 + 604800) is FetchPlan.NO_POLICY
    assert plan(None, GONE, 0) is FetchPlan.NO_POLICY


def test_policy_cache_refresh_on_id_change_and_failed_fetch() -> None:
    clock = FixedClock(wall=10_000.0)
    cache = PolicyCache(clock)
    assert cache.plan(FOUND_1) is FetchPlan.FETCH
    entry = cache.update(FOUND_1, ENFORCE)
    assert entry is not None
    assert entry.policy_id == "1"
    assert entry.fetched_at == 10_000.0
    clock.advance(60)
    assert cache.plan(FOUND_1) is FetchPlan.USE_CACHED
    assert cache.plan(FOUND_2) is FetchPlan.FETCH
    # the fetch for id 2 fails: the old, still fresh policy stays in force (§5.1)
    kept = cache.update(FOUND_2, None)
    assert kept is entry
    # a later fetch for id 2 works: replaced
    new = cache.update(FOUND_2, TESTING)
    assert new is not None
    assert new.policy_id == "2"
    assert new.policy is TESTING
    # after max_age with failed fetches: nothing applies
    clock.advance(TESTING.max_age + 1)
    assert cache.in_force(FOUND_2) is None
    assert cache.update(FOUND_2, None) is None
    assert cache.get("example.com") is None


def test_cache_lru_and_purge() -> None:
    clock = FixedClock(wall=0.0)
    cache = PolicyCache(clock, max_entries=2)
    for name in ("a.example", "b.example", "c.example"):
        cache.put(CachedPolicy(domain=name, policy=ENFORCE, policy_id="1", fetched_at=0))
    assert cache.get("a.example") is None
    assert len(cache) == 2
    clock.advance(ENFORCE.max_age)
    assert cache.purge() == 2
    assert len(cache) == 0


def test_cached_policy_dict_round_trip_and_validation() -> None:
    entry = _entry()
    assert CachedPolicy.from_dict(entry.as_dict()) == entry
    bad = entry.as_dict() | {"id": "no-dashes"}
    with pytest.raises(ParseError):
        CachedPolicy.from_dict(bad)
    with pytest.raises(ParseError):
        CachedPolicy.from_dict(entry.as_dict() | {"policy": "mode: enforce"})
    with pytest.raises(ParseError):
        CachedPolicy.from_dict(entry.as_dict() | {"fetched_at": True})


_LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LABELS, min_size=1, max_size=4), _LABELS, _LABELS)
def test_wildcard_matches_exactly_one_label(base: list[str], one: str, two: str) -> None:
    # §4.1: "*." stands for exactly one label, never zero or two
    domain = ".".join(base)
    assert mx_matches("*." + domain, f"{one}.{domain}")
    assert not mx_matches("*." + domain, domain)
    assert not mx_matches("*." + domain, f"{one}.{two}.{domain}")
    assert mx_matches(domain, domain.upper() + ".")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_record_parser_never_crashes(raw: bytes) -> None:
    try:
        parse_record(b"v=STSv1; " + raw)
    except ParseError:
        pass
