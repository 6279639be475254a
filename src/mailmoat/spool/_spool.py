"""The durable spool (see the package docstring for the design)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import LimitExceeded, SpoolError
from mailmoat.spool._format import (
    ID_RE,
    TRAILER,
    Envelope,
    SpooledMessage,
    SpoolID,
    check_id,
    envelope_from_json,
    envelope_to_json,
    make_id_factory,
    parse_trailer,
    trailer,
)

log = logging.getLogger(__name__)

#: Bytes buffered by a writer before they go to the file (one write(2) per 64 KiB).
_WRITE_BUFFER = 64 * 1024
_TOKEN_RE = re.compile(r"^[0-9a-f]{16}$")
_PART_RE = re.compile(r"^(?P<token>[0-9a-f]{16})-(?P<id>[0-9A-Z]{26})\.part$")
_LOCK_SUFFIX = ".lock"
#: Threads fsyncing one group-commit batch concurrently.
_FSYNC_THREADS = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryReport:
    """What :meth:`Spool.recover` cleaned: half-written files deleted, bad records moved."""

    removed_tmp: tuple[str, ...]
    quarantined: tuple[str, ...]
    queued: int


@dataclass(slots=True)
class _Job:
    fd: int | None  # None: a deferred writer's file, created in the worker thread from data
    tmp: Path
    final: Path
    future: asyncio.Future[None]
    data: bytes | None = None


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """Receives one message as it arrives; :meth:`commit` makes it durable, or :meth:`abort`.

    Not thread-safe; used from the event loop of the session that opened it.

    A *deferred* writer (``open_writer(deferred=True)``) creates no file until 64 KiB are
    buffered; a smaller message is written, fsync-ed and renamed by the commit's worker
    thread, so the event loop makes no file-system call for it (metadata calls on the loop
    would wait for a concurrent journal commit, i.e. for another session's fsync).
    """

    def __init__(self, spool: Spool, spool_id: SpoolID, fd: int | None, tmp: Path,
                 max_size: int | None) -> None:
        self._spool = spool
        self.id = spool_id
        self._fd: int | None = fd
        self._tmp = tmp
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._max_size = max_size
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        """Append message bytes (buffered; flushed to the file every 64 KiB)."""
        if self._done:
            raise SpoolError("write on a committed or aborted spool writer")
        self.size += len(data)
        if self._max_size is not None and self.size > self._max_size:
            raise LimitExceeded(
                f"message larger than {self._max_size} octets", limit="max_message_size"
            )
        self._hash.update(data)
        self._buffer += data
        if len(self._buffer) >= _WRITE_BUFFER:
            self._flush()

    def _flush(self) -> None:
        if self._fd is None:  # a deferred writer outgrew its buffer: create the file now
            try:
                self._fd = _create(self._tmp)
            except OSError as exc:
                self._done = True
                raise SpoolError(f"cannot create spool file {self._tmp}: {exc.strerror}") from None
        view = memoryview(self._buffer)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.abort()
            raise SpoolError(f"cannot write spool file: {exc.strerror}") from None
        finally:
            view.release()
        self._buffer.clear()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def commit(self, envelope: Envelope) -> SpoolID:
        """Append the envelope, fsync, rename into the queue, fsync the queue directory.

        Returns only when the message is durable (the "250 OK" may then be sent). On error the
        half-written file is removed and :class:`SpoolError` raised (answer 451).
        """
        if self._done:
            raise SpoolError("commit on a committed or aborted spool writer")
        record = envelope_to_json(self.id, envelope, size=self.size, sha256=self.sha256)
        self._buffer += record
        self._buffer += trailer(self.size, record)
        if self._fd is None:  # deferred and small: the worker thread writes the whole record
            self._done = True
            data = bytes(self._buffer)
            self._buffer.clear()
            await self._spool._make_durable(None, self._tmp, self.id, data=data)
            return self.id
        self._flush()
        self._done = True
        fd, self._fd = self._fd, None
        await self._spool._make_durable(fd, self._tmp, self.id)
        return self.id

    def abort(self) -> None:
        """Forget the message (its temporary file is removed). Idempotent."""
        self._done = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self.abort()


class Spool:
    """A durable message spool in ``directory`` (``tmp/``, ``queue/``, ``corrupt/``).

    ``fsync=False`` skips every fsync (tests, or a spool on tmpfs by choice): then a crash of
    the *machine* may lose acknowledged mail. ``group_commit=True`` (default) makes concurrent
    commits share fsync batches; up to ``batches_in_flight`` batches sync at once, so that
    sessions keep receiving (CPU) while a batch waits for the disk.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        fsync: bool = True,
        group_commit: bool = True,
        batches_in_flight: int = 2,
        clock: Clock = SYSTEM_CLOCK,
        id_factory: Callable[[], SpoolID] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.tmp_dir = self.directory / "tmp"
        self.queue_dir = self.directory / "queue"
        self.corrupt_dir = self.directory / "corrupt"
        self.fsync = fsync
        self.group_commit = group_commit
        self._clock = clock
        self._new_id = id_factory or make_id_factory(clock)
        self._token: str | None = None
        self._lock_fd: int | None = None
        self._pending: list[_Job] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self.batches_in_flight = batches_in_flight
        self._pool: ThreadPoolExecutor | None = None
        #: Number of fsync batches run (group commit statistics).
        self.batches = 0

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        fsync: bool = True,
        group_commit: bool = True,
        batches_in_flight: int = 2,
        clock: Clock = SYSTEM_CLOCK,
        id_factory: Callable[[], SpoolID] | None = None,
    ) -> tuple[Spool, RecoveryReport]:
        """A spool with its directories created and :meth:`recover` run (at start-up)."""
        spool = cls(directory, fsync=fsync, group_commit=group_commit,
                    batches_in_flight=batches_in_flight, clock=clock, id_factory=id_factory)
        return spool, spool.recover()

    # --- set-up and recovery --------------------------------------------------------------

    def _make_dirs(self) -> None:
        try:
            for path in (self.directory, self.tmp_dir, self.queue_dir):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(
                f"cannot create spool directory {exc.filename}: {exc.strerror}"
            ) from None

    def _ensure_lock(self) -> str:
        """Claim a per-instance token: ``tmp/<token>.lock``, flock-ed for our lifetime.

        The lock is taken on a temporary name and then renamed into place, so a recovery
        never sees an unlocked lock file of a live writer.
        """
        if self._token is not None:
            return self._token
        self._make_dirs()
        token = secrets.token_hex(8)
        staging = self.tmp_dir / f".{token}.new"
        fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(staging, self.tmp_dir / f"{token}{_LOCK_SUFFIX}")
        self._lock_fd, self._token = fd, token
        return token

    def recover(self) -> RecoveryReport:
        """Clean up after a crash; safe while other processes use the spool.

        * ``tmp/``: part files of writers that are gone (their lock file is not locked, or
          missing) are deleted; a live writer's files are left alone.
        * ``queue/``: every record's trailer and envelope are checked; a bad one (possible only
          with ``fsync=False`` after a machine crash, or damage) is moved to ``corrupt/``,
          never deleted and never served.
        """
        self._make_dirs()
        removed: list[str] = []
        live: set[str] = {self._token} if self._token else set()
        for entry in sorted(os.listdir(self.tmp_dir)):
            if not entry.endswith(_LOCK_SUFFIX) or not _TOKEN_RE.match(entry[:-len(_LOCK_SUFFIX)]):
                continue
            token = entry[: -len(_LOCK_SUFFIX)]
            if token in live:
                continue
            try:
                fd = os.open(self.tmp_dir / entry, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live.add(token)  # its owner is alive
                os.close(fd)
                continue
            # Owner is dead: delete its parts, then (still locked) its lock file.
            for part in os.listdir(self.tmp_dir):
                if part.startswith(f"{token}-"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.tmp_dir / part).unlink()
                        removed.append(part)
            with contextlib.suppress(FileNotFoundError):
                (self.tmp_dir / entry).unlink()
            os.close(fd)
        for entry in sorted(os.listdir(self.tmp_dir)):
            match = _PART_RE.match(entry)
            stale_staging = entry.startswith(".") and entry.endswith(".new")
            if (match and match["token"] not in live) or stale_staging:
                if stale_staging and self._age(self.tmp_dir / entry) < 60:
                    continue  # a lock being set up right now
                with contextlib.suppress(FileNotFoundError):
                    (self.tmp_dir / entry).unlink()
                    removed.append(entry)
        quarantined: list[str] = []
        queued = 0
        for spool_id in self.list():
            try:
                self.get(spool_id)
                queued += 1
            except SpoolError as exc:
                log.error("spool record %s is damaged (%s): moved to corrupt/", spool_id, exc)
                self.corrupt_dir.mkdir(mode=0o700, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.queue_dir / spool_id, self.corrupt_dir / spool_id)
                    quarantined.append(spool_id)
        if removed and self.fsync:
            _fsync_dir(self.tmp_dir)
        if quarantined and self.fsync:
            _fsync_dir(self.queue_dir)
            _fsync_dir(self.corrupt_dir)
        return RecoveryReport(
            removed_tmp=tuple(removed), quarantined=tuple(quarantined), queued=queued
        )

    @staticmethod
    def _age(path: Path) -> float:
        try:
            return time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    # --- writing --------------------------------------------------------------------------

    def open_writer(self, *, max_size: int | None = None, deferred: bool = False) -> SpoolWriter:
        """A writer for one incoming message (call from the event loop).

        ``deferred=True``: the file is created only when needed (see :class:`SpoolWriter`).
        """
        token = self._ensure_lock()
        spool_id = check_id(self._new_id())
        tmp = self.tmp_dir / f"{token}-{spool_id}.part"
        if deferred:
            return SpoolWriter(self, spool_id, None, tmp, max_size)
        try:
            fd = _create(tmp)
        except OSError as exc:
            raise SpoolError(f"cannot create spool file {tmp}: {exc.strerror}") from None
        return SpoolWriter(self, spool_id, fd, tmp, max_size)

    async def store(self, envelope: Envelope, message: bytes) -> SpoolID:
        """Store a whole message; returns its ID once message and envelope are durable."""
        writer = self.open_writer()
        try:
            writer.write(message)
        except BaseException:
            writer.abort()
            raise
        return await writer.commit(envelope)

    async def _make_durable(self, fd: int | None, tmp: Path, spool_id: SpoolID, *,
                            data: bytes | None = None) -> None:
        loop = asyncio.get_running_loop()
        job = _Job(fd=fd, tmp=tmp, final=self.queue_dir / spool_id, future=loop.create_future(),
                   data=data)
        if self.group_commit:
            self._pending.append(job)
            # A finished flusher may still be in the set until its done-callback runs
            # (uvloop polls I/O before that): count only live ones, or this job could wait
            # for a flusher that will never look at the queue again.
            for finished in [t for t in self._flushers if t.done()]:
                self._flushers.discard(finished)
            if len(self._flushers) < self.batches_in_flight:
                task = loop.create_task(self._flush_loop())
                self._flushers.add(task)
                task.add_done_callback(self._flushers.discard)
        else:
            # One thread hop per message: fsync, rename, fsync dir. The executor future is
            # shielded: a cancelled session does not interrupt the commit.
            errors = await asyncio.shield(
                loop.run_in_executor(None, self._sync_batch, [job])
            )
            if errors[0] is not None:
                raise errors[0]
            return
        # shield: a session cancelled while waiting must not cancel a shared batch.
        await asyncio.shield(job.future)

    async def _flush_loop(self) -> None:
        try:
            await self._flush_pending()
        finally:
            # Leave the flusher set *before* yielding to the loop: the task's done-callback
            # runs later, and a commit queued in between would otherwise see a full set of
            # flushers that are all finishing, and wait forever.
            task = asyncio.current_task()
            if task is not None:
                self._flushers.discard(task)

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                errors = await asyncio.to_thread(self._sync_batch, batch)
            except BaseException as exc:  # the thread itself failed: fail the whole batch
                log.exception("spool flush failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(SpoolError(f"spool flush failed: {exc!r}"))
                continue
            for job, error in zip(batch, errors, strict=True):
                if job.future.done():
                    continue
                if error is None:
                    job.future.set_result(None)
                else:
                    job.future.set_exception(error)

    def _fsync_all(self, batch: list[_Job]) -> list[SpoolError | None]:
        """fsync every file of the batch, concurrently when there are several.

        Measured on ext4: sequential fsyncs each wait for their own journal commit (≈ 4 ms
        each), while concurrent ones are folded by the journal into one commit.
        """
        def one(job: _Job) -> SpoolError | None:
            if job.fd is None:
                return SpoolError("spool file was not written")
            try:
                os.fsync(job.fd)
            except OSError as exc:
                return SpoolError(f"cannot fsync spool file: {exc.strerror}")
            return None

        if not self.fsync:
            return [None] * len(batch)
        if len(batch) == 1:
            return [one(batch[0])]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=_FSYNC_THREADS, thread_name_prefix="spool-fsync"
            )
        return list(self._pool.map(one, batch))

    @staticmethod
    def _write_deferred(job: _Job) -> SpoolError | None:
        """In a worker thread: create and write a deferred writer's file."""
        if job.data is None:
            return None
        data, job.data = job.data, None
        try:
            job.fd = _create(job.tmp)
            view = memoryview(data)
            while view:
                view = view[os.write(job.fd, view):]
        except OSError as exc:
            return SpoolError(f"cannot write spool file: {exc.strerror}")
        return None

    def _sync_batch(self, batch: list[_Job]) -> list[SpoolError | None]:
        """In a worker thread: fsync the files, rename them into queue/, fsync queue/ once."""
        self.batches += 1
        written = [self._write_deferred(job) for job in batch]
        errors = [w or e for w, e in zip(written, self._fsync_all(batch), strict=True)]
        renamed = False
        for index, job in enumerate(batch):
            try:
                if errors[index] is None:
                    os.rename(job.tmp, job.final)
                    renamed = True
            except OSError as exc:
                errors[index] = SpoolError(f"cannot commit spool file: {exc.strerror}")
            finally:
                if job.fd is not None:
                    os.close(job.fd)
            if errors[index] is not None:
                with contextlib.suppress(OSError):
                    job.tmp.unlink()
        if renamed and self.fsync:
            try:
                _fsync_dir(self.queue_dir)
            except OSError as exc:
                failure = SpoolError(f"cannot fsync the queue directory: {exc.strerror}")
                errors = [e or failure for e in errors]
        return errors

    async def aclose(self) -> None:
        """Wait for pending commits, then release this instance's lock."""
        while self._flushers:
            await asyncio.shield(asyncio.gather(*self._flushers))
        self.close()

    def close(self) -> None:
        """Release this instance's lock (no writer may be open)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._lock_fd is not None and self._token is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.tmp_dir / f"{self._token}{_LOCK_SUFFIX}").unlink()
            os.close(self._lock_fd)
            self._lock_fd, self._token = None, None

    # --- reading --------------------------------------------------------------------------

    def list(self) -> list[SpoolID]:
        """IDs of the queued messages, oldest first."""
        try:
            names = os.listdir(self.queue_dir)
        except FileNotFoundError:
            return []
        return sorted(SpoolID(n) for n in names if ID_RE.match(n))

    def _read_record(self, spool_id: SpoolID, *, with_message: bool) -> tuple[
        SpooledMessage, bytes | None
    ]:
        path = self.queue_dir / check_id(spool_id)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < TRAILER.size:
                    raise SpoolError("file too short for a spool record")
                handle.seek(size - TRAILER.size)
                message_size, envelope_size, digest = parse_trailer(handle.read(), size)
                handle.seek(message_size)
                record = handle.read(envelope_size)
                message: bytes | None = None
                if with_message:
                    handle.seek(0)
                    message = handle.read(message_size)
        except FileNotFoundError:
            raise SpoolError(f"no message {spool_id} in the spool") from None
        except OSError as exc:
            raise SpoolError(f"cannot read spool file {path}: {exc.strerror}") from None
        if hashlib.sha256(record).digest()[:8] != digest:
            raise SpoolError("envelope checksum mismatch")
        stored_id, envelope, stated_size, sha = envelope_from_json(record)
        if stored_id != spool_id or stated_size != message_size:
            raise SpoolError("envelope does not belong to this record")
        if message is not None and hashlib.sha256(message).hexdigest() != sha:
            raise SpoolError(f"message {spool_id} is damaged (SHA-256 mismatch)")
        entry = SpooledMessage(
            id=spool_id, envelope=envelope, size=message_size, sha256=sha, path=path
        )
        return entry, message

    def get(self, spool_id: str) -> SpooledMessage:
        """The envelope, size and hash of a queued message (the bytes are not read)."""
        return self._read_record(check_id(spool_id), with_message=False)[0]

    def read_message(self, spool_id: str) -> bytes:
        """The message bytes, verified against the SHA-256 stored in the envelope."""
        message = self._read_record(check_id(spool_id), with_message=True)[1]
        assert message is not None
        return message

    def remove(self, spool_id: str) -> None:
        """Delete a message (after delivery); durable when ``fsync`` is on."""
        path = self.queue_dir / check_id(spool_id)
        try:
            path.unlink()
        except FileNotFoundError:
            raise SpoolError(f"no message {spool_id} in the spool") from None
        if self.fsync:
            _fsync_dir(self.queue_dir)
