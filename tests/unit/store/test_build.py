"""verdict_from_authentication: auth outcomes + envelope -> the verdict row -> the DMARC
aggregate record (RFC 7489 Appendix C) it contributes to."""

from __future__ import annotations

from pathlib import Path

from mailmoat.auth.arc import ARCStatus, ARCValidation
from mailmoat.auth.dkim import DKIMResult, DKIMResultCode
from mailmoat.auth.dmarc import (
    Alignment,
    Disposition,
    DMARCResult,
    DMARCVerdict,
    IdentifierCheck,
    Policy,
)
from mailmoat.auth.spf import Identity, SPFResult, SPFVerdict
from mailmoat.auth.verify import Authentication
from mailmoat.net.tls import TLSInfo
from mailmoat.spool import Envelope, Recipient
from mailmoat.store import (
    DkimRecord,
    OverrideReason,
    SQLiteStore,
    verdict_from_authentication,
)


def _auth(*, sampled_out: bool = False) -> Authentication:
    return Authentication(
        authserv_id="gw.example.org", ip="192.0.2.1", helo="mx.example.net",
        mail_from="bounce@Example.NET",
        spf=SPFResult(result=SPFVerdict.SOFTFAIL, domain="example.net",
                      identity=Identity.MAILFROM),
        dkim=(DKIMResult(result=DKIMResultCode.PASS, domain="Example.NET", selector="s1"),
              DKIMResult(result=DKIMResultCode.FAIL, domain="esp.example", selector="k")),
        arc=ARCValidation(result=ARCStatus.NONE),
        dmarc=DMARCResult(
            result=DMARCVerdict.PASS, from_domain="example.net", policy_domain="example.net",
            policy=Policy.REJECT, disposition=Disposition.NONE, dkim_aligned=True,
            spf_aligned=False, sampled_out=sampled_out,
            identifiers=(
                IdentifierCheck(method="dkim", domain="example.net", result="pass",
                                aligned=True, mode=Alignment.RELAXED, selector="s1"),
                IdentifierCheck(method="dkim", domain="esp.example", result="fail",
                                aligned=False, mode=Alignment.RELAXED, selector="k"),
                IdentifierCheck(method="spf", domain="example.net", result="softfail",
                                aligned=False, mode=Alignment.RELAXED),
            )),
    )


ENV = Envelope(mail_from="bounce@Example.NET", rcpts=(Recipient(address="u@example.org"),),
               received_at=1000.0, client_ip="192.0.2.1", helo="mx.example.net",
               tls=TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256))


def test_mapping() -> None:
    v = verdict_from_authentication(_auth(), spool_id="01JD0000000000000000000001",
                                    envelope=ENV, size=42)
    assert (v.client_ip, v.helo, v.mail_from_domain, v.header_from) == (
        "192.0.2.1", "mx.example.net", "example.net", "example.net")
    assert (v.tls_version, v.tls_cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    assert (v.spf_result, v.spf_domain, v.spf_scope, v.spf_aligned) == (
        "softfail", "example.net", "mfrom", False)
    assert v.dkim == (DkimRecord(domain="example.net", selector="s1", result="pass",
                                 aligned=True),
                      DkimRecord(domain="esp.example", selector="k", result="fail"))
    assert (v.dmarc_domain, v.dmarc_result, v.dmarc_policy, v.dmarc_dkim, v.dmarc_spf,
            v.disposition) == ("example.net", "pass", "reject", "pass", "fail", "none")
    assert v.overrides == ()
    assert v.size == 42


async def test_row_feeds_the_aggregate_report(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db", synchronous="OFF")
    try:
        fwd = OverrideReason(type="trusted_forwarder", comment="ARC sealer fwd.example")
        for n, (auth, overrides, disposition) in enumerate([
            (_auth(), (), None), (_auth(), (), None),
            (_auth(sampled_out=True), (fwd,), "quarantine"),
        ]):
            await store.record_verdict(verdict_from_authentication(
                auth, spool_id=f"01JD{n:022d}", envelope=ENV, overrides=overrides,
                disposition=disposition))
        rows = await store.dmarc_aggregate("example.net", 0, 2000)
        summary = sorted((r.count, r.disposition, r.dkim, r.spf,
                          tuple(x.type for x in r.reasons)) for r in rows)
        assert summary == [(1, "quarantine", "pass", "fail", ("sampled_out", "trusted_forwarder")),
                           (2, "none", "pass", "fail", ())]
    finally:
        await store.close()
