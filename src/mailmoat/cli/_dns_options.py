"""``--resolver HOST[:PORT]`` for every command that asks DNS (layer L5).

Usage in a command module::

    from mailmoat.cli._dns_options import make_resolver, resolver_option

    @click.command()
    @resolver_option
    def spf(resolvers: tuple[str, ...], ...) -> None:
        resolver = make_resolver(resolvers)

The option may be given several times (tried in order); without it the nameservers of
/etc/resolv.conf are used. Values are checked when the command line is parsed, so a typo is a
usage error (exit 2), not a DNS failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import click

from mailmoat.errors import ConfigError
from mailmoat.net.dns import DNSResolver, parse_nameserver
from mailmoat.resolver import FakeResolver, Resolver

__all__ = ["ZONE_FILE_MAX", "load_zone", "make_resolver", "pick_resolver", "resolver_option",
           "zone_option"]

#: Largest zone file ``--zone`` reads (a test zone, not a registry dump).
ZONE_FILE_MAX = 4 * 1024 * 1024

F = TypeVar("F", bound=Callable[..., object])


def _check(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            parse_nameserver(value)
        except ConfigError as exc:
            raise click.BadParameter(str(exc).removeprefix("resolver: ")) from None
    return values


def resolver_option(command: F) -> F:
    """Add ``--resolver HOST[:PORT]`` (repeatable) as the ``resolvers`` parameter."""
    return click.option(
        "--resolver",
        "resolvers",
        multiple=True,
        metavar="HOST[:PORT]",
        callback=_check,
        help="DNS server to ask (IPv4, IPv6 or [IPv6]:PORT; repeat for fallbacks). "
        "Default: the nameservers of /etc/resolv.conf.",
    )(command)


def make_resolver(values: Sequence[str] = (), *, trust_ad: bool = False) -> Resolver:
    """The resolver a command should use: the ``--resolver`` servers, else resolv.conf."""
    return DNSResolver(list(values) or None, trust_ad=trust_ad)


def zone_option(command: F) -> F:
    """Add ``--zone FILE`` (answer DNS from a master file in memory) as the ``zone`` parameter."""
    return click.option(
        "--zone",
        "zone",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        metavar="FILE",
        help="Answer DNS from this zone file instead of the network.",
    )(command)


def load_zone(path: Path) -> FakeResolver:
    """A FakeResolver from a zone file; a clear usage error for an unreadable or bad file."""
    try:
        with path.open("rb") as f:
            data = f.read(ZONE_FILE_MAX + 1)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}",
                                 param_hint="--zone") from None
    if len(data) > ZONE_FILE_MAX:
        raise click.BadParameter(f"{path} is larger than {ZONE_FILE_MAX} octets",
                                 param_hint="--zone")
    try:
        return FakeResolver.from_zone_text(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--zone") from None


def pick_resolver(resolvers: Sequence[str], zone: Path | None, *,
                  trust_ad: bool = False) -> Resolver:
    """The resolver for ``--resolver`` / ``--zone`` (which exclude each other)."""
    if zone is not None and resolvers:
        raise click.UsageError("--zone and --resolver exclude each other")
    if zone is not None:
        return load_zone(zone)
    try:
        return make_resolver(resolvers, trust_ad=trust_ad)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
