"""web.submit: the HTTP endpoint of the submission API (auth, rate limits, caps, errors), the
Python API behind it (spooling, DKIM signing) and its [submission_api] configuration."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import ipaddress
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailmoat.auth.dkim import key_record
from mailmoat.clock import FixedClock
from mailmoat.errors import ConfigError, FieldError
from mailmoat.gateway.config import parse_config
from mailmoat.gateway.submit_api import (
    DKIMKey,
    SubmitPolicy,
    SubmitRateLimiter,
    Submitter,
    TokenAuth,
    fields_from_json,
    submit,
)
from mailmoat.message.compose import MessageFields
from mailmoat.spool import Spool
from mailmoat.web.submit import (
    SubmitAPIServer,
    app_from_config,
    client_address,
    create_app,
    start_from_config,
)

TOKEN = "s3cret-" + "x" * 33
NOW = 1_700_000_000.0
URL = "/v1/messages"


def request_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "Shop <shop@example.org>",
        "to": ["alice@example.net"],
        "bcc": ["audit@example.org"],
        "reply_to": "Visitor <visitor@example.com>",
        "subject": "Contact form",
        "text": "Hello from the form",
    }
    body.update(changes)
    return body


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    spool = Spool(tmp_path / "spool", fsync=False, group_commit=False)
    yield spool
    spool.close()


def submitter(spool: Spool, **policy: Any) -> Submitter:
    policy.setdefault("allowed_from_domains", ("example.org",))
    return Submitter(spool=spool, policy=SubmitPolicy(**policy), clock=FixedClock(wall=NOW),
                     randbytes=lambda n: b"\x05" * n)


def client_for(app: Any, ip: str = "192.0.2.10", token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000)),
                             base_url="http://mailmoat.test", headers=headers)


@pytest.fixture
async def client(spool: Spool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(submitter=submitter(spool), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter(clock=FixedClock()), max_body=64 * 1024)
    async with client_for(app) as c:
        yield c


async def test_accepted_message_is_spooled(spool: Spool, client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=request_body())
    assert response.status_code == 202
    body = response.json()
    assert spool.list() == [body["id"]]
    stored = spool.get(body["id"])
    env = stored.envelope
    assert env.mail_from == "shop@example.org"
    assert [r.address for r in env.rcpts] == ["alice@example.net", "audit@example.org"]
    assert env.auth_user == "api:site"
    assert env.client_ip == "192.0.2.10"
    assert env.received_at == NOW
    msg = email.message_from_bytes(spool.read_message(body["id"]), policy=email.policy.default)
    assert msg["Message-ID"] == body["message_id"]
    assert msg["Reply-To"].addresses[0].addr_spec == "visitor@example.com"
    assert "Bcc" not in msg
    assert msg.get_content().replace("\r\n", "\n") == "Hello from the form\n"


async def test_attachment_over_http(spool: Spool, client: httpx.AsyncClient) -> None:
    blob = bytes(range(256)) * 3
    response = await client.post(URL, json=request_body(attachments=[
        {"filename": "données.bin", "content_type": "application/octet-stream",
         "content": base64.b64encode(blob).decode()}]))
    assert response.status_code == 202
    msg = email.message_from_bytes(spool.read_message(response.json()["id"]),
                                   policy=email.policy.default)
    part = list(msg.iter_parts())[1]
    assert part.get_filename() == "données.bin"
    assert part.get_payload(decode=True) == blob


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}",
                                           f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
                                           f"Bearer {TOKEN.upper()}", "Bearer \u00e9".encode()])
async def test_bad_token_is_401(spool: Spool, authorization: str | bytes | None) -> None:
    app = create_app(submitter=submitter(spool), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter(clock=FixedClock()))
    async with client_for(app, token=None) as c:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await c.post(URL, json=request_body(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert spool.list() == []


def test_token_auth_names_the_token() -> None:
    auth = TokenAuth({"a": "A" * 32, "b": "B" * 32})
    assert auth.verify("Bearer " + "B" * 32) == "b"
    assert auth.verify("bearer " + "A" * 32) == "a"  # RFC 7235 §2.1: scheme is case-insensitive
    assert auth.verify("Bearer " + "C" * 32) is None
    assert TokenAuth({}).verify("Bearer x") is None


async def test_rate_limit_per_ip_counts_failed_auth_too(spool: Spool) -> None:
    clock = FixedClock()
    app = create_app(submitter=submitter(spool), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter(ip_burst=3, ip_refill=0.5, clock=clock))
    async with client_for(app, token="wrong" * 8) as bad:
        for _ in range(3):
            assert (await bad.post(URL, json=request_body())).status_code == 401
        limited = await bad.post(URL, json=request_body())
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert limited.headers["Retry-After"] == "2"  # 1 token at 0.5/s
    async with client_for(app) as good:
        assert (await good.post(URL, json=request_body())).status_code == 429  # same IP
        clock.advance(2.0)
        assert (await good.post(URL, json=request_body())).status_code == 202
    async with client_for(app, ip="198.51.100.7") as other:
        assert (await other.post(URL, json=request_body())).status_code == 202


async def test_ipv6_clients_limited_per_64(spool: Spool) -> None:
    app = create_app(submitter=submitter(spool), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter(ip_burst=1, clock=FixedClock()))
    async with client_for(app, ip="2001:db8:1:2::1") as a:
        assert (await a.post(URL, json=request_body())).status_code == 202
    async with client_for(app, ip="2001:db8:1:2::ffff") as b:
        assert (await b.post(URL, json=request_body())).status_code == 429


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("192.0.2.1", None, "192.0.2.1"),
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # untrusted peer: header ignored
        ("127.0.0.1", None, None),
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "1.2.3.4, 203.0.113.9", "203.0.113.9"),  # left part: client-written
        ("127.0.0.1", "203.0.113.9, 127.0.0.2", "203.0.113.9"),  # skip trusted hops
        ("::1", "2001:db8::5", "2001:db8::5"),
        ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "127.0.0.3", None),
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str | None) -> None:
    assert client_address(peer, forwarded, LOOPBACK) == expected


async def test_trusted_proxy_forwarded_for(spool: Spool) -> None:
    app = create_app(submitter=submitter(spool), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter(ip_burst=1, clock=FixedClock()),
                     trusted_proxies=LOOPBACK)
    async with client_for(app, ip="127.0.0.1") as local:
        # a local backend that names no client is limited per token only
        for _ in range(3):
            assert (await local.post(URL, json=request_body())).status_code == 202
        visitor = {"X-Forwarded-For": "203.0.113.9"}
        assert (await local.post(URL, json=request_body(), headers=visitor)).status_code == 202
        again = await local.post(URL, json=request_body(), headers=visitor)
        assert again.status_code == 429
        other = {"X-Forwarded-For": "203.0.113.10"}
        assert (await local.post(URL, json=request_body(), headers=other)).status_code == 202
    stored = [spool.get(i).envelope.client_ip for i in spool.list()]
    assert "203.0.113.9" in stored
    async with client_for(app, ip="192.0.2.50") as remote:  # forged header is ignored
        assert (await remote.post(URL, json=request_body(),
                                  headers={"X-Forwarded-For": "1.1.1.1"})).status_code == 202
        assert (await remote.post(URL, json=request_body(),
                                  headers={"X-Forwarded-For": "1.1.1.2"})).status_code == 429


async def test_rate_limit_per_token(spool: Spool) -> None:
    clock = FixedClock()
    app = create_app(submitter=submitter(spool), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter(token_burst=2, token_refill=0.1, clock=clock))
    for i in range(2):
        async with client_for(app, ip=f"192.0.2.{i + 1}") as c:
            assert (await c.post(URL, json=request_body())).status_code == 202
    async with client_for(app, ip="192.0.2.99") as c:
        response = await c.post(URL, json=request_body())
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "10"
        clock.advance(10)
        assert (await c.post(URL, json=request_body())).status_code == 202
    assert len(spool.list()) == 3


async def test_body_over_cap_is_413(spool: Spool, client: httpx.AsyncClient) -> None:
    big = request_body(text="x" * 70_000)
    response = await client.post(URL, json=big)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"text": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    response = await client.post(URL, content=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert spool.list() == []


async def test_slow_body_is_408(spool: Spool) -> None:
    app = create_app(submitter=submitter(spool), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter(), body_timeout=0.2)

    async def slow() -> AsyncIterator[bytes]:
        yield b'{"subject": "'
        await asyncio.sleep(1.0)
        yield b'"}'

    async with client_for(app) as c:
        response = await c.post(URL, content=slow(), headers={"Content-Type": "application/json"})
    assert response.status_code == 408
    assert response.json()["error"] == "timeout"
    assert spool.list() == []


async def test_composed_message_over_limit_is_413(spool: Spool) -> None:
    app = create_app(submitter=submitter(spool, max_message_size=4000),
                     auth=TokenAuth({"site": TOKEN}), limiter=SubmitRateLimiter())
    async with client_for(app) as c:
        response = await c.post(URL, json=request_body(attachments=[
            {"filename": "a.bin", "content": base64.b64encode(b"z" * 5000).decode()}]))
    assert response.status_code == 413
    assert spool.list() == []


@pytest.mark.parametrize(
    ("content", "ctype", "status", "error"),
    [
        (b"not json", "application/json", 400, "bad_json"),
        (b'{"subject": "a", "subject": "b"}', "application/json", 400, "bad_json"),
        (b"[" * 100_00 + b"]" * 100_00, "application/json", 400, "bad_json"),
        (b"\xff\xfe", "application/json", 400, "bad_json"),
        (b"[]", "application/json", 422, "invalid_type"),
        (b'{"from": "a@example.org"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"from": "a@example.org"}', "application/x-www-form-urlencoded", 415,
         "unsupported_media_type"),
    ],
)
async def test_malformed_requests(client: httpx.AsyncClient, spool: Spool, content: bytes,
                                  ctype: str, status: int, error: str) -> None:
    response = await client.post(URL, content=content, headers={"Content-Type": ctype})
    assert response.status_code == status
    assert response.json()["error"] == error
    assert spool.list() == []


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"sender": "x"}, "sender", "unknown_field"),
        ({"from": None}, "from", "missing"),
        ({"to": "a@example.net, b@example.net"}, "to[0]", "header_injection"),
        ({"to": 5}, "to", "invalid_type"),
        ({"to": [5]}, "to[0]", "invalid_type"),
        ({"subject": ["x"]}, "subject", "invalid_type"),
        ({"attachments": [{"filename": "a", "content": "!!!"}]}, "attachments[0].content",
         "invalid_base64"),
        ({"attachments": [{"filename": "a"}]}, "attachments[0].content", "missing"),
        ({"attachments": [{"filename": "a", "content": "", "size": 1}]},
         "attachments[0].size", "unknown_field"),
        ({"attachments": "x"}, "attachments", "invalid_type"),
        ({"headers": [["X-A"]]}, "headers[0]", "invalid_type"),
        ({"headers": {"X-A": 1}}, "headers[0].value", "invalid_type"),
        ({"from": "Mallory <ceo@bank.example>"}, "from", "from_not_allowed"),
        ({"to": [], "bcc": []}, "to", "missing"),
        ({"to": ["not-an-address"]}, "to[0]", "invalid_address"),
    ],
)
async def test_field_errors_are_422(client: httpx.AsyncClient, spool: Spool,
                                    changes: dict[str, Any], field: str, error: str) -> None:
    response = await client.post(URL, json=request_body(**changes))
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["error"], body["field"]) == (error, field)
    assert isinstance(body["message"], str)
    assert body["message"]
    assert spool.list() == []


async def test_spool_failure_is_503(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    broken = Spool(blocker / "spool", fsync=False, group_commit=False)
    app = create_app(submitter=submitter(broken), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter())
    async with client_for(app) as c:
        response = await c.post(URL, json=request_body())
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


async def test_only_post(client: httpx.AsyncClient) -> None:
    assert (await client.get(URL)).status_code == 405
    assert (await client.post("/other", json={})).status_code == 404


# --- Python API, DKIM ---------------------------------------------------------------------------


async def test_python_submit_returns_queue_id(spool: Spool) -> None:
    queue_id = await submit(MessageFields(from_="a@example.org", to=["b@example.net"],
                                          subject="hi", text="x"),
                            spool=spool, clock=FixedClock(wall=NOW))
    assert spool.list() == [queue_id]


async def test_from_domain_policy(spool: Spool) -> None:
    with pytest.raises(FieldError) as err:
        await submitter(spool).submit(MessageFields(from_="a@evil.example", to=["b@x.example"]))
    assert err.value.code == "from_not_allowed"
    assert spool.list() == []


def _dkimpy_verifies(message: bytes, records: dict[bytes, str], idx: int = 0) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records[name].encode()
    try:
        return bool(dkim.DKIM(message).verify(idx=idx, dnsfunc=dns))
    except dkim.ValidationError:  # dkimpy raises on a body hash mismatch
        return False


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_dkim_signed_when_key_configured(spool: Spool, kind: str) -> None:
    key: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
                else ed25519.Ed25519PrivateKey.generate())
    keys = (DKIMKey(domain="example.org", selector="web", key=key),
            DKIMKey(domain="other.example", selector="no", key=key))
    sub = submitter(spool, dkim_keys=keys, allowed_from_domains=("example.org",
                                                                 "news.example.org"))
    result = await sub.submit(MessageFields(
        from_="Zoë <zoe@news.example.org>", to=["b@example.net"], subject="Grüße",
        text="signed body\n", html="<p>signed</p>"))
    assert result.signed_by == "example.org"
    data = spool.read_message(result.id)
    assert data.startswith(b"DKIM-Signature:")
    # independent verifier (dkimpy) with the published key record
    assert _dkimpy_verifies(data, {b"web._domainkey.example.org.": key_record(key)})
    tampered = data.replace(b"signed body", b"signed bodY", 1)
    assert tampered != data
    assert not _dkimpy_verifies(tampered,
                                {b"web._domainkey.example.org.": key_record(key)})


async def test_not_signed_without_matching_key(spool: Spool) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    sub = submitter(spool, dkim_keys=(DKIMKey(domain="other.example", selector="s", key=key),))
    result = await sub.submit(MessageFields(from_="a@example.org", to=["b@example.net"]))
    assert result.signed_by is None
    assert not spool.read_message(result.id).startswith(b"DKIM-Signature:")


def test_fields_from_json_header_forms() -> None:
    a = fields_from_json({"from": "a@example.org", "headers": {"X-A": "1"}})
    b = fields_from_json({"from": "a@example.org", "headers": [["X-A", "1"]]})
    assert a.headers == b.headers == (("X-A", "1"),)


# --- configuration and a real server ---------------------------------------------------------

BASE_CONFIG = """
[[listener]]
port = 2525
mode = "plain"
role = "mx"

[relay]
local_domains = ["example.org"]
"""


def test_config_section(tmp_path: Path) -> None:
    config = parse_config(BASE_CONFIG, base_dir=tmp_path)
    assert config.submission_api.enabled is False
    assert config.submission_api.address == "127.0.0.1"
    text = BASE_CONFIG + f"""
[submission_api]
enabled = true
port = 0
tokens = {{ site = "{TOKEN}" }}
dkim = [ {{ domain = "Example.ORG", selector = "web", key = "keys/web.pem" }} ]
"""
    config = parse_config(text, base_dir=tmp_path)
    api = config.submission_api
    assert api.tokens == {"site": TOKEN}
    assert api.dkim[0].domain == "example.org"
    assert api.dkim[0].key == tmp_path / "keys" / "web.pem"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("enabled = true", "submission_api.tokens"),
        ('tokens = { a = "short" }', "submission_api.tokens.a"),
        ('address = "localhost"', "submission_api.address"),
        ("surprise = 1", "submission_api.surprise"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, section: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE_CONFIG + "\n[submission_api]\n" + section + "\n", base_dir=tmp_path)
    assert err.value.key == key


async def test_real_server_from_config(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "web.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    config = parse_config(BASE_CONFIG + f"""
[submission_api]
enabled = true
port = 0
tokens = {{ site = "{TOKEN}" }}
dkim = [ {{ domain = "example.org", selector = "web", key = "web.pem" }} ]
""", base_dir=tmp_path)
    spool = Spool(tmp_path / "spool", fsync=False, group_commit=False)
    server = await start_from_config(config, spool)
    assert isinstance(server, SubmitAPIServer)
    port = server.port
    assert port != 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            response = await c.post(URL, json=request_body(),
                                    headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 202, response.text
            bad = await c.post(URL, content=json.dumps(request_body(subject="a\r\nBcc: x")),
                               headers={"Authorization": f"Bearer {TOKEN}",
                                        "Content-Type": "application/json"})
            assert bad.status_code == 422
            assert bad.json()["field"] == "subject"
    finally:
        await server.stop()
    data = spool.read_message(response.json()["id"])
    assert _dkimpy_verifies(data, {b"web._domainkey.example.org.": key_record(key)})
    assert len(spool.list()) == 1
    spool.close()


def test_missing_dkim_key_file_is_config_error(tmp_path: Path) -> None:
    config = parse_config(BASE_CONFIG + f"""
[submission_api]
tokens = {{ site = "{TOKEN}" }}
dkim = [ {{ domain = "example.org", selector = "web", key = "absent.pem" }} ]
""", base_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        app_from_config(config, Spool(tmp_path / "s", fsync=False))
    assert err.value.key == "submission_api.dkim[0].key"


async def test_disabled_by_default(tmp_path: Path) -> None:
    config = parse_config(BASE_CONFIG, base_dir=tmp_path)
    assert await start_from_config(config, Spool(tmp_path / "s", fsync=False)) is None
