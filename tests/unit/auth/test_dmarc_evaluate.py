"""DMARC evaluation: alignment table, policy selection (p/sp/np), pct sampling, t=y, invalid
policies, and the Author Domain from the From field.

The pure :func:`evaluate` is fed hand-made :class:`PolicyLookup` values; the async wrappers get
a FakeResolver. Expected outcomes are the RFC's (quoted per test).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.auth.dkim import DKIMResult, DKIMResultCode
from mailmoat.auth.dmarc import (
    AuthorExistence,
    AuthorProblem,
    DiscoveryMode,
    Disposition,
    DMARCVerdict,
    LookupStatus,
    Policy,
    PolicyLookup,
    author_domain,
    author_domain_from_value,
    check_dmarc,
    check_message,
    evaluate,
    explain,
    parse_record,
)
from mailmoat.auth.spf import Identity, SPFResult, SPFVerdict
from mailmoat.message import parse_headers
from mailmoat.resolver import FakeResolver

TREE = DiscoveryMode.TREE_WALK
PSL = DiscoveryMode.PSL


def spf(result: SPFVerdict, domain: str) -> SPFResult:
    return SPFResult(result=result, domain=domain, identity=Identity.MAILFROM)


def dkim(result: DKIMResultCode, domain: str, selector: str = "s1") -> DKIMResult:
    return DKIMResult(result=result, domain=domain, selector=selector)


def lookup(
    record: str,
    *,
    author: str = "news.example.com",
    policy_domain: str | None = None,
    org: str = "example.com",
    mode: DiscoveryMode = PSL,
    exists: AuthorExistence = AuthorExistence.EXISTS,
    orgs: dict[str, str] | None = None,
) -> PolicyLookup:
    return PolicyLookup(
        from_domain=author, mode=mode, status=LookupStatus.FOUND, record=parse_record(record),
        policy_domain=policy_domain or author, org_domain=org, author_exists=exists,
        org_domains=orgs or {},
    )


# --- alignment: RFC 9989 §4.4 Table 1, RFC 7489 §3.1.1-3.1.2 ----------------------------------

#: RFC 9989 Table 1 "Alignment Examples": (identifier, author, relaxed aligns, strict aligns)
TABLE_1 = [
    ("foo.example.com", "news.example.com", True, False),  # "relaxed; ... example.com"
    ("news.example.com", "news.example.com", True, True),  # "strict; the two are identical"
    ("foo.example.net", "news.example.com", False, False),  # "none; ... do not share"
]


@pytest.mark.parametrize(("ident", "author", "relaxed", "strict"), TABLE_1)
@pytest.mark.parametrize("method", ["spf", "dkim"])
def test_alignment_table_psl(ident: str, author: str, relaxed: bool, strict: bool,
                             method: str) -> None:
    tag = "aspf" if method == "spf" else "adkim"
    s = spf(SPFVerdict.PASS, ident) if method == "spf" else None
    d = [dkim(DKIMResultCode.PASS, ident)] if method == "dkim" else []
    for mode_letter, want in (("r", relaxed), ("s", strict)):
        look = lookup(f"v=DMARC1; p=reject; {tag}={mode_letter}", author=author)
        result = evaluate(author, s, d, look)
        assert (result.result is DMARCVerdict.PASS) is want, (mode_letter, result.reasons)


@pytest.mark.parametrize(("ident", "author", "relaxed", "strict"), TABLE_1)
async def test_alignment_table_tree_walk(ident: str, author: str, relaxed: bool,
                                         strict: bool) -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    fake.add_txt("_dmarc.example.net", "v=DMARC1; p=none")
    fake.add_a(author, "192.0.2.1")
    for mode_letter, want in (("r", relaxed), ("s", strict)):
        fake.add_txt(f"_dmarc.{author}", f"v=DMARC1; p=reject; adkim={mode_letter}")
        result = await check_dmarc(fake, author, None, [dkim(DKIMResultCode.PASS, ident)])
        assert (result.result is DMARCVerdict.PASS) is want, (mode_letter, result.reasons)
        fake = FakeResolver()
        fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
        fake.add_txt("_dmarc.example.net", "v=DMARC1; p=none")


async def test_tree_walk_psd_n_splits_an_organization() -> None:
    # RFC 9989 §5.1.8: a psd=n record makes its domain an Organizational Domain of its own, so
    # a sibling's identifier no longer aligns in relaxed mode (a PSL would say it does).
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    fake.add_txt("_dmarc.dept.example.com", "v=DMARC1; p=reject; psd=n")
    result = await check_dmarc(fake, "dept.example.com", None,
                               [dkim(DKIMResultCode.PASS, "example.com")])
    assert result.result is DMARCVerdict.FAIL
    assert result.org_domain == "dept.example.com"


def test_only_passing_mechanisms_align() -> None:
    # RFC 7489 §3.1: an identifier is authenticated only when its mechanism passed.
    look = lookup("v=DMARC1; p=reject")
    result = evaluate("news.example.com", spf(SPFVerdict.SOFTFAIL, "news.example.com"),
                      [dkim(DKIMResultCode.FAIL, "news.example.com")], look)
    assert result.result is DMARCVerdict.FAIL
    assert result.disposition is Disposition.REJECT
    assert not result.spf_aligned
    assert not result.dkim_aligned


def test_any_aligned_dkim_signature_passes() -> None:
    # RFC 9989 §4.4.1: "considered to produce a DMARC "pass" result if any DKIM-Authenticated
    # Identifier aligns"
    look = lookup("v=DMARC1; p=reject")
    sigs = [dkim(DKIMResultCode.PASS, "mailer.example.net"),
            dkim(DKIMResultCode.PASS, "example.com")]
    result = evaluate("news.example.com", spf(SPFVerdict.FAIL, "news.example.com"), sigs, look)
    assert result.result is DMARCVerdict.PASS
    assert result.dkim_aligned
    assert not result.spf_aligned
    assert [c.aligned for c in result.identifiers] == [False, False, True]


def test_alignment_is_case_insensitive() -> None:
    # RFC 9989 §4.4: "Domain name comparisons in this context are case-insensitive"
    look = lookup("v=DMARC1; p=reject; aspf=s")
    result = evaluate("News.Example.COM", spf(SPFVerdict.PASS, "NEWS.example.com"), [], look)
    assert result.result is DMARCVerdict.PASS


# --- policy selection: RFC 9989 §4.10.1 ------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "exists", "policy", "tag"),
    [
        ("v=DMARC1; p=reject", AuthorExistence.EXISTS, Policy.REJECT, "p"),
        ("v=DMARC1; p=reject; sp=quarantine", AuthorExistence.EXISTS, Policy.QUARANTINE, "sp"),
        ("v=DMARC1; p=reject; sp=none; np=quarantine", AuthorExistence.EXISTS, Policy.NONE,
         "sp"),
        # "the "np" tag (if any) if the Author Domain does not exist"
        ("v=DMARC1; p=none; sp=none; np=reject", AuthorExistence.NXDOMAIN, Policy.REJECT, "np"),
        # np absent: "the policy specified by the "sp" tag ... MUST be applied"
        ("v=DMARC1; p=none; sp=quarantine", AuthorExistence.NXDOMAIN, Policy.QUARANTINE, "sp"),
        # neither: "the "p" tag policy is used for subdomains"
        ("v=DMARC1; p=reject", AuthorExistence.NXDOMAIN, Policy.REJECT, "p"),
    ],
)
def test_subdomain_policy(record: str, exists: AuthorExistence, policy: Policy,
                          tag: str) -> None:
    look = lookup(record, author="a.example.com", policy_domain="example.com", exists=exists)
    result = evaluate("a.example.com", None, [], look)
    assert result.result is DMARCVerdict.FAIL
    assert (result.policy, result.policy_tag) == (policy, tag)
    assert result.disposition.value == policy.value


def test_author_record_uses_p_even_with_sp() -> None:
    # "If the DMARC Policy Record to be applied is that of the Author Domain, then the Domain
    # Owner Assessment Policy is taken from the "p" tag of the record."
    look = lookup("v=DMARC1; p=quarantine; sp=reject; np=reject",
                  exists=AuthorExistence.NXDOMAIN)
    result = evaluate("news.example.com", None, [], look)
    assert (result.policy, result.policy_tag) == (Policy.QUARANTINE, "p")


async def test_np_through_dns() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=none; np=reject")
    fake.add_a("www.example.com", "192.0.2.1")
    gone = await check_dmarc(fake, "nonexistent.example.com", None, [])
    assert (gone.policy, gone.disposition) == (Policy.REJECT, Disposition.REJECT)
    there = await check_dmarc(fake, "www.example.com", None, [])
    assert (there.policy, there.disposition) == (Policy.NONE, Disposition.NONE)


# --- invalid p / sp / np: RFC 9989 §4.10.1, RFC 7489 §6.6.3 step 6 --------------------------


def test_invalid_p_with_rua_acts_as_none() -> None:
    # "If a "rua" tag is present and contains at least one syntactically valid reporting URI,
    # the Mail Receiver MUST act as if a record containing "p=none" was retrieved"
    look = lookup("v=DMARC1; p=bogus; rua=mailto:r@example.com")
    result = evaluate("news.example.com", None, [], look)
    assert result.result is DMARCVerdict.FAIL
    assert (result.policy, result.disposition) == (Policy.NONE, Disposition.NONE)


def test_invalid_sp_without_rua_is_no_processing() -> None:
    # "Otherwise, the Mail Receiver applies no DMARC processing to this message." (reported as
    # permerror: RFC 7489 §11.2 "such as encountering a syntactically incorrect DMARC record")
    look = lookup("v=DMARC1; p=reject; sp=bogus; rua=not-a-uri")
    result = evaluate("news.example.com", None, [], look)
    assert result.result is DMARCVerdict.PERMERROR
    assert result.disposition is Disposition.NONE


def test_missing_p_per_mode() -> None:
    # RFC 9989 §4.7: absent p "is treated as if it included "p=none""; RFC 7489 §6.3: p is
    # REQUIRED, so §6.6.3 step 6 applies (no rua here: no DMARC processing).
    tree = evaluate("news.example.com", None, [], lookup("v=DMARC1; sp=reject", mode=TREE))
    assert (tree.result, tree.policy) == (DMARCVerdict.FAIL, Policy.NONE)
    psl = evaluate("news.example.com", None, [], lookup("v=DMARC1; sp=reject", mode=PSL))
    assert psl.result is DMARCVerdict.PERMERROR


# --- pct (RFC 7489 §6.6.4) and t (RFC 9989 §4.7) ------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "draw", "disposition", "sampled_out"),
    [
        ("reject", 0.24, Disposition.REJECT, False),  # selected: 24 < 25
        # "If the message is not subject to the "reject" policy (due to the "pct" tag), the
        # Mail Receiver SHOULD treat the email as though the "quarantine" policy applies."
        ("reject", 0.25, Disposition.QUARANTINE, True),
        ("quarantine", 0.10, Disposition.QUARANTINE, False),
        # quarantine not applied: "apply local message classification as normal"
        ("quarantine", 0.99, Disposition.NONE, True),
    ],
)
def test_pct_sampling(policy: str, draw: float, disposition: Disposition,
                      sampled_out: bool) -> None:
    look = lookup(f"v=DMARC1; p={policy}; pct=25")
    result = evaluate("news.example.com", None, [], look, random=lambda: draw)
    assert result.disposition is disposition
    assert result.sampled_out is sampled_out
    assert result.policy is Policy(policy)


def test_pct_sampling_rate_with_seeded_random() -> None:
    # "MUST NOT enforce the "p" policy on more than the stated percent": with a seeded source
    # over 2000 messages, about 30% are enforced.
    rng = random.Random(20261128)
    look = lookup("v=DMARC1; p=reject; pct=30")
    enforced = sum(
        evaluate("news.example.com", None, [], look, random=rng.random).disposition
        is Disposition.REJECT
        for _ in range(2000)
    )
    assert 540 <= enforced <= 660


def test_pct_edges_never_draw_when_not_needed() -> None:
    def boom() -> float:
        raise AssertionError("random drawn")

    full = evaluate("news.example.com", None, [], lookup("v=DMARC1; p=reject"), random=boom)
    assert full.disposition is Disposition.REJECT
    zero = evaluate("news.example.com", None, [], lookup("v=DMARC1; p=reject; pct=0"),
                    random=lambda: 0.0)
    assert zero.disposition is Disposition.QUARANTINE
    assert zero.sampled_out


def test_pct_ignored_in_rfc9989_mode() -> None:
    result = evaluate("news.example.com", None, [],
                      lookup("v=DMARC1; p=reject; pct=0", mode=TREE), random=lambda: 0.99)
    assert result.disposition is Disposition.REJECT
    assert not result.sampled_out


@pytest.mark.parametrize(
    ("policy", "disposition"),
    [
        # "if the policy is "quarantine" and the value of the "t" tag is "y", a policy of
        # "none" will be applied ... if the policy is "reject" ... "quarantine""
        ("reject", Disposition.QUARANTINE),
        ("quarantine", Disposition.NONE),
        ("none", Disposition.NONE),  # "it has no effect on any policy ... that is "none""
    ],
)
def test_t_testing_lowers_one_step(policy: str, disposition: Disposition) -> None:
    result = evaluate("news.example.com", None, [],
                      lookup(f"v=DMARC1; p={policy}; t=y", mode=TREE))
    assert result.disposition is disposition
    assert result.testing is (policy != "none")


def test_t_is_an_unknown_tag_in_rfc7489_mode() -> None:
    result = evaluate("news.example.com", None, [], lookup("v=DMARC1; p=reject; t=y", mode=PSL))
    assert result.disposition is Disposition.REJECT


def test_pass_has_no_disposition() -> None:
    look = lookup("v=DMARC1; p=reject")
    result = evaluate("news.example.com", spf(SPFVerdict.PASS, "example.com"), [], look)
    assert result.result is DMARCVerdict.PASS
    assert result.disposition is Disposition.NONE


def test_no_record_and_temperror_and_multiple() -> None:
    none = PolicyLookup(from_domain="x.example", mode=TREE, status=LookupStatus.NONE)
    assert evaluate("x.example", None, [], none).result is DMARCVerdict.NONE
    temp = PolicyLookup(from_domain="x.example", mode=TREE, status=LookupStatus.TEMPERROR)
    assert evaluate("x.example", None, [], temp).result is DMARCVerdict.TEMPERROR
    multi = PolicyLookup(from_domain="x.example", mode=PSL, status=LookupStatus.MULTIPLE)
    assert evaluate("x.example", None, [], multi).result is DMARCVerdict.NONE


def test_unknown_identifier_org_domain_after_dns_failure_is_temperror() -> None:
    look = PolicyLookup(
        from_domain="example.com", mode=TREE, status=LookupStatus.FOUND,
        record=parse_record("v=DMARC1; p=reject"), policy_domain="example.com",
        org_domain="example.com", org_domain_failures=("mail.example.com",),
    )
    result = evaluate("example.com", None, [dkim(DKIMResultCode.PASS, "mail.example.com")], look)
    assert result.result is DMARCVerdict.TEMPERROR


def test_explain_mentions_the_essentials() -> None:
    look = lookup("v=DMARC1; p=reject; pct=25")
    result = evaluate("news.example.com", spf(SPFVerdict.PASS, "bounce.other.net"),
                      [dkim(DKIMResultCode.FAIL, "news.example.com")], look, random=lambda: 0.9)
    text = "\n".join(explain(result))
    assert "DMARC fail for news.example.com" in text
    assert "_dmarc.news.example.com" in text
    assert "bounce.other.net" in text
    assert "not aligned" in text
    assert "p=reject" in text
    assert "quarantine" in text


# --- the Author Domain (RFC 7489 §6.6.1, RFC 9989 §5.3.1) -----------------------------------


@pytest.mark.parametrize(
    ("value", "domains"),
    [
        (b" user@example.com", ("example.com",)),
        (b' "Joe Q. Public" <john.q.public@Example.COM>', ("example.com",)),
        (b" Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", ("silly.test",)),
        # a quoted local-part may hold "@" and ",": neither splits nor ends the address
        (b' "a@evil.test, b"@good.example', ("good.example",)),
        (b' "Evil, Inc. <x@evil.test>" <ceo@bank.example>', ("bank.example",)),
        (b" Mary <mary@x.test>, jdoe@one.test", ("x.test", "one.test")),
        (b" a@x.test, b@X.test", ("x.test",)),
        (b" <@route.test:user@real.test>", ("real.test",)),  # obs-angle-addr route
        (b" <@r1.test,@r2.test:user@real.test>", ("real.test",)),
        (b"\r\n user@folded.test", ("folded.test",)),
        # RFC 9989 §5.3.1: a U-label "MUST be converted to an A-label" (RFC 3492 punycode)
        ("Jörg <j@bücher.example>".encode(), ("xn--bcher-kva.example",)),
    ],
)
def test_author_domains(value: bytes, domains: tuple[str, ...]) -> None:
    found = author_domain_from_value(value)
    assert found.problem is None
    assert found.domains == domains


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b" undisclosed-recipients:;", AuthorProblem.UNPARSEABLE),
        (b" Group: a@x.test;", AuthorProblem.UNPARSEABLE),
        (b" <a@x.test", AuthorProblem.UNPARSEABLE),
        (b" <a@x.test> trailing", AuthorProblem.UNPARSEABLE),
        (b" <a@evil.test,x@bank.example>", AuthorProblem.UNPARSEABLE),  # two in one angle
        (b" user@[192.0.2.1]", AuthorProblem.NO_DOMAIN),
        (b" no-at-sign", AuthorProblem.NO_DOMAIN),
        (b" user@exa..mple.com", AuthorProblem.NO_DOMAIN),
        (b" ", AuthorProblem.NO_MAILBOX),
        (b" (just a comment)", AuthorProblem.NO_MAILBOX),
    ],
)
def test_author_domain_problems(value: bytes, problem: AuthorProblem) -> None:
    assert author_domain_from_value(value).problem is problem


async def test_check_message_outcomes() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.bank.example", "v=DMARC1; p=reject")
    fake.add_txt("_dmarc.shop.example", "v=DMARC1; p=quarantine")
    fake.add_txt("_dmarc.news.example", "v=DMARC1; p=none")

    async def check(header: bytes) -> DMARCVerdict:
        result = await check_message(fake, parse_headers(header + b"\r\n"), None, [])
        return result.result

    # RFC 7489 §11.2 none: "no aligned identifier could be extracted"
    assert await check(b"Subject: hi\r\n") is DMARCVerdict.NONE
    # RFC 5322 §3.6: one From field; two make DMARC validation impossible (permerror).
    assert await check(b"From: a@bank.example\r\nFrom: b@news.example\r\n") \
        is DMARCVerdict.PERMERROR
    assert await check(b"From: a@[192.0.2.1]\r\n") is DMARCVerdict.PERMERROR
    # RFC 7489 §6.6.1: several domains -> "apply the most strict policy selected among the
    # checks that fail": bank.example's reject.
    result = await check_message(
        fake, parse_headers(b"From: a@news.example, b@bank.example, c@shop.example\r\n\r\n"),
        None, [dkim(DKIMResultCode.PASS, "news.example")],
    )
    assert result.result is DMARCVerdict.FAIL
    assert result.from_domain == "bank.example"
    assert result.disposition is Disposition.REJECT


def test_author_domain_of_header_section() -> None:
    headers = parse_headers(b"From: A <a@one.test>\r\nTo: b@two.test\r\n\r\n")
    assert author_domain(headers).domain == "one.test"


async def test_spf_alignment_through_tree_walk() -> None:
    # RFC 9989 §4.4.2: the SPF-Authenticated Identifier (MAIL FROM domain) aligns in relaxed
    # mode when its Organizational Domain (found by its own walk, §4.10.2) is the author's.
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    result = await check_dmarc(fake, "example.com", spf(SPFVerdict.PASS, "bounce.example.com"),
                               [])
    assert result.result is DMARCVerdict.PASS
    assert result.spf_aligned
    strict = FakeResolver()
    strict.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; aspf=s")
    result = await check_dmarc(strict, "example.com",
                               spf(SPFVerdict.PASS, "bounce.example.com"), [])
    assert result.result is DMARCVerdict.FAIL


async def test_np_not_applied_when_existence_unknown() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=none; np=reject")
    fake.set_servfail("flaky.example.com")
    result = await check_dmarc(fake, "flaky.example.com", None, [])
    assert (result.policy_tag, result.policy) == ("p", Policy.NONE)
    assert any("unknown" in r for r in result.reasons)


async def test_identifier_walk_failure_makes_temperror() -> None:
    # RFC 9989 §5.3.6: "If one or more DNS queries required to perform DMARC validation on the
    # message do not complete due to temporary or permanent DNS errors, the message cannot be
    # considered to pass or fail".
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    fake.set_servfail("_dmarc.mail.example.com")
    result = await check_dmarc(fake, "example.com", None,
                               [dkim(DKIMResultCode.PASS, "mail.example.com")])
    assert result.result is DMARCVerdict.TEMPERROR
    assert result.disposition is Disposition.NONE


async def test_several_from_domains_temperror_beats_pass() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.good.example", "v=DMARC1; p=reject")
    fake.set_timeout("_dmarc.slow.example")
    result = await check_message(
        fake, parse_headers(b"From: a@good.example, b@slow.example\r\n\r\n"), None,
        [dkim(DKIMResultCode.PASS, "good.example")],
    )
    assert result.result is DMARCVerdict.TEMPERROR
    assert result.from_domain == "slow.example"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.text(
    alphabet=st.sampled_from(list('ab.@<>,;:()"\\ []é\r\n')), max_size=200).map(str.encode))
def test_author_extraction_is_total(value: bytes) -> None:
    """Any From value gives a value: domains and no problem, or a problem (never raises)."""
    found = author_domain_from_value(value)
    if found.problem is None:
        assert found.domains
        assert all(d == d.lower() and d.isascii() for d in found.domains)


def test_result_as_dict_and_accessors() -> None:
    look = lookup("v=DMARC1; p=reject; adkim=s")
    result = evaluate("news.example.com", spf(SPFVerdict.PASS, "example.com"),
                      [dkim(DKIMResultCode.PASS, "news.example.com", "sel")], look)
    assert result.record_text == "v=DMARC1; p=reject; adkim=s"
    assert [i.method for i in result.aligned_identifiers] == ["spf", "dkim"]
    data = result.as_dict()
    assert data["result"] == "pass"
    assert data["record"] == "v=DMARC1; p=reject; adkim=s"
    assert [(i["method"], i["mode"], i["selector"]) for i in data["identifiers"]] == [
        ("spf", "relaxed", None), ("dkim", "strict", "sel")]
