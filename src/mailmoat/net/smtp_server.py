"""The asyncio adapter of the sans-IO SMTP server engine (layer L3): I/O, timeouts, flow control.

Like uvicorn's ``h11_impl`` for h11: a thin :class:`asyncio.Protocol` that feeds socket bytes
to :class:`mailmoat.smtp.ServerConnection`, hands every event to a :class:`SessionHandler`
(the policy, layer L4) and writes the engine's replies back. It decides nothing about mail.

Decisions
    ``handler.event(event)`` returns ``None`` (accept with the engine's reply), a
    :class:`~mailmoat.smtp.Reply` (2xx: accept with that reply; 4xx/5xx: reject) or an
    *awaitable* of one of those (AUTH's password hashing, the spool's fsync). The fast path
    (EHLO, MAIL, RCPT) is synchronous: no task, no future. While an awaitable runs, reading
    is paused, so a client pipelining behind it cannot make us buffer without bound.

TLS
    Implicit TLS (RFC 8314): the listening server is created with ``ssl=`` (the handshake is
    done before ``connection_made``). STARTTLS (RFC 3207): after the engine queued its 220, we
    write it, call :meth:`asyncio.AbstractEventLoop.start_tls` on the transport and then
    ``tls_established()``; the engine has already dropped every byte pipelined after STARTTLS.

Timeouts (RFC 5321 §4.5.3.2)
    One timer per connection, rescheduled lazily: progress (an event from the engine: a
    complete command line, a piece of message content) moves a timestamp; the timer checks it
    when it fires. A client that trickles a command byte by byte makes no progress and is
    dropped when the timeout for its state passes (slowloris), with ``421 4.4.2``. The limit
    is ``min(idle_timeout, timeout of the state)``: ``server`` for commands, ``mail`` after
    MAIL, ``rcpt`` after RCPT, ``data_block`` inside DATA/BDAT. No timeout runs while *we*
    are busy (an fsync, a password hash).

Connection caps
    :class:`ConnectionTracker` counts live connections per worker, globally and per client
    IP (IPv6 per address); beyond either cap the client gets ``421 4.7.0`` and is closed
    before any engine exists (Postfix ``smtpd_client_connection_count_limit``).

SECURITY: bytes from the peer go only to the engine, whose buffers are bounded (command line,
AUTH line, content line, message size). The adapter adds: reading paused while a decision is
awaited or while our write buffer is above the transport's high-water mark (a client that
pipelines without reading our replies cannot grow our memory), per-state timeouts against
slow clients, and connection caps. TLS handshakes have a timeout too.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, cast

from mailmoat import limits
from mailmoat.net.tls import ServerTLS, TLSInfo, describe
from mailmoat.smtp import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    MessageChunk,
    Replies,
    Reply,
    ServerConfig,
    ServerConnection,
    StartTLSRequested,
    State,
)

__all__ = [
    "ConnectionInfo",
    "ConnectionTracker",
    "Decision",
    "ListenerSpec",
    "SMTPServerProtocol",
    "SessionHandler",
    "Timeouts",
    "start_listener",
]

log = logging.getLogger(__name__)

#: Postfix "421 4.7.0 Error: too many connections from IP" (smtpd_client_connection_count_limit);
#: RFC 3463 §3.8 X.7.0 "Other or undefined security status".
TOO_MANY_CONNECTIONS: Final = Reply(
    code=421, status="4.7.0", text="Too many connections, try again later"
)
TOO_MANY_FROM_IP: Final = Reply(
    code=421, status="4.7.0", text="Too many connections from your address, try again later"
)
#: Postfix "421 4.4.2 host Error: timeout exceeded"; RFC 3463 §3.5 X.4.2 "Bad connection".
TIMEOUT_EXCEEDED: Final = Reply(code=421, status="4.4.2", text="Timeout exceeded")
#: RFC 5321 §3.8 / §4.2.3 on shutdown (the engine's catalogue entry).
SHUTTING_DOWN: Final = Replies.SHUTTING_DOWN

#: RFC 5321 §4.2.3 "451 Requested action aborted: local error in processing".
LOCAL_ERROR: Final = Replies.LOCAL_ERROR

Decision = Reply | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds without progress before a client is dropped (RFC 5321 §4.5.3.2)."""

    server: float = limits.SMTP_TIMEOUT_SERVER
    mail: float = limits.SMTP_TIMEOUT_MAIL
    rcpt: float = limits.SMTP_TIMEOUT_RCPT
    data_block: float = limits.SMTP_TIMEOUT_DATA_BLOCK
    idle: float = limits.SERVER_IDLE_TIMEOUT
    tls_handshake: float = limits.SMTP_TIMEOUT_SERVER

    @property
    def shortest(self) -> float:
        return min(self.server, self.mail, self.rcpt, self.data_block, self.idle)

    def for_state(self, state: State) -> float:
        if state is State.MAIL:
            limit = self.mail
        elif state is State.RCPT:
            limit = self.rcpt
        elif state is State.DATA or state is State.BDAT:
            limit = self.data_block
        else:
            limit = self.server
        return min(limit, self.idle)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionInfo:
    """What the transport knows about a connection (given to the session policy)."""

    client_ip: str
    client_port: int
    local_ip: str
    local_port: int
    tls: TLSInfo | None  # implicit TLS: set from the start


class SessionHandler(Protocol):
    """The policy for one connection (layer L4 implements it)."""

    def event(self, event: Event) -> Decision | Awaitable[Decision]:
        """Answer a decision event (see module docstring); notices return None."""

    def tls_started(self, info: TLSInfo) -> None:
        """STARTTLS finished its handshake (the engine has restarted the session)."""

    def closed(self) -> None:
        """The connection is gone (drop any half-received message)."""


HandlerFactory = Callable[["SMTPServerProtocol", ConnectionInfo], SessionHandler]


@functools.lru_cache(maxsize=4096)
def _ip_key(ip: str) -> str:
    if ":" not in ip:
        return ip  # IPv4 text from the kernel is already canonical
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class ConnectionTracker:
    """Live connections of one worker: caps, and the set to drain at shutdown."""

    def __init__(self, *, max_connections: int = limits.SERVER_MAX_CONNECTIONS,
                 max_per_ip: int = limits.SERVER_MAX_CONNECTIONS_PER_IP) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.live: set[SMTPServerProtocol] = set()
        self._per_ip: dict[str, int] = {}
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self, proto: SMTPServerProtocol, ip: str) -> Reply | None:
        """Register a connection, or return the 421 to refuse it with."""
        if self.draining:
            return SHUTTING_DOWN
        if len(self.live) >= self.max_connections:
            return TOO_MANY_CONNECTIONS
        key = _ip_key(ip)
        count = self._per_ip.get(key, 0)
        if count >= self.max_per_ip:
            return TOO_MANY_FROM_IP
        self._per_ip[key] = count + 1
        self.live.add(proto)
        self._idle.clear()
        return None

    def release(self, proto: SMTPServerProtocol, ip: str) -> None:
        if proto not in self.live:
            return
        self.live.discard(proto)
        key = _ip_key(ip)
        count = self._per_ip.get(key, 1) - 1
        if count > 0:
            self._per_ip[key] = count
        else:
            self._per_ip.pop(key, None)
        if not self.live:
            self._idle.set()

    def count(self, ip: str) -> int:
        return self._per_ip.get(_ip_key(ip), 0)

    async def drain(self, grace: float) -> int:
        """Ask every session to finish (idle ones close now with 421); wait up to ``grace``
        seconds, then close the rest. Returns how many had to be cut off."""
        self.draining = True
        for proto in list(self.live):
            proto.shutdown()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
            return 0
        except TimeoutError:
            left = list(self.live)
            for proto in left:
                proto.abort()
            return len(left)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerSpec:
    """Everything the adapter needs for one listening socket."""

    engine: ServerConfig
    handler_factory: HandlerFactory
    tracker: ConnectionTracker
    timeouts: Timeouts = Timeouts()
    tls: ServerTLS | None = None  # needed for implicit TLS and STARTTLS
    implicit_tls: bool = False


_IDLE_STATES: Final = frozenset({State.GREETING_PENDING, State.CONNECTED, State.READY})


class SMTPServerProtocol(asyncio.Protocol):
    """One SMTP connection: engine + handler + transport."""

    def __init__(self, spec: ListenerSpec, loop: asyncio.AbstractEventLoop) -> None:
        self._spec = spec
        self._loop = loop
        self.engine = ServerConnection(spec.engine)
        self._transport: asyncio.Transport | None = None
        self._handler: SessionHandler | None = None
        self._ip = ""
        self.info: ConnectionInfo | None = None
        self._busy = False  # a decision is being awaited, or TLS is starting
        self._tls = spec.implicit_tls
        self._write_paused = False
        self._reading_paused = False
        self._closed = False
        self._draining = False
        self._progress = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self._ip = str(peer[0])
        refusal = self._spec.tracker.admit(self, self._ip)
        if refusal is not None:
            self._closed = True
            log.info("smtp connection refused ip=%s reason=%r", self._ip, refusal.text)
            transport.write(refusal.to_bytes())
            transport.close()
            return
        # TCP_NODELAY: asyncio and uvloop set it on every TCP transport already.
        tls_info: TLSInfo | None = None
        if self._spec.implicit_tls:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                tls_info = describe(ssl_object, tls=self._spec.tls)
        self.info = ConnectionInfo(
            client_ip=self._ip, client_port=int(peer[1]), local_ip=str(local[0]),
            local_port=int(local[1]), tls=tls_info,
        )
        self._handler = self._spec.handler_factory(self, self.info)
        self.engine.greet()
        self._flush()
        self._progress = self._loop.time()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.engine.receive_data(data)
        if not self._busy:
            self._pump()

    def eof_received(self) -> bool | None:
        if not self._closed:
            self.engine.receive_data(b"")
            if not self._busy:
                self._pump()
        # Plain TCP: stay half-open so that replies still owed (a 250 after an fsync the
        # client did not wait for) are written; the engine's ConnectionClosed closes us.
        # TLS transports cannot be half-open (asyncio ignores True there).
        return None if self._tls or self._closed else True

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._task is None:
            handler, self._handler = self._handler, None
            if handler is not None:
                handler.closed()
        # else: a running decision (an fsync) is left to finish; it calls closed() itself.

    def _release(self) -> None:
        """The connection is over for us: stop the timer, give back its connection slot."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._spec.tracker.release(self, self._ip)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # --- shutdown -------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Graceful stop: close now if between transactions, else after the current one."""
        self._draining = True
        if not self._busy and self.engine.state in _IDLE_STATES:
            self._close_with(SHUTTING_DOWN)

    def abort(self) -> None:
        """Close now (end of the shutdown grace period)."""
        if self._closed or self._transport is None:
            return
        if self.engine.state is not State.STARTTLS_PENDING:  # never plaintext into a handshake
            self.engine.close(SHUTTING_DOWN)
            self._flush()
        self._transport.abort()
        self._release()  # mid-STARTTLS our connection_lost() would not be called

    # --- internals --------------------------------------------------------------------------
    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        want_pause = self._busy or self._write_paused
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _flush(self) -> None:
        out = self.engine.data_to_send()
        if out and self._transport is not None and not self._closed:
            self._transport.write(out)

    def _close_with(self, reply: Reply) -> None:
        self.engine.close(reply)
        self._flush()
        self._finish()

    def _finish(self) -> None:
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()

    def _pump(self) -> None:
        """Run the engine until it needs data, a decision must be awaited, or it closed."""
        engine = self.engine
        handler = self._handler
        if handler is None:
            return
        progressed = False
        while True:
            event = engine.next_event()
            if event is NEED_DATA:
                break
            if (type(event) is not MessageChunk or b"\n" in event.data
                    or engine.state is not State.DATA):
                # A piece of a DATA line is no progress: the timeout is then a deadline per
                # line (Postfix smtpd_per_record_deadline), so a client trickling one byte at
                # a time is dropped too.
                progressed = True
            if event.decision:
                if isinstance(event, StartTLSRequested):
                    self._start_tls(event, handler)
                    return
                try:
                    result = handler.event(event)
                except Exception:  # a policy bug answers 451 and never kills the server
                    log.exception("smtp session policy failed ip=%s", self._ip)
                    result = LOCAL_ERROR
                if result is None or isinstance(result, Reply):
                    self._answer(result)
                    continue
                self._await_decision(result)
                return
            if isinstance(event, ConnectionClosed):
                self._flush()
                self._finish()
                return
            try:
                handler.event(event)
            except Exception:
                log.exception("smtp session policy failed ip=%s", self._ip)
        if progressed:
            self._progress = self._loop.time()
        if self._draining and engine.state in _IDLE_STATES:
            self._close_with(SHUTTING_DOWN)
            return
        self._flush()

    def _answer(self, result: Decision) -> None:
        if result is None:
            self.engine.accept()
        elif result.code < 400:
            self.engine.accept(result)
        else:
            self.engine.reject(result)

    def _await_decision(self, result: Awaitable[Decision]) -> None:
        self._flush()
        self._busy = True
        self._update_reading()
        self._task = self._loop.create_task(self._finish_decision(result))

    async def _finish_decision(self, result: Awaitable[Decision]) -> None:
        try:
            decision = await result
        except Exception:  # the policy failed: a local error, never a crash of the server
            log.exception("smtp session policy failed ip=%s", self._ip)
            decision = LOCAL_ERROR
        self._task = None
        if self._closed:
            handler, self._handler = self._handler, None
            if handler is not None:
                handler.closed()
            return
        self._answer(decision)
        self._busy = False
        self._progress = self._loop.time()
        self._update_reading()
        self._pump()

    def _start_tls(self, event: StartTLSRequested, handler: SessionHandler) -> None:
        tls = self._spec.tls
        verdict = handler.event(event)
        if tls is None or (isinstance(verdict, Reply) and verdict.code >= 400):
            self.engine.reject(verdict if isinstance(verdict, Reply) else Reply(
                code=454, status="4.7.0", text="TLS not available due to temporary reason"))
            self._pump()
            return
        self.engine.accept()
        self._flush()
        self._busy = True
        self._update_reading()
        self._task = self._loop.create_task(self._handshake(tls))

    async def _handshake(self, tls: ServerTLS) -> None:
        transport = self._transport
        assert transport is not None
        try:
            new = await self._loop.start_tls(
                transport, self, tls.context, server_side=True,
                ssl_handshake_timeout=self._spec.timeouts.tls_handshake,
            )
        except Exception as exc:
            log.info("smtp STARTTLS handshake failed ip=%s error=%r", self._ip, exc)
            self._task = None
            if not transport.is_closing():
                transport.abort()
            # The transport's protocol is asyncio's TLS protocol now: our connection_lost()
            # will not be called, so release the connection slot here.
            self._release()
            handler, self._handler = self._handler, None
            if handler is not None:
                handler.closed()
            return
        self._task = None
        if self._closed or new is None:
            self._release()
            handler, self._handler = self._handler, None
            if handler is not None:
                handler.closed()
            return
        self._transport = new
        self._tls = True
        self._reading_paused = False
        ssl_object = new.get_extra_info("ssl_object")
        info = describe(ssl_object, tls=tls)
        self.engine.tls_established(tls_version=info.version, cipher=info.cipher)
        if self._handler is not None:
            self._handler.tls_started(info)
        self._busy = False
        self._progress = self._loop.time()
        self._update_reading()
        self._pump()

    def _arm_timer(self) -> None:
        self._timer = self._loop.call_at(self._next_check(self._loop.time()), self._on_timer)

    def _next_check(self, now: float) -> float:
        # The state (hence the limit) may change before the deadline: look again no later
        # than the shortest limit of any state.
        limit = self._spec.timeouts.for_state(self.engine.state)
        return min(self._progress + limit, now + self._spec.timeouts.shortest)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        now = self._loop.time()
        limit = self._spec.timeouts.for_state(self.engine.state)
        if self._busy:
            self._progress = now  # our own work does not count against the client
        elif now - self._progress >= limit:
            log.info("smtp timeout ip=%s state=%s after=%.1fs", self._ip,
                     self.engine.state.value, now - self._progress)
            self._close_with(TIMEOUT_EXCEEDED)
            return
        self._timer = self._loop.call_at(self._next_check(now), self._on_timer)


async def start_listener(
    spec: ListenerSpec, *, sock: socket.socket, backlog: int = 511,
) -> asyncio.Server:
    """Serve SMTP on an already bound listening socket."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol] = lambda: SMTPServerProtocol(spec, loop)  # noqa: E731
    ssl_context: ssl.SSLContext | None = None
    if spec.implicit_tls:
        if spec.tls is None:
            raise ValueError("implicit TLS needs a ServerTLS")
        ssl_context = spec.tls.context
    return await loop.create_server(
        factory, sock=sock, ssl=ssl_context, backlog=backlog,
        ssl_handshake_timeout=spec.timeouts.tls_handshake if ssl_context else None,
    )
