"""Shared pieces of ``bench.inbound`` (issue #6) and ``bench.submission`` (issue #7).

* the *world*: one sending domain (``example.com``) with an SPF record that passes for
  loopback, a DMARC ``p=reject`` record, an RSA-2048 and an Ed25519 DKIM key; the same DNS
  data, memoised in memory (a warm cache), answers both mailmoat (``bench.spf.MemoResolver``
  over a :class:`~mailmoat.resolver.fake.FakeResolver`) and the glue (pyspf through a patched
  ``spf.DNSLookup``, dkimpy and authheaders through a ``dnsfunc``), so DNS is not the
  difference;
* the servers, each a child process of the benchmark (``python -m bench._glue child ...``):
  mailmoat's :class:`~mailmoat.gateway.server.Gateway` built from a config file as ``mailmoat
  serve`` builds it, with the pipeline objects (inbound verification, submission signer) put
  into its listeners' :class:`~mailmoat.gateway.session.GatewayContext` with the in-memory
  resolver; and the "glue" a Python user writes today: aiosmtpd handlers calling pyspf,
  dkimpy (through authheaders' ``check_dkim``), a DMARC step (:class:`MinimalDMARC`, or
  authheaders' ``check_dmarc``), authres for the Authentication-Results field, writing and
  fsyncing each message (inbound), or dkimpy signing and writing + fsyncing (submission);
* the load generator: ``--sessions`` concurrent asyncio SMTP sessions on loopback, each
  pipelining MAIL, RCPT, DATA (RFC 2920), bounded by a message budget and a deadline.

Servers bind 127.0.0.1 only; the benchmark stops only the children it started (by PID).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bench.dkim import build_message
from bench.smtp_server import ROOT, Server, read_reply
from bench.spf import MemoResolver, pyspf_memo_lookup
from mailmoat.auth.dkim import key_record, load_private_key, sign
from mailmoat.resolver.fake import FakeResolver

DOMAIN = "example.com"
SENDER = "alice@example.com"
HELO = "mail.example.com"
MX_HOST = "mx.test"
LOCAL_RCPT = "team@mx.test"
REMOTE_RCPT = "bob@example.net"
USER, PASSWORD = "bench", "bench-password-1"
#: scrypt cost of the bench user on both sides: 2^4 instead of the production 2^14 (~50 ms of
#: CPU per AUTH), because AUTH is not what issue #7 measures (sessions send many messages).
SCRYPT_LOG2_N = 4
SELECTORS = {"rsa": "rsa2048", "ed25519": "ed25519"}
AUTHSERV_ID = MX_HOST
T = TypeVar("T")


# --- the world ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class World:
    """Keys (files in ``work``) and DNS records, shared by the parent and the children."""

    work: Path
    records: dict[str, str]

    @property
    def rsa_pem(self) -> Path:
        return self.work / "rsa2048.pem"

    @property
    def ed25519_pem(self) -> Path:
        return self.work / "ed25519.pem"

    @property
    def ed25519_seed(self) -> Path:
        """The Ed25519 key as dkimpy wants it: base64 of the 32-octet seed."""
        return self.work / "ed25519.seed"

    def key(self, which: str) -> Any:
        path = self.rsa_pem if which == "rsa" else self.ed25519_pem
        return load_private_key(path.read_bytes())

    def fake(self) -> FakeResolver:
        fake = FakeResolver()
        for name, value in self.records.items():
            fake.add_txt(name, value)
        return fake

    def resolver(self) -> MemoResolver:
        """mailmoat's side: every answer memoised (a warm cache)."""
        return MemoResolver(self.fake())

    def dnsfunc(self) -> Callable[..., str | None]:
        """dkimpy's and authheaders' side: ``dnsfunc(name, timeout=5)`` -> TXT text, memoised."""
        memo: dict[str, str | None] = {}
        records = {k.lower(): v for k, v in self.records.items()}

        def lookup(name: str | bytes, timeout: float = 5) -> str | None:
            key = name.decode("ascii") if isinstance(name, bytes) else name
            hit = memo.get(key, "")
            if hit == "":
                hit = memo[key] = records.get(key.lower().rstrip("."))
            return hit

        return lookup

    def install_pyspf(self) -> None:
        """pyspf's side: its module-level ``DNSLookup``, memoised over the same data."""
        import spf

        spf.DNSLookup = pyspf_memo_lookup(self.fake())


def make_world(work: Path) -> World:
    """New keys and records in ``work`` (``world.json`` for the children)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    none = serialization.NoEncryption()
    pem = serialization.Encoding.PEM
    world = World(work=work, records={
        DOMAIN: "v=spf1 ip4:127.0.0.0/8 -all",
        f"_dmarc.{DOMAIN}": "v=DMARC1; p=reject",
        f"{SELECTORS['rsa']}._domainkey.{DOMAIN}": key_record(rsa_key),
        f"{SELECTORS['ed25519']}._domainkey.{DOMAIN}": key_record(ed_key),
    })
    world.rsa_pem.write_bytes(rsa_key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, none))
    world.ed25519_pem.write_bytes(ed_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, none))
    world.ed25519_seed.write_bytes(base64.b64encode(ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, none)))
    (work / "world.json").write_text(json.dumps({"records": world.records}))
    return world


def load_world(work: Path) -> World:
    return World(work=work, records=json.loads((work / "world.json").read_text())["records"])


def message() -> bytes:
    """The ~10 KB multipart message of ``bench.dkim`` (From alice@example.com)."""
    return build_message()


def signed_message(world: World) -> bytes:
    """:func:`message` with an RSA-2048 DKIM signature of ``example.com`` on top."""
    data = message()
    return sign(data, DOMAIN, SELECTORS["rsa"], world.key("rsa"), timestamp=int(time.time())) + data


def user_line() -> str:
    """The users.jsonl line of the bench user (cheap scrypt: see SCRYPT_LOG2_N)."""
    from mailmoat.gateway.users import hash_password

    return json.dumps({"user": USER, "hash": hash_password(PASSWORD, log2_n=SCRYPT_LOG2_N),
                       "addresses": [f"*@{DOMAIN}"]})


# --- load generator -------------------------------------------------------------------------


@dataclass(slots=True)
class Load:
    """Shared by the sessions of one measurement: the message budget and the counts."""

    remaining: int
    deadline: float
    ok: int = 0
    refused: int = 0
    errors: int = 0
    last_refusal: str = ""

    def take(self) -> bool:
        if self.remaining <= 0 or time.monotonic() >= self.deadline:
            return False
        self.remaining -= 1
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Traffic:
    """What the sessions send."""

    payload: bytes  # dot-stuffed message + ".\r\n"
    mail_from: str
    rcpt: str
    per_conn: int
    auth: tuple[str, str] | None = None
    tls: ssl.SSLContext | None = None  # implicit TLS

    @classmethod
    def make(cls, msg: bytes, **kw: Any) -> Traffic:
        stuffed = msg.replace(b"\r\n.", b"\r\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        return cls(payload=stuffed + b".\r\n", **kw)


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


async def _session(port: int, t: Traffic, load: Load) -> None:
    envelope = (f"MAIL FROM:<{t.mail_from}>\r\nRCPT TO:<{t.rcpt}>\r\nDATA\r\n").encode()
    auth = None
    if t.auth is not None:
        auth = b"AUTH PLAIN " + base64.b64encode(
            b"\0" + t.auth[0].encode() + b"\0" + t.auth[1].encode()) + b"\r\n"
    while load.take():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=t.tls)
        except OSError as exc:
            load.errors += 1
            load.last_refusal = f"connect: {type(exc).__name__}: {exc}"
            await asyncio.sleep(0.05)
            continue
        try:
            await read_reply(reader)
            writer.write(b"EHLO " + HELO.encode() + b"\r\n")
            await read_reply(reader)
            if auth is not None:
                writer.write(auth)
                reply = await read_reply(reader)
                if not reply.startswith(b"235"):
                    raise ConnectionError(f"AUTH refused: {reply!r}")
            first = True
            for _ in range(t.per_conn):
                if not first and not load.take():
                    break
                first = False
                writer.write(envelope)
                replies = [await read_reply(reader) for _ in range(3)]
                if not replies[2].startswith(b"354"):
                    load.refused += 1
                    load.last_refusal = repr(replies)
                    writer.write(b"RSET\r\n")
                    await read_reply(reader)
                    continue
                writer.write(t.payload)
                reply = await read_reply(reader)
                if reply.startswith(b"250"):
                    load.ok += 1
                else:
                    load.refused += 1
                    load.last_refusal = reply.decode("ascii", "replace").strip()
            writer.write(b"QUIT\r\n")
            await read_reply(reader)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            load.errors += 1
            load.last_refusal = f"{type(exc).__name__}: {exc}"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One measurement of one server port."""

    row: str
    rate: float  # accepted messages per wall-clock second
    cpu_us: float  # server CPU (user + system, threads included) per accepted message
    ok: int
    refused: int
    errors: int
    seconds: float
    client_cpu: float  # share of one core the load generator used
    note: str = ""
    sys_share: float = 0.0  # share of the server CPU spent in the kernel (stime)


async def measure(server: Server, port: int, row: str, traffic: Traffic, *, sessions: int,
                  messages: int, seconds: float, warmup: float = 0.3) -> Cell:
    """Warm up briefly, then send up to ``messages`` within ``seconds`` from ``sessions``
    concurrent sessions."""
    if warmup > 0:
        warm = Load(remaining=max(sessions, messages // 10), deadline=time.monotonic() + warmup)
        await asyncio.gather(*(_session(port, traffic, warm) for _ in range(sessions)))
    load = Load(remaining=messages, deadline=time.monotonic() + seconds)
    gen0 = time.process_time()
    sys0 = _stime(server)
    cpu0, start = server.cpu(), time.monotonic()
    # bounded twice: the deadline stops new messages; the wait_for stops a stuck server
    await asyncio.wait_for(
        asyncio.gather(*(_session(port, traffic, load) for _ in range(sessions))),
        timeout=seconds + 30)
    elapsed = time.monotonic() - start
    cpu = server.cpu() - cpu0
    kernel = _stime(server) - sys0
    generator = time.process_time() - gen0
    return Cell(row=row, rate=load.ok / elapsed, cpu_us=cpu / max(load.ok, 1) * 1e6, ok=load.ok,
                refused=load.refused, errors=load.errors, seconds=elapsed,
                client_cpu=generator / elapsed, note=load.last_refusal,
                sys_share=kernel / cpu if cpu > 0 else 0.0)


def _stime(server: Server) -> float:
    """The server's kernel CPU seconds (/proc/PID/stat stime, threads included)."""
    from bench.smtp_server import HZ

    assert server.proc is not None
    total = 0
    for pid in server.pids or [server.proc.pid]:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            total += int(f.read().rsplit(")", 1)[1].split()[12])
    return total / HZ


def write_json(path: Path, cells: Sequence[Cell], problems: Sequence[str]) -> None:
    """The cells and the post-run problems, for tests and scripts."""
    import dataclasses

    path.write_text(json.dumps({"cells": [dataclasses.asdict(c) for c in cells],
                                "problems": list(problems)}, indent=1))


def common_options(p: argparse.ArgumentParser, *, per_conn: int) -> None:
    """The options both server benchmarks take."""
    p.add_argument("--messages", type=int, default=5000, help="message budget per row and round")
    p.add_argument("--sessions", type=int, default=20, help="concurrent SMTP sessions")
    p.add_argument("--seconds", type=float, default=4.0, help="time budget per row and round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best kept)")
    p.add_argument("--per-conn", type=int, default=per_conn, help="messages per connection")
    p.add_argument("--json", type=Path, help="also write the table's cells to this file")
    p.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per row")
    p.add_argument("--spool-only", action="store_true",
                   help="mailmoat without its runtime (no store rows before the 250)")
    p.add_argument("--dir", type=Path, default=None,
                   help="where the spools and keys live (default: $TMPDIR or /tmp; production "
                        "spools live on the mail disk, e.g. /var/spool: file creation cost "
                        "differs per directory, so compare runs with the same --dir)")
    p.add_argument("--workers", type=int, default=1,
                   help="mailmoat worker processes (pre-forked, sharing the sockets; the glue "
                        "is one process); CPU is summed over them")
    p.add_argument("--gc-freeze", type=int, nargs=3, metavar=("G0", "G1", "G2"),
                   help="experiment: mailmoat calls gc.freeze() after start-up and sets these "
                        "collector thresholds (Python's default: 700 10 10)")
    p.add_argument("--profile-top", type=int, default=25, help="functions listed per sort")


async def run_rounds(rows: Sequence[tuple[str, Server, int]], traffic: Traffic, *,
                     rounds: int, sessions: int, messages: int, seconds: float, warmup: int,
                     width: int) -> list[list[Cell]]:
    """Measure every row ``rounds`` times (rows interleaved, so a noisy spell hits them all),
    printing one line per measurement."""
    out: list[list[Cell]] = []
    for round_ in range(1, rounds + 1):
        cells = []
        for row, server, port in rows:
            cell = await measure(server, port, row, traffic, sessions=sessions,
                                 messages=messages, seconds=seconds, warmup=warmup)
            print(f"  round {round_} {row:<{width}}{cell.rate:>7.0f} msgs/s {cell.cpu_us:>7.0f} "
                  f"µs CPU/msg  ({cell.ok} in {cell.seconds:.1f} s; refused {cell.refused}, "
                  f"errors {cell.errors}; load generator {cell.client_cpu:.0%} of a core)",
                  flush=True)
            cells.append(cell)
        out.append(cells)
    return out


def best_cells(rounds: Sequence[Sequence[Cell]]) -> list[Cell]:
    """Per row, the round with the highest rate (the quietest: the machine is shared)."""
    best: dict[str, Cell] = {}
    for cells in rounds:
        for cell in cells:
            if cell.row not in best or cell.rate > best[cell.row].rate:
                best[cell.row] = cell
    return list(best.values())


def print_cells(cells: Sequence[Cell]) -> None:
    head = (f"{'row':<44}{'msgs/s':>9}{'server CPU µs/msg':>19}{'(kernel)':>9}{'accepted':>10}"
            f"{'refused':>9}{'errors':>8}{'loadgen':>9}")
    print("\n" + head)
    print("-" * len(head))
    for c in cells:
        print(f"{c.row:<44}{c.rate:>9.0f}{c.cpu_us:>19.0f}{c.sys_share:>9.0%}{c.ok:>10}"
              f"{c.refused:>9}{c.errors:>8}{c.client_cpu:>8.0%}")
        if c.refused or c.errors:
            print(f"    last refusal/error: {c.note[:150]}")


def ratio_line(label: str, a: Cell | None, b: Cell | None, goal: float) -> None:
    if a is None or b is None or b.rate == 0 or a.cpu_us == 0:
        print(f"{label:<48}{'n/a':>10}")
        return
    rate, cpu = a.rate / b.rate, b.cpu_us / a.cpu_us
    print(f"{label:<48}{rate:>9.2f}x {'yes' if rate >= goal else 'NO ':<5}{cpu:>9.2f}x "
          f"{'yes' if cpu >= goal else 'NO ':<5}{goal:>6.2f}x")


def ratio_head() -> None:
    print(f"\n{'target':<48}{'msgs/s':>10} {'met':<5}{'CPU/msg':>10} {'met':<5}{'goal':>7}")
    print("(CPU/msg ratio = the other row's server CPU per message / ours: the steadier figure "
          "on a shared machine)")


# --- servers --------------------------------------------------------------------------------


def start_child(kind: str, work: Path, spec: dict[str, Any],
                name: str) -> tuple[Server, dict[str, Any]]:
    """``python -m bench._glue child KIND WORK SPEC``; the child prints ``KEY {json}`` lines,
    ``ports {json}`` last. Returns the server and the other lines."""
    spec_file = work / f"{kind}-{len(list(work.iterdir()))}.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._glue", "child", kind, str(work), str(spec_file)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    ports: dict[str, int] = {}
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        word, _, rest = line.partition(" ")
        if word != "ports" and rest.strip():
            with contextlib.suppress(ValueError):
                info[word] = json.loads(rest)
        if line.startswith("ports "):
            ports = {k: int(v) for k, v in json.loads(line[6:]).items()}
            break
    if not ports:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise RuntimeError(f"the {kind} child did not start")
    server = Server(name=name, proc=proc, ports=ports, durable=True)
    if isinstance(info.get("pids"), list):
        server.pids = [int(p) for p in info["pids"]]  # several workers: CPU summed
    return server, info


def spool_records(directory: Path) -> list[Path]:
    queue = directory / "queue"
    return sorted(queue.iterdir()) if queue.is_dir() else []


def read_spool_record(path: Path) -> tuple[bytes, dict[str, Any]]:
    """(message, envelope JSON) of one committed spool record (``spool/_format.py``:
    message ‖ envelope JSON ‖ 32-byte trailer)."""
    from mailmoat.spool._format import TRAILER, parse_trailer

    data = path.read_bytes()
    message_size, envelope_size, _ = parse_trailer(data[-TRAILER.size:], len(data))
    envelope = json.loads(data[message_size:message_size + envelope_size])
    return data[:message_size], envelope


# --- children -------------------------------------------------------------------------------


def _fsync_write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class MinimalDMARC:
    """The DMARC step a careful glue writer adds (RFC 7489 §6.6): the From domain, its
    ``_dmarc`` record (then the Organizational Domain's), relaxed alignment of the SPF-passed
    MAIL FROM domain or a DKIM-passed ``d=`` through the public suffix list (loaded ONCE,
    ``publicsuffixlist``). authheaders' ``check_dmarc`` rebuilds its suffix list on every call
    (~0.1 s each, four per message here), so a glue user who measures writes this instead."""

    def __init__(self, dnsfunc: Callable[..., str | None]) -> None:
        from publicsuffixlist import PublicSuffixList

        self.psl = PublicSuffixList()
        self.dnsfunc = dnsfunc

    def org(self, domain: str) -> str:
        return str(self.psl.privatesuffix(domain.lower()) or domain.lower())

    def record(self, domain: str) -> dict[str, str] | None:
        for name in dict.fromkeys((domain, self.org(domain))):
            text = self.dnsfunc(f"_dmarc.{name}")
            if text and text.startswith("v=DMARC1"):
                tags = (t.partition("=") for t in text.split(";"))
                return {k.strip().lower(): v.strip().lower() for k, _, v in tags if v}
        return None

    def check(self, message: bytes, spf_result: str, mail_from: str, dkim_ok: bool,
              dkim_d: str) -> tuple[str, str, str]:
        """(result, policy, From domain)."""
        from email.utils import getaddresses

        import dkim

        headers, _ = dkim.rfc822_parse(message)
        froms = [v.replace(b"\r\n", b"").decode("utf-8", "replace").strip()
                 for k, v in headers if k.lower() == b"from"]
        addresses = getaddresses(froms)
        if len(addresses) != 1 or "@" not in addresses[0][1]:
            return "permerror", "none", ""
        domain = addresses[0][1].rpartition("@")[2].lower()
        record = self.record(domain)
        if record is None:
            return "none", "none", domain
        org = self.org(domain)
        mf_domain = mail_from.rpartition("@")[2]
        aligned = (spf_result == "pass" and mf_domain and self.org(mf_domain) == org) or \
            (dkim_ok and self.org(dkim_d) == org)
        return ("pass" if aligned else "fail"), record.get("p", "none"), domain


@dataclass
class _GlueInbound:
    """aiosmtpd handler: pyspf, dkimpy, DMARC (``MinimalDMARC``, or authheaders'
    ``check_dmarc`` with ``dmarc="authheaders"``), 550 for a DMARC p=reject failure,
    Authentication-Results added (authres), write + fsync."""

    directory: str
    dnsfunc: Callable[..., str | None]
    dmarc: str = "minimal"
    count: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    _minimal: MinimalDMARC | None = None

    def verify(self, content: bytes, ip: str, helo: str, mail_from: str) -> tuple[str, bool]:
        """(Authentication-Results field, reject?)"""
        import spf
        from authheaders import check_dkim, check_dmarc  # type: ignore[import-untyped]
        from authres import AuthenticationResultsHeader, SPFAuthenticationResult  # type: ignore[import-untyped]
        from authres.dmarc import DMARCAuthenticationResult  # type: ignore[import-untyped]

        spf_result, spf_reason = spf.check2(i=ip, s=mail_from, h=helo)
        spf_ar = SPFAuthenticationResult(result=spf_result, reason=spf_reason,
                                         smtp_mailfrom=mail_from, smtp_helo=helo)
        dkim_ar = check_dkim(content, dnsfunc=self.dnsfunc)  # dkimpy's DKIM(...).verify
        if self.dmarc == "authheaders":
            dmarc_ar = check_dmarc(content, spf_ar, dkim_ar, dnsfunc=self.dnsfunc)
            result, policy = dmarc_ar.result, getattr(dmarc_ar, "policy", "none")
        else:
            if self._minimal is None:
                self._minimal = MinimalDMARC(self.dnsfunc)
            result, policy, from_domain = self._minimal.check(
                content, spf_result, mail_from, dkim_ar.result == "pass", dkim_ar.header_d)
            dmarc_ar = DMARCAuthenticationResult(result=result, header_from=from_domain,
                                                 policy=policy)
        key = f"spf={spf_result} dkim={dkim_ar.result} dmarc={result}"
        self.verdicts[key] = self.verdicts.get(key, 0) + 1
        header = str(AuthenticationResultsHeader(
            authserv_id=AUTHSERV_ID, results=[spf_ar, dkim_ar, dmarc_ar]))
        return header, result == "fail" and policy == "reject"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        header, reject = self.verify(content, session.peer[0], session.host_name,
                                     envelope.mail_from)
        if reject:
            return "550 5.7.1 DMARC policy reject"
        self.count += 1
        _fsync_write(os.path.join(self.directory, f"{os.getpid()}-{self.count}"),
                     header.encode() + b"\r\n" + content)
        return "250 2.0.0 OK"


@dataclass
class _GlueSubmit:
    """aiosmtpd handler: dkimpy signs (each key over the same message), write + fsync."""

    directory: str
    keys: list[tuple[bytes, bytes, bytes]]  # (selector, private key as dkimpy takes it, a=)
    count: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import dkim

        content: bytes = envelope.original_content or envelope.content
        fields = b""
        for selector, key, algorithm in self.keys:
            fields = dkim.sign(content, selector, DOMAIN.encode(), key,
                               canonicalize=(b"relaxed", b"relaxed"),
                               signature_algorithm=algorithm) + fields
        self.count += 1
        _fsync_write(os.path.join(self.directory, f"{os.getpid()}-{self.count}"),
                     fields + content)
        return "250 2.0.0 OK"


def _glue_keys(world: World, variant: str) -> list[tuple[bytes, bytes, bytes]]:
    rsa_key = (SELECTORS["rsa"].encode(), world.rsa_pem.read_bytes(), b"rsa-sha256")
    ed_key = (SELECTORS["ed25519"].encode(), world.ed25519_seed.read_bytes(), b"ed25519-sha256")
    # dual: RSA first, Ed25519 added on top (RFC 8463 §5, as mailmoat orders them)
    return {"rsa": [rsa_key], "ed25519": [ed_key], "dual": [rsa_key, ed_key]}[variant]


#: the glue's users: name -> scrypt hash (the same users.jsonl line mailmoat reads)
_HASHES: dict[str, str] = {}


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> Any:
    """aiosmtpd AUTH: the same scrypt check mailmoat does, against the same hash."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from mailmoat.gateway.users import verify_password

    if not isinstance(auth_data, LoginPassword):
        return AuthResult(success=False, handled=False)
    encoded = _HASHES.get(auth_data.login.decode("utf-8", "replace"))
    return AuthResult(success=encoded is not None
                      and verify_password(auth_data.password, encoded))


def run_glue_child(world: World, spec: dict[str, Any]) -> None:
    """aiosmtpd (uvloop) with the glue handlers, one port per entry of ``spec["ports"]``."""
    import warnings

    import uvloop
    from aiosmtpd.smtp import SMTP

    # aiosmtpd warns about AUTH without STARTTLS; these listeners are implicit TLS
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    world.install_pyspf()
    line = json.loads(user_line())
    _HASHES[line["user"]] = line["hash"]
    cert, key = spec["cert"], spec["key"]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ports: dict[str, int] = {}
        for name, what in spec["ports"].items():
            directory = world.work / f"glue-{name}"
            directory.mkdir()
            handler: Any
            if what in ("inbound", "inbound-authheaders"):
                handler = _GlueInbound(str(directory), world.dnsfunc(),
                                       dmarc="authheaders" if what != "inbound" else "minimal")
            else:
                handler = _GlueSubmit(str(directory), _glue_keys(world, what))
            submission = not what.startswith("inbound")

            def factory(handler: Any = handler, submission: bool = submission) -> SMTP:
                if not submission:
                    return SMTP(handler, hostname="glue.test", decode_data=False)
                # implicit TLS: aiosmtpd counts only STARTTLS as TLS for AUTH, hence
                # auth_require_tls=False (the connection is TLS from its first octet)
                return SMTP(handler, hostname="glue.test", decode_data=False,
                            authenticator=_authenticator, auth_required=True,
                            auth_require_tls=False)

            server = await loop.create_server(factory, "127.0.0.1", 0,
                                              ssl=tls if submission else None)
            ports[name] = server.sockets[0].getsockname()[1]
        print("ports " + json.dumps(ports), flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    logging.basicConfig(level=logging.ERROR)
    uvloop.run(main())


def mailmoat_config(directory: Path, listeners: dict[str, tuple[int, str, str]], *,
                    cert: Path, key: Path) -> Path:
    """config.toml for the mailmoat child: ``listeners`` maps a row name to (port, mode,
    role); fsync on, as in production."""
    directory.mkdir()
    (directory / "users.jsonl").write_text(user_line() + "\n")
    text = f'[server]\nhostname = "{MX_HOST}"\nworkers = 1\n'
    for port, mode, role in listeners.values():
        text += (f'[[listener]]\naddress = "127.0.0.1"\nport = {port}\nmode = "{mode}"\n'
                 f'role = "{role}"\n')
    text += (f'[tls]\ncertificates = [ {{ cert = "{cert}", key = "{key}" }} ]\n'
             f'[relay]\nlocal_domains = ["{MX_HOST}"]\n[spool]\nfsync = true\n'
             '[policy]\nquarantine_folder = "Junk"\n'
             # the runtime's delivery side is held: rows are queued (accept), nothing is
             # delivered during the measurement; no DNS is asked (the pipelines get the
             # in-memory resolver), so [dns] points at a port where nothing answers
             '[delivery]\nhold = true\nmta_sts = false\ndane = false\n'
             '[dns]\nresolvers = ["127.0.0.1:9"]\n')
    config = directory / "config.toml"
    config.write_text(text)
    return config




def _gateway(config: Any, bound: Any, *, runtime: bool) -> Any:
    """The Gateway as a ``mailmoat serve`` worker builds it; with ``runtime``, its delivery
    side too (store, the group-committed ``accept`` before the 250; delivery held)."""
    from mailmoat.gateway import server

    options = getattr(server, "RuntimeOptions", None)
    if runtime and options is not None:
        return server.Gateway(config, listeners=bound,
                              runtime=options(dane=(False, "bench: no DANE")))
    return server.Gateway(config, listeners=bound)


def _profile_threads() -> list[Any]:
    """cProfile in this thread and in every thread started later (asyncio.to_thread's
    workers: the signer and the spool's fsyncs run there), timed by each thread's CPU clock:
    waiting (for the GIL, a lock, the disk, the network) costs nothing, so the figures add up
    to the server's CPU."""
    import cProfile
    import threading

    profilers = [cProfile.Profile(time.thread_time)]

    def start(frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile(time.thread_time)
        profilers.append(profiler)
        profiler.enable()

    threading.setprofile(start)
    profilers[0].enable()
    return profilers


def run_mailmoat_child(world: World, spec: dict[str, Any]) -> None:
    """mailmoat's Gateway from ``spec["config"]``; per listener, the pipeline object of its
    row: ``spec["rows"]`` maps a port to "inbound" | "accept" | "none" | "rsa" | "ed25519" |
    "dual"."""
    from mailmoat.clock import SYSTEM_CLOCK
    from mailmoat.gateway.config import load_config
    from mailmoat.gateway.inbound import InboundPipeline
    from mailmoat.gateway.outbound_sign import SubmissionSigner
    from mailmoat.gateway.pipeline import inbound_policy_from_config
    from mailmoat.gateway.server import _loop_factory, bind_listeners
    from mailmoat.gateway.submit_api import DKIMKey

    config = load_config(spec["config"])
    rows: dict[str, str] = spec["rows"]
    keys = {which: DKIMKey(domain=DOMAIN, selector=SELECTORS[which], key=world.key(which))
            for which in ("rsa", "ed25519")}
    resolver = world.resolver()

    bound = bind_listeners(config)
    # pre-fork like ``mailmoat serve`` with workers > 1: the processes share the sockets
    children: list[int] = []
    for _ in range(int(spec.get("workers", 1)) - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)
    leader = bool(children) or int(spec.get("workers", 1)) == 1

    async def main() -> None:
        gateway = _gateway(config, bound, runtime=bool(spec.get("runtime")))
        await gateway.start()
        if leader:
            print("pids " + json.dumps([os.getpid(), *children]), flush=True)
            print("runtime " + json.dumps(getattr(gateway, "runtime", None) is not None),
                  flush=True)
        ports: dict[str, int] = {}
        for b in bound:
            ctx = gateway.contexts[f"{b.config.address}:{b.config.port}"]
            what = rows[str(b.port)]
            if what == "inbound":
                ctx.inbound = InboundPipeline(
                    inbound_policy_from_config(config), resolver=resolver, clock=SYSTEM_CLOCK)
            elif what == "accept":
                ctx.inbound = None
            elif what == "none":
                ctx.signer = None
            else:
                chosen = [keys["rsa"], keys["ed25519"]] if what == "dual" else [keys[what]]
                ctx.signer = SubmissionSigner(
                    keys=chosen, hostname=config.server.hostname, clock=SYSTEM_CLOCK)
            ports[what] = b.port
        if spec.get("gc_freeze"):  # experiment: what the collector costs (--gc-freeze)
            import gc

            gc.collect()
            gc.freeze()
            gc.set_threshold(*spec["gc_freeze"])
        if leader:
            print("ports " + json.dumps(ports), flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        for pid in children:  # our own forked workers only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        await gateway.stop(2.0)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    logging.basicConfig(level=logging.WARNING)
    profilers = _profile_threads() if spec.get("profile") else None
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    finally:
        if profilers is not None:
            import pstats

            stats = pstats.Stats(profilers[0])
            for other in profilers[1:]:
                stats.add(other)
            stats.dump_stats(spec["profile"])


#: functions where a profiled thread only waits (idle executor workers, locks, the loop)
IDLE = frozenset({"<method 'get' of '_queue.SimpleQueue' objects>",
                  "<method 'acquire' of '_thread.lock' objects>", "_worker", "run_forever",
                  "<method 'run' of '_contextvars.Context' objects>"})


async def profile_child(work: Path, spec: dict[str, Any], key: str, label: str,
                        traffic: Traffic, *, sessions: int, messages: int, seconds: float,
                        top: int, spool: Path | None = None) -> str:
    """A short run of a cProfile'd mailmoat child (``spec`` as for ``start_child``) on its
    port ``key``; the top costs as text. ``spool``: emptied first (so that the child's
    start-up recovery does not read the earlier runs' records under the profiler)."""
    import io
    import pstats
    import shutil

    if spool is not None:
        shutil.rmtree(spool, ignore_errors=True)
    out = work / f"mailmoat-{key}.prof"
    server, _ = start_child("mailmoat", work, {**spec, "profile": str(out)}, "profiled")
    try:
        cell = await measure(server, server.ports[key], f"profiled {key}", traffic,
                             sessions=sessions, messages=messages, seconds=seconds, warmup=0)
    finally:
        server.stop()
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    # threads waiting for work or for a lock are idle, not cost
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for func in list(table):
        if func[2] in IDLE:
            del table[func]
    text.write(f"\ncProfile of mailmoat, {label}, {cell.ok} messages in {cell.seconds:.1f} s "
               "(every thread, CPU time: waits cost nothing; profiling overhead inflates Python-call-heavy "
               "code). Top by own time:\n")
    stats.sort_stats("tottime").print_stats(top)
    text.write("mailmoat functions by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats("mailmoat", top)
    return text.getvalue()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run the load generator on uvloop (as the servers run)."""
    from mailmoat.gateway.server import _loop_factory

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)


def stop_all(servers: Sequence[Server]) -> None:
    for server in servers:
        server.stop()


def main(argv: Sequence[str]) -> None:
    if len(argv) == 4 and argv[0] == "child":
        kind, work, spec_file = argv[1], Path(argv[2]), Path(argv[3])
        world = load_world(work)
        spec = json.loads(spec_file.read_text())
        if kind == "glue":
            run_glue_child(world, spec)
        elif kind == "mailmoat":
            run_mailmoat_child(world, spec)
        return
    raise SystemExit("usage: python -m bench._glue child glue|mailmoat WORK SPEC")


if __name__ == "__main__":
    main(sys.argv[1:])
