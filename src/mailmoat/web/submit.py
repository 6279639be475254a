"""HTTP endpoint of the safe submission API for web forms (layer L5: HTTP glue only).

``POST /v1/messages`` with ``Authorization: Bearer <token>`` and a JSON body (see
:func:`mailmoat.gateway.submit_api.fields_from_json`) stores the message and answers
``202 {"id": "<spool id>", "message_id": "<...>"}``. Errors are JSON
``{"error": <code>, "field": <field or null>, "message": <text>}``:

====  ==========================================================================
400   ``bad_json`` (not JSON, not UTF-8, duplicate keys, nested too deep)
408   ``timeout`` (the body was not received within ``limits.SUBMIT_HTTP_BODY_TIMEOUT``)
401   ``unauthorized`` (missing or wrong bearer token; ``WWW-Authenticate: Bearer``)
413   ``too_large`` (request body over the cap, or the composed message over the size limit)
415   ``unsupported_media_type`` (the body is not ``application/json``)
422   a field is refused: ``header_injection``, ``invalid_address``, ``too_long``, ... with
      the field named, e.g. ``{"error": "header_injection", "field": "subject", ...}``
429   ``rate_limited`` (per client IP, or per token; ``Retry-After`` in seconds)
503   ``unavailable`` (the spool could not store the message; nothing was accepted)
====  ==========================================================================

SECURITY: everything in the request is untrusted. The client IP is rate-limited *before* the
token is checked (so token guessing is limited too); ``X-Forwarded-For`` is believed only
from a configured trusted proxy, and only its rightmost untrusted entry; the token is
compared in constant time (:class:`~mailmoat.gateway.submit_api.TokenAuth`); the body is
bounded (``Content-Length`` checked first, then counted while streaming) before JSON
parsing; JSON with duplicate keys is refused (two parsers could read different values); the
fields are then checked by :mod:`mailmoat.message.compose`. The server binds the configured
address (127.0.0.1 by default) and speaks plain HTTP: put TLS in front of it if it must
leave the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import socket
from collections.abc import Sequence
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailmoat import limits
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import FieldError, LimitExceeded, SpoolError
from mailmoat.gateway.config import Config
from mailmoat.gateway.submit_api import (
    SubmitRateLimiter,
    Submitter,
    TokenAuth,
    fields_from_json,
    submitter_from_config,
)
from mailmoat.spool import Spool

__all__ = [
    "SubmitAPIServer",
    "app_from_config",
    "client_address",
    "create_app",
    "start_from_config",
]

#: Headers uvicorn's h11 parser buffers for one request (the default is 16 KiB too).
_MAX_INCOMPLETE_EVENT: Final = 16 * 1024


def _error(status: int, code: str, message: str, *, field: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "field": field, "message": message},
                        status_code=status, headers=headers)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: X-Forwarded-For entries examined, from the right (each proxy hop appends one).
_MAX_FORWARDED_HOPS: Final = 10


def _trusted(ip: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


def client_address(peer: str, forwarded: str | None, trusted: Sequence[Network]) -> str | None:
    """The client IP to rate-limit: the peer itself, unless the peer is a trusted proxy; then
    the rightmost X-Forwarded-For entry that is not itself a trusted proxy (entries further
    left were written by the client and prove nothing). ``None``: a trusted peer that named
    no client (the request is limited per token only)."""
    if not _trusted(peer, trusted):
        return peer
    if not forwarded:
        return None
    for item in reversed(forwarded.split(",")[-_MAX_FORWARDED_HOPS:]):
        ip = item.strip()
        if ip and not _trusted(ip, trusted):
            return ip[:64]
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def create_app(
    *,
    submitter: Submitter,
    auth: TokenAuth,
    limiter: SubmitRateLimiter,
    max_body: int = limits.SUBMIT_HTTP_BODY_MAX,
    trusted_proxies: Sequence[Network] = (),
    body_timeout: float = limits.SUBMIT_HTTP_BODY_TIMEOUT,
) -> Starlette:
    """The ASGI app of the endpoint (tests drive it with httpx's ASGI transport).

    ``trusted_proxies``: peers whose ``X-Forwarded-For`` names the client to rate-limit
    (see :func:`client_address`).
    """

    async def post_message(request: Request) -> JSONResponse:
        peer = request.client.host if request.client else "unknown"
        client = client_address(peer, request.headers.get("x-forwarded-for"), trusted_proxies)
        if client is not None:
            wait = limiter.allow_ip(client)
            if wait > 0:
                return _error(429, "rate_limited", "too many requests from this address",
                              headers={"Retry-After": str(math.ceil(wait))})
        ip = client or peer
        name = auth.verify(request.headers.get("authorization"))
        if name is None:
            return _error(401, "unauthorized", "a valid bearer token is required",
                          headers={"WWW-Authenticate": 'Bearer realm="mailmoat"'})
        wait = limiter.allow_token(name)
        if wait > 0:
            return _error(429, "rate_limited", "too many requests for this token",
                          headers={"Retry-After": str(math.ceil(wait))})
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return _error(415, "unsupported_media_type", "send the fields as application/json")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            return _error(413, "too_large", f"the request body is over {max_body} octets")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_body:
                        return _error(413, "too_large",
                                      f"the request body is over {max_body} octets")
                    chunks.append(chunk)
        except TimeoutError:
            return _error(408, "timeout", f"the body took longer than {body_timeout:g} s")
        try:
            data = json.loads(b"".join(chunks).decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:
            return _error(400, "bad_json", f"the body is not a JSON object: {str(exc)[:200]}")
        try:
            fields = fields_from_json(data)
            result = await submitter.submit(fields, client_ip=ip, auth_user=f"api:{name}")
        except FieldError as exc:
            return _error(422, exc.code, exc.reason, field=exc.field)
        except LimitExceeded as exc:
            return _error(413, "too_large", str(exc))
        except SpoolError:
            return _error(503, "unavailable", "the message could not be stored; try again later")
        return JSONResponse({"id": result.id, "message_id": result.message_id}, status_code=202)

    return Starlette(routes=[Route("/v1/messages", post_message, methods=["POST"])])


def app_from_config(config: Config, spool: Spool, *, clock: Clock = SYSTEM_CLOCK) -> Starlette:
    """The app for ``[submission_api]`` of a :class:`mailmoat.gateway.config.Config`."""
    api = config.submission_api
    return create_app(
        submitter=submitter_from_config(config, spool, clock=clock),
        auth=TokenAuth(api.tokens),
        limiter=SubmitRateLimiter(token_burst=api.token_burst, token_refill=api.token_refill,
                                  ip_burst=api.ip_burst, ip_refill=api.ip_refill, clock=clock),
        max_body=api.max_message_size * 4 // 3 + 1024 * 1024,
        trusted_proxies=api.trusted_proxies,
    )


class SubmitAPIServer:
    """The endpoint served by uvicorn on ``host:port`` (port 0: any free port) inside the
    caller's event loop, without uvicorn's own signal handling (the gateway owns signals)."""

    def __init__(self, app: Starlette, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and start serving; return the bound port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        sock.setblocking(False)
        config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", access_log=False,
            server_header=False, timeout_keep_alive=5,
            limit_concurrency=limits.SUBMIT_HTTP_MAX_CONNECTIONS,
            h11_max_incomplete_event_size=_MAX_INCOMPLETE_EVENT,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._sock = server, sock
        self._task = asyncio.create_task(server.main_loop())
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop accepting, finish open requests, close."""
        if self._server is None or self._sock is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._server.shutdown(sockets=[self._sock])
        self._sock.close()
        self._server = self._sock = self._task = None


async def start_from_config(
    config: Config, spool: Spool, *, clock: Clock = SYSTEM_CLOCK
) -> SubmitAPIServer | None:
    """Start the endpoint if ``[submission_api] enabled = true`` (else return None); the
    gateway's ``serve`` calls this next to its SMTP listeners and ``await server.stop()``
    at shutdown."""
    api = config.submission_api
    if not api.enabled:
        return None
    server = SubmitAPIServer(app_from_config(config, spool, clock=clock), host=api.address,
                             port=api.port)
    await server.start()
    return server
