"""Deferred spool writers (``open_writer(deferred=True)``, used by the SMTP session): no file
until 64 KiB are buffered or the commit runs; the same durable record either way."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from mailmoat.errors import SpoolError
from mailmoat.spool import Envelope, Recipient, Spool

ENVELOPE = Envelope(mail_from="a@example.org", rcpts=(Recipient(address="b@example.net"),),
                    received_at=1.0)


def parts(spool: Spool) -> list[Path]:
    return list(spool.tmp_dir.glob("*.part"))


@pytest.mark.parametrize("size", [0, 1, 10_000, 64 * 1024 - 1, 64 * 1024, 300_000])
async def test_deferred_writer_stores_the_same_record(tmp_path: Path, size: int) -> None:
    spool, _ = Spool.open(tmp_path, fsync=True)
    message = bytes(i % 251 for i in range(size))
    writer = spool.open_writer(deferred=True)
    for start in range(0, size, 7000):
        writer.write(message[start : start + 7000])
    # Below the 64 KiB buffer nothing touched the disk yet.
    assert (parts(spool) == []) == (size < 64 * 1024)
    spool_id = await writer.commit(ENVELOPE)
    entry = spool.get(spool_id)
    assert entry.size == size
    assert entry.sha256 == hashlib.sha256(message).hexdigest()
    assert spool.read_message(spool_id) == message
    assert parts(spool) == []
    await spool.aclose()


async def test_deferred_abort_leaves_nothing(tmp_path: Path) -> None:
    spool, _ = Spool.open(tmp_path)
    small = spool.open_writer(deferred=True)
    small.write(b"x" * 100)
    small.abort()
    big = spool.open_writer(deferred=True)
    big.write(b"x" * 100_000)
    assert len(parts(spool)) == 1
    big.abort()
    assert parts(spool) == []
    assert spool.list() == []
    with pytest.raises(SpoolError):
        small.write(b"more")
    await spool.aclose()


async def test_deferred_commit_failure_leaves_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spool, _ = Spool.open(tmp_path)

    def refuse(batch: list[object]) -> list[SpoolError | None]:
        return [SpoolError("cannot fsync spool file: Input/output error")] * len(batch)

    monkeypatch.setattr(spool, "_fsync_all", refuse)
    writer = spool.open_writer(deferred=True)
    writer.write(b"hello\r\n")
    with pytest.raises(SpoolError):
        await writer.commit(ENVELOPE)
    assert parts(spool) == []
    assert spool.list() == []
    await spool.aclose()


@pytest.mark.parametrize("deferred", [False, True])
async def test_back_to_back_commits_never_stall(tmp_path: Path, deferred: bool) -> None:
    # A session that commits again as soon as its previous commit returned runs before the
    # finished flusher task's done-callback: the flusher must already have left the set.
    spool, _ = Spool.open(tmp_path, fsync=False, batches_in_flight=1)
    for index in range(50):
        writer = spool.open_writer(deferred=deferred)
        writer.write(b"message %d\r\n" % index)
        await asyncio.wait_for(writer.commit(ENVELOPE), 5)
    assert len(spool.list()) == 50
    await spool.aclose()


async def test_commit_while_a_finished_flusher_is_still_registered(tmp_path: Path) -> None:
    # The state uvloop can produce: flusher tasks have finished but their done-callbacks (which
    # unregister them) have not run yet when the next commit arrives from an I/O callback.
    spool, _ = Spool.open(tmp_path, fsync=False, batches_in_flight=2)

    async def nothing() -> None:
        return None

    finished = [asyncio.get_running_loop().create_task(nothing()) for _ in range(2)]
    await asyncio.gather(*finished)
    spool._flushers.update(finished)
    writer = spool.open_writer(deferred=True)
    writer.write(b"hello\r\n")
    await asyncio.wait_for(writer.commit(ENVELOPE), 5)
    assert len(spool.list()) == 1
    await spool.aclose()
