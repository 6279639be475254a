"""DMARC outcomes as values (RFC 7489 §11.2 / RFC 8601 §2.7.6 result names)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailmoat.auth.dmarc._record import Alignment, DMARCRecord, Policy

__all__ = [
    "AuthorExistence",
    "DMARCResult",
    "DMARCVerdict",
    "DiscoveryMode",
    "Disposition",
    "IdentifierCheck",
    "LookupStatus",
    "PolicyLookup",
]


class DMARCVerdict(enum.StrEnum):
    """RFC 7489 §11.2 (registered for the ``dmarc`` method in RFC 8601)."""

    #: "A DMARC policy record was published for the aligned identifier, and at least one of
    #: the authentication mechanisms passed."
    PASS = "pass"  # noqa: S105 - a result name, not a password
    #: "...and none of the authentication mechanisms passed."
    FAIL = "fail"
    #: "No DMARC policy record was published for the aligned identifier, or no aligned
    #: identifier could be extracted."
    NONE = "none"
    #: "A temporary error occurred during DMARC evaluation."
    TEMPERROR = "temperror"
    #: "A permanent error occurred during DMARC evaluation, such as encountering a
    #: syntactically incorrect DMARC record."
    PERMERROR = "permerror"


class Disposition(enum.StrEnum):
    """What the receiver is asked to do with the message (RFC 7489 §6.6.4, §7.2 disposition)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class DiscoveryMode(enum.StrEnum):
    """How the Organizational Domain is found and which rules apply.

    ``psl``: RFC 7489 (§3.2 Organizational Domain from the Public Suffix List, §6.6.3 policy
    discovery, ``pct`` applies, ``t``/``psd`` are unknown tags). ``tree-walk``: RFC 9989
    (§4.10 DNS Tree Walk, ``psd`` and ``t`` apply, ``pct`` is historic and ignored).
    ``np`` (RFC 9091, then RFC 9989) applies in both.
    """

    PSL = "psl"
    TREE_WALK = "tree-walk"


class LookupStatus(enum.StrEnum):
    """How policy discovery ended."""

    FOUND = "found"
    NONE = "none"  # no record: DMARC does not apply
    MULTIPLE = "multiple"  # RFC 7489 §6.6.3 step 5: several records, discovery terminates
    TEMPERROR = "temperror"


class AuthorExistence(enum.StrEnum):
    """Whether the Author Domain exists (RFC 9989 §3.2.13: NXDOMAIN means it does not)."""

    EXISTS = "exists"
    NXDOMAIN = "nxdomain"
    UNKNOWN = "unknown"  # not asked, or the question failed


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyLookup:
    """Everything DNS told us, for :func:`~mailmoat.auth.dmarc.evaluate` (pure).

    ``policy_domain`` is where ``record`` was found; ``org_domain`` is the Author Domain's
    Organizational Domain; ``org_domains`` maps other domains (SPF / DKIM identifiers) to
    theirs, as found by Tree Walks (RFC 9989 §4.10.2) — in ``psl`` mode missing entries are
    computed from the Public Suffix List; ``org_domain_failures`` names identifiers whose walk
    hit a temporary DNS failure. ``queries`` lists the questions asked (``"TXT name"``), in
    order.
    """

    from_domain: str
    mode: DiscoveryMode
    status: LookupStatus
    record: DMARCRecord | None = None
    policy_domain: str | None = None
    org_domain: str | None = None
    author_exists: AuthorExistence = AuthorExistence.UNKNOWN
    org_domains: Mapping[str, str] = field(default_factory=dict)
    org_domain_failures: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()
    problem: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentifierCheck:
    """One Authenticated Identifier candidate and whether it aligned with the Author Domain.

    ``method`` is ``spf`` or ``dkim``; ``result`` the underlying mechanism's result; only a
    ``pass`` can align (RFC 7489 §3.1). ``selector`` is DKIM's ``s=``.
    """

    method: str
    domain: str
    result: str
    aligned: bool
    mode: Alignment
    selector: str | None = None
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DMARCResult:
    """The outcome of one DMARC evaluation.

    ``policy`` is the Domain Owner's requested policy for this message (from ``p``, ``sp`` or
    ``np``, named by ``policy_tag``), and ``disposition`` what the receiver is asked to do after
    ``pct`` sampling (RFC 7489 §6.6.4; ``sampled_out``) and ``t=y`` testing (RFC 9989 §4.7;
    ``testing``) lowered it. A ``pass``, ``none``, ``temperror`` or ``permerror`` always has
    disposition ``none``: the receiver decides (RFC 9989 §5.3.6).
    """

    result: DMARCVerdict
    from_domain: str | None
    mode: DiscoveryMode = DiscoveryMode.TREE_WALK
    policy_domain: str | None = None
    org_domain: str | None = None
    record: DMARCRecord | None = None
    policy: Policy | None = None
    policy_tag: str | None = None
    disposition: Disposition = Disposition.NONE
    sampled_out: bool = False
    testing: bool = False
    spf_aligned: bool = False
    dkim_aligned: bool = False
    identifiers: tuple[IdentifierCheck, ...] = ()
    reasons: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()

    @property
    def record_text(self) -> str | None:
        return self.record.text if self.record else None

    @property
    def aligned_identifiers(self) -> tuple[IdentifierCheck, ...]:
        return tuple(i for i in self.identifiers if i.aligned)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``mailmoat verify --json``)."""
        return {
            "result": self.result.value,
            "from_domain": self.from_domain,
            "mode": self.mode.value,
            "policy_domain": self.policy_domain,
            "org_domain": self.org_domain,
            "record": self.record_text,
            "policy": self.policy.value if self.policy else None,
            "policy_tag": self.policy_tag,
            "disposition": self.disposition.value,
            "sampled_out": self.sampled_out,
            "testing": self.testing,
            "spf_aligned": self.spf_aligned,
            "dkim_aligned": self.dkim_aligned,
            "identifiers": [
                {
                    "method": i.method,
                    "domain": i.domain,
                    "result": i.result,
                    "aligned": i.aligned,
                    "mode": "strict" if i.mode is Alignment.STRICT else "relaxed",
                    "selector": i.selector,
                }
                for i in self.identifiers
            ],
            "reasons": list(self.reasons),
        }
