"""The embedded backend: SQLite in WAL mode, driven from one worker thread.

Every call runs on a dedicated single-thread executor, so the event loop never waits on the
disk (ARCHITECTURE.md rule 14) and the one connection is never shared across threads.
Writes use ``BEGIN IMMEDIATE`` (the write lock is taken at the start, so a claim's
read-then-update cannot interleave with another process's); ``busy_timeout`` lets several
processes share a database file. ``synchronous=FULL``: a committed queue change survives a
power loss, as the spool does.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mailmoat import limits
from mailmoat.errors import StoreError
from mailmoat.store import _schema as S
from mailmoat.store._types import (
    AggregateRow,
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryState,
    NewDelivery,
    TLSPolicySummary,
    Verdict,
)

T = TypeVar("T")


class SQLiteStore:
    """A :class:`~mailmoat.store.Store` in one SQLite file (``":memory:"`` for tests)."""

    dialect: S.Dialect = "sqlite"

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailmoat-sqlite")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path | str, *, synchronous: str = "FULL") -> SQLiteStore:
        """Open (creating) the database and bring its schema up to date."""
        store = cls(path, synchronous=synchronous)
        await store.migrate()
        return store

    # --- plumbing ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False,
                                       timeout=limits.STORE_BUSY_TIMEOUT)
                conn.execute("PRAGMA journal_mode=WAL")
                if self._synchronous not in ("FULL", "NORMAL", "OFF"):
                    raise StoreError(f"bad synchronous mode {self._synchronous!r}")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from None
            self._conn = conn
        return self._conn

    async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            conn = self._connect()
            try:
                return function(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise StoreError(f"SQLite: {exc}") from exc
        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    @staticmethod
    def _write(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        return result

    async def close(self) -> None:
        def shut(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None
        if self._conn is not None:
            await self._call(shut)
        self._executor.shutdown(wait=True)

    # --- schema -----------------------------------------------------------------------------
    async def migrate(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            def body() -> int:
                conn.execute(S.ddl(S.VERSION_TABLE, "sqlite"))
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                current = row[0] or 0
                for version, statements in S.MIGRATIONS:
                    if version <= current:
                        continue
                    for statement in statements:
                        conn.execute(S.ddl(statement, "sqlite"))
                    conn.execute("INSERT INTO schema_version VALUES (?, strftime('%s','now'))",
                                 (version,))
                    current = version
                return int(current)
            return self._write(conn, body)
        return await self._call(run)

    async def schema_version(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0] or 0)
        return await self._call(run)

    # --- verdicts ---------------------------------------------------------------------------
    async def record_verdict(self, verdict: Verdict) -> None:
        params = S.verdict_params(verdict)
        await self._call(lambda c: self._write(c, lambda: c.execute(S.INSERT_VERDICT, params)))

    async def get_verdict(self, spool_id: str) -> Verdict | None:
        def run(conn: sqlite3.Connection) -> Verdict | None:
            row = conn.execute(S.SELECT_VERDICT, (spool_id,)).fetchone()
            return None if row is None else S.verdict_from_row(row)
        return await self._call(run)

    async def dmarc_aggregate(self, domain: str, begin: float, end: float) -> list[AggregateRow]:
        def run(conn: sqlite3.Connection) -> list[AggregateRow]:
            rows = conn.execute(S.DMARC_AGGREGATE, (domain, begin, end)).fetchall()
            return [S.aggregate_from_row(r) for r in rows]
        return await self._call(run)

    async def dkim_selectors_seen(self, domain: str, *, since: float | None = None,
                                  limit: int = limits.STORE_SELECTORS_SEEN_MAX) -> list[str]:
        params = S.selectors_seen_params(domain, since, limit)

        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(S.DKIM_SELECTORS_SEEN["sqlite"], params).fetchall()
            return [str(r[0]) for r in rows]
        return await self._call(run)

    # --- queue ------------------------------------------------------------------------------
    async def enqueue(self, items: list[NewDelivery], *, now: float) -> list[int]:
        return await self.intake(items, (), now=now)  # the same rows, without verdicts

    async def intake(self, items: Sequence[NewDelivery], verdicts: Sequence[Verdict], *,
                     now: float) -> list[int]:
        verdict_rows = [S.verdict_params(v) for v in verdicts]

        def run(conn: sqlite3.Connection) -> list[int]:
            def body() -> list[int]:
                if verdict_rows:
                    conn.executemany(S.INSERT_VERDICT, verdict_rows)
                return [
                    int(conn.execute(S.INSERT_DELIVERY, (
                        i.spool_id, i.recipient, i.destination, now, now, now,
                    )).fetchone()[0])
                    for i in items
                ]
            return self._write(conn, body)
        return await self._call(run)

    async def claim(self, *, now: float, owner: str, lease: float, limit: int,
                    per_destination: int) -> list[Delivery]:
        def run(conn: sqlite3.Connection) -> list[Delivery]:
            def body() -> list[Delivery]:
                busy = {d: int(n) for d, n in conn.execute(S.IN_FLIGHT_BY_DEST, (now,))}
                candidates = conn.execute(
                    f"SELECT id, destination FROM deliveries WHERE {S.DUE} "  # noqa: S608 (constant SQL fragments)
                    "ORDER BY next_attempt_at, id LIMIT ?",
                    (now, now, limit * limits.STORE_CLAIM_SCAN_FACTOR),
                ).fetchall()
                chosen = S.pick(candidates, busy, limit, per_destination)
                for row_id in chosen:
                    conn.execute(S.CLAIM_ONE, (owner, now + lease, now, row_id))
                return self._fetch(conn, chosen)
            return self._write(conn, body)
        return await self._call(run)

    @staticmethod
    def _fetch(conn: sqlite3.Connection, ids: list[int]) -> list[Delivery]:
        if not ids:
            return []
        rows = conn.execute(
            f"{S.SELECT_DELIVERY} WHERE id IN ({', '.join('?' for _ in ids)}) ORDER BY id",
            ids,
        ).fetchall()
        return [S.delivery_from_row(r) for r in rows]

    async def finish(self, delivery_id: int, owner: str, result: AttemptResult) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            def body() -> bool:
                conn.execute(S.INSERT_ATTEMPT, S.attempt_params(result, delivery_id))
                if result.tls is not None and result.tls.sessions:
                    row = conn.execute("SELECT spool_id FROM deliveries WHERE id = ?",
                                       (delivery_id,)).fetchone()
                    conn.executemany(S.INSERT_TLS_SESSION, S.tls_session_rows(
                        result, None if row is None else row[0]))
                cursor = conn.execute(S.FINISH, S.finish_params(
                    result, result.finished_at, delivery_id, owner, result.finished_at))
                # rowcount 0: our lease ran out and the row was claimed again (or deleted):
                # the attempt is still logged, the row belongs to its new owner.
                return cursor.rowcount == 1
            return self._write(conn, body)
        return await self._call(run)

    async def renew(self, delivery_ids: list[int], owner: str, lease_until: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            def body() -> int:
                return sum(conn.execute(S.RENEW, (lease_until, i, owner)).rowcount
                           for i in delivery_ids)
            return self._write(conn, body)
        return await self._call(run)

    async def get(self, delivery_id: int) -> Delivery | None:
        def run(conn: sqlite3.Connection) -> Delivery | None:
            rows = self._fetch(conn, [delivery_id])
            return rows[0] if rows else None
        return await self._call(run)

    async def list_deliveries(self, *, states: tuple[DeliveryState, ...] | None = None,
                   spool_id: str | None = None, limit: int = 1000) -> list[Delivery]:
        query, params = S.list_query(states, spool_id, limit)

        def run(conn: sqlite3.Connection) -> list[Delivery]:
            return [S.delivery_from_row(r) for r in conn.execute(query, params)]
        return await self._call(run)

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        def run(conn: sqlite3.Connection) -> list[Attempt]:
            return [S.attempt_from_row(r) for r in conn.execute(S.SELECT_ATTEMPTS,
                                                                (delivery_id,))]
        return await self._call(run)

    async def retry(self, delivery_id: int, *, now: float) -> bool:
        return await self._rowcount(S.RETRY, (now, now, delivery_id)) == 1

    async def delete(self, delivery_id: int) -> bool:
        return await self._rowcount(S.DELETE, (delivery_id,)) == 1

    async def _rowcount(self, query: str, params: tuple[Any, ...]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return self._write(conn, lambda: conn.execute(query, params).rowcount)
        return await self._call(run)

    async def unfinished(self, spool_id: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute(S.UNFINISHED, (spool_id,)).fetchone()[0])
        return await self._call(run)

    # --- TLS reporting ----------------------------------------------------------------------
    async def tls_attempts(self, domain: str, begin: float,
                           end: float) -> list[TLSPolicySummary]:
        params = S.tls_params(domain, begin, end)

        def run(conn: sqlite3.Connection) -> list[TLSPolicySummary]:
            summary = conn.execute(S.TLS_SUMMARY, params).fetchall()
            failures = conn.execute(S.TLS_FAILURES, params).fetchall()
            return S.tls_summaries(domain, summary, failures)
        return await self._call(run)
