"""Interop: ``mailmoat serve`` runs the whole gateway, as a subprocess on loopback ports.

smtplib sends (mx and submission listeners), the gateway spools, queues (store rows before
the 250) and delivers: local domains into the default Maildir or to an ``smtp://``
destination, other domains to their MX (``[delivery] mx_port`` pointing at a loopback
receiver, found through a loopback DNS stub). aiosmtpd is the independent receiver. The
spool must be empty afterwards, and SIGTERM must stop the server cleanly.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import signal
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import httpx
import pytest
from server_fixture import (
    HOSTNAME,
    PASSWORD,
    USER,
    USER_ADDRESS,
    RunningServer,
    make_data_dir,
    start_server,
)

from mailmoat.spool import Envelope, Recipient, Spool

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

pytestmark = pytest.mark.timeout(120)

TOKEN = "t" * 40
REMOTE = "remote.test"


# --- peers: a DNS stub and an aiosmtpd receiver -------------------------------------------------
class DNSStub:
    """UDP DNS on 127.0.0.1: A records from ``hosts``, NXDOMAIN for everything else."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = hosts
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:  # a stub ignores junk
                continue
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            if name in self.hosts:
                if question.rdtype == 1:  # A
                    reply.answer.append(dns.rrset.from_text(
                        question.name, 60, "IN", "A", self.hosts[name]))
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Handler:
    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(Received(mail_from=envelope.mail_from,
                                      rcpt_tos=list(envelope.rcpt_tos),
                                      content=bytes(envelope.original_content)))
        return "250 2.0.0 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dns_stub() -> Iterator[DNSStub]:
    stub = DNSStub({REMOTE: "127.0.0.1"})
    yield stub
    stub.close()


@pytest.fixture
def receiver() -> Iterator[tuple[Handler, int]]:
    handler = Handler()
    port = _free_port()
    controller = aiosmtpd_controller.Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


# --- helpers ------------------------------------------------------------------------------------
def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def spool_empty(server: RunningServer) -> bool:
    return Spool(server.data_dir / "spool").list() == []


def maildir_files(server: RunningServer, domain: str, user: str) -> list[Path]:
    new = server.data_dir / "mail" / domain / user / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def message(sender: str, rcpt: str, tag: str) -> bytes:
    return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@test>\r\n"
            f"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n\r\nbody of {tag}\r\n").encode()


def tls_context(server: RunningServer) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.cert))
    context.check_hostname = False
    return context


def gateway_config(tmp_path: Path, dns_port: int, delivery: str, *, extra: str = "") -> Path:
    return make_data_dir(
        tmp_path / "gw", listeners=(("plain", "mx"), ("implicit-tls", "submission")),
        extra=(f'[dns]\nresolvers = ["127.0.0.1:{dns_port}"]\n'
               f"[delivery]\nmin_backoff = 1.0\n{delivery}\n{extra}"))


def header_fields(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw)


def check_ours(raw: bytes) -> None:
    """Our trace fields: Received by the gateway, Authentication-Results of the gateway."""
    parsed = header_fields(raw)
    received = [str(v) for v in parsed.get_all("Received", [])]
    assert any(f"by {HOSTNAME} (mailmoat)" in r for r in received), received
    results = [str(v) for v in parsed.get_all("Authentication-Results", [])]
    assert results, "no Authentication-Results field"
    assert results[0].split(";", 1)[0].strip() == HOSTNAME


# --- tests --------------------------------------------------------------------------------------
def test_serve_delivers_local_mail_to_maildir_and_remote_mail_to_the_mx(
        tmp_path: Path, dns_stub: DNSStub, receiver: tuple[Handler, int]) -> None:
    handler, mx_port = receiver
    config = gateway_config(tmp_path, dns_stub.port, f"mx_port = {mx_port}")
    server = start_server(config, log_level="info")
    try:
        output = "".join(server.output)
        assert f"store sqlite:{server.data_dir.resolve()}/mailmoat.db" in output
        assert "queue recovered: 0 spooled messages without delivery rows queued" in output
        assert f"local domains -> maildir:{server.data_dir.resolve()}/mail/%d/%u" in output
        assert f"port {mx_port} (DANE off" in output  # [dns] trust_ad is off

        # mx: an outside sender to a local user -> the default Maildir
        with smtplib.SMTP("127.0.0.1", server.port("plain", "mx"), timeout=30) as client:
            client.sendmail("sender@outside.test", [f"bob@{HOSTNAME}"],
                            message("sender@outside.test", f"bob@{HOSTNAME}", "mx-local"))
        wait_for("maildir delivery", lambda: len(maildir_files(server, HOSTNAME, "bob")) == 1)
        raw = maildir_files(server, HOSTNAME, "bob")[0].read_bytes()
        assert raw.startswith(b"Return-Path: <sender@outside.test>\nDelivered-To: bob@mx.test\n")
        assert raw.endswith(b"\n\nbody of mx-local\n")
        check_ours(raw)

        # submission: our user to a remote domain -> its MX (the DNS stub's A record, mx_port)
        with smtplib.SMTP_SSL("127.0.0.1", server.port("implicit-tls", "submission"),
                              context=tls_context(server), timeout=30) as client:
            client.login(USER, PASSWORD)
            client.sendmail(USER_ADDRESS, [f"carol@{REMOTE}"],
                            message(USER_ADDRESS, f"carol@{REMOTE}", "to-mx"))
        wait_for("MX delivery", lambda: len(handler.messages) == 1)
        got = handler.messages[0]
        assert (got.mail_from, got.rcpt_tos) == (USER_ADDRESS, [f"carol@{REMOTE}"])
        parsed = header_fields(got.content)
        assert any(f"by {HOSTNAME} (mailmoat)" in str(r) for r in parsed.get_all("Received", []))
        assert got.content.endswith(b"\r\n\r\nbody of to-mx\r\n")
        wait_for("the spool to empty", lambda: spool_empty(server))
    finally:
        assert server.stop() == 0  # SIGTERM: a clean exit
    lock_files = list((server.data_dir / "spool" / "tmp").glob("*.lock"))
    assert lock_files == [], "the worker did not close its spool"


def test_serve_delivers_local_mail_to_an_smtp_destination(
        tmp_path: Path, dns_stub: DNSStub, receiver: tuple[Handler, int]) -> None:
    handler, port = receiver
    config = gateway_config(tmp_path, dns_stub.port,
                            f'destination = "smtp://127.0.0.1:{port}"')
    server = start_server(config)
    try:
        assert f"local domains -> smtp://127.0.0.1:{port}" in "".join(server.output)
        with smtplib.SMTP("127.0.0.1", server.port("plain", "mx"), timeout=30) as client:
            client.sendmail("sender@outside.test", [f"bob@{HOSTNAME}", f"dave@{HOSTNAME}"],
                            message("sender@outside.test", f"bob@{HOSTNAME}", "smtp-dest"))
        wait_for("SMTP delivery", lambda: len(handler.messages) >= 1)
        got = handler.messages[0]
        assert got.mail_from == "sender@outside.test"
        assert sorted(got.rcpt_tos) == [f"bob@{HOSTNAME}", f"dave@{HOSTNAME}"]
        check_ours(got.content)
        wait_for("the spool to empty", lambda: spool_empty(server))
    finally:
        assert server.stop() == 0


def test_serve_recovers_spooled_messages_without_rows_at_start(
        tmp_path: Path, dns_stub: DNSStub) -> None:
    """A message in the spool with no queue rows (a crash between the spool commit and the
    store commit) is queued by the parent before the workers start, and delivered."""
    config = gateway_config(tmp_path, dns_stub.port, "")
    spool = Spool(config.parent / "spool", fsync=False)
    envelope = Envelope(mail_from="sender@outside.test",
                        rcpts=(Recipient(address=f"erin@{HOSTNAME}"),), received_at=time.time())
    spool_id = asyncio.run(spool.store(envelope, message("sender@outside.test",
                                                         f"erin@{HOSTNAME}", "orphan")))
    spool.close()
    server = start_server(config, workers=2)
    try:
        assert ("queue recovered: 1 spooled messages without delivery rows queued"
                in "".join(server.output))
        wait_for("the recovered message", lambda: len(maildir_files(server, HOSTNAME,
                                                                     "erin")) == 1)
        assert maildir_files(server, HOSTNAME, "erin")[0].read_bytes().endswith(
            b"\n\nbody of orphan\n")
        wait_for("the spool to empty", lambda: spool_empty(server))
        assert spool_id not in Spool(server.data_dir / "spool").list()
    finally:
        assert server.stop() == 0


def test_submission_api_runs_once_and_queues_through_the_same_queue(
        tmp_path: Path, dns_stub: DNSStub) -> None:
    api_port = _free_port()
    config = gateway_config(
        tmp_path, dns_stub.port, "",
        extra=(f'[submission_api]\nenabled = true\naddress = "127.0.0.1"\nport = {api_port}\n'
               f'tokens = {{ web = "{TOKEN}" }}\n'))
    server = start_server(config, workers=2)
    try:
        wait_for("the API", lambda: _accepts(api_port), timeout=15)
        body = {"from": USER_ADDRESS, "to": [f"frank@{HOSTNAME}"], "subject": "via api",
                "text": "hello from the form"}
        reply = httpx.post(f"http://127.0.0.1:{api_port}/v1/messages", content=json.dumps(body),
                           headers={"Authorization": f"Bearer {TOKEN}",
                                    "Content-Type": "application/json"}, timeout=10)
        assert reply.status_code == 202, reply.text
        wait_for("API delivery", lambda: len(maildir_files(server, HOSTNAME, "frank")) == 1)
        raw = maildir_files(server, HOSTNAME, "frank")[0].read_bytes()
        assert b"Subject: via api" in raw
        assert b"hello from the form" in raw
        wait_for("the spool to empty", lambda: spool_empty(server))
        # SIGTERM, then everything the server and its workers printed
        os.kill(server.proc.pid, signal.SIGTERM)
        assert server.proc.stdout is not None
        server.output.append(server.proc.stdout.read())
    finally:
        assert server.stop() == 0
    # exactly one process served the API (worker slot 0)
    assert "".join(server.output).count("submission API listening") == 1, server.output
    assert not _accepts(api_port), "the API is gone with the server"


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@dataclass
class StallOnce(Handler):
    """Holds the first DATA for a long time (the gateway is stopped meanwhile), then accepts."""

    calls: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(60)
            return "451 4.3.0 too late"
        return await super().handle_DATA(server, session, envelope)


def test_sigterm_during_a_delivery_loses_nothing(tmp_path: Path, dns_stub: DNSStub) -> None:
    """SIGTERM while a delivery hangs: the worker stops within the grace period; the row keeps
    its lease and, after a restart, is delivered once the lease ran out."""
    handler = StallOnce()
    port = _free_port()
    controller = aiosmtpd_controller.Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = gateway_config(tmp_path, dns_stub.port,
                                f'destination = "smtp://127.0.0.1:{port}"\nlease = 3.0')
        server = start_server(config)
        try:
            with smtplib.SMTP("127.0.0.1", server.port("plain", "mx"), timeout=30) as client:
                client.sendmail("sender@outside.test", [f"bob@{HOSTNAME}"],
                                message("sender@outside.test", f"bob@{HOSTNAME}", "stalled"))
            wait_for("the stalled delivery", lambda: handler.calls == 1)
            started = time.monotonic()
        finally:
            assert server.stop() == 0  # SIGTERM; the fixture's --grace is 5 s
        assert time.monotonic() - started < 14, "the stop waited for the hung delivery"
        assert handler.messages == []
        assert len(Spool(server.data_dir / "spool").list()) == 1, "the message must stay"

        restarted = start_server(config)
        try:
            wait_for("delivery after the lease ran out", lambda: len(handler.messages) == 1)
            assert handler.messages[0].content.endswith(b"\r\n\r\nbody of stalled\r\n")
            wait_for("the spool to empty", lambda: spool_empty(restarted))
        finally:
            assert restarted.stop() == 0
    finally:
        controller.stop()
