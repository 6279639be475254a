"""BIMI records, discovery and the DMARC prerequisite.

Discovery runs over the DNS data of Mail::BIMI's test suite
(../shared/conformance/bimi-mail-bimi/t-zonefile, lines ``name TYPE "value"``), with the
outcomes its tests expect (t/01-dns-lookup*.t, t/01-record-fallback.t, t/01-results-nobimi.t).
"""

from __future__ import annotations

import pytest

from conftest import conformance
from mailmoat.auth.bimi import (
    BIMIStatus,
    dmarc_allows_bimi,
    lookup_bimi,
    parse_bimi,
)
from mailmoat.auth.dmarc import parse_record as parse_dmarc
from mailmoat.errors import ParseError
from mailmoat.resolver import FakeResolver

LOGO = "https://fastmaildmarc.com/FM_BIMI.svg"


def zone() -> FakeResolver:
    text = conformance("bimi-mail-bimi", "t-zonefile").read_text(encoding="utf-8")
    # names are absolute without the trailing dot: load relative to the root
    return FakeResolver.from_zone_text(text, origin=".")


def org(domain: str) -> str:
    return ".".join(domain.split(".")[-2:])


# ------------------------------------------------------------------------ discovery ---

async def test_default_selector_found() -> None:
    found = await lookup_bimi(zone(), "dnslookupfail.com", org_domain=org)
    assert found.status is BIMIStatus.FOUND
    assert found.record is not None
    assert found.record.location == LOGO
    assert found.name == "default._bimi.dnslookupfail.com"


async def test_named_selector() -> None:
    # t/01-dns-lookup.t: selector "selector" at the author domain
    found = await lookup_bimi(zone(), "dnslookup.com", selector="selector", org_domain=org)
    assert found.status is BIMIStatus.FOUND
    assert found.selector == "selector"


async def test_selector_through_cname() -> None:
    found = await lookup_bimi(zone(), "dnslookupcname.com", selector="selector",
                              org_domain=org)
    assert found.status is BIMIStatus.FOUND
    assert found.record is not None
    assert found.record.location == LOGO


async def test_fallback_to_default_selector() -> None:
    # t/01-record-fallback.t: a missing selector falls back to default at the org domain
    found = await lookup_bimi(zone(), "recordfallback.com", selector="FAKEfoobar",
                              org_domain=org)
    assert (found.status, found.selector, found.domain) == (
        BIMIStatus.FOUND, "default", "recordfallback.com")
    sub = await lookup_bimi(zone(), "no.domain.recordfallback.com", selector="FAKEfoobar",
                            org_domain=org)
    assert (sub.status, sub.selector, sub.domain) == (
        BIMIStatus.FOUND, "default", "recordfallback.com")
    assert sub.queried == ("FAKEfoobar._bimi.no.domain.recordfallback.com",
                           "default._bimi.recordfallback.com")


async def test_fallback_fails_when_only_another_selector_exists() -> None:
    # t/01-dns-lookup-fallback-fail.t: selector missing, no default record -> no record
    found = await lookup_bimi(zone(), "dnslookupfallbackfail.com", selector="foobarMISSING",
                              org_domain=org)
    assert found.status is BIMIStatus.NONE


@pytest.mark.parametrize("domain", ["dnslookupnorecord.com", "resultsnobimi.com"])
async def test_no_record(domain: str) -> None:
    assert (await lookup_bimi(zone(), domain, org_domain=org)).status is BIMIStatus.NONE


async def test_empty_authority_tag() -> None:
    found = await lookup_bimi(zone(), "fastmaildmarc.com", org_domain=org)
    assert found.status is BIMIStatus.FOUND
    assert found.record is not None
    assert found.record.authority is None
    assert found.record.location == LOGO


async def test_multiple_distinct_records_and_dns_failure() -> None:
    # Identical TXT records are one RRset member in DNS (RFC 2181 §5), so the zone file's
    # "multi" names collapse to one record; distinct ones are a failure (MULTI_BIMI_RECORD).
    fake = FakeResolver()
    fake.add_txt("default._bimi.multi.example", "v=BIMI1; l=https://a.example/1.svg")
    fake.add_txt("default._bimi.multi.example", "v=BIMI1; l=https://a.example/2.svg")
    fake.add_txt("default._bimi.down.example", "v=BIMI1; l=")
    fake.set_servfail("default._bimi.down.example")
    multi = await lookup_bimi(fake, "multi.example", org_domain=org)
    assert multi.status is BIMIStatus.MULTIPLE
    down = await lookup_bimi(fake, "down.example", org_domain=org)
    assert down.status is BIMIStatus.TEMPERROR


# ------------------------------------------------------------------------- records ---

def test_record_forms() -> None:
    both = parse_bimi("v=BIMI1; l=https://e.example/logo.svg; a=https://e.example/vmc.pem")
    assert both.authority == "https://e.example/vmc.pem"
    assert not both.declined
    assert parse_bimi("v=BIMI1; l=; a=").declined
    assert parse_bimi("v=bimi1; l=" + LOGO).warnings  # lower-case version noted


@pytest.mark.parametrize("text", [
    "v=BIMI2; l=https://e.example/a.svg",
    "l=https://e.example/a.svg; v=BIMI1",
    "v=BIMI1; l=http://e.example/a.svg",  # https only
    "v=BIMI1; l=https://e.example/a.svg,https://e.example/b.svg",
    "v=BIMI1; l=https://e.example/a.svg; l=https://e.example/b.svg",
    "v=BIMI1; l=https://e.example/a.svg; junk",
])
def test_bad_records(text: str) -> None:
    with pytest.raises(ParseError):
        parse_bimi(text)


# ----------------------------------------------------------------- DMARC prerequisite ---

@pytest.mark.parametrize(("record", "subdomain", "ok"), [
    ("v=DMARC1; p=reject", False, True),
    ("v=DMARC1; p=quarantine", False, True),
    ("v=DMARC1; p=none", False, False),
    ("v=DMARC1; p=quarantine; pct=50", False, False),
    ("v=DMARC1; p=reject; sp=none", True, False),
    ("v=DMARC1; p=reject; sp=quarantine", True, True),
])
def test_dmarc_prerequisite(record: str, subdomain: bool, ok: bool) -> None:
    assert dmarc_allows_bimi(parse_dmarc(record), subdomain=subdomain)[0] is ok


def test_dmarc_missing() -> None:
    assert dmarc_allows_bimi(None)[0] is False
