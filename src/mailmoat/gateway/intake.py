"""Group commit of accepted messages into the store (layer L4).

A session answers ``250`` only after the message is durable in the spool *and* its delivery
rows (and verdict) are in the store (RFC 5321 §6.1: once accepted, the message is the
server's responsibility). With SQLite ``synchronous=FULL`` every transaction costs an fsync
of the WAL, so one transaction per message would cap the gateway at the disk's fsync rate.
:class:`Intake` batches instead, as the spool does for its own fsyncs::

    call 1 ──► transaction A (1 message) ─────────► commit ─► call 1 returns
    calls 2..n arrive while A is in flight ─► transaction B (n-1 messages) ─► all return

At most one transaction is in flight per :class:`Intake` (one per worker process); calls
that arrive meanwhile wait for the next one, which takes all of them (up to
:data:`INTAKE_BATCH_MAX` messages; the rest wait for the one after). Every caller awaits the
commit of *its own* batch; when a batch fails, every caller of that batch gets the error
(the session then still answers 250: the message is durable in the spool, and the runtime's
sweep queues spooled messages that have no rows, see :mod:`mailmoat.gateway.runtime`).

A caller that is cancelled while waiting does not take its message out of the batch: the
rows may still be committed (a duplicate is possible, a loss is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.gateway.queue import Router
from mailmoat.spool import Envelope
from mailmoat.store import NewDelivery, Store, Verdict

__all__ = ["INTAKE_BATCH_MAX", "Intake"]

log = logging.getLogger("mailmoat.intake")

#: Messages per store transaction at most: bounds the transaction (and the time the SQLite
#: write lock is held, which a claim of another worker waits for) under a burst.
INTAKE_BATCH_MAX = 256


@dataclass(slots=True)
class _Pending:
    items: list[NewDelivery]
    verdict: Verdict | None
    done: asyncio.Future[None]


class Intake:
    """``accept(spool_id, envelope, verdict)`` with group commit over ``Store.intake``.

    ``route`` picks each recipient's destination (the queue's router); ``on_commit`` is
    called after each successful transaction (the runtime wakes the queue workers there).
    """

    def __init__(self, store: Store, route: Router, *, clock: Clock = SYSTEM_CLOCK,
                 on_commit: Callable[[], None] | None = None,
                 max_batch: int = INTAKE_BATCH_MAX) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.store = store
        self.route = route
        self.clock = clock
        self.on_commit = on_commit
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Statistics: transactions committed, messages accepted.
        self.transactions = 0
        self.messages = 0

    async def accept(self, spool_id: str, envelope: Envelope, verdict: Verdict | None) -> None:
        """Queue one row per recipient of the committed message ``spool_id`` and store its
        verdict, in the next group transaction; return once that transaction committed."""
        items = [NewDelivery(spool_id=spool_id, recipient=r.address,
                             destination=self.route(envelope, r)) for r in envelope.rcpts]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(items=items, verdict=verdict, done=done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await done

    async def refused(self, verdict: Verdict) -> None:
        """Store the verdict of a message the policy refused (no delivery rows), in the next
        group transaction; return once that transaction committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(items=[], verdict=verdict, done=done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await done

    async def drain(self) -> None:
        """Wait until every accepted call so far has been committed (or has failed)."""
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = (self._pending[: self.max_batch],
                                    self._pending[self.max_batch:])
            items = [item for p in batch for item in p.items]
            verdicts = [p.verdict for p in batch if p.verdict is not None]
            try:
                await self.store.intake(items, verdicts, now=self.clock.now())
            except asyncio.CancelledError:
                for p in batch + self._pending:  # shutting down: nobody is left waiting
                    p.done.cancel()
                self._pending = []
                raise
            except Exception as exc:
                log.error("intake: storing %d messages failed: %s", len(batch), exc)
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                        # The waiter reads it; mark it retrieved if it went away.
                        p.done.exception()
                continue
            self.transactions += 1
            self.messages += len(batch)
            for p in batch:
                if not p.done.done():
                    p.done.set_result(None)
            if self.on_commit is not None:
                self.on_commit()
