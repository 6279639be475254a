"""The outbound gateway end to end (issue #7), all on loopback: real peers around a real
``mailmoat serve``.

Pieces (each started here and stopped by its own PID at teardown)::

    swaks/smtplib ──AUTH, STARTTLS or implicit TLS──► mailmoat serve (submission listeners)
        signs (RSA-2048 + Ed25519), queues, delivers to ``mx:DOMAIN``:
        knotd (authoritative: MX -> 127.0.0.x, DKIM keys, _mta-sts TXT, mta-sts A)
        ──► receivers, all on ONE port ``P`` ([delivery] mx_port = P), one address each:
            127.0.0.2  Postfix smtpd, STARTTLS, certificate for the MX names   ("good")
            127.0.0.3  the same Postfix, certificate for another name         ("wrong")
            127.0.0.4  aiosmtpd answering 450 to a recipient's first RCPT      ("retry")
            127.0.0.5  aiosmtpd that stalls before the DATA reply once         ("stall")
        MTA-STS policies over HTTPS from 127.53.x.y:443 (trustme CA = [delivery] ca_file;
        the address is drawn at random, so that concurrent runs do not fight over port 443).
    With ``dane=True`` knot also serves ``example.test`` and ``ietf.org`` signed (DNSKEYs as
    unbound's trust anchors) and the gateway's resolver is unbound (``[dns] trust_ad``):
    TLSA ``_P._tcp.mx-*.example.test`` records publish the "wrong" receiver's key.

One Postfix instance serves both Postfix addresses (``master.cf`` listeners with their own
``-o smtpd_tls_cert_file`` and ``-o myhostname``), so its ``Received`` field says which one
took a message ("by good.plain.test" / "by wrong.plain.test"), with the TLS version and
cipher it negotiated (``smtpd_tls_received_header``): the receiver's own record of the hop.
Every delivered message ends in the one Maildir of :class:`PostfixSMTPD` (virtual, static
map); ``Delivered-To`` carries the envelope recipient. Recipients ``nobody@...`` are refused
by Postfix with ``550 5.1.1`` (``check_recipient_access``), for the DSN test. Postfix keeps the
header section as it came (``message_drop_headers =`` and no header rewriting for loopback
clients), so the Maildir copy shows what mailmoat sent, Bcc included.

Composition only: :mod:`postfix_smtpd_fixture` (its MAIN_CF/MASTER_CF templates patched for
the start, as test_outbound_peers.py does), :mod:`knot_fixture`, :mod:`unbound_fixture`,
:mod:`server_fixture`.
Needs root (Postfix, port 443) and knotd, postfix (unbound with ``dane``; swaks, unshare and
opendkim-testmsg in the tests); ``require_peer`` skips (or fails under
MAILMOAT_REQUIRE_PEERS=1) without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from https_fixture import StaticHTTPS, mta_sts_files, serve_https
from knot_fixture import KnotServer, start_knot
from postfix_instance import free_port
from server_fixture import HOSTNAME, ROOT, RunningServer, launch_server, make_data_dir
from unbound_fixture import spki_sha256, start_unbound

from conftest import missing, require_peer
from mailmoat.auth.dkim import key_record, txt_strings
from mailmoat.errors import SpoolError
from mailmoat.spool import Spool
from mailmoat.store import Attempt, Delivery, open_store

__all__ = [
    "API_TOKEN",
    "E2E",
    "SENDER",
    "SENDER_PASSWORD",
    "Stack",
    "delivered_to",
    "header_fields",
    "start_stack",
]

ZONE = "plain.test"
GOOD, WRONG, RETRY, STALL = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
#: DNSSEC-signed zone for DANE (``dane=True``): recipient domain -> (MX host, whose key the
#: TLSA record ``3 1 1`` publishes). ``ietf.org`` is signed too: serve's start-up DNSSEC
#: check asks for it (gateway.outbound.DNSSEC_PROBE_NAME).
SIGNED = "example.test"
PROBE_ZONE = "ietf.org"
DANE_DOMAINS = {
    f"daneee.{SIGNED}": (f"mx-wrong.{SIGNED}", "wrong"),  # DANE-EE: the key matters, not the name
    f"danebad.{SIGNED}": (f"mx-good.{SIGNED}", "wrong"),  # published key is not this server's
}
#: recipient domain -> MX host (its A record is the receiver's address)
DOMAINS = {
    f"good.{ZONE}": f"mx-good.{ZONE}",           # Postfix, the right certificate
    f"opp.{ZONE}": f"mx-wrong.{ZONE}",           # Postfix, wrong name; no policy
    f"sts.{ZONE}": f"mx-wrong.{ZONE}",           # Postfix, wrong cert name; MTA-STS enforce
    f"stsok.{ZONE}": f"mx-good.{ZONE}",          # Postfix, right name; MTA-STS enforce
    f"retry.{ZONE}": f"mx-retry.{ZONE}",         # aiosmtpd, 450 first
    f"stall.{ZONE}": f"mx-stall.{ZONE}",         # aiosmtpd, stalls before the DATA reply
}
POSTFIX_DOMAINS = [d for d, mx in DOMAINS.items()
                   if mx in (f"mx-good.{ZONE}", f"mx-wrong.{ZONE}")] + list(DANE_DOMAINS)
#: Both MX names are in the policy: the wrong-name receiver is a candidate MX (RFC 8461 §4.1)
#: and is refused for its certificate (§4.2), not skipped for its name.
STS_POLICY = (b"version: STSv1\r\nmode: enforce\r\nmx: mx-good." + ZONE.encode()
              + b"\r\nmx: mx-wrong." + ZONE.encode() + b"\r\nmax_age: 86400\r\n")
STS_DOMAINS = (f"sts.{ZONE}", f"stsok.{ZONE}")
SENDER, SENDER_PASSWORD = f"carol@{HOSTNAME}", "a long and random passphrase"
SENDER_USER = "carol"
API_TOKEN = "api-token-" + "k" * 40
SELECTORS = ("rsa2048", "ed1")


# --- ports and addresses -----------------------------------------------------------------------
def _free_port_on(hosts: tuple[str, ...]) -> int:
    """A TCP port free on every one of ``hosts`` (the one mx_port all receivers share)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        ok = True
        for host in hosts:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


def _wait_greeting(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), \
                socket.create_connection((host, port), timeout=2) as sock:
            if sock.recv(512).startswith(b"220"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"no SMTP greeting from {host}:{port}")


# --- scripted receivers (aiosmtpd) -------------------------------------------------------------
class ScriptedHandler:
    """aiosmtpd handler: ``tempfail_first`` answers 450 to each recipient's first RCPT;
    ``stall_first`` waits (up to ``stall``s, no reply) at the end of the first DATA. Only
    messages answered with 250 are in ``accepted``."""

    def __init__(self, *, tempfail_first: bool = False, stall_first: bool = False,
                 stall: float = 60.0) -> None:
        self.tempfail_first = tempfail_first
        self.stall_first = stall_first
        self.stall = stall
        self.lock = threading.Lock()
        self.rcpt_seen: set[str] = set()
        self.rcpt_replies: list[tuple[str, str]] = []
        self.data_sessions = 0
        self.stalled = threading.Event()
        self.stalled_peer: tuple[str, int] | None = None  # the client of the stalled session
        self.accepted: list[tuple[list[str], bytes]] = []

    def rearm(self) -> None:
        """Forget the sessions seen: the next first RCPT/DATA tempfails/stalls again."""
        with self.lock:
            self.rcpt_seen.clear()
            self.data_sessions = 0
            self.stalled.clear()
            self.stalled_peer = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        with self.lock:
            first = address not in self.rcpt_seen
            self.rcpt_seen.add(address)
            reply = ("450 4.2.0 greylisted, try again later" if self.tempfail_first and first
                     else "250 2.1.5 OK")
            self.rcpt_replies.append((address, reply))
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_sessions += 1
            first = self.data_sessions == 1
        if self.stall_first and first:
            self.stalled_peer = (str(session.peer[0]), int(session.peer[1]))
            self.stalled.set()
            await asyncio.sleep(self.stall)  # the client is killed meanwhile
            return "451 4.3.0 stalled too long"
        with self.lock:
            self.accepted.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 2.0.0 OK: queued"


@contextlib.contextmanager
def _aiosmtpd(host: str, port: int, handler: ScriptedHandler) -> Iterator[None]:
    from aiosmtpd.controller import Controller

    controller = Controller(handler, hostname=host, port=port, ready_timeout=10,
                            server_hostname=f"scripted-{host}")
    controller.start()
    try:
        yield
    finally:
        controller.stop()


# --- Postfix with two listeners -----------------------------------------------------------------
def _postfix(program: str, good: Any, wrong: Any, port: int) -> Any:
    import postfix_smtpd_fixture
    from postfix_smtpd_fixture import PostfixSMTPD

    server = PostfixSMTPD(program, cert_pem=good.private_key_and_cert_chain_pem.bytes(),
                          key_pem=good.private_key_pem.bytes())
    tls = server.base / "tls"
    extra = "".join(
        f"{address}:{port} inet n - n - - smtpd -o myhostname={name}"
        f" -o smtpd_tls_cert_file={tls}/{label}-cert.pem"
        f" -o smtpd_tls_key_file={tls}/{label}-key.pem\n"
        for address, name, label in ((GOOD, f"good.{ZONE}", "good"),
                                     (WRONG, f"wrong.{ZONE}", "wrong"))
    )
    master_cf = postfix_smtpd_fixture.MASTER_CF.replace("pickup ", extra + "pickup ", 1)
    main_cf = (postfix_smtpd_fixture.MAIN_CF
               .replace("virtual_mailbox_domains = example.net",
                        "virtual_mailbox_domains = example.net " + " ".join(POSTFIX_DOMAINS))
               .replace("smtpd_recipient_restrictions =\n",
                        "smtpd_recipient_restrictions = check_recipient_access"
                        " regexp:{base}/etc/refuse\n")
               # deliver the header section as received: cleanup(8) would drop Bcc and
               # rewrite addresses of "local" (loopback) clients, hiding what we sent
               + "message_drop_headers =\nlocal_header_rewrite_clients =\n")
    assert master_cf != postfix_smtpd_fixture.MASTER_CF
    assert main_cf.count("regexp:") == 1
    assert POSTFIX_DOMAINS[0] in main_cf
    with mock.patch.object(postfix_smtpd_fixture, "MASTER_CF", master_cf), \
            mock.patch.object(postfix_smtpd_fixture, "MAIN_CF", main_cf), \
            mock.patch.object(PostfixSMTPD, "_greets", _write_then_greet(good, wrong)):
        server.start()
    for address in (GOOD, WRONG):
        _wait_greeting(address, port)
    return server


def _write_then_greet(good: Any, wrong: Any) -> Any:
    """PostfixSMTPD.start writes its directories then polls ``_greets``: the first poll is the
    moment to add the files our listeners name (before any smtpd process starts)."""
    from postfix_smtpd_fixture import PostfixSMTPD

    original = PostfixSMTPD._greets

    def greets(self: Any) -> bool:
        tls = self.base / "tls"
        if not (tls / "wrong-key.pem").exists():
            for label, leaf in (("good", good), ("wrong", wrong)):
                (tls / f"{label}-cert.pem").write_bytes(
                    leaf.private_key_and_cert_chain_pem.bytes())
                key = tls / f"{label}-key.pem"
                key.write_bytes(leaf.private_key_pem.bytes())
                key.chmod(0o600)
            (self.base / "etc" / "refuse").write_text(
                "/^nobody@/ 550 5.1.1 no such user\n")
        return bool(original(self))

    return greets


# --- MTA-STS policy server ----------------------------------------------------------------------
def _https_server(port: int) -> StaticHTTPS:
    """The policy server on ``port`` of a random 127.53.x.y where that port is free."""
    files = mta_sts_files({f"mta-sts.{d}": STS_POLICY for d in STS_DOMAINS})
    rng = random.Random()
    for _ in range(50):
        address = f"127.53.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        with contextlib.suppress(OSError):
            return StaticHTTPS((address, port), files)
    raise RuntimeError(f"no 127.53.x.y address with port {port} free")


# --- DNS ----------------------------------------------------------------------------------------
def _txt(record: str) -> str:
    return " ".join(f'"{s}"' for s in txt_strings(record))


def _signed_zones(port: int, leaves: dict[str, Any]) -> dict[str, str]:
    head = ("$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\n"
            "ns IN A 127.0.0.1\n")
    signed = head + f"mx-good IN A {GOOD}\nmx-wrong IN A {WRONG}\n" + "".join(
        f"{d.removesuffix('.' + SIGNED)} IN MX 10 {mx}.\n"
        f"_{port}._tcp.{mx.removesuffix('.' + SIGNED)} IN TLSA 3 1 1 {spki_sha256(leaves[key].cert_chain_pems[0].bytes())}\n"
        for d, (mx, key) in DANE_DOMAINS.items()
    )
    return {SIGNED: signed, PROBE_ZONE: head + "@ IN A 127.0.0.1\n"}


def _zones(records: dict[str, str], https: str) -> dict[str, str]:
    head = ("$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\n"
            "ns IN A 127.0.0.1\n")
    plain = head + "".join(
        f"{name.removesuffix('.' + ZONE)} IN MX 10 {mx.removesuffix('.' + ZONE)}\n"
        for name, mx in DOMAINS.items()
    ) + "".join(
        f"mx-{label} IN A {address}\n"
        for label, address in (("good", GOOD), ("wrong", WRONG), ("retry", RETRY),
                               ("stall", STALL))
    ) + "".join(
        f'_mta-sts.{d.removesuffix("." + ZONE)} IN TXT "v=STSv1; id=20261129"\n'
        f"mta-sts.{d.removesuffix('.' + ZONE)} IN A {https}\n"
        for d in STS_DOMAINS
    )
    local = head + f"@ IN MX 10 {HOSTNAME}.\n@ IN A 127.0.0.1\n" + "".join(
        f"{selector}._domainkey IN TXT {_txt(record)}\n" for selector, record in records.items()
    )
    return {ZONE: plain, HOSTNAME: local}


# --- the stack ---------------------------------------------------------------------------------
@dataclass
class Stack:
    """Everything but the gateway, shared by the gateways of a test module."""

    ca: Any
    cafile: Path
    knot: KnotServer
    postfix: Any  # PostfixSMTPD
    mx_port: int
    retry: ScriptedHandler
    stall: ScriptedHandler
    keys: dict[str, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey]
    https_port: int
    resolver: str  # [dns] resolvers: knot itself, or (dane=True) unbound in front of it
    trust_ad: bool

    @property
    def dkim_records(self) -> dict[str, str]:
        """``selector._domainkey.domain`` -> TXT value, as published in knot."""
        return {f"{s}._domainkey.{HOSTNAME}": key_record(k) for s, k in self.keys.items()}


@contextlib.contextmanager
def start_stack(tmp: Path, *, https_port: int = 443, dane: bool = False) -> Iterator[Stack]:
    """Start knot, Postfix (two listeners), the aiosmtpd receivers and the policy server;
    with ``dane``, also the signed zones and a validating unbound (the gateway's resolver,
    ``trust_ad = true``)."""
    pytest.importorskip("aiosmtpd.controller")
    trustme = pytest.importorskip("trustme")
    postfix_program = require_peer("postfix")
    require_peer("knotd")
    if os.geteuid() != 0:
        missing("Postfix receivers, 127.0.0.x and port 443 need root")
    keys: dict[str, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey] = {
        SELECTORS[0]: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        SELECTORS[1]: ed25519.Ed25519PrivateKey.generate(),
    }
    ca = trustme.CA()
    cafile = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    port = _free_port_on((GOOD, WRONG, RETRY, STALL))
    retry, stall = ScriptedHandler(tempfail_first=True), ScriptedHandler(stall_first=True)
    records = {s: key_record(k) for s, k in keys.items()}
    leaves = {"good": ca.issue_cert(f"mx-good.{ZONE}", f"mx-good.{SIGNED}"),
              "wrong": ca.issue_cert("somewhere-else.invalid")}
    policy_server = _https_server(https_port)
    zones = _zones(records, str(policy_server.server_address[0]))
    if dane:
        zones |= _signed_zones(port, leaves)
    with contextlib.ExitStack() as stack:
        stack.callback(policy_server.server_close)
        knot = stack.enter_context(start_knot(
            zones, signed=(SIGNED, PROBE_ZONE) if dane else ()))
        resolver = knot.address
        if dane:
            resolver = stack.enter_context(
                start_unbound(knot.port, list(zones), [SIGNED, PROBE_ZONE])).address
        postfix = _postfix(postfix_program, leaves["good"], leaves["wrong"], port)
        stack.callback(postfix.stop)
        stack.enter_context(_aiosmtpd(RETRY, port, retry))
        stack.enter_context(_aiosmtpd(STALL, port, stall))
        bound = stack.enter_context(serve_https(policy_server, ca,
                                                [f"mta-sts.{d}" for d in STS_DOMAINS]))
        yield Stack(ca=ca, cafile=cafile, knot=knot, postfix=postfix, mx_port=port,
                    retry=retry, stall=stall, keys=keys, https_port=bound,
                    resolver=resolver, trust_ad=dane)


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class E2E:
    """One gateway (``mailmoat serve``) over a :class:`Stack`."""

    stack: Stack
    data_dir: Path
    config: Path
    api_port: int
    server: RunningServer | None = None
    restarts: list[RunningServer] = field(default_factory=list)

    @classmethod
    def create(cls, stack: Stack, data_dir: Path, *, lease: float = 60.0,
               workers: int = 1) -> E2E:
        (data_dir / "dkim").mkdir(parents=True)
        for selector, key in stack.keys.items():
            (data_dir / "dkim" / f"{selector}.pem").write_bytes(_pem(key))
        api_port = free_port()
        keys = ", ".join(f'{{ domain = "{HOSTNAME}", selector = "{s}", key = "dkim/{s}.pem" }}'
                         for s in stack.keys)
        extra = f"""
[dns]
resolvers = ["{stack.resolver}"]
trust_ad = {"true" if stack.trust_ad else "false"}

[delivery]
mx_port = {stack.mx_port}
ca_file = "{stack.cafile}"
min_backoff = 1.0
max_backoff = 2.0
lease = {lease}

[dkim_signing]
keys = [ {keys} ]

[submission_api]
enabled = true
address = "127.0.0.1"
port = {api_port}
tokens = {{ site = "{API_TOKEN}" }}
allowed_from_domains = ["{HOSTNAME}"]
token_burst = 100000
ip_burst = 100000
"""
        config = make_data_dir(data_dir, listeners=(("starttls", "submission"),
                                                    ("implicit-tls", "submission")),
                               extra=extra, workers=workers)
        e2e = cls(stack=stack, data_dir=data_dir, config=config, api_port=api_port)
        e2e.add_user()
        return e2e

    def add_user(self) -> None:
        """``mailmoat user add`` (the CLI, as an operator would)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run(
            [sys.executable, "-m", "mailmoat.cli.main", "user", "add", SENDER_USER,
             "--address", SENDER, "--password-stdin", "--config", str(self.config)],
            input=SENDER_PASSWORD + "\n", capture_output=True, text=True, env=env, timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout

    def start(self, *, workers: int = 1, timeout: float = 30.0) -> RunningServer:
        """``mailmoat serve`` (:func:`server_fixture.launch_server`, with the log kept in a
        file), its stdout drained from then on."""
        log = self.data_dir / f"serve-{len(self.restarts)}.log"
        server = launch_server(self.config, workers=workers, timeout=timeout,
                               log_level="info", grace=5, log=log)
        self.restarts.append(server)
        server.drain()  # worker lines: serve must never block on a full pipe
        self.server = server
        return server

    def stop(self) -> None:
        for server in self.restarts:
            server.stop()

    def port(self, mode: str) -> int:
        assert self.server is not None
        return self.server.port(mode, "submission")

    # --- submission -----------------------------------------------------------------------------
    def swaks(self, *, to: str, data: bytes, implicit_tls: bool = False,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
        program = require_peer("swaks")
        message = self.data_dir / f"swaks-{time.monotonic_ns()}.eml"
        message.write_bytes(data)
        mode = "implicit-tls" if implicit_tls else "starttls"
        args = [program, "--server", "127.0.0.1", "--port", str(self.port(mode)),
                "--ehlo", "client.test", "--from", SENDER, "--to", to,
                "--auth", "PLAIN", "--auth-user", SENDER_USER,
                "--auth-password", SENDER_PASSWORD, "--data", f"@{message}",
                "--timeout", "30"]
        args.append("--tlsc" if implicit_tls else "--tls")
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              check=False)

    # --- the store ------------------------------------------------------------------------------
    def deliveries(self, recipient: str) -> list[tuple[Delivery, list[Attempt]]]:
        async def read() -> list[tuple[Delivery, list[Attempt]]]:
            store = await open_store(self.data_dir / "mailmoat.db")
            try:
                rows = [d for d in await store.list_deliveries(limit=100_000)
                        if d.recipient.lower() == recipient.lower()]
                return [(d, await store.attempts(d.id)) for d in rows]
            finally:
                await store.close()
        return asyncio.run(read())

    def wait_state(self, recipient: str, states: tuple[str, ...], *,
                   timeout: float = 30.0,
                   min_attempts: int = 1) -> tuple[Delivery, list[Attempt]]:
        deadline = time.monotonic() + timeout
        rows: list[tuple[Delivery, list[Attempt]]] = []
        while time.monotonic() < deadline:
            rows = self.deliveries(recipient)
            if rows and all(d.state in states and len(a) >= min_attempts for d, a in rows):
                assert len(rows) == 1, rows
                return rows[0]
            time.sleep(0.2)
        raise AssertionError(f"{recipient}: not in {states} after {timeout}s: {rows}\n"
                             f"{self.log_tail()}")

    def spooled_for(self, recipient: str) -> list[str]:
        """Spool IDs of messages (still) in the spool with ``recipient`` in the envelope."""
        spool = Spool(self.data_dir / "spool")
        found: list[str] = []
        for spool_id in spool.list():
            with contextlib.suppress(SpoolError):  # delivered and removed meanwhile
                rcpts = spool.get(spool_id).envelope.rcpts
                if any(r.address.lower() == recipient.lower() for r in rcpts):
                    found.append(spool_id)
        return found

    def log_tail(self, chars: int = 4000) -> str:
        """The end of every serve log (stderr) of this gateway, for assertion messages."""
        out = []
        for path in sorted(self.data_dir.glob("serve-*.log")):
            out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-chars:])
        return "\n".join(out)

    def local_mail(self, user: str = SENDER_USER) -> list[bytes]:
        base = self.data_dir / "mail"
        if not base.exists():
            return []
        return [p.read_bytes() for p in sorted(base.rglob("*"))
                if p.is_file() and p.parent.name in ("new", "cur") and user in str(p)]


def socket_owner(local: tuple[str, int], pids: list[int]) -> int | None:
    """Which of ``pids`` holds the TCP socket whose local end is ``local`` (the receiver
    saw it as the peer): /proc/net/tcp gives its inode, /proc/PID/fd the process."""
    address, port = local
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            cols = line.split()
            if cols[1] == want:
                inodes.add(f"socket:[{cols[9]}]")
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return pid
    return None


def worker_pids(server: RunningServer, count: int, timeout: float = 10.0) -> list[int]:
    """The worker PIDs serve printed ("worker pid N"), once ``count`` are known."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(m[1]) for line in list(server.output)
                if (m := re.search(r"worker pid (\d+)(?: \(slot \d+\))?\s*$", line))]
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} workers: {server.output}")


# --- reading what Postfix delivered -------------------------------------------------------------
def header_fields(message: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, unfolded value) of each header field, written here independently of
    mailmoat's parser: the header section ends at the first empty line (LF or CRLF);
    continuation lines start with SP or HTAB (RFC 5322 §2.2.3)."""
    text = message.replace(b"\r\n", b"\n")
    head = text.split(b"\n\n", 1)[0]
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\r\n" + line)
        else:
            raw, _, value = line.partition(b":")
            fields.append((raw.decode("latin-1").strip().lower(), value))
    return fields


_DELIVERED_TO = re.compile(rb"^Delivered-To: (\S+)$", re.M | re.I)


def delivered_to(message: bytes) -> str | None:
    match = _DELIVERED_TO.search(message.replace(b"\r\n", b"\n"))
    return match[1].decode("ascii", "replace").lower() if match else None


def postfix_messages(postfix: Any) -> list[bytes]:
    new = postfix.maildir / "new"
    if not new.exists():
        return []
    out = []
    for path in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        with contextlib.suppress(OSError):
            out.append(path.read_bytes())
    return out


def wait_postfix(postfix: Any, recipient: str, *, count: int = 1,
                 timeout: float = 30.0) -> list[bytes]:
    """The messages Postfix delivered for ``recipient`` (its Delivered-To), once ``count``."""
    deadline = time.monotonic() + timeout
    found: list[bytes] = []
    while time.monotonic() < deadline:
        found = [m for m in postfix_messages(postfix) if delivered_to(m) == recipient.lower()]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"Postfix did not deliver {count} message(s) for {recipient} in "
                         f"{timeout}s:\n{postfix.log()[-2000:]}")
