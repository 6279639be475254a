"""spool: durable storage, streamed writes, IDs, recovery, group commit, and a kill -9 test."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailmoat.clock import FixedClock
from mailmoat.errors import LimitExceeded, SpoolError
from mailmoat.net.tls import TLSInfo
from mailmoat.spool import (
    Envelope,
    Recipient,
    Spool,
    check_id,
    id_time,
    make_id_factory,
)
from mailmoat.spool._format import envelope_from_json, envelope_to_json

pytestmark = pytest.mark.timeout(60)

ENV = Envelope(
    mail_from="alice@example.org",
    rcpts=(
        Recipient(address="bob@example.net", notify=("SUCCESS", "FAILURE"),
                  orcpt="rfc822;bob@example.net"),
        Recipient(address="carol@example.net"),
    ),
    received_at=1_795_000_000.25,
    client_ip="2001:db8::1",
    client_port=50123,
    helo="client.example.org",
    tls=TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256,
                server_name="mx.example.org"),
    auth_user="alice",
    body="8BITMIME",
    smtputf8=True,
    ret="HDRS",
    envid="QQ314159",
)


async def test_store_and_read_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    message = b"Subject: hi\r\n\r\nbody \xff\xfe bytes stay bytes\r\n"
    spool_id = await spool.store(ENV, message)
    assert spool.list() == [spool_id]
    entry = spool.get(spool_id)
    assert entry.envelope == ENV
    assert entry.size == len(message)
    assert entry.sha256 == hashlib.sha256(message).hexdigest()
    assert spool.read_message(spool_id) == message
    assert os.listdir(tmp_path / "tmp") == [f"{spool._token}.lock"]
    spool.remove(spool_id)
    assert spool.list() == []
    with pytest.raises(SpoolError, match="no message"):
        spool.get(spool_id)
    with pytest.raises(SpoolError, match="no message"):
        spool.remove(spool_id)
    await spool.aclose()
    assert os.listdir(tmp_path / "tmp") == []


async def test_utf8_and_undecodable_addresses_roundtrip(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    env = Envelope(mail_from="jöran@bücher.example", rcpts=(Recipient(address="x\udcff@y"),),
                   received_at=0.0)
    spool_id = await spool.store(env, b"m")
    assert spool.get(spool_id).envelope == env


async def test_verdict_fields_roundtrip(tmp_path: Path) -> None:
    # The inbound verdict travels with the message (gateway.deliver applies it).
    spool = Spool(tmp_path, fsync=False)
    env = dataclasses.replace(
        ENV, header_edits='{"v":1,"prepend":"QQ==","remove_authserv_id":"mx","remove_names":[]}',
        quarantined=True, quarantine_folder="Junk")
    spool_id = await spool.store(env, b"m")
    assert spool.get(spool_id).envelope == env
    plain = await spool.store(ENV, b"m")
    got = spool.get(plain).envelope
    assert got == ENV
    assert (got.header_edits, got.quarantined, got.quarantine_folder) == (None, False, None)


def test_old_envelope_records_load_with_defaults() -> None:
    # A record written before the verdict fields existed has none of their keys.
    data = envelope_to_json(check_id("0" * 26), ENV, size=1, sha256="00")
    record = json.loads(data)
    for key in ("header_edits", "quarantined", "quarantine_folder"):
        del record[key]
    _, env, size, _ = envelope_from_json(json.dumps(record).encode())
    assert env == ENV
    assert size == 1
    for key, bad in (("quarantined", "yes"), ("quarantined", 1), ("header_edits", 5),
                     ("quarantine_folder", ["Junk"])):
        with pytest.raises(SpoolError, match=key):
            envelope_from_json(json.dumps({**record, key: bad}).encode())


async def test_streamed_writer(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    chunks = [os.urandom(n) for n in (1, 70_000, 0, 65_536, 3)]
    writer = spool.open_writer()
    for chunk in chunks:
        writer.write(chunk)
    assert writer.size == sum(map(len, chunks))
    spool_id = await writer.commit(ENV)
    assert spool_id == writer.id
    assert spool.read_message(spool_id) == b"".join(chunks)
    with pytest.raises(SpoolError):
        writer.write(b"more")
    with pytest.raises(SpoolError):
        await writer.commit(ENV)


async def test_abort_and_context_manager(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    writer = spool.open_writer()
    writer.write(b"x" * 100_000)
    writer.abort()
    writer.abort()  # idempotent

    async def fail_midway() -> None:
        async with spool.open_writer() as w:
            w.write(b"half")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await fail_midway()
    assert spool.list() == []
    assert [p for p in os.listdir(tmp_path / "tmp") if p.endswith(".part")] == []


async def test_max_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    async with spool.open_writer(max_size=10) as writer:
        writer.write(b"x" * 10)
        with pytest.raises(LimitExceeded):
            writer.write(b"y")
    assert spool.list() == []


def test_ids_sortable_and_injectable() -> None:
    clock = FixedClock(wall=1469918176.385)
    counter = iter(range(1000))
    new_id = make_id_factory(clock, lambda n: next(counter).to_bytes(n, "big"))
    first = new_id()
    clock.advance(0.001)
    second = new_id()
    assert first < second
    assert len(first) == 26
    assert id_time(first) == pytest.approx(1469918176.385)
    # ulid/javascript README, seed time: ulid(1469918176385) == "01ARYZ6S41TSV4RRFFQ69G5FAV";
    # our random part is 0 -> 16 zeros.
    assert first == "01ARYZ6S41" + "0" * 16
    ids = [make_id_factory()() for _ in range(1000)]
    assert len(set(ids)) == 1000


@pytest.mark.parametrize("bad", ["../etc/passwd", "", "01HF7YAT00000000000000000I", "x" * 26])
def test_bad_ids_refused(tmp_path: Path, bad: str) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError, match="not a spool ID"):
        spool.get(bad)
    with pytest.raises(SpoolError, match="not a spool ID"):
        spool.remove(bad)
    with pytest.raises(SpoolError, match="not a spool ID"):
        check_id(bad)


async def test_ordering_of_durability_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync(file) before rename into queue/, fsync(queue/) after it, all before commit returns."""
    spool = Spool(tmp_path, group_commit=False)
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename
    queue_ino = None

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append("fsync-dir" if st.st_ino == queue_ino else "fsync-file")
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        events.append(f"rename-{Path(dst).parent.name}")
        real_rename(src, dst)

    spool.open_writer().abort()  # create dirs and lock first
    queue_ino = os.stat(spool.queue_dir).st_ino
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    await spool.store(ENV, b"hello")
    events.append("acknowledged")
    assert events == ["fsync-file", "rename-queue", "fsync-dir", "acknowledged"]


async def test_group_commit_batches(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ids = await asyncio.gather(*(spool.store(ENV, b"m%d" % i) for i in range(40)))
    assert len(set(ids)) == 40
    assert sorted(ids) == spool.list()
    assert spool.batches < 40  # shared fsync batches
    for i, spool_id in enumerate(ids):
        assert spool.read_message(spool_id) == b"m%d" % i


async def test_cancelled_session_does_not_break_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    tasks = [asyncio.create_task(spool.store(ENV, b"m%d" % i)) for i in range(10)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(isinstance(r, str) for i, r in enumerate(results) if i != 3)
    await spool.aclose()
    # The cancelled one either committed fully or not at all.
    for spool_id in spool.list():
        spool.read_message(spool_id)


async def test_commit_failure_is_reported(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    writer = spool.open_writer()
    writer.write(b"data")
    os.rmdir(spool.queue_dir)  # rename target directory is gone
    with pytest.raises(SpoolError, match="cannot commit"):
        await writer.commit(ENV)
    assert [p for p in os.listdir(spool.tmp_dir) if p.endswith(".part")] == []


async def test_recovery_cleans_tmp_and_quarantines(tmp_path: Path) -> None:
    old = Spool(tmp_path)
    good = await old.store(ENV, b"good message")
    damaged = await old.store(ENV, b"good message")
    half = old.open_writer()
    half.write(b"half received")
    half._flush()
    token = old._token
    # Simulate the death of the old process: its flock goes away with its fds.
    assert old._lock_fd is not None
    os.close(old._lock_fd)
    old._lock_fd = None

    # A live writer in another instance must survive recovery.
    live = Spool(tmp_path)
    live_writer = live.open_writer()
    live_writer.write(b"in progress")

    # Damaged records in queue/ (impossible with fsync unless the disk lies).
    torn = make_id_factory()()
    (tmp_path / "queue" / torn).write_bytes(b"torn message without trailer")
    copied = make_id_factory()()
    raw = (tmp_path / "queue" / good).read_bytes()
    (tmp_path / "queue" / copied).write_bytes(raw)  # envelope names another ID
    raw = (tmp_path / "queue" / damaged).read_bytes()
    (tmp_path / "queue" / damaged).write_bytes(raw.replace(b"good", b"evil"))  # bytes damaged
    (tmp_path / "queue" / "README").write_text("not a record")

    spool, report = Spool.open(tmp_path)
    assert set(report.removed_tmp) == {f"{token}-{half.id}.part"}
    assert set(report.quarantined) == {torn, copied}
    assert spool.list() == sorted([good, damaged])
    assert sorted(os.listdir(tmp_path / "corrupt")) == sorted([torn, copied])
    with pytest.raises(SpoolError, match="SHA-256"):
        spool.read_message(damaged)  # envelope fine, bytes damaged: never served
    assert spool.read_message(good) == b"good message"
    assert f"{live._token}-{live_writer.id}.part" in os.listdir(tmp_path / "tmp")
    assert await live_writer.commit(ENV) in spool.list()
    assert f"{token}.lock" not in os.listdir(tmp_path / "tmp")


def test_crash_kill9_keeps_every_acknowledged_message(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    script = Path(__file__).with_name("crash_writer.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(spool_dir), "8"], stdout=subprocess.PIPE, env=env
    )
    acked: list[bytes] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends at EOF after the kill
            acked.append(line)

    thread = threading.Thread(target=reader)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(acked) < 300:
        time.sleep(0.05)
        if proc.poll() is not None:
            break
    assert proc.poll() is None, "writer died on its own"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    thread.join(10)
    assert proc.stdout is not None
    proc.stdout.close()
    complete = [line.decode().split() for line in acked if line.endswith(b"\n")]
    assert len(complete) >= 50, f"only {len(complete)} acknowledged before the deadline"

    spool, report = Spool.open(spool_dir)
    ids = spool.list()
    assert len(ids) == len(set(ids))
    assert report.quarantined == ()
    on_disk = set(ids)
    for spool_id, sha in complete:
        assert spool_id in on_disk, f"acknowledged {spool_id} lost"
        assert hashlib.sha256(spool.read_message(spool_id)).hexdigest() == sha
        assert spool.get(spool_id).sha256 == sha
    # Anything beyond the acknowledged (committed, ack not yet printed) is complete too.
    for spool_id in on_disk:
        spool.read_message(spool_id)
    assert os.listdir(spool_dir / "tmp") == []  # the dead writer's files are cleaned
