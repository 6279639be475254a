"""BIMI assertion records and discovery (draft-brand-indicators-for-message-identification,
"BIMI"; layer L2, pure over an injected resolver).

Record (BIMI draft §4.2)::

    bimi-record    = bimi-version (bimi-sep bimi-location) (bimi-sep bimi-authority) [bimi-sep]
    bimi-version   = "v" *WSP "=" *WSP "BIMI" 1DIGIT      ; "BIMI1", MUST be the first tag
    bimi-sep       = *WSP ";" *WSP
    bimi-location  = "l" *WSP "=" *WSP [bimi-uri]           ; empty: declined / logo in the VMC
    bimi-authority = "a" *WSP "=" *WSP [bimi-uri]           ; evidence document (VMC), PEM
    bimi-uri       = an https: URI (commas and semicolons percent-encoded)

Unknown tags are ignored; a tag given twice makes the record invalid (as Mail::BIMI's
DUPLICATE_KEY). The version is compared case-insensitively (Mail::BIMI and the records in the
wild: ``v=bimi1``). ``l=`` and ``a=`` both empty is a *declination to publish*.

Discovery (BIMI draft §4.4; Mail::BIMI's behaviour): ask ``<selector>._bimi.<author domain>``
(``default`` when the message names none); keep the TXT records that start with ``v=BIMI1;``;
none left -> ask ``default._bimi.<organizational domain>`` (unless that is the same name);
more than one -> fail (``multiple``).

DMARC prerequisite (BIMI draft §4.3 / §7.?: "the Author Domain [...] has a DMARC policy of
quarantine or reject", applied to all mail: ``pct=100``; a subdomain policy ``sp=none`` at the
Organizational Domain disqualifies its subdomains): :func:`dmarc_allows_bimi`.

SECURITY: records come from DNS (untrusted): bounded by ``limits.MAIL_POLICY_RECORD_MAX``
octets, printable ASCII only, split and anchored regexes (linear), at most
``limits.MAIL_POLICY_MAX_TXT_RECORDS`` records examined. URIs are parsed, never fetched here
(the logo and evidence fetch goes through :mod:`mailmoat.net.fetch`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from mailmoat import limits
from mailmoat.auth.dmarc import DMARCRecord, Policy, psl_organizational_domain
from mailmoat.errors import DNSError, DNSTemporaryError, ParseError
from mailmoat.resolver import TXT, NoData, NXDomain, Resolver, RRType

__all__ = [
    "BIMILookup",
    "BIMIRecord",
    "BIMIStatus",
    "dmarc_allows_bimi",
    "lookup_bimi",
    "parse_bimi",
    "select_bimi",
]

_WSP: Final = " \t"
_VERSION: Final = re.compile(r"[vV][ \t]*=[ \t]*(?P<value>[A-Za-z0-9]*)")
_TAG: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# an https URI: host then optional path/query, no white space, "," or ";" (must be encoded)
_HTTPS: Final = re.compile(r"https://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[\x21-\x2b\x2d-\x3a"
                           r"\x3c-\x7e]*)?", re.IGNORECASE)
_SELECTOR: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_]{0,61}[A-Za-z0-9])?"
                              r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-_]{0,61}[A-Za-z0-9])?)*")


@dataclass(frozen=True, slots=True, kw_only=True)
class BIMIRecord:
    """A parsed BIMI record: ``location`` (``l=``) and ``authority`` (``a=``), None when
    empty or absent."""

    text: str
    location: str | None
    authority: str | None
    warnings: tuple[str, ...] = ()

    @property
    def declined(self) -> bool:
        """Both empty: the domain declines to publish a logo (BIMI draft §4.2)."""
        return self.location is None and self.authority is None


def _is_bimi(raw: bytes) -> bool:
    """Starts with ``v=BIMI1;`` (case-insensitive, optional WSP around "=")."""
    head = raw[:32].decode("latin-1")
    match = _VERSION.match(head)
    if match is None or match.group("value").upper() != "BIMI1":
        return False
    rest = head[match.end():].lstrip(_WSP)
    return rest.startswith(";") or not rest


def parse_bimi(record: bytes | str) -> BIMIRecord:
    """Parse one BIMI TXT record (strings joined). Raises :class:`ParseError`."""
    if len(record) > limits.MAIL_POLICY_RECORD_MAX:
        raise ParseError(f"BIMI record longer than {limits.MAIL_POLICY_RECORD_MAX} octets")
    raw = record.encode("latin-1", "replace") if isinstance(record, str) else record
    if any(not 0x20 <= b <= 0x7E and b != 0x09 for b in raw):
        raise ParseError("BIMI record contains octets outside printable ASCII")
    text = raw.decode("ascii")
    fields = text.strip(_WSP).split(";")
    version = _VERSION.fullmatch(fields[0].strip(_WSP))
    if version is None or version.group("value").upper() != "BIMI1":
        raise ParseError("BIMI record does not start with v=BIMI1")
    warnings: list[str] = []
    if version.group("value") != "BIMI1":
        warnings.append(f"version written {version.group('value')!r}; the draft says BIMI1")
    values: dict[str, str] = {}
    for raw_field in fields[1:]:
        field = raw_field.strip(_WSP)
        if not field:
            continue
        name, eq, value = field.partition("=")
        name = name.rstrip(_WSP).lower()
        if not eq or not _TAG.fullmatch(name):
            raise ParseError(f"BIMI record field {field[:40]!r} is not tag=value")
        if name in values or name == "v":
            raise ParseError(f"BIMI record has {name}= more than once")
        values[name] = value.strip(_WSP)
    for unknown in sorted(set(values) - {"l", "a"}):
        warnings.append(f"unknown tag {unknown}= ignored")
    location = values.get("l") or None
    authority = values.get("a") or None
    if "l" not in values:
        warnings.append("no l= tag (the draft requires it, empty when the logo is in the VMC)")
    for tag, uri in (("l", location), ("a", authority)):
        if uri is None:
            continue
        if "," in uri:
            raise ParseError(f"BIMI {tag}= holds several URIs; exactly one is allowed")
        if not _HTTPS.fullmatch(uri):
            raise ParseError(f"BIMI {tag}= {uri[:60]!r} is not an https:// URI")
    if location is not None and not location.lower().split("?")[0].endswith(".svg"):
        warnings.append("l= does not name an .svg file (BIMI logos are SVG Tiny PS)")
    return BIMIRecord(text=text, location=location, authority=authority,
                      warnings=tuple(warnings))


class BIMIStatus(enum.StrEnum):
    FOUND = "found"
    NONE = "none"
    MULTIPLE = "multiple"
    INVALID = "invalid"
    TEMPERROR = "temperror"


@dataclass(frozen=True, slots=True, kw_only=True)
class BIMILookup:
    """Where the record was looked for and what was found. ``name`` is the DNS name of the
    record used (after the fallback), ``selector``/``domain`` its parts."""

    domain: str
    selector: str
    status: BIMIStatus
    name: str | None = None
    record: BIMIRecord | None = None
    problem: str | None = None
    queried: tuple[str, ...] = ()


def select_bimi(records: Sequence[TXT]) -> tuple[BIMIStatus, BIMIRecord | None, str | None]:
    """Keep the records starting with ``v=BIMI1;``; exactly one must remain."""
    candidates = [t.joined for t in records[: limits.MAIL_POLICY_MAX_TXT_RECORDS]
                  if _is_bimi(t.joined)]
    if not candidates:
        return BIMIStatus.NONE, None, "no TXT record starting with v=BIMI1;"
    if len(candidates) > 1:
        return BIMIStatus.MULTIPLE, None, f"{len(candidates)} BIMI records (exactly one allowed)"
    try:
        return BIMIStatus.FOUND, parse_bimi(candidates[0]), None
    except ParseError as exc:
        return BIMIStatus.INVALID, None, str(exc)


async def _ask(resolver: Resolver, name: str
               ) -> tuple[BIMIStatus, BIMIRecord | None, str | None]:
    try:
        answer = await resolver.resolve(name, RRType.TXT)
    except (NXDomain, NoData):
        return BIMIStatus.NONE, None, f"no TXT at {name}"
    except DNSTemporaryError as exc:
        return BIMIStatus.TEMPERROR, None, str(exc)
    except DNSError as exc:
        return BIMIStatus.NONE, None, str(exc)
    return select_bimi([r for r in answer.records if isinstance(r, TXT)])


async def lookup_bimi(
    resolver: Resolver,
    domain: str,
    *,
    selector: str = "default",
    org_domain: Callable[[str], str] | None = None,
) -> BIMILookup:
    """Discover the BIMI record for an Author Domain (see the module docstring).

    ``org_domain`` maps a domain to its Organizational Domain (default: the Public Suffix List
    through :func:`mailmoat.auth.dmarc.psl_organizational_domain`). Never raises for DNS.
    """
    domain = domain.lower().rstrip(".")
    if not _SELECTOR.fullmatch(selector):
        return BIMILookup(domain=domain, selector=selector, status=BIMIStatus.INVALID,
                          problem=f"selector {selector[:40]!r} is not a valid DNS label sequence")
    to_org = org_domain or psl_organizational_domain
    name = f"{selector}._bimi.{domain}"
    status, record, problem = await _ask(resolver, name)
    queried = [name]
    if status is BIMIStatus.NONE:
        org = to_org(domain)
        fallback = f"default._bimi.{org}"
        if fallback != name:
            queried.append(fallback)
            status, record, problem = await _ask(resolver, fallback)
            if status is not BIMIStatus.NONE:
                return BIMILookup(domain=org, selector="default", status=status, name=fallback,
                                  record=record, problem=problem, queried=tuple(queried))
    return BIMILookup(domain=domain, selector=selector, status=status,
                      name=name if status is not BIMIStatus.NONE else None, record=record,
                      problem=problem, queried=tuple(queried))


def dmarc_allows_bimi(record: DMARCRecord | None, *, subdomain: bool = False
                      ) -> tuple[bool, str]:
    """Whether a DMARC record meets BIMI's prerequisite; returns (ok, reason).

    ``subdomain`` True when the record applies to the Author Domain as its Organizational
    Domain's record (the ``sp=`` policy applies then, RFC 7489 §6.3)."""
    if record is None:
        return False, "no DMARC record: BIMI needs p=quarantine or p=reject"
    policy = record.p
    if subdomain and record.sp is not None:
        policy = record.sp
    if policy is None:
        return False, "the DMARC record has no valid policy"
    if policy is Policy.NONE:
        which = "sp=none" if subdomain and record.sp is not None else "p=none"
        return False, f"DMARC {which}: BIMI needs quarantine or reject"
    if record.pct != 100:
        return False, f"DMARC pct={record.pct}: BIMI needs the policy applied to all mail"
    if not subdomain and record.sp is Policy.NONE:
        return True, (f"DMARC p={policy.value} qualifies (but sp=none disqualifies "
                      "subdomains)")
    return True, f"DMARC p={policy.value} qualifies"
