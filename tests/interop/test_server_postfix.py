"""Interop: Postfix as a relay hands mail to our gateway over STARTTLS.

A private Postfix (:mod:`postfix_fixture`) accepts a message from a local client and relays it
to our ``starttls``/``mx`` listener with ``smtp_tls_security_level = encrypt``. Postfix's own
maillog records the TLS version and cipher *its* client negotiated with us; the Received line
our gateway prepended (read back by the header analyser) must name the same, and the message
Postfix delivered must be the one the client gave it.
"""

from __future__ import annotations

import smtplib
import time
import uuid
from collections.abc import Iterator

import pytest
from postfix_fixture import PostfixRelay
from server_fixture import HOSTNAME, RunningServer, make_data_dir, start_server

from conftest import require_peer
from mailmoat.analysis import TLSStatus, parse_received

#: The gateway would deliver (and remove from the spool) what these tests read back from the
#: spool: hold the queue (accept and queue, deliver nothing).
HOLD = "[delivery]\nhold = true\n"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_data_dir(tmp_path_factory.mktemp("gw"), listeners=(("starttls", "mx"),),
                           extra=HOLD)
    running = start_server(config)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def relay(gateway: RunningServer) -> Iterator[PostfixRelay]:
    program = require_peer("postfix")
    instance = PostfixRelay(program, relayhost_port=gateway.port("starttls", "mx"))
    instance.start()
    yield instance
    instance.stop()


def wait_for(gateway: RunningServer, marker: bytes, timeout: float = 40.0) -> tuple[str, bytes]:
    spool = gateway.spool()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for spool_id in spool.list():
            message = spool.read_message(spool_id)
            if marker in message:
                return spool_id, message
        time.sleep(0.2)
    raise AssertionError(f"message {marker!r} not relayed in {timeout} s")


def test_postfix_relays_to_us_over_starttls(gateway: RunningServer, relay: PostfixRelay) -> None:
    marker = uuid.uuid4().hex.encode()
    body = (b"From: sender@relay.test\r\nTo: bob@mx.test\r\nSubject: via postfix\r\n"
            b"Message-ID: <" + marker + b"@relay.test>\r\n\r\nrelayed " + marker + b"\r\n")
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=20) as c:
        c.sendmail("sender@relay.test", [f"bob@{HOSTNAME}"], body)
    spool_id, message = wait_for(gateway, marker)
    entry = gateway.spool().get(spool_id)
    assert entry.envelope.helo == "relay.test"
    assert entry.envelope.mail_from == "sender@relay.test"
    assert [r.address for r in entry.envelope.rcpts] == [f"bob@{HOSTNAME}"]
    # Our Received field, first line of the message, read back by the analyser.
    first, _, rest = message.partition(b"\r\n")
    while rest[:1] in (b" ", b"\t"):
        line, _, rest = rest.partition(b"\r\n")
        first += b"\r\n" + line
    stamp = parse_received(first[len(b"Received:"):] + b"\r\n")
    assert stamp.tls is TLSStatus.YES
    assert stamp.protocol == "ESMTPS"
    assert stamp.from_name == "relay.test"
    # Postfix's own log of the same TLS session.
    sessions = [s for s in relay.tls_log() if s[0] == gateway.port("starttls", "mx")]
    assert sessions, relay.log()[-2000:]
    _, version, cipher, bits = sessions[-1]
    assert (stamp.tls_version, stamp.cipher, stamp.tls_bits) == (version, cipher, bits)
    assert entry.envelope.tls is not None
    assert entry.envelope.tls.cipher == cipher
    # Below ours: the Received field Postfix's smtpd wrote, then the client's message.
    assert b"by relay.test (Postfix) with ESMTP" in rest.replace(b"\r\n\t", b" ")
    assert message.endswith(b"relayed " + marker + b"\r\n")
