"""``mailmoat queue list|show|retry|delete``: look into and act on the delivery queue.

The store is ``--store URL``, else ``store.url`` of ``--config`` (or of
``DATA_DIR/config.toml``), else ``DATA_DIR/mailmoat.db``; the spool (for ``delete``) is
``spool.dir``, else ``DATA_DIR/spool``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mailmoat.cli._store_options import locate_store, store_options
from mailmoat.clock import SYSTEM_CLOCK
from mailmoat.errors import SpoolError, StoreError
from mailmoat.spool import Spool
from mailmoat.store import STATES, Attempt, Delivery, Store, TLSRecord, open_store

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _options(func: F) -> F:
    func = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)
    return store_options(func)


_locate = locate_store


def _run(url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            store = await open_store(url)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            return await action(store)
        finally:
            await store.close()
    return asyncio.run(main())


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat(
        timespec="seconds")


def _printable(text: str | None) -> str:
    """Peer-supplied text made safe for a terminal (no control characters)."""
    if text is None:
        return "-"
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _record(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "spool_id": d.spool_id, "recipient": d.recipient,
        "destination": d.destination, "state": d.state, "attempts": d.attempts,
        "created_at": _iso(d.created_at), "next_attempt_at": _iso(d.next_attempt_at),
        "lease_until": _iso(d.lease_until), "owner": d.owner, "last_error": d.last_error,
        "last_reply": None if d.last_reply_code is None else {
            "code": d.last_reply_code, "text": d.last_reply_text},
        "tls": _tls(d.tls),
    }


def _tls(tls: TLSRecord | None) -> dict[str, Any] | None:
    """The TLS of an attempt, with its RFC 8460 detail (policy type, MX, receiving IP, result
    type of a failure, whether it counts as a successful TLS session)."""
    if tls is None:
        return None
    return {
        "version": tls.version, "cipher": tls.cipher, "verified": tls.verified,
        "policy": tls.policy, "policy_type": tls.policy_type, "mx_host": tls.mx_host,
        "receiving_ip": tls.receiving_ip, "result_type": tls.result_type,
        "success": tls.success,
    }


def _attempt(a: Attempt) -> dict[str, Any]:
    r = a.result
    return {
        "attempt": a.attempt, "outcome": r.outcome, "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at), "next_attempt_at": _iso(r.next_attempt_at),
        "reply": None if r.reply_code is None else {
            "code": r.reply_code, "status": r.reply_status, "text": r.reply_text},
        "error": r.error, "remote": r.remote,
        "tls": _tls(r.tls),
    }


@click.group()
def queue() -> None:
    """Inspect and manage the delivery queue."""


@queue.command("list")
@_options
@click.option("--state", "states", multiple=True, type=click.Choice(STATES),
              help="Only rows in this state (repeatable). Default: all but delivered.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
def list_(*, config: Path | None, data_dir: Path | None, store_url: str | None, as_json: bool,
          states: tuple[str, ...], limit: int) -> None:
    """List queued deliveries, soonest first."""
    url, _ = _locate(config, data_dir, store_url)
    wanted = tuple(states) if states else tuple(s for s in STATES if s != "delivered")
    rows = _run(url, lambda s: s.list_deliveries(states=wanted, limit=limit))  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps([_record(d) for d in rows], indent=2))
        return
    if not rows:
        click.echo("queue is empty")
        return
    click.echo(f"{'ID':>6}  {'STATE':9} {'TRIES':>5}  {'NEXT ATTEMPT':25} "
               f"{'RECIPIENT':30} DESTINATION")
    for d in rows:
        click.echo(f"{d.id:>6}  {d.state:9} {d.attempts:>5}  {_iso(d.next_attempt_at):25} "
                   f"{_printable(d.recipient):30} {_printable(d.destination)}")
        if d.last_error:
            click.echo(f"{'':8}last error: {_printable(d.last_error)[:200]}")


@queue.command()
@_options
@click.argument("delivery_id", type=int)
def show(*, config: Path | None, data_dir: Path | None, store_url: str | None, as_json: bool,
         delivery_id: int) -> None:
    """Show one delivery and its attempts."""
    url, _ = _locate(config, data_dir, store_url)

    async def fetch(store: Store) -> tuple[Delivery | None, list[Attempt]]:
        return await store.get(delivery_id), await store.attempts(delivery_id)

    row, attempts = _run(url, fetch)
    if row is None:
        raise click.ClickException(f"no delivery {delivery_id}")
    record = {**_record(row), "attempts_log": [_attempt(a) for a in attempts]}
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    for key, value in record.items():
        if key == "attempts_log":
            continue
        click.echo(f"{key:16} {_printable(value if isinstance(value, str) else json.dumps(value))}")
    for a in record["attempts_log"]:
        click.echo(f"attempt {a['attempt']}: {a['outcome']} at {a['finished_at']} "
                   f"via {_printable(a['remote'])}: "
                   f"{_printable(a['error'] or (a['reply'] or {}).get('text'))}")
        tls = a["tls"]
        if tls is not None and (tls["version"] or tls["policy_type"] or tls["result_type"]):
            verdict = ("-" if tls["success"] is None
                       else "ok" if tls["success"] else "FAILED")
            click.echo(f"{'':10}tls {_printable(tls['version'] or 'none')} "
                       f"{_printable(tls['cipher'] or '')} policy="
                       f"{_printable(tls['policy'])}/{_printable(tls['policy_type'])} "
                       f"mx={_printable(tls['mx_host'])}[{_printable(tls['receiving_ip'])}] "
                       f"tls-rpt={verdict}"
                       + (f" result={_printable(tls['result_type'])}"
                          if tls["result_type"] else ""))


@queue.command()
@_options
@click.argument("delivery_id", type=int)
def retry(*, config: Path | None, data_dir: Path | None, store_url: str | None, as_json: bool,
          delivery_id: int) -> None:
    """Make a deferred (or bounced) delivery due now."""
    url, _ = _locate(config, data_dir, store_url)
    done = _run(url, lambda s: s.retry(delivery_id, now=SYSTEM_CLOCK.now()))
    if as_json:
        click.echo(json.dumps({"id": delivery_id, "retried": done}))
    if not done:
        raise click.ClickException(
            f"delivery {delivery_id} not found, in flight, or already delivered")
    if not as_json:
        click.echo(f"delivery {delivery_id} queued for an attempt now")


@queue.command()
@_options
@click.argument("delivery_id", type=int)
def delete(*, config: Path | None, data_dir: Path | None, store_url: str | None, as_json: bool,
           delivery_id: int) -> None:
    """Delete a delivery (the recipient will not get the message). The message leaves the
    spool when no other recipient still waits for it."""
    url, spool_dir = _locate(config, data_dir, store_url)

    async def remove(store: Store) -> tuple[bool, bool]:
        row = await store.get(delivery_id)
        if row is None or not await store.delete(delivery_id):
            return False, False
        if await store.unfinished(row.spool_id) == 0 and spool_dir.is_dir():
            try:
                Spool(spool_dir).remove(row.spool_id)
            except SpoolError:
                return True, False
            return True, True
        return True, False

    deleted, unspooled = _run(url, remove)
    if as_json:
        click.echo(json.dumps({"id": delivery_id, "deleted": deleted,
                               "message_removed": unspooled}))
    if not deleted:
        raise click.ClickException(f"no delivery {delivery_id}")
    if not as_json:
        click.echo(f"delivery {delivery_id} deleted"
                   + (" (message removed from the spool)" if unspooled else ""))
