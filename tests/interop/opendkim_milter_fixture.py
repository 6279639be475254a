"""The OpenDKIM milter (``opendkim``, Debian's 2.11) as a real DKIM *signer* of the tests.

``start_opendkim(keys, algorithm=...)`` writes a private configuration into a fresh directory
(``opendkim.conf``, ``KeyTable``, ``SigningTable``, the private keys as 0600 PEM files, a PID
file) and runs ``opendkim -f -x CONF`` in the foreground as our child
(:func:`knot_fixture.foreground`), listening as a milter on ``inet:PORT@127.0.0.1`` (a free
loopback port). It returns once the port accepts connections; at the end of the ``with`` block
that PID only is signalled (SIGTERM, then SIGKILL) and the directory removed.

The configuration is signing only (``Mode s``): every message whose ``From:`` domain is in
``keys`` and whose client is an ``InternalHosts`` address (127.0.0.1) gets one signature with
``SignatureAlgorithm`` (one per instance: OpenDKIM 2.11 has no per-key algorithm; ``opendkim
-V`` lists rsa-sha1, rsa-sha256 and ed25519-sha256), ``Canonicalization relaxed/relaxed``
(RFC 6376 §3.4.2, §3.4.4). Keys are PEM: PKCS#1 for RSA, PKCS#8 for Ed25519 (RFC 8463).
A Postfix instance uses it with ``smtpd_milters = inet:127.0.0.1:PORT``
(:class:`postfix_fixture.PostfixRelay` ``milters=``).

OpenDKIM logs only to syslog; with no syslog daemon its errors show up in the MTA's log
("milter ... ") and as the missing signature. Tests call ``require_peer("opendkim")``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from knot_fixture import foreground, free_port

__all__ = ["OpenDKIMMilter", "start_opendkim"]

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


@dataclass(frozen=True)
class OpenDKIMMilter:
    """A running OpenDKIM milter: ``socket`` is the Postfix milter address."""

    port: int
    pid: int
    workdir: Path
    algorithm: str

    @property
    def socket(self) -> str:
        return f"inet:127.0.0.1:{self.port}"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _config(workdir: Path, port: int, algorithm: str) -> str:
    return "\n".join([
        "Syslog no",
        "Mode s",
        f"Socket inet:{port}@127.0.0.1",
        f"PidFile {workdir / 'opendkim.pid'}",
        f"KeyTable file:{workdir / 'KeyTable'}",
        f"SigningTable refile:{workdir / 'SigningTable'}",
        "InternalHosts 127.0.0.1",
        f"SignatureAlgorithm {algorithm}",
        "Canonicalization relaxed/relaxed",
        # The key files are 0600, but they live under /tmp (world-writable), which OpenDKIM
        # calls unsafe and then tempfails every message.
        "RequireSafeKeys no",
        "UMask 077",
    ]) + "\n"


@contextlib.contextmanager
def start_opendkim(
    keys: Mapping[str, bytes], *, opendkim: str, algorithm: str = "rsa-sha256",
) -> Iterator[OpenDKIMMilter]:
    """Run one OpenDKIM milter signing with ``keys`` (``selector._domainkey.domain`` -> PEM
    private key; one key per domain, chosen by the ``From:`` domain) for the ``with`` block."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm {algorithm!r} is not one of {ALGORITHMS}")
    # Not under pytest's tmp_path: a short path of our own, removed at the end.
    workdir = Path(tempfile.mkdtemp(prefix="opendkim-"))
    try:
        key_table, signing_table = [], []
        for n, (name, key_pem) in enumerate(keys.items()):
            selector, sep, domain = name.partition("._domainkey.")
            if not (sep and selector and domain):
                raise ValueError(f"not selector._domainkey.domain: {name!r}")
            key_file = workdir / f"key{n}.pem"
            key_file.write_bytes(key_pem)
            os.chmod(key_file, 0o600)
            key_table.append(f"k{n} {domain}:{selector}:{key_file}")
            signing_table.append(f"*@{domain} k{n}")
        (workdir / "KeyTable").write_text("\n".join(key_table) + "\n")
        (workdir / "SigningTable").write_text("\n".join(signing_table) + "\n")
        port = free_port()
        conf = workdir / "opendkim.conf"
        conf.write_text(_config(workdir, port, algorithm))
        argv = [opendkim, "-f", "-x", str(conf)]
        with foreground(argv, workdir / "opendkim.log", lambda: _accepts(port)) as pid:
            yield OpenDKIMMilter(port=port, pid=pid, workdir=workdir, algorithm=algorithm)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
