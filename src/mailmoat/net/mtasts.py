"""MTA-STS over the network (layer L3): fetch policies over HTTPS and keep them across
restarts.

* :func:`policy_url` / :func:`fetch_policy`: RFC 8461 §3.3 ``https://mta-sts.<domain>/
  .well-known/mta-sts.txt``, through :class:`~mailmoat.net.fetch.Fetcher` (no redirects,
  ``text/plain``, ``limits.MTASTS_POLICY_MAX`` octets). The outcome is a value
  (:class:`PolicyFetch`), never an exception.
* :class:`PersistentPolicyCache`: the pure :class:`~mailmoat.auth.mtasts.PolicyCache` saved to
  one JSON file after every change (temporary file, fsync, atomic rename), loaded at start-up
  (issue #7: "cache persisted across restarts"). A damaged file or entry is skipped, never
  trusted: every entry's policy text is parsed again.
* :class:`MTASTSClient`: the §5.1 flow for one domain: TXT lookup, cache plan, fetch if
  needed, cache update, and the policy in force (:class:`PolicyOutcome`).

SECURITY: the cache file is written by us but read as untrusted input (size-capped by
``limits.MTASTS_CACHE_FILE_MAX``, JSON, each entry re-validated). Policy bodies are bounded
and parsed by :func:`mailmoat.auth.mtasts.parse_policy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from mailmoat import limits
from mailmoat.auth.mtasts import (
    CachedPolicy,
    FetchPlan,
    Policy,
    PolicyCache,
    RecordLookup,
    RecordStatus,
    lookup_record,
    parse_policy,
)
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import ParseError
from mailmoat.net.fetch import Fetcher, FetchError
from mailmoat.resolver import Resolver

__all__ = [
    "MTASTSClient",
    "PersistentPolicyCache",
    "PolicyFetch",
    "PolicyOutcome",
    "fetch_policy",
    "policy_url",
]

log = logging.getLogger(__name__)

WELL_KNOWN_PATH: Final = "/.well-known/mta-sts.txt"
#: §3.2: "The [RFC7231] "Content-Type" media type for this resource MUST be "text/plain"."
POLICY_MEDIA_TYPES: Final = frozenset({"text/plain"})
CACHE_FORMAT: Final = 1


def policy_host(domain: str) -> str:
    """§3.3: "the Policy Host [...] mta-sts.<domain>"."""
    return f"mta-sts.{domain.lower().rstrip('.')}"


def policy_url(domain: str) -> str:
    """§3.3: "https://mta-sts.example.com/.well-known/mta-sts.txt"."""
    return f"https://{policy_host(domain)}{WELL_KNOWN_PATH}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyFetch:
    """One fetch: ``policy`` when it worked, else ``error`` (and ``error_kind``)."""

    url: str
    policy: Policy | None = None
    error: str | None = None
    error_kind: str | None = None
    body: bytes | None = None


async def fetch_policy(fetcher: Fetcher, domain: str) -> PolicyFetch:
    """Fetch and parse the policy of ``domain``; never raises for network or policy trouble."""
    url = policy_url(domain)
    try:
        result = await fetcher.get(url, max_bytes=limits.MTASTS_POLICY_MAX,
                                   content_types=POLICY_MEDIA_TYPES)
    except FetchError as exc:
        return PolicyFetch(url=url, error=str(exc), error_kind=exc.kind)
    try:
        policy = parse_policy(result.body)
    except ParseError as exc:
        return PolicyFetch(url=url, error=str(exc), error_kind="syntax", body=result.body)
    return PolicyFetch(url=url, policy=policy, body=result.body)


class PersistentPolicyCache(PolicyCache):
    """A :class:`PolicyCache` mirrored to a JSON file (loaded on creation, saved on change)."""

    def __init__(self, path: Path | str, clock: Clock = SYSTEM_CLOCK, *,
                 max_entries: int = limits.MTASTS_CACHE_MAX_ENTRIES) -> None:
        super().__init__(clock, max_entries=max_entries)
        self.path = Path(path)
        self.skipped = 0  # entries of the file that could not be used
        self._load()

    def _load(self) -> None:
        try:
            with self.path.open("rb") as handle:
                data = handle.read(limits.MTASTS_CACHE_FILE_MAX + 1)
        except FileNotFoundError:
            return
        if len(data) > limits.MTASTS_CACHE_FILE_MAX:
            log.warning("MTA-STS cache %s is larger than %d octets; ignored", self.path,
                        limits.MTASTS_CACHE_FILE_MAX)
            return
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            log.warning("MTA-STS cache %s is not valid JSON; starting empty", self.path)
            return
        entries = document.get("entries") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            log.warning("MTA-STS cache %s has no entry list; starting empty", self.path)
            return
        for item in entries[: self.max_entries]:
            try:
                if not isinstance(item, dict):
                    raise ParseError("not an object")
                PolicyCache.put(self, CachedPolicy.from_dict(item))
            except ParseError as exc:
                self.skipped += 1
                log.warning("MTA-STS cache %s: entry skipped (%s)", self.path, exc)

    def save(self) -> None:
        """Write the whole cache atomically: a temporary file in the same directory, fsync,
        rename over the old file, fsync of the directory."""
        document = {"format": CACHE_FORMAT,
                    "entries": [entry.as_dict() for entry in self.entries()]}
        data = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def put(self, entry: CachedPolicy) -> None:
        old = self.get(entry.domain)
        super().put(entry)
        if old != entry:
            self.save()

    def discard(self, domain: str) -> None:
        had = self.get(domain) is not None
        super().discard(domain)
        if had:
            self.save()

    def purge(self) -> int:
        dropped = super().purge()
        if dropped:
            self.save()
        return dropped


PolicySource = Literal["fetched", "cache", "none"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyOutcome:
    """The policy in force for a domain and how it was obtained.

    ``source``: ``fetched`` (just now), ``cache`` (the TXT id matched, or no live policy could
    be found and a fresh cached one applies), ``none`` (no policy applies). ``fetch`` is the
    fetch attempt when one was made; ``lookup`` the TXT record discovery.
    """

    domain: str
    policy: Policy | None
    source: PolicySource
    lookup: RecordLookup
    fetch: PolicyFetch | None = None
    cached: CachedPolicy | None = None


class MTASTSClient:
    """RFC 8461 §5.1 for a sending MTA: which policy applies to a recipient domain now."""

    def __init__(self, resolver: Resolver, fetcher: Fetcher, cache: PolicyCache) -> None:
        self.resolver = resolver
        self.fetcher = fetcher
        self.cache = cache
        self._inflight: dict[str, asyncio.Future[PolicyOutcome]] = {}

    async def policy_for(self, domain: str) -> PolicyOutcome:
        """The policy in force for ``domain``. Concurrent calls for one domain share one
        lookup and fetch (single flight), so a burst of deliveries causes one HTTPS GET."""
        domain = domain.lower().rstrip(".")
        pending = self._inflight.get(domain)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[PolicyOutcome] = asyncio.get_running_loop().create_future()
        self._inflight[domain] = future
        try:
            outcome = await self._policy_for(domain)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(outcome)
            return outcome
        finally:
            del self._inflight[domain]

    async def _policy_for(self, domain: str) -> PolicyOutcome:
        lookup = await lookup_record(self.resolver, domain)
        action = self.cache.plan(lookup)
        if action is FetchPlan.USE_CACHED:
            entry = self.cache.get(domain)
            return PolicyOutcome(domain=domain, policy=entry.policy if entry else None,
                                 source="cache", lookup=lookup, cached=entry)
        if action is FetchPlan.NO_POLICY:
            return PolicyOutcome(domain=domain, policy=None, source="none", lookup=lookup)
        assert lookup.status is RecordStatus.FOUND
        fetch = await fetch_policy(self.fetcher, domain)
        entry = self.cache.update(lookup, fetch.policy)
        if entry is None:
            return PolicyOutcome(domain=domain, policy=None, source="none", lookup=lookup,
                                 fetch=fetch)
        source: PolicySource = "fetched" if fetch.policy is not None else "cache"
        return PolicyOutcome(domain=domain, policy=entry.policy, source=source, lookup=lookup,
                             fetch=fetch, cached=entry)
