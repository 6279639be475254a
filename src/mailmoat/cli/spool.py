"""``mailmoat spool list|show``: look into the durable spool (read-only).

The spool directory is ``spool.dir`` of ``--config`` (or of ``DATA_DIR/config.toml``), else
``DATA_DIR/spool`` (``--data-dir``, default ``/var/lib/mailmoat`` as root, else
``~/.local/share/mailmoat``).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from mailmoat.errors import ConfigError, SpoolError
from mailmoat.gateway.config import default_data_dir, find_config
from mailmoat.spool import Spool, SpooledMessage

F = TypeVar("F", bound=Callable[..., Any])


def _location(func: F) -> F:
    func = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        help="Data directory (its config.toml, or its spool/).")(func)
    func = click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
                        help="Config file naming spool.dir.")(func)
    return func


def _spool(config: Path | None, data_dir: Path | None) -> Spool:
    try:
        found = find_config(config, data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    directory = found.spool_dir if found else (data_dir or default_data_dir()) / "spool"
    if not directory.is_dir():
        raise click.ClickException(f"no spool at {directory}")
    return Spool(directory)


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat(
        timespec="seconds"
    )


def _record(entry: SpooledMessage) -> dict[str, Any]:
    env = asdict(entry.envelope)
    env["tls"] = entry.envelope.tls.as_dict() if entry.envelope.tls else None
    return {"id": entry.id, "size": entry.size, "sha256": entry.sha256, **env}


def _printable(text: str) -> str:
    """Peer-supplied text made safe for a terminal (no control characters)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


@click.group()
def spool() -> None:
    """Inspect the durable message spool."""


@spool.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of envelopes.")
@_location
def list_messages(*, as_json: bool, config: Path | None, data_dir: Path | None) -> None:
    """List queued messages, oldest first."""
    store = _spool(config, data_dir)
    entries: list[SpooledMessage] = []
    for spool_id in store.list():
        try:
            entries.append(store.get(spool_id))
        except SpoolError as exc:
            click.echo(f"{spool_id}: {exc}", err=True)
    if as_json:
        click.echo(json.dumps([_record(e) for e in entries], ensure_ascii=True))
        return
    for e in entries:
        env = e.envelope
        tls = env.tls.version if env.tls else "plain"
        rcpts = ", ".join(r.address for r in env.rcpts[:3])
        if len(env.rcpts) > 3:
            rcpts += f" (+{len(env.rcpts) - 3})"
        click.echo("  ".join([
            e.id, _iso(env.received_at), f"{e.size:>9}", tls,
            _printable(f"<{env.mail_from}>"), _printable(rcpts),
        ]))
    click.echo(f"{len(entries)} message(s)", err=True)


@spool.command("show")
@click.argument("spool_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The envelope as JSON (no message).")
@click.option("--raw", is_flag=True, help="Only the message bytes, exactly as stored.")
@_location
def show(*, spool_id: str, as_json: bool, raw: bool, config: Path | None,
         data_dir: Path | None) -> None:
    """Show one message: its envelope, then the message."""
    store = _spool(config, data_dir)
    try:
        entry = store.get(spool_id)
        message = b"" if as_json else store.read_message(spool_id)
    except SpoolError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(_record(entry), ensure_ascii=True, indent=2))
        return
    if not raw:
        env = entry.envelope
        lines = [
            f"id: {entry.id}",
            f"received: {_iso(env.received_at)}",
            f"from: <{env.mail_from}>",
            *(f"to: <{r.address}>" + (f" notify={','.join(r.notify)}" if r.notify else "")
              + (f" orcpt={r.orcpt}" if r.orcpt else "") for r in env.rcpts),
            f"client: {env.client_ip} helo={env.helo}",
            f"tls: {env.tls.comment() if env.tls else 'none'}",
            f"auth: {env.auth_user or '-'}",
            f"size: {entry.size}  sha256: {entry.sha256}",
        ]
        click.echo("\n".join(_printable(line) for line in lines) + "\n")
    click.echo(message, nl=False)  # bytes go to the binary stream untouched
