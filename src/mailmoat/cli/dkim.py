"""``mailmoat dkim``: make keys, sign and verify messages (RFC 6376, RFC 8463; layer L5).

::

    mailmoat dkim keygen --selector S --domain D [--algorithm rsa|ed25519] [--bits 2048]
                         [--out DIR]
    mailmoat dkim sign MSG --domain D --selector S --key KEY [--algorithm A]
                       [--canonicalization relaxed/relaxed] [--header NAME ...]
                       [--expire-in SECONDS] [--now UNIX_TIME]
    mailmoat dkim verify MSG [--resolver HOST[:PORT] ...] [--zone FILE] [--now UNIX_TIME]
                         [--json]

``keygen`` prints the DNS TXT record to publish (owner ``S._domainkey.D``, the value split
into <= 255-octet strings as a zone file wants them) and writes the private key as PEM with
mode 0600 (``DIR/S.private``; never overwritten). ``sign`` prints the signed message.
``verify`` prints one line per signature (``--json``: a list of objects).

Messages are read as bytes; a file with LF line ends is normalised to CRLF first (DKIM hashes
CRLF, RFC 6376 §3.4). MSG ``-`` reads standard input.

Exit codes: 0 done (for ``verify``: the results are the output, whatever they are); 1 the
action failed (unsignable message, unusable key); 2 usage error.

SECURITY: everything printed from the message or DNS is printed as plain text, never as rich
markup. The private key file is created with O_EXCL and mode 0600.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailmoat.auth.dkim import (
    DKIMSigningError,
    key_record,
    load_private_key,
    normalize_line_endings,
    sign,
    txt_strings,
    verify,
)
from mailmoat.cli._dns_options import pick_resolver, resolver_option, zone_option
from mailmoat.cli._params import read_input
from mailmoat.clock import FixedClock
from mailmoat.errors import MailmoatError

__all__ = ["dkim"]

#: Largest message the command reads (the SMTP size limit we advertise).
MESSAGE_FILE_MAX = 50 * 1024 * 1024
#: Largest key or zone file read.
SMALL_FILE_MAX = 4 * 1024 * 1024




@click.group()
def dkim() -> None:
    """DKIM keys, signing and verification (RFC 6376, RFC 8463 Ed25519)."""


@dkim.command()
@click.option("--selector", required=True, help="Selector (the S in S._domainkey.D).")
@click.option("--domain", required=True, help="Signing domain (d=).")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa",
              show_default=True)
@click.option("--bits", type=click.IntRange(1024, 8192), default=2048, show_default=True,
              help="RSA key size (RFC 8301: at least 1024; 2048 recommended).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory for the private key file.")
def keygen(selector: str, domain: str, algorithm: str, bits: int, out: Path) -> None:
    """Make a key pair; print the TXT record to publish; write the private key (0600)."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{selector}.private"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    record = key_record(key)
    strings = " ".join(f'"{s}"' for s in txt_strings(record))
    click.echo(f"; private key written to {path} (mode 0600)", err=True)
    click.echo(f"{selector}._domainkey.{domain}. IN TXT ( {strings} )")


@dkim.command(name="sign")
@click.argument("message", metavar="MSG")
@click.option("--domain", required=True, help="Signing domain (d=).")
@click.option("--selector", required=True, help="Selector (s=).")
@click.option("--key", "key_path", required=True, metavar="KEY",
              help="Private key: PEM (RSA or Ed25519) or base64 Ed25519 seed.")
@click.option("--algorithm", type=click.Choice(["rsa-sha256", "ed25519-sha256"]), default=None,
              help="Default: from the key type.")
@click.option("--canonicalization", "canon", default="relaxed/relaxed", show_default=True,
              type=click.Choice(["simple/simple", "simple/relaxed", "relaxed/simple",
                                 "relaxed/relaxed"]))
@click.option("--header", "headers", multiple=True, metavar="NAME",
              help="Header field to sign (repeat). Default: the RFC 6376 §5.4.1 set present.")
@click.option("--expire-in", type=click.IntRange(1, None), default=None, metavar="SECONDS",
              help="Add x= this many seconds after t=.")
@click.option("--now", type=click.IntRange(0, None), default=None, metavar="UNIX_TIME",
              help="The signing time (t=); default: now.")
def sign_cmd(*, message: str, domain: str, selector: str, key_path: str, algorithm: str | None,
             canon: str, headers: tuple[str, ...], expire_in: int | None,
             now: int | None) -> None:
    """Sign MSG and print the signed message."""
    data = normalize_line_endings(read_input(message, MESSAGE_FILE_MAX, "MSG"))
    try:
        key = load_private_key(read_input(key_path, SMALL_FILE_MAX, "--key"))
    except DKIMSigningError as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from None
    timestamp = int(time.time()) if now is None else now
    h, b = canon.split("/")
    try:
        field = sign(
            data, domain, selector, key,
            headers=list(headers) or None,
            canonicalization=(h, b),
            algorithm=algorithm,
            timestamp=timestamp,
            expire=timestamp + expire_in if expire_in else None,
        )
    except (DKIMSigningError, MailmoatError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.stdout.buffer.write(field + data)
    sys.stdout.buffer.flush()


@dkim.command(name="verify")
@click.argument("message", metavar="MSG")
@resolver_option
@zone_option
@click.option("--now", type=click.IntRange(0, None), default=None, metavar="UNIX_TIME",
              help="Check t=/x= against this time (reproducible results).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_cmd(*, message: str, resolvers: tuple[str, ...], zone: Path | None, now: int | None,
               as_json: bool) -> None:
    """Verify every DKIM-Signature of MSG."""
    resolver = pick_resolver(resolvers, zone)
    data = normalize_line_endings(read_input(message, MESSAGE_FILE_MAX, "MSG"))
    clock = FixedClock(wall=float(time.time() if now is None else now))
    try:
        results = asyncio.run(verify(data, resolver, clock=clock))
    except MailmoatError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        out = [
            {
                "result": str(r.result),
                "domain": r.domain,
                "selector": r.selector,
                "algorithm": r.algorithm,
                "reason": r.reason,
                "key_bits": r.key_bits,
                "header.d": r.header_d,
                "header.i": r.header_i,
                "header.b": r.header_b,
                "flags": list(r.flags),
                "body_length": None if r.body_length_info is None else {
                    "signed": r.body_length_info.signed,
                    "total": r.body_length_info.total,
                    "unsigned": r.body_length_info.unsigned,
                },
            }
            for r in results
        ]
        click.echo(json.dumps(out, indent=2))
        return
    for r in results:
        parts = [f"dkim={r.result}"]
        if r.header_d:
            parts.append(f"header.d={r.header_d}")
        if r.header_i:
            parts.append(f"header.i={r.header_i}")
        if r.selector:
            parts.append(f"header.s={r.selector}")
        if r.algorithm:
            parts.append(f"header.a={r.algorithm}")
        if r.header_b:
            parts.append(f"header.b={r.header_b}")
        if r.key_bits:
            parts.append(f"({r.key_bits}-bit key)")
        if r.flags:
            parts.append("[" + ", ".join(r.flags) + "]")
        if r.reason:
            parts.append(f"({r.reason})")
        click.echo(" ".join(parts))
