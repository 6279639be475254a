"""Interop: real SMTP clients into our running gateway (``mailmoat serve`` as a subprocess).

Clients: Python smtplib and aiosmtplib, swaks, ``openssl s_client -starttls smtp``, msmtp and
Postfix's smtp-source. What each test checks comes from the *client* side or an independent
parser: the TLS version and cipher the client's own TLS stack negotiated (or printed) must be
what our Received line records, read back by the header analyser
(:func:`mailmoat.analysis.parse_received`), and the message bytes the client sent must be in the
spool after our Received field.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from server_fixture import (
    HOSTNAME,
    PASSWORD,
    USER,
    USER_ADDRESS,
    RunningServer,
    make_data_dir,
    start_server,
)

from conftest import require_peer
from mailmoat.analysis import TLSStatus, parse_received
from mailmoat.spool import SpooledMessage

#: The gateway would deliver (and remove from the spool) what these tests read back from the
#: spool: hold the queue (accept and queue, deliver nothing).
HOLD = "[delivery]\nhold = true\n"

pytestmark = pytest.mark.timeout(120)

QUEUED_RE = re.compile(r"250 2\.0\.0 Ok: queued as ([0-9A-Z]{26})")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_data_dir(tmp_path_factory.mktemp("gw"), extra=HOLD)
    running = start_server(config)
    yield running
    assert running.stop() == 0


def client_context(server: RunningServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.cert))
    ctx.check_hostname = True
    return ctx


def fetch(server: RunningServer, spool_id: str) -> tuple[SpooledMessage, bytes]:
    spool = server.spool()
    return spool.get(spool_id), spool.read_message(spool_id)


def received_of(message: bytes) -> bytes:
    """The value of the first header field (ours), unfolded by the parser."""
    assert message.startswith(b"Received:"), message[:80]
    end = message.index(b"\r\n", 0)
    while message[end + 2 : end + 3] in (b" ", b"\t"):
        end = message.index(b"\r\n", end + 2)
    return message[len(b"Received:") : end + 2]


def check_tls_received(message: bytes, *, version: str, cipher: str, protocol: str) -> None:
    stamp = parse_received(received_of(message))
    assert stamp.tls is TLSStatus.YES, stamp
    assert stamp.tls_version == version
    assert stamp.cipher == cipher
    assert stamp.protocol == protocol
    assert stamp.by_name == HOSTNAME


def body(tag: str) -> bytes:
    return (f"From: {USER_ADDRESS}\r\nTo: bob@{HOSTNAME}\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@test>\r\n\r\nbody of {tag}\r\n").encode()


# --- smtplib ------------------------------------------------------------------------------


def smtplib_send(client: smtplib.SMTP, tag: str, sender: str = USER_ADDRESS) -> str:
    client.mail(sender)
    code, _ = client.rcpt(f"bob@{HOSTNAME}")
    assert code == 250
    code, reply = client.data(body(tag))
    assert code == 250, reply
    match = re.search(rb"queued as ([0-9A-Z]{26})", reply)
    assert match, reply
    return match[1].decode()


def test_smtplib_implicit_tls_submission(server: RunningServer) -> None:
    port = server.port("implicit-tls", "submission")
    with smtplib.SMTP_SSL("127.0.0.1", port, context=client_context(server),
                          timeout=10) as client:
        client.ehlo("client.test")
        assert client.sock is not None
        version, cipher = client.sock.version(), client.sock.cipher()[0]  # type: ignore[union-attr]
        client.login(USER, PASSWORD)
        spool_id = smtplib_send(client, "smtplib-465")
    entry, message = fetch(server, spool_id)
    assert version == "TLSv1.3"
    check_tls_received(message, version=version, cipher=cipher, protocol="ESMTPSA")
    # Submission repairs the message (RFC 6409 §8.3): the missing Date field is added.
    head, _, rest = body("smtplib-465").partition(b"\r\n\r\n")
    assert message.endswith(b"\r\n\r\n" + rest)
    assert head in message
    assert re.search(rb"\r\nDate: [^\r\n]+\r\n\r\n", message)
    assert entry.envelope.auth_user == USER
    assert entry.envelope.tls is not None
    assert entry.envelope.tls.cipher == cipher


def test_smtplib_starttls_submission(server: RunningServer) -> None:
    port = server.port("starttls", "submission")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth"), "AUTH must never be advertised in plaintext"
        client.starttls(context=client_context(server))
        client.ehlo()
        assert client.has_extn("auth")
        version, cipher = client.sock.version(), client.sock.cipher()[0]  # type: ignore[union-attr]
        client.login(USER, PASSWORD)
        spool_id = smtplib_send(client, "smtplib-587")
    _, message = fetch(server, spool_id)
    check_tls_received(message, version=version, cipher=cipher, protocol="ESMTPSA")


def test_smtplib_plain_mx_with_and_without_starttls(server: RunningServer) -> None:
    port = server.port("plain", "mx")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        # RFC 3207: plain listeners offer STARTTLS when a certificate is configured.
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        clear_id = smtplib_send(client, "smtplib-plain", sender="someone@elsewhere.example")
        client.starttls(context=client_context(server))
        client.ehlo()
        version, cipher = client.sock.version(), client.sock.cipher()[0]  # type: ignore[union-attr]
        tls_id = smtplib_send(client, "smtplib-plain-tls", sender="someone@elsewhere.example")
    _, clear = fetch(server, clear_id)
    stamp = parse_received(received_of(clear))
    assert stamp.tls is TLSStatus.NO
    assert stamp.protocol == "ESMTP"
    _, message = fetch(server, tls_id)
    check_tls_received(message, version=version, cipher=cipher, protocol="ESMTPS")


def test_submission_refuses_mail_and_auth_before_tls(server: RunningServer) -> None:
    port = server.port("starttls", "submission")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        code, _ = client.docmd("MAIL", f"FROM:<{USER_ADDRESS}>")
        assert code == 530  # RFC 3207 §4 "530 Must issue a STARTTLS command first"
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=")
        assert code == 538  # RFC 4954 §6 "538 5.7.11 Encryption required"
        client.starttls(context=client_context(server))
        client.ehlo()
        code, _ = client.docmd("MAIL", f"FROM:<{USER_ADDRESS}>")
        assert code == 530  # RFC 4954 §6 / RFC 6409 §4.3: authentication required
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(USER, "wrong password")
        client.login(USER, PASSWORD)
        code, _ = client.docmd("MAIL", "FROM:<mallory@mx.test>")
        assert code == 553  # not one of alice's addresses
        code, _ = client.docmd("MAIL", "FROM:<>")
        assert code == 553  # the null sender is not listed for alice
        code, _ = client.docmd("MAIL", f"FROM:<{USER_ADDRESS.upper()}>")
        assert code == 250  # domain and ASCII local part compare case-insensitively


def test_mx_refuses_relay_even_over_tls(server: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("starttls", "mx"), timeout=10) as client:
        client.ehlo("client.test")
        client.starttls(context=client_context(server))
        client.ehlo("client.test")
        client.mail("a@elsewhere.example")
        code, msg = client.rcpt("victim@other.example")
        assert (code, msg[:5]) == (554, b"5.7.1")
        code, _ = client.rcpt("someone%other.example@mx.test")
        assert code == 554


# --- aiosmtplib ---------------------------------------------------------------------------


async def test_aiosmtplib_implicit_and_starttls(server: RunningServer) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = USER_ADDRESS, f"bob@{HOSTNAME}", "aiosmtplib"
    msg.set_content("hello from aiosmtplib\n")
    ids = []
    for port, implicit in ((server.port("implicit-tls", "submission"), True),
                           (server.port("starttls", "submission"), False)):
        errors, reply = await aiosmtplib.send(
            msg, hostname="127.0.0.1", port=port, use_tls=implicit, start_tls=not implicit,
            username=USER, password=PASSWORD, tls_context=client_context(server),
            timeout=10,
        )
        assert errors == {}
        match = re.search(r"queued as ([0-9A-Z]{26})", reply)
        assert match, reply
        ids.append(match[1])
    for spool_id in ids:
        entry, message = fetch(server, spool_id)
        stamp = parse_received(received_of(message))
        assert stamp.tls is TLSStatus.YES
        assert stamp.tls_version == "TLSv1.3"
        assert entry.envelope.auth_user == USER
        assert b"hello from aiosmtplib" in message


# --- swaks --------------------------------------------------------------------------------


def swaks(server: RunningServer, *args: str) -> str:
    exe = require_peer("swaks")
    done = subprocess.run(
        [exe, "--server", "127.0.0.1", "--to", f"bob@{HOSTNAME}", "--from", USER_ADDRESS,
         "--helo", "swaks.test", "--timeout", "10", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return done.stdout + done.stderr


def swaks_tls(output: str) -> tuple[str, str]:
    # swaks prints "=== TLS started with cipher TLSv1.3:TLS_AES_256_GCM_SHA384:256"
    match = re.search(r"TLS started with cipher (TLSv[0-9.]+):([A-Z0-9_-]+):(\d+)", output)
    assert match, output
    return match[1], match[2]


@pytest.mark.parametrize(
    ("mode", "flags", "protocol"),
    [
        ("implicit-tls", ("--tls-on-connect", "--auth", "PLAIN"), "ESMTPSA"),
        ("implicit-tls", ("--tls-on-connect", "--auth", "LOGIN", "--pipeline"), "ESMTPSA"),
        ("starttls", ("--tls", "--auth", "PLAIN", "--pipeline"), "ESMTPSA"),
        ("starttls", ("--tls", "--auth", "LOGIN"), "ESMTPSA"),
    ],
)
def test_swaks_submission(server: RunningServer, mode: str, flags: tuple[str, ...],
                          protocol: str) -> None:
    out = swaks(server, "--port", str(server.port(mode, "submission")), *flags,
                "--auth-user", USER, "--auth-password", PASSWORD)
    match = QUEUED_RE.search(out)
    assert match, out
    version, cipher = swaks_tls(out)
    _, message = fetch(server, match[1])
    check_tls_received(message, version=version, cipher=cipher, protocol=protocol)
    assert b"X-Mailer: swaks" in message


def test_swaks_mx_starttls_and_plain(server: RunningServer) -> None:
    out = swaks(server, "--port", str(server.port("starttls", "mx")), "--tls", "--pipeline")
    match = QUEUED_RE.search(out)
    assert match, out
    version, cipher = swaks_tls(out)
    _, message = fetch(server, match[1])
    check_tls_received(message, version=version, cipher=cipher, protocol="ESMTPS")
    out = swaks(server, "--port", str(server.port("plain", "mx")))
    match = QUEUED_RE.search(out)
    assert match, out
    _, message = fetch(server, match[1])
    assert parse_received(received_of(message)).tls is TLSStatus.NO


def test_swaks_auth_refused_in_plaintext(server: RunningServer) -> None:
    out = swaks(server, "--port", str(server.port("starttls", "submission")),
                "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD)
    assert "250 2.0.0 Ok: queued" not in out
    assert "Host did not advertise authentication" in out


# --- openssl s_client ---------------------------------------------------------------------


def test_openssl_s_client_starttls(server: RunningServer) -> None:
    exe = require_peer("openssl")
    proc = subprocess.Popen(
        [exe, "s_client", "-connect", f"127.0.0.1:{server.port('starttls', 'mx')}",
         "-starttls", "smtp", "-crlf", "-quiet", "-servername", HOSTNAME,
         "-CAfile", str(server.cert), "-verify_return_error", "-ign_eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, bufsize=1,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None

    def expect(code: str) -> str:
        while True:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"connection closed waiting for {code}"
            if line.startswith(code + " "):
                return line

    try:
        proc.stdin.write("EHLO openssl.test\n")
        expect("250")
        for command, code in (("MAIL FROM:<a@elsewhere.example>", "250"),
                              (f"RCPT TO:<bob@{HOSTNAME}>", "250"), ("DATA", "354")):
            proc.stdin.write(command + "\n")
            expect(code)
        proc.stdin.write("Subject: openssl\n\nvia s_client\n.\n")
        queued = expect("250")
        proc.stdin.write("QUIT\n")
        expect("221")
        stderr = ""
    finally:
        proc.stdin.close()
        proc.wait(10)
        if proc.stderr is not None:
            stderr = proc.stderr.read()
            proc.stderr.close()
        proc.stdout.close()
    match = QUEUED_RE.search(queued)
    assert match, queued
    _, message = fetch(server, match[1])
    stamp = parse_received(received_of(message))
    assert stamp.tls is TLSStatus.YES
    assert stamp.tls_version == "TLSv1.3"
    assert "verify error" not in stderr
    assert message.endswith(b"Subject: openssl\r\n\r\nvia s_client\r\n")


# --- msmtp --------------------------------------------------------------------------------


@pytest.mark.parametrize("implicit", [True, False])
def test_msmtp(server: RunningServer, tmp_path: Path, implicit: bool) -> None:
    exe = require_peer("msmtp")
    mode = "implicit-tls" if implicit else "starttls"
    rc = tmp_path / "msmtprc"
    log = tmp_path / "msmtp.log"
    rc.write_text(
        "account default\n"
        "host 127.0.0.1\n"
        f"port {server.port(mode, 'submission')}\n"
        "tls on\n"
        f"tls_starttls {'off' if implicit else 'on'}\n"
        f"tls_trust_file {server.cert}\n"
        f"tls_host_override {HOSTNAME}\n"
        "auth plain\n"
        f"user {USER}\n"
        f"password {PASSWORD}\n"
        f"from {USER_ADDRESS}\n"
        "domain msmtp.test\n"
        f"logfile {log}\n"
    )
    rc.chmod(0o600)
    tag = f"msmtp-{mode}"
    done = subprocess.run([exe, "-C", str(rc), "--debug", f"bob@{HOSTNAME}"], input=body(tag),
                          capture_output=True, timeout=60, check=False)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out
    match = QUEUED_RE.search(out)
    assert match, out
    # msmtp --debug prints "TLS session parameters: (TLS1.3)-(ECDHE-SECP256R1)-...".
    _, message = fetch(server, match[1])
    check_tls_received(message, version="TLSv1.3", cipher=parse_received(
        received_of(message)).cipher or "", protocol="ESMTPSA")
    assert "TLS1.3" in out
    assert message.endswith(body(tag))


# --- Postfix smtp-source ------------------------------------------------------------------


def test_smtp_source_plain_load(server: RunningServer) -> None:
    exe = require_peer("smtp-source")
    spool = server.spool()
    before = set(spool.list())
    done = subprocess.run(
        [exe, "-s", "5", "-m", "40", "-l", "2000", "-f", "source@elsewhere.example",
         "-t", f"bob@{HOSTNAME}", "-M", "source.test", f"127.0.0.1:{server.port('plain', 'mx')}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    new = set(spool.list()) - before
    assert len(new) == 40
    for spool_id in new:
        entry = spool.get(spool_id)
        assert entry.envelope.mail_from == "source@elsewhere.example"
        assert entry.envelope.helo == "source.test"
