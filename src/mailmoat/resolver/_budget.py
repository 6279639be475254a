"""A per-evaluation query budget around any resolver (layer L1, pure).

SECURITY: a policy evaluation driven by untrusted DNS data (an SPF record's includes, MX and PTR
fan-out, DKIM keys of many signatures) must not make us send unbounded questions. RFC 7208
§4.6.4 bounds SPF by *terms* (10 DNS-querying terms, 10 MX/PTR names each); this wrapper is the
safety net under any such rule: once ``max_queries`` questions were asked through it, every
further question raises :class:`QueryBudgetExceeded` without reaching the inner resolver.
"""

from __future__ import annotations

from mailmoat.errors import DNSPermanentError
from mailmoat.resolver._types import Answer, Resolver, RRType

__all__ = ["BudgetedResolver", "QueryBudgetExceeded"]


class QueryBudgetExceeded(DNSPermanentError):
    """The evaluation asked more questions than its budget allows."""

    def __init__(self, max_queries: int) -> None:
        super().__init__(f"DNS query budget of {max_queries} questions exhausted")
        self.max_queries = max_queries


class BudgetedResolver:
    """Forward at most ``max_queries`` questions to ``inner``; make one per evaluation.

    Every call counts (cached answers too: the budget bounds the *work an input can cause*,
    not the packets).
    """

    __slots__ = ("_inner", "max_queries", "used")

    def __init__(self, inner: Resolver, max_queries: int) -> None:
        if max_queries < 0:
            raise ValueError("max_queries must be >= 0")
        self._inner = inner
        self.max_queries = max_queries
        self.used = 0

    @property
    def remaining(self) -> int:
        return self.max_queries - self.used

    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        if self.used >= self.max_queries:
            raise QueryBudgetExceeded(self.max_queries)
        self.used += 1
        return await self._inner.resolve(name, rrtype)
