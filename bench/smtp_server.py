"""SMTP server throughput: mailmoat vs aiosmtpd vs Postfix smtp-sink (python -m bench.smtp_server).

10 KB messages, 20 concurrent sessions on loopback, one message per connection ("new") and 100
per connection ("x100"), in plaintext, STARTTLS and implicit TLS. Servers, each a subprocess
started and measured in this one run:

* mailmoat      -- ``mailmoat serve`` (one worker, uvloop), DURABLE: the message and its envelope
                   are fsync-ed before the 250 (group commit), Received field prepended;
* aiosmtpd      -- aiosmtpd 1.4 on uvloop with a handler that discards the message;
* aiosmtpd+fsync-- the same with a handler that writes each message to a file and fsyncs it
                   (blocking, as a simple durable aiosmtpd handler does);
* smtp-sink     -- Postfix's C test sink (no TLS, no durability): the speed limit;
* Postfix       -- a private Postfix instance with its queue (durable: cleanup fsyncs the queue
                   file before smtpd's 250), delivering to discard(8); implicit TLS through
                   ``smtpd_tls_wrappermode``; CPU summed over the master and its descendants.

Both servers use the same generated ECDSA P-256 certificate; TLS 1.3. The load generator is our
own small asyncio client (Postfix's smtp-source has no TLS): it pipelines MAIL, RCPT and DATA
(RFC 2920) and then sends the content. It runs in this process, on the same 2 cores as the
server, so msgs/s is shared-machine throughput; the server's CPU per message (utime + stime of
the server process from /proc/PID/stat, threads included) is the steadier figure.

Bounded: each cell runs ``--seconds`` (default 2) after a short warm-up, in ``--rounds`` (default
2) rounds that interleave the servers cell by cell (the best round is kept: the machine is
shared); the whole run is under 3 minutes. Targets (issue #3) are printed as ratios at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = (b"Subject: bench\r\nFrom: bench@example.org\r\nTo: sink@mx.test\r\n\r\n"
           + (b"X" * 76 + b"\r\n") * (10 * 1024 // 78))
SESSIONS = 20
MODES = ("plain", "starttls", "implicit")
#: Servers run only when named with --only.
OPTIONAL = frozenset({"mailmoat-2w"})
HZ = os.sysconf("SC_CLK_TCK")


# --- aiosmtpd child -----------------------------------------------------------------------


def run_aiosmtpd(cert: str, key: str, spool: str | None) -> None:
    """Child process: aiosmtpd on three ports (plain, starttls, implicit TLS)."""
    import uvloop
    from aiosmtpd.smtp import SMTP

    class Discard:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 2.0.0 OK"

    class FsyncHandler:
        def __init__(self, directory: str) -> None:
            self.directory = directory
            self.count = 0

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            self.count += 1
            path = os.path.join(self.directory, f"{os.getpid()}-{self.count}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, envelope.content)  # type: ignore[attr-defined]
                os.fsync(fd)
            finally:
                os.close(fd)
            return "250 2.0.0 OK"

    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        handler: object = FsyncHandler(spool) if spool else Discard()
        loop = asyncio.get_running_loop()
        ports = []
        for mode in MODES:
            def factory(mode: str = mode) -> SMTP:
                return SMTP(handler, hostname="aiosmtpd.test",
                            tls_context=ctx if mode == "starttls" else None)
            server = await loop.create_server(
                factory, "127.0.0.1", 0, ssl=ctx if mode == "implicit" else None)
            ports.append(server.sockets[0].getsockname()[1])
        print("ports", *ports, flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    uvloop.run(main())


# --- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str] | None
    ports: dict[str, int]
    durable: bool
    pids: list[int] = field(default_factory=list)

    def cpu(self) -> float:
        total = 0
        assert self.pids or self.proc is not None
        for pid in self.pids or [self.proc.pid]:  # type: ignore[union-attr]
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / HZ

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def start_mailmoat(work: Path, cert: Path, key: str, workers: int = 1) -> Server:
    directory = work / f"mailmoat-{workers}"
    directory.mkdir()
    listeners = "".join(
        f'[[listener]]\naddress = "127.0.0.1"\nport = 0\nmode = "{mode}"\nrole = "mx"\n'
        for mode in ("plain", "starttls", "implicit-tls")
    )
    (directory / "users.jsonl").write_text("")
    config = directory / "config.toml"
    config.write_text(
        f'[server]\nhostname = "mx.test"\nworkers = 1\n{listeners}'
        f'[tls]\ncertificates = [ {{ cert = "{cert}", key = "{key}" }} ]\n'
        '[relay]\nlocal_domains = ["mx.test"]\n[spool]\nfsync = true\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailmoat.cli.main", "serve", "--config", str(config),
         "--workers", str(workers), "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    pids: list[int] = []
    for line in proc.stdout:
        if "listening on" in line:
            port = int(line.split(" port ")[1].split()[0])
            mode = line.split("mode=")[1].split()[0]
            ports[{"implicit-tls": "implicit"}.get(mode, mode)] = port
        if "worker pid" in line:
            pids.append(int(line.split("worker pid ")[1].split()[0]))
        if ("worker(s)" in line and workers == 1) or len(pids) == workers > 1:
            break
    time.sleep(0.3)
    name = "mailmoat (durable)" if workers == 1 else f"mailmoat {workers} workers"
    # Several workers: their CPU is summed (the supervisor does nothing under load).
    return Server(name=name, proc=proc, ports=ports, durable=True, pids=pids)


def start_aiosmtpd(work: Path, cert: Path, key: Path, *, fsync: bool) -> Server:
    spool = work / ("aiosmtpd-fsync" if fsync else "aiosmtpd")
    spool.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.smtp_server", "--child-aiosmtpd", str(cert), str(key),
         str(spool) if fsync else ""],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    words = proc.stdout.readline().split()
    ports = dict(zip(MODES, (int(w) for w in words[1:]), strict=True))
    return Server(name="aiosmtpd+fsync" if fsync else "aiosmtpd (discard)", proc=proc,
                  ports=ports, durable=fsync)


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_smtp_sink() -> Server | None:
    exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.access(exe, os.X_OK):
        return None
    port = free_port()
    args = [exe]
    if os.geteuid() == 0:
        args += ["-u", "postfix"]
    proc = subprocess.Popen([*args, f"127.0.0.1:{port}", "256"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.3)
    return Server(name="smtp-sink (C, no fsync)", proc=proc, ports={"plain": port},
                  durable=False)


POSTFIX_MASTER_CF = """\
127.0.0.1:{plain} inet n - n - - smtpd
127.0.0.1:{starttls} inet n - n - - smtpd
127.0.0.1:{implicit} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
mail_owner = postfix
setgid_group = postdrop
queue_directory = {base}/queue
data_directory = {base}/data
maillog_file_prefixes = {base}
maillog_file = {base}/maillog
myhostname = postfix.test
mydestination =
relay_domains = mx.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard:bench
relay_transport = discard:bench
smtpd_tls_security_level = may
smtpd_tls_cert_file = {base}/cert.pem
smtpd_tls_key_file = {base}/key.pem
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
anvil_rate_time_unit = 60s
default_process_limit = 200
alias_maps =
alias_database =
local_recipient_maps =
biff = no
"""


class PostfixServer(Server):
    """A private Postfix with its queue (durable: cleanup fsyncs before smtpd's 250)."""

    base: Path

    def cpu(self) -> float:
        """Master + every descendant (and the children they reaped)."""
        parents: dict[int, int] = {}
        stats: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            stats[int(entry)] = sum(int(x) for x in fields[11:15])
        master = self.pids[0]
        total, todo = 0, [master]
        while todo:
            pid = todo.pop()
            total += stats.get(pid, 0)
            todo += [child for child, parent in parents.items() if parent == pid]
        return total / HZ

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pids[0], signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pids[0], 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        shutil.rmtree(self.base, ignore_errors=True)


def start_postfix(cert: Path, key: Path) -> Server | None:
    import pwd

    exe = shutil.which("postfix") or "/usr/sbin/postfix"
    if not os.access(exe, os.X_OK) or os.geteuid() != 0:
        return None
    base = Path(tempfile.mkdtemp(prefix="mailmoat-bench-postfix-"))
    base.chmod(0o755)
    user = pwd.getpwnam("postfix")
    for sub in ("etc", "queue", "data"):
        (base / sub).mkdir(mode=0o755)
    os.chown(base / "data", user.pw_uid, user.pw_gid)
    shutil.copy(cert, base / "cert.pem")
    shutil.copy(key, base / "key.pem")
    ports = {mode: free_port() for mode in MODES}
    (base / "etc" / "master.cf").write_text(POSTFIX_MASTER_CF.format(**ports))
    (base / "etc" / "main.cf").write_text(POSTFIX_MAIN_CF.format(base=base))
    subprocess.run([exe, "-c", str(base / "etc"), "start"], check=True, capture_output=True,
                   env={**os.environ, "MAIL_CONFIG": str(base / "etc")}, timeout=60)
    pid_file = base / "queue" / "pid" / "master.pid"
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    server = PostfixServer(name="Postfix (queue, durable)", proc=None, ports=ports,
                           durable=True, pids=[int(pid_file.read_text().split()[0])])
    server.base = base
    return server


# --- load generator -----------------------------------------------------------------------


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


async def session(port: int, mode: str, per_conn: int, deadline: float,
                  ctx: ssl.SSLContext, counts: list[int]) -> None:
    payload = MESSAGE + b".\r\n"
    envelope = b"MAIL FROM:<bench@example.org>\r\nRCPT TO:<sink@mx.test>\r\nDATA\r\n"
    while time.monotonic() < deadline:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx if mode == "implicit" else None)
        try:
            await read_reply(reader)
            writer.write(b"EHLO bench.test\r\n")
            await read_reply(reader)
            if mode == "starttls":
                writer.write(b"STARTTLS\r\n")
                await read_reply(reader)
                await writer.start_tls(ctx)
                writer.write(b"EHLO bench.test\r\n")
                await read_reply(reader)
            for index in range(per_conn):
                if index and time.monotonic() >= deadline:
                    break
                writer.write(envelope)
                for expect in (b"250", b"250", b"354"):
                    reply = await read_reply(reader)
                    if not reply.startswith(expect):
                        raise RuntimeError(f"unexpected reply {reply!r}")
                writer.write(payload)
                if (await read_reply(reader)).startswith(b"250"):
                    counts[0] += 1
            writer.write(b"QUIT\r\n")
            await read_reply(reader)
        finally:
            writer.close()


@dataclass
class Cell:
    server: str
    mode: str
    per_conn: int
    rate: float
    cpu_us: float
    client_cpu: float = 0.0  # share of one core the load generator used


async def run_cell(server: Server, mode: str, per_conn: int, seconds: float,
                   ctx: ssl.SSLContext) -> Cell:
    port = server.ports[mode]
    warm = [0]
    await asyncio.gather(*(session(port, mode, per_conn, time.monotonic() + 0.3, ctx, warm)
                           for _ in range(SESSIONS)))
    counts = [0]
    gen0 = time.process_time()
    cpu0, start = server.cpu(), time.monotonic()
    await asyncio.gather(*(session(port, mode, per_conn, start + seconds, ctx, counts)
                           for _ in range(SESSIONS)))
    elapsed = time.monotonic() - start
    cpu = server.cpu() - cpu0
    generator = time.process_time() - gen0
    return Cell(server=server.name, mode=mode, per_conn=per_conn, rate=counts[0] / elapsed,
                cpu_us=cpu / max(counts[0], 1) * 1e6,
                client_cpu=generator / elapsed)


async def bench(seconds: float, rounds: int, only: list[str] | None) -> list[Cell]:
    from mailmoat.net.tls import generate_self_signed

    work = Path(tempfile.mkdtemp(prefix="mailmoat-bench-"))
    cells: list[Cell] = []
    try:
        cert, key = work / "cert.pem", work / "key.pem"
        generate_self_signed(cert, key, ["mx.test", "127.0.0.1"])
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        starters: dict[str, Callable[[], Server | None]] = {
            "mailmoat": lambda: start_mailmoat(work, cert, str(key)),
            "mailmoat-2w": lambda: start_mailmoat(work, cert, str(key), workers=2),
            "aiosmtpd": lambda: start_aiosmtpd(work, cert, key, fsync=False),
            "aiosmtpd-fsync": lambda: start_aiosmtpd(work, cert, key, fsync=True),
            "smtp-sink": start_smtp_sink,
            "postfix": lambda: start_postfix(cert, key),
        }
        servers: list[Server] = []
        try:
            for name, start in starters.items():
                if (only and name not in only) or (not only and name in OPTIONAL):
                    continue
                server = start()
                if server is None:
                    print(f"({name} not installed: skipped)")
                    continue
                servers.append(server)
            best: dict[tuple[str, str, int], Cell] = {}
            # Rounds interleave the servers cell by cell, so that each sees the same machine
            # (it is shared and noisy); each cell keeps its best round.
            for round_ in range(1, rounds + 1):
                for mode in MODES:
                    for per_conn in (1, 100):
                        for server in servers:
                            if mode not in server.ports:
                                continue
                            cell = await run_cell(server, mode, per_conn, seconds, ctx)
                            print(f"  round {round_} {cell.server:<24} {mode:<9} "
                                  f"{per_conn:>3}/conn {cell.rate:>8.0f} msgs/s "
                                  f"{cell.cpu_us:>8.0f} µs CPU/msg  (load generator: "
                                  f"{cell.client_cpu:.0%} of a core)", flush=True)
                            where = (cell.server, mode, per_conn)
                            if where not in best or cell.rate > best[where].rate:
                                best[where] = cell
            cells = list(best.values())
        finally:
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cells


def table(cells: list[Cell]) -> None:
    columns = [(m, n) for m in MODES for n in (1, 100)]
    servers = list(dict.fromkeys(c.server for c in cells))
    by = {(c.server, c.mode, c.per_conn): c for c in cells}
    head = f"{'msgs/s (server CPU µs/msg)':<26}" + "".join(
        f"{m + (' new' if n == 1 else ' x100'):>19}" for m, n in columns)
    print("\n" + head)
    print("-" * len(head))
    for server in servers:
        row = f"{server:<26}"
        for m, n in columns:
            c = by.get((server, m, n))
            row += f"{'-':>19}" if c is None else f"{c.rate:>10.0f} ({c.cpu_us:>5.0f})"
        print(row)

    def cell(server_prefix: str, mode: str, n: int) -> Cell | None:
        for (s, m, k), c in by.items():
            if s.startswith(server_prefix) and m == mode and k == n:
                return c
        return None

    ours = "mailmoat"
    targets = [  # (label, mode, per_conn, peer prefix, goal), issue #3
        ("plain new >= 2x aiosmtpd-discard", "plain", 1, "aiosmtpd (", 2.0),
        ("plain new >= 2x Postfix with queue", "plain", 1, "Postfix", 2.0),
        ("plain x100 >= 0.3x smtp-sink", "plain", 100, "smtp-sink", 0.3),
        ("STARTTLS new >= 0.95x aiosmtpd", "starttls", 1, "aiosmtpd (", 0.95),
        ("STARTTLS new >= 1.5x Postfix with queue", "starttls", 1, "Postfix", 1.5),
        ("STARTTLS x100 >= 1.5x aiosmtpd", "starttls", 100, "aiosmtpd (", 1.5),
        ("implicit x100 >= 1.5x aiosmtpd", "implicit", 100, "aiosmtpd (", 1.5),
        ("(no goal) plain new vs aiosmtpd+fsync", "plain", 1, "aiosmtpd+fsync", 1.0),
    ]
    print("\ntarget                                      msgs/s ratio  met   CPU ratio  met  goal")
    print("(CPU ratio = peer's server CPU per message / ours: the steadier figure)")
    for label, mode, n, peer, goal in targets:
        a, b = cell(ours, mode, n), cell(peer, mode, n)
        if a is None or b is None or b.rate == 0 or a.cpu_us == 0:
            print(f"{label:<44} {'n/a':>12}")
            continue
        ratio, cpu_ratio = a.rate / b.rate, b.cpu_us / a.cpu_us
        print(f"{label:<44} {ratio:>12.2f}  {'yes' if ratio >= goal else 'NO ':<4}"
              f"{cpu_ratio:>10.2f}  {'yes' if cpu_ratio >= goal else 'NO ':<4}{goal:>5.2f}")
    print("\nmailmoat is durable (fsync before 250); aiosmtpd (discard) and smtp-sink are not. "
          "The load generator shares the 2 cores with the server.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured time per cell")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best kept)")
    parser.add_argument("--only", nargs="*", help="servers to run (mailmoat aiosmtpd "
                        "aiosmtpd-fsync smtp-sink postfix; mailmoat-2w only when named)")
    parser.add_argument("--child-aiosmtpd", nargs=3, metavar=("CERT", "KEY", "SPOOL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_aiosmtpd:
        cert, key, spool = args.child_aiosmtpd
        run_aiosmtpd(cert, key, spool or None)
        return
    print(f"SMTP server benchmark: {len(MESSAGE)} B messages, {SESSIONS} sessions, "
          f"{args.seconds:.0f} s per cell, best of {args.rounds} interleaved rounds, loopback, "
          "TLS 1.3, ECDSA P-256")
    factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        cells = runner.run(bench(args.seconds, args.rounds, args.only))
    table(cells)


if __name__ == "__main__":
    main()
