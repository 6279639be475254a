"""``mailmoat send`` (click CliRunner) out to a real aiosmtpd server, and its small helpers.

The peer (aiosmtpd) records what arrived; the certificate facts the output must show are read
from the trustme certificate with ``cryptography``; exit codes are the documented sysexits.
"""

from __future__ import annotations

import datetime
import io
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cryptography import x509
from rich.console import Console

from mailmoat.cli.main import main
from mailmoat.cli.send import _print_session, add_missing_headers, parse_server
from mailmoat.net.smtp_client import SessionInfo, TLSDetails

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")
trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: a@example.org\r\nDate: Sat, 28 Nov 2026 21:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\nSubject: cli\r\n\r\nHello.\r\n"


class Handler:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.data_reply = "250 2.0.0 Ok: queued as 8XyZ42"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply.startswith("250"):
            self.envelopes.append(envelope)
        return self.data_reply


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: Any) -> Any:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def cafile(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def logins() -> list[bytes]:
    return []


@pytest.fixture
def server(server_cert: Any, handler: Handler, logins: list[bytes]) -> Iterator[Any]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        logins.append(data.login)
        return aiosmtpd_smtp.AuthResult(success=data.password == b"pw 1", handled=False)

    controller = aiosmtpd_controller.Controller(
        handler, hostname="127.0.0.1", port=_free_port(), tls_context=context,
        require_starttls=True, authenticator=authenticator,
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def run(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["send", *args], input=stdin, env=env)


def base(server: Any, *extra: str) -> list[str]:
    return ["--server", f"127.0.0.1:{server.port}", "--from", "a@example.org",
            "--to", "b@example.net", "--helo", "client.example.org", "--timeout", "10", *extra]


def test_starttls_verified_output(
    server: Any, handler: Handler, cafile: str, server_cert: Any, ca: Any
) -> None:
    result = run(*base(server, "--tls-name", "localhost", "--cafile", cafile), stdin=MESSAGE)
    assert result.exit_code == 0, result.output
    assert [e.content for e in handler.envelopes] == [MESSAGE]
    out = result.output
    leaf = x509.load_pem_x509_certificate(server_cert.cert_chain_pems[0].bytes())
    assert f"subject {leaf.subject.rfc4514_string()}" in out
    assert f"issuer {leaf.issuer.rfc4514_string()}" in out
    assert "Verified    yes (chain and name localhost)" in out
    assert "TLSv1." in out
    assert "STARTTLS" in out.split("TLS   ")[0]  # advertised before TLS
    assert "Queue id    8XyZ42" in out
    assert "Sent to 1 of 1 recipient(s)." in out


def test_json_output(server: Any, cafile: str) -> None:
    result = run(*base(server, "--tls-name", "localhost", "--cafile", cafile, "--json"),
                 stdin=MESSAGE)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["sent"] is True
    assert data["queue_id"] == "8XyZ42"
    assert data["session"]["tls"]["verified"] is True
    assert "STARTTLS" in data["session"]["ehlo_before_tls"]
    assert "STARTTLS" not in data["session"]["ehlo_after_tls"]
    assert data["recipients"] == [
        {"address": "b@example.net", "accepted": True,
         "reply": {"code": 250, "status": None, "text": "OK"}}
    ]


def test_wrong_name_exits_tempfail(server: Any, handler: Handler, cafile: str) -> None:
    result = run(*base(server, "--tls-name", "mx.example.net", "--cafile", cafile), stdin=MESSAGE)
    assert result.exit_code == 75
    assert "Hostname mismatch" in result.output
    assert "TLS         handshake failed" in result.output
    assert handler.envelopes == []


def test_no_verify(server: Any, handler: Handler) -> None:
    result = run(*base(server, "--no-verify"), stdin=MESSAGE)
    assert result.exit_code == 0, result.output
    assert "Verified    NO: not verified (verification disabled)" in result.output
    assert len(handler.envelopes) == 1


def test_json_failure(server: Any, cafile: str) -> None:
    result = run(*base(server, "--tls-name", "mx.example.net", "--cafile", cafile, "--json"),
                 stdin=MESSAGE)
    assert result.exit_code == 75
    data = json.loads(result.stdout)
    assert data["sent"] is False
    assert data["stage"] == "tls"
    assert data["temporary"] is True


@pytest.mark.parametrize(("reply", "code"), [("554 5.7.1 no", 1), ("451 4.3.0 later", 75)])
def test_refused_message_exit_codes(
    server: Any, handler: Handler, cafile: str, reply: str, code: int
) -> None:
    handler.data_reply = reply
    result = run(*base(server, "--tls-name", "localhost", "--cafile", cafile), stdin=MESSAGE)
    assert result.exit_code == code
    assert reply[4:] in result.output


def test_auth_with_password_env_and_file(
    server: Any, handler: Handler, cafile: str, logins: list[bytes], tmp_path: Path
) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    result = run(*base(server, "--tls-name", "localhost", "--cafile", cafile,
                       "--auth-user", "alice", "--password-env", "MM_PW", str(path)),
                 env={"MM_PW": "pw 1"})
    assert result.exit_code == 0, result.output
    assert logins == [b"alice"]
    assert "AUTH        PLAIN: 235" in result.output
    assert "pw 1" not in result.output


def test_auth_with_password_stdin(
    server: Any, cafile: str, logins: list[bytes], tmp_path: Path
) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    result = run(*base(server, "--tls-name", "localhost", "--cafile", cafile,
                       "--auth-user", "alice", "--password-stdin", "--auth-mech", "LOGIN",
                       str(path)), stdin=b"pw 1\n")
    assert result.exit_code == 0, result.output
    assert logins == [b"alice"]
    # A wrong password: 535, refused.
    result = run(*base(server, "--tls-name", "localhost", "--cafile", cafile,
                       "--auth-user", "alice", "--password-stdin", str(path)), stdin=b"nope\n")
    assert result.exit_code == 1
    assert "535" in result.output


def test_add_headers(server: Any, handler: Handler, cafile: str) -> None:
    bare = b"Subject: no date\r\n\r\nx\r\n"
    result = run(*base(server, "--tls-name", "localhost", "--cafile", cafile, "--add-headers"),
                 stdin=bare)
    assert result.exit_code == 0, result.output
    [envelope] = handler.envelopes
    head = envelope.content.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0].startswith(b"Date: ")
    assert head[1].startswith(b"Message-ID: <")
    assert head[1].endswith(b"@example.org>")
    assert envelope.content.endswith(bare)


@pytest.mark.parametrize(
    "args",
    [
        ["--to", "b@example.net\r\nRCPT TO:<x@evil.example>"],
        ["--auth-user", "u"],  # no password source
        ["--auth-user", "u", "--password-stdin"],  # message also from stdin
        ["--no-verify", "--cafile", "/dev/null"],
        ["--password-env", "X"],
    ],
)
def test_usage_errors(args: list[str], handler: Handler) -> None:
    result = run("--server", "127.0.0.1:1", "--from", "a@example.org", "--to", "b@example.net",
                 *args, stdin=MESSAGE)
    assert result.exit_code == 2, result.output
    assert handler.envelopes == []


def test_unreachable_server_is_tempfail() -> None:
    port = _free_port()
    result = run("--server", f"127.0.0.1:{port}", "--from", "a@example.org", "--to",
                 "b@example.net", stdin=MESSAGE)
    assert result.exit_code == 75
    assert "cannot connect" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mx.example.net", ("mx.example.net", None)),
        ("mx.example.net:2525", ("mx.example.net", 2525)),
        ("[2001:db8::25]:587", ("2001:db8::25", 587)),
        ("[::1]", ("::1", None)),
        ("2001:db8::25", ("2001:db8::25", None)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["[::1", "host:0", "host:x", ":25", "[::1]x"])
def test_parse_server_errors(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_server(text)


def test_add_missing_headers_keeps_existing() -> None:
    now = datetime.datetime(2026, 11, 28, 21, 0, tzinfo=datetime.UTC)
    assert add_missing_headers(MESSAGE, domain="example.org", now=now) == MESSAGE
    folded = b"Subject: a\r\n  folded\r\ndate: x\r\n\r\nMessage-ID: <body@x>\r\n"
    added = add_missing_headers(folded, domain="example.org", now=now)
    # Date present (case-insensitive); Message-ID only in the body: it is added.
    assert added.startswith(b"Message-ID: <")
    assert added.endswith(folded)
    dated = add_missing_headers(b"Subject: s\r\n\r\n", domain="example.org", now=now)
    # RFC 5322 §3.3 date-time
    assert dated.startswith(b"Date: Sat, 28 Nov 2026 21:00:00 +0000\r\n")


@pytest.mark.parametrize(
    "args",
    [
        ["--mx", "--server", "127.0.0.1:1", "--to", "b@example.net"],  # both
        ["--to", "b@example.net"],  # neither
        ["--mx", "--to", "b@example.net", "--to", "c@example.org"],  # two domains
        ["--mx", "--to", "b@example.net", "--tls-name", "x.example"],
        ["--mx", "--to", "b@example.net", "--resolver", "not-an-ip"],
    ],
)
def test_mx_usage_errors(args: list[str]) -> None:
    result = run("--from", "a@example.org", *args, stdin=MESSAGE)
    assert result.exit_code == 2, result.output


def test_certificate_text_cannot_drive_the_terminal() -> None:
    # A hostile server controls its certificate's subject, issuer and names.
    evil = "CN=mx\x1b]0;pwned\x07\x1b[2J.example"
    tls = TLSDetails(
        version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", bits=128, server_name="mx.example",
        subject=evil, issuer=evil, san=(evil,), not_before=None, not_after=None,
        verified=False, verify_error=f"name mismatch for {evil}",
    )
    session = SessionInfo(host="mx.example", port=25, mode="starttls", tls=tls)
    out = io.StringIO()
    _print_session(Console(file=out, force_terminal=False, width=200), session)
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "CN=mx?]0;pwned??[2J.example" in text
