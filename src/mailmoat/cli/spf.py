"""``mailmoat spf``: may this IP send mail for this sender? (RFC 7208; layer L5)

::

    mailmoat spf --ip 192.0.2.1 --mail-from alice@example.com [--helo mx.example.net]
                 [--resolver HOST[:PORT] ...] [--zone FILE] [--json]

Checks the MAIL FROM identity (``--mail-from ''`` or ``'<>'``, the null reverse-path, checks
the HELO identity as RFC 7208 §2.4 says; so does giving only ``--helo``) and prints the result,
the ``exp=`` explanation, the DNS lookup counts and the evaluation trace. ``--json`` prints one
JSON object with the keys ``result``, ``explanation``, ``lookups``, ``void_lookups``,
``trace`` (and ``mechanism``, ``domain``, ``identity``, ``problem``).

DNS comes from ``--resolver`` (default: /etc/resolv.conf), or, with ``--zone FILE``, from a
master file (RFC 1035 §5) loaded in memory: an offline check of a policy before publishing
it, with no query leaving the machine.

Exit codes:

* 0 -- an SPF result was computed (any of pass, fail, softfail, neutral, none, temperror,
  permerror: the result is the output, not an error);
* 1 -- the check could not run (no nameserver configured);
* 2 -- usage error: bad option value, unreadable or malformed zone file, an IP that is not an
  address, neither ``--mail-from`` nor ``--helo`` given.

SECURITY: everything printed from DNS (records, explanations) is printed as plain text,
never as rich markup.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailmoat import limits
from mailmoat.auth.spf import SPFOptions, SPFResult, SPFVerdict, check_helo, check_mailfrom
from mailmoat.cli._dns_options import pick_resolver, resolver_option, zone_option
from mailmoat.cli._params import ip_callback

__all__ = ["spf"]

_STYLE = {
    SPFVerdict.PASS: "bold green",
    SPFVerdict.FAIL: "bold red",
    SPFVerdict.SOFTFAIL: "yellow",
    SPFVerdict.NEUTRAL: "cyan",
    SPFVerdict.NONE: "dim",
    SPFVerdict.TEMPERROR: "magenta",
    SPFVerdict.PERMERROR: "bold magenta",
}






def _print_human(result: SPFResult, console: Console) -> None:
    line = Text("SPF ")
    line.append(result.result.value, style=_STYLE[result.result])
    line.append(f"  ({result.identity.value} identity, domain {result.domain})")
    console.print(line)
    if result.mechanism is not None:
        console.print(Text(f"matched: {result.mechanism}"))
    if result.explanation is not None:
        console.print(Text(f"explanation: {result.explanation}"))
    if result.problem is not None:
        console.print(Text(f"problem: {result.problem}"))
    console.print(Text(
        f"DNS lookups: {result.lookups}/{limits.SPF_MAX_DNS_MECHANISMS}, "
        f"void lookups: {result.void_lookups}/{limits.SPF_MAX_VOID_LOOKUPS}"
    ))
    if not result.trace:
        return
    table = Table(title="evaluation trace", show_lines=False)
    for column in ("depth", "domain", "term", "match", "DNS"):
        table.add_column(column)
    for step in result.trace:
        match = "" if step.matched is None else ("yes" if step.matched else "no")
        term = step.term if step.kind != "record" else f"record: {step.term}"
        if step.note:
            term = f"{term}  [{step.note}]" if term else f"[{step.note}]"
        table.add_row(str(step.depth), Text(step.domain), Text(term), match,
                      Text("\n".join(step.queries)))
    console.print(table)


@click.command()
@click.option("--ip", "ip", required=True, callback=ip_callback, metavar="IP",
              help="The SMTP client's address (IPv4 or IPv6).")
@click.option("--mail-from", "mail_from", default=None, metavar="ADDR",
              help="The MAIL FROM address; '' or '<>' (null path) checks the HELO identity.")
@click.option("--helo", default=None, metavar="NAME", help="The HELO/EHLO name (%{h} macro).")
@resolver_option
@zone_option
@click.option("--timeout", type=click.FloatRange(min=0.1, max=300.0),
              default=limits.SPF_EVALUATION_TIMEOUT, show_default=True,
              help="Overall evaluation deadline in seconds (RFC 7208 §4.6.4: temperror after).")
@click.option("--receiver", default="unknown", metavar="NAME",
              help="This host's domain, for the %{r} macro in explanations.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def spf(*, ip: str, mail_from: str | None, helo: str | None, resolvers: tuple[str, ...],
        zone: Path | None, timeout: float, receiver: str, as_json: bool) -> None:
    """Evaluate SPF (RFC 7208) for a client IP and a sender.

    Exit code 0 whatever the SPF result; 1 if no nameserver is configured; 2 on usage errors.
    """
    if mail_from is None and helo is None:
        raise click.UsageError("give --mail-from (and --helo), or --helo alone")
    resolver = pick_resolver(resolvers, zone)
    options = SPFOptions(timeout=timeout, receiver=receiver)
    if mail_from is None:
        coro = check_helo(resolver, ip, helo or "", options=options)
    else:
        coro = check_mailfrom(resolver, ip, mail_from, helo, options=options)
    result = asyncio.run(coro)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        _print_human(result, Console(highlight=False, soft_wrap=True))
