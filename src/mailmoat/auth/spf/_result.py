"""SPF outcomes as values (RFC 7208 §2.6, §8)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from mailmoat import limits

__all__ = ["Identity", "RawStep", "SPFOptions", "SPFResult", "SPFVerdict", "TraceStep"]

#: One trace step as recorded during evaluation (cheap to build):
#: (depth, domain, kind, term, matched, queries as (type, name, count or outcome), note).
RawStep = tuple[int, str, str, str, bool | None, tuple[tuple[str, str, int | str], ...], str]


class SPFVerdict(enum.StrEnum):
    """RFC 7208 §2.6: the seven results of ``check_host()``."""

    PASS = "pass"  # noqa: S105 - not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Identity(enum.StrEnum):
    """RFC 7208 §2.3 / §2.4: which identity was checked."""

    HELO = "helo"
    MAILFROM = "mailfrom"


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceStep:
    """One step of an evaluation, for people reading why a result came out as it did.

    ``depth`` is the include/redirect nesting (0 for the checked domain); ``term`` is the
    record text (``kind == "record"``), a mechanism or a modifier; ``matched`` is None for
    steps that do not match (record fetch, exp); ``queries`` are the DNS questions asked for
    this step, each as ``"TYPE name: outcome"``.
    """

    depth: int
    domain: str
    kind: str
    term: str
    matched: bool | None
    queries: tuple[str, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "domain": self.domain,
            "kind": self.kind,
            "term": self.term,
            "matched": self.matched,
            "queries": list(self.queries),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SPFResult:
    """The outcome of one SPF check.

    ``explanation`` is the expanded ``exp=`` text (only on ``fail``, §6.2), else None.
    ``trace`` is built from ``steps`` (the compact form recorded while evaluating) when read,
    so a caller that never looks at it does not pay for it.
    ``lookups`` counts the DNS-querying terms (§4.6.4, limit 10); ``void_lookups`` the
    queries that answered NXDOMAIN or no data (limit 2). ``mechanism`` is the top-level term
    that decided the result (None for the default result, none, and errors). ``problem``
    says what went wrong for temperror/permerror/none.
    """

    result: SPFVerdict
    domain: str
    identity: Identity
    explanation: str | None = None
    mechanism: str | None = None
    lookups: int = 0
    void_lookups: int = 0
    steps: tuple[RawStep, ...] = field(default=(), repr=False)
    problem: str | None = None

    @property
    def trace(self) -> tuple[TraceStep, ...]:
        """The evaluation trace: which record and term was evaluated, matched or not, and the
        DNS questions each step asked (``"TYPE name: outcome"``)."""
        return tuple(
            TraceStep(depth=depth, domain=domain, kind=kind, term=term, matched=matched,
                      queries=tuple(f"{t} {n}: {_outcome(o)}" for t, n, o in queries),
                      note=note)
            for depth, domain, kind, term, matched, queries, note in self.steps
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's ``--json``)."""
        return {
            "result": self.result.value,
            "explanation": self.explanation,
            "lookups": self.lookups,
            "void_lookups": self.void_lookups,
            "trace": [step.as_dict() for step in self.trace],
            "mechanism": self.mechanism,
            "domain": self.domain,
            "identity": self.identity.value,
            "problem": self.problem,
        }


def _outcome(outcome: int | str) -> str:
    return f"{outcome} record(s)" if isinstance(outcome, int) else outcome


@dataclass(frozen=True, slots=True, kw_only=True)
class SPFOptions:
    """Bounds and environment of an evaluation; defaults are the RFC's.

    ``timeout`` is the overall deadline in seconds (§4.6.4: "MTAs or other processors
    SHOULD impose a limit on the maximum amount of elapsed time to evaluate check_host().
    Such a limit SHOULD allow at least 20 seconds. If such a limit is exceeded, the result
    of authorization SHOULD be "temperror"."). None disables it.
    ``receiver`` is the ``%{r}`` macro (§7.2: the checking host's domain; "unknown" if not
    known). ``trace`` False skips building the trace (hot paths).
    """

    max_dns_mechanisms: int = limits.SPF_MAX_DNS_MECHANISMS
    max_void_lookups: int = limits.SPF_MAX_VOID_LOOKUPS
    max_mx_addresses: int = limits.SPF_MAX_MX_ADDRESSES
    max_ptr_names: int = limits.SPF_MAX_PTR_NAMES
    timeout: float | None = limits.SPF_EVALUATION_TIMEOUT
    receiver: str = "unknown"
    trace: bool = True
