"""``mailmoat user add|list|del``: manage submission users (the users file).

The users file is found, in order: ``--users-file``; ``auth.users_file`` of ``--config``;
``auth.users_file`` of ``DATA_DIR/config.toml``; ``DATA_DIR/users.jsonl`` (``--data-dir``,
default ``/var/lib/mailmoat`` as root, else ``~/.local/share/mailmoat``). See
:mod:`mailmoat.gateway.users` for its format and the address patterns.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mailmoat.errors import ConfigError
from mailmoat.gateway.config import USERS_FILE_NAME, default_data_dir, find_config
from mailmoat.gateway.users import UserDB, make_user


def _users_file(users_file: Path | None, config: Path | None, data_dir: Path | None) -> Path:
    if users_file is not None:
        return users_file
    try:
        found = find_config(config, data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if found is not None:
        return found.users_file
    return (data_dir or default_data_dir()) / USERS_FILE_NAME


def _load(path: Path) -> UserDB:
    try:
        return UserDB.load(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


_common = [
    click.option("--users-file", type=click.Path(dir_okay=False, path_type=Path),
                 help="The users file (JSON lines)."),
    click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
                 help="Config file naming auth.users_file."),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="Data directory (its config.toml or users.jsonl)."),
]


F = TypeVar("F", bound=Callable[..., Any])


def common(func: F) -> F:
    """The options that locate the users file."""
    for option in reversed(_common):
        func = option(func)
    return func


@click.group()
def user() -> None:
    """Manage the users allowed to submit mail (AUTH on submission listeners)."""


@user.command("add")
@click.argument("name")
@click.option("--address", "addresses", multiple=True, metavar="ADDR",
              help="Allowed MAIL FROM address or '*@domain' (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--replace", is_flag=True, help="Replace an existing user of that name.")
@common
def add(*, name: str, addresses: tuple[str, ...], password_stdin: bool, replace: bool,
        users_file: Path | None, config: Path | None, data_dir: Path | None) -> None:
    """Add user NAME (asks for the password)."""
    path = _users_file(users_file, config, data_dir)
    db = _load(path)
    if db.get(name) is not None and not replace:
        raise click.ClickException(f"user {name!r} exists already (use --replace)")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.ClickException("empty password")
    try:
        new = make_user(name, password, addresses)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        db.with_user(new).save(path)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    click.echo(f"user {new.name} {'replaced' if replace else 'added'} in {path}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output (no hashes).")
@common
def list_users(*, as_json: bool, users_file: Path | None, config: Path | None,
               data_dir: Path | None) -> None:
    """List users and their allowed addresses."""
    db = _load(_users_file(users_file, config, data_dir))
    users = db.all()
    if as_json:
        click.echo(json.dumps([{"user": u.name, "addresses": list(u.addresses)} for u in users]))
        return
    for u in users:
        click.echo(f"{u.name}\t{', '.join(u.addresses) or '(no address: cannot send)'}")


@user.command("del")
@click.argument("name")
@common
def delete(*, name: str, users_file: Path | None, config: Path | None,
           data_dir: Path | None) -> None:
    """Delete user NAME."""
    path = _users_file(users_file, config, data_dir)
    db = _load(path)
    try:
        db = db.without(name)
    except (KeyError, ValueError):
        raise click.ClickException(f"no user {name!r} in {path}") from None
    db.save(path)
    click.echo(f"user {name} deleted from {path}")
