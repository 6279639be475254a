"""Crash test: ``kill -9`` the gateway under load; nothing acknowledged may be lost.

A bounded load (concurrent clients, each sending messages one after another over the plain mx
listener) records every ``250 ... queued as ID`` it received, and the unique token each
acknowledged message carried. The server process is killed with SIGKILL by PID in the middle.
Then the spool is opened read-only: every acknowledged ID is there, its record verifies (size
and SHA-256 in the envelope, so nothing is truncated), its content carries the token the
client sent under that ID, and no token is stored twice. A restart must clean up the
half-received messages of the killed process (``tmp/`` holds no ``.part`` file of it), and
the same checks hold afterwards.

The second test kills one *worker* of a two-worker server: the supervisor starts another,
and the clients that reconnect keep getting acknowledgements.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import pytest
from server_fixture import HOSTNAME, make_data_dir, start_server

from mailmoat.spool import Spool

#: The gateway would deliver (and remove from the spool) what these tests read back from the
#: spool: hold the queue (accept and queue, deliver nothing).
HOLD = "[delivery]\nhold = true\n"

pytestmark = pytest.mark.timeout(120)

CLIENTS = 12
QUEUED_RE = re.compile(rb"^250 2\.0\.0 Ok: queued as ([0-9A-Z]{26})\r\n", re.M)
TOKEN_RE = re.compile(rb"X-Token: (\S+)\r\n")


async def _reply(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


async def client(port: int, index: int, acked: dict[str, bytes], stop: asyncio.Event,
                 *, reconnect: bool) -> None:
    """Send messages until ``stop``; record (ID -> token) for every 250 after DATA."""
    count = 0
    body = b"".join(b"line %05d of the crash test body.................................\r\n"
                    % i for i in range(1500))  # ~100 KB: on disk and mid-transfer at the kill
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if not reconnect:
                return
            await asyncio.sleep(0.05)
            continue
        try:
            await _reply(reader)
            writer.write(b"EHLO crash.test\r\n")
            await _reply(reader)
            while not stop.is_set():
                token = b"c%d-m%d-%d" % (index, count, time.monotonic_ns())
                count += 1
                writer.write(b"MAIL FROM:<load@elsewhere.example>\r\n")
                assert (await _reply(reader)).startswith(b"250")
                writer.write(f"RCPT TO:<bob@{HOSTNAME}>\r\n".encode())
                assert (await _reply(reader)).startswith(b"250")
                writer.write(b"DATA\r\n")
                assert (await _reply(reader)).startswith(b"354")
                message = b"Subject: crash\r\nX-Token: " + token + b"\r\n\r\n" + body
                for start in range(0, len(message), 8192):  # in pieces, as a network would
                    writer.write(message[start : start + 8192])
                    await writer.drain()
                writer.write(b".\r\n")
                reply = await _reply(reader)
                match = QUEUED_RE.match(reply)
                assert match, reply
                acked[match[1].decode()] = token
        except (ConnectionError, OSError, AssertionError):
            pass
        finally:
            writer.close()
        if not reconnect:
            return


def check_spool(directory: Path, acked: dict[str, bytes]) -> set[str]:
    """Every acknowledged message present, intact, with its token; no token twice."""
    spool = Spool(directory)
    ids = spool.list()
    assert len(ids) == len(set(ids))
    tokens: dict[bytes, str] = {}
    for spool_id in ids:
        spool.get(spool_id)  # verifies trailer, envelope checksum, size and SHA-256
        message = spool.read_message(spool_id)
        match = TOKEN_RE.search(message)
        assert match, spool_id
        assert match[1] not in tokens, f"token stored twice: {match[1]!r}"
        tokens[match[1]] = spool_id
        assert message.endswith(b"crash test body.................................\r\n")
    missing = set(acked) - set(ids)
    assert not missing, f"acknowledged but lost: {sorted(missing)}"
    for spool_id, token in acked.items():
        assert tokens.get(token) == spool_id
    return set(ids)


def parts(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "tmp").glob("*.part"))


async def run_load(port: int, victim: int, *, kill_after: float, total: float,
                   reconnect: bool) -> dict[str, bytes]:
    acked: dict[str, bytes] = {}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client(port, i, acked, stop, reconnect=reconnect))
             for i in range(CLIENTS)]
    await asyncio.sleep(kill_after)
    os.kill(victim, signal.SIGKILL)
    await asyncio.sleep(max(0.0, total - kill_after))
    stop.set()
    await asyncio.wait(tasks, timeout=20)
    for task in tasks:
        task.cancel()
    return acked


async def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "gw", listeners=(("plain", "mx"),), extra=HOLD)
    server = start_server(config)
    spool_dir = server.data_dir / "spool"
    try:
        acked = await run_load(server.port("plain", "mx"), server.proc.pid,
                               kill_after=1.5, total=1.6, reconnect=False)
        server.proc.wait(10)
        assert server.proc.returncode == -signal.SIGKILL
    finally:
        server.stop()
    assert len(acked) >= CLIENTS, "the load did not get going before the kill"
    before = check_spool(spool_dir, acked)
    # The next start removes the half-received messages of the killed process.
    left = parts(spool_dir)
    restarted = start_server(config)
    try:
        assert parts(spool_dir) == []
        assert f"{len(left)} half-received removed" in "".join(restarted.output)
    finally:
        assert restarted.stop() == 0
    assert check_spool(spool_dir, acked) == before


async def test_kill_9_one_worker_of_two(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "gw", listeners=(("plain", "mx"),), workers=2,
                           extra=HOLD)
    server = start_server(config, workers=2)
    spool_dir = server.data_dir / "spool"
    try:
        workers = [int(m[1]) for line in server.output
                   if (m := re.search(r"worker pid (\d+)", line))]
        if len(workers) < 2:  # the banner came before the fork lines: read them
            assert server.proc.stdout is not None
            while len(workers) < 2:
                line = server.proc.stdout.readline()
                server.output.append(line)
                if m := re.search(r"worker pid (\d+)", line):
                    workers.append(int(m[1]))
        acked = await run_load(server.port("plain", "mx"), workers[0],
                               kill_after=1.0, total=2.5, reconnect=True)
        assert server.proc.poll() is None, "the supervisor must survive a worker's death"
    finally:
        assert server.stop() == 0
    assert len(acked) >= CLIENTS
    check_spool(spool_dir, acked)
    assert parts(spool_dir) == []  # the replacement worker's recovery and clean shutdowns
