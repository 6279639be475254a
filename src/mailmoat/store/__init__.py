"""Verdict, delivery-queue and attempt storage (layer L3): one interface, two backends.

:class:`Store` is the interface; :class:`SQLiteStore` (embedded, WAL, the default) and
:class:`PostgresStore` (psycopg 3, for several nodes sharing one queue) implement it with the
same semantics, and the tests run every case against both. :func:`open_store` picks one from
a URL: ``sqlite:///path/to/mailmoat.db`` (or a plain path) or ``postgresql://...``
(``?schema=NAME`` selects a schema).

Tables (schema version in ``schema_version``; migrations are append-only, see ``_schema``):

``verdicts``
    one row per received message: spool id, time, client IP, HELO, TLS at receipt, SPF /
    DKIM / ARC / DMARC results with domains, selectors and alignment, the policy applied and
    the local overrides. The columns a DMARC aggregate report (RFC 7489 Appendix C) groups
    by are flat, so :meth:`Store.dmarc_aggregate` is one ``GROUP BY``.
    :meth:`Store.dkim_selectors_seen` lists the DKIM selectors that verified for a domain
    (what ``mailmoat check`` tries besides the given and common ones).
``deliveries``
    the delivery queue, one row per (message, recipient, destination): state (``queued``,
    ``in-flight``, ``deferred``, ``delivered``, ``bounced``), attempts, ``next_attempt_at``,
    the lease of the worker holding it, the last error and reply, and the TLS of the last
    attempt.
``attempts``
    every attempt: outcome, reply, error, remote, TLS version / cipher / verified / policy,
    and the RFC 8460 detail of its last session (policy type, MX host, receiving IP, result
    type, success).
``tls_sessions``
    every SMTP session to an MX address (each once, however many recipient rows it served):
    the input of SMTP TLS reports (RFC 8460 §4.4), summed by :meth:`Store.tls_attempts` per
    policy applied with failure details.

:meth:`Store.intake` queues delivery rows and records verdicts in one transaction (the
gateway group-commits the messages it accepted together: one fsync for many).

Claims (:meth:`Store.claim`) are atomic (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``FOR UPDATE
SKIP LOCKED`` plus a per-destination advisory lock), honour a per-destination limit of rows
in flight, and take back rows whose lease expired. :meth:`Store.finish` only applies when the
caller still holds the lease (``owner``): a worker that lost its lease cannot overwrite the
new owner's state, though its attempt is still logged.

:func:`verdict_from_authentication` builds the verdict row from
:class:`mailmoat.auth.verify.Authentication` and the spool envelope.

SECURITY: values stored come from the network (addresses, HELO, reply texts); they are bound
as query parameters, never formatted into SQL. Schema names are checked against a strict
identifier grammar.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from mailmoat.errors import StoreError
from mailmoat.store._build import verdict_from_authentication
from mailmoat.store._schema import LATEST as SCHEMA_VERSION
from mailmoat.store._sqlite import SQLiteStore
from mailmoat.store._types import (
    FINAL_STATES,
    STATES,
    AggregateRow,
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryState,
    DkimRecord,
    NewDelivery,
    Outcome,
    OverrideReason,
    Store,
    TLSFailure,
    TLSPolicySummary,
    TLSPolicyType,
    TLSRecord,
    TLSSession,
    Verdict,
)

if TYPE_CHECKING:
    from mailmoat.store._postgres import PostgresStore


def __getattr__(name: str) -> Any:
    # psycopg is imported only when PostgreSQL is used (it costs ~0.3 s at every start).
    if name == "PostgresStore":
        from mailmoat.store._postgres import PostgresStore
        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FINAL_STATES",
    "SCHEMA_VERSION",
    "STATES",
    "AggregateRow",
    "Attempt",
    "AttemptResult",
    "Delivery",
    "DeliveryState",
    "DkimRecord",
    "NewDelivery",
    "Outcome",
    "OverrideReason",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "TLSFailure",
    "TLSPolicySummary",
    "TLSPolicyType",
    "TLSRecord",
    "TLSSession",
    "Verdict",
    "open_store",
    "verdict_from_authentication",
]


async def open_store(url: str | Path) -> Store:
    """Open the store at ``url`` and migrate it: ``sqlite:///abs/path``, ``sqlite:rel/path``,
    a plain path, or ``postgresql://user@host/db[?schema=NAME]``."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(text)
        query = parse_qs(parts.query)
        schema = query.pop("schema", ["public"])[0]
        rest = "&".join(f"{k}={v}" for k, values in query.items() for v in values)
        conninfo = parts._replace(query=rest).geturl()
        from mailmoat.store._postgres import PostgresStore

        return await PostgresStore.open(conninfo, schema=schema)
    if text.startswith("sqlite:"):
        path = text.removeprefix("sqlite:")
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise StoreError(f"no path in {text!r}")
        return await SQLiteStore.open(path)
    if "://" in text:
        raise StoreError(f"unknown store URL scheme in {text!r}")
    return await SQLiteStore.open(text)
