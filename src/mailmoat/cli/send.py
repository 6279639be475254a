"""``mailmoat send``: send one message with our own SMTP client and show what was negotiated.

::

    mailmoat send (--server HOST[:PORT] | --mx [--resolver HOST[:PORT]])
                  --from ADDR --to ADDR [--to ADDR ...]
                  [--tls starttls|opportunistic|implicit|none] [--port N]
                  [--auth-user USER (--password-stdin | --password-env VAR)] [--auth-mech M]
                  [--no-verify | --cafile FILE] [--tls-name NAME] [--helo NAME]
                  [--add-headers] [--no-chunking] [--timeout SECONDS] [--json] [FILE|-]

The message is read from FILE or standard input (``-``, the default). ``--mx`` delivers to
the mail exchangers of the recipients' (single) domain, as an MTA would: MX lookup (RFC 5321
§5.1, null MX refused per RFC 7505), each host tried in turn, its certificate checked against
the MX host name; port 25. ``--tls``:
``starttls`` (the default) refuses to continue without TLS; ``opportunistic`` uses STARTTLS
when offered; ``implicit`` is TLS from the first octet (port 465); ``none`` never uses TLS.
The default port is 465 with ``--tls implicit``, 587 with ``--auth-user``, else 25.
Certificates are verified against the system store (or ``--cafile``) for the server name
(or ``--tls-name``, also sent as SNI); ``--no-verify`` still encrypts and reports why the
certificate would not verify. Credentials are only sent over TLS; ``--password-stdin`` reads
one line, so the message must then come from FILE.

The output names the TLS version, cipher, certificate subject, issuer and names, whether it
verified and why not, the EHLO capabilities before and after TLS, and every reply. ``--json``
prints one JSON object instead (``"sent"``, ``"session"``, ``"recipients"``, ``"final"``,
``"queue_id"``; on failure ``"error"``, ``"stage"``, ``"temporary"``).

Exit codes (sysexits-style, as sendmail): 0 -- sent, every recipient accepted; 1 -- refused
by the server (a 5xx reply, or a permanent local refusal such as SIZE or SMTPUTF8); 75
(EX_TEMPFAIL) -- temporary: a 4xx reply, a connection, timeout or TLS failure (an MTA would
retry; fix the certificate or the network); 2 -- usage error. When only some recipients were
refused, the message was sent to the others and the exit code is 1 (a 5xx among them) or 75.

SECURITY: the server's replies, certificate fields and DNS names are printed as plain text,
never as rich markup, with every non-printable character (ESC, C0/C1 controls) shown as "?",
so a hostile certificate cannot drive the terminal; ``--json`` escapes all non-ASCII. The
message read is capped at ``SMTP_MAX_MESSAGE_SIZE``. The password is never printed and never
taken from the command line.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import os
import re
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import click
from rich.console import Console
from rich.text import Text

from mailmoat import limits
from mailmoat.cli._dns_options import make_resolver, resolver_option
from mailmoat.errors import ConfigError
from mailmoat.net.smtp_client import (
    Mode,
    SendError,
    SendResult,
    SessionInfo,
    StartTLSPolicy,
    Timeouts,
    default_port,
    send_message_sync,
    send_to_domain,
)
from mailmoat.resolver import is_ip_address
from mailmoat.smtp.replies import Reply

__all__ = ["send"]

EX_OK = 0
EX_REFUSED = 1
EX_USAGE = 2
EX_TEMPFAIL = 75  # sysexits.h

_TLS_CHOICES: Mapping[str, tuple[Mode, StartTLSPolicy]] = {
    "starttls": ("starttls", "require"),
    "opportunistic": ("starttls", "opportunistic"),
    "implicit": ("implicit-tls", "require"),
    "none": ("plain", "require"),
}
# field-name = 1*ftext; ftext = %d33-57 / %d59-126 (RFC 5322 §3.6.8)
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def parse_server(server: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    if server.startswith("["):
        end = server.find("]")
        if end < 0:
            raise click.BadParameter(f"{server!r}: missing ']'", param_hint="--server")
        host, rest = server[1:end], server[end + 1 :]
        if rest and not rest.startswith(":"):
            raise click.BadParameter(f"{server!r}: junk after ']'", param_hint="--server")
        port_text = rest[1:] if rest else None
    elif server.count(":") == 1:
        host, port_text = server.split(":")
    else:
        host, port_text = server, None
    if not host:
        raise click.BadParameter("empty host", param_hint="--server")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise click.BadParameter(f"bad port {port_text!r}", param_hint="--server")
    return host, int(port_text)


def _header_names(message: bytes) -> set[bytes]:
    names: set[bytes] = set()
    for raw in message.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            break  # end of the header section
        if line[:1] in (b" ", b"\t"):
            continue  # folded continuation
        match = _FIELD_NAME.match(line)
        if match is None:
            break  # not a header field: the body starts here (no blank line)
        names.add(match.group(1).lower())
    return names


def add_missing_headers(message: bytes, *, domain: str, now: datetime.datetime) -> bytes:
    """Prepend ``Date`` and ``Message-ID`` when absent (RFC 5322 §3.6: Date is required,
    Message-ID SHOULD be present; RFC 6409 §8.2/§8.3 lets a submission agent add them)."""
    names = _header_names(message)
    added = b""
    if b"date" not in names:
        added += b"Date: " + email.utils.format_datetime(now).encode("ascii") + b"\r\n"
    if b"message-id" not in names:
        added += f"Message-ID: <{uuid.uuid4().hex}@{domain}>\r\n".encode("ascii", "replace")
    return added + message


def _read_message(source: str) -> bytes:
    limit = limits.SMTP_MAX_MESSAGE_SIZE
    try:
        if source == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(source).open("rb") as handle:
                data = handle.read(limit + 1)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror or exc}",
                                 param_hint="FILE") from None
    if len(data) > limit:
        raise click.BadParameter(f"message larger than {limit} octets", param_hint="FILE")
    return data


def printable(text: str) -> str:
    """Text from the server (certificate names, DNS) made safe for a terminal: every
    non-printable character (ESC, other controls, format characters) becomes "?"."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _reply_text(reply: Reply | None) -> str:
    if reply is None:
        return "-"
    status = f" {reply.status}" if reply.status else ""
    return f"{reply.code}{status} {reply.text.replace(chr(10), ' / ')}"


def _capabilities(caps: Mapping[str, str] | None) -> str:
    if caps is None:
        return "-"
    if not caps:
        return "(none: HELO)"
    return ", ".join(f"{k} {v}".strip() for k, v in caps.items())


def _print_session(console: Console, session: SessionInfo, failed: str | None = None) -> None:
    def row(label: str, value: str, style: str = "") -> None:
        line = Text(f"{label:<12}", style="bold")
        line.append(printable(value), style=style)
        console.print(line)

    row("Server", f"{session.host}:{session.port} ({session.mode})")
    if session.greeting is not None:
        row("Greeting", _reply_text(session.greeting))
    if session.ehlo_before_tls is not None:
        row("EHLO", _capabilities(session.ehlo_before_tls))
    tls = session.tls
    if tls is None:
        if failed == "tls":
            row("TLS", "handshake failed (see below)", "bold red")
        elif session.greeting is not None and failed not in ("greeting", "ehlo", "starttls"):
            row("TLS", "none: the session was not encrypted", "bold red")
    else:
        row("TLS", f"{tls.version}, cipher {tls.cipher} ({tls.bits} bits)", "green")
        name = tls.server_name or "-"
        if is_ip_address(name):
            name += " (an IP address: checked, not sent as SNI)"
        row("Name (SNI)", name)
        row("Certificate", f"subject {tls.subject or '-'}")
        row("", f"issuer {tls.issuer or '-'}")
        if tls.san:
            row("", f"names {', '.join(tls.san)}")
        if tls.not_after is not None:
            row("", f"valid until {tls.not_after.isoformat()}")
        if tls.verified:
            row("Verified", f"yes (chain and name {tls.server_name})", "bold green")
        else:
            row("Verified", f"NO: {tls.verify_error}", "bold red")
        if session.ehlo_after_tls is not None:
            row("EHLO (TLS)", _capabilities(session.ehlo_after_tls))
    if session.auth_mechanism is not None:
        row("AUTH", f"{session.auth_mechanism}: {_reply_text(session.auth_reply)}")



def _print_result(console: Console, result: SendResult) -> None:
    _print_session(console, result.session)
    console.print(Text(f"{'MAIL':<12}", style="bold")
                  + Text(printable(_reply_text(result.mail_reply))))
    for rcpt in result.recipients:
        style = "" if rcpt.accepted else "red"
        console.print(Text(f"{'RCPT':<12}", style="bold")
                      + Text(printable(f"{rcpt.address}: {_reply_text(rcpt.reply)}"),
                             style=style))
    how = " (BDAT)" if result.used_bdat else ""
    console.print(Text(f"{'Message':<12}", style="bold")
                  + Text(printable(_reply_text(result.final_reply) + how)))
    if result.queue_id:
        console.print(Text(f"{'Queue id':<12}", style="bold") + Text(printable(result.queue_id)))
    total = len(result.recipients)
    console.print(Text(f"Sent to {len(result.accepted)} of {total} recipient(s).",
                       style="bold green" if not result.refused else "bold yellow"))


def _exit_code(result: SendResult) -> int:
    if not result.refused:
        return EX_OK
    return EX_REFUSED if any(r.reply.code >= 500 for r in result.refused) else EX_TEMPFAIL


def _password(user: str | None, password_stdin: bool, password_env: str | None,
              source: str) -> str | None:
    if user is None:
        if password_stdin or password_env:
            raise click.UsageError("--password-stdin/--password-env need --auth-user")
        return None
    if password_stdin and password_env:
        raise click.UsageError("give one of --password-stdin and --password-env")
    if password_stdin:
        if source == "-":
            raise click.UsageError("--password-stdin reads stdin: give the message as FILE")
        line = sys.stdin.buffer.readline(4096)
        return line.rstrip(b"\r\n").decode("utf-8", "replace")
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise click.UsageError(f"environment variable {password_env} is not set")
        return value
    raise click.UsageError("--auth-user needs --password-stdin or --password-env")


@click.command("send")
@click.option("--server", "server", default=None, metavar="HOST[:PORT]",
              help="SMTP server to send to.")
@click.option("--mx", "use_mx", is_flag=True,
              help="Instead of --server: deliver to the MX hosts of the recipients' domain.")
@resolver_option
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port (default: 465 implicit, 587 with --auth-user, else 25).")
@click.option("--from", "mail_from", required=True, metavar="ADDR",
              help="Envelope sender (MAIL FROM); '' or '<>' for the null sender.")
@click.option("--to", "rcpt_to", required=True, multiple=True, metavar="ADDR",
              help="Envelope recipient (RCPT TO); repeat for several.")
@click.option("--tls", "tls_mode", type=click.Choice(list(_TLS_CHOICES)), default="starttls",
              show_default=True, help="How to use TLS.")
@click.option("--auth-user", default=None, help="Authenticate (AUTH PLAIN/LOGIN) as USER.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option("--password-env", metavar="VAR", default=None,
              help="Read the password from environment variable VAR.")
@click.option("--auth-mech", type=click.Choice(["PLAIN", "LOGIN"]), default=None,
              help="AUTH mechanism (default: PLAIN if offered, else LOGIN).")
@click.option("--allow-plaintext-auth", is_flag=True,
              help="Allow sending credentials without TLS (test setups only).")
@click.option("--no-verify", is_flag=True,
              help="Do not verify the certificate (still encrypted; the output says why).")
@click.option("--cafile", type=click.Path(dir_okay=False), default=None,
              help="CA certificates (PEM) to verify the server with.")
@click.option("--tls-name", default=None, metavar="NAME",
              help="Name to verify and send as SNI (default: the server host).")
@click.option("--helo", default=None, metavar="NAME", help="EHLO name (default: this host).")
@click.option("--add-headers", is_flag=True,
              help="Add Date and Message-ID when the message lacks them.")
@click.option("--no-chunking", is_flag=True, help="Never use BDAT (CHUNKING).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
              help="Cap every wait at SECONDS (default: RFC 5321 §4.5.3.2 values).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("source", metavar="[FILE|-]", default="-")
def send(  # noqa: PLR0917
    server: str | None, use_mx: bool, resolvers: tuple[str, ...], port: int | None,
    mail_from: str, rcpt_to: tuple[str, ...], tls_mode: str,
    auth_user: str | None, password_stdin: bool, password_env: str | None,
    auth_mech: Literal["PLAIN", "LOGIN"] | None, allow_plaintext_auth: bool, no_verify: bool,
    cafile: str | None, tls_name: str | None, helo: str | None, add_headers: bool,
    no_chunking: bool, timeout: float | None, as_json: bool, source: str,
) -> None:
    """Send a message (FILE or stdin) over SMTP and show what the transport negotiated."""
    if no_verify and cafile:
        raise click.UsageError("--no-verify and --cafile contradict each other")
    if (server is None) == (not use_mx):
        raise click.UsageError("give one of --server and --mx")
    mode, policy = _TLS_CHOICES[tls_mode]
    mx_domain: str | None = None
    if server is not None:
        host, server_port = parse_server(server)
    else:
        domains = {r.rpartition("@")[2].lower().rstrip(".") for r in rcpt_to}
        if len(domains) != 1 or "" in domains:
            raise click.UsageError("--mx needs recipients of one domain")
        (mx_domain,) = domains
        if tls_name is not None:
            raise click.UsageError("--mx checks each MX host's own name; drop --tls-name")
        host, server_port = mx_domain, None
    if port is None:
        port = server_port or (25 if use_mx else default_port(
            mode, authenticated=auth_user is not None))
    password = _password(auth_user, password_stdin, password_env, source)
    message = _read_message(source)
    sender = None if mail_from in ("", "<>") else mail_from
    if add_headers:
        domain = (sender.rpartition("@")[2] if sender and "@" in sender else None) or (
            helo or "localhost")
        message = add_missing_headers(
            message, domain=domain, now=datetime.datetime.now(datetime.UTC).astimezone()
        )
    console = Console(highlight=False, markup=False, soft_wrap=True)
    options: dict[str, Any] = {
        "mail_from": sender, "rcpt_to": list(rcpt_to), "port": port, "mode": mode,
        "starttls": policy, "helo": helo, "username": auth_user, "password": password,
        "auth_mechanism": auth_mech, "allow_plaintext_auth": allow_plaintext_auth,
        "verify": not no_verify, "cafile": cafile, "chunking": not no_chunking,
        "timeouts": Timeouts.uniform(timeout) if timeout else None,
    }
    try:
        if mx_domain is not None:
            try:
                resolver = make_resolver(resolvers)
            except ConfigError as exc:
                raise click.UsageError(f"no DNS resolver: {exc}") from None
            result = asyncio.run(
                send_to_domain(message, domain=mx_domain, resolver=resolver, **options)
            )
        else:
            result = send_message_sync(message, host=host, server_name=tls_name, **options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except SendError as err:
        code = EX_TEMPFAIL if err.temporary else EX_REFUSED
        if as_json:
            click.echo(json.dumps(err.as_dict(), indent=2))
        else:
            _print_session(console, err.session, err.stage)
            for rcpt in err.recipients:
                console.print(Text(f"{'RCPT':<12}", style="bold")
                              + Text(printable(f"{rcpt.address}: {_reply_text(rcpt.reply)}")))
            kind = "temporary failure" if err.temporary else "refused"
            Console(stderr=True, highlight=False, markup=False, soft_wrap=True).print(
                Text(printable(f"Not sent ({kind}, at {err.stage}): {err}"), style="bold red")
            )
        sys.exit(code)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        _print_result(console, result)
    sys.exit(_exit_code(result))
