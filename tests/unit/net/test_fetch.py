"""net.fetch and net.mtasts against a real HTTPS server on 127.0.0.1 with a trustme CA.

The server is Python's http.server in a thread, TLS from a test CA; the policy host name
``mta-sts.<domain>`` is mapped to 127.0.0.1 by the fetcher while SNI and the certificate check
use the real name. Expected outcomes are RFC 8461 §3.3's rules (no redirects, text/plain,
certificate valid for the mta-sts name) and §5.1's cache rules.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from mailmoat import limits
from mailmoat.auth.mtasts import Mode, PolicyCache
from mailmoat.clock import FixedClock
from mailmoat.net.fetch import Fetcher, FetchError
from mailmoat.net.mtasts import (
    MTASTSClient,
    PersistentPolicyCache,
    fetch_policy,
    policy_url,
)
from mailmoat.resolver import FakeResolver

pytestmark = pytest.mark.timeout(60)

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"
PATH = "/.well-known/mta-sts.txt"


@dataclass
class Route:
    status: int = 200
    body: bytes = POLICY
    content_type: str | None = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    length: bool = True  # send Content-Length (else close-delimited)
    stall: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path, Route(status=404, body=b"not found"))
        if route.stall:
            time.sleep(route.stall)
        self.send_response(route.status)
        if route.content_type:
            self.send_header("Content-Type", route.content_type)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if route.length:
            self.send_header("Content-Length", str(len(route.body)))
        else:
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(route.body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    requests: list[str]


@dataclass
class HTTPS:
    port: int
    cafile: Path
    routes: dict[str, Route]
    requests: list[str]

    def fetcher(self, *names: str, timeout: float = 10.0, cafile: Path | None = None
                ) -> Fetcher:
        return Fetcher(cafile=cafile or self.cafile, timeout=timeout,
                       addresses=dict.fromkeys(names, ("127.0.0.1", self.port)))


def serve_https(tmp: Path, hostnames: tuple[str, ...]) -> Iterator[HTTPS]:
    ca = trustme.CA()
    cert = ca.issue_cert(*hostnames)
    cafile = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.routes = {}
    server.requests = []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield HTTPS(port=server.server_address[1], cafile=cafile, routes=server.routes,
                    requests=server.requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def https(tmp_path: Path) -> Iterator[HTTPS]:
    yield from serve_https(tmp_path, ("mta-sts.example.com", "mta-sts.other.example"))


URL = "https://mta-sts.example.com" + PATH


# ------------------------------------------------------------------------------- fetch ---

async def test_fetch_ok_with_name_mapping(https: HTTPS) -> None:
    https.routes[PATH] = Route(content_type="text/plain; charset=utf-8")
    async with https.fetcher("mta-sts.example.com") as fetcher:
        result = await fetcher.get(URL, content_types={"text/plain"})
    assert result.status == 200
    assert result.media_type == "text/plain"
    assert result.body == POLICY


async def test_redirect_is_refused(https: HTTPS) -> None:
    https.routes[PATH] = Route(status=301, body=b"", headers={"Location": "/elsewhere"})
    https.routes["/elsewhere"] = Route()
    async with https.fetcher("mta-sts.example.com") as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get(URL)
    assert caught.value.kind == "redirect"
    assert caught.value.status == 301
    assert https.requests == [PATH]  # the Location was never asked


@pytest.mark.parametrize("length", [True, False])
async def test_oversized_body_is_refused(https: HTTPS, length: bool) -> None:
    https.routes[PATH] = Route(body=b"x" * 5000, length=length)
    async with https.fetcher("mta-sts.example.com") as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get(URL, max_bytes=4096)
    assert caught.value.kind == "too-large"


async def test_wrong_content_type_is_refused(https: HTTPS) -> None:
    https.routes[PATH] = Route(content_type="text/html")
    async with https.fetcher("mta-sts.example.com") as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get(URL, content_types={"text/plain"})
    assert caught.value.kind == "content-type"


async def test_http_status_and_scheme(https: HTTPS) -> None:
    async with https.fetcher("mta-sts.example.com") as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get("https://mta-sts.example.com/missing")
        assert (caught.value.kind, caught.value.status) == ("status", 404)
        with pytest.raises(FetchError) as caught:
            await fetcher.get("http://mta-sts.example.com" + PATH)
        assert caught.value.kind == "url"


async def test_certificate_name_mismatch(https: HTTPS) -> None:
    # the server's certificate has no name "mta-sts.wrong.example"
    async with https.fetcher("mta-sts.wrong.example") as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get("https://mta-sts.wrong.example" + PATH)
    assert caught.value.kind == "tls"


async def test_untrusted_ca(https: HTTPS, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with https.fetcher("mta-sts.example.com", cafile=other) as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get(URL)
    assert caught.value.kind == "tls"


async def test_timeout(https: HTTPS) -> None:
    https.routes[PATH] = Route(stall=2.0)
    async with https.fetcher("mta-sts.example.com", timeout=0.5) as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get(URL)
    assert caught.value.kind == "timeout"


# ------------------------------------------------------------------------- net.mtasts ---

def test_policy_url() -> None:
    # RFC 8461 §3.3
    assert policy_url("Example.COM.") == "https://mta-sts.example.com/.well-known/mta-sts.txt"


async def test_fetch_policy_values(https: HTTPS) -> None:
    https.routes[PATH] = Route()
    async with https.fetcher("mta-sts.example.com") as fetcher:
        good = await fetch_policy(fetcher, "example.com")
        assert good.policy is not None
        assert good.policy.mode is Mode.ENFORCE
        https.routes[PATH] = Route(body=b"version: STSv1\nmode: bogus\n")
        bad = await fetch_policy(fetcher, "example.com")
        assert bad.policy is None
        assert bad.error_kind == "syntax"
        https.routes[PATH] = Route(body=b"x" * (limits.MTASTS_POLICY_MAX + 1), length=False)
        big = await fetch_policy(fetcher, "example.com")
        assert big.error_kind == "too-large"


async def test_client_cache_and_restart(https: HTTPS, tmp_path: Path) -> None:
    https.routes[PATH] = Route()
    fake = FakeResolver()
    fake.add_txt("_mta-sts.example.com", "v=STSv1; id=1")
    clock = FixedClock(wall=1_000_000.0)
    path = tmp_path / "cache" / "mta-sts.json"
    async with https.fetcher("mta-sts.example.com") as fetcher:
        client = MTASTSClient(fake, fetcher, PersistentPolicyCache(path, clock))
        first = await client.policy_for("example.com")
        assert first.source == "fetched"
        assert first.policy is not None
        second = await client.policy_for("example.com")
        assert second.source == "cache"
        assert https.requests == [PATH]  # same id: no second fetch
        # the id changes: refetch (§3.1 / §5.1)
        fake = FakeResolver()
        fake.add_txt("_mta-sts.example.com", "v=STSv1; id=2")
        https.routes[PATH] = Route(body=POLICY.replace(b"enforce", b"testing"))
        client = MTASTSClient(fake, fetcher, client.cache)
        third = await client.policy_for("example.com")
        assert third.source == "fetched"
        assert third.policy is not None
        assert third.policy.mode is Mode.TESTING
        assert len(https.requests) == 2
        # restart: a new cache object reads the file; the TXT record is gone, the cached
        # fresh policy applies (§5.1)
        restarted = PersistentPolicyCache(path, clock)
        assert len(restarted) == 1
        client = MTASTSClient(FakeResolver(), fetcher, restarted)
        fourth = await client.policy_for("example.com")
        assert fourth.source == "cache"
        assert fourth.policy == third.policy
        # the policy server fails and the cache expired: no policy
        clock.advance(86400)
        https.routes[PATH] = Route(status=500, body=b"")
        client = MTASTSClient(fake, fetcher, restarted)
        fifth = await client.policy_for("example.com")
        assert fifth.source == "none"
        assert fifth.fetch is not None
        assert json.loads(path.read_text())["entries"] == []


def test_damaged_cache_file(tmp_path: Path) -> None:
    clock = FixedClock(wall=0.0)
    path = tmp_path / "c.json"
    path.write_text("{not json")
    assert len(PersistentPolicyCache(path, clock)) == 0
    good = {"domain": "example.com", "id": "1", "fetched_at": 0,
            "policy": POLICY.decode()}
    path.write_text(json.dumps({"entries": [good, {"domain": "x", "id": "-"}, 5]}))
    cache = PersistentPolicyCache(path, clock)
    assert len(cache) == 1
    assert cache.skipped == 2
    assert isinstance(cache, PolicyCache)


async def test_single_flight(https: HTTPS, tmp_path: Path) -> None:
    import asyncio

    https.routes[PATH] = Route(stall=0.3)
    fake = FakeResolver()
    fake.add_txt("_mta-sts.example.com", "v=STSv1; id=7")
    async with https.fetcher("mta-sts.example.com") as fetcher:
        client = MTASTSClient(fake, fetcher, PolicyCache(FixedClock(wall=0.0)))
        outcomes = await asyncio.gather(*(client.policy_for("example.com") for _ in range(5)))
    assert {o.source for o in outcomes} == {"fetched"}
    assert https.requests == [PATH]  # five concurrent deliveries, one HTTPS GET
