"""The durable delivery queue (L4): store rows over spooled messages, worked by leases.

Life of a message::

    spool commit (fsync) ─► enqueue(): one row per (recipient, destination), state "queued"
        ─► a worker claims due rows (atomic, per-destination limit, lease) ─► "in-flight"
        ─► Deliverer.deliver() per (message, destination) group
        ─► finish(): "delivered" | "bounced" | "deferred" (next_attempt_at = now + backoff)
        ─► when no row of the message is left unfinished, the spool file is removed.

Retries: a temporary failure (4xx, connection, TLS, timeout, or anything unexpected) is
never final on its own. The n-th consecutive failure waits ``min(max_backoff, min_backoff *
factor**(n-1))`` seconds, multiplied by a jitter factor in ``[1-jitter, 1+jitter)`` drawn
from the injected ``random`` (so that a destination's backlog does not retry in lockstep).
The wait is cut so that the last attempt happens at ``created_at + max_age``; a temporary
failure at or past that age bounces (RFC 5321 §4.5.4.1: give up after "at least 4-5 days").

Crash safety and the at-least-once window: a claim is a lease (``lease`` seconds, renewed
every ``lease/3`` while the worker delivers). A worker that dies (``kill -9``, power loss)
stops renewing; once the lease has run out the row is due again and another worker (or the
restarted process) claims it. The window is: the downstream accepted the message but the
worker died before :meth:`Store.finish` committed - then the message is delivered again,
a duplicate, never a loss (the RFC 5321 §6.1 trade-off every MTA makes). A worker that lost
its lease (it hung) cannot overwrite the new owner's row: ``finish`` checks the owner.

Bounces and delays (RFC 3464 DSNs): when ``dsn_route`` is set, recipients that end
"bounced" get a ``failed`` DSN sent to the envelope sender, and recipients that asked for
``NOTIFY=DELAY`` get one ``delayed`` DSN once they have waited ``delay_warning``. The
DSN parameters kept at MAIL/RCPT are honoured (RFC 3461 §4: NOTIFY=NEVER / without
FAILURE suppresses, ORCPT becomes Original-Recipient, ENVID Original-Envelope-Id, RET=HDRS
returns only the header section). A message with the null sender ``<>`` (a DSN itself) never
gets a DSN (RFC 5321 §4.5.5 / §6.1: no bounce loops).

SECURITY: DSNs quote peer-supplied text (reply texts, addresses, ORCPT, ENVID); each value
is reduced to one line of printable ASCII before it becomes a header field, so a hostile
downstream reply cannot inject fields or MIME parts into the DSN sent to our sender.

Crash between spool commit and :meth:`DeliveryQueue.enqueue`, or between the last
``finish`` and the spool removal: :meth:`DeliveryQueue.recover` (run at start-up, before
the listener accepts mail) enqueues spooled messages that have no rows and removes those whose
rows are all final.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import random as _random
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mailmoat import limits
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import SpoolError
from mailmoat.gateway.deliver import Deliverer, DeliveryReport, RecipientOutcome
from mailmoat.spool import Envelope, Recipient, Spool, SpoolID
from mailmoat.store import AttemptResult, Delivery, NewDelivery, Store, TLSRecord

__all__ = ["DSNRecipient", "DeliveryQueue", "RecoverReport", "RetryPolicy", "Router", "build_dsn"]

log = logging.getLogger("mailmoat.queue")

#: Chooses the destination of one recipient (e.g. ``lambda env, rcpt: "lmtp://127.0.0.1:24"``).
Router = Callable[[Envelope, Recipient], str]
#: Called once per row that ends "bounced" (DSN generation hooks in here).
BounceHook = Callable[[Delivery, AttemptResult], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    min_backoff: float = limits.QUEUE_MIN_BACKOFF
    max_backoff: float = limits.QUEUE_MAX_BACKOFF
    factor: float = 2.0
    jitter: float = 0.2
    max_age: float = limits.QUEUE_MAX_AGE

    def __post_init__(self) -> None:
        if not (0 < self.min_backoff <= self.max_backoff and self.factor >= 1
                and 0 <= self.jitter < 1 and self.max_age > 0):
            raise ValueError("RetryPolicy: need 0 < min_backoff <= max_backoff, factor >= 1, "
                             "0 <= jitter < 1, max_age > 0")

    def delay(self, failures: int, random: Callable[[], float]) -> float:
        """Seconds to wait after the ``failures``-th consecutive temporary failure."""
        base = min(self.max_backoff, self.min_backoff * self.factor ** max(0, failures - 1))
        return base * (1 - self.jitter + 2 * self.jitter * random())


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverReport:
    enqueued: tuple[SpoolID, ...]
    removed: tuple[SpoolID, ...]


# --- DSN (RFC 3464) ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class DSNRecipient:
    """One recipient reported in a DSN."""

    recipient: Recipient
    action: Literal["failed", "delayed"]
    status: str  # RFC 3463, e.g. "5.1.1"
    diagnostic: str | None = None  # the remote reply, "550 5.1.1 no such user"
    remote: str | None = None  # host the reply came from
    last_attempt: float | None = None
    will_retry_until: float | None = None


_XTEXT = re.compile(r"\+([0-9A-F]{2})")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _xtext_decode(value: str) -> str:
    """RFC 3461 §4: xtext = *( xchar / hexchar ); hexchar = "+" 2(HEXDIG)."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


def _field(value: str) -> str:
    """A header-field value from peer-supplied text: one line of printable ASCII."""
    return "".join(c if " " <= c <= "~" else "?" for c in value)[:900]


def _date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def build_dsn(*, reporting_mta: str, envelope: Envelope, message: bytes | None,
              recipients: Sequence[DSNRecipient], now: float, message_id: str) -> bytes:
    """A delivery status notification (RFC 3464 §2, RFC 6522 multipart/report) to
    ``envelope.mail_from`` about ``recipients``; the original is returned whole (RET=FULL or
    unspecified, up to :data:`mailmoat.limits.DSN_RETURN_MAX`) or as its header section."""
    failed = any(r.action == "failed" for r in recipients)
    boundary = f"mailmoat-dsn-{message_id.split('@', maxsplit=1)[0].strip('<')}"
    mta = _field(reporting_mta)
    human = ("This is the mail system at " + mta + ".\n\n" + (
        "Your message could not be delivered to the recipients below.\n" if failed else
        "Your message has not been delivered yet to the recipients below; the mail system\n"
        "will keep trying.\n") + "\n" + "".join(
        f"<{_field(r.recipient.address)}>: {_field(r.diagnostic or r.status)}\n"
        for r in recipients))
    per_message = [f"Reporting-MTA: dns; {mta}"]
    if envelope.envid:
        per_message.append(f"Original-Envelope-Id: {_field(_xtext_decode(envelope.envid))}")
    per_message.append(f"Arrival-Date: {_date(envelope.received_at)}")
    blocks = ["\n".join(per_message)]
    for r in recipients:
        lines = []
        if r.recipient.orcpt:
            kind, _, addr = r.recipient.orcpt.partition(";")
            lines.append(f"Original-Recipient: {_field(kind)};{_field(_xtext_decode(addr))}")
        lines += [f"Final-Recipient: rfc822; {_field(r.recipient.address)}",
                  f"Action: {r.action}", f"Status: {r.status}"]
        if r.remote:
            lines.append(f"Remote-MTA: dns; {_field(r.remote)}")
        if r.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {_field(r.diagnostic)}")
        if r.last_attempt is not None:
            lines.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if r.will_retry_until is not None:
            lines.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")
        blocks.append("\n".join(lines))
    status_part = "\n\n".join(blocks) + "\n"
    head = "\n".join([
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>",
        f"To: <{_field(envelope.mail_from)}>",
        "Subject: " + ("Undelivered Mail Returned to Sender" if failed
                       else "Delayed Mail (still being retried)"),
        f"Date: {_date(now)}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ])
    parts = [
        "Content-Type: text/plain; charset=us-ascii\n\n" + human,
        "Content-Type: message/delivery-status\n\n" + status_part,
    ]
    text = head + "\n\nThis is a MIME-encapsulated message.\n"
    for part in parts:
        text += f"\n--{boundary}\n{part}"
    out = text.replace("\n", "\r\n").encode("ascii")
    if message is not None:
        whole = envelope.ret != "HDRS" and len(message) <= limits.DSN_RETURN_MAX
        if whole:
            returned, ctype = message, "message/rfc822"
        else:
            end = _HEADER_END.search(message)
            returned = message[: end.start()] if end else message[: limits.DSN_RETURN_MAX]
            ctype = "text/rfc822-headers"
        returned = returned.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not returned.endswith(b"\r\n"):
            returned += b"\r\n"
        cte = "8bit" if any(b > 0x7F for b in returned) else "7bit"
        out += (f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\n"
                f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode("ascii") + returned
    return out + f"\r\n--{boundary}--\r\n".encode("ascii")


def _status(result: AttemptResult, expired: bool) -> str:
    if expired:
        return "5.4.7"  # RFC 3463: delivery time expired
    if result.reply_status and result.reply_status[0] in "45":
        status = result.reply_status
        return ("5" + status[1:]) if result.outcome == "bounced" else status
    return "5.0.0" if result.outcome == "bounced" else "4.0.0"


def _wants(recipient: Recipient, what: str) -> bool:
    """RFC 3461 §4.1: NOTIFY absent means the MTA's default (failures, no delays)."""
    if recipient.notify is None:
        return what == "FAILURE"
    return what in recipient.notify



class DeliveryQueue:
    """Deliver spooled messages through ``deliverer``, recording everything in ``store``."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        deliverer: Deliverer,
        *,
        clock: Clock = SYSTEM_CLOCK,
        random: Callable[[], float] = _random.random,
        policy: RetryPolicy | None = None,
        lease: float = limits.QUEUE_LEASE,
        per_destination: int = limits.QUEUE_DESTINATION_CONCURRENCY,
        batch: int = limits.QUEUE_CLAIM_BATCH,
        owner: str | None = None,
        on_bounce: BounceHook | None = None,
        hostname: str | None = None,
        dsn_route: Router | str | None = None,
        delay_warning: float = limits.QUEUE_DELAY_WARNING,
    ) -> None:
        self.store = store
        self.spool = spool
        self.deliverer = deliverer
        self.clock = clock
        self.random = random
        self.policy = policy or RetryPolicy()
        self.lease = lease
        self.per_destination = per_destination
        self.batch = batch
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.on_bounce = on_bounce
        self.hostname = hostname or socket.getfqdn()
        self.dsn_route = dsn_route
        self.delay_warning = delay_warning
        self._wake = asyncio.Event()

    # --- producing ----------------------------------------------------------------------------
    def wake(self) -> None:
        """New rows are in the store (queued by another writer, e.g. group-committed intake):
        idle workers claim now instead of at their next poll."""
        self._wake.set()

    async def enqueue(self, spool_id: SpoolID, envelope: Envelope,
                      route: Router | str) -> list[int]:
        """Queue one row per recipient; call after the spool commit returned."""
        items = [NewDelivery(spool_id=spool_id, recipient=r.address,
                             destination=route if isinstance(route, str) else route(envelope, r))
                 for r in envelope.rcpts]
        ids = await self.store.enqueue(items, now=self.clock.now())
        self._wake.set()
        return ids

    async def recover(self, route: Router | str) -> RecoverReport:
        """At start-up: enqueue spooled messages without rows; remove finished ones."""
        enqueued: list[SpoolID] = []
        removed: list[SpoolID] = []
        for spool_id in await asyncio.to_thread(self.spool.list):
            rows = await self.store.list_deliveries(spool_id=spool_id, limit=1)
            if not rows:
                try:
                    entry = await asyncio.to_thread(self.spool.get, spool_id)
                except SpoolError as exc:
                    log.error("recover: cannot read %s: %s", spool_id, exc)
                    continue
                await self.enqueue(spool_id, entry.envelope, route)
                enqueued.append(spool_id)
            elif await self.store.unfinished(spool_id) == 0:
                await self._remove(spool_id)
                removed.append(spool_id)
        return RecoverReport(enqueued=tuple(enqueued), removed=tuple(removed))

    # --- working ------------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Claim due rows, deliver them (grouped per message and destination, groups
        concurrently), record the outcomes. Returns the number of rows processed."""
        rows = await self.store.claim(now=self.clock.now(), owner=self.owner, lease=self.lease,
                                      limit=self.batch, per_destination=self.per_destination)
        if not rows:
            return 0
        groups: dict[tuple[str, str], list[Delivery]] = {}
        for row in rows:
            groups.setdefault((row.spool_id, row.destination), []).append(row)
        results = await asyncio.gather(*(self._deliver_group(g) for g in groups.values()),
                                       return_exceptions=True)
        for group, result in zip(groups.values(), results, strict=True):
            if isinstance(result, BaseException):
                # Recording failed (the store is down?): the rows stay in flight and return to
                # the queue when their lease runs out.
                log.error("queue: recording %s failed: %r", group[0].spool_id, result)
        return len(rows)

    async def run(self, stop: asyncio.Event, *, workers: int = 2,
                  poll_interval: float = 1.0) -> None:
        """Work the queue until ``stop`` is set."""
        async def worker() -> None:
            while not stop.is_set():
                try:
                    done = await self.run_once()
                except Exception:
                    log.exception("queue worker: claim failed; retrying")
                    done = 0
                if done == 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._first(stop), poll_interval)
        await asyncio.gather(*(worker() for _ in range(workers)))

    async def _first(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _renew(self, ids: list[int]) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            with contextlib.suppress(Exception):
                await self.store.renew(ids, self.owner, self.clock.now() + self.lease)

    async def _deliver_group(self, rows: list[Delivery]) -> None:
        spool_id, destination = rows[0].spool_id, rows[0].destination
        started = self.clock.now()
        envelope: Envelope | None = None
        message: bytes | None = None
        renewer = asyncio.ensure_future(self._renew([r.id for r in rows]))
        try:
            try:
                entry = await asyncio.to_thread(self.spool.get, spool_id)
                envelope = entry.envelope
                message = await asyncio.to_thread(self.spool.read_message, spool_id)
            except SpoolError as exc:
                # The bytes are gone or damaged (deleted by hand, disk damage): there is
                # nothing left to retry; say so loudly.
                log.error("queue: %s: %s", spool_id, exc)
                report = DeliveryReport(outcomes=tuple(
                    RecipientOutcome(recipient=r.recipient, outcome="bounced",
                                     error=f"message unreadable in the spool: {exc}")
                    for r in rows))
            else:
                try:
                    report = await self.deliverer.deliver(
                        message=message, envelope=envelope,
                        recipients=[r.recipient for r in rows], destination=destination)
                except Exception as exc:
                    log.exception("queue: deliverer failed for %s", spool_id)
                    report = DeliveryReport(outcomes=tuple(
                        RecipientOutcome(recipient=r.recipient, outcome="deferred",
                                         error=f"{type(exc).__name__}: {exc}") for r in rows))
        finally:
            renewer.cancel()
        await self._record(rows, report, started, envelope, message)
        if await self.store.unfinished(spool_id) == 0:
            await self._remove(spool_id)

    def _result(self, row: Delivery, outcome: RecipientOutcome | None,
                report: DeliveryReport, started: float) -> AttemptResult:
        now = self.clock.now()
        if outcome is None:  # the deliverer forgot a recipient: try again
            outcome = RecipientOutcome(recipient=row.recipient, outcome="deferred",
                                       error="no outcome reported for this recipient")
        reply = outcome.reply
        common = {
            "started_at": started, "finished_at": now, "remote": report.remote,
            "tls": report.tls or TLSRecord(),
            "reply_code": reply.code if reply else None,
            "reply_status": reply.status if reply else None,
            "reply_text": reply.text if reply else None,
        }
        if outcome.outcome != "deferred":
            return AttemptResult(outcome=outcome.outcome, error=outcome.error,
                                 **common)  # type: ignore[arg-type]
        deadline = row.created_at + self.policy.max_age
        if now >= deadline:
            return AttemptResult(
                outcome="bounced", **common,  # type: ignore[arg-type]
                error=f"gave up after {row.attempts} attempts over "
                      f"{now - row.created_at:.0f}s (maximum age); last error: {outcome.error}")
        wait = self.policy.delay(row.attempts, self.random)
        return AttemptResult(outcome="deferred", error=outcome.error,
                             next_attempt_at=min(now + wait, deadline),
                             **common)  # type: ignore[arg-type]

    async def _record(self, rows: Sequence[Delivery], report: DeliveryReport, started: float,
                      envelope: Envelope | None, message: bytes | None) -> None:
        notices: list[DSNRecipient] = []
        by_recipient: dict[str, list[RecipientOutcome]] = {}
        for outcome in report.outcomes:
            by_recipient.setdefault(outcome.recipient, []).append(outcome)
        for row in rows:
            found = by_recipient.get(row.recipient)
            given = found.pop(0) if found else None
            result = self._result(row, given, report, started)
            owned = await self.store.finish(row.id, self.owner, result)
            if owned and envelope is not None:
                notice = await self._notice(row, result, envelope,
                                            expired=given is None
                                            or given.outcome == "deferred")
                if notice is not None:
                    notices.append(notice)
            log.info("delivery id=%d msg=%s rcpt=%s dest=%s attempt=%d outcome=%s%s",
                     row.id, row.spool_id, row.recipient, row.destination, row.attempts,
                     result.outcome, f" error={result.error!r}" if result.error else "")
            if not owned:
                log.warning("queue: lease on row %d was lost before the result was recorded",
                            row.id)
            elif result.outcome == "bounced" and self.on_bounce is not None:
                await self.on_bounce(row, result)
        if notices and envelope is not None:
            for action in ("failed", "delayed"):
                group = [n for n in notices if n.action == action]
                if group:
                    await self._send_dsn(rows[0].spool_id, envelope, message, group)

    async def _notice(self, row: Delivery, result: AttemptResult, envelope: Envelope, *,
                      expired: bool) -> DSNRecipient | None:
        """The DSN line for ``row`` if its sender should hear about this attempt."""
        if self.dsn_route is None or not envelope.mail_from or result.outcome == "delivered":
            return None
        recipient = next((r for r in envelope.rcpts if r.address == row.recipient),
                         Recipient(address=row.recipient))
        remote = (result.remote or "").rpartition(":")[0] or None
        diagnostic = None
        if result.reply_code is not None:
            diagnostic = " ".join(filter(None, (str(result.reply_code), result.reply_status,
                                                (result.reply_text or "").split("\n")[0])))
        elif result.error:
            diagnostic = result.error
        if result.outcome == "bounced":
            if not _wants(recipient, "FAILURE"):
                return None
            return DSNRecipient(recipient=recipient, action="failed",
                                status=_status(result, expired=expired),
                                diagnostic=diagnostic, remote=remote,
                                last_attempt=result.finished_at)
        # deferred: one "delayed" DSN, the first time the wait crosses delay_warning.
        if not _wants(recipient, "DELAY"):
            return None
        waited = result.finished_at - row.created_at
        if waited < self.delay_warning:
            return None
        earlier = (await self.store.attempts(row.id))[:-1]
        if any(a.result.finished_at - row.created_at >= self.delay_warning for a in earlier):
            return None
        return DSNRecipient(recipient=recipient, action="delayed",
                            status=_status(result, expired=False), diagnostic=diagnostic,
                            remote=remote, last_attempt=result.finished_at,
                            will_retry_until=row.created_at + self.policy.max_age)

    async def _send_dsn(self, spool_id: str, envelope: Envelope, message: bytes | None,
                        notices: list[DSNRecipient]) -> None:
        assert self.dsn_route is not None
        now = self.clock.now()
        dsn = build_dsn(reporting_mta=self.hostname, envelope=envelope, message=message,
                        recipients=notices, now=now,
                        message_id=f"<{spool_id}.{secrets.token_hex(6)}@{self.hostname}>")
        # The DSN has the null reverse-path: it can never cause another DSN.
        dsn_envelope = Envelope(mail_from="", rcpts=(Recipient(address=envelope.mail_from),),
                                received_at=now)
        try:
            dsn_id = await self.spool.store(dsn_envelope, dsn)
            await self.enqueue(dsn_id, dsn_envelope, self.dsn_route)
        except Exception:
            log.exception("queue: could not queue the DSN for %s", spool_id)
            return
        log.info("dsn msg=%s action=%s to=%s dsn=%s", spool_id, notices[0].action,
                 envelope.mail_from, dsn_id)

    async def _remove(self, spool_id: str) -> None:
        with contextlib.suppress(SpoolError):  # already removed by a concurrent group
            await asyncio.to_thread(self.spool.remove, spool_id)
