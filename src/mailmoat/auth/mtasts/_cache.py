"""The MTA-STS policy cache model (RFC 8461 §5.1, §10.2): pure logic, injected clock.

A cached entry is a policy, the ``id`` of the TXT record it was fetched under, and when it was
fetched; it expires ``max_age`` seconds later (§3.2). What to do for a delivery
(:func:`plan`):

* a valid TXT record whose ``id`` equals the cached entry's, entry not expired: use the cache;
* a valid TXT record with another ``id`` (or nothing cached, or expired): fetch the policy
  (§3.1 id: "senders can determine when the policy has been updated by comparing to the "id"
  of a previously seen policy");
* no usable TXT record (none, several, invalid, DNS failure): §5.1 "if no "live" policy can be
  discovered via DNS or fetched via HTTPS, but a valid (non-expired) policy exists in the
  sender's cache, the sender MUST apply that cached policy"; else no policy.

After a fetch, :func:`after_fetch` gives the entry to keep: the new policy, or, if the fetch
failed, the still-valid old one (§3.3: "If a valid TXT record is found but no policy can be
fetched via HTTPS (for any reason), and there is no valid (non-expired) previously cached
policy, senders MUST continue with delivery as though the domain has not implemented
MTA-STS.").

SECURITY: cache entries read back from storage are untrusted input: :meth:`CachedPolicy.from_dict`
re-parses the policy text with :func:`parse_policy` (same bounds) and checks every field.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mailmoat import limits
from mailmoat.auth.mtasts._policy import Policy, parse_policy
from mailmoat.auth.mtasts._record import _ID, RecordLookup, RecordStatus
from mailmoat.clock import Clock
from mailmoat.errors import ParseError

__all__ = ["CachedPolicy", "FetchPlan", "PolicyCache", "after_fetch", "plan"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedPolicy:
    """One cached policy: ``policy`` fetched under TXT ``policy_id`` at ``fetched_at``."""

    domain: str
    policy: Policy
    policy_id: str
    fetched_at: float

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.policy.max_age

    def fresh(self, now: float) -> bool:
        """Not expired (§3.2 max_age: "Max lifetime of the policy")."""
        return now < self.expires_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "id": self.policy_id,
            "fetched_at": self.fetched_at,
            "policy": self.policy.as_text(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CachedPolicy:
        """Read back :meth:`as_dict` output; raises :class:`ParseError` on anything odd."""
        domain, policy_id = data.get("domain"), data.get("id")
        fetched_at, text = data.get("fetched_at"), data.get("policy")
        if not (isinstance(domain, str) and 0 < len(domain) <= limits.DNS_NAME_MAX):
            raise ParseError("cache entry: bad domain")
        if not (isinstance(policy_id, str) and _ID.fullmatch(policy_id)):
            raise ParseError("cache entry: bad id")
        if not isinstance(fetched_at, int | float) or isinstance(fetched_at, bool):
            raise ParseError("cache entry: bad fetched_at")
        if not isinstance(text, str):
            raise ParseError("cache entry: bad policy")
        policy = parse_policy(text.encode("utf-8"))
        return cls(domain=domain.lower(), policy=policy, policy_id=policy_id,
                   fetched_at=float(fetched_at))


class FetchPlan(enum.StrEnum):
    USE_CACHED = "use-cached"
    FETCH = "fetch"
    NO_POLICY = "no-policy"


def plan(cached: CachedPolicy | None, lookup: RecordLookup, now: float) -> FetchPlan:
    """What to do for a delivery given the cache entry and the TXT record lookup."""
    fresh = cached is not None and cached.fresh(now)
    if lookup.status is RecordStatus.FOUND:
        if fresh and cached is not None and cached.policy_id == lookup.id:
            return FetchPlan.USE_CACHED
        return FetchPlan.FETCH
    return FetchPlan.USE_CACHED if fresh else FetchPlan.NO_POLICY


def after_fetch(
    cached: CachedPolicy | None,
    domain: str,
    record_id: str,
    fetched: Policy | None,
    now: float,
) -> CachedPolicy | None:
    """The entry to keep after a fetch under TXT ``record_id``: the new policy, or (fetch
    failed: ``fetched`` None) the old entry while it is still fresh, else nothing."""
    if fetched is not None:
        return CachedPolicy(domain=domain, policy=fetched, policy_id=record_id, fetched_at=now)
    if cached is not None and cached.fresh(now):
        return cached
    return None


class PolicyCache:
    """An in-memory LRU of :class:`CachedPolicy` per domain, timed by an injected clock.

    ``get`` returns entries even when expired (``plan`` decides); ``purge`` drops expired ones.
    """

    def __init__(self, clock: Clock, *, max_entries: int = limits.MTASTS_CACHE_MAX_ENTRIES
                 ) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedPolicy] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, domain: str) -> CachedPolicy | None:
        key = domain.lower().rstrip(".")
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, entry: CachedPolicy) -> None:
        key = entry.domain.lower().rstrip(".")
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, domain: str) -> None:
        self._entries.pop(domain.lower().rstrip("."), None)

    def purge(self) -> int:
        now = self.clock.now()
        stale = [k for k, v in self._entries.items() if not v.fresh(now)]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def entries(self) -> tuple[CachedPolicy, ...]:
        return tuple(self._entries.values())

    def plan(self, lookup: RecordLookup) -> FetchPlan:
        return plan(self.get(lookup.domain), lookup, self.clock.now())

    def update(self, lookup: RecordLookup, fetched: Policy | None) -> CachedPolicy | None:
        """Record a fetch made under ``lookup`` (FOUND) and return the entry in force."""
        if lookup.id is None:
            raise ValueError("update() needs a lookup that found a record")
        domain = lookup.domain.lower().rstrip(".")
        entry = after_fetch(self.get(domain), domain, lookup.id, fetched, self.clock.now())
        if entry is None:
            self.discard(domain)
        else:
            self.put(entry)
        return entry

    def in_force(self, lookup: RecordLookup) -> Policy | None:
        """The policy that applies without fetching (cached and fresh), if any."""
        entry = self.get(lookup.domain)
        if entry is not None and entry.fresh(self.clock.now()):
            return entry.policy
        return None
