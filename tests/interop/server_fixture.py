"""Run our gateway for tests: a data directory with a certificate, a user and a config, and
``python -m mailmoat.cli.main serve`` as a subprocess on free loopback ports (port 0).

The server prints its bound listeners (``mailmoat: listening on ADDR port N mode=M role=R``);
:func:`start_server` reads them, so no port is guessed. Stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailmoat.gateway.users import UserDB, make_user
from mailmoat.net.tls import generate_self_signed
from mailmoat.spool import Spool

ROOT = Path(__file__).resolve().parents[2]
HOSTNAME = "mx.test"
USER, PASSWORD, USER_ADDRESS = "alice", "correct horse", "alice@mx.test"
_LISTEN_RE = re.compile(r"listening on (\S+) port (\d+) mode=(\S+) role=(\S+)")

#: (mode, role) of every listener of the default test config.
LISTENERS = (
    ("implicit-tls", "submission"),
    ("starttls", "submission"),
    ("starttls", "mx"),
    ("plain", "mx"),
)


def make_data_dir(
    directory: Path,
    *,
    listeners: tuple[tuple[str, str], ...] = LISTENERS,
    extra: str = "",
    limits: str = "",
    workers: int = 1,
    fsync: bool = True,
    trusted: tuple[str, ...] = (),
    hostname: str = HOSTNAME,
    local_domains: tuple[str, ...] | None = None,
    with_user: bool = True,
) -> Path:
    """Write cert (for ``hostname``), users file (the test user, unless not ``with_user``) and
    config.toml into ``directory``; return the config path. ``local_domains`` defaults to
    ``(hostname,)``; ``extra`` is appended as it is (more sections)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        generate_self_signed(cert, key, [hostname, "localhost", "127.0.0.1"])
    users = directory / "users.jsonl"
    if not users.exists():
        db = UserDB()
        if with_user:
            db = db.with_user(make_user(USER, PASSWORD, [USER_ADDRESS]))
        db.save(users)
    lines = [
        "[server]", f'hostname = "{hostname}"', f"workers = {workers}", "",
    ]
    for mode, role in listeners:
        lines += ["[[listener]]", 'address = "127.0.0.1"', "port = 0",
                  f'mode = "{mode}"', f'role = "{role}"', ""]
    lines += [
        "[tls]", 'certificates = [ { cert = "cert.pem", key = "key.pem" } ]', "",
        "[relay]",
        "local_domains = [" + ", ".join(f'"{d}"' for d in local_domains or (hostname,)) + "]",
        "trusted_networks = [" + ", ".join(f'"{n}"' for n in trusted) + "]", "",
        "[spool]", f"fsync = {'true' if fsync else 'false'}", "",
    ]
    if limits:
        lines += ["[limits]", limits, ""]
    lines.append(extra)
    path = directory / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class RunningServer:
    proc: subprocess.Popen[str]
    config: Path
    ports: dict[tuple[str, str], int] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.config.parent

    @property
    def cert(self) -> Path:
        return self.data_dir / "cert.pem"

    def port(self, mode: str, role: str) -> int:
        return self.ports[(mode, role)]

    def spool(self) -> Spool:
        return Spool(self.data_dir / "spool")

    def drain(self) -> None:
        """Keep reading stdout (into ``output``) in a daemon thread, so that serve never
        blocks on a full pipe once the caller stops reading it."""
        def run() -> None:
            stdout = self.proc.stdout
            with contextlib.suppress(ValueError, OSError):
                while stdout is not None and (line := stdout.readline()):
                    self.output.append(line)
        threading.Thread(target=run, daemon=True).start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def launch_server(config: Path, *, workers: int = 1, timeout: float = 20.0,
                  log_level: str = "warning", grace: float = 5, log: Path | None = None,
                  ) -> RunningServer:
    """Start ``mailmoat serve`` and read its stdout until the banner (``N worker(s)``), noting
    the listeners' ports. Its stderr is appended to ``log`` (discarded without one); stdout
    is read no further here (see :meth:`RunningServer.drain`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    err = log.open("ab") if log is not None else None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailmoat.cli.main", "serve", "--config", str(config),
             "--workers", str(workers), "--log-level", log_level, "--grace", f"{grace:g}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if err is None else err,
            stdin=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
        )
    finally:
        if err is not None:
            err.close()
    server = RunningServer(proc=proc, config=config)

    def log_tail() -> str:
        return "" if log is None or not log.exists() else \
            "\n" + log.read_text(errors="replace")[-4000:]

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            raise RuntimeError(f"mailmoat serve exited early ({proc.returncode}): "
                               f"{''.join(server.output)}{log_tail()}")
        server.output.append(line)
        if match := _LISTEN_RE.search(line):
            server.ports[(match[3], match[4])] = int(match[2])
        if "worker(s)" in line:
            return server
    server.stop(signal.SIGKILL)  # pragma: no cover - start-up hang
    raise RuntimeError(f"mailmoat serve did not start in {timeout}s{log_tail()}")


def start_server(config: Path, *, workers: int = 1, timeout: float = 20.0,
                 log_level: str = "warning") -> RunningServer:
    """Start ``mailmoat serve`` (stderr discarded) and wait until it printed its listeners."""
    server = launch_server(config, workers=workers, timeout=timeout, log_level=log_level)
    if workers > 1:
        time.sleep(0.5)  # workers fork after the banner
    return server
