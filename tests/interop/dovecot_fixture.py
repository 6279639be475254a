"""A private Dovecot LMTP server on a loopback port, and a tiny scriptable LMTP server.

``Dovecot.start()`` writes its own ``dovecot.conf`` (own ``base_dir``/``state_dir``/log, an
LMTP ``inet_listener`` on 127.0.0.1:PORT, a passwd-file userdb, ``mail_location =
maildir:DIR/mail/%n``), runs ``dovecot -F -c CONF`` in the foreground as our child, waits for
the port, and ``stop()`` signals that PID only. As root, mail is stored as the ``dovecot``
user (Dovecot refuses root-owned mailboxes by default); otherwise as the current user.

``FakeLMTP`` is an asyncio LMTP server whose per-recipient answers a test scripts (e.g. 451
then 250), which records what it received, and which can stall after the content (to kill
a client mid-delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
mail_location = maildir:{base}/mail/%n
first_valid_uid = 0
auth_username_format = %Ln
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = passwd-file
  args = {base}/users
}}
userdb {{
  driver = passwd-file
  args = {base}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    program: str
    base: Path
    users: tuple[str, ...] = ("alice", "bob")
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _owned_base: bool = False

    def start(self) -> None:
        self.port = free_port()
        if os.geteuid() == 0:
            # Dovecot's unprivileged processes must reach the users file and the mail
            # directory: pytest's tmp_path lives under a 0700 directory, so use /tmp.
            self.base = Path(tempfile.mkdtemp(prefix="mailmoat-dovecot-"))
            self._owned_base = True
        for sub in ("run", "state", "mail"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("dovecot")
            internal, group, login = "dovecot", "dovecot", "dovenull"
            os.chmod(self.base, 0o755)
            os.chown(self.base / "mail", owner.pw_uid, owner.pw_gid)
        else:
            owner = pwd.getpwuid(os.getuid())
            internal = login = owner.pw_name
            import grp

            group = grp.getgrgid(owner.pw_gid).gr_name
        lines = [f"{u}:{{PLAIN}}unused:{owner.pw_uid}:{owner.pw_gid}::{self.base}/mail/{u}::"
                 for u in self.users]
        (self.base / "users").write_text("\n".join(lines) + "\n")
        conf = self.base / "dovecot.conf"
        conf.write_text(CONF.format(base=self.base, port=self.port, internal=internal,
                                    internal_group=group, login=login))
        self.process = subprocess.Popen([self.program, "-F", "-c", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot exited: {err} {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1) as s:
                if s.recv(100).startswith(b"220"):
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not start: {self.log()}")

    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def maildir(self, user: str) -> list[bytes]:
        new = self.base / "mail" / user / "new"
        if not new.is_dir():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        if self._owned_base:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class FakeLMTP:
    """``answer(recipient, n)`` gives the (code, text) after the content for the n-th session
    (1-based); RCPTs are always accepted. ``stall=True`` never answers after the content."""

    answer: Callable[[str, int], tuple[int, str]] = lambda r, n: (250, "2.0.0 Saved")
    stall: bool = False
    sessions: int = 0
    received: list[tuple[tuple[str, ...], bytes]] = field(default_factory=list)
    delivered: list[tuple[str, bytes]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        session = self.sessions
        rcpts: list[str] = []
        try:
            writer.write(b"220 fake LMTP ready\r\n")
            while True:
                line = await asyncio.wait_for(reader.readline(), 30)
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"LHLO":
                    writer.write(b"250-fake\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    rcpts = []
                    writer.write(b"250 2.1.0 OK\r\n")
                elif verb == b"RCPT":
                    rcpts.append(line.split(b"<", 1)[1].split(b">", 1)[0].decode())
                    writer.write(b"250 2.1.5 OK\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = b""
                    while not body.endswith(b"\r\n.\r\n"):
                        chunk = await asyncio.wait_for(reader.read(65536), 30)
                        if not chunk:
                            return
                        body += chunk
                    self.received.append((tuple(rcpts), body))
                    if self.stall:
                        await reader.read()  # until the client goes away
                        return
                    for r in rcpts:
                        code, text = self.answer(r, session)
                        if 200 <= code < 300:
                            self.delivered.append((r, body))
                        writer.write(f"{code} {text}\r\n".encode())
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 OK\r\n")
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def _child(db: str, spool_dir: str, port: int, lease: float) -> None:
    """A delivery worker for the kill -9 test: claims and delivers until killed."""
    from mailmoat.gateway.deliver import Downstream
    from mailmoat.gateway.queue import DeliveryQueue
    from mailmoat.spool import Spool
    from mailmoat.store import SQLiteStore

    store = await SQLiteStore.open(db)
    spool = Spool(spool_dir, fsync=False)
    queue = DeliveryQueue(store, spool, Downstream(timeout=600), lease=lease, owner="child")
    print("ready", flush=True)
    while True:
        await queue.run_once()
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    import sys

    asyncio.run(_child(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
