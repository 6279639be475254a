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
from typing import TypeVar

import click

from mailmoat.errors import ConfigError
from mailmoat.net.dns import DNSResolver, parse_nameserver
from mailmoat.resolver import Resolver

__all__ = ["make_resolver", "resolver_option"]

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
