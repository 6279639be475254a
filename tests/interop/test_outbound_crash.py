"""Crash during an outbound delivery (issue #7): ``kill -9`` of the serve worker while the
receiving MX has the whole message but has not answered the end of DATA, then a restart on
the same data directory. The message must be delivered at least once, and nothing lost.

The receiver (aiosmtpd, see outbound_e2e_fixture.py) stalls its first DATA reply; it counts
a message as received only when it answered 250, which is what RFC 5321 §4.1.1.4 makes the
moment of responsibility transfer. The killed session therefore delivered nothing; after the
restart the queue (lease expired: ``[delivery] lease``) delivers it again and the receiver
accepts it. Checked: the receiver holds the message (with its signatures), the store row is
``delivered``, and the spool no longer holds it.

The second test runs two workers and kills exactly the one holding the stalled connection
(found through /proc from the client port the receiver saw): the supervisor starts another
worker, and the message is delivered without a restart once the dead worker's lease ran out.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from outbound_e2e_fixture import E2E, SENDER, Stack, socket_owner, start_stack, worker_pids
from server_fixture import HOSTNAME

from conftest import require_peer

pytestmark = [pytest.mark.timeout(180)]

LEASE = 4.0


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_peer("swaks")
    with start_stack(tmp_path_factory.mktemp("stack"), https_port=0) as started:
        yield started


@pytest.fixture
def stack(module_stack: Stack) -> Stack:
    module_stack.stall.rearm()
    return module_stack


def test_kill_9_during_delivery_then_restart(stack: Stack, tmp_path_factory:
                                             pytest.TempPathFactory) -> None:
    gw = E2E.create(stack, tmp_path_factory.mktemp("gw") / "data", lease=LEASE)
    rcpt = "crash@stall.plain.test"
    message = (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: crash\r\n"
               f"Message-ID: <crash@{HOSTNAME}>\r\n\r\nbody\r\n").encode()
    try:
        server = gw.start()
        done = gw.swaks(to=rcpt, data=message)
        assert done.returncode == 0, done.stdout[-2000:]
        assert stack.stall.stalled.wait(30), "the delivery never reached the receiver"
        time.sleep(0.3)  # the worker is now waiting for the reply to the end of DATA
        assert [c for r, c in stack.stall.accepted if r == [rcpt]] == []
        os.kill(server.proc.pid, signal.SIGKILL)  # the serve worker (workers = 1), by PID
        assert server.proc.wait(10) == -signal.SIGKILL
        spooled = server.spool().list()
        assert len(spooled) == 1, spooled  # still ours: not delivered, not lost

        gw.start()
        delivery, _ = gw.wait_state(rcpt, ("delivered",), timeout=LEASE + 40)
        copies = [c for rcpts, c in stack.stall.accepted if rcpts == [rcpt]]
        assert len(copies) >= 1
        assert all(b"Message-ID: <crash@mx.test>" in c for c in copies)
        assert all(b"DKIM-Signature:" in c for c in copies)
        assert delivery.spool_id == spooled[0]
        deadline = time.monotonic() + 10
        while gw.server is not None and gw.server.spool().list() and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert gw.server is not None
        assert gw.server.spool().list() == []
    finally:
        gw.stop()


def test_kill_9_the_delivering_worker_of_two(stack: Stack, tmp_path_factory:
                                             pytest.TempPathFactory) -> None:
    gw = E2E.create(stack, tmp_path_factory.mktemp("gw2") / "data", lease=LEASE, workers=2)
    rcpt = "crash2@stall.plain.test"
    message = (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: crash2\r\n"
               f"Message-ID: <crash2@{HOSTNAME}>\r\n\r\nbody\r\n").encode()
    try:
        server = gw.start(workers=2)
        workers = worker_pids(server, 2)
        done = gw.swaks(to=rcpt, data=message)
        assert done.returncode == 0, done.stdout[-2000:]
        assert stack.stall.stalled.wait(30), "the delivery never reached the receiver"
        assert stack.stall.stalled_peer is not None
        victim = socket_owner(stack.stall.stalled_peer, workers)
        assert victim is not None, (stack.stall.stalled_peer, workers)
        os.kill(victim, signal.SIGKILL)
        assert [c for r, c in stack.stall.accepted if r == [rcpt]] == []
        delivery, _ = gw.wait_state(rcpt, ("delivered",), timeout=LEASE + 40)
        assert server.proc.poll() is None, "the supervisor must survive"
        assert any(f"worker pid {victim} exited" in line for line in server.output)
        copies = [c for rcpts, c in stack.stall.accepted if rcpts == [rcpt]]
        assert len(copies) >= 1
        assert all(b"Message-ID: <crash2@mx.test>" in c for c in copies)
        deadline = time.monotonic() + 10
        while server.spool().list() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.spool().list() == []
        assert delivery.state == "delivered"
    finally:
        gw.stop()
