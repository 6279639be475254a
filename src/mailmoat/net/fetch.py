"""Bounded HTTPS GET for mail policy documents (layer L3): MTA-STS policies, BIMI evidence.

:class:`Fetcher` does one thing: ``await fetcher.get(url, max_bytes=..., content_types=...)``
returns a :class:`FetchResult` (status 200, the media type, the body) or raises
:class:`FetchError` with a ``kind`` saying why not. The rules, from RFC 8461 §3.3 (MTA-STS)
and ARCHITECTURE.md ("httpx, no redirects, byte caps"):

* HTTPS only; the server certificate is verified (chain and name, RFC 6125) against the
  system store or a configured CA file (``cafile``, for tests and private CAs): §3.3 "the
  HTTPS endpoint MUST present a X.509 certificate that is valid for the "mta-sts" DNS-ID";
* redirects are never followed: §3.3 "HTTP 3xx redirects MUST NOT be followed" (a 3xx is a
  ``redirect`` error naming the Location);
* no HTTP cache, no proxies or credentials from the environment (``trust_env=False``), and
  ``Accept-Encoding: identity`` (no decompression bombs);
* the body is read while streaming and abandoned as soon as it passes ``max_bytes`` (a
  ``Content-Length`` above the cap is refused before reading);
* connect/read/write timeouts, plus one deadline for the whole request;
* an optional media-type check (§3.2: "senders SHOULD validate that the media type is
  "text/plain""; parameters are ignored).

Tests and special set-ups can map host names to addresses (``addresses={"mta-sts.example.com":
"127.0.0.1"}``, or ``("127.0.0.1", port)``): the TCP connection goes to the mapped address
while SNI and the certificate check still use the name in the URL. ``resolve`` (an async
function host -> addresses) replaces the system's name resolution the same way. A whole
``transport`` can be injected too.

SECURITY: everything the server sends is untrusted: the status line and headers are parsed by
httpx/h11 (bounded), the body is capped, the media type compared case-insensitively after
stripping parameters, and error messages quote at most a short, printable excerpt of any
server-controlled text.
"""

from __future__ import annotations

import asyncio
import ssl
import typing
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import httpcore
import httpx

from mailmoat import __version__, limits
from mailmoat.errors import MailmoatError
from mailmoat.net.tls import client_context

__all__ = ["FetchError", "FetchErrorKind", "FetchResult", "Fetcher"]

FetchErrorKind = Literal[
    "url", "redirect", "status", "too-large", "content-type", "tls", "timeout", "network",
]

USER_AGENT: Final = f"mailmoat/{__version__}"
#: Where to connect for a host name: an address (the URL's port is kept) or (address, port).
Address = str | tuple[str, int]
#: Name resolution for the TCP connection: host name -> addresses to try in order (e.g. from
#: the gateway's own :class:`~mailmoat.resolver.Resolver`, so ``--zone``/``--resolver`` apply).
AddressResolver = Callable[[str], Awaitable[Sequence[str]]]
#: Addresses tried per connection (RFC 8305 tries several; a handful bounds a hostile answer).
_MAX_ADDRESSES: Final = 4


class FetchError(MailmoatError):
    """The document could not be fetched; ``kind`` says why (``status`` carries the HTTP
    status when there was one)."""

    def __init__(self, message: str, *, kind: FetchErrorKind, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: FetchErrorKind = kind
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResult:
    url: str
    status: int
    media_type: str  # lower-case, parameters stripped ("" when absent)
    body: bytes


def _show(text: str, limit: int = 80) -> str:
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "")


class _MappedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that connects to mapped addresses, or to addresses found by
    an injected ``resolve`` function; TLS (SNI, certificate name) is started by httpcore with
    the URL's host name, so this changes only where the TCP connection goes."""

    def __init__(self, addresses: Mapping[str, Address], resolve: AddressResolver | None
                 ) -> None:
        self._addresses = {k.lower().rstrip("."): v for k, v in addresses.items()}
        self._resolve = resolve
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        key = host.lower().rstrip(".")
        mapped = self._addresses.get(key)
        candidates: list[str]
        if isinstance(mapped, tuple):
            candidates, port = [mapped[0]], mapped[1]
        elif mapped is not None:
            candidates = [mapped]
        elif self._resolve is not None:
            candidates = list(await self._resolve(key))[:_MAX_ADDRESSES]
            if not candidates:
                raise httpcore.ConnectError(f"{host}: no address")
        else:
            candidates = [host]
        last: Exception | None = None
        for target in candidates:
            try:
                return await self._inner.connect_tcp(target, port, timeout=timeout,
                                                     local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used")  # pragma: no cover

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)  # pragma: no cover


class _MappedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, context: ssl.SSLContext, addresses: Mapping[str, Address],
                 resolve: AddressResolver | None) -> None:
        super().__init__(verify=context, trust_env=False)
        # httpx has no public hook for name resolution; its transport is a thin shell around
        # an httpcore pool, which does take a network backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, network_backend=_MappedBackend(addresses, resolve),
        )


class Fetcher:
    """Bounded HTTPS GET (see the module docstring). Use as ``async with Fetcher() as f`` or
    call :meth:`aclose` when done; one fetcher may serve many requests."""

    def __init__(
        self,
        *,
        cafile: Path | str | None = None,
        timeout: float = limits.HTTP_FETCH_TIMEOUT,
        addresses: Mapping[str, Address] | None = None,
        resolve: AddressResolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        context = ssl_context or client_context(verify=True, cafile=cafile)
        if transport is None:
            transport = (_MappedTransport(context, addresses or {}, resolve)
                         if addresses or resolve
                         else httpx.AsyncHTTPTransport(verify=context, trust_env=False))
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,  # RFC 8461 §3.3
            trust_env=False,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                     "Cache-Control": "no-cache"},
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(
        self,
        url: str,
        *,
        max_bytes: int = limits.HTTP_FETCH_MAX_BYTES,
        content_types: Collection[str] | None = None,
    ) -> FetchResult:
        """GET ``url`` (https only). Raises :class:`FetchError`."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise FetchError(f"bad URL {_show(url)}: {exc}", kind="url") from None
        if parsed.scheme != "https" or not parsed.host:
            raise FetchError(f"refusing {_show(url)}: only https:// URLs are fetched",
                             kind="url")
        if parsed.userinfo:
            raise FetchError(f"refusing {_show(url)}: credentials in the URL", kind="url")
        try:
            async with asyncio.timeout(self.timeout):
                return await self._get(parsed, max_bytes, content_types)
        except TimeoutError:
            raise FetchError(f"{_show(url)}: no complete answer within {self.timeout:g} s",
                             kind="timeout") from None

    async def _get(
        self, url: httpx.URL, max_bytes: int, content_types: Collection[str] | None
    ) -> FetchResult:
        shown = _show(str(url))
        try:
            async with self._client.stream("GET", url) as response:
                status = response.status_code
                if 300 <= status < 400:
                    where = _show(response.headers.get("location", "?"))
                    raise FetchError(f"{shown}: HTTP {status} redirect to {where} refused "
                                     "(RFC 8461 §3.3: redirects MUST NOT be followed)",
                                     kind="redirect", status=status)
                if status != 200:
                    raise FetchError(f"{shown}: HTTP {status}", kind="status", status=status)
                media = response.headers.get("content-type", "")
                media = media.partition(";")[0].strip().lower()
                if content_types is not None and media not in content_types:
                    raise FetchError(
                        f"{shown}: media type {_show(media) or '(none)'!r}, expected "
                        f"{' or '.join(sorted(content_types))}", kind="content-type",
                        status=status)
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > max_bytes:
                    raise FetchError(f"{shown}: body of {length} octets exceeds the cap of "
                                     f"{max_bytes}", kind="too-large", status=status)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"{shown}: body exceeds the cap of {max_bytes} "
                                         "octets", kind="too-large", status=status)
                    chunks.append(chunk)
                return FetchResult(url=str(url), status=status, media_type=media,
                                   body=b"".join(chunks))
        except httpx.TimeoutException as exc:
            raise FetchError(f"{shown}: timed out ({type(exc).__name__})",
                             kind="timeout") from None
        except httpx.ConnectError as exc:
            kind: FetchErrorKind = "tls" if _is_tls(exc) else "network"
            raise FetchError(f"{shown}: {_describe(exc)}", kind=kind) from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{shown}: {_describe(exc)}", kind="network") from None
        except ssl.SSLError as exc:  # pragma: no cover - httpx wraps these as ConnectError
            raise FetchError(f"{shown}: TLS: {exc.reason or exc}", kind="tls") from None


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE" in str(seen).upper():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if _is_tls(exc):
        return f"TLS failure: {_show(text, 200)}"
    return _show(text, 200)
