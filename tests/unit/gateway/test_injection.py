"""Header injection through the web-form submission API (issue #7, "Injection").

Every payload of :data:`PAYLOADS` (CR, LF, CRLF, folded continuations, NUL and other controls,
Unicode line separators, RFC 2047 encoded-words, percent- and HTML-encoded line breaks, bidi
overrides, ...) is put into every header-bound field — From, To (first and second entry), Cc,
Bcc, Reply-To, both as the address and inside the display name, the Subject, an attachment's
file name and content type, an extra header's name and value — and submitted through the
Python API and through the HTTP endpoint. Each attempt must be refused as
``header_injection`` naming exactly that field, and nothing may reach the spool.

The SMTP wire side (smuggling, bare LF in DATA) is covered by the engine's own tests.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailmoat.clock import FixedClock
from mailmoat.errors import FieldError, HeaderInjectionError
from mailmoat.gateway.submit_api import (
    SubmitPolicy,
    SubmitRateLimiter,
    Submitter,
    TokenAuth,
)
from mailmoat.message.compose import Attachment, MessageFields
from mailmoat.spool import Spool
from mailmoat.web.submit import create_app

TOKEN = "t" * 40
NOW = 1_700_000_000.0

#: (id, payload). At least 30 distinct ways to break out of a header field.
PAYLOADS: list[tuple[str, str]] = [
    ("crlf-bcc", "\r\nBcc: victim@evil.example"),
    ("lf-bcc", "\nBcc: victim@evil.example"),
    ("cr-bcc", "\rBcc: victim@evil.example"),
    ("crlf-crlf-body", "\r\n\r\nInjected body"),
    ("lf-lf-body", "\n\nInjected body"),
    ("crlf-to", "\r\nTo: victim@evil.example"),
    ("crlf-content-type", "\r\nContent-Type: text/html"),
    ("folded-sp", "\r\n Bcc: victim@evil.example"),
    ("folded-tab", "\r\n\tBcc: victim@evil.example"),
    ("lf-folded-sp", "\n X-Injected: yes"),
    ("cr-lf-split", "\r\r\nBcc: victim@evil.example"),
    ("nul", "\x00"),
    ("nul-crlf", "\x00\r\nBcc: victim@evil.example"),
    ("tab", "\tBcc"),
    ("vertical-tab", "\x0bBcc: victim@evil.example"),
    ("form-feed", "\x0cBcc: victim@evil.example"),
    ("file-separator", "\x1cBcc: victim@evil.example"),
    ("group-separator", "\x1dBcc: victim@evil.example"),
    ("record-separator", "\x1eBcc: victim@evil.example"),
    ("escape", "\x1b[2J"),
    ("backspace", "\x08\x08\x08"),
    ("delete", "\x7f"),
    ("nel", "\x85Bcc: victim@evil.example"),
    ("c1-csi", "\x9b31m"),
    ("line-separator", "\u2028Bcc: victim@evil.example"),
    ("paragraph-separator", "\u2029Bcc: victim@evil.example"),
    ("rtl-override", "\u202egpj.exe"),
    ("bidi-isolate", "\u2066evil\u2069"),
    ("bom", "\ufeff"),
    ("lone-surrogate", "\ud800"),
    ("ew-q-crlf", "=?utf-8?Q?=0D=0ABcc:_victim@evil.example?="),
    ("ew-b-crlf", "=?utf-8?B?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?="),
    ("ew-q-lf-latin1", "=?iso-8859-1?q?=0A?="),
    ("ew-harmless-looking", "=?UTF-8?B?SGVsbG8=?="),
    ("pct-crlf", "%0d%0aBcc:%20victim@evil.example"),
    ("pct-lf-upper", "%0ABcc: victim@evil.example"),
    ("pct-cr", "%0D"),
    ("pct-double", "%250d%250aBcc: victim@evil.example"),
    ("pct-nul", "%00"),
    ("pct-line-separator", "%E2%80%A8Bcc: victim@evil.example"),
    ("pct-nel", "%C2%85"),
    ("html-dec-crlf", "&#13;&#10;Bcc: victim@evil.example"),
    ("html-hex-lf", "&#x0a;Bcc: victim@evil.example"),
    ("html-hex-cr-upper", "&#X0D;"),
]
assert len(PAYLOADS) >= 30
assert len({p for _, p in PAYLOADS}) == len(PAYLOADS)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def base_request() -> dict[str, Any]:
    return {
        "from": "Shop <shop@example.org>",
        "to": ["alice@example.net"],
        "subject": "Hello",
        "text": "body",
        "attachments": [{"filename": "a.txt", "content_type": "text/plain",
                         "content": b64(b"hi")}],
        "headers": [["X-Form", "contact"]],
    }


def _set(key: str, make: Callable[[str], Any]) -> Callable[[dict[str, Any], str], None]:
    def apply(request: dict[str, Any], payload: str) -> None:
        request[key] = make(payload)
    return apply


def _attachment(key: str, make: Callable[[str], str]) -> Callable[[dict[str, Any], str], None]:
    def apply(request: dict[str, Any], payload: str) -> None:
        request["attachments"][0][key] = make(payload)
    return apply


def _header(index: int, make: Callable[[str], str]) -> Callable[[dict[str, Any], str], None]:
    def apply(request: dict[str, Any], payload: str) -> None:
        request["headers"][0][index] = make(payload)
    return apply


#: (id, the field the error must name, how to put the payload there)
PLACEMENTS: list[tuple[str, str, Callable[[dict[str, Any], str], None]]] = [
    ("from-address", "from", _set("from", lambda p: f"Shop <shop@example.org{p}>")),
    ("from-display", "from", _set("from", lambda p: f"Shop{p} <shop@example.org>")),
    ("to-address", "to[0]", _set("to", lambda p: [f"alice@example.net{p}"])),
    ("to-display", "to[0]", _set("to", lambda p: [f"Alice {p} <alice@example.net>"])),
    ("to-second-leading", "to[1]",
     _set("to", lambda p: ["alice@example.net", f"{p}bob@example.net"])),
    ("cc-address", "cc[0]", _set("cc", lambda p: [f"carol@example.net{p}"])),
    ("cc-quoted-display", "cc[0]", _set("cc", lambda p: [f'"Carol{p}" <carol@example.net>'])),
    ("bcc-address", "bcc[0]", _set("bcc", lambda p: [f"dave@example.net{p}"])),
    ("reply-to-address", "reply_to", _set("reply_to", lambda p: f"v@example.com{p}")),
    ("reply-to-display", "reply_to", _set("reply_to", lambda p: f"Visitor{p} <v@example.com>")),
    ("subject", "subject", _set("subject", lambda p: f"Hello{p}world")),
    ("filename", "attachments[0].filename", _attachment("filename", lambda p: f"r{p}.pdf")),
    ("content-type", "attachments[0].content_type",
     _attachment("content_type", lambda p: f"text/plain{p}")),
    ("header-name", "headers[0].name", _header(0, lambda p: f"X-Form{p}")),
    ("header-value", "headers[0].value", _header(1, lambda p: f"contact{p}")),
]

CASES = [
    pytest.param(payload, field, apply, id=f"{pid}-{place}")
    for pid, payload in PAYLOADS
    for place, field, apply in PLACEMENTS
]


def to_fields(request: dict[str, Any]) -> MessageFields:
    """The Python-API form of a request (written here, independent of fields_from_json)."""
    return MessageFields(
        from_=request["from"],
        to=tuple(request.get("to", ())),
        cc=tuple(request.get("cc", ())),
        bcc=tuple(request.get("bcc", ())),
        reply_to=request.get("reply_to"),
        subject=request.get("subject", ""),
        text=request.get("text"),
        html=request.get("html"),
        attachments=tuple(
            Attachment(filename=a["filename"], content_type=a["content_type"],
                       data=base64.b64decode(a["content"]))
            for a in request.get("attachments", ())
        ),
        headers=tuple((h[0], h[1]) for h in request.get("headers", ())),
    )


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spool]:
    spool = Spool(tmp_path_factory.mktemp("spool"), fsync=False, group_commit=False)
    yield spool
    spool.close()


def assert_spool_empty(spool: Spool) -> None:
    assert spool.list() == []
    parts = list(Path(spool.tmp_dir).glob("*.part")) if spool.tmp_dir.exists() else []
    assert parts == []


def make_submitter(spool: Spool) -> Submitter:
    return Submitter(spool=spool, policy=SubmitPolicy(allowed_from_domains=("example.org",)),
                     clock=FixedClock(wall=NOW), randbytes=lambda n: b"\x07" * n)


@pytest.fixture
async def client(spool: Spool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(submitter=make_submitter(spool), auth=TokenAuth({"site": TOKEN}),
                     limiter=SubmitRateLimiter(token_burst=10**6, ip_burst=10**6,
                                               clock=FixedClock()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mailmoat.test",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


async def post(client: httpx.AsyncClient, request: dict[str, Any]) -> httpx.Response:
    """POST as ASCII JSON (json.dumps escapes everything, lone surrogates included, as a
    browser's JSON.stringify does)."""
    return await client.post("/v1/messages", content=json.dumps(request).encode("ascii"),
                             headers={"Content-Type": "application/json"})


def test_base_request_is_accepted_by_compose(spool: Spool) -> None:
    """The template itself is fine: each refusal below is caused by the payload alone."""
    from mailmoat.message.compose import compose

    compose(to_fields(base_request()), clock=FixedClock(wall=NOW), randbytes=lambda n: b"\1" * n)


@pytest.mark.parametrize(("payload", "field", "apply"), CASES)
async def test_python_api_refuses(spool: Spool, payload: str, field: str,
                                  apply: Callable[[dict[str, Any], str], None]) -> None:
    request = base_request()
    apply(request, payload)
    with pytest.raises(HeaderInjectionError) as err:
        await make_submitter(spool).submit(to_fields(request))
    assert err.value.field == field
    assert err.value.code == "header_injection"
    assert err.value.reason
    assert_spool_empty(spool)


@pytest.mark.parametrize(("payload", "field", "apply"), CASES)
async def test_http_api_refuses(spool: Spool, client: httpx.AsyncClient, payload: str,
                                field: str, apply: Callable[[dict[str, Any], str], None]) -> None:
    request = base_request()
    apply(request, payload)
    response = await post(client, request)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "header_injection"
    assert body["field"] == field
    assert body["message"]
    assert_spool_empty(spool)


# --- smuggling a second address, display-name tricks -------------------------------------------

SMUGGLED = [
    ("comma", "alice@example.net, victim@evil.example"),
    ("semicolon", "alice@example.net; victim@evil.example"),
    ("comma-no-space", "alice@example.net,victim@evil.example"),
    ("two-name-addrs", "Alice <alice@example.net>, Victim <victim@evil.example>"),
    ("two-angles", "Alice <alice@example.net> <victim@evil.example>"),
    ("trailing-text", "Alice <alice@example.net> victim@evil.example"),
    ("angle-in-quoted-name", '"support@bank.example <support@bank.example>" <evil@x.example>'),
    ("angle-in-name", "Bank <support@bank.example <evil@x.example>"),
    ("close-angle-in-name", "Bank > <evil@x.example>"),
    ("quote-break-out", 'Foo", victim@evil.example, "Bar <alice@example.net>'),
    ("stray-quote", 'Fo"o <alice@example.net>'),
    ("unbalanced-quote", '"Foo <alice@example.net>'),
    ("comma-in-angle", "Alice <alice@example.net,victim@evil.example>"),
    ("group-syntax", "undisclosed:victim@evil.example;"),
    ("comma-in-bare-name", "victim@evil.example, Alice <alice@example.net>"),
    ("semicolon-in-bare-name", "victim@evil.example; Alice <alice@example.net>"),
    ("group-in-name", "Friends: Alice <alice@example.net>"),
]


@pytest.mark.parametrize("field", ["from", "to", "cc", "bcc", "reply_to"])
@pytest.mark.parametrize("value", [v for _, v in SMUGGLED], ids=[i for i, _ in SMUGGLED])
async def test_one_address_per_entry(spool: Spool, client: httpx.AsyncClient, field: str,
                                     value: str) -> None:
    request = base_request()
    request[field] = value if field in ("from", "reply_to") else [value]
    expected = field if field in ("from", "reply_to") else f"{field}[0]"
    with pytest.raises(FieldError) as err:
        await make_submitter(spool).submit(to_fields(request))
    assert err.value.field == expected
    response = await post(client, request)
    assert response.status_code == 422
    assert response.json()["field"] == expected
    assert response.json()["error"] in ("header_injection", "invalid_address", "invalid_field")
    assert_spool_empty(spool)


@pytest.mark.parametrize("name", ["Bcc", "To", "Cc", "From", "Reply-To", "Subject", "Date",
                                  "Message-ID", "Content-Type", "MIME-Version", "Received",
                                  "Return-Path", "DKIM-Signature", "Sender", "Resent-To"])
async def test_header_fields_that_cannot_be_added(spool: Spool, client: httpx.AsyncClient,
                                                  name: str) -> None:
    request = base_request()
    request["headers"] = {name: "victim@evil.example"}
    response = await post(client, request)
    assert response.status_code == 422
    assert response.json() == {
        "error": "header_injection", "field": "headers[0].name",
        "message": response.json()["message"],
    }
    assert name in response.json()["message"]
    assert_spool_empty(spool)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("subject", "x" * 1001, "subject"),
        ("from", "N" * 300 + " <shop@example.org>", "from"),
        ("to", ["a" * 700 + "@example.net"], "to[0]"),
        ("headers", {"X-Long": "v" * 2000}, "headers[0].value"),
        ("headers", {"X-" + "n" * 80: "v"}, "headers[0].name"),
    ],
)
async def test_overlong_fields(spool: Spool, client: httpx.AsyncClient, key: str, value: Any,
                               field: str) -> None:
    request = base_request()
    request[key] = value
    response = await post(client, request)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["error"] == "too_long"
    assert_spool_empty(spool)


# --- legitimate unusual input is accepted and renders correctly --------------------------------

LEGIT = [
    ("non-ascii-names", {"from": "Zoë Müller <shop@example.org>",
                         "to": ["Дмитрий <d@example.net>", "李小龍 <bruce@example.com>"]}),
    ("apostrophe", {"to": ["Seán O'Brien <sean.o'brien@example.ie>"],
                    "reply_to": "D'Arcy <darcy@example.com>"}),
    ("plus-address", {"to": ["alice+orders@example.net"], "cc": ["bob+x-y_z@example.net"]}),
    ("quoted-local", {"to": ['"john doe"@example.com', '"a,b"@example.com']}),
    ("comma-in-quoted-name", {"to": ['"Doe, John" <john@example.com>']}),
    ("long-subject", {"subject": "Ein sehr langer Betreff über Größen und Maße " * 20}),
    ("emoji-subject", {"subject": "Order shipped 📦✅ — thanks!"}),
    ("percent-text", {"subject": "Save 20% today, 100%25 sure"}),
    ("ampersand", {"subject": "Tom & Jerry &amp; friends &#233;"}),
    ("special-chars", {"subject": "a<b> \"quoted\" (paren) [brackets] = ? _ \\ :;"}),
    ("idn-domain", {"to": ["info@bücher.example"]}),
    ("crlf-in-body", {"text": "line1\r\nBcc: not-a-header@example.com\r\n\r\nline3"}),
]


@pytest.mark.parametrize(("changes"), [c for _, c in LEGIT], ids=[i for i, _ in LEGIT])
async def test_legitimate_input_accepted(spool: Spool, client: httpx.AsyncClient,
                                         changes: dict[str, Any]) -> None:
    request = base_request()
    request.update(changes)
    response = await post(client, request)
    assert response.status_code == 202, response.text
    spool_id = response.json()["id"]
    try:
        data = spool.read_message(spool_id)
        stored = spool.get(spool_id)
    finally:
        spool.remove(spool_id)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert "Bcc" not in msg
    if "subject" in changes:
        assert msg["Subject"] == changes["subject"]
    for key, header in (("to", "To"), ("cc", "Cc")):
        if key not in changes:
            continue
        for given, parsed in zip(changes[key], msg[header].addresses, strict=True):
            if "<" in given:
                name = given.rsplit("<", 1)[0].strip().strip('"')
                assert parsed.display_name == name
    if "reply_to" in changes:
        assert msg["Reply-To"].addresses[0].display_name == "D'Arcy"
    if "from" in changes:
        assert msg["From"].addresses[0].display_name == "Zoë Müller"
    if "text" in changes:
        text_part = next(msg.iter_parts())
        assert text_part.get_content().replace("\r\n", "\n") == changes["text"].replace(
            "\r\n", "\n") + "\n"
    rcpts = [r.address for r in stored.envelope.rcpts]
    assert len(rcpts) == len(changes.get("to", request["to"])) + len(changes.get("cc", ()))
