"""Child process for the spool crash test (not a test module).

Usage: python crash_writer.py SPOOL_DIR CONCURRENCY

Stores messages in a loop from CONCURRENCY concurrent tasks (whole-message and streamed in
chunks, sizes varying) and prints ``<ID> <sha256>`` on stdout, flushed, right after each
commit returned — i.e. each acknowledged message. It never stops on its own: the parent kills
it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time

from mailmoat.spool import Envelope, Recipient, Spool


def body(task: int, n: int) -> bytes:
    size = 100 + (task * 7919 + n * 104729) % 150_000
    line = f"task {task} message {n} ".encode() * 4 + b"\r\n"
    return (line * (size // len(line) + 1))[:size]


async def writer(spool: Spool, task: int) -> None:
    n = 0
    while True:
        n += 1
        message = body(task, n)
        envelope = Envelope(
            mail_from=f"t{task}@example.org",
            rcpts=(Recipient(address=f"n{n}@example.net", notify=("FAILURE",)),),
            received_at=time.time(),
            client_ip="192.0.2.1",
            helo="client.example",
        )
        if n % 2:
            spool_id = await spool.store(envelope, message)
        else:
            w = spool.open_writer()
            for start in range(0, len(message), 8192):
                w.write(message[start : start + 8192])
                await asyncio.sleep(0)
            spool_id = await w.commit(envelope)
        sys.stdout.write(f"{spool_id} {hashlib.sha256(message).hexdigest()}\n")
        sys.stdout.flush()


async def main() -> None:
    spool = Spool(sys.argv[1])
    await asyncio.gather(*(writer(spool, t) for t in range(int(sys.argv[2]))))


if __name__ == "__main__":
    asyncio.run(main())
