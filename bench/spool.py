"""Spool throughput: group commit vs one fsync batch per message (python -m bench.spool).

20 concurrent writers store 10 KB messages for a fixed time per mode; every mode but the last
is durable (file fsync + rename + directory fsync before the store returns):

* group commit   — mailmoat's default: commits that arrive while a batch is syncing share
                   the next batch (one thread hop, one directory fsync per batch);
* per message    — ``Spool(group_commit=False)``: one thread hop and one directory fsync
                   per message (what a naive asyncio handler doing fsync in a thread gets);
* blocking loop  — write + fsync + rename + dir fsync on the event loop itself (the naive
                   synchronous handler, e.g. an aiosmtpd handler calling os.fsync);
* no fsync       — ``Spool(fsync=False)``: rename only, NOT durable; the ceiling.

Modes run interleaved for several rounds (the machine is shared and noisy): msgs/s of the
median and of the best run, commit latency p50/p99 of the median run, process CPU per message
over all rounds, messages per fsync batch, and ratios to "per message". Bounded: 5 rounds x
4 modes x 1 s (≈ 25 s in all with clean-up).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mailmoat.spool import Envelope, Recipient, Spool
from mailmoat.spool._format import envelope_to_json, make_id_factory, trailer

MESSAGE = (b"X" * 76 + b"\r\n") * (10 * 1024 // 78)
ENVELOPE = Envelope(
    mail_from="bench@example.org",
    rcpts=(Recipient(address="sink@example.net"),),
    received_at=0.0,
    client_ip="127.0.0.1",
    helo="bench",
)


@dataclass
class Result:
    name: str
    durable: bool
    count: int
    seconds: float
    cpu: float
    latencies: list[float]
    batches: int | None

    @property
    def rate(self) -> float:
        return self.count / self.seconds


async def _run_spool(name: str, directory: Path, *, writers: int, duration: float,
                     **kwargs: bool) -> Result:
    spool = Spool(directory, **kwargs)
    latencies: list[float] = []
    stop = time.monotonic() + duration

    async def writer() -> None:
        while time.monotonic() < stop:
            start = time.perf_counter()
            await spool.store(ENVELOPE, MESSAGE)
            latencies.append(time.perf_counter() - start)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await spool.aclose()
    return Result(name, kwargs.get("fsync", True), len(latencies), seconds, cpu, latencies,
                  spool.batches)


async def _run_blocking(directory: Path, *, writers: int, duration: float) -> Result:
    """The naive handler: everything synchronous on the event loop."""
    tmp, queue = directory / "tmp", directory / "queue"
    tmp.mkdir(parents=True, exist_ok=True)
    queue.mkdir(parents=True, exist_ok=True)
    new_id = make_id_factory()
    latencies: list[float] = []
    stop = time.monotonic() + duration

    async def writer() -> None:
        while time.monotonic() < stop:
            start = time.perf_counter()
            spool_id = new_id()
            record = envelope_to_json(spool_id, ENVELOPE, size=len(MESSAGE),
                                      sha256=hashlib.sha256(MESSAGE).hexdigest())
            fd = os.open(tmp / spool_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, MESSAGE + record + trailer(len(MESSAGE), record))
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp / spool_id, queue / spool_id)
            dfd = os.open(queue, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Result("blocking loop", True, len(latencies), seconds, cpu, latencies, None)


def _clean(directory: Path) -> None:
    """Delete a run's files between runs (not timed). Unlinks in parallel: one by one they
    cost ≈2.5 ms each here (a journal wait per unlink), in parallel they share commits."""
    files = [p for sub in ("queue", "tmp") if (directory / sub).is_dir()
             for p in (directory / sub).iterdir()]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: p.unlink(missing_ok=True), files))
    shutil.rmtree(directory, ignore_errors=True)


MODES = ("group commit", "per message", "blocking loop", "no fsync")


async def _run(mode: str, directory: Path, writers: int, duration: float) -> Result:
    if mode == "group commit":
        return await _run_spool(mode, directory, writers=writers, duration=duration)
    if mode == "per message":
        return await _run_spool(mode, directory, writers=writers, duration=duration,
                                group_commit=False)
    if mode == "blocking loop":
        return await _run_blocking(directory, writers=writers, duration=duration)
    return await _run_spool(mode, directory, writers=writers, duration=duration, fsync=False)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of all modes, interleaved (the median is reported)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to put the spools (default: a temp dir; use the disk "
                             "the real spool will live on)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mailmoat-bench-", dir=args.dir))
    runs: dict[str, list[Result]] = {mode: [] for mode in MODES}
    try:
        for round_no in range(args.rounds):
            for mode in MODES:
                directory = base / f"{round_no}-{mode.replace(' ', '-')}"
                runs[mode].append(await _run(mode, directory, args.writers, args.duration))
                _clean(directory)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def median_run(mode: str) -> Result:
        return sorted(runs[mode], key=lambda r: r.rate)[len(runs[mode]) // 2]

    baseline = median_run("per message").rate
    best_baseline = max(x.rate for x in runs["per message"])
    print(f"\nspool: {len(MESSAGE)} B messages, {args.writers} concurrent writers, "
          f"{args.rounds} interleaved rounds x {args.duration:g} s per mode, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}, dir {base.parent}")
    print("median = the median run (its latency and CPU are shown); best = the least "
          "disturbed run")
    header = (f"{'mode':<14} {'durable':>7} {'median/s':>9} {'best/s':>8} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'CPU µs/msg':>10} {'msg/batch':>9} {'ratio med':>9} "
              f"{'ratio best':>10}")
    print(header)
    print("-" * len(header))
    for mode in MODES:
        r = median_run(mode)
        best = max(x.rate for x in runs[mode])
        lat = sorted(r.latencies)
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        per_batch = f"{r.count / r.batches:.1f}" if r.batches else "-"
        cpu = sum(x.cpu for x in runs[mode]) / sum(x.count for x in runs[mode]) * 1e6
        print(f"{mode:<14} {'yes' if r.durable else 'NO':>7} {r.rate:>9.0f} {best:>8.0f} "
              f"{p50:>7.2f} {p99:>7.2f} {cpu:>10.0f} {per_batch:>9} "
              f"{r.rate / baseline:>8.2f}x {best / best_baseline:>9.2f}x")
    print("ratios are to 'per message'; CPU µs/msg is process CPU over all rounds")

if __name__ == "__main__":
    asyncio.run(main())
