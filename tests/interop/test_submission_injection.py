"""Header injection through a running gateway (issue #7, "Injection"): SMTP submission and the
HTTP submission API of ``mailmoat serve``, with the payloads of the unit tests.

The payload list is :data:`PAYLOADS` of tests/unit/gateway/test_injection.py (44 ways to
break out of a header field: CR, LF, CRLF, folded continuations, NUL and other controls,
U+0085/U+2028/U+2029, RFC 2047 encoded-words, percent- and HTML-encoded line breaks, ...),
loaded from that file (it is not on the import path of tests/interop/).

SMTP: each payload is put (as UTF-8 octets) into the Subject, the From display name, the To
display name and the Reply-To display name of a message submitted with AUTH over STARTTLS.
For each, the gateway must either refuse it (5xx at the end of DATA, and no delivery row for
its recipient) or deliver it; the delivered copy - read from the receiving Postfix's Maildir
and parsed here, independently of mailmoat's parser - must hold no header field the
template did not have (no Bcc, no second To/Content-Type/...; only trace fields added by
the hops: Received, Return-Path, Delivered-To, X-Original-To, DKIM-Signature).

HTTP: each payload in ``subject``, ``from``, ``to[0]`` and ``reply_to`` of a JSON request to
``/v1/messages`` is refused with 422 ``header_injection`` naming that field, and nothing is
queued. A template request without a payload is accepted (202) and delivered, so "nothing
queued" is not the API being broken.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from outbound_e2e_fixture import (
    API_TOKEN,
    E2E,
    SENDER,
    SENDER_PASSWORD,
    SENDER_USER,
    Stack,
    delivered_to,
    header_fields,
    postfix_messages,
    start_stack,
)
from server_fixture import HOSTNAME

pytestmark = [pytest.mark.timeout(600)]

_UNIT = Path(__file__).resolve().parents[1] / "unit" / "gateway" / "test_injection.py"


def _load_payloads() -> list[tuple[str, str]]:
    spec = importlib.util.spec_from_file_location("_unit_test_injection", _UNIT)
    assert spec is not None, _UNIT
    assert spec.loader is not None, _UNIT
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    payloads: list[tuple[str, str]] = list(module.PAYLOADS)
    return payloads


PAYLOADS = _load_payloads()
assert len(PAYLOADS) >= 30

#: The template's fields; a delivered copy may have each at most this often.
TEMPLATE_FIELDS = collections.Counter(["message-id", "date", "from", "to", "reply-to",
                                       "subject", "mime-version", "content-type"])
#: Trace fields the hops add (RFC 5321 §4.4; Postfix virtual(8); our DKIM signatures).
TRACE_FIELDS = {"received", "return-path", "delivered-to", "x-original-to", "dkim-signature"}

#: place -> how the payload (octets) enters the header line of that field
SMTP_PLACES: dict[str, Callable[[bytes, str], bytes]] = {
    "subject": lambda p, rcpt: b"Subject: Hello" + p + b"world",
    "from": lambda p, rcpt: b"From: Carol" + p + f" <{SENDER}>".encode(),
    "to": lambda p, rcpt: b"To: Dest" + p + f" <{rcpt}>".encode(),
    "reply-to": lambda p, rcpt: b"Reply-To: Visitor" + p + f" <{SENDER}>".encode(),
}


def smtp_message(tag: str, rcpt: str, place: str | None = None, payload: bytes = b"") -> bytes:
    lines = {
        "subject": b"Subject: Hello world",
        "from": f"From: Carol <{SENDER}>".encode(),
        "to": f"To: Dest <{rcpt}>".encode(),
        "reply-to": f"Reply-To: Visitor <{SENDER}>".encode(),
    }
    if place is not None:
        lines[place] = SMTP_PLACES[place](payload, rcpt)
    head = [f"Message-ID: <{tag}@{HOSTNAME}>".encode(),
            b"Date: Sun, 29 Nov 2026 00:00:00 +0000",
            lines["from"], lines["to"], lines["reply-to"], lines["subject"],
            b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8"]
    return b"\r\n".join(head) + b"\r\n\r\nbody of " + tag.encode() + b"\r\n"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


@dataclass
class Outcome:
    rcpt: str
    code: int  # the reply to the end of DATA (or to the first refused command)
    text: str


class Submitter:
    """One authenticated STARTTLS session, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.smtp: smtplib.SMTP | None = None

    def _open(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        smtp.ehlo("client.test")
        smtp.starttls(context=context)
        smtp.ehlo("client.test")
        smtp.login(SENDER_USER, SENDER_PASSWORD)
        return smtp

    def send(self, rcpt: str, data: bytes) -> tuple[int, str]:
        for _ in range(2):
            if self.smtp is None:
                self.smtp = self._open()
            try:
                self.smtp.sendmail(SENDER, [rcpt], data)
                return 250, "accepted"
            except smtplib.SMTPDataError as err:
                return err.smtp_code, _text(err.smtp_error)
            except smtplib.SMTPRecipientsRefused as err:
                code, text = err.recipients[rcpt]
                return code, _text(text)
            except smtplib.SMTPResponseException as err:
                return err.smtp_code, _text(err.smtp_error)
            except smtplib.SMTPServerDisconnected:
                self.smtp = None
        raise AssertionError(f"the session to {self.port} closed twice for {rcpt}")

    def close(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.smtp.quit()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("stack"), https_port=0) as started:
        yield started


@pytest.fixture(scope="module")
def gw(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    e2e = E2E.create(stack, tmp_path_factory.mktemp("gw") / "data")
    try:
        e2e.start()
        yield e2e
    finally:
        e2e.stop()


SMTP_CASES = [(pid, payload, place) for pid, payload in PAYLOADS for place in SMTP_PLACES]


@pytest.fixture(scope="module")
def smtp_run(gw: E2E, stack: Stack) -> dict[str, tuple[Outcome, bytes | None]]:
    """Submit the template and every case once, then collect what Postfix received."""
    submitter = Submitter(gw.port("starttls"))
    outcomes: dict[str, Outcome] = {}
    try:
        rcpt = "inj-template@good.plain.test"
        code, text = submitter.send(rcpt, smtp_message("inj-template", rcpt))
        outcomes["template"] = Outcome(rcpt, code, text)
        for index, (pid, payload, place) in enumerate(SMTP_CASES):
            rcpt = f"inj-{index}@good.plain.test"
            data = smtp_message(f"inj-{index}", rcpt, place,
                                payload.encode("utf-8", "surrogatepass"))
            code, text = submitter.send(rcpt, data)
            outcomes[f"{pid}-{place}"] = Outcome(rcpt, code, text)
    finally:
        submitter.close()
    accepted = {o.rcpt for o in outcomes.values() if o.code == 250}
    deadline = time.monotonic() + 120
    copies: dict[str, bytes] = {}
    while time.monotonic() < deadline:
        copies = {r: m for m in postfix_messages(stack.postfix)
                  if (r := delivered_to(m) or "") in accepted}
        if set(copies) == accepted:
            break
        time.sleep(0.5)
    return {case: (o, copies.get(o.rcpt)) for case, o in outcomes.items()}


def _injected(copy: bytes) -> list[str]:
    """Header fields of a delivered copy beyond the template's (names, lower case)."""
    counts = collections.Counter(name for name, _ in header_fields(copy))
    return sorted(name for name, n in counts.items()
                  if name not in TRACE_FIELDS and n > TEMPLATE_FIELDS.get(name, 0))


def test_template_is_delivered_as_written(smtp_run: dict[str, tuple[Outcome, bytes | None]]
                                          ) -> None:
    outcome, copy = smtp_run["template"]
    assert outcome.code == 250, outcome
    assert copy is not None, "the template was not delivered"
    names = collections.Counter(n for n, _ in header_fields(copy) if n not in TRACE_FIELDS)
    assert names == TEMPLATE_FIELDS
    assert _injected(copy) == []


@pytest.mark.parametrize("case", [f"{pid}-{place}" for pid, _, place in SMTP_CASES])
def test_smtp_submission_refuses_or_neutralises(
    smtp_run: dict[str, tuple[Outcome, bytes | None]], gw: E2E, case: str,
) -> None:
    outcome, copy = smtp_run[case]
    if outcome.code >= 500:
        assert copy is None
        assert gw.deliveries(outcome.rcpt) == [], "refused but queued"
        assert gw.spooled_for(outcome.rcpt) == [], "refused but spooled"
        return
    assert outcome.code == 250, outcome  # never a 4xx for a payload
    assert copy is not None, (outcome, gw.deliveries(outcome.rcpt))
    assert _injected(copy) == [], copy.decode("utf-8", "replace")


# --- the HTTP submission API through serve -----------------------------------------------------
API_PLACES: dict[str, tuple[str, Callable[[dict[str, Any], str], None]]] = {
    "subject": ("subject", lambda r, p: r.__setitem__("subject", f"Hello{p}world")),
    "from": ("from", lambda r, p: r.__setitem__("from", f"Carol{p} <{SENDER}>")),
    "to": ("to[0]", lambda r, p: r.__setitem__("to", [f"Dest{p} <{r['to'][0]}>"])),
    "reply-to": ("reply_to", lambda r, p: r.__setitem__("reply_to", f"Visitor{p} <{SENDER}>")),
}
API_CASES = [(pid, payload, place) for pid, payload in PAYLOADS for place in API_PLACES]


def api_request(rcpt: str) -> dict[str, Any]:
    return {"from": f"Carol <{SENDER}>", "to": [rcpt], "subject": "Hello",
            "text": "body", "reply_to": f"Visitor <{SENDER}>"}


@pytest.fixture(scope="module")
def api(gw: E2E) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{gw.api_port}", timeout=30,
                      headers={"Authorization": f"Bearer {API_TOKEN}",
                               "Content-Type": "application/json"}) as client:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.get("/")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield client


def _post(client: httpx.Client, request: dict[str, Any]) -> httpx.Response:
    # ASCII JSON, as a browser's JSON.stringify sends it (lone surrogates escaped)
    return client.post("/v1/messages", content=json.dumps(request).encode("ascii"))


def test_api_template_is_accepted_and_delivered(api: httpx.Client, gw: E2E,
                                                stack: Stack) -> None:
    rcpt = "api-template@good.plain.test"
    response = _post(api, api_request(rcpt))
    assert response.status_code == 202, response.text
    delivery, _ = gw.wait_state(rcpt, ("delivered",), timeout=40)
    assert delivery.destination == "mx:good.plain.test"


@pytest.mark.parametrize(("pid", "payload", "place"), API_CASES,
                         ids=[f"{pid}-{place}" for pid, _, place in API_CASES])
def test_api_refuses_and_queues_nothing(api: httpx.Client, gw: E2E, pid: str, payload: str,
                                        place: str) -> None:
    rcpt = f"api-{pid}-{place}@good.plain.test"
    request = api_request(rcpt)
    field, apply = API_PLACES[place]
    apply(request, payload)
    response = _post(api, request)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "header_injection", body
    assert body["field"] == field, body
    assert gw.deliveries(rcpt) == []
    assert gw.spooled_for(rcpt) == []
    assert list(gw.data_dir.joinpath("spool", "tmp").glob("*.part")) == []
