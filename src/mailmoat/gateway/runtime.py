"""The delivery side of a running gateway, one per worker process (layer L4).

:class:`Runtime` is what turns listeners that spool mail into a mail gateway. Built once per
worker process (:meth:`Runtime.open`), it holds:

* the store (:func:`mailmoat.store.open_store` of ``store.url``, default
  ``DATA_DIR/mailmoat.db``): one connection per process;
* the router (:func:`make_router`): a recipient in one of ``relay.local_domains`` goes to
  ``[delivery] destination`` (default ``maildir:DATA_DIR/mail/%d/%u``), any other to
  ``mx:DOMAIN``; DSNs are routed the same way by the original sender's domain;
* the :class:`~mailmoat.gateway.queue.DeliveryQueue` worked by ``[delivery] workers`` tasks,
  over one :class:`~mailmoat.gateway.deliver.Downstream` with ONE
  :class:`~mailmoat.gateway.outbound.Outbound` (resolver from ``[dns]``, MTA-STS client with
  the policy cache persisted in ``DATA_DIR/mta-sts-cache.json`` and the policy host looked
  up through the same resolver, DANE as checked at start-up);
* the pipelines the sessions call: :class:`~mailmoat.gateway.inbound.InboundPipeline` (mx)
  and :class:`~mailmoat.gateway.outbound_sign.SubmissionSigner` (submission);
* ``accept``: the :class:`~mailmoat.gateway.intake.Intake` group commit the session awaits
  after the spool commit and before its ``250``.

Start-up (:func:`prepare`, run once by the parent before it forks the workers): the queue's
:meth:`~mailmoat.gateway.queue.DeliveryQueue.recover` (spooled messages without rows after a
crash are queued, finished ones removed from the spool) and the DNSSEC check of the resolver
(``[dns] trust_ad`` on but no AD bit: a warning, and delivery runs without DANE instead of
stalling on "insecure" TLSA answers). Workers inherit the result.

At-least-once, the crash windows: a message is durable in the spool before its rows exist.
A worker killed between the spool commit and the store commit leaves a spooled message
without rows (the client got no 250, or got it after a failed ``accept``). The parent's
recovery queues those at the next start; while running, worker slot 0 sweeps every
:data:`SWEEP_INTERVAL` seconds for spooled messages older than :data:`SWEEP_MIN_AGE` without
rows and queues them. So such a message is delivered at most ``SWEEP_MIN_AGE +
SWEEP_INTERVAL`` seconds late; if the client did not get its 250 and sends again, it is
delivered twice (a duplicate, never a loss; RFC 5321 §6.1). Only slot 0 sweeps, so two
workers never queue one orphan twice; the minimum age keeps the sweep away from messages
whose ``accept`` is still in flight.

The submission API (``[submission_api] enabled``) runs in exactly one process: worker slot
0 (with ``workers = 1``, the process itself). When that worker dies the supervisor starts
another in slot 0, and the API comes back with it. Its messages are queued through the same
``accept`` (:class:`_AcceptingSpool`).

Stop (:meth:`Runtime.stop`, after the listeners stopped and the sessions finished): the
sweep and the API stop, the queue workers finish the deliveries in flight (bounded by the
grace period; cut-off deliveries keep their lease and are retried when it runs out, so
nothing is lost), pending ``accept`` batches commit, then the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import SpoolError
from mailmoat.gateway.config import Config
from mailmoat.gateway.deliver import Downstream
from mailmoat.gateway.inbound import InboundPipeline
from mailmoat.gateway.intake import Intake
from mailmoat.gateway.outbound import Outbound
from mailmoat.gateway.outbound_sign import SubmissionSigner
from mailmoat.gateway.pipeline import (
    inbound_from_config,
    inbound_policy_from_config,
    submission_from_config,
)
from mailmoat.gateway.posture import address_resolver
from mailmoat.gateway.queue import DeliveryQueue, RecoverReport, RetryPolicy, Router
from mailmoat.gateway.relay import RelayPolicy, normalize_domain
from mailmoat.net.dns import DNSResolver
from mailmoat.net.fetch import Fetcher
from mailmoat.net.mtasts import MTASTSClient, PersistentPolicyCache
from mailmoat.spool import Envelope, Recipient, Spool, SpoolID, id_time
from mailmoat.store import Store, Verdict, open_store

__all__ = [
    "DEFAULT_LOCAL_MAILDIR",
    "MTASTS_CACHE_FILE",
    "SWEEP_INTERVAL",
    "SWEEP_MIN_AGE",
    "AcceptFn",
    "ApiFactory",
    "ApiServer",
    "Runtime",
    "StartupReport",
    "check_dane",
    "local_destination",
    "make_resolver",
    "make_router",
    "prepare",
    "validate",
]

log = logging.getLogger("mailmoat.runtime")

#: Where local mail goes without ``[delivery] destination`` (under ``server.data_dir``).
DEFAULT_LOCAL_MAILDIR = "mail/%d/%u"
#: The MTA-STS policy cache (RFC 8461 §5.1: policies are cached across restarts).
MTASTS_CACHE_FILE = "mta-sts-cache.json"
#: Seconds between two sweeps for spooled messages without rows (worker slot 0).
SWEEP_INTERVAL = 60.0
#: A spooled message younger than this may still have its ``accept`` in flight: not swept.
#: Far above the time one store transaction takes (SQLite busy timeout, a PostgreSQL commit).
SWEEP_MIN_AGE = 300.0
#: The start-up DNSSEC check waits at most this long (the resolver's own lifetime is 10 s).
DNSSEC_CHECK_TIMEOUT = 15.0

#: The session's hook: awaited after the spool commit, before the 250 (see the contract).
AcceptFn = Callable[[str, Envelope, Verdict | None], Awaitable[None]]


class ApiServer(Protocol):
    """The HTTP submission API as the runtime sees it (web/submit.SubmitAPIServer)."""

    port: int

    async def stop(self) -> None: ...


#: Starts the submission API on a spool (``None`` when it is disabled). The CLI passes
#: :func:`mailmoat.web.submit.start_from_config` (layer L5; the gateway may not import it).
ApiFactory = Callable[[Config, Spool], Awaitable[ApiServer | None]]



# --- routing ------------------------------------------------------------------------------------
def local_destination(config: Config) -> str:
    """``[delivery] destination``, else ``maildir:DATA_DIR/mail/%d/%u``."""
    return (config.delivery.destination
            or f"maildir:{config.server.data_dir / DEFAULT_LOCAL_MAILDIR}")


def make_router(config: Config) -> Router:
    """The queue's router: local domains (``relay.local_domains``, as
    :class:`~mailmoat.gateway.relay.RelayPolicy` decides) to :func:`local_destination`,
    others to ``mx:DOMAIN`` (A-label, lower case). ``<postmaster>`` (no domain) is local."""
    relay = RelayPolicy(local_domains=config.relay.local_domains)
    local = local_destination(config)

    def route(envelope: Envelope, recipient: Recipient) -> str:
        del envelope
        _, at, domain = recipient.address.rpartition("@")
        if not at or not domain or relay.is_local_domain(domain):
            return local
        return f"mx:{normalize_domain(domain, mapping=False) or domain.lower()}"

    return route


def make_resolver(config: Config) -> DNSResolver:
    """The resolver of ``[dns]`` (``resolvers``, else /etc/resolv.conf; ``trust_ad``)."""
    return DNSResolver(list(config.dns.resolvers) or None, trust_ad=config.dns.trust_ad)


async def check_dane(config: Config, resolver: DNSResolver | None = None) -> tuple[bool, str]:
    """Whether outbound delivery may use DANE, and why: ``[delivery] dane`` on, ``[dns]
    trust_ad`` on and the resolver returning the AD bit for a signed name
    (:meth:`Outbound.check_dnssec`, bounded by :data:`DNSSEC_CHECK_TIMEOUT`)."""
    if not config.delivery.dane:
        return False, "DANE disabled by configuration ([delivery] dane = false)"
    outbound = Outbound(resolver or make_resolver(config), dane=True)
    if outbound.dane_enabled:
        try:
            await asyncio.wait_for(outbound.check_dnssec(), DNSSEC_CHECK_TIMEOUT)
        except TimeoutError:
            log.warning("DNSSEC check got no answer within %.0f s; DANE stays enabled and "
                        "unauthenticated TLSA answers are ignored", DNSSEC_CHECK_TIMEOUT)
    return outbound.dane_enabled, outbound.dane_note


# --- the parent's start-up ----------------------------------------------------------------------
def validate(config: Config) -> None:
    """Load what the workers will load (DKIM and ARC keys of the pipelines), so that a bad
    key is one clear :class:`~mailmoat.errors.ConfigError` before anything listens rather
    than a worker failing at every restart."""
    inbound_policy_from_config(config)
    submission_from_config(config, clock=SYSTEM_CLOCK, resolver=make_resolver(config))


@dataclass(frozen=True, slots=True, kw_only=True)
class StartupReport:
    """What :func:`prepare` found (``mailmoat serve`` prints it)."""

    store: str
    recovered: RecoverReport
    dane: bool
    dane_note: str
    destination: str


async def prepare(config: Config, spool: Spool) -> StartupReport:
    """Once, before the workers start: migrate the store, recover the queue (spooled messages
    without rows are queued, finished ones leave the spool) and check DNSSEC for DANE."""
    store = await open_store(config.store_url)
    try:
        queue = DeliveryQueue(store, spool, Downstream(hostname=config.server.hostname),
                              hostname=config.server.hostname)
        recovered = await queue.recover(make_router(config))
    finally:
        await store.close()
    dane, note = await check_dane(config)
    return StartupReport(store=_display_url(config.store_url), recovered=recovered, dane=dane,
                         dane_note=note, destination=local_destination(config))


def _display_url(url: str) -> str:
    """A store URL without its password (it is printed)."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        userinfo, host = rest.split("@", 1)
        return f"{scheme}://{userinfo.split(':', 1)[0]}@{host}"
    return url


# --- the submission API's spool -----------------------------------------------------------------
class _AcceptingSpool(Spool):
    """A spool whose :meth:`store` also queues the message (the submission API stores whole
    messages through it). Used only for the API: the queue's own DSNs are enqueued by the
    queue itself, so the worker's main spool must not do this too."""

    accept: AcceptFn | None = None

    async def store(self, envelope: Envelope, message: bytes) -> SpoolID:
        spool_id = await super().store(envelope, message)
        if self.accept is not None:
            try:
                await self.accept(spool_id, envelope, None)
            except Exception as exc:  # durable in the spool: the sweep queues it
                log.error("submission API: queueing %s failed (%s); the sweep will queue it",
                          spool_id, exc)
        return spool_id


# --- the runtime --------------------------------------------------------------------------------
class Runtime:
    """The delivery side of one worker process (see the module docstring)."""

    def __init__(self, *, config: Config, spool: Spool, store: Store, queue: DeliveryQueue,
                 intake: Intake, outbound: Outbound, inbound: InboundPipeline,
                 signer: SubmissionSigner, router: Router, fetcher: Fetcher | None,
                 slot: int = 0, api: ApiFactory | None = None) -> None:
        self.config = config
        self.spool = spool
        self.store = store
        self.queue = queue
        self.intake = intake
        self.outbound = outbound
        self.inbound = inbound
        self.signer = signer
        self.router = router
        self.slot = slot
        self.api_factory = api
        self.api: ApiServer | None = None
        self._fetcher = fetcher
        self._api_spool: _AcceptingSpool | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._known: set[str] = set()  # spool IDs seen with rows (the sweep skips them)

    @classmethod
    async def open(cls, config: Config, spool: Spool, *, dane: tuple[bool, str] | None = None,
                   slot: int = 0, api: ApiFactory | None = None,
                   clock: Clock = SYSTEM_CLOCK) -> Runtime:
        """Build everything for one worker; ``dane``: the parent's :func:`check_dane` result
        (``None``: check here)."""
        delivery = config.delivery
        store = await open_store(config.store_url)
        try:
            resolver = make_resolver(config)
            if dane is None:
                dane = await check_dane(config, resolver)
            # The policy host (mta-sts.DOMAIN) is looked up through [dns] like everything else.
            fetcher = (Fetcher(cafile=delivery.ca_file, resolve=address_resolver(resolver))
                       if delivery.mta_sts else None)
            mtasts = None
            if fetcher is not None:
                cache = PersistentPolicyCache(Path(config.server.data_dir) / MTASTS_CACHE_FILE,
                                              clock)
                mtasts = MTASTSClient(resolver, fetcher, cache)
            # DANE as the start-up check found it (no second warning per worker).
            outbound = Outbound(resolver, mtasts=mtasts, dane=dane[0],
                                port=delivery.mx_port, cafile=delivery.ca_file,
                                helo=config.server.hostname, clock=clock)
            outbound.dane_note = dane[1]
            downstream = Downstream(hostname=config.server.hostname, resolver=resolver,
                                    cafile=delivery.ca_file, outbound=outbound)
            router = make_router(config)
            queue = DeliveryQueue(
                store, spool, downstream, clock=clock,
                policy=RetryPolicy(min_backoff=delivery.min_backoff,
                                   max_backoff=max(delivery.min_backoff, delivery.max_backoff),
                                   max_age=delivery.max_age),
                lease=delivery.lease, per_destination=delivery.per_destination,
                hostname=config.server.hostname, dsn_route=router)
            # DeliveryQueue has no public wake(); its own enqueue() sets this event too.
            intake = Intake(store, router, clock=clock, on_commit=queue.wake)
            inbound = inbound_from_config(config, resolver=resolver, clock=clock)
            signer = submission_from_config(config, clock=clock, resolver=resolver)
        except BaseException:
            await store.close()
            raise
        return cls(config=config, spool=spool, store=store, queue=queue, intake=intake,
                   outbound=outbound, inbound=inbound, signer=signer, router=router,
                   fetcher=fetcher, slot=slot, api=api)

    # --- what the sessions get --------------------------------------------------------------
    def context_fields(self, role: str) -> dict[str, Any]:
        """Keyword arguments for :class:`GatewayContext` of a listener with ``role``."""
        out: dict[str, Any] = {"accept": self.intake.accept}
        if role == "mx":
            out["inbound"] = self.inbound
            out["refused"] = self.intake.refused
        if role == "submission":
            out["signer"] = self.signer
        return out

    # --- running ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the queue workers (unless ``[delivery] hold``); in slot 0 also the sweep and
        the submission API."""
        loop = asyncio.get_running_loop()
        if not self.config.delivery.hold:
            self._tasks.append(loop.create_task(
                self.queue.run(self._stop, workers=self.config.delivery.workers)))
        if self.slot == 0:
            self._tasks.append(loop.create_task(self._sweeper()))
            if self.api_factory is not None and self.config.submission_api.enabled:
                spool = _AcceptingSpool(self.spool.directory, fsync=self.spool.fsync)
                spool.accept = self.intake.accept
                self._api_spool = spool
                self.api = await self.api_factory(self.config, spool)

    async def _sweeper(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SWEEP_INTERVAL)
            if self._stop.is_set():
                return
            try:
                queued = await self.sweep()
            except Exception:
                log.exception("sweep failed; trying again in %.0f s", SWEEP_INTERVAL)
                continue
            if queued:
                log.warning("sweep: queued %d spooled messages that had no delivery rows: %s",
                            len(queued), ", ".join(queued[:10]))

    async def sweep(self, *, min_age: float = SWEEP_MIN_AGE) -> list[str]:
        """Queue spooled messages older than ``min_age`` seconds that have no delivery rows
        (a worker died between its spool commit and its store commit). Returns their IDs."""
        now = self.queue.clock.now()
        listed = await asyncio.to_thread(self.spool.list)
        self._known &= set(listed)
        queued: list[str] = []
        for spool_id in listed:  # oldest first: the IDs begin with the arrival time
            if now - id_time(spool_id) < min_age:
                break
            if spool_id in self._known:
                continue
            if await self.store.list_deliveries(spool_id=spool_id, limit=1):
                self._known.add(spool_id)
                continue
            try:
                entry = await asyncio.to_thread(self.spool.get, spool_id)
            except SpoolError as exc:  # removed meanwhile, or damaged (recovery's job)
                log.debug("sweep: %s: %s", spool_id, exc)
                continue
            await self.intake.accept(spool_id, entry.envelope, None)
            self._known.add(spool_id)
            queued.append(spool_id)
        return queued

    async def stop_api(self) -> None:
        """Stop the submission API (first, together with the SMTP listeners)."""
        if self.api is not None:
            api, self.api = self.api, None
            try:
                await api.stop()
            except Exception:
                log.exception("submission API: stop failed")

    async def stop(self, grace: float) -> None:
        """Stop everything (call after the sessions finished): see the module docstring."""
        await self.stop_api()
        self._stop.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=max(grace, 0.1))
            for task in pending:
                task.cancel()
            if pending:
                log.warning("stop: deliveries still in flight after %.0f s were cut off; they "
                            "are retried when their lease (%.0f s) runs out", grace,
                            self.queue.lease)
                await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("stop: %r", task.exception())
        await self.intake.drain()
        if self._api_spool is not None:
            await self._api_spool.aclose()
        if self._fetcher is not None:
            with contextlib.suppress(Exception):
                await self._fetcher.aclose()
        await self.store.close()
