"""The running gateway: listeners from the config, worker processes, signals (layer L4).

:class:`Gateway` runs every listener of a :class:`~mailmoat.gateway.config.Config` in one
asyncio event loop (one worker). :func:`serve` is the process model behind ``mailmoat serve``:

* the parent validates the config and the certificates (a clear error before anything
  listens), runs spool recovery and the queue's recovery (:func:`mailmoat.gateway.runtime.
  prepare`: spooled messages without delivery rows are queued; the DNSSEC check for DANE),
  binds every listening socket, prints the store, what it recovered, DANE on/off, the local
  destination and the listeners, then forks ``workers`` processes that share those sockets
  (the kernel spreads the accepts; a pre-fork like nginx's). A worker that dies is replaced
  in its slot; recovery at its start deletes the dead worker's half-received messages (the
  spool's flock tells dead writers from live ones).
* every worker runs a :class:`~mailmoat.gateway.runtime.Runtime`: its store connection, the
  delivery queue, the pipelines and the group-committed ``accept``; worker slot 0 also runs
  the HTTP submission API (when enabled) and the sweep for spooled messages without rows.
* SIGHUP: every worker reloads the TLS certificates (live connections keep theirs) and the
  users file. SIGTERM/SIGINT: graceful stop -- stop accepting (SMTP and HTTP), close idle
  sessions with 421, let sessions in a transaction finish, up to ``grace`` seconds; then
  the queue workers finish their deliveries (also bounded by ``grace``; cut-off ones keep
  their lease and are retried when it expires) and the store closes.
* ``workers = 1`` runs the gateway in the process itself (no fork).

uvloop is used when installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from mailmoat.gateway.runtime import ApiFactory, Runtime, StartupReport, prepare, validate
from mailmoat.gateway.session import GatewayContext, session_factory
from mailmoat.gateway.users import Authenticator, UserDB
from mailmoat.net.smtp_server import ConnectionTracker, ListenerSpec, Timeouts, start_listener
from mailmoat.net.tls import ServerTLS
from mailmoat.smtp import ServerConfig as EngineConfig
from mailmoat.spool import RecoveryReport, Spool

__all__ = ["BoundListener", "Gateway", "RuntimeOptions", "bind_listeners", "engine_config",
           "serve"]

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


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeOptions:
    """Run the delivery side too (:class:`~mailmoat.gateway.runtime.Runtime`): ``slot`` of
    this worker (0 runs the API and the sweep), the parent's DANE check, the API factory."""

    slot: int = 0
    dane: tuple[bool, str] | None = None
    api: ApiFactory | None = None


class Gateway:
    """Every listener of a config in the running event loop (one worker). With ``runtime``
    the worker also delivers (queue, pipelines, ``accept``); without it, it only spools."""

    def __init__(self, config: Config, *, listeners: Sequence[BoundListener] | None = None,
                 spool: Spool | None = None, runtime: RuntimeOptions | None = None) -> None:
        self.config = config
        self.runtime_options = runtime
        self.runtime: Runtime | None = None
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
        options = self.runtime_options
        if options is not None and self.runtime is None:
            self.runtime = await Runtime.open(self.config, self.spool, dane=options.dane,
                                              slot=options.slot, api=options.api)
            await self.runtime.start()
        for bound in self._bound:
            self.servers.append(await start_listener(self._spec(bound.config), sock=bound.sock))
        if self.tls is not None:
            self._watch = asyncio.get_running_loop().create_task(self.tls.watch())
        return self._bound

    def _spec(self, listener: ListenerConfig) -> ListenerSpec:
        assert self.spool is not None
        extra = self.runtime.context_fields(listener.role) if self.runtime is not None else {}
        ctx = GatewayContext(
            hostname=self.config.server.hostname,
            role=listener.role,
            spool=self.spool,
            relay=self.relay,
            authenticator=self.authenticator if listener.role == "submission" else None,
            max_message_size=self.config.limits.max_message_size,
            **extra,
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
        """Stop accepting, let sessions finish (bounded), stop the delivery side (bounded),
        close the store and the spool."""
        for server in self.servers:
            server.close()
        if self.runtime is not None:
            await self.runtime.stop_api()
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
        if self.runtime is not None:
            runtime, self.runtime = self.runtime, None
            await runtime.stop(grace)
        if self.spool is not None:
            await self.spool.aclose()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def _run_worker(config: Config, bound: Sequence[BoundListener], grace: float,
                      ready: Callable[[], None] | None,
                      runtime: RuntimeOptions | None) -> None:
    gateway = Gateway(config, listeners=bound, runtime=runtime)
    try:
        await gateway.start()
    except BaseException:
        if gateway.runtime is not None:
            await gateway.runtime.stop(0)
        raise
    if gateway.runtime is not None and gateway.runtime.api is not None:
        api = config.submission_api
        print(f"mailmoat: submission API listening on {api.address} port "
              f"{gateway.runtime.api.port} (worker pid {os.getpid()})", flush=True)
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
               ready: Callable[[], None] | None = None,
               runtime: RuntimeOptions | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT (in this process); ``ready`` is called once it
    serves and handles signals."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_run_worker(config, bound, grace, ready, runtime))


def _startup(config: Config) -> tuple[RecoveryReport, StartupReport]:
    """Spool recovery, then the queue's (:func:`prepare`), in a loop of their own (closed
    before the fork)."""
    spool, report = Spool.open(config.spool_dir, fsync=config.spool.fsync)
    try:
        startup = asyncio.run(prepare(config, spool))
    finally:
        spool.close()
    return report, startup


def _check_api_port(config: Config) -> None:
    """Fail before anything starts when the submission API's port is taken (its worker
    binds it later; a worker that cannot would be restarted in a loop)."""
    api = config.submission_api
    family = socket.AF_INET6 if ":" in api.address else socket.AF_INET
    try:
        socket.create_server((api.address, api.port), family=family).close()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {api.address} port {api.port}: {exc.strerror}",
                          key="submission_api.port") from None


def print_startup(config: Config, report: RecoveryReport, startup: StartupReport,
                  out: TextIO) -> None:
    print(f"mailmoat: spool {config.spool_dir}: {report.queued} queued, "
          f"{len(report.removed_tmp)} half-received removed", file=out)
    print(f"mailmoat: store {startup.store}", file=out)
    print(f"mailmoat: queue recovered: {len(startup.recovered.enqueued)} spooled messages "
          f"without delivery rows queued, {len(startup.recovered.removed)} finished removed",
          file=out)
    delivery = config.delivery
    why = startup.dane_note.removeprefix("DANE disabled: ").removeprefix("DANE enabled: ")
    print(f"mailmoat: delivery: local domains -> {startup.destination}; other domains -> "
          f"their MX, port {delivery.mx_port} (DANE {'on' if startup.dane else 'off'}: "
          f"{why}; MTA-STS {'on' if delivery.mta_sts else 'off'})"
          + ("; HOLD: nothing is delivered" if delivery.hold else ""), file=out)


def serve(config: Config, *, workers: int | None = None, grace: float = SHUTDOWN_GRACE,
          out: TextIO = sys.stdout, api: ApiFactory | None = None) -> int:
    """``mailmoat serve``: validate, recover, bind, print, then run the workers. ``api``
    starts the HTTP submission API (in worker slot 0; the CLI passes
    :func:`mailmoat.web.submit.start_from_config`)."""
    if config.tls.certificates:
        ServerTLS(config.tls.specs(), min_version=config.tls.min_version)  # fail early
    UserDB.load(config.users_file)
    validate(config)
    if api is not None and config.submission_api.enabled:
        _check_api_port(config)
    report, startup = _startup(config)
    bound = bind_listeners(config)
    count = workers or config.server.workers
    print_startup(config, report, startup, out)
    options = RuntimeOptions(dane=(startup.dane, startup.dane_note), api=api)
    for listener in bound:
        print(f"mailmoat: listening on {listener.describe()}", file=out)

    def banner() -> None:  # printed once signals are handled: scripts may then send them
        print(f"mailmoat: {count} worker(s), pid {os.getpid()}", file=out, flush=True)

    if count <= 1:
        run_worker(config, bound, grace, banner, options)
        return 0
    return _supervise(config, bound, count, grace=grace, out=out, banner=banner,
                      options=options)


def _supervise(config: Config, bound: Sequence[BoundListener], count: int, *, grace: float,
               out: TextIO, banner: Callable[[], None], options: RuntimeOptions) -> int:
    children: dict[int, tuple[float, int]] = {}  # pid -> (start time, slot)
    stopping = False

    def spawn(slot: int) -> None:
        out.flush()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                # Ignored until the worker's loop handles it (a reload must not kill it).
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                run_worker(config, bound, grace,
                           runtime=dataclasses.replace(options, slot=slot))
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children[pid] = (time.monotonic(), slot)
        # The line's format is read by scripts and tests: "mailmoat: worker pid N".
        print(f"mailmoat: worker pid {pid}", file=out, flush=True)
        log.info("worker pid %d runs in slot %d%s", pid, slot,
                 " (submission API, sweep)" if slot == 0 else "")

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
    for slot in range(count):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        child = children.pop(pid, None)
        if child is None:
            continue
        started, slot = child
        if not stopping:
            code = os.waitstatus_to_exitcode(status)
            print(f"mailmoat: worker pid {pid} exited ({code}); starting another",
                  file=out, flush=True)
            if time.monotonic() - started < _RESPAWN_MIN_LIFE:
                time.sleep(_RESPAWN_MIN_LIFE)
            if not stopping:
                spawn(slot)
    for listener in bound:
        listener.sock.close()
    return 0
