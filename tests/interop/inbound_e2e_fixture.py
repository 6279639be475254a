"""The inbound gateway end to end (issue #6): real DNS, real senders, real mailbox servers.

Pieces, each a real peer on loopback, composed from the shared fixtures:

* **DNS**: one ``knotd`` (:func:`knot_fixture.start_knot`) serving a parent zone ``test.``
  and one zone per sending domain (:func:`zones`): SPF, DKIM keys (RSA-2048 and Ed25519,
  generated per test run by :class:`Keys`), DMARC ``p=none`` / ``p=quarantine`` /
  ``p=reject``. ``mailmoat serve`` reads them through ``[dns] resolvers = ["127.0.0.1:PORT"]``.
* **Gateway**: :func:`write_config` writes a data directory (self-signed certificate, config
  with an mx STARTTLS listener on port 0, ``[dns]``, ``[policy]``, ``[delivery]``);
  :func:`start_gateway` runs ``python -m mailmoat.cli.main serve`` as a subprocess (its
  stderr log kept in ``DATA/serve.log`` for the evidence), reads the bound ports from its
  banner and returns :class:`server_fixture.RunningServer` (stopped by PID).
* **Senders**: :func:`swaks` (STARTTLS, a chosen loopback source address such as
  127.0.0.66 so SPF can fail, a message file sent byte for byte with ``--no-data-fixup``);
  Postfix relaying over mandatory STARTTLS is :class:`postfix_fixture.PostfixRelay`.
* **Mailboxes**: Dovecot LMTP into Maildirs (:class:`dovecot_fixture.Dovecot`;
  :func:`wait_maildir` polls a Maildir ``new/``), Postfix ``smtpd``
  (:class:`postfix_smtpd_fixture.PostfixSMTPD`) as the SMTP downstream.
* **Store**: :func:`verdict_rows` reads the ``verdicts`` table of ``DATA/mailmoat.db``
  (read-only sqlite3), :func:`store_call` runs one call on :func:`mailmoat.store.open_store`.
* :class:`Lab` starts the slow pieces concurrently (threads) and stops them all at the end.

Addresses: everything binds 127.0.0.1 except the sender source addresses (127.0.0.0/8 is
all loopback on Linux).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import dns.message
import dns.query
import dns.rdatatype
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from server_fixture import RunningServer, launch_server, make_data_dir

from mailmoat.auth.dkim import key_record, txt_strings
from mailmoat.store import Store, open_store

__all__ = [
    "GATEWAY_HOST",
    "SOURCES",
    "Keys",
    "Lab",
    "SwaksResult",
    "dkimpy_dns",
    "header_fields",
    "maildir_files",
    "pem",
    "running_gateway",
    "serve_log",
    "start_gateway",
    "store_call",
    "swaks",
    "verdict_rows",
    "wait_for",
    "wait_maildir",
    "worker_pids",
    "write_config",
    "zones",
]

#: Our gateway's host name: also the authserv-id of our Authentication-Results.
GATEWAY_HOST = "mx.test"
_QUEUED_RE = re.compile(r"<~\s+250 2\.0\.0 Ok: queued as ([0-9A-Z]{26})")
#: swaks prints every server line as "<~  CODE ..." over TLS ("<-  " in clear text), an
#: error reply as "<~* CODE ..." ("<** CODE ..." in clear text).
_REPLY_RE = re.compile(r"^<(?:~\*|\*\*|~|-)\s*(\d{3})([ -])(.*)$", re.M)

#: Loopback source addresses of the senders (SPF records name them).
SOURCES = {
    "legit": "127.0.0.1",   # good.test / relay.test (Postfix connects from 127.0.0.1)
    "spoofer": "127.0.0.66",  # in no SPF record
    "forwarder": "127.0.0.7",  # fwd.test's SPF
    "rogue": "127.0.0.8",    # rogue.test's SPF (an ARC sealer we do not trust)
}

T = TypeVar("T")


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """PKCS#1 (RSA, what OpenDKIM reads) or PKCS#8 (Ed25519) PEM, unencrypted."""
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL
           if isinstance(key, rsa.RSAPrivateKey) else serialization.PrivateFormat.PKCS8)
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@dataclass
class Keys:
    """The DKIM/ARC keys of one test run, by ``selector._domainkey.domain``."""

    keys: dict[str, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey] = field(default_factory=dict)

    @classmethod
    def generate(cls) -> Keys:
        def r() -> rsa.RSAPrivateKey:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)

        def e() -> ed25519.Ed25519PrivateKey:
            return ed25519.Ed25519PrivateKey.generate()

        return cls({
            "rsa1._domainkey.good.test": r(),
            "ed1._domainkey.good.test": e(),
            "ed._domainkey.reject.test": e(),
            "arc._domainkey.fwd.test": r(),
            "arc._domainkey.rogue.test": e(),
            "odk._domainkey.relay.test": r(),  # OpenDKIM's (rsa-sha1: testmsg has no choice)
            "ed1._domainkey.relay.test": e(),
        })

    def __getitem__(self, name: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
        return self.keys[name]

    def record(self, name: str) -> str:
        return key_record(self.keys[name])


#: domain -> (SPF record, DMARC record)
DOMAINS = {
    "good.test": ("v=spf1 ip4:127.0.0.1 -all", "v=DMARC1; p=reject; adkim=s; aspf=s"),
    "reject.test": ("v=spf1 ip4:192.0.2.10 -all", "v=DMARC1; p=reject"),
    "quar.test": ("v=spf1 ip4:192.0.2.20 -all", "v=DMARC1; p=quarantine"),
    "none.test": ("v=spf1 ip4:192.0.2.30 -all", "v=DMARC1; p=none"),
    "fwd.test": ("v=spf1 ip4:127.0.0.7 -all", "v=DMARC1; p=none"),
    "rogue.test": ("v=spf1 ip4:127.0.0.8 -all", "v=DMARC1; p=none"),
    "relay.test": ("v=spf1 ip4:127.0.0.1 -all", "v=DMARC1; p=reject"),
}


def _txt(value: str) -> str:
    return " ".join(f'"{s}"' for s in txt_strings(value))


def zones(keys: Keys) -> dict[str, str]:
    """Zone texts for knotd: ``test.`` and one zone per domain of :data:`DOMAINS`."""
    head = ["$TTL 300", "@ IN SOA ns1.test. hostmaster.test. 2026112801 7200 3600 1209600 60",
            "  IN NS ns1.test."]
    out = {"test": "\n".join(["$ORIGIN test.", *head, "ns1 IN A 127.0.0.1",
                              "mx IN A 127.0.0.1"]) + "\n"}
    for domain, (spf, dmarc) in DOMAINS.items():
        lines = [f"$ORIGIN {domain}.", *head, "@ IN A 192.0.2.1", "@ IN MX 10 mx.test.",
                 f'@ IN TXT "{spf}"', f'_dmarc IN TXT "{dmarc}"']
        for name in keys.keys:
            selector, _, rest = name.partition("._domainkey.")
            if rest == domain:
                lines.append(f"{selector}._domainkey IN TXT {_txt(keys.record(name))}")
        out[domain] = "\n".join(lines) + "\n"
    return out


def dkimpy_dns(server: str) -> Callable[..., bytes]:
    """A dnsfunc for dkimpy (an independent DKIM verifier) asking knotd ``HOST:PORT``."""
    host, _, port = server.rpartition(":")

    def lookup(name: bytes | str, timeout: int = 5) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        query = dns.message.make_query(text, dns.rdatatype.TXT)
        response = dns.query.udp(query, host, port=int(port), timeout=timeout)
        for rrset in response.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return b""

    return lookup


# --- the gateway -------------------------------------------------------------------------------
def write_config(
    directory: Path,
    *,
    dns: str,
    destination: str | None,
    local_domains: tuple[str, ...] = (GATEWAY_HOST,),
    policy: str = "",
    delivery: str = "",
    listeners: tuple[tuple[str, str], ...] = (("starttls", "mx"),),
    workers: int = 1,
) -> Path:
    """A data directory for ``mailmoat serve`` (:func:`server_fixture.make_data_dir`, no
    users); returns the config path."""
    lines = [
        "[dns]", f'resolvers = ["{dns}"]', "",
        "[policy]", f'authserv_id = "{GATEWAY_HOST}"', policy, "",
        "[delivery]",
    ]
    if destination is not None:
        lines.append(f'destination = "{destination}"')
    lines += [delivery, ""]
    return make_data_dir(directory, listeners=listeners, workers=workers,
                         hostname=GATEWAY_HOST, local_domains=local_domains,
                         with_user=False, extra="\n".join(lines))


def start_gateway(config: Path, *, workers: int = 1, timeout: float = 30.0) -> RunningServer:
    """Run ``mailmoat serve --config CONFIG`` and wait for its banner (one worker: the worker
    is the process itself; see :func:`worker_pids` for more). Its log (level info) is
    appended to ``DATA/serve.log``."""
    return launch_server(config, workers=workers, timeout=timeout, log_level="info", grace=3,
                         log=config.parent / "serve.log")


def worker_pids(server: RunningServer, count: int, *, timeout: float = 30.0) -> list[int]:
    """The PIDs of the first ``count`` worker processes (``mailmoat: worker pid N`` lines,
    printed by the supervisor after its banner)."""
    pids = [int(m[1]) for line in server.output if (m := re.search(r"worker pid (\d+)$",
                                                                     line.strip()))]
    assert server.proc.stdout is not None
    deadline = time.monotonic() + timeout
    while len(pids) < count and time.monotonic() < deadline:
        line = server.proc.stdout.readline()
        if not line:
            break
        server.output.append(line)
        if m := re.search(r"worker pid (\d+)$", line.strip()):
            pids.append(int(m[1]))
    assert len(pids) >= count, server.output
    return pids[:count]


def serve_log(config: Path) -> str:
    path = config.parent / "serve.log"
    return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_gateway(config: Path) -> Iterator[RunningServer]:
    server = start_gateway(config)
    try:
        yield server
    finally:
        server.stop()


class Lab:
    """Start the slow pieces (Dovecot, Postfix, ``mailmoat serve`` ~ seconds each) at once,
    each in a thread of its own: ``start(name, fn, stop)`` returns at once; ``get(name)``
    waits for the piece (re-raising its start-up error in the test that needs it, not in
    the others). A piece may ``get`` another (a chain). ``close()`` stops, in parallel,
    every piece that started, with its own ``stop``."""

    def __init__(self, threads: int = 8) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="lab")
        self._futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._stops: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    def start(self, name: str, fn: Callable[[], T], stop: Callable[[T], object]) -> None:
        def run() -> T:
            value = fn()
            with self._lock:
                self._stops.append(lambda: stop(value))
            return value

        self._futures[name] = self._pool.submit(run)

    def get(self, name: str, timeout: float = 120.0) -> Any:
        return self._futures[name].result(timeout)

    def close(self) -> None:
        concurrent.futures.wait(list(self._futures.values()), timeout=180)
        with self._lock:
            stops, self._stops = self._stops, []
        with concurrent.futures.ThreadPoolExecutor(max(1, len(stops))) as pool:
            for future in [pool.submit(stop) for stop in stops]:
                with contextlib.suppress(Exception):
                    future.result(60)
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# --- senders -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SwaksResult:
    returncode: int
    transcript: str

    @property
    def replies(self) -> list[tuple[int, str]]:
        """(code, text) of every complete server reply, in order."""
        out: list[tuple[int, str]] = []
        text = ""
        for m in _REPLY_RE.finditer(self.transcript):
            text += m[3] + "\n"
            if m[2] == " ":
                out.append((int(m[1]), text.rstrip("\n")))
                text = ""
        return out

    @property
    def final(self) -> tuple[int, str]:
        """The reply to the end of DATA (the last one before QUIT's 221)."""
        replies = [r for r in self.replies if r[0] != 221]
        return replies[-1]

    @property
    def queued_id(self) -> str | None:
        match = _QUEUED_RE.search(self.transcript)
        return match[1] if match else None


def swaks(port: int, message: bytes, *, mail_from: str, rcpt: str, source: str,
          helo: str, tmp: Path, tls: bool = True) -> SwaksResult:
    """Send ``message`` (CRLF line ends; written byte for byte, swaks adds only the final
    dot) with swaks over STARTTLS from the loopback address ``source``."""
    program = shutil.which("swaks")
    assert program is not None
    assert b"\n" not in message.replace(b"\r\n", b""), "CRLF line ends only"
    data = tmp / f"swaks-{time.monotonic_ns()}.eml"
    data.write_bytes(message + b".")  # swaks adds the CRLF after the dot
    args = [program, "--server", "127.0.0.1", "--port", str(port), "--local-interface", source,
            "--helo", helo, "--from", mail_from, "--to", rcpt, "--data", f"@{data}",
            "--no-data-fixup", "--timeout", "30"]
    if tls:
        args.append("--tls")
    proc = subprocess.run(args, capture_output=True, timeout=60, check=False)
    return SwaksResult(proc.returncode, proc.stdout.decode(errors="replace")
                       + proc.stderr.decode(errors="replace"))


# --- mailboxes and store -----------------------------------------------------------------------
def wait_for(predicate: Callable[[], T], *, timeout: float, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or the time is up
    (the last falsy value is returned)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def maildir_files(maildir: Path) -> list[bytes]:
    new = maildir / "new"
    if not new.is_dir():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)]


def wait_maildir(maildir: Path, count: int, *, timeout: float = 20.0) -> list[bytes]:
    """The messages in ``maildir/new`` once there are at least ``count`` (or what is there
    when the time is up)."""
    wait_for(lambda: len(maildir_files(maildir)) >= count, timeout=timeout)
    return maildir_files(maildir)


def header_fields(message: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) of the header section, LF or CRLF line ends."""
    text = message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    out: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            out.append((name, value.strip()))
    return out


def verdict_rows(data_dir: Path) -> list[dict[str, object]]:
    """Every row of the ``verdicts`` table of ``DATA/mailmoat.db`` (read-only)."""
    db = data_dir / "mailmoat.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM verdicts")]
    finally:
        conn.close()


def store_call(data_dir: Path, call: Callable[[Store], Awaitable[T]]) -> T:
    """Open the gateway's store (what ``mailmoat serve`` opened), run ``call``, close it.
    Run in a thread of its own with a new event loop (safe from sync and async tests)."""

    async def run() -> T:
        store = await open_store(f"sqlite:{data_dir / 'mailmoat.db'}")
        try:
            return await call(store)
        finally:
            await store.close()

    def thread() -> T:
        return asyncio.run(run())

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(thread).result(timeout=60)
