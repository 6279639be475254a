"""Authenticate one received message: SPF, DKIM, ARC and DMARC, and the Authentication-Results
field to add (layer L2; used by ``mailmoat verify`` and the inbound gateway).

:func:`authenticate` runs, over the injected resolver and clock:

1. SPF for the MAIL FROM identity (RFC 7208 §2.4; a null reverse-path checks HELO);
2. DKIM for every signature (RFC 6376 §6; up to ``limits.DKIM_MAX_SIGNATURES``);
3. ARC chain validation (RFC 8617 §5.2);
4. DMARC as a pure function of 1 and 2 plus its DNS lookup (RFC 7489 / RFC 9989);

and writes our Authentication-Results field (RFC 8601) from those values. Inbound
Authentication-Results fields that claim our authserv-id are counted (RFC 8601 §5: the
gateway removes them before adding its own).

SECURITY: the message is untrusted: the header section is split by the bounded parsers of
:mod:`mailmoat.message` and :mod:`mailmoat.auth.dkim` (:class:`~mailmoat.errors.LimitExceeded`
for a header section beyond ``limits.MESSAGE_HEADER_MAX``, the only exception on bad input);
each method bounds its own work. Every authentication outcome is a value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mailmoat.auth.arc import DEFAULT_ARC_POLICY, ARCPolicy, ARCStatus, ARCValidation
from mailmoat.auth.arc import validate as arc_validate
from mailmoat.auth.authres import (
    AuthResResult,
    arc_resinfo,
    claims_authserv_id,
    dkim_resinfo,
    dmarc_resinfo,
    format_authentication_results,
    spf_resinfo,
)
from mailmoat.auth.dkim import DEFAULT_VERIFY_POLICY, DKIMResult, DKIMResultCode, VerifyPolicy
from mailmoat.auth.dkim import verify as dkim_verify
from mailmoat.auth.dmarc import DiscoveryMode, DMARCResult, RandomSource, check_message
from mailmoat.auth.dmarc import explain as dmarc_explain
from mailmoat.auth.spf import SPFOptions, SPFResult, check_mailfrom
from mailmoat.clock import Clock
from mailmoat.message import parse_headers
from mailmoat.resolver import Resolver

__all__ = ["Authentication", "VerifyOptions", "authenticate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyOptions:
    """How to authenticate (each method's own policy)."""

    spf: SPFOptions | None = None
    dkim: VerifyPolicy = DEFAULT_VERIFY_POLICY
    arc: ARCPolicy = DEFAULT_ARC_POLICY
    dmarc_mode: DiscoveryMode = DiscoveryMode.TREE_WALK
    #: pct sampling (RFC 7489 §6.6.4); None: the DMARC module's default source
    random: RandomSource | None = None


DEFAULT_VERIFY_OPTIONS = VerifyOptions()


@dataclass(frozen=True, slots=True, kw_only=True)
class Authentication:
    """Everything :func:`authenticate` found about one message."""

    authserv_id: str
    ip: str
    helo: str | None
    mail_from: str
    spf: SPFResult
    dkim: tuple[DKIMResult, ...]
    arc: ARCValidation
    dmarc: DMARCResult
    #: the resinfo values, in the order written (spf, dkim..., arc, dmarc)
    results: tuple[AuthResResult, ...] = field(default=(), repr=False)
    #: our field, ``Authentication-Results: ...`` folded, without the final CRLF
    authentication_results: str = ""
    #: inbound Authentication-Results fields that claim our authserv-id (RFC 8601 §5)
    forged_authentication_results: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``mailmoat verify --json``)."""
        return {
            "authserv_id": self.authserv_id,
            "ip": self.ip,
            "helo": self.helo,
            "mail_from": self.mail_from,
            "spf": self.spf.as_dict(),
            "dkim": [_dkim_dict(d) for d in self.dkim],
            "arc": self.arc.as_dict(),
            "dmarc": self.dmarc.as_dict(),
            "authentication_results": self.authentication_results,
            "forged_authentication_results": self.forged_authentication_results,
        }

    def explain(self) -> list[str]:
        """Sentences for a person, one method after the other."""
        lines: list[str] = []
        spf = self.spf
        line = f"SPF {spf.result.value} for {spf.identity.value} {spf.domain} from {self.ip}"
        if spf.mechanism:
            line += f" (matched {spf.mechanism})"
        if spf.problem:
            line += f": {spf.problem}"
        lines.append(line + ".")
        for d in self.dkim:
            if d.result is DKIMResultCode.NONE and d.domain is None:
                lines.append("DKIM none: the message has no DKIM-Signature.")
                continue
            who = f"d={d.domain} s={d.selector}" + (f" a={d.algorithm}" if d.algorithm else "")
            extra = f" [{', '.join(d.flags)}]" if d.flags else ""
            bits = f" ({d.key_bits}-bit key)" if d.key_bits else ""
            reason = f": {d.reason}" if d.reason else ""
            lines.append(f"DKIM {d.result.value} for {who}{bits}{extra}{reason}.")
        arc = self.arc
        if arc.result is ARCStatus.NONE:
            lines.append("ARC none: the message carries no ARC Sets.")
        else:
            where = f" at i={arc.failed_instance}" if arc.failed_instance else ""
            oldest = (f", oldest-pass {arc.oldest_pass}" if arc.oldest_pass is not None
                      else "")
            lines.append(f"ARC {arc.result.value}{where} ({arc.instance_count} set(s)"
                         f"{oldest}): {arc.reason}.")
        lines.extend(dmarc_explain(self.dmarc))
        if self.forged_authentication_results:
            lines.append(f"{self.forged_authentication_results} inbound "
                         f"Authentication-Results field(s) claim our authserv-id "
                         f"{self.authserv_id}: to be removed (RFC 8601 §5).")
        return lines


def _dkim_dict(d: DKIMResult) -> dict[str, Any]:
    return {
        "result": d.result.value,
        "domain": d.domain,
        "selector": d.selector,
        "algorithm": d.algorithm,
        "reason": d.reason,
        "key_bits": d.key_bits,
        "flags": list(d.flags),
        "header_i": d.header_i,
        "header_b": d.header_b,
    }


def build_results(
    *, spf: SPFResult, dkim: Sequence[DKIMResult], arc: ARCValidation, dmarc: DMARCResult,
    mail_from: str, ip: str,
) -> tuple[AuthResResult, ...]:
    """The resinfo values for our Authentication-Results field."""
    results = [spf_resinfo(spf, mail_from=_bare_path(mail_from) or None)]
    results.extend(dkim_resinfo(d) for d in dkim)
    # RFC 8617 registers header.oldest-pass and smtp.remote-ip for the arc method (IANA
    # Email Authentication Parameters).
    results.append(arc_resinfo(arc.result.value, oldest_pass=arc.oldest_pass, remote_ip=ip))
    results.append(dmarc_resinfo(dmarc))
    return tuple(results)


def _bare_path(mail_from: str) -> str:
    path = mail_from.strip()
    if path.startswith("<") and path.endswith(">"):
        path = path[1:-1]
    return path


async def authenticate(
    message: bytes,
    *,
    ip: str,
    helo: str | None,
    mail_from: str,
    resolver: Resolver,
    clock: Clock,
    authserv_id: str,
    options: VerifyOptions = DEFAULT_VERIFY_OPTIONS,
) -> Authentication:
    """Authenticate ``message`` (CRLF line endings) received from ``ip`` with ``helo`` and
    ``mail_from`` (``""`` or ``"<>"`` for the null reverse-path).

    Raises ValueError for an ``ip`` that is not an address (a caller bug) and
    :class:`~mailmoat.errors.LimitExceeded` for a header section beyond the message limits.
    """
    ipaddress.ip_address(ip)
    spf = await check_mailfrom(resolver, ip, mail_from, helo, options=options.spf, clock=clock)
    dkim = await dkim_verify(message, resolver, clock=clock, policy=options.dkim)
    arc = await arc_validate(message, resolver, clock=clock, policy=options.arc)
    headers = parse_headers(message)
    dmarc = await check_message(resolver, headers, spf, dkim, mode=options.dmarc_mode,
                                random=options.random)
    results = build_results(spf=spf, dkim=dkim, arc=arc, dmarc=dmarc, mail_from=mail_from,
                            ip=ip)
    forged = sum(1 for f in headers.fields if claims_authserv_id(f, authserv_id))
    return Authentication(
        authserv_id=authserv_id, ip=ip, helo=helo, mail_from=mail_from, spf=spf,
        dkim=tuple(dkim), arc=arc, dmarc=dmarc, results=results,
        authentication_results=format_authentication_results(authserv_id, results),
        forged_authentication_results=forged,
    )
