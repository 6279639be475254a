"""The ``--resolver`` option shared by DNS-using commands."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mailmoat.cli._dns_options import make_resolver, resolver_option
from mailmoat.net.dns import DNSResolver, Nameserver, nameservers_from_resolv_conf


@click.command()
@resolver_option
def probe(resolvers: tuple[str, ...]) -> None:
    resolver = make_resolver(resolvers)
    assert isinstance(resolver, DNSResolver)
    click.echo(" ".join(str(ns) for ns in resolver.nameservers))


def test_repeatable_and_ordered() -> None:
    result = CliRunner().invoke(
        probe, ["--resolver", "192.0.2.53", "--resolver", "[::1]:5353", "--resolver", "::2"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["192.0.2.53:53", "[::1]:5353", "[::2]:53"]


def test_default_is_resolv_conf() -> None:
    result = CliRunner().invoke(probe, [])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(ns) for ns in nameservers_from_resolv_conf()]


@pytest.mark.parametrize("bad", ["dns.example", "192.0.2.1:99999", "[::1"])
def test_bad_value_is_a_usage_error(bad: str) -> None:
    result = CliRunner().invoke(probe, ["--resolver", bad])
    assert result.exit_code == 2
    assert "--resolver" in result.output


def test_help_shows_the_option() -> None:
    result = CliRunner().invoke(probe, ["--help"])
    assert "--resolver HOST[:PORT]" in result.output


def test_make_resolver_trust_ad() -> None:
    resolver = make_resolver(["127.0.0.1:53"], trust_ad=True)
    assert isinstance(resolver, DNSResolver)
    assert resolver.trust_ad
    assert resolver.nameservers == [Nameserver(host="127.0.0.1", port=53)]
