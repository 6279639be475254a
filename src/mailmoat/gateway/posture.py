"""A domain's email-security posture (layer L4): what ``mailmoat check DOMAIN`` reports.

:func:`check_domain` looks at one domain through an injected resolver (and, when given, an
HTTPS fetcher for the MTA-STS policy and a STARTTLS prober for its MX hosts) and returns a
:class:`DomainReport`: a list of :class:`Finding` (``check``, ``severity`` ok / info /
warning / error, a one-line ``message`` and a one-line ``fix``) plus per-area details for
JSON. :func:`check_domains` checks several domains concurrently (bounded by
``limits.POSTURE_CONCURRENCY``) and reports each as it completes (progress bars).

Areas and the rules they apply:

* ``mx``: RFC 5321 §5.1 (MX, else the implicit MX of the domain's A/AAAA), RFC 7505 null MX
  ("0 ." alone: the domain accepts no mail; mixed with other MX records: an error), every MX
  host must have an address, and must not be a CNAME (RFC 2181 §10.3).
* ``spf``: RFC 7208: exactly one ``v=spf1`` record (§4.5), syntax through
  :func:`mailmoat.auth.spf.parse_record`, DNS-querying terms counted through include and
  redirect (limit 10) and void lookups (limit 2) (§4.6.4), ``+all``/``?all`` (§5.1), ``ptr``
  (§5.5 "SHOULD NOT be used"), include targets without a record (§5.2: permerror).
* ``dmarc``: RFC 7489 / RFC 9989 discovery through :func:`mailmoat.auth.dmarc.discover_policy`,
  policy strength, ``pct``, alignment modes, ``rua``/``ruf`` and the external destination
  authorisation of RFC 7489 §7.1 (``<policy-domain>._report._dmarc.<destination>`` TXT).
* ``dkim``: the selectors given, those that verified in mail this gateway received (a
  :class:`SelectorSource`: the store, over :data:`LEARNED_SELECTOR_WINDOW`) and
  :data:`COMMON_SELECTORS`, each finding saying where its selector came from: a key that is not
  found is "not found among the tried selectors", never "missing" (selectors cannot be listed); key
  syntax via :func:`mailmoat.auth.dkim.parse_key_record`, revoked keys (empty ``p=``), RSA
  size (RFC 8301 §3.2: < 1024 MUST NOT be used, < 2048 SHOULD NOT), ``t=y`` testing.
* ``bimi``: :mod:`mailmoat.auth.bimi` discovery, record, VMC presence, DMARC prerequisite.
* ``mta-sts``: RFC 8461 TXT record, policy fetched over HTTPS, each MX matched (§4.1).
* ``tls-rpt``: RFC 8460 §3 record.
* ``dnssec``: the AD bit of the answers, only meaningful with a validating resolver we trust
  (``PostureOptions.dnssec_validating``); otherwise "unknown".
* ``tlsa``: ``_25._tcp.<mx>`` TLSA (RFC 7672 §2.2); usages 0/1 "SHOULD NOT" be used (§3.1.3).
* ``starttls``: per MX: offered, TLS version and cipher, certificate chain and name, expiry.

SECURITY: everything read from DNS, HTTPS and SMTP is untrusted and handled by the bounded
parsers of the layers below; messages quote at most short excerpts of it; the CLI prints
findings as plain text, never markup. Work per domain is bounded: MX hosts
(``limits.POSTURE_MAX_MX``), DKIM selectors (``limits.POSTURE_MAX_DKIM_SELECTORS``), SPF records
walked (``limits.POSTURE_SPF_MAX_RECORDS``), probe and fetch timeouts.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import idna

from mailmoat import limits
from mailmoat.auth.bimi import BIMIStatus, dmarc_allows_bimi, lookup_bimi
from mailmoat.auth.dkim import DKIMTagError, parse_key_record
from mailmoat.auth.dmarc import (
    Alignment,
    DMARCRecord,
    LookupStatus,
    Policy,
    discover_policy,
    psl_organizational_domain,
)
from mailmoat.auth.mtasts import (
    Mode,
    RecordStatus,
    TLSState,
    decide,
    lookup_record,
)
from mailmoat.auth.mtasts import Policy as STSPolicy
from mailmoat.auth.spf import MechanismKind, Qualifier, SPFRecord, is_spf_record, parse_record
from mailmoat.auth.tlsrpt import TLSRPTStatus, lookup_tlsrpt
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import DNSError, DNSTemporaryError, ParseError, StoreError
from mailmoat.net.fetch import Fetcher, FetchError
from mailmoat.net.mtasts import fetch_policy, policy_url
from mailmoat.net.starttls_probe import ProbeResult, probe_starttls
from mailmoat.resolver import (
    MX,
    TLSA,
    TXT,
    Answer,
    NoData,
    NXDomain,
    Resolver,
    RRType,
    normalize_name,
)

__all__ = [
    "COMMON_SELECTORS",
    "LEARNED_SELECTOR_WINDOW",
    "SCHEMA_VERSION",
    "DomainReport",
    "Finding",
    "PostureOptions",
    "Prober",
    "SelectorSource",
    "Severity",
    "address_resolver",
    "check_domain",
    "check_domains",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
#: RFC 1123 §2.1 host name: LDH labels of 1-63 characters, not starting or ending with "-".
_HOSTNAME: Final = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                              r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

#: DKIM selectors tried when none is given: the defaults of common signers and providers
#: (OpenDKIM/rspamd "default"/"dkim"/"mail", Microsoft 365 "selector1"/"selector2", Google
#: Workspace "google", Mailchimp "k1"-"k3", Amazon SES-style "s1"/"s2", Fastmail "fm1"-"fm3",
#: Zoho "zoho", Proton "protonmail*", mailmoat's own "mailmoat").
COMMON_SELECTORS: Final = (
    "default", "dkim", "mail", "selector1", "selector2", "google", "k1", "k2", "k3",
    "s1", "s2", "fm1", "fm2", "fm3", "zoho", "protonmail", "protonmail2", "protonmail3",
    "smtp", "key1", "key2", "mx", "mailmoat",
)

#: How far back :func:`check_domain` looks for selectors seen in received mail. Keys are
#: rotated (M3AAWG's DKIM key rotation practices ask for at least every six months), so a
#: selector not seen verifying for longer is likely retired.
LEARNED_SELECTOR_WINDOW: Final = datetime.timedelta(days=183)
#: Where each selector tried came from: ``--selector``, received mail, the common list.
_GIVEN, _LEARNED, _COMMON = "given", "received mail", "common"
_ORIGIN_TEXT: Final = {
    _GIVEN: "selector given",
    _LEARNED: "selector seen verifying in mail received here",
    _COMMON: "common selector name",
}
#: A selector read back from the store: dot-separated labels of the characters a verifier
#: accepts in s= (RFC 6376 §3.1 sub-domains, plus "_" seen in real selectors).
_STORED_SELECTOR: Final = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")

#: BIMI logos: the SVG Tiny Portable/Secure profile asks for files under 32 KiB; we allow a
#: little more before calling it broken. Media type per RFC 6838 registration image/svg+xml.
BIMI_LOGO_MAX: Final = 64 * 1024
BIMI_LOGO_TYPES: Final = frozenset({"image/svg+xml"})
#: A certificate expiring sooner than this is worth a warning (Let's Encrypt renews at 30 days).
CERT_EXPIRY_WARNING: Final = datetime.timedelta(days=14)
#: RFC 8461 §3.2 max_age: "expected that this value typically be in the range of weeks or
#: greater"; below one day is almost certainly a mistake.
MTASTS_SHORT_MAX_AGE: Final = 86_400


class Severity(enum.StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


_RANK: Final = {Severity.OK: 0, Severity.INFO: 1, Severity.WARNING: 2, Severity.ERROR: 3}


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    check: str
    severity: Severity
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "severity": self.severity.value, "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainReport:
    """The posture of one domain. ``details`` maps each area to JSON-ready data."""

    domain: str
    findings: tuple[Finding, ...]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), key=_RANK.__getitem__,
                   default=Severity.OK)

    def by_check(self, check: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.check == check)

    def as_dict(self) -> dict[str, Any]:
        summary = {s.value: 0 for s in Severity}
        for finding in self.findings:
            summary[finding.severity.value] += 1
        return {
            "schema": SCHEMA_VERSION,
            "domain": self.domain,
            "worst": self.worst.value,
            "summary": summary,
            "findings": [f.as_dict() for f in self.findings],
            **self.details,
        }


class Prober(Protocol):
    """Probes one MX host's STARTTLS (see :func:`mailmoat.net.starttls_probe.probe_starttls`);
    ``addresses`` are the host's addresses found through the check's resolver."""

    def __call__(self, host: str, addresses: Sequence[str]) -> Awaitable[ProbeResult]: ...


class SelectorSource(Protocol):
    """DKIM selectors seen verifying for a domain in received mail, most recent first:
    :meth:`mailmoat.store.Store.dkim_selectors_seen` (any :class:`~mailmoat.store.Store`)."""

    async def dkim_selectors_seen(self, domain: str, *, since: float | None = None,
                                  limit: int = ...) -> list[str]: ...


def address_resolver(resolver: Resolver) -> Callable[[str], Awaitable[list[str]]]:
    """Host name -> addresses (A, then AAAA) through ``resolver``: give it to
    :class:`~mailmoat.net.fetch.Fetcher` (``resolve=``) so the MTA-STS policy host is found
    with the same DNS as the rest of the check."""

    async def resolve(host: str) -> list[str]:
        found: list[str] = []
        for rrtype in (RRType.A, RRType.AAAA):
            answer = await _ask(resolver, host, rrtype)
            if isinstance(answer, Answer):
                found += [str(a) for a in answer.records]
        return found

    return resolve


@dataclass(frozen=True, slots=True, kw_only=True)
class PostureOptions:
    """``selectors``: DKIM selectors to try first; ``common_selectors``: also try
    :data:`COMMON_SELECTORS`; ``smtp``: probe each MX's STARTTLS; ``dnssec_validating``: the
    resolver is a validating resolver we trust, so its AD bit means something."""

    selectors: tuple[str, ...] = ()
    common_selectors: bool = True
    smtp: bool = True
    dnssec_validating: bool = False


# ---------------------------------------------------------------------------- helpers ---

class _Report:
    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.findings: list[Finding] = []
        self.details: dict[str, Any] = {}

    def add(self, check: str, severity: Severity, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check=check, severity=severity, message=message, fix=fix))

    def ok(self, check: str, message: str) -> None:
        self.add(check, Severity.OK, message)

    def info(self, check: str, message: str, fix: str = "") -> None:
        self.add(check, Severity.INFO, message, fix)

    def warning(self, check: str, message: str, fix: str) -> None:
        self.add(check, Severity.WARNING, message, fix)

    def error(self, check: str, message: str, fix: str) -> None:
        self.add(check, Severity.ERROR, message, fix)


def _short(text: str, limit: int = 120) -> str:
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "")


async def _ask(resolver: Resolver, name: str, rrtype: RRType) -> Answer | DNSError:
    try:
        return await resolver.resolve(name, rrtype)
    except DNSError as exc:
        return exc


def _void(result: Answer | DNSError) -> bool:
    return isinstance(result, NXDomain | NoData)


def _txts(result: Answer | DNSError) -> list[bytes]:
    if isinstance(result, Answer):
        return [r.joined for r in result.records if isinstance(r, TXT)]
    return []


@dataclass(slots=True)
class _MXHost:
    preference: int
    host: str
    addresses: list[str] = field(default_factory=list)
    cname: str | None = None
    tlsa: list[dict[str, Any]] = field(default_factory=list)
    tlsa_secure: bool = False  # TLSA records validated by DNSSEC (DANE applies, RFC 7672)
    mta_sts_match: bool | None = None
    starttls: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"preference": self.preference, "host": self.host, "addresses": self.addresses,
                "cname": self.cname, "tlsa": self.tlsa, "mta_sts_match": self.mta_sts_match,
                "starttls": self.starttls}


@dataclass(slots=True)
class _Context:
    domain: str
    resolver: Resolver
    options: PostureOptions
    report: _Report
    clock: Clock
    selector_source: SelectorSource | None = None
    mx: list[_MXHost] = field(default_factory=list)
    null_mx: bool = False
    authenticated: bool | None = None  # AD bit of the first positive answer
    dmarc_record: DMARCRecord | None = None
    dmarc_inherited: bool = False
    sts_policy: STSPolicy | None = None
    probes: dict[str, ProbeResult] = field(default_factory=dict)

    def seen(self, answer: Answer | DNSError) -> None:
        if isinstance(answer, Answer) and self.authenticated is None:
            self.authenticated = answer.authenticated


# -------------------------------------------------------------------------------- MX ---

async def _check_mx(ctx: _Context) -> None:
    r, domain = ctx.report, ctx.domain
    answer = await _ask(ctx.resolver, domain, RRType.MX)
    ctx.seen(answer)
    details: dict[str, Any] = {"null_mx": False, "implicit": False, "hosts": []}
    r.details["mx"] = details
    if isinstance(answer, NXDomain):
        r.error("mx", f"{domain} does not exist (NXDOMAIN)",
                "Check the spelling, or register and delegate the domain.")
        return
    if isinstance(answer, DNSTemporaryError):
        r.warning("mx", f"MX lookup failed: {_short(str(answer))}",
                  "Retry; if it persists, fix the domain's authoritative DNS servers.")
        return
    if isinstance(answer, DNSError) and not isinstance(answer, NoData):
        r.error("mx", f"MX lookup failed: {_short(str(answer))}", "Fix the MX records.")
        return
    if isinstance(answer, NoData):
        a = await _ask(ctx.resolver, domain, RRType.A)
        aaaa = await _ask(ctx.resolver, domain, RRType.AAAA)
        ctx.seen(a)
        if isinstance(a, Answer) or isinstance(aaaa, Answer):
            details["implicit"] = True
            host = _MXHost(preference=0, host=domain)
            for ans in (a, aaaa):
                if isinstance(ans, Answer):
                    host.addresses += [str(x) for x in ans.records]
            ctx.mx = [host]
            details["hosts"] = [host.as_dict()]
            r.warning("mx", "no MX record: mail goes to the domain's own address (implicit MX, "
                      "RFC 5321 §5.1)",
                      f"Publish an MX record, or '{domain}. MX 0 .' (null MX, RFC 7505) if "
                      "the domain receives no mail.")
        else:
            r.warning("mx", "no MX and no address record: the domain cannot receive mail",
                      f"Publish MX records, or '{domain}. MX 0 .' to say so explicitly "
                      "(RFC 7505).")
        return
    records = sorted((x for x in answer.records if isinstance(x, MX)),
                     key=lambda m: (m.preference, m.exchange))
    nulls = [m for m in records if m.exchange in ("", ".")]
    if nulls:
        details["null_mx"] = True
        ctx.null_mx = True
        if len(records) > 1:
            r.error("mx", "a null MX is published together with other MX records",
                    "RFC 7505 §3: a domain with a null MX MUST NOT publish any other MX; "
                    "remove one or the other.")
        elif nulls[0].preference != 0:
            r.warning("mx", "null MX with a preference other than 0",
                      "RFC 7505 §3: publish 'MX 0 .'.")
        else:
            r.info("mx", "null MX (RFC 7505): the domain accepts no mail")
        if len(records) == len(nulls):
            return
    hosts = [m for m in records if m.exchange not in ("", ".")]
    if len(hosts) > limits.POSTURE_MAX_MX:
        r.info("mx", f"{len(hosts)} MX hosts; only the first {limits.POSTURE_MAX_MX} are checked")
    for record in hosts[: limits.POSTURE_MAX_MX]:
        host = _MXHost(preference=record.preference, host=record.exchange)
        try:
            ipaddress.ip_address(record.exchange)
        except ValueError:
            pass
        else:
            r.error("mx", f"MX {record.exchange} is an IP address, not a host name",
                    "RFC 5321 §5.1: MX targets are names; point the MX at a host name.")
        a = await _ask(ctx.resolver, record.exchange, RRType.A)
        aaaa = await _ask(ctx.resolver, record.exchange, RRType.AAAA)
        for ans in (a, aaaa):
            if isinstance(ans, Answer):
                host.addresses += [str(x) for x in ans.records]
                if ans.canonical_name != ans.name:
                    host.cname = ans.canonical_name
        if host.cname:
            r.warning("mx", f"MX {record.exchange} is a CNAME (to {host.cname})",
                      "RFC 2181 §10.3: an MX must point at a name with address records, "
                      "not an alias; use the target name.")
        if not host.addresses:
            if isinstance(a, DNSTemporaryError) or isinstance(aaaa, DNSTemporaryError):
                r.warning("mx", f"MX {record.exchange}: address lookup failed",
                          "Retry; check the DNS servers of the MX host's zone.")
            else:
                r.error("mx", f"MX {record.exchange} has no A or AAAA record",
                        f"Publish an address for {record.exchange} or remove the MX.")
        ctx.mx.append(host)
    details["hosts"] = [h.as_dict() for h in ctx.mx]
    if ctx.mx and all(h.addresses for h in ctx.mx):
        names = ", ".join(f"{h.host} ({h.preference})" for h in ctx.mx)
        r.ok("mx", f"MX: {names}")


# ------------------------------------------------------------------------------- SPF ---

@dataclass(slots=True)
class _SPFWalk:
    lookups: int = 0
    void: int = 0
    records: int = 0
    macros: bool = False
    problems: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


async def _spf_record(resolver: Resolver, domain: str
                      ) -> tuple[SPFRecord | None, str | None, bool]:
    """(record, problem, void) of ``domain``'s SPF record (for include/redirect targets)."""
    answer = await _ask(resolver, domain, RRType.TXT)
    if isinstance(answer, DNSTemporaryError):
        return None, f"{domain}: DNS temporary error", False
    found = [t for t in _txts(answer) if is_spf_record(t)]
    if not found:
        return None, f"{domain} has no SPF record", _void(answer)
    if len(found) > 1:
        return None, f"{domain} has {len(found)} SPF records", False
    try:
        return parse_record(found[0].decode("ascii")), None, False
    except (ParseError, UnicodeDecodeError) as exc:
        return None, f"{domain}: SPF syntax error: {_short(str(exc), 80)}", False


async def _walk(resolver: Resolver, record: SPFRecord, domain: str, walk: _SPFWalk,
                depth: int) -> None:
    walk.records += 1
    for mech in record.mechanisms:
        if mech.kind not in (MechanismKind.INCLUDE, MechanismKind.A, MechanismKind.MX,
                             MechanismKind.PTR, MechanismKind.EXISTS):
            continue
        walk.lookups += 1
        target = domain
        if mech.domain_spec is not None:
            if mech.domain_spec.literal is None:
                walk.macros = True
                continue
            target = mech.domain_spec.literal.rstrip(".")
        if mech.kind is MechanismKind.INCLUDE:
            await _follow(resolver, target, walk, depth, "include")
        elif mech.kind is MechanismKind.A:
            a = await _ask(resolver, target, RRType.A)
            if _void(a):
                aaaa = await _ask(resolver, target, RRType.AAAA)
                if _void(aaaa):
                    walk.void += 1
        elif mech.kind is MechanismKind.MX:
            mx = await _ask(resolver, target, RRType.MX)
            if _void(mx):
                walk.void += 1
            elif isinstance(mx, Answer) and len(mx.records) > limits.SPF_MAX_MX_ADDRESSES:
                walk.problems.append(
                    f"mx:{target} has {len(mx.records)} MX hosts; RFC 7208 §4.6.4 allows "
                    f"{limits.SPF_MAX_MX_ADDRESSES}")
    if record.redirect is not None and not record.has_all:
        walk.lookups += 1
        if record.redirect.literal is None:
            walk.macros = True
        else:
            await _follow(resolver, record.redirect.literal.rstrip("."), walk, depth, "redirect")


async def _follow(resolver: Resolver, target: str, walk: _SPFWalk, depth: int, how: str
                  ) -> None:
    key = target.lower()
    if key in walk.seen:
        walk.problems.append(f"{how}:{target} loops back to a record already evaluated")
        return
    if walk.records >= limits.POSTURE_SPF_MAX_RECORDS:
        return
    walk.seen.add(key)
    child, problem, void = await _spf_record(resolver, target)
    if void:
        walk.void += 1
    if child is None:
        # RFC 7208 §5.2 / §6.1: a target without a record is a permerror.
        walk.problems.append(f"{how}:{target}: {problem} (permerror)")
        return
    if any(m.kind is MechanismKind.ALL and m.qualifier is Qualifier.PASS
           for m in child.mechanisms):
        walk.problems.append(f"{how}:{target} ends in +all: every sender passes")
    await _walk(resolver, child, target, walk, depth + 1)


async def _check_spf(ctx: _Context) -> None:
    r, domain = ctx.report, ctx.domain
    answer = await _ask(ctx.resolver, domain, RRType.TXT)
    details: dict[str, Any] = {"record": None}
    r.details["spf"] = details
    if isinstance(answer, DNSTemporaryError):
        r.warning("spf", "SPF lookup failed (temporary DNS error)", "Retry later.")
        return
    found = [t for t in _txts(answer) if is_spf_record(t)]
    if not found:
        fix = (f"Publish '{domain}. TXT \"v=spf1 -all\"' (the domain sends no mail)."
               if ctx.null_mx else
               f"Publish one TXT record at {domain} such as \"v=spf1 mx -all\".")
        r.error("spf", "no SPF record", fix)
        return
    if len(found) > 1:
        details["records"] = [t.decode("latin-1") for t in found]
        r.error("spf", f"{len(found)} SPF records: receivers return permerror (RFC 7208 §4.5)",
                "Merge them into exactly one v=spf1 record.")
        return
    try:
        text = found[0].decode("ascii")
        record = parse_record(text)
    except (UnicodeDecodeError, ParseError) as exc:
        details["record"] = found[0].decode("latin-1")
        r.error("spf", f"SPF syntax error: {_short(str(exc))}",
                "Correct the record (RFC 7208 §4.6 grammar); any error makes it permerror.")
        return
    details["record"] = text
    walk = _SPFWalk(seen={domain.lower()})
    await _walk(ctx.resolver, record, domain, walk, 0)
    details.update(lookups=walk.lookups, void_lookups=walk.void, records_walked=walk.records,
                   macros=walk.macros)
    all_mech = next((m for m in record.mechanisms if m.kind is MechanismKind.ALL), None)
    details["all"] = all_mech.text if all_mech else None
    problems = 0
    if walk.lookups > limits.SPF_MAX_DNS_MECHANISMS:
        problems += 1
        r.error("spf", f"SPF needs {walk.lookups} DNS lookups; the limit is "
                f"{limits.SPF_MAX_DNS_MECHANISMS} (RFC 7208 §4.6.4): receivers return permerror",
                "Flatten includes (replace some with ip4:/ip6: ranges) or drop unused ones.")
    if walk.void > limits.SPF_MAX_VOID_LOOKUPS:
        problems += 1
        r.error("spf", f"{walk.void} void lookups (names without records); the limit is "
                f"{limits.SPF_MAX_VOID_LOOKUPS} (RFC 7208 §4.6.4)",
                "Remove mechanisms that point at names which do not exist.")
    for problem in walk.problems:
        problems += 1
        r.error("spf", problem, "Fix or remove that include/redirect target.")
    if all_mech is not None and all_mech.qualifier is Qualifier.PASS:
        problems += 1
        r.error("spf", "the record ends in +all: every host on the Internet may send as "
                f"{domain}", "Use -all (or ~all while testing).")
    elif all_mech is not None and all_mech.qualifier is Qualifier.NEUTRAL:
        problems += 1
        r.warning("spf", "?all: unlisted senders get neutral, as if there were no SPF",
                  "Use ~all or -all.")
    elif all_mech is None and record.redirect is None:
        problems += 1
        r.warning("spf", "no all mechanism or redirect: unlisted senders get neutral",
                  "End the record with -all (or ~all).")
    if any(m.kind is MechanismKind.PTR for m in record.mechanisms):
        problems += 1
        r.warning("spf", "the ptr mechanism is used (RFC 7208 §5.5: SHOULD NOT be used)",
                  "Replace ptr with ip4:/ip6: or a: mechanisms.")
    if walk.macros:
        r.info("spf", "macros in the record: the lookup count is a lower bound")
    if not problems:
        ending = f" {all_mech.text}" if all_mech else " (redirect)"
        r.ok("spf", f"SPF record valid, {walk.lookups}/{limits.SPF_MAX_DNS_MECHANISMS} DNS "
             f"lookups, ends{ending}")


# ----------------------------------------------------------------------------- DMARC ---

def _mailto_domain(uri: str) -> str | None:
    if not uri.lower().startswith("mailto:"):
        return None
    address = uri[7:].split("?", 1)[0]
    local, at, host = address.rpartition("@")
    return host.lower().rstrip(".") if at and local and host else None


async def _report_authorised(resolver: Resolver, policy_domain: str, destination: str
                             ) -> bool | None:
    """RFC 7489 §7.1: "[...] query for a TXT record at <policy-domain>._report._dmarc.
    <destination-domain> [...] a record that starts with "v=DMARC1"". None: DNS failed."""
    answer = await _ask(resolver, f"{policy_domain}._report._dmarc.{destination}", RRType.TXT)
    if isinstance(answer, DNSTemporaryError):
        return None
    return any(t.startswith(b"v=DMARC1") for t in _txts(answer))


async def _check_dmarc(ctx: _Context) -> None:
    r, domain = ctx.report, ctx.domain
    lookup = await discover_policy(ctx.resolver, domain)
    details: dict[str, Any] = {"record": None, "policy_domain": lookup.policy_domain,
                               "org_domain": lookup.org_domain, "status": lookup.status.value}
    r.details["dmarc"] = details
    if lookup.status is LookupStatus.TEMPERROR:
        r.warning("dmarc", "DMARC lookup failed (temporary DNS error)", "Retry later.")
        return
    if lookup.status is LookupStatus.MULTIPLE:
        r.error("dmarc", "several DMARC records: receivers ignore them all (RFC 7489 §6.6.3)",
                f"Keep exactly one TXT record at _dmarc.{domain}.")
        return
    record = lookup.record
    if lookup.status is not LookupStatus.FOUND or record is None:
        r.error("dmarc", "no DMARC record", f"Publish '_dmarc.{domain}. TXT \"v=DMARC1; "
                f"p=none; rua=mailto:dmarc-reports@{domain}\"', then move to quarantine/reject.")
        return
    ctx.dmarc_record = record
    details["record"] = record.text
    inherited = (lookup.policy_domain or domain).lower() != domain.lower()
    ctx.dmarc_inherited = inherited
    policy = record.sp if inherited and record.sp is not None else record.p
    details.update(p=record.p.value if record.p else None,
                   sp=record.sp.value if record.sp else None, pct=record.pct,
                   adkim=record.adkim.value, aspf=record.aspf.value,
                   rua=[u.uri for u in record.rua], ruf=[u.uri for u in record.ruf],
                   inherited=inherited)
    if inherited:
        r.info("dmarc", f"no record at _dmarc.{domain}; the policy of {lookup.policy_domain} "
               "applies" + (" (its sp=)" if record.sp is not None else ""))
    problems = 0
    if record.p_invalid or (record.p is None and not inherited):
        problems += 1
        r.error("dmarc", "the p= tag is missing or invalid",
                "Set p=none, p=quarantine or p=reject.")
    elif policy is Policy.NONE:
        problems += 1
        r.warning("dmarc", "policy p=none: monitoring only, spoofed mail is still delivered",
                  "After reading the aggregate reports, move to p=quarantine, then p=reject.")
    if record.pct != 100 and policy is not Policy.NONE:
        problems += 1
        r.warning("dmarc", f"pct={record.pct}: the policy applies to only part of the mail",
                  "Raise pct to 100 (RFC 9989 drops pct altogether).")
    for warning in record.warnings:
        problems += 1
        r.warning("dmarc", f"record defect: {_short(warning)}", "Correct the tag's syntax.")
    if not record.rua:
        problems += 1
        r.warning("dmarc", "no rua=: you receive no aggregate reports",
                  f"Add rua=mailto:dmarc-reports@{domain}.")
    org = psl_organizational_domain(lookup.policy_domain or domain)
    policy_domain = (lookup.policy_domain or domain).lower()
    checked: list[dict[str, Any]] = []
    for tag, uris in (("rua", record.rua), ("ruf", record.ruf)):
        for uri in uris:
            dest = _mailto_domain(uri.uri)
            if dest is None:
                if uri.scheme != "mailto":
                    problems += 1
                    r.warning("dmarc", f"{tag} URI {_short(uri.uri, 60)} is not mailto: "
                              "(receivers only have to support mailto:, RFC 7489 §6.2)",
                              "Use a mailto: address.")
                continue
            external = psl_organizational_domain(dest) != org
            entry: dict[str, Any] = {"tag": tag, "uri": uri.uri, "external": external}
            if external:
                ok = await _report_authorised(ctx.resolver, policy_domain, dest)
                entry["authorised"] = ok
                if ok is False:
                    problems += 1
                    r.error("dmarc", f"{tag} destination {dest} has not authorised reports "
                            f"for {policy_domain} (RFC 7489 §7.1): receivers will not send",
                            f"Ask {dest} to publish '{policy_domain}._report._dmarc.{dest}. "
                            "TXT \"v=DMARC1\"'.")
                elif ok is None:
                    r.info("dmarc", f"could not check the authorisation of {tag} "
                           f"destination {dest} (DNS error)")
            checked.append(entry)
    details["report_destinations"] = checked
    if record.ruf:
        r.info("dmarc", "ruf= failure reports: few receivers send them, and they carry "
               "message content")
    modes = []
    if record.adkim is Alignment.STRICT:
        modes.append("adkim=s")
    if record.aspf is Alignment.STRICT:
        modes.append("aspf=s")
    if modes:
        r.info("dmarc", f"strict alignment ({', '.join(modes)}): subdomains' mail must "
               "use the exact domain")
    if not problems:
        r.ok("dmarc", f"DMARC p={policy.value if policy else '?'}"
             + (f" pct={record.pct}" if record.pct != 100 else "")
             + f", {len(record.rua)} aggregate report address(es)")


# ------------------------------------------------------------------------------ DKIM ---

async def _learned_selectors(ctx: _Context) -> list[str]:
    """Selectors seen verifying for the domain in received mail (none without a source). A
    store that cannot be read is a finding, not a failed DKIM check."""
    if ctx.selector_source is None:
        return []
    since = ctx.clock.now() - LEARNED_SELECTOR_WINDOW.total_seconds()
    try:
        seen = await ctx.selector_source.dkim_selectors_seen(
            ctx.domain, since=since, limit=limits.POSTURE_MAX_DKIM_SELECTORS)
    except StoreError as exc:
        ctx.report.warning("dkim", f"cannot read selectors seen in received mail: "
                           f"{_short(str(exc))}", "Check --store / the config's store.url.")
        return []
    return [s for s in (t.lower() for t in seen) if _STORED_SELECTOR.fullmatch(s)]


async def _check_dkim(ctx: _Context) -> None:
    r, domain = ctx.report, ctx.domain
    origin: dict[str, str] = {}
    for given in ctx.options.selectors:
        if given.strip():
            origin.setdefault(given.strip().lower(), _GIVEN)
    learned = await _learned_selectors(ctx)
    for selector in learned:
        origin.setdefault(selector, _LEARNED)
    if ctx.options.common_selectors:
        for selector in COMMON_SELECTORS:
            origin.setdefault(selector, _COMMON)
    selectors = list(origin)[: limits.POSTURE_MAX_DKIM_SELECTORS]
    answers = await asyncio.gather(*(
        _ask(ctx.resolver, f"{s}._domainkey.{domain}", RRType.TXT) for s in selectors))
    found: list[dict[str, Any]] = []
    failed: list[str] = []
    for selector, answer in zip(selectors, answers, strict=True):
        if isinstance(answer, DNSTemporaryError):
            failed.append(selector)
            continue
        texts = _txts(answer)
        if not texts:
            continue
        name = f"{selector}._domainkey.{domain} ({_ORIGIN_TEXT[origin[selector]]})"
        try:
            key = parse_key_record(texts[0])
        except (DKIMTagError, ParseError) as exc:
            found.append({"selector": selector, "source": origin[selector], "valid": False,
                          "error": str(exc)})
            r.error("dkim", f"key {name} is not usable: {_short(str(exc))}",
                    "Republish the key record (v=DKIM1; k=rsa; p=<base64 public key>).")
            continue
        entry = {"selector": selector, "source": origin[selector], "valid": True,
                 "key_type": key.key_type, "bits": key.key_bits, "revoked": key.key is None,
                 "testing": key.testing}
        found.append(entry)
        if key.key is None:
            r.info("dkim", f"key {name} is revoked (empty p=)",
                   "Fine if retired; remove the selector from your signer's configuration.")
            continue
        if key.key_type == "rsa" and key.key_bits is not None:
            if key.key_bits < limits.DKIM_RSA_MIN_BITS:
                r.error("dkim", f"key {name} is RSA-{key.key_bits}: verifiers MUST NOT accept "
                        "keys under 1024 bits (RFC 8301 §3.2)",
                        "Generate a 2048-bit key and rotate.")
                continue
            if key.key_bits < limits.DKIM_RSA_WEAK_BITS:
                r.warning("dkim", f"key {name} is RSA-{key.key_bits}: under 2048 bits "
                          "(RFC 8301 §3.2 SHOULD use 2048)", "Rotate to a 2048-bit key.")
                continue
        if key.testing:
            r.warning("dkim", f"key {name} has t=y (testing): verifiers may ignore failures",
                      "Remove t=y once signing works.")
            continue
        bits = f"-{key.key_bits}" if key.key_bits else ""
        r.ok("dkim", f"key {name}: {key.key_type.upper()}{bits}")
    ctx.report.details["dkim"] = {"selectors_tried": selectors, "keys": found,
                                  "dns_failures": failed, "selectors_seen": learned}
    if found and not any(k.get("valid") and not k.get("revoked") for k in found):
        r.add("dkim", Severity.INFO if ctx.null_mx else Severity.WARNING,
              "no usable DKIM key among the selectors tried (only revoked or broken ones)",
              "Publish the public key of the selector your signer uses.")
    if not found:
        given = (f" (given: {', '.join(ctx.options.selectors)})"
                 if ctx.options.selectors else "")
        seen = (f" (seen verifying in mail received here: {_short(', '.join(learned))})"
                if learned else "")
        r.add("dkim", Severity.INFO if ctx.null_mx else Severity.WARNING,
              f"no DKIM key found among the {len(selectors)} selectors tried"
              f"{given}{seen}; selectors cannot be listed, so keys may exist under other names",
              "Pass the selector your signer uses (--selector NAME), or publish a key.")


# ------------------------------------------------------------------------------ BIMI ---

async def _check_bimi(ctx: _Context, fetcher: Fetcher | None) -> None:
    r, domain = ctx.report, ctx.domain
    lookup = await lookup_bimi(ctx.resolver, domain)
    record = lookup.record
    r.details["bimi"] = {"status": lookup.status.value, "name": lookup.name,
                         "record": record.text if record else None,
                         "logo": record.location if record else None,
                         "authority": record.authority if record else None}
    if lookup.status is BIMIStatus.NONE:
        r.info("bimi", "no BIMI record (optional: a brand logo next to your mail)",
               f"Publish default._bimi.{domain} TXT \"v=BIMI1; l=https://.../logo.svg\" "
               "once DMARC is at quarantine/reject.")
        return
    if lookup.status is BIMIStatus.TEMPERROR:
        r.warning("bimi", "BIMI lookup failed (temporary DNS error)", "Retry later.")
        return
    if lookup.status is not BIMIStatus.FOUND or record is None:
        r.error("bimi", f"BIMI record unusable: {_short(lookup.problem or '')}",
                f"Keep exactly one valid v=BIMI1 record at default._bimi.{domain}.")
        return
    if record.declined:
        r.info("bimi", "BIMI record declines to show a logo (l= and a= empty)")
        return
    ok, reason = dmarc_allows_bimi(ctx.dmarc_record, subdomain=ctx.dmarc_inherited)
    if not ok:
        r.warning("bimi", f"BIMI record present but {reason}: receivers will not show the logo",
                  "Move DMARC to p=quarantine or p=reject with pct=100.")
    if record.authority is None:
        r.info("bimi", "no a= evidence (VMC/CMC): Gmail and Apple Mail show no logo without one",
               "Obtain a Verified Mark Certificate and publish its URL in a=.")
    for warning in record.warnings:
        r.info("bimi", _short(warning))
    if fetcher is not None and record.location is not None:
        # the logo: an SVG served over HTTPS (BIMI draft §4.2 l=), bounded by the SVG
        # Tiny PS profile's 32 KiB recommendation
        try:
            await fetcher.get(record.location, max_bytes=BIMI_LOGO_MAX,
                              content_types=BIMI_LOGO_TYPES)
        except FetchError as exc:
            ok = False
            r.warning("bimi", f"logo cannot be fetched: {_short(str(exc))}",
                      "Serve the SVG over HTTPS as image/svg+xml, without redirects, under "
                      "32 KiB.")
    if ok:
        r.ok("bimi", f"BIMI logo {_short(record.location or '(in the VMC)', 80)}"
             + (", with a= evidence" if record.authority else ""))


# --------------------------------------------------------------------------- MTA-STS ---

async def _check_mta_sts(ctx: _Context, fetcher: Fetcher | None) -> None:
    r, domain = ctx.report, ctx.domain
    lookup = await lookup_record(ctx.resolver, domain)
    details: dict[str, Any] = {"status": lookup.status.value, "id": lookup.id,
                               "url": policy_url(domain), "policy": None}
    r.details["mta_sts"] = details
    if lookup.status is RecordStatus.NONE:
        if not ctx.null_mx:
            r.warning("mta-sts", "no MTA-STS record: senders' STARTTLS can be stripped by an "
                      "attacker", f"Publish _mta-sts.{domain} TXT \"v=STSv1; id=<date>\" and "
                      f"the policy at {policy_url(domain)} (start with mode: testing).")
        return
    if lookup.status is RecordStatus.TEMPERROR:
        r.warning("mta-sts", "MTA-STS lookup failed (temporary DNS error)", "Retry later.")
        return
    if lookup.status is not RecordStatus.FOUND:
        r.error("mta-sts", f"MTA-STS record unusable, senders ignore it: "
                f"{_short(lookup.problem or '')} (RFC 8461 §3.1)",
                f"Keep exactly one record at _mta-sts.{domain}: \"v=STSv1; id=<1-32 letters/"
                "digits>\".")
        return
    if fetcher is None:
        r.info("mta-sts", f"MTA-STS record id={lookup.id}; policy not fetched")
        return
    fetched = await fetch_policy(fetcher, domain)
    if fetched.policy is None:
        r.error("mta-sts", f"MTA-STS record published but the policy cannot be used: "
                f"{_short(fetched.error or '')}",
                f"Serve {policy_url(domain)} over HTTPS with a valid certificate for "
                f"mta-sts.{domain}, as text/plain, with no redirect (RFC 8461 §3.3).")
        return
    policy = fetched.policy
    ctx.sts_policy = policy
    details["policy"] = {"mode": policy.mode.value, "max_age": policy.max_age,
                         "mx": list(policy.mx), "warnings": list(policy.warnings)}
    problems = 0
    unmatched = [h.host for h in ctx.mx if not policy.matches(h.host)]
    for host in ctx.mx:
        host.mta_sts_match = policy.matches(host.host)
    if policy.mode is Mode.NONE:
        problems += 1
        r.warning("mta-sts", "MTA-STS policy mode is none: no protection",
                  "Use mode: testing, then mode: enforce.")
    for mx_name in unmatched:
        problems += 1
        if policy.mode is Mode.ENFORCE:
            r.error("mta-sts", f"MX {mx_name} matches no mx: line of the enforce policy: "
                    "senders will refuse to deliver to it (RFC 8461 §4.1)",
                    f"Add 'mx: {mx_name}' (or a *. pattern) to the policy and change the TXT id.")
        elif policy.mode is Mode.TESTING:
            r.warning("mta-sts", f"MX {mx_name} matches no mx: line of the policy (reported in "
                      "testing mode, refused once enforced)",
                      f"Add 'mx: {mx_name}' to the policy and change the TXT id.")
    if policy.mode is Mode.TESTING:
        problems += 1
        r.info("mta-sts", "MTA-STS in testing mode: failures are reported, not enforced",
               "Switch to mode: enforce once TLS-RPT reports are clean.")
    if policy.max_age < MTASTS_SHORT_MAX_AGE:
        problems += 1
        r.warning("mta-sts", f"max_age={policy.max_age} s is short: the policy lapses quickly "
                  "(RFC 8461 §3.2 expects weeks)", "Use max_age: 604800 or more.")
    for warning in policy.warnings:
        r.info("mta-sts", f"policy: {_short(warning)}")
    if not problems:
        r.ok("mta-sts", f"MTA-STS mode {policy.mode.value}, id={lookup.id}, "
             f"max_age={policy.max_age}, every MX matches")


# --------------------------------------------------------------------------- TLS-RPT ---

async def _check_tlsrpt(ctx: _Context) -> None:
    r, domain = ctx.report, ctx.domain
    lookup = await lookup_tlsrpt(ctx.resolver, domain)
    record = lookup.record
    r.details["tls_rpt"] = {"status": lookup.status.value,
                            "rua": list(record.rua) if record else []}
    if lookup.status is TLSRPTStatus.NONE:
        if ctx.null_mx:
            return
        severity = Severity.WARNING if ctx.sts_policy is not None else Severity.INFO
        r.add("tls-rpt", severity, "no TLS-RPT record: you will not hear about TLS failures "
              "of senders", f"Publish _smtp._tls.{domain} TXT \"v=TLSRPTv1; "
              f"rua=mailto:tlsrpt@{domain}\" (RFC 8460).")
        return
    if lookup.status is TLSRPTStatus.TEMPERROR:
        r.warning("tls-rpt", "TLS-RPT lookup failed (temporary DNS error)", "Retry later.")
        return
    if lookup.status is not TLSRPTStatus.FOUND or record is None:
        r.error("tls-rpt", f"TLS-RPT record unusable: {_short(lookup.problem or '')}",
                f"Keep exactly one record at _smtp._tls.{domain}: \"v=TLSRPTv1; "
                "rua=mailto:...\" (RFC 8460 §3).")
        return
    for warning in record.warnings:
        r.warning("tls-rpt", _short(warning), "Use mailto: or https: URIs only.")
    r.ok("tls-rpt", f"TLS-RPT reports to {', '.join(record.rua)}")


# ---------------------------------------------------------------------- DNSSEC, TLSA ---

def _check_dnssec(ctx: _Context) -> None:
    r = ctx.report
    if not ctx.options.dnssec_validating:
        r.details["dnssec"] = {"status": "unknown"}
        r.info("dnssec", "DNSSEC status unknown: no validating resolver configured",
               "Run with --dnssec and --resolver pointing at a local validating resolver "
               "(e.g. unbound on 127.0.0.1).")
        return
    signed = bool(ctx.authenticated)
    r.details["dnssec"] = {"status": "validated" if signed else "insecure"}
    if signed:
        r.ok("dnssec", "answers are DNSSEC-validated (AD bit from the validating resolver)")
    else:
        r.warning("dnssec", "answers are not DNSSEC-validated: the zone is unsigned or broken",
                  "Sign the zone and publish the DS record at the parent; DANE needs it.")


async def _check_tlsa(ctx: _Context) -> None:
    r = ctx.report
    for host in ctx.mx:
        name = f"_25._tcp.{host.host}"
        answer = await _ask(ctx.resolver, name, RRType.TLSA)
        if isinstance(answer, DNSTemporaryError):
            r.warning("tlsa", f"{name}: TLSA lookup failed", "Retry later.")
            continue
        if not isinstance(answer, Answer):
            continue
        records = [x for x in answer.records if isinstance(x, TLSA)]
        host.tlsa = [{"usage": t.usage, "selector": t.selector, "mtype": t.mtype,
                      "data": t.data.hex()} for t in records]
        if any(t.usage in (0, 1) for t in records):
            r.warning("tlsa", f"{name}: PKIX-TA/PKIX-EE usages (0/1) in TLSA records",
                      "RFC 7672 §3.1.3: use DANE-TA(2) or DANE-EE(3) for SMTP.")
        if not ctx.options.dnssec_validating:
            r.info("tlsa", f"{name}: {len(records)} TLSA record(s); DNSSEC not checked here")
        elif answer.authenticated:
            host.tlsa_secure = True
            r.ok("tlsa", f"{name}: DANE TLSA published and DNSSEC-validated")
        else:
            r.error("tlsa", f"{name}: TLSA records are not DNSSEC-validated: senders ignore "
                    "them (RFC 7672 §2.2)", "Sign the MX host's zone (DNSSEC) or remove them.")


# -------------------------------------------------------------------------- STARTTLS ---

async def _check_starttls(ctx: _Context, prober: Prober) -> None:
    r = ctx.report
    results = await asyncio.gather(*(prober(h.host, h.addresses) for h in ctx.mx))
    now = datetime.datetime.fromtimestamp(ctx.clock.now(), tz=datetime.UTC)
    strict = ctx.sts_policy is not None and ctx.sts_policy.mode is not Mode.NONE
    for host, probe in zip(ctx.mx, results, strict=True):
        ctx.probes[host.host] = probe
        host.starttls = probe.as_dict()
        name = f"{host.host}:{probe.port}"
        if not probe.connected:
            r.warning("starttls", f"{name}: not reachable from here ({_short(probe.error or '')})",
                      "Check from a host allowed to connect to port 25 (many networks block "
                      "it), and that the MX listens.")
            continue
        if probe.starttls_offered is False:
            r.error("starttls", f"{name} does not offer STARTTLS: mail to it travels in clear",
                    "Enable STARTTLS with a certificate for the MX name.")
            state = TLSState.NO_STARTTLS
        elif probe.tls is None:
            r.error("starttls", f"{name}: {_short(probe.error or 'TLS failed')}",
                    "Fix the server's TLS configuration (TLS 1.2+, a valid certificate).")
            state = TLSState.NO_STARTTLS
        else:
            tls = probe.tls
            state = (TLSState.VALID if probe.certificate_valid
                     else TLSState.INVALID_CERTIFICATE)
            if probe.certificate_problem and host.tlsa_secure and not strict:
                # RFC 7672 §3.1.1: with DANE-EE(3) the certificate's names and chain do not
                # matter; DANE senders match the TLSA records instead.
                r.info("starttls", f"{name}: certificate does not verify for WebPKI "
                       f"({_short(probe.certificate_problem, 80)}); DANE TLSA applies",
                       "Make sure the TLSA records match the certificate (not checked here).")
            elif probe.certificate_problem:
                severity = Severity.ERROR if strict else Severity.WARNING
                r.add("starttls", severity, f"{name}: certificate does not verify: "
                      f"{_short(probe.certificate_problem)}",
                      f"Install a certificate from a public CA whose names include {host.host}.")
            elif tls.not_after is not None and tls.not_after - now < CERT_EXPIRY_WARNING:
                r.warning("starttls", f"{name}: certificate expires {tls.not_after:%Y-%m-%d}",
                          "Renew the certificate.")
            else:
                until = f" until {tls.not_after:%Y-%m-%d}" if tls.not_after else ""
                r.ok("starttls", f"{name}: STARTTLS {tls.version} {tls.cipher}, certificate "
                     f"valid for {host.host}{until}")
        if ctx.sts_policy is not None and ctx.sts_policy.mode is Mode.ENFORCE:
            decision = decide(ctx.sts_policy, host.host, state)
            if not decision.deliver:
                r.error("starttls", f"{host.host}: MTA-STS enforce senders refuse this MX: "
                        f"{_short(decision.reason)}", "Fix TLS on the MX or the policy's mx list.")


# ------------------------------------------------------------------------------- API ---

async def check_domain(
    domain: str,
    resolver: Resolver,
    *,
    options: PostureOptions | None = None,
    fetcher: Fetcher | None = None,
    prober: Prober | None = None,
    clock: Clock = SYSTEM_CLOCK,
    selector_source: SelectorSource | None = None,
) -> DomainReport:
    """Check one domain (see the module docstring). Never raises for DNS, HTTPS, SMTP or
    store trouble: each becomes a finding. ``selector_source`` (a
    :class:`~mailmoat.store.Store`) adds the DKIM selectors seen verifying in received mail."""
    options = options or PostureOptions()
    name = domain.strip().lower().rstrip(".")
    try:
        if not name.isascii():
            # IDNA 2008 (the idna package, never Python's IDNA 2003 codec): U-labels to A-labels
            name = idna.encode(name, uts46=True).decode("ascii")
        normalize_name(name)
        if "." not in name:
            raise ParseError("a single label")
        if not _HOSTNAME.fullmatch(name):
            raise ParseError("letters, digits and hyphens only (RFC 1123 §2.1)")
    except (DNSError, ParseError, idna.IDNAError) as exc:
        report = _Report(name)
        report.error("domain", f"{_short(domain)!r} is not a domain name ({exc})",
                     "Give a domain such as example.com.")
        return DomainReport(domain=name, findings=tuple(report.findings), details={})
    report = _Report(name)
    ctx = _Context(domain=name, resolver=resolver, options=options, report=report, clock=clock,
                   selector_source=selector_source)
    await _guard(ctx, "mx", _check_mx(ctx))
    await _guard(ctx, "spf", _check_spf(ctx))
    await _guard(ctx, "dmarc", _check_dmarc(ctx))
    await _guard(ctx, "dkim", _check_dkim(ctx))
    await _guard(ctx, "bimi", _check_bimi(ctx, fetcher))
    await _guard(ctx, "mta-sts", _check_mta_sts(ctx, fetcher))
    await _guard(ctx, "tls-rpt", _check_tlsrpt(ctx))
    _check_dnssec(ctx)
    if ctx.mx:
        await _guard(ctx, "tlsa", _check_tlsa(ctx))
        if options.smtp:
            await _guard(ctx, "starttls", _check_starttls(ctx, prober or _default_prober))
        else:
            report.info("starttls", "STARTTLS not probed (--no-smtp)")
    report.details.setdefault("mx", {})["hosts"] = [h.as_dict() for h in ctx.mx]
    return DomainReport(domain=name, findings=tuple(report.findings), details=report.details)


async def _guard(ctx: _Context, area: str, work: Coroutine[Any, Any, None]) -> None:
    """Run one area's check; a bug in it becomes an error finding for that area, so the other
    areas (and the other domains of :func:`check_domains`) are still reported."""
    try:
        await work
    except Exception as exc:
        log.exception("posture check %s of %s failed", area, ctx.domain)
        ctx.report.error(area, f"internal error while checking: {_short(repr(exc))}",
                         "This is a mailmoat bug: please report it with the domain name.")


async def _default_prober(host: str, addresses: Sequence[str]) -> ProbeResult:
    return await probe_starttls(host, connect_to=addresses[0] if addresses else None)


async def check_domains(
    domains: Iterable[str],
    resolver: Resolver,
    *,
    options: PostureOptions | None = None,
    fetcher: Fetcher | None = None,
    prober: Prober | None = None,
    clock: Clock = SYSTEM_CLOCK,
    on_done: Callable[[DomainReport], None] | None = None,
    concurrency: int = limits.POSTURE_CONCURRENCY,
    selector_source: SelectorSource | None = None,
) -> list[DomainReport]:
    """Check several domains, at most ``concurrency`` at a time; results in input order.
    ``on_done`` is called as each domain completes (for progress display)."""
    names: Sequence[str] = list(domains)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(name: str) -> DomainReport:
        async with gate:
            result = await check_domain(name, resolver, options=options, fetcher=fetcher,
                                        prober=prober, clock=clock,
                                        selector_source=selector_source)
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(one(n) for n in names)))
