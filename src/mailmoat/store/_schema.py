"""The schema, its versioned migrations and the SQL both backends share.

SQL is written once with ``?`` placeholders (SQLite's paramstyle) and ``{id}`` / ``{float}``
/ ``{bool}`` type slots; :func:`sql_for` adapts it to PostgreSQL (``%s``). Times are seconds
since the epoch (``double precision``), so a report period is a plain range and both backends
compare the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from mailmoat.store._types import (
    AggregateRow,
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryState,
    DkimRecord,
    OverrideReason,
    TLSFailure,
    TLSPolicySummary,
    TLSRecord,
    Verdict,
)

Dialect = Literal["sqlite", "postgres"]

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "DOUBLE PRECISION",
               "bool": "BOOLEAN", "bigint": "INTEGER"},
    "postgres": {"id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                 "float": "DOUBLE PRECISION", "bool": "BOOLEAN", "bigint": "BIGINT"},
}

#: (version, statements). Append only: a released migration is never edited.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        # (a) one row per received message; the DMARC aggregate columns are flat.
        """CREATE TABLE verdicts (
            spool_id TEXT PRIMARY KEY,
            received_at {float} NOT NULL,
            client_ip TEXT, helo TEXT, mail_from TEXT, mail_from_domain TEXT, auth_user TEXT,
            tls_version TEXT, tls_cipher TEXT,
            header_from TEXT,
            spf_result TEXT, spf_domain TEXT, spf_scope TEXT, spf_aligned {bool} NOT NULL,
            dkim_results TEXT NOT NULL,
            arc_result TEXT, arc_sealers TEXT NOT NULL,
            dmarc_domain TEXT, dmarc_result TEXT, dmarc_policy TEXT,
            dmarc_dkim TEXT, dmarc_spf TEXT,
            disposition TEXT,
            override_reasons TEXT NOT NULL,
            size {bigint}
        )""",
        "CREATE INDEX verdicts_report ON verdicts (dmarc_domain, received_at)",
        "CREATE INDEX verdicts_received ON verdicts (received_at)",
        # (b) one row per (message, recipient, destination).
        """CREATE TABLE deliveries (
            id {id},
            spool_id TEXT NOT NULL,
            recipient TEXT NOT NULL,
            destination TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN
                ('queued', 'in-flight', 'deferred', 'delivered', 'bounced')),
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at {float} NOT NULL,
            next_attempt_at {float} NOT NULL,
            lease_until {float}, owner TEXT,
            last_error TEXT, last_reply_code INTEGER, last_reply_text TEXT,
            tls_version TEXT, tls_cipher TEXT, tls_verified {bool}, tls_policy TEXT,
            updated_at {float} NOT NULL
        )""",
        "CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at)",
        "CREATE INDEX deliveries_lease ON deliveries (state, lease_until)",
        "CREATE INDEX deliveries_dest ON deliveries (destination, state)",
        "CREATE INDEX deliveries_spool ON deliveries (spool_id)",
        # (c) the attempts log (TLS per attempt: RFC 8460 reporting later).
        """CREATE TABLE attempts (
            id {id},
            delivery_id {bigint} NOT NULL,
            spool_id TEXT NOT NULL, recipient TEXT NOT NULL, destination TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            started_at {float} NOT NULL, finished_at {float} NOT NULL,
            next_attempt_at {float},
            reply_code INTEGER, reply_status TEXT, reply_text TEXT, error TEXT, remote TEXT,
            tls_version TEXT, tls_cipher TEXT, tls_verified {bool}, tls_policy TEXT
        )""",
        "CREATE INDEX attempts_delivery ON attempts (delivery_id)",
        "CREATE INDEX attempts_time ON attempts (destination, finished_at)",
    )),
    (2, (
        # RFC 8460 detail of the last session of an attempt (and of a delivery's last
        # attempt): policy-type, receiving-mx-hostname, receiving-ip, result-type, success.
        *(f"ALTER TABLE {table} ADD COLUMN {column}"
          for table in ("deliveries", "attempts")
          for column in ("tls_policy_type TEXT", "tls_mx_host TEXT", "tls_receiving_ip TEXT",
                         "tls_result_type TEXT", "tls_success {bool}")),
        # (d) every SMTP session to an MX address, once (id), for SMTP TLS reports.
        """CREATE TABLE tls_sessions (
            id TEXT PRIMARY KEY,
            at {float} NOT NULL,
            spool_id TEXT,
            policy_type TEXT NOT NULL,
            policy_domain TEXT NOT NULL,
            policy_string TEXT NOT NULL,
            mx_patterns TEXT NOT NULL,
            mx_host TEXT, receiving_ip TEXT, result_type TEXT, success {bool}, reason TEXT
        )""",
        "CREATE INDEX tls_sessions_report ON tls_sessions (policy_domain, at)",
    )),
)
LATEST = MIGRATIONS[-1][0]

VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(version INTEGER PRIMARY KEY, applied_at {float} NOT NULL)"
)


def ddl(statement: str, dialect: Dialect) -> str:
    return statement.format(**_TYPES[dialect])


def sql_for(statement: str, dialect: Dialect) -> str:
    return statement.replace("?", "%s") if dialect == "postgres" else statement


# --- verdicts ---------------------------------------------------------------------------------
VERDICT_COLUMNS = (
    "spool_id", "received_at", "client_ip", "helo", "mail_from", "mail_from_domain", "auth_user",
    "tls_version", "tls_cipher", "header_from", "spf_result", "spf_domain", "spf_scope",
    "spf_aligned", "dkim_results", "arc_result", "arc_sealers", "dmarc_domain", "dmarc_result",
    "dmarc_policy", "dmarc_dkim", "dmarc_spf", "disposition", "override_reasons", "size",
)
INSERT_VERDICT = (
    f"INSERT INTO verdicts ({', '.join(VERDICT_COLUMNS)}) "  # noqa: S608 (constant SQL fragments)
    f"VALUES ({', '.join('?' for _ in VERDICT_COLUMNS)}) "
    "ON CONFLICT (spool_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in VERDICT_COLUMNS[1:])
)
SELECT_VERDICT = f"SELECT {', '.join(VERDICT_COLUMNS)} FROM verdicts WHERE spool_id = ?"  # noqa: S608 (constant SQL fragments)


def _canonical(value: Any) -> str:
    # Sorted, compact JSON: equal result sets give equal text, so GROUP BY groups them.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _dkim_json(records: Sequence[DkimRecord]) -> str:
    items = [{"domain": r.domain, "selector": r.selector, "result": r.result,
              "aligned": r.aligned} for r in records]
    return _canonical(sorted(items, key=lambda d: (d["domain"], d["selector"] or "",
                                                   d["result"], d["aligned"])))


def _reasons_json(reasons: Sequence[OverrideReason]) -> str:
    items = [{"type": r.type, "comment": r.comment} for r in reasons]
    return _canonical(sorted(items, key=lambda d: (d["type"], d["comment"] or "")))


def _dkim_from(text: str) -> tuple[DkimRecord, ...]:
    return tuple(DkimRecord(domain=d["domain"], selector=d["selector"], result=d["result"],
                            aligned=bool(d["aligned"])) for d in json.loads(text))


def _reasons_from(text: str) -> tuple[OverrideReason, ...]:
    return tuple(OverrideReason(type=d["type"], comment=d["comment"]) for d in json.loads(text))


def verdict_params(v: Verdict) -> tuple[Any, ...]:
    return (
        v.spool_id, v.received_at, v.client_ip, v.helo, v.mail_from, v.mail_from_domain,
        v.auth_user, v.tls_version, v.tls_cipher, v.header_from, v.spf_result, v.spf_domain,
        v.spf_scope, v.spf_aligned, _dkim_json(v.dkim), v.arc_result,
        _canonical(list(v.arc_sealers)), v.dmarc_domain, v.dmarc_result, v.dmarc_policy,
        v.dmarc_dkim, v.dmarc_spf, v.disposition, _reasons_json(v.overrides), v.size,
    )


def verdict_from_row(row: Sequence[Any]) -> Verdict:
    d = dict(zip(VERDICT_COLUMNS, row, strict=True))
    d["spf_aligned"] = bool(d["spf_aligned"])
    d["dkim"] = _dkim_from(d.pop("dkim_results"))
    d["arc_sealers"] = tuple(json.loads(d["arc_sealers"]))
    d["overrides"] = _reasons_from(d.pop("override_reasons"))
    return Verdict(**d)


# RFC 7489 Appendix C: a report covers one policy domain over a period; each ``record`` is a
# distinct (source_ip, policy_evaluated, identifiers, auth_results) with its message count.
DMARC_AGGREGATE = """
SELECT client_ip, COUNT(*) AS n, disposition, dmarc_dkim, dmarc_spf, override_reasons,
       header_from, mail_from_domain, dkim_results, spf_domain, spf_scope, spf_result
FROM verdicts
WHERE dmarc_domain = ? AND received_at >= ? AND received_at < ?
GROUP BY client_ip, disposition, dmarc_dkim, dmarc_spf, override_reasons,
         header_from, mail_from_domain, dkim_results, spf_domain, spf_scope, spf_result
ORDER BY n DESC, client_ip, header_from, disposition
"""


# DKIM selectors of ``domain`` that verified ("pass") in received mail since a time, most
# recently seen first. Only a pass proves the selector's key was published under the domain: a
# forged message can name any s= for any d=, but cannot make it verify. Names compare ASCII
# case-insensitively (RFC 4343 §3; SQLite's lower() and lower(... COLLATE "C") in PostgreSQL
# fold ASCII letters only, as DNS does). Row-wise JSON: one expression per dialect.
DKIM_SELECTORS_SEEN: dict[Dialect, str] = {
    "sqlite": """
SELECT lower(json_extract(sig.value, '$.selector')) AS selector, MAX(v.received_at) AS seen
FROM verdicts AS v, json_each(v.dkim_results) AS sig
WHERE v.received_at >= ?
  AND lower(json_extract(sig.value, '$.domain')) = ?
  AND json_extract(sig.value, '$.result') = 'pass'
  AND json_extract(sig.value, '$.selector') IS NOT NULL
GROUP BY 1 ORDER BY seen DESC, selector LIMIT ?
""",
    "postgres": """
SELECT lower(sig->>'selector' COLLATE "C") AS selector, MAX(v.received_at) AS seen
FROM verdicts AS v, jsonb_array_elements(v.dkim_results::jsonb) AS sig
WHERE v.received_at >= %s
  AND lower(sig->>'domain' COLLATE "C") = %s
  AND sig->>'result' = 'pass'
  AND sig->>'selector' IS NOT NULL
GROUP BY 1 ORDER BY seen DESC, selector LIMIT %s
""",
}


def selectors_seen_params(domain: str, since: float | None, limit: int) -> tuple[Any, ...]:
    """The query's parameters: the domain ASCII-lower-cased without its root dot (as the SQL
    folds the stored one), no lower time bound for ``since=None``."""
    name = domain_key(domain)
    return (float("-inf") if since is None else since, name, max(0, limit))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def aggregate_from_row(row: Sequence[Any]) -> AggregateRow:
    return AggregateRow(
        source_ip=row[0], count=int(row[1]), disposition=row[2], dkim=row[3], spf=row[4],
        reasons=_reasons_from(row[5]), header_from=row[6], envelope_from=row[7],
        dkim_results=_dkim_from(row[8]), spf_domain=row[9], spf_scope=row[10],
        spf_result=row[11],
    )


# --- deliveries -------------------------------------------------------------------------------
DELIVERY_COLUMNS = (
    "id", "spool_id", "recipient", "destination", "state", "attempts", "created_at",
    "next_attempt_at", "lease_until", "owner", "last_error", "last_reply_code",
    "last_reply_text", "tls_version", "tls_cipher", "tls_verified", "tls_policy", "updated_at",
    "tls_policy_type", "tls_mx_host", "tls_receiving_ip", "tls_result_type", "tls_success",
)
SELECT_DELIVERY = f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM deliveries"  # noqa: S608 (constant SQL fragments)
INSERT_DELIVERY = (
    "INSERT INTO deliveries (spool_id, recipient, destination, state, attempts, created_at, "
    "next_attempt_at, updated_at) VALUES (?, ?, ?, 'queued', 0, ?, ?, ?) RETURNING id"
)
#: Due: waiting and its time has come, or claimed by a worker whose lease ran out (the worker
#: died or hung: the row goes back to the queue - the at-least-once window).
DUE = (
    "((state IN ('queued', 'deferred') AND next_attempt_at <= ?) "
    "OR (state = 'in-flight' AND lease_until <= ?))"
)
IN_FLIGHT_BY_DEST = (
    "SELECT destination, COUNT(*) FROM deliveries "
    "WHERE state = 'in-flight' AND lease_until > ? GROUP BY destination"
)
CLAIM_ONE = (
    "UPDATE deliveries SET state = 'in-flight', owner = ?, lease_until = ?, "
    "attempts = attempts + 1, updated_at = ? WHERE id = ?"
)
FINISH = (
    "UPDATE deliveries SET state = ?, owner = NULL, lease_until = NULL, next_attempt_at = ?, "
    "last_error = ?, last_reply_code = ?, last_reply_text = ?, tls_version = ?, "
    "tls_cipher = ?, tls_verified = ?, tls_policy = ?, tls_policy_type = ?, tls_mx_host = ?, "
    "tls_receiving_ip = ?, tls_result_type = ?, tls_success = ?, updated_at = ? "
    "WHERE id = ? AND state = 'in-flight' AND owner = ?"
)
INSERT_ATTEMPT = (
    "INSERT INTO attempts (delivery_id, spool_id, recipient, destination, attempt, outcome, "
    "started_at, finished_at, next_attempt_at, reply_code, reply_status, reply_text, error, "
    "remote, tls_version, tls_cipher, tls_verified, tls_policy, tls_policy_type, tls_mx_host, "
    "tls_receiving_ip, tls_result_type, tls_success) "
    "SELECT id, spool_id, recipient, destination, attempts, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "?, ?, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?"
)
ATTEMPT_COLUMNS = (
    "delivery_id", "spool_id", "recipient", "destination", "attempt", "outcome", "started_at",
    "finished_at", "next_attempt_at", "reply_code", "reply_status", "reply_text", "error",
    "remote", "tls_version", "tls_cipher", "tls_verified", "tls_policy", "tls_policy_type",
    "tls_mx_host", "tls_receiving_ip", "tls_result_type", "tls_success",
)
SELECT_ATTEMPTS = (
    f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts WHERE delivery_id = ? ORDER BY id"  # noqa: S608 (constant SQL fragments)
)
RENEW = (
    "UPDATE deliveries SET lease_until = ? WHERE id = ? AND state = 'in-flight' AND owner = ?"
)
RETRY = (
    "UPDATE deliveries SET state = 'queued', next_attempt_at = ?, owner = NULL, "
    "lease_until = NULL, updated_at = ? WHERE id = ? AND state IN ('queued', 'deferred', "
    "'bounced')"
)
DELETE = "DELETE FROM deliveries WHERE id = ?"
UNFINISHED = (
    "SELECT COUNT(*) FROM deliveries WHERE spool_id = ? "
    "AND state NOT IN ('delivered', 'bounced')"
)


def _tls_params(tls: TLSRecord) -> tuple[Any, ...]:
    return (tls.version, tls.cipher, tls.verified, tls.policy, tls.policy_type, tls.mx_host,
            tls.receiving_ip, tls.result_type, tls.success)


def finish_params(result: AttemptResult, now: float, delivery_id: int, owner: str,
                  next_default: float) -> tuple[Any, ...]:
    tls = result.tls or TLSRecord()
    next_at = result.next_attempt_at if result.next_attempt_at is not None else next_default
    return (
        result.outcome, next_at, result.error, result.reply_code, result.reply_text,
        *_tls_params(tls), now, delivery_id, owner,
    )


def attempt_params(result: AttemptResult, delivery_id: int) -> tuple[Any, ...]:
    tls = result.tls or TLSRecord()
    return (
        result.outcome, result.started_at, result.finished_at, result.next_attempt_at,
        result.reply_code, result.reply_status, result.reply_text, result.error, result.remote,
        *_tls_params(tls), delivery_id,
    )


def _tls(d: dict[str, Any]) -> TLSRecord | None:
    values = {name: d["tls_" + name] for name in (
        "version", "cipher", "verified", "policy", "policy_type", "mx_host", "receiving_ip",
        "result_type", "success")}
    if all(v is None for v in values.values()):
        return None
    for flag in ("verified", "success"):
        if values[flag] is not None:
            values[flag] = bool(values[flag])
    return TLSRecord(**values)


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    d = dict(zip(DELIVERY_COLUMNS, row, strict=True))
    state: DeliveryState = d["state"]
    return Delivery(
        id=int(d["id"]), spool_id=d["spool_id"], recipient=d["recipient"],
        destination=d["destination"], state=state, attempts=int(d["attempts"]),
        created_at=float(d["created_at"]), next_attempt_at=float(d["next_attempt_at"]),
        lease_until=None if d["lease_until"] is None else float(d["lease_until"]),
        owner=d["owner"], last_error=d["last_error"], last_reply_code=d["last_reply_code"],
        last_reply_text=d["last_reply_text"],
        tls=_tls(d), updated_at=float(d["updated_at"]),
    )


def attempt_from_row(row: Sequence[Any]) -> Attempt:
    d = dict(zip(ATTEMPT_COLUMNS, row, strict=True))
    return Attempt(
        delivery_id=int(d["delivery_id"]), spool_id=d["spool_id"], recipient=d["recipient"],
        destination=d["destination"], attempt=int(d["attempt"]),
        result=AttemptResult(
            outcome=d["outcome"], started_at=float(d["started_at"]),
            finished_at=float(d["finished_at"]), next_attempt_at=d["next_attempt_at"],
            reply_code=d["reply_code"], reply_status=d["reply_status"],
            reply_text=d["reply_text"], error=d["error"], remote=d["remote"],
            tls=_tls(d),
        ),
    )


# --- TLS sessions (RFC 8460) ------------------------------------------------------------------
#: Octets of a session's reason kept (``failure-reason-code``): a report groups by it, and the
#: text quotes the server, so it is bounded.
TLS_REASON_MAX = 300
INSERT_TLS_SESSION = (
    "INSERT INTO tls_sessions (id, at, spool_id, policy_type, policy_domain, policy_string, "
    "mx_patterns, mx_host, receiving_ip, result_type, success, reason) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)


def domain_key(domain: str) -> str:
    """A domain as stored and compared: ASCII lower case, no root dot (RFC 4343)."""
    return domain.rstrip(".").translate(_ASCII_LOWER)


def tls_session_rows(result: AttemptResult, spool_id: str | None) -> list[tuple[Any, ...]]:
    """The ``tls_sessions`` rows of an attempt (its TLSRecord's sessions), at its end time."""
    if result.tls is None:
        return []
    return [
        (s.id, result.finished_at, spool_id, s.policy_type, domain_key(s.policy_domain),
         _canonical(list(s.policy_string)), _canonical(list(s.mx_patterns)), s.mx_host,
         s.receiving_ip, s.result_type, s.success,
         None if s.reason is None else s.reason[:TLS_REASON_MAX])
        for s in result.tls.sessions
    ]


_TLS_WHERE = "policy_domain = ? AND at >= ? AND at < ? AND success IS NOT NULL"
TLS_SUMMARY = (
    "SELECT policy_type, policy_string, mx_patterns, "  # noqa: S608 (constant SQL fragments)
    "SUM(CASE WHEN success THEN 1 ELSE 0 END), SUM(CASE WHEN success THEN 0 ELSE 1 END) "
    f"FROM tls_sessions WHERE {_TLS_WHERE} GROUP BY policy_type, policy_string, mx_patterns"
)
TLS_FAILURES = (
    "SELECT policy_type, policy_string, mx_patterns, result_type, mx_host, "  # noqa: S608 (constant SQL fragments)
    "receiving_ip, reason, COUNT(*) "
    f"FROM tls_sessions WHERE {_TLS_WHERE} AND NOT success "
    "GROUP BY policy_type, policy_string, mx_patterns, result_type, mx_host, receiving_ip, "
    "reason"
)


def tls_params(domain: str, begin: float, end: float) -> tuple[Any, ...]:
    return (domain_key(domain), begin, end)


def tls_summaries(domain: str, summary: Sequence[Sequence[Any]],
                  failures: Sequence[Sequence[Any]]) -> list[TLSPolicySummary]:
    """Both queries' rows as report entries, in a backend-independent order (policy type and
    text; failures by count, most first, then their fields)."""
    by_policy: dict[tuple[str, str, str], list[TLSFailure]] = {}
    for ptype, pstring, patterns, result_type, mx, ip, reason, n in failures:
        by_policy.setdefault((ptype, pstring, patterns), []).append(TLSFailure(
            result_type=result_type or "validation-failure", mx_host=mx, receiving_ip=ip,
            reason=reason, count=int(n)))
    out = []
    for ptype, pstring, patterns, ok, failed in summary:
        found = by_policy.get((ptype, pstring, patterns), [])
        found.sort(key=lambda f: (-f.count, f.result_type, f.mx_host or "",
                                  f.receiving_ip or "", f.reason or ""))
        out.append(TLSPolicySummary(
            policy_type=ptype, policy_domain=domain_key(domain),
            policy_string=tuple(json.loads(pstring)), mx_patterns=tuple(json.loads(patterns)),
            successful=int(ok), failed=int(failed), failures=tuple(found)))
    out.sort(key=lambda p: (p.policy_type, p.policy_string, p.mx_patterns))
    return out


def list_query(states: tuple[DeliveryState, ...] | None, spool_id: str | None,
               limit: int) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if states is not None:
        where.append(f"state IN ({', '.join('?' for _ in states)})")
        params.extend(states)
    if spool_id is not None:
        where.append("spool_id = ?")
        params.append(spool_id)
    query = SELECT_DELIVERY + (" WHERE " + " AND ".join(where) if where else "")
    params.append(limit)
    return query + " ORDER BY next_attempt_at, id LIMIT ?", params


def pick(candidates: Sequence[Sequence[Any]], busy: dict[str, int], limit: int,
         per_destination: int) -> list[int]:
    """From due rows (id, destination), oldest first, the ids to claim: at most ``limit``,
    and at most ``per_destination`` in flight per destination counting ``busy``."""
    chosen: list[int] = []
    counts = dict(busy)
    for row_id, destination in candidates:
        if len(chosen) >= limit:
            break
        if counts.get(destination, 0) >= per_destination:
            continue
        counts[destination] = counts.get(destination, 0) + 1
        chosen.append(int(row_id))
    return chosen
