"""Finding the gateway's store from the command line (``--store``, ``--data-dir``, ``--config``).

Shared by ``mailmoat queue`` and ``mailmoat check``: the store is ``--store URL``, else
``store.url`` of ``--config`` (or of ``DATA_DIR/config.toml``), else ``DATA_DIR/mailmoat.db``;
the spool is ``spool.dir``, else ``DATA_DIR/spool``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mailmoat.errors import ConfigError
from mailmoat.gateway.config import default_data_dir, find_config

__all__ = ["locate_store", "store_options"]

F = TypeVar("F", bound=Callable[..., Any])


def store_options(func: F) -> F:
    """Add ``--store``, ``--data-dir`` and ``--config`` (parameters ``store_url``,
    ``data_dir``, ``config``)."""
    func = click.option("--store", "store_url", metavar="URL",
                        help="sqlite:PATH or postgresql://... (default: from the config).")(func)
    func = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        help="Data directory (its config.toml, mailmoat.db and spool/).")(func)
    func = click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
                        help="Config file naming store.url and spool.dir.")(func)
    return func


def locate_store(config: Path | None, data_dir: Path | None, store_url: str | None, *,
                 what: str = "queue") -> tuple[str, Path]:
    """The store URL and the spool directory; a SQLite file that does not exist is an error
    (``what`` names the database in the message), never silently created."""
    try:
        found = find_config(config, data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    base = data_dir or default_data_dir()
    url = store_url or (found.store_url if found else f"sqlite:{base / 'mailmoat.db'}")
    spool_dir = found.spool_dir if found else base / "spool"
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:")
        path = path[2:] if path.startswith("//") else path  # as open_store reads it
        if not Path(path).exists():
            raise click.ClickException(f"no {what} database at {path}")
    return url, spool_dir
