"""``mailmoat headers``: was this message encrypted, hop by hop? (layer L5)

Reads a message (``.eml``), or only its headers pasted into a file or standard input, and
prints the Received chain as a table (or JSON with ``--json``): for each hop the sender and
receiver, IP, protocol, TLS (yes / no / unknown / n/a), version and cipher, time and delay,
and whether the hop lies inside the receiving organisation; then the verdict, which hops are
trustworthy, and the Authentication-Results, DKIM-Signature and ARC summaries.

Exit codes:

* 0 -- every hop that crossed a network says it used TLS;
* 1 -- at least one hop says it did not use TLS;
* 3 -- no hop says "not encrypted", but at least one does not say (or no hop is recorded);
* 2 -- the input could not be read or analysed (usage error, unreadable file, header section
  over the size bounds): a message on standard error says why.

SECURITY: the input is untrusted. Only the header section is read (up to
``limits.MESSAGE_HEADER_MAX`` octets, in chunks; the body is never loaded). Everything
printed from the message is shown as plain text (never as rich markup), with control
characters already replaced by the parsers, so a header cannot restyle or rewrite the
terminal.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailmoat.analysis import HeaderReport, VerdictStatus, analyse_headers, report_to_dict
from mailmoat.errors import LimitExceeded, ParseError
from mailmoat.limits import MESSAGE_HEADER_MAX
from mailmoat.message import find_header_end, parse_headers

__all__ = ["headers", "read_header_section"]

_CHUNK = 64 * 1024
EXIT_ENCRYPTED = 0
EXIT_NOT_ENCRYPTED = 1
EXIT_INPUT_ERROR = 2
EXIT_UNKNOWN = 3


def read_header_section(stream: IO[bytes], *, limit: int = MESSAGE_HEADER_MAX) -> bytes:
    """Read from ``stream`` until the header section has ended (or the input has).

    Leading blank lines (a paste) are skipped before looking for the empty line. Raises
    :class:`LimitExceeded` when no end is found within ``limit`` octets.
    """
    data = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return data
        data += chunk
        lead = len(data) - len(data.lstrip(b"\r\n \t"))
        if lead < len(data) and (end := find_header_end(data, lead)) is not None:
            return data[:end]
        if len(data) - lead > limit + 2:
            raise LimitExceeded(
                f"no end of the header section within {limit} octets", limit="MESSAGE_HEADER_MAX"
            )


def _exit_code(report: HeaderReport) -> int:
    status = report.verdict.status
    if status is VerdictStatus.ENCRYPTED:
        return EXIT_ENCRYPTED
    if status is VerdictStatus.NOT_ENCRYPTED:
        return EXIT_NOT_ENCRYPTED
    return EXIT_UNKNOWN


_TLS_STYLE = {"yes": "green", "no": "bold red", "unknown": "yellow", "n/a": "dim"}
_VERDICT_STYLE = {
    VerdictStatus.ENCRYPTED: "bold green",
    VerdictStatus.NOT_ENCRYPTED: "bold red",
    VerdictStatus.UNKNOWN: "bold yellow",
    VerdictStatus.NO_HOPS: "bold yellow",
}


def _delay(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if abs(seconds) < 120:
        return f"{seconds:.0f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _print_report(report: HeaderReport, console: Console) -> None:
    table = Table(title="Received chain (hop 1 = where the message started)", expand=False)
    for name in ("hop", "from", "ip", "by", "protocol", "TLS", "version", "cipher",
                 "time (UTC)", "delay", "inside"):
        table.add_column(name, overflow="fold")
    for hop in report.hops:
        s = hop.stamp
        table.add_row(
            Text(str(hop.number)),
            # a local stamp with no from/by: show what it says, "(qmail 1 invoked from network)"
            Text(s.from_name or s.from_rdns
                 or (f"({s.comments[0]})" if s.comments and not s.by_name else "")),
            Text(s.from_ip or ""),
            Text(s.by_name or ""),
            Text(s.protocol or ""),
            Text(s.tls.value, style=_TLS_STYLE[s.tls.value]),
            Text(s.tls_version or ""),
            Text(s.cipher or ""),
            Text(s.timestamp.strftime("%Y-%m-%d %H:%M:%S") if s.timestamp else "?"),
            Text(_delay(hop.delay_s)),
            Text("yes" if hop.inside else "no", style="cyan" if hop.inside else "dim"),
        )
    console.print(table)
    for hop in report.hops:
        for flag in hop.flags:
            console.print(Text(f"  hop {hop.number}: {flag}", style="yellow"))
    v = report.verdict
    console.print(Text.assemble(("Verdict: ", "bold"), (v.summary, _VERDICT_STYLE[v.status])))
    console.print(Text.assemble(("  trustworthy (written by the receiving organisation): ",
                                 "bold"), v.trusted_summary))
    console.print(Text.assemble(("  claims of the sender and its relays: ", "bold"),
                                v.claimed_summary))
    console.print(Text(f"  boundary: {report.boundary}", style="dim"))
    if report.authentication:
        console.print(Text("Authentication-Results", style="bold"))
        for record in report.authentication:
            shown = ", ".join(f"{r.method}={r.result}" for r in record.results.results) or "none"
            who = record.results.authserv_id or "(no authserv-id)"
            trust = "recorded by the receiving organisation" if record.trusted else "untrusted"
            console.print(Text(f"  {who}: {shown}  [{trust}]"))
    if report.dkim:
        console.print(Text("DKIM-Signature (claimed, not verified here)", style="bold"))
        for sig in report.dkim:
            console.print(Text(f"  d={sig.domain} s={sig.selector} a={sig.algorithm}"
                               + (f"  ({sig.problem})" if sig.problem else "")))
    if report.arc.instances or report.arc.problems:
        console.print(Text("ARC", style="bold"))
        for inst in report.arc.instances:
            console.print(Text(f"  i={inst.instance} cv={inst.cv} d={inst.domain}"))
        for problem in report.arc.problems:
            console.print(Text(f"  {problem}", style="yellow"))
    for warning in report.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    if report.header_defects:
        kinds = sorted({d.kind.value for d in report.header_defects})
        console.print(Text(f"header defects: {'; '.join(kinds)}", style="yellow"))


@click.command("headers")
@click.argument("message", type=click.File("rb"), default="-")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
@click.option(
    "--our-domain", "our_domains", multiple=True, metavar="DOMAIN",
    help="A domain of the receiving organisation (repeatable); sets the trust boundary.",
)
@click.option(
    "--trusted-host", "trusted_hosts", multiple=True, metavar="HOST",
    help="A host name or IP of the receiving organisation's servers (repeatable).",
)
def headers(
    message: IO[bytes], as_json: bool, our_domains: tuple[str, ...],
    trusted_hosts: tuple[str, ...],
) -> None:
    """Was MESSAGE encrypted on every hop? Reads a .eml file, pasted headers, or - (stdin).

    Exit status: 0 encrypted on every hop, 1 not encrypted on some hop, 3 unknown on some hop
    or no hop recorded, 2 unreadable input.
    """
    try:
        data = read_header_section(message)
        parsed = parse_headers(data, pasted=True)
    except (LimitExceeded, ParseError, OSError) as exc:
        click.echo(f"mailmoat headers: cannot analyse the input: {exc}", err=True)
        sys.exit(EXIT_INPUT_ERROR)
    report = analyse_headers(
        parsed, our_domains=our_domains, trusted_hosts=trusted_hosts, now=datetime.now(UTC)
    )
    if as_json:
        click.echo(json.dumps(report_to_dict(report), indent=2, ensure_ascii=False))
    else:
        if not parsed.fields:
            click.echo("mailmoat headers: no header fields found in the input", err=True)
        _print_report(report, Console(highlight=False, soft_wrap=False))
    sys.exit(_exit_code(report))
