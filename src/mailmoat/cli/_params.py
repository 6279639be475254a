"""Small pieces several commands share: bounded input files and parameter checks (layer L5)."""

from __future__ import annotations

import ipaddress
import sys

import click

__all__ = ["ip_callback", "read_input"]


def read_input(path: str, limit: int, hint: str) -> bytes:
    """Read a file (``-`` = stdin) of at most ``limit`` octets; a usage error otherwise."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint=hint) from None
    if len(data) > limit:
        raise click.BadParameter(f"{path}: larger than {limit} octets", param_hint=hint)
    return data


def ip_callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback: the value must be an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IPv4 or IPv6 address") from None
    return value.strip()
