"""Parse-and-frame throughput of the sans-IO SMTP server engine, against aiosmtpd's parser.

    python -m bench.smtp_engine [--seconds 2]

A whole session's bytes (EHLO, then per message MAIL, RCPT, DATA + 10 KB content or
BDAT 10 KB LAST, then QUIT) are fed in 4-64 KB chunks; every decision event is accepted at
once. aiosmtpd.smtp.SMTP is driven through a fake transport inside one asyncio loop (its
parser cannot run without its StreamReader and task), with a handler that accepts everything:
that is aiosmtpd's cost per message, loop overhead included. aiosmtpd has no CHUNKING, so BDAT
is ours alone. More rows split our cost: the framer alone (framing + content checks), the
commands alone (the same session with one-line messages: command handling, events, replies,
addresses) and the envelope grammar alone (one MAIL and one RCPT argument).

CPU time is time.process_time(), the fastest of ~50 ms batches (load from other processes only
adds time); each row stops after ``--seconds`` of CPU or twice that of wall time, so the whole
run stays under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import time
from collections.abc import Callable
from typing import Any

from mailmoat.smtp import NEED_DATA, ConnectionClosed, ServerConfig, ServerConnection

MESSAGE_SIZE = 10 * 1024
MESSAGES_PER_SESSION = 20
#: Issue #2, item 5: "the engine costs under 50 µs of CPU per 10 KB message".
TARGET_US = 50


def _message(seed: int) -> bytes:
    rng = random.Random(seed)
    head = (
        b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n"
        b"Subject: benchmark\r\nMessage-ID: <1@example.org>\r\n\r\n"
    )
    lines = [head]
    size = len(head)
    while size < MESSAGE_SIZE:
        n = rng.randint(40, 76)
        line = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz     ") for _ in range(n)) + b"\r\n"
        lines.append(line)
        size += len(line)
    lines.insert(len(lines) // 2, b".a line that starts with a dot (stuffed on the wire)\r\n")
    return b"".join(lines)[: MESSAGE_SIZE - 2] + b"\r\n"


def _stuff(content: bytes) -> bytes:
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..")


def session(bdat: bool, messages: int = MESSAGES_PER_SESSION, *, empty: bool = False) -> bytes:
    """A whole session's bytes; ``empty`` gives one-line messages (the per-command cost)."""
    out = [b"EHLO client.example.org\r\n"]
    for i in range(messages):
        body = b"Subject: x\r\n" if empty else _message(i)
        out.append(b"MAIL FROM:<alice@example.org> SIZE=10240\r\nRCPT TO:<bob@example.net>\r\n")
        if bdat:
            out.append(b"BDAT %d LAST\r\n" % len(body) + body)
        else:
            out.append(b"DATA\r\n" + _stuff(body) + b".\r\n")
    out.append(b"QUIT\r\n")
    return b"".join(out)


def chunks(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    i = 0
    while i < len(data):
        n = rng.randint(4096, 65536)
        out.append(data[i : i + n])
        i += n
    return out


def run_ours(parts: list[bytes], config: ServerConfig) -> int:
    conn = ServerConnection(config)
    conn.greet()
    completed = 0
    it = iter(parts)
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(next(it, b""))
            continue
        if isinstance(event, ConnectionClosed):
            break
        if event.decision:
            if type(event).__name__ == "MessageComplete":
                completed += 1
            conn.accept()
        conn.data_to_send()
    return completed


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.out = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 2525) if name == "peername" else default

    def write(self, data: Any) -> None:
        self.out += len(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _aiosmtpd_runner() -> Callable[[list[bytes]], int] | None:
    try:
        from aiosmtpd.smtp import SMTP
    except ImportError:
        return None

    class Handler:
        def __init__(self) -> None:
            self.count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.count += 1
            return "250 OK"

    loop = asyncio.new_event_loop()

    async def one(parts: list[bytes]) -> int:
        handler = Handler()
        proto = SMTP(handler, hostname="bench", data_size_limit=None, enable_SMTPUTF8=True)
        transport = _FakeTransport()
        proto.connection_made(transport)
        for part in parts:
            proto.data_received(part)
            await asyncio.sleep(0)
        proto.eof_received()
        task = proto._handler_coroutine
        assert task is not None
        try:
            await task
        except asyncio.CancelledError:
            pass
        proto.connection_lost(None)
        return handler.count

    def run(parts: list[bytes]) -> int:
        return loop.run_until_complete(one(parts))

    return run


def run_framer(bodies: list[bytes], bdat: bool) -> int:
    """Framing and content checks alone (no command handling, no address parsing)."""
    from mailmoat.smtp._receive import ChunkEnd, ContentPolicy, Framer

    framer = Framer(line_limit=12288, policy=ContentPolicy(max_size=50 << 20, max_line=1000))
    done = 0
    for body in bodies:
        if bdat:
            framer.start_bdat(len(body), last=True, new_message=True)
            framer.feed(body)
        else:
            framer.start_data()
            framer.feed(body)
        while (item := framer.next_item()) is not None:
            if isinstance(item, ChunkEnd) and item.fault is None:
                done += 1
    return done


def _framer_row(bodies: list[bytes], bdat: bool, _parts: list[bytes]) -> int:
    return run_framer(bodies, bdat)


def run_addresses(_parts: list[bytes]) -> int:
    """B's envelope grammar alone: one MAIL and one RCPT argument per message."""
    from mailmoat.smtp._abnf import parse_mail_args, parse_rcpt_args

    for _ in range(MESSAGES_PER_SESSION):
        parse_mail_args(b"<alice@example.org> SIZE=10240", smtputf8=True)
        parse_rcpt_args(b"<bob@example.net>", smtputf8=False)
    return MESSAGES_PER_SESSION


def measure(fn: Callable[[list[bytes]], int], parts: list[bytes], seconds: float) -> tuple[float, int]:
    """CPU seconds per session (the fastest of several batches), and messages per session.

    The fastest batch, as ``timeit`` reports, because the other helpers' load on a shared
    machine only ever adds time (cache and core contention); every row, aiosmtpd's included,
    is measured the same way.
    """
    count = fn(parts)  # warm up, and check
    start = time.process_time()
    fn(parts)
    per_batch = max(1, int(0.05 / max(time.process_time() - start, 1e-6)))  # ~50 ms batches
    best = float("inf")
    start = time.process_time()
    wall = time.perf_counter()
    batches = 0
    while True:
        t0 = time.process_time()
        for _ in range(per_batch):
            fn(parts)
        best = min(best, (time.process_time() - t0) / per_batch)
        batches += 1
        # Bounded in CPU and in wall time (a busy machine must not stretch the run).
        elapsed = time.process_time() - start
        if (elapsed >= seconds and batches >= 3) or batches >= 1000 \
                or time.perf_counter() - wall >= 2 * seconds:
            return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per row")
    args = parser.parse_args()
    # The session is fed blind (no waiting for 354), so the RFC 2920 synchronisation check,
    # which would rightly refuse it, is off here.
    config = ServerConfig(hostname="bench.example", forbid_unsynchronised_pipelining=False)
    rows: list[tuple[str, str, float, int, int]] = []
    for mode in ("DATA", "BDAT"):
        data = session(mode == "BDAT")
        parts = chunks(data, 1)
        per_session, msgs = measure(lambda p: run_ours(p, config), parts, args.seconds)
        rows.append(("mailmoat", mode, per_session, msgs, len(data)))
    for mode in ("DATA", "BDAT"):
        bodies = [_message(i) for i in range(MESSAGES_PER_SESSION)]
        if mode == "DATA":
            bodies = [_stuff(b) + b".\r\n" for b in bodies]
        per_session, msgs = measure(functools.partial(_framer_row, bodies, mode == "BDAT"),
                                    [], args.seconds)
        rows.append(("  framer only", mode, per_session, msgs, sum(map(len, bodies))))
    data = session(False, empty=True)
    per_session, msgs = measure(lambda p: run_ours(p, config), chunks(data, 1), args.seconds / 2)
    rows.append(("  commands only", "DATA", per_session, msgs, 0))
    per_session, msgs = measure(run_addresses, [], args.seconds / 2)
    rows.append(("  _abnf MAIL+RCPT", "-", per_session, msgs, 0))
    aio = _aiosmtpd_runner()
    if aio is not None:
        data = session(False)
        parts = chunks(data, 1)
        per_session, msgs = measure(aio, parts, args.seconds)
        rows.append(("aiosmtpd 1.4", "DATA", per_session, msgs, len(data)))
    print(f"{MESSAGES_PER_SESSION} x {MESSAGE_SIZE // 1024} KB messages per session, fed in 4-64 KB chunks")
    print(f"{'engine':<18}{'mode':<6}{'MB/s':>10}{'CPU us/msg':>12}{'msgs ok':>9}")
    ours = {mode: cpu for name, mode, cpu, _, _ in rows if name == "mailmoat"}
    for name, mode, cpu, msgs, size in rows:
        mbps = f"{size / cpu / 1e6:.1f}" if size else "-"
        print(f"{name:<18}{mode:<6}{mbps:>10}{cpu / MESSAGES_PER_SESSION * 1e6:>12.1f}{msgs:>9}")
    for name, mode, cpu, _, _ in rows:
        if name.startswith("aiosmtpd"):
            print(f"ratio {name}/{'mailmoat'} ({mode}): {cpu / ours[mode]:.1f}x CPU per message")
    for mode, cpu in ours.items():
        per_msg = cpu / MESSAGES_PER_SESSION * 1e6
        verdict = "met" if per_msg < TARGET_US else "not met"
        print(f"target < {TARGET_US} us CPU per 10 KB message ({mode}): {per_msg:.1f} us, {verdict}")


if __name__ == "__main__":
    main()
