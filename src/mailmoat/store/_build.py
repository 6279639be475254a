"""A :class:`Verdict` row from what the gateway learned (auth outcomes + the envelope)."""

from __future__ import annotations

from collections.abc import Sequence

from mailmoat.auth.spf import Identity
from mailmoat.auth.verify import Authentication
from mailmoat.spool import Envelope
from mailmoat.store._types import DkimRecord, OverrideReason, Verdict


def verdict_from_authentication(
    auth: Authentication,
    *,
    spool_id: str,
    envelope: Envelope,
    disposition: str | None = None,
    overrides: Sequence[OverrideReason] = (),
    size: int | None = None,
) -> Verdict:
    """The row for one message. ``disposition`` is what the gateway actually applied (default:
    the DMARC disposition); ``overrides`` its local-policy reasons (RFC 7489 Appendix C
    ``PolicyOverrideType``); sampling (``pct``) and ``t=y`` testing are added as the reasons
    RFC 7489 names (``sampled_out``) and ``local_policy`` respectively."""
    dmarc = auth.dmarc
    aligned_dkim = {(i.domain.lower(), i.selector) for i in dmarc.identifiers
                    if i.method == "dkim" and i.aligned}
    dkim = tuple(
        DkimRecord(domain=d.domain.lower(), selector=d.selector, result=d.result.value,
                   aligned=(d.domain.lower(), d.selector) in aligned_dkim)
        for d in auth.dkim if d.domain
    )
    reasons = list(overrides)
    if dmarc.sampled_out:
        reasons.append(OverrideReason(type="sampled_out", comment="pct sampling"))
    if dmarc.testing:
        reasons.append(OverrideReason(type="local_policy", comment="t=y testing mode"))
    local, _, domain = envelope.mail_from.rpartition("@")
    tls = envelope.tls
    return Verdict(
        spool_id=spool_id,
        received_at=envelope.received_at,
        client_ip=envelope.client_ip or auth.ip,
        helo=envelope.helo or auth.helo,
        mail_from=envelope.mail_from,
        mail_from_domain=domain.lower() if local and domain else None,
        auth_user=envelope.auth_user,
        tls_version=tls.version if tls else None,
        tls_cipher=tls.cipher if tls else None,
        header_from=dmarc.from_domain,
        spf_result=auth.spf.result.value,
        spf_domain=auth.spf.domain,
        # RFC 7489 Appendix C SPFDomainScope: "helo" / "mfrom".
        spf_scope="helo" if auth.spf.identity is Identity.HELO else "mfrom",
        spf_aligned=dmarc.spf_aligned,
        dkim=dkim,
        arc_result=auth.arc.result.value,
        arc_sealers=tuple(s.as_domain for s in reversed(auth.arc.sets) if s.as_domain),
        dmarc_domain=dmarc.policy_domain,
        dmarc_result=dmarc.result.value,
        dmarc_policy=dmarc.policy.value if dmarc.policy else None,
        dmarc_dkim="pass" if dmarc.dkim_aligned else "fail",
        dmarc_spf="pass" if dmarc.spf_aligned else "fail",
        disposition=disposition if disposition is not None else dmarc.disposition.value,
        overrides=tuple(reasons),
        size=size,
    )
