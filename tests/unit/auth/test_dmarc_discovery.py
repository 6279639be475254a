"""DMARC policy discovery through a FakeResolver: RFC 9989 §4.10 DNS Tree Walk (counting the
questions) and RFC 7489 §6.6.3 with the Public Suffix List.

Expected names and Organizational Domains are the RFC's own examples, quoted per test.
"""

from __future__ import annotations

import pytest

from mailmoat import limits
from mailmoat.auth.dkim import txt_strings
from mailmoat.auth.dmarc import (
    AuthorExistence,
    DiscoveryMode,
    LookupStatus,
    Policy,
    discover_policy,
    org_domain_from_walk,
    parse_record,
    tree_walk_names,
)
from mailmoat.resolver import FakeResolver, RRType

TREE = DiscoveryMode.TREE_WALK
PSL = DiscoveryMode.PSL


def txt_queries(fake: FakeResolver) -> list[str]:
    return [name for name, rrtype in fake.queries if rrtype is RRType.TXT]


# --- RFC 9989 §4.10: which names are asked ------------------------------------------------

#: §4.10: "for a message with the arbitrary Author Domain of
#: "a.b.c.d.e.f.g.h.i.j.mail.example.com", a full DNS Tree Walk would require the following
#: eight queries"
LONG_AUTHOR = "a.b.c.d.e.f.g.h.i.j.mail.example.com"
LONG_WALK = [
    "_dmarc.a.b.c.d.e.f.g.h.i.j.mail.example.com",
    "_dmarc.g.h.i.j.mail.example.com",
    "_dmarc.h.i.j.mail.example.com",
    "_dmarc.i.j.mail.example.com",
    "_dmarc.j.mail.example.com",
    "_dmarc.mail.example.com",
    "_dmarc.example.com",
    "_dmarc.com",
]

#: §5.1.8: "A Mail Receiver performing a Tree Walk would only perform queries for these names"
ZONE_CUT_AUTHOR = "mail.a.b.c.d.e.f.g.example.com"
ZONE_CUT_WALK = [
    "_dmarc.mail.a.b.c.d.e.f.g.example.com",
    "_dmarc.c.d.e.f.g.example.com",
    "_dmarc.d.e.f.g.example.com",
    "_dmarc.e.f.g.example.com",
    "_dmarc.f.g.example.com",
    "_dmarc.g.example.com",
    "_dmarc.example.com",
    "_dmarc.com",
]


@pytest.mark.parametrize(("author", "walk"), [(LONG_AUTHOR, LONG_WALK),
                                              (ZONE_CUT_AUTHOR, ZONE_CUT_WALK)])
def test_tree_walk_names_rfc_examples(author: str, walk: list[str]) -> None:
    assert ["_dmarc." + n for n in tree_walk_names(author)] == walk


@pytest.mark.parametrize(("author", "walk"), [(LONG_AUTHOR, LONG_WALK),
                                              (ZONE_CUT_AUTHOR, ZONE_CUT_WALK)])
async def test_tree_walk_asks_exactly_the_rfc_names(author: str, walk: list[str]) -> None:
    fake = FakeResolver()
    fake.add_a("example.com", "192.0.2.1")  # the zone exists; no DMARC records anywhere
    lookup = await discover_policy(fake, author, mode=TREE)
    assert lookup.status is LookupStatus.NONE
    assert txt_queries(fake) == walk
    assert len(fake.queries) <= limits.DMARC_TREE_WALK_MAX_QUERIES


def test_short_names_walk_every_label() -> None:
    # §4.10 step 4: "If x < 8, remove the left-most (highest-numbered) label"
    assert tree_walk_names("a.mail.example.com") == (
        "a.mail.example.com", "mail.example.com", "example.com", "com",
    )
    eight = "a.b.c.d.e.f.example.com"  # exactly 8 labels: parent is 7 labels
    assert tree_walk_names(eight)[1] == "b.c.d.e.f.example.com"
    assert len(tree_walk_names(eight)) == 8


async def test_zone_cut_record_beyond_the_skip_is_never_found() -> None:
    # §5.1.8: the psd=n record at b.c.d.e.f.g.example.com "will never be discovered".
    fake = FakeResolver()
    fake.add_txt("_dmarc.b.c.d.e.f.g.example.com", "v=DMARC1; p=reject; psd=n")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=none")
    lookup = await discover_policy(fake, ZONE_CUT_AUTHOR, mode=TREE)
    assert lookup.policy_domain == "example.com"
    assert lookup.record is not None
    assert lookup.record.p is Policy.NONE
    assert "_dmarc.b.c.d.e.f.g.example.com" not in txt_queries(fake)


# --- RFC 9989 §4.10.2: selecting the Organizational Domain ---------------------------------


async def test_org_domain_example_1_fewest_labels() -> None:
    # "If there are DMARC Policy Records published at "_dmarc.mail.example.com" and
    # "_dmarc.example.com", but not at "_dmarc.a.mail.example.com" or "_dmarc.com", then the
    # Organizational Domain for this domain would be "example.com"."
    fake = FakeResolver()
    fake.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=quarantine")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    lookup = await discover_policy(fake, "a.mail.example.com", mode=TREE)
    assert lookup.org_domain == "example.com"
    assert txt_queries(fake) == ["_dmarc.a.mail.example.com", "_dmarc.mail.example.com",
                                 "_dmarc.example.com", "_dmarc.com"]
    # §4.10.1: the record applied is the Organizational Domain's.
    assert lookup.policy_domain == "example.com"
    assert lookup.record is not None
    assert lookup.record.p is Policy.REJECT


async def test_org_domain_example_2_psd_n_stops() -> None:
    # "if a search for the Organizational Domain yields a DMARC Policy Record at
    # "_dmarc.mail.example.com" with the "psd" tag set to "n", then the Organizational Domain
    # for this domain would be "mail.example.com"."
    fake = FakeResolver()
    fake.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=quarantine; psd=n")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    lookup = await discover_policy(fake, "a.mail.example.com", mode=TREE)
    assert lookup.org_domain == "mail.example.com"
    # §4.10 step 6: "If a single record remains and it contains a "psd=n" ... tag, stop."
    assert txt_queries(fake) == ["_dmarc.a.mail.example.com", "_dmarc.mail.example.com"]
    assert lookup.policy_domain == "mail.example.com"


async def test_org_domain_example_3_psd_y() -> None:
    # "if a search for the Organizational Domain only yields a DMARC Policy Record at
    # "_dmarc.com" and that record contains the tag "psd=y", then the Organizational Domain for
    # this domain would be "example.com"."
    fake = FakeResolver()
    fake.add_txt("_dmarc.com", "v=DMARC1; p=reject; np=reject; psd=y")
    fake.add_a("a.mail.example.com", "192.0.2.1")
    lookup = await discover_policy(fake, "a.mail.example.com", mode=TREE)
    assert lookup.org_domain == "example.com"
    # §4.10.1: no record at the Author or Organizational Domain: the PSD's applies.
    assert lookup.policy_domain == "com"
    assert lookup.author_exists is AuthorExistence.EXISTS


def test_org_domain_from_walk_rules_directly() -> None:
    rec = parse_record
    assert org_domain_from_walk("a.b.example", []) == "a.b.example"  # "initial target"
    # psd=y at the start does not count for rule 2.
    assert org_domain_from_walk("example", [("example", rec("v=DMARC1; psd=y"))]) == "example"


# --- RFC 9989 §4.10.1: policy discovery ----------------------------------------------------


async def test_author_record_wins_and_walk_continues_for_org_domain() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.news.example.com", "v=DMARC1; p=none")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    lookup = await discover_policy(fake, "news.example.com", mode=TREE)
    assert lookup.policy_domain == "news.example.com"
    assert lookup.record is not None
    assert lookup.record.p is Policy.NONE
    assert lookup.org_domain == "example.com"


async def test_strict_record_needs_no_walk() -> None:
    # §4.10.2: no Identifier Alignment Evaluation needed when "The DMARC Policy Record for the
    # Author Domain indicates strict alignment".
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; adkim=s; aspf=s")
    lookup = await discover_policy(fake, "example.com", mode=TREE)
    assert lookup.status is LookupStatus.FOUND
    assert txt_queries(fake) == ["_dmarc.example.com"]


async def test_multiple_records_discarded_in_tree_walk() -> None:
    # §4.10 step 2: "If multiple DMARC Policy Records are returned for a single target, they
    # are all discarded."
    fake = FakeResolver()
    fake.add_txt("_dmarc.sub.example.com", "v=DMARC1; p=none")
    fake.add_txt("_dmarc.sub.example.com", "v=DMARC1; p=reject")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    fake.add_a("sub.example.com", "192.0.2.1")
    lookup = await discover_policy(fake, "sub.example.com", mode=TREE)
    assert lookup.policy_domain == "example.com"


async def test_non_dmarc_txt_records_are_discarded() -> None:
    # RFC 7489 §6.6.3 step 2: "Records that do not start with a "v=" tag that identifies the
    # current version of DMARC are discarded."
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=spf1 -all")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    fake.add_txt("_dmarc.example.com", "google-site-verification=abc")
    lookup = await discover_policy(fake, "example.com", mode=PSL)
    assert lookup.status is LookupStatus.FOUND


async def test_temperror_during_walk() -> None:
    fake = FakeResolver()
    fake.set_servfail("_dmarc.example.com")
    lookup = await discover_policy(fake, "mail.example.com", mode=TREE)
    assert lookup.status is LookupStatus.TEMPERROR


async def test_nxdomain_check_only_when_np_matters() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; np=quarantine")
    lookup = await discover_policy(fake, "ghost.example.com", mode=TREE)
    assert lookup.author_exists is AuthorExistence.NXDOMAIN
    assert ("ghost.example.com", RRType.A) in fake.queries
    plain = FakeResolver()
    plain.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    await discover_policy(plain, "ghost.example.com", mode=TREE)
    assert all(rrtype is RRType.TXT for _, rrtype in plain.queries)


async def test_identifier_walks_are_bounded_and_cached() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    idents = [f"s{i}.example.org" for i in range(30)]
    lookup = await discover_policy(fake, "example.com", mode=TREE, identifiers=idents)
    assert len(lookup.org_domains) == limits.DMARC_MAX_ALIGNMENT_WALKS
    # "_dmarc.example.org" and "_dmarc.org" are asked once, whatever the number of walks.
    assert txt_queries(fake).count("_dmarc.example.org") == 1
    assert txt_queries(fake).count("_dmarc.org") == 1


# --- RFC 7489 §6.6.3 (PSL mode) -------------------------------------------------------------


async def test_psl_mode_asks_from_then_org_domain() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.co.uk", "v=DMARC1; p=reject; sp=quarantine")
    fake.add_a("a.b.example.co.uk", "192.0.2.1")
    lookup = await discover_policy(fake, "a.b.example.co.uk", mode=PSL)
    # §3.2: co.uk is a public suffix, so the Organizational Domain is example.co.uk.
    assert lookup.org_domain == "example.co.uk"
    assert txt_queries(fake) == ["_dmarc.a.b.example.co.uk", "_dmarc.example.co.uk"]
    assert lookup.policy_domain == "example.co.uk"


async def test_psl_mode_multiple_records_terminate() -> None:
    # §6.6.3 step 5: "If the remaining set contains multiple records or no records, policy
    # discovery terminates and DMARC processing is not applied to this message."
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=none")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    lookup = await discover_policy(fake, "example.com", mode=PSL)
    assert lookup.status is LookupStatus.MULTIPLE


async def test_psl_mode_no_record() -> None:
    fake = FakeResolver()
    lookup = await discover_policy(fake, "mail.example.net", mode=PSL)
    assert lookup.status is LookupStatus.NONE
    assert txt_queries(fake) == ["_dmarc.mail.example.net", "_dmarc.example.net"]


async def test_unaskable_name_is_no_record() -> None:
    # A From domain so long that "_dmarc." + it exceeds 255 octets cannot be asked.
    long = ".".join(["a" * 60] * 4)
    lookup = await discover_policy(FakeResolver(), long, mode=PSL)
    assert lookup.status is LookupStatus.NONE


# --- DNS trouble ---------------------------------------------------------------------------


async def test_temperror_at_the_author_domain() -> None:
    fake = FakeResolver()
    fake.set_timeout("_dmarc.example.com")
    lookup = await discover_policy(fake, "example.com", mode=TREE)
    assert lookup.status is LookupStatus.TEMPERROR
    psl = await discover_policy(fake, "example.com", mode=PSL)
    assert psl.status is LookupStatus.TEMPERROR


async def test_permanent_dns_failure_counts_as_no_record() -> None:
    # A CNAME loop at _dmarc.sub (RFC 1034 §3.6.2: "signalled as an error") cannot heal: no
    # record there, and the walk goes on to the parent.
    fake = FakeResolver()
    fake.add_cname("_dmarc.sub.example.com", "loop.example.com")
    fake.add_cname("loop.example.com", "_dmarc.sub.example.com")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    lookup = await discover_policy(fake, "sub.example.com", mode=TREE)
    assert lookup.status is LookupStatus.FOUND
    assert lookup.policy_domain == "example.com"


async def test_oversized_record_counts_as_no_record() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com",
                 "v=DMARC1; p=reject; rua=mailto:" + "a" * limits.DMARC_RECORD_MAX + "@x.test")
    lookup = await discover_policy(fake, "example.com", mode=PSL)
    assert lookup.status is LookupStatus.NONE
    assert lookup.problem is not None


async def test_existence_unknown_after_dns_failure() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=none; np=reject")
    fake.set_servfail("flaky.example.com")
    lookup = await discover_policy(fake, "flaky.example.com", mode=TREE)
    assert lookup.author_exists is AuthorExistence.UNKNOWN


async def test_identifier_walk_failure_is_recorded() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    fake.set_servfail("_dmarc.mail.example.org")
    lookup = await discover_policy(fake, "example.com", mode=TREE,
                                   identifiers=["mail.example.org"])
    assert lookup.org_domain_failures == ("mail.example.org",)


# --- parsed answers are remembered per process (_discover._PARSED) --------------------------


async def test_remembered_answers_give_the_same_lookup() -> None:
    # The same record text at two names (and asked twice): every lookup is the one a fresh
    # parse gives, and only the name asked differs (RFC 7489 §6.6.3 step 1).
    fake = FakeResolver()
    text = "v=DMARC1; p=quarantine; sp=reject; adkim=s; rua=mailto:r@one.example"
    fake.add_txt("_dmarc.one.example", text)
    fake.add_txt("_dmarc.two.example", text)
    first = await discover_policy(fake, "one.example", mode=PSL)
    again = await discover_policy(fake, "one.example", mode=PSL)
    other = await discover_policy(fake, "two.example", mode=PSL)
    assert first == again
    assert first.record == parse_record(text)
    assert other.record == parse_record(text)
    assert (first.policy_domain, other.policy_domain) == ("one.example", "two.example")
    assert first.record is not None
    assert first.record.sp is Policy.REJECT


async def test_remembered_problems_name_the_domain_asked() -> None:
    # Identical answers at two names: the notes must name each name, not the first one seen.
    fake = FakeResolver()
    for domain in ("a.example", "b.example"):
        fake.add_txt(f"_dmarc.{domain}", "v=DMARC1; p=none")
        fake.add_txt(f"_dmarc.{domain}", "v=DMARC1; p=reject")
        fake.add_txt(f"_dmarc.bad.{domain}", *txt_strings("v=DMARC1; p=none; x="
                                                          + "x" * limits.DMARC_RECORD_MAX))
    for domain in ("a.example", "b.example"):
        multiple = await discover_policy(fake, domain, mode=PSL)
        assert multiple.status is LookupStatus.MULTIPLE
        assert multiple.problem is not None
        assert f"_dmarc.{domain}" in multiple.problem
        assert "2 DMARC records" in multiple.problem
        bad = await discover_policy(fake, f"bad.{domain}", mode=TREE)
        assert bad.problem is not None
        assert bad.problem.startswith(f"_dmarc.bad.{domain}: ")
        assert "treated as no record" in bad.problem


async def test_remembered_answers_are_bounded() -> None:
    from mailmoat.auth.dmarc import _discover

    fake = FakeResolver()
    count = _discover._PARSED_MAX_ENTRIES + 10
    for i in range(count):
        fake.add_txt(f"_dmarc.d{i}.example", f"v=DMARC1; p=reject; rua=mailto:r{i}@x.example")
    fake.add_txt("_dmarc.big.example", "v=DMARC1; p=none; rua=mailto:"
                 + "a" * (_discover._PARSED_MAX_KEY_OCTETS + 1) + "@x.example")
    for i in range(count):
        found = await discover_policy(fake, f"d{i}.example", mode=PSL)
        assert found.record is not None
        assert found.record.rua[0].uri == f"mailto:r{i}@x.example"
    assert len(_discover._PARSED) <= _discover._PARSED_MAX_ENTRIES
    before = len(_discover._PARSED)
    big = await discover_policy(fake, "big.example", mode=PSL)
    assert big.record is not None  # parsed, but too large to be kept
    assert not any(len(b"".join(k)) > _discover._PARSED_MAX_KEY_OCTETS for k in _discover._PARSED)
    assert len(_discover._PARSED) <= max(before, _discover._PARSED_MAX_ENTRIES)
