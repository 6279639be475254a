"""``mailmoat verify``: who sent this message? SPF, DKIM, ARC and DMARC at once (layer L5).

::

    mailmoat verify MSG.eml --ip IP --helo NAME --mail-from ADDR
                    [--resolver HOST[:PORT] ... | --zone FILE] [--now UNIX_TIME]
                    [--authserv-id ID] [--json]

Runs :func:`mailmoat.auth.verify.authenticate` as the gateway would for a message received
from ``--ip`` after ``EHLO --helo`` and ``MAIL FROM:<--mail-from>`` (``''`` or ``'<>'`` is the
null reverse-path), prints the Authentication-Results field it would add (RFC 8601) and a
plain explanation. ``--json`` prints one object with ``spf.result``,
``dkim[].result/domain/selector``, ``dmarc.result/policy/disposition``, ``arc.result`` and
``authentication_results`` (and more detail under each).

MSG ``-`` reads standard input; a file with LF line ends is normalised to CRLF (DKIM and ARC
hash CRLF, RFC 6376 §3.4). ``--now`` fixes the clock, so that signatures with ``t=``/``x=``
verify reproducibly. DNS comes from ``--resolver`` (default: /etc/resolv.conf) or, with
``--zone FILE``, from a master file loaded in memory (as ``mailmoat spf --zone``: no query
leaves the machine; ``--zone`` and ``--resolver`` exclude each other).

Exit codes: 0 -- the message was evaluated (whatever the results); 1 -- it could not be (no
nameserver configured, header section over the limits); 2 -- usage error (bad option, an
unreadable message or zone file).

SECURITY: the message and everything from DNS are untrusted and printed as plain text, never
as rich markup.
"""

from __future__ import annotations

import asyncio
import json
import platform
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from mailmoat import limits
from mailmoat.auth.dkim import normalize_line_endings
from mailmoat.auth.spf import SPFOptions
from mailmoat.auth.verify import VerifyOptions, authenticate
from mailmoat.cli._dns_options import pick_resolver, resolver_option, zone_option
from mailmoat.cli._params import ip_callback, read_input
from mailmoat.clock import SYSTEM_CLOCK, Clock, FixedClock
from mailmoat.errors import LimitExceeded

__all__ = ["verify"]

#: Largest message read: the SMTP size limit we advertise (RFC 1870 SIZE).
MESSAGE_FILE_MAX = limits.SMTP_MAX_MESSAGE_SIZE







@click.command()
@click.argument("message", metavar="MSG")
@click.option("--ip", "ip", required=True, callback=ip_callback, metavar="IP",
              help="The SMTP client's address (IPv4 or IPv6).")
@click.option("--helo", required=True, metavar="NAME", help="The HELO/EHLO name.")
@click.option("--mail-from", "mail_from", required=True, metavar="ADDR",
              help="The MAIL FROM address; '' or '<>' is the null reverse-path.")
@resolver_option
@zone_option
@click.option("--now", type=click.IntRange(0, None), default=None, metavar="UNIX_TIME",
              help="Fix the clock (t=/x= checks); default: now.")
@click.option("--authserv-id", "authserv_id", default=None, metavar="ID",
              help="Our authserv-id in Authentication-Results; default: this host's name.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify(*, message: str, ip: str, helo: str, mail_from: str, resolvers: tuple[str, ...],
           zone: Path | None, now: int | None, authserv_id: str | None,
           as_json: bool) -> None:
    """Authenticate MSG: SPF, DKIM, ARC and DMARC; print the Authentication-Results field.

    Exit code 0 whatever the results; 1 if the message cannot be evaluated; 2 on usage errors.
    """
    resolver = pick_resolver(resolvers, zone)
    data = normalize_line_endings(read_input(message, MESSAGE_FILE_MAX, "MSG"))
    clock: Clock = SYSTEM_CLOCK if now is None else FixedClock(wall=float(now))
    server = authserv_id or platform.node() or "localhost"
    options = VerifyOptions(spf=SPFOptions(receiver=server))
    try:
        outcome = asyncio.run(authenticate(
            data, ip=ip, helo=helo, mail_from=mail_from, resolver=resolver, clock=clock,
            authserv_id=server, options=options,
        ))
    except LimitExceeded as exc:
        raise click.ClickException(f"{message}: {exc}") from None
    if as_json:
        click.echo(json.dumps(outcome.as_dict(), indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(Text(outcome.authentication_results))
    console.print()
    for line in outcome.explain():
        console.print(Text(line))
