"""The start-up shared by the private Postfix instances of the tests
(:class:`postfix_fixture.PostfixRelay`, :class:`postfix_smtpd_fixture.PostfixSMTPD`).

:class:`PostfixInstance` owns a fresh directory (``etc`` for ``main.cf``/``master.cf``, its
own queue, data directory and maillog), a free loopback port for the smtpd listener, and the
life cycle: ``start()`` makes the directories, lets the subclass write its configuration
(:meth:`PostfixInstance.write_config`), runs ``postfix -c DIR start`` and polls
:meth:`PostfixInstance._greets` until the listener answers 220; ``stop()`` signals the master
process by the PID in its pid file (only the instance we started) and removes the directory.

Needs root (Postfix's master runs as root and drops to ``mail_owner``) and the ``postfix``
package; tests call ``require_peer("postfix")`` first.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: master.cf of a private instance: ``{listen}`` is the smtpd listener (``ADDR:PORT``).
MASTER_CF = """\
{listen} inet n - n - - smtpd
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

__all__ = ["MASTER_CF", "PostfixInstance", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostfixInstance:
    """One private Postfix instance; subclasses write its configuration."""

    #: directories made under ``base`` before the configuration is written
    SUBDIRS: tuple[str, ...] = ("etc", "queue", "data")

    def __init__(self, postfix: str, *, prefix: str) -> None:
        self.postfix = postfix
        self.port = 0
        # Not under pytest's tmp_path: its parents are 0700 root and Postfix's unprivileged
        # daemons must reach the queue.
        self.base = Path(tempfile.mkdtemp(prefix=prefix))
        self.master_pid: int | None = None

    @property
    def config(self) -> Path:
        return self.base / "etc"

    def write_config(self, user: pwd.struct_passwd) -> None:
        """Write ``main.cf`` and ``master.cf`` (and any files they name) into :attr:`config`;
        ``user`` is Postfix's ``mail_owner`` account and :attr:`port` is already chosen."""
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        user = pwd.getpwnam("postfix")
        self.base.chmod(0o755)
        for sub in self.SUBDIRS:
            (self.base / sub).mkdir(mode=0o755)
        os.chown(self.base / "data", user.pw_uid, user.pw_gid)
        self.port = free_port()
        self.write_config(user)
        env = {**os.environ, "MAIL_CONFIG": str(self.config)}
        started = subprocess.run(
            [self.postfix, "-c", str(self.config), "start"], check=False, env=env,
            capture_output=True, timeout=timeout, text=True,
        )
        if started.returncode != 0:
            self.stop()
            raise RuntimeError(f"postfix start failed: {started.stderr}{started.stdout}")
        pid_file = self.base / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid_file.exists() and self._greets():
                self.master_pid = int(pid_file.read_text().split()[0])
                return
            time.sleep(0.1)
        log = self.log()
        self.stop()
        raise RuntimeError(f"postfix did not start on port {self.port}:\n{log[-3000:]}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                return sock.recv(512).startswith(b"220")
        except OSError:
            return False

    def log(self) -> str:
        path = self.base / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no maillog)"

    def stop(self) -> None:
        pid = self.master_pid
        if pid is None:
            pid_file = self.base / "queue" / "pid" / "master.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(pid_file.read_text().split()[0])
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # the master stops its children
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        self.master_pid = None
        shutil.rmtree(self.base, ignore_errors=True)
