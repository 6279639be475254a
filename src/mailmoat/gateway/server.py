"""The running gateway: listeners from the config, worker processes, signals (layer L4).

:class:`Gateway` runs every listener of a :class:`~mailmoat.gateway.config.Config` in one
asyncio event loop (one worker). :func:`serve` is the process model behind ``mailmoat serve``:

* the parent validates the config and the certificates (a clear error before anything
  listens), runs spool recovery, binds every listening socket, prints the listeners, then
  forks ``workers`` processes that share those sockets (the kernel spreads the accepts; a
  pre-fork like nginx's). A worker that dies is replaced; recovery at its start deletes the
  dead worker's half-received messages (the spool's flock tells dead writers from live ones).
* SIGHUP: every worker reloads the TLS certificates (live connections keep theirs) and the
  users file. SIGTERM/SIGINT: graceful stop -- stop accepting, close idle sessions with 421,
  let sessions in a transaction finish, up to ``grace`` seconds.
* ``workers = 1`` runs the gateway in the process itself (no fork).

uvloop is used when installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from mailmoat.errors import ConfigError, TLSConfigError
from mailmoat.gateway.config import Config, ListenerConfig
from mailmoat.gateway.relay import RelayPolicy
from mailmoat.gateway.session import GatewayContext, session_factory
from mailmoat.gateway.users import Authenticator, UserDB
from mailmoat.net.smtp_server import ConnectionTracker, ListenerSpec, Timeouts, start_listener
from mailmoat.net.tls import ServerTLS
from mailmoat.smtp import ServerConfig as EngineConfig
from mailmoat.spool import RecoveryReport, Spool

__all__ = ["BoundListener", "Gateway", "bind_listeners", "engine_config", "serve"]

log = logging.getLogger(__name__)

#: Seconds a graceful stop waits for sessions in a transaction (Postfix waits for smtpd
#: processes to finish their session; systemd's default stop timeout is 90 s).
SHUTDOWN_GRACE: float = 30.0
#: A worker that dies sooner than this after its start is restarted only after a pause.
_RESPAWN_MIN_LIFE = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundListener:
    config: ListenerConfig
    sock: socket.socket

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def describe(self) -> str:
        c = self.config
        return f"{c.address} port {self.port} mode={c.mode} role={c.role}"


def bind_listeners(config: Config) -> list[BoundListener]:
    """Bind (and listen on) every configured address/port; port 0 picks a free port."""
    out: list[BoundListener] = []
    try:
        for listener in config.listener:
            family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((listener.address, listener.port))
            except OSError as exc:
                sock.close()
                raise ConfigError(
                    f"cannot listen on {listener.address} port {listener.port}: {exc.strerror}",
                    key="listener",
                ) from None
            sock.listen(1024)
            sock.setblocking(False)
            out.append(BoundListener(config=listener, sock=sock))
    except BaseException:
        for bound in out:
            bound.sock.close()
        raise
    return out


def engine_config(config: Config, listener: ListenerConfig) -> EngineConfig:
    """The SMTP engine settings of one listener."""
    submission = listener.role == "submission"
    return EngineConfig(
        hostname=config.server.hostname,
        max_message_size=config.limits.max_message_size,
        max_recipients=config.limits.max_recipients,
        bare_newline=config.smtp.bare_newline,
        tls_available=config.offers_starttls(listener),
        tls_active=listener.mode == "implicit-tls",
        require_tls_for_mail=listener.tls_required,
        require_tls_for_auth=True,
        require_auth_for_mail=submission,
        auth_mechanisms=("PLAIN", "LOGIN") if submission else (),
        stream_content=True,
    )


def timeouts(config: Config) -> Timeouts:
    t = config.limits.timeouts
    return Timeouts(
        server=t.server, mail=t.mail, rcpt=t.rcpt, data_block=t.data_block,
        idle=config.limits.idle_timeout,
        # The handshake waits for the client like a command does: the server timeout.
        tls_handshake=min(t.server, config.limits.idle_timeout),
    )


class Gateway:
    """Every listener of a config in the running event loop (one worker)."""

    def __init__(self, config: Config, *, listeners: Sequence[BoundListener] | None = None,
                 spool: Spool | None = None) -> None:
        self.config = config
        self._bound = list(listeners) if listeners is not None else None
        self.tls: ServerTLS | None = (
            ServerTLS(config.tls.specs(), min_version=config.tls.min_version)
            if config.tls.certificates else None
        )
        self.spool = spool
        self.recovery: RecoveryReport | None = None
        self.users = UserDB.load(config.users_file)
        self.authenticator = Authenticator(self.users)
        self.relay = RelayPolicy(
            local_domains=config.relay.local_domains,
            trusted_networks=[str(n) for n in config.relay.trusted_networks],
        )
        self.tracker = ConnectionTracker(
            max_connections=config.limits.max_connections,
            max_per_ip=config.limits.max_connections_per_ip,
        )
        self.servers: list[asyncio.Server] = []
        self.contexts: dict[str, GatewayContext] = {}
        self._watch: asyncio.Task[None] | None = None

    @property
    def listeners(self) -> list[BoundListener]:
        return list(self._bound or [])

    async def start(self) -> list[BoundListener]:
        if self.spool is None:
            self.spool, self.recovery = Spool.open(self.config.spool_dir,
                                                   fsync=self.config.spool.fsync)
        if self._bound is None:
            self._bound = bind_listeners(self.config)
        for bound in self._bound:
            self.servers.append(await start_listener(self._spec(bound.config), sock=bound.sock))
        if self.tls is not None:
            self._watch = asyncio.get_running_loop().create_task(self.tls.watch())
        return self._bound

    def _spec(self, listener: ListenerConfig) -> ListenerSpec:
        assert self.spool is not None
        ctx = GatewayContext(
            hostname=self.config.server.hostname,
            role=listener.role,
            spool=self.spool,
            relay=self.relay,
            authenticator=self.authenticator if listener.role == "submission" else None,
            max_message_size=self.config.limits.max_message_size,
        )
        self.contexts[f"{listener.address}:{listener.port}"] = ctx
        return ListenerSpec(
            engine=engine_config(self.config, listener),
            handler_factory=session_factory(lambda: ctx),
            tracker=self.tracker,
            timeouts=timeouts(self.config),
            tls=self.tls,
            implicit_tls=listener.mode == "implicit-tls",
        )

    def reload(self) -> None:
        """SIGHUP: certificates and users file again (errors keep the old ones)."""
        if self.tls is not None:
            try:
                self.tls.reload()
            except TLSConfigError as exc:
                log.error("TLS reload failed, keeping the current certificates: %s", exc)
        try:
            self.users = UserDB.load(self.config.users_file)
            self.authenticator.users = self.users
            log.info("users file reloaded (%d users)", len(self.users))
        except (ConfigError, OSError) as exc:
            log.error("users file reload failed, keeping the current users: %s", exc)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, let sessions finish (bounded), close the spool."""
        for server in self.servers:
            server.close()
        cut = await self.tracker.drain(grace)
        if cut:
            log.warning("shutdown: %d sessions cut off after %.0fs", cut, grace)
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self.spool is not None:
            await self.spool.aclose()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def _run_worker(config: Config, bound: Sequence[BoundListener], grace: float,
                      ready: Callable[[], None] | None) -> None:
    gateway = Gateway(config, listeners=bound)
    await gateway.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload)
    if ready is not None:
        ready()
    if gateway.recovery is not None and gateway.recovery.removed_tmp:
        log.info("spool recovery removed %d half-received messages",
                 len(gateway.recovery.removed_tmp))
    await stop.wait()
    await gateway.stop(grace)


def run_worker(config: Config, bound: Sequence[BoundListener], grace: float,
               ready: Callable[[], None] | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT (in this process); ``ready`` is called once it
    serves and handles signals."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_run_worker(config, bound, grace, ready))


def serve(config: Config, *, workers: int | None = None, grace: float = SHUTDOWN_GRACE,
          out: TextIO = sys.stdout) -> int:
    """``mailmoat serve``: validate, recover, bind, print, then run the workers."""
    if config.tls.certificates:
        ServerTLS(config.tls.specs(), min_version=config.tls.min_version)  # fail early
    UserDB.load(config.users_file)
    spool, report = Spool.open(config.spool_dir, fsync=config.spool.fsync)
    spool.close()
    bound = bind_listeners(config)
    count = workers or config.server.workers
    print(f"mailmoat: spool {config.spool_dir}: {report.queued} queued, "
          f"{len(report.removed_tmp)} half-received removed", file=out)
    for listener in bound:
        print(f"mailmoat: listening on {listener.describe()}", file=out)

    def banner() -> None:  # printed once signals are handled: scripts may then send them
        print(f"mailmoat: {count} worker(s), pid {os.getpid()}", file=out, flush=True)

    if count <= 1:
        run_worker(config, bound, grace, banner)
        return 0
    return _supervise(config, bound, count, grace=grace, out=out, banner=banner)


def _supervise(config: Config, bound: Sequence[BoundListener], count: int, *, grace: float,
               out: TextIO, banner: Callable[[], None]) -> int:
    children: dict[int, float] = {}
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                # Ignored until the worker's loop handles it (a reload must not kill it).
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                run_worker(config, bound, grace)
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children[pid] = time.monotonic()
        print(f"mailmoat: worker pid {pid}", file=out, flush=True)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    banner()
    for _ in range(count):
        spawn()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None:
            continue
        if not stopping:
            code = os.waitstatus_to_exitcode(status)
            print(f"mailmoat: worker pid {pid} exited ({code}); starting another",
                  file=out, flush=True)
            if time.monotonic() - started < _RESPAWN_MIN_LIFE:
                time.sleep(_RESPAWN_MIN_LIFE)
            if not stopping:
                spawn()
    for listener in bound:
        listener.sock.close()
    return 0
