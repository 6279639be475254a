"""DMARC policy discovery over the injected resolver, and the async entry points.

RFC 7489 §6.6.3 (``psl`` mode):

    1.  Mail Receivers MUST query the DNS for a DMARC TXT record at the DNS domain matching
        the one found in the RFC5322.From domain in the message.
    2.  Records that do not start with a "v=" tag that identifies the current version of
        DMARC are discarded.
    3.  If the set is now empty, the Mail Receiver MUST query the DNS for a DMARC TXT record
        at the DNS domain matching the Organizational Domain in place of the RFC5322.From
        domain in the message (if different).
    5.  If the remaining set contains multiple records or no records, policy discovery
        terminates and DMARC processing is not applied to this message.

RFC 9989 §4.10-4.10.2 (``tree-walk`` mode): ask ``_dmarc.<Author Domain>``, then walk towards
the root (at most 8 queries, long names skip to 7 labels); "If multiple DMARC Policy Records
are returned for a single target, they are all discarded. If a single record remains and it
contains a "psd=n" or "psd=y" tag, stop." The record applied is the Author Domain's, else the
Organizational Domain's, else the Public Suffix Domain's; Organizational Domains of SPF/DKIM
identifiers are found by their own walks (§4.10.2) when relaxed alignment needs them.

DNS failures: a temporary failure while discovering the policy gives ``temperror`` (RFC 9989
§5.3.6: "the message cannot be considered to pass or fail"); a name that cannot be asked or a
permanent failure (CNAME loop) counts as "no record at that name".

SECURITY: all DNS data is untrusted. Every TXT answer is bounded (``DMARC_MAX_TXT_RECORDS``
records examined, ``DMARC_RECORD_MAX`` octets each, in :mod:`._record`); one walk asks at most
``DMARC_TREE_WALK_MAX_QUERIES`` names, at most ``DMARC_MAX_ALIGNMENT_WALKS`` identifier walks
are made, and answers are cached per evaluation so shared parents are asked once.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from mailmoat import limits
from mailmoat.auth.dkim import DKIMResult, DKIMResultCode
from mailmoat.auth.dmarc._author import AuthorDomain, AuthorProblem, author_domain
from mailmoat.auth.dmarc._evaluate import RandomSource, evaluate
from mailmoat.auth.dmarc._orgdomain import (
    org_domain_from_walk,
    psl_organizational_domain,
    tree_walk_names,
)
from mailmoat.auth.dmarc._record import (
    Alignment,
    DMARCRecord,
    PSDFlag,
    is_dmarc_record,
    parse_record,
)
from mailmoat.auth.dmarc._result import (
    AuthorExistence,
    DiscoveryMode,
    Disposition,
    DMARCResult,
    DMARCVerdict,
    LookupStatus,
    PolicyLookup,
)
from mailmoat.auth.spf import SPFResult, SPFVerdict
from mailmoat.errors import DNSPermanentError, DNSTemporaryError, ParseError
from mailmoat.message import Headers
from mailmoat.resolver import TXT, NoData, NXDomain, Resolver, RRType

__all__ = ["check_author", "check_dmarc", "check_message", "discover_policy"]


class _Kind(enum.Enum):
    ONE = "one"
    NONE = "none"
    MULTIPLE = "multiple"
    TEMPERROR = "temperror"


@dataclass(frozen=True, slots=True)
class _Fetch:
    kind: _Kind
    record: DMARCRecord | None = None
    note: str = ""


_NO_RECORD: Final = _Fetch(_Kind.NONE)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What one TXT answer holds, whatever name it was asked for: the outcome itself
    (``fetch``) or, when the outcome's note names the question, the parts of that note."""

    kind: _Kind
    fetch: _Fetch | None = None
    count: int = 0
    error: str = ""


#: Parsed TXT answers by their record texts (a warm resolver gives every message the same
#: few records: each is checked and parsed once per process, not once per message). Values
#: are immutable and a pure function of the key; bounded in entries (emptied when full) and
#: in the octets of each key (larger answers are parsed every time).
_PARSED: dict[tuple[bytes, ...], _Parsed] = {}
_PARSED_MAX_ENTRIES: Final = 512
_PARSED_MAX_KEY_OCTETS: Final = 2048


def _classify(texts: tuple[bytes, ...]) -> _Parsed:
    """RFC 7489 §6.6.3 steps 2 and 5 over one answer's TXT texts (memoised, see _PARSED)."""
    hit = _PARSED.get(texts)
    if hit is not None:
        return hit
    dmarc = [t for t in texts if is_dmarc_record(t)]
    parsed: _Parsed
    if len(dmarc) > 1:
        parsed = _Parsed(_Kind.MULTIPLE, count=len(dmarc))
    elif not dmarc:
        parsed = _Parsed(_Kind.NONE, fetch=_NO_RECORD)
    else:
        try:
            parsed = _Parsed(_Kind.ONE, fetch=_Fetch(_Kind.ONE, record=parse_record(dmarc[0])))
        except ParseError as exc:
            parsed = _Parsed(_Kind.NONE, error=str(exc))
    if sum(map(len, texts)) <= _PARSED_MAX_KEY_OCTETS:
        if len(_PARSED) >= _PARSED_MAX_ENTRIES:
            _PARSED.clear()  # (atomic; a full table is rare: start again)
        _PARSED[texts] = parsed
    return parsed


@dataclass(slots=True)
class _Session:
    """One evaluation's DNS state: the resolver, a cache by domain, the names asked."""

    resolver: Resolver
    cache: dict[str, _Fetch] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    async def fetch(self, domain: str) -> _Fetch:
        cached = self.cache.get(domain)
        if cached is not None:
            return cached
        result = await self._ask(domain)
        self.cache[domain] = result
        if result.note and result.kind is not _Kind.TEMPERROR:
            self.notes.append(result.note)
        return result

    async def _ask(self, domain: str) -> _Fetch:
        name = f"_dmarc.{domain}"
        self.queries.append(f"TXT {name}")
        try:
            answer = await self.resolver.resolve(name, RRType.TXT)
        except (NXDomain, NoData):
            return _NO_RECORD
        except DNSTemporaryError as exc:
            return _Fetch(_Kind.TEMPERROR, note=f"{name} TXT: {exc}")
        except DNSPermanentError as exc:
            return _Fetch(_Kind.NONE, note=f"{name} TXT: {exc} (treated as no record)")
        texts = tuple(
            r.joined for r in answer.records[: limits.DMARC_MAX_TXT_RECORDS] if isinstance(r, TXT)
        )
        parsed = _classify(texts)
        if parsed.fetch is not None:
            return parsed.fetch
        if parsed.kind is _Kind.MULTIPLE:
            return _Fetch(_Kind.MULTIPLE, note=f"{parsed.count} DMARC records at {name}")
        return _Fetch(_Kind.NONE, note=f"{name}: {parsed.error} (treated as no record)")

    async def exists(self, domain: str) -> AuthorExistence:
        """RFC 9989 §3.2.13: NXDOMAIN (RFC 8020) means the name and everything below is gone."""
        self.queries.append(f"A {domain}")
        try:
            await self.resolver.resolve(domain, RRType.A)
        except NXDomain:
            return AuthorExistence.NXDOMAIN
        except NoData:
            return AuthorExistence.EXISTS
        except (DNSTemporaryError, DNSPermanentError):
            return AuthorExistence.UNKNOWN
        return AuthorExistence.EXISTS

    async def walk(
        self, start: str, *, stop_at_start: bool = False
    ) -> tuple[list[tuple[str, DMARCRecord]], str | None]:
        """A DNS Tree Walk (RFC 9989 §4.10) from ``start``: the single valid records found,
        longest name first, and the temporary failure that cut it short (if any)."""
        found: list[tuple[str, DMARCRecord]] = []
        for index, domain in enumerate(tree_walk_names(start)):
            got = await self.fetch(domain)
            if got.kind is _Kind.TEMPERROR:
                return found, got.note
            if got.kind is _Kind.ONE and got.record is not None:
                found.append((domain, got.record))
                if got.record.psd in (PSDFlag.YES, PSDFlag.NO):
                    break
                if index == 0 and stop_at_start:
                    break
        return found, None


def _norm(domain: str) -> str:
    return domain.rstrip(".").lower()


@dataclass(slots=True)
class _Draft:
    """The policy-discovery part of a :class:`PolicyLookup`, filled in place (one frozen
    PolicyLookup is built at the end instead of a copy per step)."""

    status: LookupStatus
    org_domain: str | None
    record: DMARCRecord | None = None
    policy_domain: str | None = None
    problem: str | None = None


async def _discover_psl(session: _Session, author: str) -> _Draft:
    org = psl_organizational_domain(author)
    draft = _Draft(status=LookupStatus.NONE, org_domain=org)
    for domain in (author, org) if org != author else (author,):
        got = await session.fetch(domain)
        if got.kind is _Kind.TEMPERROR:
            draft.status, draft.problem = LookupStatus.TEMPERROR, got.note
            return draft
        if got.kind is _Kind.MULTIPLE:
            draft.status = LookupStatus.MULTIPLE
            draft.problem = got.note + ": policy discovery terminates (RFC 7489 §6.6.3)"
            return draft
        if got.kind is _Kind.ONE:
            draft.status, draft.record, draft.policy_domain = LookupStatus.FOUND, got.record, domain
            return draft
    return draft


async def _discover_tree(session: _Session, author: str) -> _Draft:
    draft = _Draft(status=LookupStatus.NONE, org_domain=author)
    first = await session.fetch(author)
    if first.kind is _Kind.TEMPERROR:
        draft.status, draft.problem = LookupStatus.TEMPERROR, first.note
        return draft
    own = first.record if first.kind is _Kind.ONE else None
    # RFC 9989 §4.10.2: with strict alignment for both mechanisms, the Organizational Domain is
    # not needed once the Author Domain's own record is known.
    strict = own is not None and own.adkim is Alignment.STRICT and own.aspf is Alignment.STRICT
    found, failure = await session.walk(author, stop_at_start=strict)
    if failure is not None:
        draft.status, draft.problem = LookupStatus.TEMPERROR, failure
        return draft
    org = draft.org_domain = org_domain_from_walk(author, found)
    if own is not None:
        draft.status, draft.record, draft.policy_domain = LookupStatus.FOUND, own, author
        return draft
    by_domain = dict(found)
    if org in by_domain:
        draft.status, draft.record, draft.policy_domain = (
            LookupStatus.FOUND, by_domain[org], org)
        return draft
    psd = [(d, r) for d, r in found if r.psd is PSDFlag.YES]
    if psd:
        domain, record = psd[-1]
        draft.status, draft.record, draft.policy_domain = LookupStatus.FOUND, record, domain
    return draft


async def discover_policy(
    resolver: Resolver,
    from_domain: str,
    *,
    mode: DiscoveryMode = DiscoveryMode.TREE_WALK,
    identifiers: Sequence[str] = (),
) -> PolicyLookup:
    """Find the policy record for ``from_domain`` (and, in tree-walk mode, the Organizational
    Domains of ``identifiers`` for relaxed alignment). Never raises for DNS trouble."""
    session = _Session(resolver)
    return await _discover(session, _norm(from_domain), mode, identifiers)


async def _discover(
    session: _Session, author: str, mode: DiscoveryMode, identifiers: Sequence[str]
) -> PolicyLookup:
    if mode is DiscoveryMode.PSL:
        draft = await _discover_psl(session, author)
    else:
        mode = DiscoveryMode.TREE_WALK
        draft = await _discover_tree(session, author)
    problem = draft.problem
    if problem is None and session.notes:
        problem = "; ".join(session.notes)
    record = draft.record
    author_exists = AuthorExistence.UNKNOWN
    orgs: dict[str, str] = {}
    failures: list[str] = []
    if draft.status is LookupStatus.FOUND and record is not None:
        if (
            record.np is not None
            and draft.policy_domain is not None
            and _norm(draft.policy_domain) != author
        ):
            author_exists = await session.exists(author)
        if mode is DiscoveryMode.TREE_WALK:
            for domain in dict.fromkeys(_norm(d) for d in identifiers):
                if domain == author or domain in orgs:
                    continue
                if len(orgs) + len(failures) >= limits.DMARC_MAX_ALIGNMENT_WALKS:
                    break
                found, failure = await session.walk(domain)
                if failure is not None:
                    failures.append(domain)
                else:
                    orgs[domain] = org_domain_from_walk(domain, found)
    return PolicyLookup(
        from_domain=author, mode=mode, status=draft.status, record=record,
        policy_domain=draft.policy_domain, org_domain=draft.org_domain,
        author_exists=author_exists, org_domains=orgs, org_domain_failures=tuple(failures),
        queries=tuple(session.queries), problem=problem,
    )


def _alignment_candidates(spf: SPFResult | None, dkim: Sequence[DKIMResult]) -> list[str]:
    """Passing identifiers: the only ones whose Organizational Domain matters (§4.10.2)."""
    out: list[str] = []
    if spf is not None and spf.result is SPFVerdict.PASS and spf.domain:
        out.append(spf.domain)
    out.extend(s.domain for s in dkim if s.result is DKIMResultCode.PASS and s.domain)
    return out


async def check_dmarc(
    resolver: Resolver,
    from_domain: str,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    *,
    mode: DiscoveryMode = DiscoveryMode.TREE_WALK,
    random: RandomSource | None = None,
) -> DMARCResult:
    """DMARC for one Author Domain: discovery through ``resolver``, then :func:`evaluate`."""
    author = _norm(from_domain)
    session = _Session(resolver)
    lookup = await _discover(session, author, mode, _alignment_candidates(spf, dkim))
    return evaluate(author, spf, dkim, lookup, random=random)


_SEVERITY = {Disposition.REJECT: 2, Disposition.QUARANTINE: 1, Disposition.NONE: 0}


def _strictest(results: Sequence[DMARCResult]) -> DMARCResult:
    """RFC 7489 §6.6.1: "apply the most strict policy selected among the checks that fail"."""
    fails = [r for r in results if r.result is DMARCVerdict.FAIL]
    if fails:
        return max(fails, key=lambda r: _SEVERITY[r.disposition])
    for verdict in (DMARCVerdict.TEMPERROR, DMARCVerdict.PERMERROR, DMARCVerdict.PASS):
        for result in results:
            if result.result is verdict:
                return result
    return results[0]


async def check_message(
    resolver: Resolver,
    headers: Headers,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    *,
    mode: DiscoveryMode = DiscoveryMode.TREE_WALK,
    random: RandomSource | None = None,
) -> DMARCResult:
    """DMARC for a message: the Author Domain from its From field (see
    :mod:`._author` for the outcomes of a missing, repeated or unreadable From)."""
    author = author_domain(headers)
    return await check_author(resolver, author, spf, dkim, mode=mode, random=random)


async def check_author(
    resolver: Resolver,
    author: AuthorDomain,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    *,
    mode: DiscoveryMode = DiscoveryMode.TREE_WALK,
    random: RandomSource | None = None,
) -> DMARCResult:
    """DMARC for an already extracted :class:`AuthorDomain`."""
    if author.problem is AuthorProblem.NO_FROM:
        return DMARCResult(result=DMARCVerdict.NONE, from_domain=None, mode=mode,
                           reasons=(f"{author.problem.value}: no Author Domain to check "
                                    "(RFC 7489 §11.2)",))
    if author.problem is not None:
        detail = f" ({author.detail})" if author.detail else ""
        return DMARCResult(
            result=DMARCVerdict.PERMERROR, from_domain=None, mode=mode,
            reasons=(f"{author.problem.value}{detail}: DMARC validation is not possible "
                     "(RFC 9989 §4.4, §5.3.1)",),
        )
    results = [
        await check_dmarc(resolver, domain, spf, dkim, mode=mode, random=random)
        for domain in author.domains
    ]
    if len(results) == 1:
        return results[0]
    chosen = _strictest(results)
    note = (f"From names {len(author.domains)} domains ({', '.join(author.domains)}): each "
            "was checked and the strictest failing result applies (RFC 7489 §6.6.1)")
    return replace(chosen, reasons=(*chosen.reasons, note))
