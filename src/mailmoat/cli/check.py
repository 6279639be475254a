"""``mailmoat check``: a domain's email-security posture (layer L5).

::

    mailmoat check DOMAIN [DOMAIN ...] [--json] [--resolver HOST[:PORT] ...] [--zone FILE]
                   [--selector S ...] [--no-common-selectors] [--no-smtp] [--dnssec]
                   [--cafile PEM] [--map-host NAME=ADDR[:PORT] ...]
                   [--store URL | --data-dir DIR | --config FILE]

Checks MX (and null MX), SPF, DMARC (and report-destination authorisation), DKIM keys, BIMI,
MTA-STS (record, policy over HTTPS, each MX against it), TLS-RPT, DNSSEC, TLSA and each MX's
STARTTLS (see :mod:`mailmoat.gateway.posture`). Every finding has a severity (ok, info,
warning, error) and a one-line fix. Several domains are checked concurrently, with a progress
bar on a terminal.

``--json`` prints one JSON object: ``{"schema": 1, "domains": [REPORT, ...]}``, each REPORT
with ``domain``, ``worst``, ``summary``, ``findings[]`` (``check``, ``severity``, ``message``,
``fix``) and per-area details (``mx``, ``spf``, ``dmarc``, ``dkim``, ``bimi``, ``mta_sts``,
``tls_rpt``, ``dnssec``).

With ``--store``, ``--data-dir`` or ``--config`` (found as ``mailmoat queue`` finds them), the
DKIM selectors that verified in mail this gateway received are tried too, between the given
and the common ones; each DKIM finding says where its selector came from.

``--dnssec`` says the ``--resolver`` is a validating resolver we trust (its AD bit is used).
``--cafile`` replaces the system CA store for the MTA-STS policy fetch and the MX certificate
checks (private CAs, tests). ``--map-host NAME=ADDR[:PORT]`` connects to ADDR for NAME (the
MTA-STS policy host or an MX) while SNI and certificate checks still use NAME (staging, tests).

Exit codes: 0 -- no finding of severity error; 1 -- at least one error finding (or no
nameserver configured, or the store cannot be opened); 2 -- usage error.

SECURITY: everything printed from DNS, HTTPS or SMTP is printed as plain text, never as rich
markup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from mailmoat.cli._dns_options import pick_resolver, resolver_option, zone_option
from mailmoat.cli._store_options import locate_store, store_options
from mailmoat.errors import StoreError
from mailmoat.gateway.posture import (
    SCHEMA_VERSION,
    DomainReport,
    PostureOptions,
    Severity,
    address_resolver,
    check_domains,
)
from mailmoat.net.fetch import Fetcher
from mailmoat.net.starttls_probe import ProbeResult, probe_starttls
from mailmoat.resolver import Resolver
from mailmoat.store import Store, open_store

__all__ = ["check"]

_STYLE = {
    Severity.OK: "green",
    Severity.INFO: "cyan",
    Severity.WARNING: "yellow",
    Severity.ERROR: "bold red",
}


def _map_hosts(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
               ) -> dict[str, tuple[str, int | None]]:
    mapping: dict[str, tuple[str, int | None]] = {}
    for value in values:
        name, eq, target = value.partition("=")
        if not eq or not name or not target:
            raise click.BadParameter(f"{value!r}: expected NAME=ADDR[:PORT]")
        host, port_text = target, ""
        if target.startswith("["):
            host, _, rest = target[1:].partition("]")
            port_text = rest.removeprefix(":")
        elif target.count(":") == 1:
            host, _, port_text = target.partition(":")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise click.BadParameter(f"{value!r}: {host!r} is not an IP address") from None
        port: int | None = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise click.BadParameter(f"{value!r}: bad port {port_text!r}")
            port = int(port_text)
        mapping[name.lower().rstrip(".")] = (host, port)
    return mapping




def _print_report(report: DomainReport, console: Console) -> None:
    table = Table(title=Text(f"{report.domain}: worst {report.worst.value}"), show_lines=False,
                  title_justify="left", expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("finding", overflow="fold")
    table.add_column("fix", overflow="fold")
    for finding in report.findings:
        table.add_row(Text(finding.check), Text(finding.severity.value,
                                                style=_STYLE[finding.severity]),
                      Text(finding.message), Text(finding.fix))
    console.print(table)


async def _run(
    domains: tuple[str, ...],
    *,
    resolver: Resolver,
    options: PostureOptions,
    cafile: Path | None,
    mapping: Mapping[str, tuple[str, int | None]],
    timeout: float,
    progress: Progress | None,
    store_url: str | None = None,
) -> list[DomainReport]:
    mapped: dict[str, str | tuple[str, int]] = {
        name: (host, port) if port else host for name, (host, port) in mapping.items()
    }

    async def prober(host: str, addresses: Sequence[str]) -> ProbeResult:
        target = mapping.get(host.lower().rstrip("."))
        address = target[0] if target else (addresses[0] if addresses else None)
        return await probe_starttls(
            host, port=(target[1] or 25) if target else 25, timeout=timeout, cafile=cafile,
            connect_to=address)

    task = progress.add_task("checking", total=len(domains)) if progress else None

    def done(report: DomainReport) -> None:
        if progress is not None and task is not None:
            progress.update(task, advance=1, description=f"checked {report.domain}")

    store: Store | None = None
    if store_url is not None:
        try:
            store = await open_store(store_url)
        except StoreError as exc:
            raise click.ClickException(f"cannot open the store: {exc}") from None
    try:
        async with Fetcher(cafile=cafile, timeout=timeout, addresses=mapped,
                           resolve=address_resolver(resolver)) as fetcher:
            return await check_domains(domains, resolver, options=options, fetcher=fetcher,
                                       prober=prober, on_done=done, selector_source=store)
    finally:
        if store is not None:
            await store.close()


@click.command()
@click.argument("domains", nargs=-1, required=True, metavar="DOMAIN...")
@resolver_option
@zone_option
@click.option("--selector", "selectors", multiple=True, metavar="S",
              help="DKIM selector to look for (repeatable); common ones, and with --store "
                   "those seen verifying in received mail, are tried too.")
@click.option("--no-common-selectors", is_flag=True,
              help="Try only the --selector names for DKIM.")
@click.option("--no-smtp", is_flag=True, help="Do not connect to the MX hosts (STARTTLS).")
@click.option("--dnssec", is_flag=True,
              help="The --resolver validates DNSSEC and is trusted: use its AD bit.")
@click.option("--cafile", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="CA bundle for the MTA-STS fetch and MX certificate checks.")
@click.option("--map-host", "map_hosts", multiple=True, callback=_map_hosts,
              metavar="NAME=ADDR[:PORT]",
              help="Connect to ADDR for host NAME (SNI and certificate checks keep NAME).")
@click.option("--timeout", type=click.FloatRange(min=0.5, max=300.0), default=20.0,
              show_default=True, help="Seconds for each HTTPS fetch and SMTP probe.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@store_options
def check(*, domains: tuple[str, ...], resolvers: tuple[str, ...], zone: Path | None,
          selectors: tuple[str, ...], no_common_selectors: bool, no_smtp: bool, dnssec: bool,
          cafile: Path | None, map_hosts: dict[str, tuple[str, int | None]], timeout: float,
          as_json: bool, store_url: str | None, data_dir: Path | None,
          config: Path | None) -> None:
    """Check the email-security posture of DOMAIN(s): MX, SPF, DMARC, DKIM, BIMI, MTA-STS,
    TLS-RPT, DNSSEC, TLSA and STARTTLS.

    Exit code 0 when no finding is an error, 1 when one is; 2 on usage errors.
    """
    if zone is not None and dnssec:
        raise click.UsageError("--dnssec needs a validating --resolver, not --zone")
    resolver = pick_resolver(resolvers, zone, trust_ad=dnssec)
    # The gateway's store only when asked for: a check run away from the gateway has none.
    url = (locate_store(config, data_dir, store_url, what="gateway")[0]
           if store_url or data_dir or config else None)
    options = PostureOptions(selectors=selectors, common_selectors=not no_common_selectors,
                             smtp=not no_smtp, dnssec_validating=dnssec)
    err = Console(stderr=True, highlight=False)
    show_progress = not as_json and len(domains) > 1 and err.is_terminal
    progress = (Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         console=err, transient=True) if show_progress else None)
    if progress is not None:
        with progress:
            reports = asyncio.run(_run(domains, resolver=resolver, options=options,
                                       cafile=cafile, mapping=map_hosts, timeout=timeout,
                                       progress=progress, store_url=url))
    else:
        reports = asyncio.run(_run(domains, resolver=resolver, options=options, cafile=cafile,
                                   mapping=map_hosts, timeout=timeout, progress=None,
                                   store_url=url))
    if as_json:
        click.echo(json.dumps({"schema": SCHEMA_VERSION,
                               "domains": [r.as_dict() for r in reports]}, indent=2))
    else:
        console = Console(highlight=False, soft_wrap=False)
        for report in reports:
            _print_report(report, console)
    if any(r.worst is Severity.ERROR for r in reports):
        sys.exit(1)
