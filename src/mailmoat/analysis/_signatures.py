"""DKIM-Signature and ARC header summaries for header analysis (layer L2).

Only the tags a person reads (who signed, with which selector and algorithm; which ARC
instances exist and what chain validation each sealer recorded). Verification is ``auth/``'s.

RFC 6376 §3.2 (tag=value lists, also used by ARC, RFC 8617 §4.1)::

    tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
    tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
    tag-name  =  ALPHA *ALNUMPUNC
    tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]

"Tags with duplicate names MUST NOT occur within a single tag-list; if a tag name does occur
more than once, the entire tag-list is invalid."

SECURITY: values are untrusted and unverified: a summary says what a signature *claims*. Each
field is bounded by ``limits.ANALYSIS_FIELD_MAX`` and at most ``limits.ANALYSIS_MAX_TAGS``
tags are read; splitting is linear (``bytes.split``). ARC instances beyond
``limits.ARC_MAX_INSTANCES`` are not listed (RFC 8617 §5.1.1.1: more than 50 is a failed
chain).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from mailmoat.limits import ANALYSIS_FIELD_MAX, ANALYSIS_MAX_TAGS, ARC_MAX_INSTANCES
from mailmoat.message import HeaderField, Headers, unfold

__all__ = ["ArcInstance", "ArcSummary", "DkimSummary", "parse_tag_list", "summarise_arc",
           "summarise_dkim"]

_TAG_NAME: Final = re.compile(rb"[A-Za-z][A-Za-z0-9_]*")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _text(raw: bytes) -> str:
    return _CONTROL.sub("?", raw.decode("utf-8", "replace"))


def parse_tag_list(value: bytes) -> tuple[dict[str, str], str | None]:
    """``(tags, problem)``; tag names lower-cased, values with all white space removed."""
    if len(value) > ANALYSIS_FIELD_MAX:
        return {}, f"longer than {ANALYSIS_FIELD_MAX} octets: not read"
    tags: dict[str, str] = {}
    problem = None
    for spec in unfold(value).split(b";", ANALYSIS_MAX_TAGS)[:ANALYSIS_MAX_TAGS]:
        if not spec.strip():
            continue
        name, eq, tag_value = spec.partition(b"=")
        name = name.strip()
        if not eq or not _TAG_NAME.fullmatch(name):
            problem = problem or f"malformed tag-spec {_text(spec.strip()[:40])!r}"
            continue
        key = name.decode("ascii").lower()
        if key in tags:
            problem = problem or f"duplicate tag {key}= (RFC 6376 §3.2: the tag-list is invalid)"
        tags.setdefault(key, _text(b"".join(tag_value.split())))
    return tags, problem


@dataclass(frozen=True, slots=True, kw_only=True)
class DkimSummary:
    """What one DKIM-Signature claims (not verified here)."""

    domain: str | None  # d=
    selector: str | None  # s=
    algorithm: str | None  # a=
    identity: str | None = None  # i=
    problem: str | None = None


def summarise_dkim(headers: Headers | Iterable[HeaderField]) -> tuple[DkimSummary, ...]:
    """Every DKIM-Signature field's d=, s=, a=, i=, top first.

    ``headers`` is a header section, or its DKIM-Signature fields already picked out.
    """
    fields = headers.get_all(b"dkim-signature") if isinstance(headers, Headers) else headers
    out = []
    for f in fields:
        tags, problem = parse_tag_list(f.value)
        out.append(
            DkimSummary(
                domain=tags.get("d"), selector=tags.get("s"), algorithm=tags.get("a"),
                identity=tags.get("i"), problem=problem,
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArcInstance:
    """One ARC set (RFC 8617 §4.2.1: i= ties ARC-Seal, ARC-Message-Signature and AAR)."""

    instance: int
    cv: str | None  # ARC-Seal cv= (none / pass / fail)
    domain: str | None  # ARC-Seal d=
    selector: str | None
    has_seal: bool
    has_message_signature: bool
    has_results: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ArcSummary:
    """The ARC sets of a message and what is wrong with their numbering."""

    instances: tuple[ArcInstance, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def latest_cv(self) -> str | None:
        """cv= of the highest instance: what the last sealer recorded for the chain."""
        return self.instances[-1].cv if self.instances else None


def _instance_of(value: bytes) -> int | None:
    tags, _ = parse_tag_list(value)
    text = tags.get("i", "")
    return int(text) if text.isdigit() and len(text) <= 4 else None


def summarise_arc(headers: Headers) -> ArcSummary:
    """ARC-Seal / ARC-Message-Signature / ARC-Authentication-Results grouped by i=."""
    groups = headers.grouped(b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
    return summarise_arc_fields(
        [f for _, f in groups[b"arc-seal"]],
        [f for _, f in groups[b"arc-message-signature"]],
        [f for _, f in groups[b"arc-authentication-results"]],
    )


def summarise_arc_fields(
    seal_fields: Sequence[HeaderField],
    ams_fields: Sequence[HeaderField],
    aar_fields: Sequence[HeaderField],
) -> ArcSummary:
    """:func:`summarise_arc` over fields already picked out (top first)."""
    seals: dict[int, dict[str, str]] = {}
    ams: set[int] = set()
    aar: set[int] = set()
    problems: list[str] = []
    for f in seal_fields:
        tags, problem = parse_tag_list(f.value)
        text = tags.get("i", "")
        if not (text.isdigit() and len(text) <= 4):
            problems.append("ARC-Seal without a valid i= tag")
            continue
        number = int(text)
        if number in seals:
            problems.append(f"more than one ARC-Seal with i={number}")
        seals.setdefault(number, tags)
        if problem:
            problems.append(f"ARC-Seal i={number}: {problem}")
    for f in ams_fields:
        instance = _instance_of(f.value)
        if instance is not None:
            ams.add(instance)
    for f in aar_fields:
        head = unfold(f.value).split(b";", 1)[0].strip()
        if head[:2].lower() == b"i=" and head[2:].isdigit() and len(head) <= 6:
            aar.add(int(head[2:]))
    numbers = sorted(seals.keys() | ams | aar)
    if len(numbers) > ARC_MAX_INSTANCES:
        problems.append(f"more than {ARC_MAX_INSTANCES} ARC sets (RFC 8617 §5.1.1.1)")
        numbers = numbers[:ARC_MAX_INSTANCES]
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        problems.append("ARC instance numbers are not 1..N without gaps (RFC 8617 §5.1.1)")
    instances = tuple(
        ArcInstance(
            instance=n,
            cv=seals.get(n, {}).get("cv"),
            domain=seals.get(n, {}).get("d"),
            selector=seals.get(n, {}).get("s"),
            has_seal=n in seals,
            has_message_signature=n in ams,
            has_results=n in aar,
        )
        for n in numbers
    )
    for inst in instances:
        if not (inst.has_seal and inst.has_message_signature and inst.has_results):
            problems.append(f"ARC set i={inst.instance} is incomplete")
    return ArcSummary(instances=instances, problems=tuple(problems))
