"""``mailmoat probe``: what a sending MTA sees of one SMTP server (layer L5).

::

    mailmoat probe HOST[:PORT] [--json] [--implicit-tls | --starttls] [--name NAME]
                   [--resolver HOST[:PORT] ... [--dnssec] | --zone FILE] [--domain D]
                   [--cafile PEM]
                   [--timeout S] [--helo NAME] [--no-versions] [--no-dane]

Banner, EHLO capabilities before and after TLS, STARTTLS (or implicit TLS: the default on
port 465), the TLS versions accepted (1.0 to 1.3), the cipher, the certificate chain and
whether it verifies (system CA store or ``--cafile``) for the host name, the DANE verdict
(TLSA ``_PORT._tcp.HOST``; trusted only with ``--dnssec``, i.e. when ``--resolver`` is a
validating resolver we trust), the MTA-STS verdict with ``--domain``, and findings - among them
AUTH offered before TLS. See :mod:`mailmoat.net.probe`.

``--name`` sets the SNI name and the name the certificate must match (and the TLSA base
name) when HOST is an address or an alias.

Exit codes: 0 -- no finding of severity high; 1 -- at least one high finding (or the server
could not be reached); 2 -- usage error.

SECURITY: everything the server sends (banner, capabilities, certificate text) is printed as
plain text, never interpreted as rich markup.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailmoat import limits
from mailmoat.cli._dns_options import pick_resolver, resolver_option, zone_option
from mailmoat.net.probe import ProbeError, ProbeReport, default_mode, parse_target
from mailmoat.net.probe import probe as run_probe
from mailmoat.resolver import Resolver

__all__ = ["probe"]

_SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}
_VERSION_STYLE = {"accepted": "green", "refused": "dim", "not-offered-by-us": "yellow",
                  "not-tested": "yellow"}
_DANE_STYLE = {"matched": "green", "mismatch": "bold red", "no-usable-tlsa": "yellow",
               "no-tlsa": "dim", "insecure": "yellow", "indeterminate": "yellow"}


def _capabilities(caps: object) -> Text:
    if not isinstance(caps, dict) or not caps:
        return Text("(none)" if isinstance(caps, dict) else "-")
    return Text(", ".join(f"{k} {v}".strip() for k, v in caps.items()))


def _print(report: ProbeReport, console: Console) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("server", Text(f"{report.host}:{report.port} ({report.mode})"))
    if report.server_name:
        head.add_row("name", Text(report.server_name))
    if report.banner is not None:
        head.add_row("banner", Text(f"{report.banner.code} {report.banner.text}"))
    if report.error:
        head.add_row("error", Text(report.error, style="bold red"))
    if report.mode == "starttls":
        head.add_row("EHLO before TLS", _capabilities(
            dict(report.ehlo_before_tls) if report.ehlo_before_tls is not None else None))
    head.add_row("EHLO after TLS", _capabilities(
        dict(report.ehlo_after_tls) if report.ehlo_after_tls is not None else None))
    if report.tls:
        head.add_row("TLS", Text(f"{report.tls_version}, {report.cipher} "
                                 f"({report.cipher_bits} bits)", style="green"))
    elif report.tls_error:
        head.add_row("TLS", Text(report.tls_error, style="bold red"))
    elif report.starttls_offered is False:
        head.add_row("TLS", Text("STARTTLS not offered", style="bold red"))
    if report.tls:
        if report.certificate_problem is None:
            verdict = Text("verifies (chain and name)", style="green")
        else:
            verdict = Text(report.certificate_problem, style="yellow")
        head.add_row("certificate", verdict)
    if report.dane is not None:
        head.add_row("DANE", Text(f"{report.dane.status.value}: {report.dane.reason}",
                                  style=_DANE_STYLE.get(report.dane.status.value, "")))
    elif report.server_name is None:
        head.add_row("DANE", Text("not checked: no host name (give --name)", style="dim"))
    if report.mtasts is not None:
        sts = report.mtasts
        mode = sts.mode or "no policy"
        text = f"{sts.domain} ({mode}): {sts.reason}"
        if sts.problem and sts.mode is None:
            text += f" [{sts.problem}]"
        head.add_row("MTA-STS", Text(text, style="green" if sts.failure is None else "yellow"))
    console.print(head)

    if report.versions:
        versions = Table(title="TLS versions", title_justify="left")
        versions.add_column("version", no_wrap=True)
        versions.add_column("result", no_wrap=True)
        versions.add_column("cipher / detail", overflow="fold")
        for v in report.versions:
            versions.add_row(Text(v.version), Text(v.status, style=_VERSION_STYLE[v.status]),
                             Text(v.cipher or v.detail or ""))
        console.print(versions)

    if report.chain:
        chain = Table(title="certificate chain (as sent)", title_justify="left")
        chain.add_column("#", no_wrap=True)
        chain.add_column("subject / issuer", overflow="fold")
        chain.add_column("names", overflow="fold")
        chain.add_column("valid", no_wrap=True)
        chain.add_column("key", no_wrap=True)
        for depth, cert in enumerate(report.chain):
            chain.add_row(
                Text(str(depth)),
                Text(f"{cert.subject}\nissuer: {cert.issuer}"),
                Text(", ".join(cert.san) or "-"),
                Text(f"{cert.not_before:%Y-%m-%d}\n{cert.not_after:%Y-%m-%d}"),
                Text(f"{cert.key_type}" + (f" {cert.key_bits}" if cert.key_bits and
                                           not cert.key_type.startswith(("EC ", "Ed"))
                                           else "")),
            )
        console.print(chain)

    if report.findings:
        findings = Table(title="findings", title_justify="left")
        findings.add_column("severity", no_wrap=True)
        findings.add_column("finding", overflow="fold")
        findings.add_column("fix", overflow="fold")
        for f in report.findings:
            findings.add_row(Text(f.severity, style=_SEVERITY_STYLE[f.severity]),
                             Text(f.message), Text(f.fix))
        console.print(findings)
    else:
        console.print(Text("no findings", style="green"))


@click.command("probe")
@click.argument("target", metavar="HOST[:PORT]")
@click.option("--implicit-tls/--starttls", "implicit", default=None,
              help="TLS from the first octet, or STARTTLS. Default: implicit on port 465.")
@click.option("--name", "server_name", default=None, metavar="NAME",
              help="SNI and certificate name (and TLSA base name); default HOST.")
@resolver_option
@zone_option
@click.option("--dnssec", is_flag=True,
              help="The --resolver validates DNSSEC and is trusted: use its AD bit (DANE).")
@click.option("--domain", default=None, metavar="DOMAIN",
              help="Check this host as an MX of DOMAIN against DOMAIN's MTA-STS policy.")
@click.option("--cafile", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="CA bundle instead of the system store (certificate checks, "
              "MTA-STS fetch).")
@click.option("--timeout", type=click.FloatRange(min=0.5, max=300.0),
              default=limits.PROBE_TIMEOUT,
              show_default=True, help="Seconds for each step (connect, reply, handshake).")
@click.option("--helo", default=None, metavar="NAME", help="EHLO name (default: our FQDN).")
@click.option("--no-versions", is_flag=True, help="Skip the per-version TLS handshakes.")
@click.option("--no-dane", is_flag=True, help="Do not look up TLSA records.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def probe(*, target: str, implicit: bool | None, server_name: str | None,
                  resolvers: tuple[str, ...], zone: Path | None, dnssec: bool,
                  domain: str | None,
                  cafile: Path | None, timeout: float, helo: str | None, no_versions: bool,
                  no_dane: bool, as_json: bool) -> None:
    """Probe an SMTP server as a sender sees it: banner, EHLO, STARTTLS / implicit TLS, TLS
    versions, cipher, certificate chain, DANE and MTA-STS verdicts, AUTH before TLS.

    Exit code 0 when no finding is high, 1 when one is; 2 on usage errors.
    """
    try:
        host, port = parse_target(target)
    except ProbeError as exc:
        raise click.BadParameter(str(exc), param_hint="HOST[:PORT]") from None
    if dnssec and not resolvers:
        raise click.UsageError("--dnssec needs --resolver (a validating resolver you trust); "
                               "answers from --zone are never DNSSEC-authenticated")
    mode = default_mode(port) if implicit is None else (
        "implicit-tls" if implicit else "starttls")
    resolver: Resolver | None = None
    if not no_dane or domain is not None:
        resolver = pick_resolver(resolvers, zone, trust_ad=dnssec)

    async def run() -> ProbeReport:
        report = await run_probe(host, port, mode=mode, server_name=server_name, helo=helo,
                             cafile=cafile, timeout=timeout, test_versions=not no_versions,
                             resolver=resolver, mtasts_domain=domain, dane=not no_dane)
        return report

    try:
        report = asyncio.run(run())
    except ProbeError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"schema": 1, **report.as_dict()}, indent=2))
    else:
        _print(report, Console(highlight=False, soft_wrap=False))
    if not report.connected or any(f.severity == "high" for f in report.findings):
        sys.exit(1)

