"""A real authoritative DNS server for tests: Knot DNS (``knotd``) on 127.0.0.1.

Use from a test module in tests/interop/::

    from knot_fixture import KnotServer, knot_server  # noqa: F401  (registers the fixture)

    async def test_x(knot_server):
        server = knot_server({"example.com": ZONE_TEXT})
        resolver = DNSResolver([server.address])

``knot_server(zones, *, signed=())`` starts one ``knotd`` in the foreground (not daemonised)
with its own config, rundir, storage and control socket under a temporary directory, serving
each ``zone name -> master-file text`` (the zone name is the default ``$ORIGIN``), on a free
port of 127.0.0.1 (UDP and TCP). It returns once every zone answers its SOA authoritatively.
Zones named in ``signed`` are signed by knot on load (automatic DNSSEC signing, default policy:
ECDSA P-256), for tests that need RRSIGs and a DNSKEY. Each server is stopped at teardown by
its PID (SIGTERM, then SIGKILL after 5 s). Skips without knotd (fails in CI, see conftest).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from conftest import require_peer

__all__ = ["Daemon", "KnotServer", "foreground", "free_port", "knot_server", "start_knot"]

STARTUP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Daemon:
    """A DNS daemon of the tests on loopback (knotd here, unbound in :mod:`unbound_fixture`)."""

    host: str
    port: int
    pid: int
    workdir: Path

    @property
    def address(self) -> str:
        """``HOST:PORT``, the form DNSResolver, ``--resolver`` and ``[dns] resolvers`` take."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class KnotServer(Daemon):
    def __iter__(self) -> Iterator[object]:  # host, port = server
        return iter((self.host, self.port))

    def log(self) -> str:
        return (self.workdir / "knotd.log").read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (knotd and unbound bind both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


def _config(workdir: Path, port: int, zones: Collection[str], signed: Collection[str]) -> str:
    lines = [
        "server:",
        f'    rundir: "{workdir / "run"}"',
        f"    listen: 127.0.0.1@{port}",
        "log:",
        "  - target: stderr",
        "    any: info",
        "database:",
        f'    storage: "{workdir / "db"}"',
        "template:",
        "  - id: default",
        f'    storage: "{workdir / "zones"}"',
        '    file: "%s.zone"',
        "    zonefile-sync: -1",  # never write the zone file back
        "    journal-content: none",
        "zone:",
    ]
    for zone in zones:
        lines.append(f"  - domain: {zone}")
        if zone in signed:
            lines.append("    dnssec-signing: on")
    return "\n".join(lines) + "\n"


def _ready(port: int, zones: Collection[str]) -> bool:
    for zone in zones:
        query = dns.message.make_query(zone + ".", dns.rdatatype.SOA)
        try:
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.3)
        except (dns.exception.Timeout, OSError):
            return False
        if response.rcode() != dns.rcode.NOERROR or not response.flags & dns.flags.AA:
            return False
    return True


@contextlib.contextmanager
def foreground(argv: Sequence[str], log: Path, ready: Callable[[], bool], *,
               timeout: float = STARTUP_TIMEOUT) -> Iterator[int]:
    """Run the daemon ``argv`` in the foreground (stdout and stderr into ``log``) until
    ``ready()`` says it serves (at most ``timeout`` s); yield its PID. At the end: SIGTERM to
    this PID only, SIGKILL after 5 s. Shared with :mod:`unbound_fixture`."""
    name = Path(argv[0]).name

    def tail() -> str:
        return log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""

    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer in {timeout}s:\n{tail()}")
            time.sleep(0.05)
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM to this PID only
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@contextlib.contextmanager
def start_knot(
    zones: Mapping[str, str], *, signed: Collection[str] = (), knotd: str | None = None,
) -> Iterator[KnotServer]:
    """Run knotd serving ``zones`` for the duration of the ``with`` block."""
    knotd = knotd or require_peer("knotd")
    names = [z.rstrip(".").lower() for z in zones]
    unknown = {s.rstrip(".").lower() for s in signed} - set(names)
    if unknown:
        raise ValueError(f"signed zones not served: {sorted(unknown)}")
    # Short path: the control socket path must fit in sockaddr_un (108 octets).
    workdir = Path(tempfile.mkdtemp(prefix="knot-"))
    try:
        for sub in ("run", "db", "zones"):
            (workdir / sub).mkdir()
        for name, text in zip(names, zones.values(), strict=True):
            (workdir / "zones" / f"{name}.zone").write_text(text, encoding="utf-8")
        port = free_port()
        conf = workdir / "knot.conf"
        conf.write_text(_config(workdir, port, names, {s.rstrip(".").lower() for s in signed}),
                        encoding="utf-8")
        argv = [knotd, "-c", str(conf), "-s", str(workdir / "run" / "knot.sock")]
        with foreground(argv, workdir / "knotd.log", lambda: _ready(port, names)) as pid:
            yield KnotServer(host="127.0.0.1", port=port, pid=pid, workdir=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def knot_server() -> Iterator[Callable[..., KnotServer]]:
    """Factory fixture: ``knot_server(zones, *, signed=()) -> KnotServer``."""
    with contextlib.ExitStack() as stack:

        def start(zones: Mapping[str, str], *, signed: Collection[str] = ()) -> KnotServer:
            return stack.enter_context(start_knot(zones, signed=signed))

        yield start
