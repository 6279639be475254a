"""Domain posture (gateway.posture) over FakeResolver zones: good and broken setups per area.

Expected severities follow the RFC rules each check cites: RFC 7208 (one SPF record §4.5, 10
DNS terms and 2 void lookups §4.6.4, +all, ptr §5.5, include without record §5.2), RFC 7489
(§6.6.3 several records, §7.1 external report destinations), RFC 8301 §3.2 (RSA key sizes),
RFC 6376 §3.6.1 (empty p= revokes), RFC 7505 (null MX), RFC 8461 (MTA-STS), RFC 8460 (TLS-RPT),
RFC 7672 (TLSA).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailmoat import limits
from mailmoat.auth.dkim import key_record, txt_strings
from mailmoat.clock import FixedClock
from mailmoat.errors import StoreError
from mailmoat.gateway.posture import (
    COMMON_SELECTORS,
    LEARNED_SELECTOR_WINDOW,
    DomainReport,
    PostureOptions,
    Severity,
    check_domain,
    check_domains,
)
from mailmoat.net.fetch import Fetcher
from mailmoat.net.smtp_client import TLSDetails
from mailmoat.net.starttls_probe import ProbeResult
from mailmoat.resolver import FakeResolver
from mailmoat.store import DkimRecord, SQLiteStore, Verdict

NOW = datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC)
CLOCK = FixedClock(wall=NOW.timestamp())
NO_SMTP = PostureOptions(smtp=False, common_selectors=False, selectors=("s1",))


@pytest.fixture(scope="module")
def rsa2048() -> str:
    return key_record(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def rsa1024() -> str:
    return key_record(rsa.generate_private_key(public_exponent=65537, key_size=1024))


def base_zone(key: str) -> FakeResolver:
    """A domain with everything right (MTA-STS policy served by the mock HTTPS below)."""
    fake = FakeResolver()
    fake.add_mx("example.com", 10, "mx1.example.com")
    fake.add_a("mx1.example.com", "192.0.2.25")
    fake.add_txt("example.com", "v=spf1 mx include:_spf.example.com -all")
    fake.add_txt("_spf.example.com", "v=spf1 ip4:192.0.2.0/24 -all")
    fake.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:dmarc@example.com")
    fake.add_txt("s1._domainkey.example.com", *txt_strings(key))
    fake.add_txt("_mta-sts.example.com", "v=STSv1; id=20261128")
    fake.add_txt("_smtp._tls.example.com", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
    fake.add_txt("default._bimi.example.com",
                 "v=BIMI1; l=https://example.com/logo.svg; a=https://example.com/vmc.pem")
    return fake


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" version="1.2" baseProfile="tiny-ps"/>'
POLICY = b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 604800\n"


def fetcher_for(body: bytes = POLICY, status: int = 200,
                content_type: str = "text/plain") -> Fetcher:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "example.com" and request.url.path == "/logo.svg":
            return httpx.Response(200, content=SVG, headers={"content-type": "image/svg+xml"})
        if request.url.host != "mta-sts.example.com":
            return httpx.Response(404)
        assert request.url.path == "/.well-known/mta-sts.txt"
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return Fetcher(transport=httpx.MockTransport(handler))


def severities(report: DomainReport, check: str) -> list[Severity]:
    return [f.severity for f in report.by_check(check)]


async def run(fake: FakeResolver, options: PostureOptions = NO_SMTP, *,
              fetcher: Fetcher | None = None, prober: object = None) -> DomainReport:
    async with fetcher or fetcher_for() as f:
        return await check_domain("example.com", fake, options=options, fetcher=f,
                                  prober=prober, clock=CLOCK)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- good ---

async def test_good_domain(rsa2048: str) -> None:
    report = await run(base_zone(rsa2048))
    errors = [f for f in report.findings if f.severity in (Severity.ERROR, Severity.WARNING)]
    assert errors == []
    for check in ("mx", "spf", "dmarc", "dkim", "bimi", "mta-sts", "tls-rpt"):
        assert Severity.OK in severities(report, check), check
    data = report.as_dict()
    json.dumps(data)  # JSON-ready
    assert data["domain"] == "example.com"
    assert data["worst"] == "info"
    assert set(data["findings"][0]) == {"check", "severity", "message", "fix"}
    assert data["spf"]["lookups"] == 2  # mx + include (RFC 7208 §4.6.4 counting)
    assert data["mta_sts"]["policy"]["mode"] == "enforce"
    assert data["mx"]["hosts"][0]["mta_sts_match"] is True
    assert data["dkim"]["keys"][0]["bits"] == 2048


# ------------------------------------------------------------------------------ MX ---

async def test_null_mx(rsa2048: str) -> None:
    fake = base_zone(rsa2048)
    null = FakeResolver()
    null.add_mx("example.com", 0, ".")
    null.add_txt("example.com", "v=spf1 -all")
    report = await run(null)
    assert severities(report, "mx") == [Severity.INFO]
    assert report.details["mx"]["null_mx"] is True
    assert report.by_check("mta-sts") == ()  # not expected of a domain without mail
    fake.add_mx("example.com", 0, ".")
    mixed = await run(fake)
    assert Severity.ERROR in severities(mixed, "mx")  # RFC 7505 §3


async def test_implicit_mx_and_missing_address(rsa2048: str) -> None:
    fake = FakeResolver()
    fake.add_a("example.com", "192.0.2.1")
    report = await run(fake)
    assert severities(report, "mx") == [Severity.WARNING]
    assert report.details["mx"]["implicit"] is True
    broken = FakeResolver()
    broken.add_mx("example.com", 10, "nowhere.example.com")
    broken.add_txt("example.com", "v=spf1 -all")
    report = await run(broken)
    assert Severity.ERROR in severities(report, "mx")


async def test_nxdomain() -> None:
    report = await run(FakeResolver())
    assert Severity.ERROR in severities(report, "mx")


# ----------------------------------------------------------------------------- SPF ---

async def spf_report(rsa2048: str, *records: str, extra: dict[str, str] | None = None
                     ) -> DomainReport:
    fake = base_zone(rsa2048)
    fake2 = FakeResolver()
    # rebuild without the good SPF record
    fake2.add_mx("example.com", 10, "mx1.example.com")
    fake2.add_a("mx1.example.com", "192.0.2.25")
    for record in records:
        fake2.add_txt("example.com", record)
    for name, text in (extra or {}).items():
        fake2.add_txt(name, text)
    del fake
    return await run(fake2)


async def test_two_spf_records(rsa2048: str) -> None:
    report = await spf_report(rsa2048, "v=spf1 -all", "v=spf1 mx -all")
    assert severities(report, "spf") == [Severity.ERROR]


async def test_plus_all_and_question_all(rsa2048: str) -> None:
    assert Severity.ERROR in severities(await spf_report(rsa2048, "v=spf1 mx +all"), "spf")
    assert Severity.ERROR in severities(await spf_report(rsa2048, "v=spf1 mx all"), "spf")
    assert severities(await spf_report(rsa2048, "v=spf1 mx ?all"), "spf") == [Severity.WARNING]
    assert severities(await spf_report(rsa2048, "v=spf1 mx"), "spf") == [Severity.WARNING]


async def test_eleven_lookups(rsa2048: str) -> None:
    includes = {f"i{n}.example.com": "v=spf1 a -all" for n in range(5)}
    record = "v=spf1 " + " ".join(f"include:i{n}.example.com" for n in range(5)) + " mx -all"
    # 5 includes + 5 "a" inside them + 1 mx = 11 DNS-querying terms > 10
    for name in includes:
        includes[name] = "v=spf1 a -all"
    fake_extra = dict(includes)
    report = await spf_report(rsa2048, record, extra=fake_extra)
    assert report.details["spf"]["lookups"] == 11
    assert Severity.ERROR in severities(report, "spf")
    ten = "v=spf1 " + " ".join(f"include:i{n}.example.com" for n in range(5)) + " -all"
    ok = await spf_report(rsa2048, ten, extra=fake_extra)
    assert ok.details["spf"]["lookups"] == 10


async def test_void_lookups_and_missing_include(rsa2048: str) -> None:
    record = "v=spf1 a:n1.example.com a:n2.example.com a:n3.example.com -all"
    report = await spf_report(rsa2048, record)
    assert report.details["spf"]["void_lookups"] == 3
    assert Severity.ERROR in severities(report, "spf")
    missing = await spf_report(rsa2048, "v=spf1 include:nospf.example.com -all",
                               extra={"nospf.example.com": "hello"})
    assert any("permerror" in f.message for f in missing.by_check("spf"))


async def test_ptr_and_syntax(rsa2048: str) -> None:
    assert Severity.WARNING in severities(await spf_report(rsa2048, "v=spf1 ptr -all"), "spf")
    assert severities(await spf_report(rsa2048, "v=spf1 ip4:300.1.1.1 -all"),
                      "spf") == [Severity.ERROR]
    assert severities(await spf_report(rsa2048), "spf") == [Severity.ERROR]  # none at all


async def test_include_with_plus_all(rsa2048: str) -> None:
    report = await spf_report(rsa2048, "v=spf1 include:open.example.com -all",
                              extra={"open.example.com": "v=spf1 +all"})
    assert any("+all" in f.message for f in report.by_check("spf"))


# --------------------------------------------------------------------------- DMARC ---

def dmarc_zone(key: str, *records: str) -> FakeResolver:
    fake = FakeResolver()
    fake.add_mx("example.com", 10, "mx1.example.com")
    fake.add_a("mx1.example.com", "192.0.2.25")
    fake.add_txt("example.com", "v=spf1 mx -all")
    fake.add_txt("s1._domainkey.example.com", *txt_strings(key))
    for record in records:
        fake.add_txt("_dmarc.example.com", record)
    return fake


async def test_dmarc_missing_bad_none(rsa2048: str) -> None:
    assert severities(await run(dmarc_zone(rsa2048)), "dmarc") == [Severity.ERROR]
    bad = await run(dmarc_zone(rsa2048, "v=DMARC1; p=bogus; rua=mailto:d@example.com"))
    assert Severity.ERROR in severities(bad, "dmarc")
    none = await run(dmarc_zone(rsa2048, "v=DMARC1; p=none; rua=mailto:d@example.com"))
    assert severities(none, "dmarc") == [Severity.WARNING]
    two = await run(dmarc_zone(rsa2048, "v=DMARC1; p=none", "v=DMARC1; p=reject"))
    assert severities(two, "dmarc") == [Severity.ERROR]


async def test_dmarc_pct_and_no_rua(rsa2048: str) -> None:
    report = await run(dmarc_zone(rsa2048, "v=DMARC1; p=quarantine; pct=20"))
    assert severities(report, "dmarc").count(Severity.WARNING) == 2


async def test_external_rua_authorisation(rsa2048: str) -> None:
    record = "v=DMARC1; p=reject; rua=mailto:d@reports.example.net"
    unauthorised = await run(dmarc_zone(rsa2048, record))
    assert Severity.ERROR in severities(unauthorised, "dmarc")
    fake = dmarc_zone(rsa2048, record)
    # RFC 7489 §7.1: <policy-domain>._report._dmarc.<destination-domain> TXT "v=DMARC1"
    fake.add_txt("example.com._report._dmarc.reports.example.net", "v=DMARC1")
    authorised = await run(fake)
    assert Severity.ERROR not in severities(authorised, "dmarc")
    assert authorised.details["dmarc"]["report_destinations"][0]["authorised"] is True
    internal = await run(dmarc_zone(rsa2048, "v=DMARC1; p=reject; rua=mailto:d@sub.example.com"))
    assert Severity.ERROR not in severities(internal, "dmarc")


# ---------------------------------------------------------------------------- DKIM ---

async def test_dkim_key_sizes_revoked_and_not_found(rsa2048: str, rsa1024: str) -> None:
    fake = base_zone(rsa2048)
    fake.add_txt("weak._domainkey.example.com", *txt_strings(rsa1024))
    fake.add_txt("old._domainkey.example.com", "v=DKIM1; k=rsa; p=")
    fake.add_txt("bad._domainkey.example.com", "v=DKIM1; k=rsa; p=!!!")
    options = PostureOptions(smtp=False, common_selectors=False,
                             selectors=("s1", "weak", "old", "bad", "nothing"))
    report = await run(fake, options)
    messages = {f.severity: f.message for f in report.by_check("dkim") if "weak" in f.message}
    assert list(messages) == [Severity.WARNING]  # RFC 8301: 1024 < 2048 SHOULD
    assert any(f.severity is Severity.INFO and "revoked" in f.message
               for f in report.by_check("dkim"))
    assert any(f.severity is Severity.ERROR and "bad._domainkey" in f.message
               for f in report.by_check("dkim"))
    none = await run(dmarc_zone(rsa2048), PostureOptions(smtp=False, common_selectors=False,
                                                         selectors=("x",)))
    [finding] = none.by_check("dkim")
    assert finding.severity is Severity.WARNING
    assert "missing" not in finding.message
    assert "no DKIM key found among the 1 selectors tried" in finding.message


async def test_common_selectors_are_tried(rsa2048: str) -> None:
    fake = dmarc_zone(rsa2048)
    fake.add_txt("selector1._domainkey.example.com", *txt_strings(rsa2048))
    report = await run(fake, PostureOptions(smtp=False))
    assert Severity.OK in severities(report, "dkim")


# ------------------------------------------------- DKIM selectors from received mail ---
# Issue #8 item 2. Store rows are written by hand; what is expected follows from them: a
# selector is learned when a signature by the domain verified with it (result "pass", RFC 8601
# §2.7.1) within the window; it is tried after the given selectors and before the common
# names; each finding names where its selector came from. Keys exist in the zone for
# selectors that must *not* be tried (forged, retired, foreign), so a wrong query would show.

DAY = 86_400.0


def _verdict(n: int, t: float, *sigs: tuple[str, str, str]) -> Verdict:
    return Verdict(spool_id=f"01JD{n:022d}", received_at=t,
                   dkim=tuple(DkimRecord(domain=d, selector=s, result=r) for d, s, r in sigs))


def _key_sources(report: DomainReport) -> dict[str, str]:
    return {k["selector"]: k["source"] for k in report.details["dkim"]["keys"]}


def _key_message(report: DomainReport, selector: str) -> str:
    [found] = [f.message for f in report.by_check("dkim")
               if f"key {selector}._domainkey." in f.message]
    return found


async def test_selectors_that_verified_in_received_mail_are_tried(rsa2048: str,
                                                                  tmp_path: Path) -> None:
    now = NOW.timestamp()
    store = await SQLiteStore.open(tmp_path / "mailmoat.db", synchronous="OFF")
    for v in (
        _verdict(1, now - DAY, ("example.com", "learned", "pass")),
        _verdict(2, now - 2 * DAY, ("example.com", "selector1", "pass"),
                 ("example.com", "S1", "pass")),                # the given one, other case
        _verdict(3, now - DAY, ("example.com", "forged", "fail")),    # never verified
        _verdict(4, now - LEARNED_SELECTOR_WINDOW.total_seconds() - DAY,
                 ("example.com", "retired", "pass")),                 # outside the window
        _verdict(5, now - DAY, ("other.example", "elsewhere", "pass")),  # another domain
    ):
        await store.record_verdict(v)
    fake = dmarc_zone(rsa2048, "v=DMARC1; p=reject; rua=mailto:d@example.com")
    for selector in ("learned", "selector1", "forged", "retired", "elsewhere"):
        fake.add_txt(f"{selector}._domainkey.example.com", *txt_strings(rsa2048))
    try:
        report = await check_domain("example.com", fake, clock=CLOCK, selector_source=store,
                                    options=PostureOptions(smtp=False, selectors=("s1",)))
    finally:
        await store.close()
    dkim = report.details["dkim"]
    # Most recently seen first; s1 and selector1 were seen at the same time: by name.
    assert dkim["selectors_seen"] == ["learned", "s1", "selector1"]
    # Given first, then learned, then the common names; nothing forged, retired or foreign.
    assert dkim["selectors_tried"] == (
        ["s1", "learned", "selector1"]
        + [s for s in COMMON_SELECTORS if s not in ("s1", "selector1")]
    )[: limits.POSTURE_MAX_DKIM_SELECTORS]
    assert _key_sources(report) == {"s1": "given", "learned": "received mail",
                                    "selector1": "received mail"}
    assert "(selector given)" in _key_message(report, "s1")
    assert "(selector seen verifying in mail received here)" in _key_message(report, "learned")
    assert "(selector seen verifying in mail received here)" in _key_message(report,
                                                                              "selector1")
    assert all(f.severity is Severity.OK for f in report.by_check("dkim"))


async def test_common_names_say_so_and_nothing_is_learned_without_a_store(rsa2048: str
                                                                          ) -> None:
    fake = dmarc_zone(rsa2048)
    fake.add_txt("selector2._domainkey.example.com", *txt_strings(rsa2048))
    report = await check_domain("example.com", fake, options=PostureOptions(smtp=False),
                                clock=CLOCK)
    assert _key_sources(report) == {"s1": "common", "selector2": "common"}
    assert "(common selector name)" in _key_message(report, "selector2")
    assert report.details["dkim"]["selectors_seen"] == []
    assert report.details["dkim"]["selectors_tried"] == list(COMMON_SELECTORS)


class _Source:
    """A SelectorSource that records what it is asked and answers as told."""

    def __init__(self, answer: list[str] | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str, float | None, int]] = []

    async def dkim_selectors_seen(self, domain: str, *, since: float | None = None,
                                  limit: int = 0) -> list[str]:
        self.asked.append((domain, since, limit))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_the_store_is_asked_for_the_window_and_its_answer_is_checked(rsa2048: str
                                                                           ) -> None:
    source = _Source(["ok1", "bad name", "x\x1b[31m", "a..b", "", "OK2"])
    fake = dmarc_zone(rsa2048)
    for selector in ("ok1", "ok2"):
        fake.add_txt(f"{selector}._domainkey.example.com", *txt_strings(rsa2048))
    report = await check_domain("Example.COM.", fake, clock=CLOCK, selector_source=source,
                                options=PostureOptions(smtp=False, common_selectors=False))
    assert source.asked == [("example.com",
                             NOW.timestamp() - LEARNED_SELECTOR_WINDOW.total_seconds(),
                             limits.POSTURE_MAX_DKIM_SELECTORS)]
    # Only names a verifier could have accepted in s= are asked about (or printed).
    assert report.details["dkim"]["selectors_tried"] == ["ok1", "ok2"]
    assert _key_sources(report) == {"ok1": "received mail", "ok2": "received mail"}


async def test_an_unreadable_store_is_a_finding_not_a_failed_check(rsa2048: str) -> None:
    source = _Source(StoreError("SQLite: database is locked"))
    report = await check_domain("example.com", dmarc_zone(rsa2048), clock=CLOCK,
                                selector_source=source, options=NO_SMTP)
    findings = report.by_check("dkim")
    assert [f.severity for f in findings] == [Severity.WARNING, Severity.OK]
    assert "cannot read selectors seen in received mail" in findings[0].message
    assert "database is locked" in findings[0].message


async def test_not_found_names_the_learned_selectors(rsa2048: str) -> None:
    fake = FakeResolver()
    fake.add_mx("example.com", 10, "mx1.example.com")
    fake.add_a("mx1.example.com", "192.0.2.25")
    report = await check_domain("example.com", fake, clock=CLOCK,
                                selector_source=_Source(["rotated"]),
                                options=PostureOptions(smtp=False, common_selectors=False))
    [finding] = report.by_check("dkim")
    assert finding.severity is Severity.WARNING
    assert "no DKIM key found among the 1 selectors tried" in finding.message
    assert "seen verifying in mail received here: rotated" in finding.message


# ---------------------------------------------------------------------------- BIMI ---

async def test_bimi_logo_and_dmarc_prerequisite(rsa2048: str) -> None:
    fake = base_zone(rsa2048)
    fake.add_txt("default._bimi.broken.example", "v=BIMI1; l=https://example.com/gone.svg")
    fake.add_mx("broken.example", 10, "mx1.example.com")
    fake.add_txt("_dmarc.broken.example", "v=DMARC1; p=none; rua=mailto:d@broken.example")
    async with fetcher_for() as fetcher:
        report = await check_domain("broken.example", fake, options=NO_SMTP, fetcher=fetcher,
                                    clock=CLOCK)
    messages = [f.message for f in report.by_check("bimi")]
    assert any("p=none" in m for m in messages)  # DMARC prerequisite not met
    assert any("logo cannot be fetched" in m for m in messages)  # HTTP 404
    assert Severity.OK not in severities(report, "bimi")


# ------------------------------------------------------------------------- MTA-STS ---

async def test_mta_sts_policy_not_matching_mx(rsa2048: str) -> None:
    other = POLICY.replace(b"mx1.example.com", b"*.mail.example.com")
    report = await run(base_zone(rsa2048), fetcher=fetcher_for(other))
    assert Severity.ERROR in severities(report, "mta-sts")
    assert report.details["mx"]["hosts"][0]["mta_sts_match"] is False
    testing = await run(base_zone(rsa2048),
                        fetcher=fetcher_for(other.replace(b"enforce", b"testing")))
    assert severities(testing, "mta-sts") == [Severity.WARNING, Severity.INFO]


async def test_mta_sts_broken_record_and_fetch(rsa2048: str) -> None:
    fake = base_zone(rsa2048)
    fake.add_txt("_mta-sts.example.com", "v=STSv1; id=other")  # now two records
    assert severities(await run(fake), "mta-sts") == [Severity.ERROR]
    html = await run(base_zone(rsa2048), fetcher=fetcher_for(content_type="text/html"))
    assert severities(html, "mta-sts") == [Severity.ERROR]
    moved = await run(base_zone(rsa2048), fetcher=fetcher_for(status=302))
    assert "redirect" in moved.by_check("mta-sts")[0].message
    short = await run(base_zone(rsa2048),
                      fetcher=fetcher_for(POLICY.replace(b"604800", b"300")))
    assert severities(short, "mta-sts") == [Severity.WARNING]


async def test_no_mta_sts(rsa2048: str) -> None:
    fake = dmarc_zone(rsa2048, "v=DMARC1; p=reject; rua=mailto:d@example.com")
    report = await run(fake)
    assert severities(report, "mta-sts") == [Severity.WARNING]
    assert severities(report, "tls-rpt") == [Severity.INFO]


# ------------------------------------------------------------------------- TLS-RPT ---

async def test_bad_tlsrpt(rsa2048: str) -> None:
    fake = base_zone(rsa2048)
    fake2 = FakeResolver()
    for name in ("_smtp._tls.example.com",):
        fake2.add_txt(name, "v=TLSRPTv1; rua=tlsrpt@example.com")  # not a URI
    fake2.add_mx("example.com", 10, "mx1.example.com")
    fake2.add_a("mx1.example.com", "192.0.2.25")
    fake2.add_txt("_mta-sts.example.com", "v=STSv1; id=1")
    del fake
    report = await run(fake2)
    assert severities(report, "tls-rpt") == [Severity.ERROR]


# -------------------------------------------------------------------- DNSSEC, TLSA ---

async def test_dnssec_and_tlsa(rsa2048: str) -> None:
    fake = base_zone(rsa2048)
    fake.add_tlsa("_25._tcp.mx1.example.com", 3, 1, 1, b"\x01" * 32)
    unknown = await run(fake)
    assert severities(unknown, "dnssec") == [Severity.INFO]
    assert severities(unknown, "tlsa") == [Severity.INFO]
    validating = PostureOptions(smtp=False, common_selectors=False, selectors=("s1",),
                                dnssec_validating=True)
    insecure = await run(fake, validating)
    assert severities(insecure, "dnssec") == [Severity.WARNING]
    assert severities(insecure, "tlsa") == [Severity.ERROR]  # RFC 7672: unsigned TLSA
    for name in ("example.com", "_25._tcp.mx1.example.com"):
        fake.set_authenticated(name)
    secure = await run(fake, validating)
    assert severities(secure, "dnssec") == [Severity.OK]
    assert severities(secure, "tlsa") == [Severity.OK]
    pkix = base_zone(rsa2048)
    pkix.add_tlsa("_25._tcp.mx1.example.com", 1, 0, 1, b"\x02" * 32)
    assert Severity.WARNING in severities(await run(pkix), "tlsa")


# ------------------------------------------------------------------------ STARTTLS ---

def tls(days: int = 60) -> TLSDetails:
    return TLSDetails(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256,
                      server_name="mx1.example.com", subject="CN=mx1.example.com", issuer="CN=CA",
                      san=("mx1.example.com",), not_before=NOW - datetime.timedelta(days=10),
                      not_after=NOW + datetime.timedelta(days=days), verified=False,
                      verify_error=None)


def prober(result: ProbeResult) -> object:
    seen: list[tuple[str, tuple[str, ...]]] = []

    async def probe(host: str, addresses: Sequence[str]) -> ProbeResult:
        seen.append((host, tuple(addresses)))
        return result

    probe.seen = seen  # type: ignore[attr-defined]
    return probe


SMTP = PostureOptions(common_selectors=False, selectors=("s1",))


async def test_starttls_good_and_addresses_from_resolver(rsa2048: str) -> None:
    probe = prober(ProbeResult(host="mx1.example.com", port=25, connected=True,
                               starttls_offered=True, tls=tls()))
    report = await run(base_zone(rsa2048), SMTP, prober=probe)
    assert severities(report, "starttls") == [Severity.OK]
    assert probe.seen == [("mx1.example.com", ("192.0.2.25",))]  # type: ignore[attr-defined]


async def test_starttls_missing_bad_cert_expiring_unreachable(rsa2048: str) -> None:
    none = ProbeResult(host="mx1.example.com", port=25, connected=True, starttls_offered=False)
    report = await run(base_zone(rsa2048), SMTP, prober=prober(none))
    # no STARTTLS, and the enforce policy makes senders refuse the MX
    assert severities(report, "starttls") == [Severity.ERROR, Severity.ERROR]
    bad = ProbeResult(host="mx1.example.com", port=25, connected=True, starttls_offered=True,
                      tls=tls(), certificate_problem="certificate name mismatch")
    report = await run(base_zone(rsa2048), SMTP, prober=prober(bad))
    assert severities(report, "starttls") == [Severity.ERROR, Severity.ERROR]
    soon = ProbeResult(host="mx1.example.com", port=25, connected=True, starttls_offered=True,
                       tls=tls(days=3))
    report = await run(base_zone(rsa2048), SMTP, prober=prober(soon))
    assert severities(report, "starttls") == [Severity.WARNING]
    down = ProbeResult(host="mx1.example.com", port=25, connected=False, error="refused")
    report = await run(base_zone(rsa2048), SMTP, prober=prober(down))
    assert severities(report, "starttls") == [Severity.WARNING]


# -------------------------------------------------------------------------- several ---

async def test_check_domains_progress_and_bad_name(rsa2048: str) -> None:
    fake = base_zone(rsa2048)
    done: list[str] = []
    async with fetcher_for() as fetcher:
        reports = await check_domains(["example.com", "not a domain", "localhost",
                                       "bad_name.example", "bücher.example"], fake,
                                      options=NO_SMTP, fetcher=fetcher, clock=CLOCK,
                                      on_done=lambda r: done.append(r.domain))
    assert [r.domain for r in reports] == ["example.com", "not a domain", "localhost",
                                           "bad_name.example", "xn--bcher-kva.example"]
    assert sorted(done) == sorted(r.domain for r in reports)
    assert reports[1].worst is Severity.ERROR
    assert reports[2].worst is Severity.ERROR
    assert reports[3].by_check("domain")  # "_" is not LDH
    assert not reports[4].by_check("domain")  # IDNA 2008 A-label (RFC 5891)


async def test_dane_makes_a_webpki_failure_informational(rsa2048: str) -> None:
    fake = dmarc_zone(rsa2048, "v=DMARC1; p=reject; rua=mailto:d@example.com")  # no MTA-STS
    fake.add_tlsa("_25._tcp.mx1.example.com", 3, 1, 1, b"\x01" * 32)
    for name in ("example.com", "_25._tcp.mx1.example.com"):
        fake.set_authenticated(name)
    bad = ProbeResult(host="mx1.example.com", port=25, connected=True, starttls_offered=True,
                      tls=tls(), certificate_problem="self-signed certificate")
    options = PostureOptions(common_selectors=False, selectors=("s1",), dnssec_validating=True)
    report = await run(fake, options, prober=prober(bad))
    # RFC 7672 §3.1.1: DANE-EE ignores the WebPKI chain and names
    assert severities(report, "starttls") == [Severity.INFO]
    plain = await run(fake, SMTP, prober=prober(bad))  # without DNSSEC: a warning
    assert severities(plain, "starttls") == [Severity.WARNING]


async def test_only_revoked_keys_is_a_warning(rsa2048: str) -> None:
    fake = dmarc_zone(rsa2048)
    fake.add_txt("old._domainkey.example.com", "v=DKIM1; p=")
    report = await run(fake, PostureOptions(smtp=False, common_selectors=False,
                                            selectors=("old",)))
    # RFC 6376 §3.6.1: "An empty value means that this public key has been revoked."
    assert severities(report, "dkim") == [Severity.INFO, Severity.WARNING]


async def test_redirect_to_plus_all(rsa2048: str) -> None:
    report = await spf_report(rsa2048, "v=spf1 redirect=open.example.com",
                              extra={"open.example.com": "v=spf1 +all"})
    assert any("redirect:open.example.com ends in +all" in f.message
               for f in report.by_check("spf"))
    fine = await spf_report(rsa2048, "v=spf1 redirect=closed.example.com",
                            extra={"closed.example.com": "v=spf1 mx -all"})
    assert severities(fine, "spf") == [Severity.OK]
    assert fine.details["spf"]["lookups"] == 2  # redirect + mx (RFC 7208 §4.6.4)


async def test_a_failing_area_does_not_sink_the_report(rsa2048: str) -> None:
    async def broken(host: str, addresses: Sequence[str]) -> ProbeResult:
        raise RuntimeError("boom")

    report = await run(base_zone(rsa2048), SMTP, prober=broken)
    [finding] = report.by_check("starttls")
    assert finding.severity is Severity.ERROR
    assert "internal error" in finding.message
    assert Severity.OK in severities(report, "mta-sts")
