"""Interop: ``mailmoat.net.smtp_client.send_message`` out to a real aiosmtpd server.

aiosmtpd is the independent peer: what it recorded (envelope, content, whether TLS and AUTH
happened) must equal what we meant to send. Certificates come from trustme; the expected
subject/issuer are read from those certificates with ``cryptography``, not from our output.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mailmoat.net.smtp_client import SendError, Timeouts, probe, send_message, send_message_sync

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")
trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nHello.\r\n.dot\r\n"
FAST = Timeouts.uniform(10)


class Handler:
    """Records every accepted envelope; refuses recipients/content on request."""

    def __init__(self, *, data_reply: str = "250 2.0.0 OK", refuse: dict[str, str] | None = None):
        self.envelopes: list[Any] = []
        self.tls: list[bool] = []
        self.data_reply = data_reply
        self.refuse = refuse or {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply.startswith("250"):
            self.envelopes.append(envelope)
            self.tls.append(server.transport.get_extra_info("ssl_object") is not None)
        return self.data_reply


class Auth:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        self.calls.append((mechanism, data.login))
        ok = data.login == b"user" and data.password == b"s3cret pass"
        # handled=False: aiosmtpd then answers 535 itself.
        return aiosmtpd_smtp.AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def cafile(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _server_context(ca: Any, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def _start(handler: Any, **kwargs: Any) -> Iterator[Any]:
    controller = aiosmtpd_controller.Controller(
        handler, hostname="127.0.0.1", port=_free_port(), **kwargs
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def auth() -> Auth:
    return Auth()


@pytest.fixture
def starttls_server(ca: Any, handler: Handler, auth: Auth) -> Iterator[Any]:
    yield from _start(
        handler, tls_context=_server_context(ca, "localhost", "127.0.0.1"),
        require_starttls=True, authenticator=auth, auth_require_tls=True,
    )


@pytest.fixture
def implicit_server(ca: Any, handler: Handler, auth: Auth) -> Iterator[Any]:
    yield from _start(
        handler, ssl_context=_server_context(ca, "localhost", "127.0.0.1"),
        server_hostname="localhost", authenticator=auth,
        # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; this port is all TLS.
        auth_require_tls=False,
    )


@pytest.fixture
def plain_server(handler: Handler) -> Iterator[Any]:
    yield from _start(handler, enable_SMTPUTF8=True)


def _leaf_and_ca(ca: Any, controller: Any) -> tuple[str, str]:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    return ca_cert.subject.rfc4514_string(), ca_cert.issuer.rfc4514_string()


async def test_starttls_verified_with_trustme_ca(
    starttls_server: Any, handler: Handler, ca: Any, cafile: Path
) -> None:
    result = await send_message(
        MESSAGE, mail_from="a@example.org", rcpt_to=["b@example.net", "c@example.net"],
        host="127.0.0.1", port=starttls_server.port, server_name="localhost", cafile=cafile,
        helo="client.example.org", timeouts=FAST,
    )
    [envelope] = handler.envelopes
    assert envelope.content == MESSAGE
    assert envelope.mail_from == "a@example.org"
    assert envelope.rcpt_tos == ["b@example.net", "c@example.net"]
    assert handler.tls == [True]
    assert result.accepted == ("b@example.net", "c@example.net")
    assert result.final_reply.code == 250
    session = result.session
    assert session.ehlo_before_tls is not None
    assert "STARTTLS" in session.ehlo_before_tls
    assert session.ehlo_after_tls is not None
    assert "STARTTLS" not in session.ehlo_after_tls
    tls = session.tls
    assert tls is not None
    assert tls.verified is True
    assert tls.verify_error is None
    assert tls.version in ("TLSv1.2", "TLSv1.3")
    assert tls.bits >= 128
    ca_subject, _ = _leaf_and_ca(ca, starttls_server)
    assert tls.issuer == ca_subject  # the trustme CA signed the server certificate
    assert "localhost" in tls.san
    assert "127.0.0.1" in tls.san
    assert tls.server_name == "localhost"


async def test_implicit_tls_verified(implicit_server: Any, handler: Handler, cafile: Path) -> None:
    result = await send_message(
        MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
        port=implicit_server.port, mode="implicit-tls", server_name="localhost", cafile=cafile,
        timeouts=FAST,
    )
    assert [e.content for e in handler.envelopes] == [MESSAGE]
    assert handler.tls == [True]
    assert result.session.tls is not None
    assert result.session.tls.verified
    assert result.session.ehlo_before_tls is None
    assert result.session.ehlo_after_tls is not None


async def test_ip_address_checked_against_ip_san(
    starttls_server: Any, handler: Handler, cafile: Path
) -> None:
    result = await send_message(
        MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
        port=starttls_server.port, cafile=cafile, timeouts=FAST,
    )
    assert result.session.tls is not None
    assert result.session.tls.verified
    assert len(handler.envelopes) == 1


@pytest.mark.parametrize("mode", ["starttls", "implicit-tls"])
async def test_wrong_hostname_is_a_clear_verification_failure(
    ca: Any, cafile: Path, handler: Handler, mode: str
) -> None:
    context = _server_context(ca, "other.example")
    kwargs: dict[str, Any] = (
        {"tls_context": context, "require_starttls": True} if mode == "starttls"
        else {"ssl_context": context, "server_hostname": "other.example"}
    )
    for controller in _start(handler, **kwargs):
        with pytest.raises(SendError) as info:
            await send_message(
                MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
                port=controller.port, mode=mode, server_name="mx.example.net", cafile=cafile,  # type: ignore[arg-type]
                timeouts=FAST,
            )
    err = info.value
    assert err.stage == "tls"
    assert err.temporary
    assert "certificate verification failed" in str(err)
    assert "mx.example.net" in str(err)
    assert "Hostname mismatch" in str(err)
    assert handler.envelopes == []


async def test_untrusted_ca_fails_verification(starttls_server: Any, handler: Handler) -> None:
    with pytest.raises(SendError) as info:
        await send_message(
            MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
            port=starttls_server.port, server_name="localhost", timeouts=FAST,
        )
    assert info.value.stage == "tls"
    assert "unable to get local issuer certificate" in str(info.value)
    assert handler.envelopes == []


async def test_no_verify_sends_and_reports_unverified(
    starttls_server: Any, handler: Handler
) -> None:
    result = await send_message(
        MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
        port=starttls_server.port, server_name="localhost", verify=False, timeouts=FAST,
    )
    assert len(handler.envelopes) == 1
    tls = result.session.tls
    assert tls is not None
    assert tls.verified is False
    # Against the system store the trustme CA is unknown: the check says so.
    assert tls.verify_error is not None
    assert "verification disabled" in tls.verify_error
    assert "would verify" not in tls.verify_error


async def test_no_verify_with_cafile_says_it_would_verify(
    starttls_server: Any, cafile: Path
) -> None:
    result = await send_message(
        MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
        port=starttls_server.port, server_name="localhost", verify=False, cafile=cafile,
        timeouts=FAST,
    )
    tls = result.session.tls
    assert tls is not None
    assert not tls.verified
    assert tls.verify_error is not None
    assert "would verify for localhost" in tls.verify_error


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_over_starttls(
    starttls_server: Any, handler: Handler, auth: Auth, cafile: Path, mechanism: str
) -> None:
    result = await send_message(
        MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
        port=starttls_server.port, server_name="localhost", cafile=cafile,
        username="user", password="s3cret pass", auth_mechanism=mechanism,  # type: ignore[arg-type]
        timeouts=FAST,
    )
    assert auth.calls == [(mechanism, b"user")]
    assert result.session.auth_mechanism == mechanism
    assert result.session.auth_reply is not None
    assert result.session.auth_reply.code == 235
    assert len(handler.envelopes) == 1


async def test_auth_implicit_tls(implicit_server: Any, auth: Auth, cafile: Path) -> None:
    await send_message(
        MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
        port=implicit_server.port, mode="implicit-tls", server_name="localhost", cafile=cafile,
        username="user", password="s3cret pass", timeouts=FAST,
    )
    assert auth.calls == [("PLAIN", b"user")]


async def test_wrong_password_is_permanent(
    starttls_server: Any, handler: Handler, cafile: Path
) -> None:
    with pytest.raises(SendError) as info:
        await send_message(
            MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
            port=starttls_server.port, server_name="localhost", cafile=cafile,
            username="user", password="wrong", timeouts=FAST,
        )
    assert info.value.stage == "auth"
    assert info.value.reply is not None
    assert info.value.reply.code == 535
    assert not info.value.temporary
    assert handler.envelopes == []


async def test_no_credentials_in_cleartext(handler: Handler, auth: Auth) -> None:
    for controller in _start(handler, authenticator=auth, auth_require_tls=False):
        with pytest.raises(SendError) as info:
            await send_message(
                MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
                port=controller.port, mode="plain", username="user", password="s3cret pass",
                timeouts=FAST,
            )
        assert info.value.stage == "auth"
        assert auth.calls == []  # nothing left our side
        # Explicitly allowed: it goes through.
        await send_message(
            MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
            port=controller.port, mode="plain", username="user", password="s3cret pass",
            allow_plaintext_auth=True, timeouts=FAST,
        )
        assert auth.calls == [("PLAIN", b"user")]


async def test_starttls_required_but_not_offered(plain_server: Any, handler: Handler) -> None:
    with pytest.raises(SendError) as info:
        await send_message(
            MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
            port=plain_server.port, timeouts=FAST,
        )
    assert info.value.stage == "starttls"
    assert info.value.temporary
    assert handler.envelopes == []
    result = await send_message(
        MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
        port=plain_server.port, starttls="opportunistic", timeouts=FAST,
    )
    assert result.session.tls is None
    assert handler.tls == [False]


async def test_smtputf8(plain_server: Any, handler: Handler) -> None:
    message = "Subject: café\r\n\r\nx\r\n".encode()
    await send_message(
        message, mail_from="jöran@bücher.example", rcpt_to="пример@пример.рф",
        host="127.0.0.1", port=plain_server.port, mode="plain", timeouts=FAST,
    )
    [envelope] = handler.envelopes
    assert envelope.mail_from == "jöran@bücher.example"
    assert envelope.rcpt_tos == ["пример@пример.рф"]
    assert "SMTPUTF8" in envelope.mail_options


async def test_smtputf8_not_offered(handler: Handler) -> None:
    for controller in _start(handler, enable_SMTPUTF8=False):
        with pytest.raises(SendError) as info:
            await send_message(
                MESSAGE, mail_from="jöran@bücher.example", rcpt_to="b@example.net",
                host="127.0.0.1", port=controller.port, mode="plain", timeouts=FAST,
            )
        assert info.value.stage == "smtputf8"
        assert not info.value.temporary
        assert "SMTPUTF8" in str(info.value)
        with pytest.raises(SendError) as info:
            await send_message(
                "Subject: café\r\n\r\nx\r\n".encode(), mail_from="a@example.org",
                rcpt_to="b@example.net", host="127.0.0.1", port=controller.port, mode="plain",
                timeouts=FAST,
            )
        assert "header fields" in str(info.value)
    assert handler.envelopes == []


async def test_size_refused_before_sending(handler: Handler) -> None:
    for controller in _start(handler, data_size_limit=1000):
        with pytest.raises(SendError) as info:
            await send_message(
                b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n", mail_from="a@example.org",
                rcpt_to="b@example.net", host="127.0.0.1", port=controller.port, mode="plain",
                timeouts=FAST,
            )
        assert info.value.stage == "size"
        assert "1000" in str(info.value)
        # A smaller one goes, with SIZE= declared.
        await send_message(
            MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
            port=controller.port, mode="plain", timeouts=FAST,
        )
    [envelope] = handler.envelopes
    assert f"SIZE={len(MESSAGE)}" in envelope.mail_options


async def test_some_recipients_refused() -> None:
    handler = Handler(refuse={"gone@example.net": "550 5.1.1 No such user"})
    for controller in _start(handler):
        result = await send_message(
            MESSAGE, mail_from="a@example.org", rcpt_to=["b@example.net", "gone@example.net"],
            host="127.0.0.1", port=controller.port, mode="plain", timeouts=FAST,
        )
    assert result.accepted == ("b@example.net",)
    [refused] = result.refused
    assert refused.address == "gone@example.net"
    assert refused.reply.code == 550
    assert [e.rcpt_tos for e in handler.envelopes] == [["b@example.net"]]


@pytest.mark.parametrize(("code", "temporary"), [("550 5.1.1 No", False), ("450 4.2.1 Later", True)])
async def test_every_recipient_refused(code: str, temporary: bool) -> None:
    handler = Handler(refuse={"b@example.net": code})
    for controller in _start(handler):
        with pytest.raises(SendError) as info:
            await send_message(
                MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net",
                host="127.0.0.1", port=controller.port, mode="plain", timeouts=FAST,
            )
    assert info.value.stage == "rcpt"
    assert info.value.temporary is temporary
    assert [r.reply.code for r in info.value.recipients] == [int(code[:3])]
    assert handler.envelopes == []


@pytest.mark.parametrize(
    ("reply", "temporary"), [("554 5.7.1 Spam", False), ("451 4.3.0 Try later", True)]
)
async def test_message_refused(reply: str, temporary: bool) -> None:
    handler = Handler(data_reply=reply)
    for controller in _start(handler):
        with pytest.raises(SendError) as info:
            await send_message(
                MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net",
                host="127.0.0.1", port=controller.port, mode="plain", timeouts=FAST,
            )
    assert info.value.stage == "message"
    assert info.value.temporary is temporary
    assert info.value.reply is not None
    assert info.value.reply.code == int(reply[:3])


async def test_queue_id_from_final_reply() -> None:
    handler = Handler(data_reply="250 2.0.0 Ok: queued as 4QxYz12AbC")
    for controller in _start(handler):
        result = await send_message(
            MESSAGE, mail_from=None, rcpt_to="b@example.net",
            host="127.0.0.1", port=controller.port, mode="plain", timeouts=FAST,
        )
    assert result.queue_id == "4QxYz12AbC"
    assert handler.envelopes[0].mail_from == "<>"


def test_sync_wrapper(plain_server: Any, handler: Handler) -> None:
    result = send_message_sync(
        MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
        port=plain_server.port, mode="plain", timeouts=FAST,
    )
    assert result.final_reply.code == 250
    assert [e.content for e in handler.envelopes] == [MESSAGE]


async def test_sync_wrapper_refuses_inside_a_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        send_message_sync(MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net",
                          host="127.0.0.1", port=1)


async def test_probe_reports_certificate_without_sending(
    starttls_server: Any, handler: Handler, ca: Any, cafile: Path
) -> None:
    session = await probe("127.0.0.1", port=starttls_server.port, server_name="localhost",
                          cafile=cafile, helo="probe.example.org", timeouts=FAST)
    assert session.ehlo_before_tls is not None
    assert "STARTTLS" in session.ehlo_before_tls
    assert session.ehlo_after_tls is not None
    assert "AUTH" in session.ehlo_after_tls  # aiosmtpd offers AUTH only after TLS
    tls = session.tls
    assert tls is not None
    assert not tls.verified  # the probe does not enforce ...
    assert tls.verify_error is not None
    assert "would verify for localhost" in tls.verify_error  # ... but reports
    ca_subject, _ = _leaf_and_ca(ca, starttls_server)
    assert tls.issuer == ca_subject
    assert handler.envelopes == []
    # Against the wrong name the check says why.
    session = await probe("127.0.0.1", port=starttls_server.port, server_name="mx.example.net",
                          cafile=cafile, timeouts=FAST)
    assert session.tls is not None
    assert session.tls.verify_error is not None
    assert "would verify" not in session.tls.verify_error


async def test_probe_without_starttls(plain_server: Any) -> None:
    session = await probe("127.0.0.1", port=plain_server.port, timeouts=FAST)
    assert session.tls is None
    assert session.ehlo_before_tls is not None
    assert "STARTTLS" not in session.ehlo_before_tls


async def test_intermediate_chain_is_read_and_checked(ca: Any, cafile: Path) -> None:
    # The server sends leaf + intermediate; only the root is trusted. OpenSSL verifies it,
    # and the unverified path's own check must see the intermediate too.
    child = ca.create_child_ca()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    child.issue_cert("localhost").configure_cert(context)
    handler = Handler()
    for controller in _start(handler, tls_context=context, require_starttls=True):
        verified = await send_message(
            MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
            port=controller.port, server_name="localhost", cafile=cafile, timeouts=FAST,
        )
        unverified = await send_message(
            MESSAGE, mail_from="a@example.org", rcpt_to="b@example.net", host="127.0.0.1",
            port=controller.port, server_name="localhost", cafile=cafile, verify=False,
            timeouts=FAST,
        )
    assert verified.session.tls is not None
    assert verified.session.tls.verified
    tls = unverified.session.tls
    assert tls is not None
    assert tls.verify_error is not None
    assert "would verify for localhost" in tls.verify_error
    child_subject = x509.load_pem_x509_certificate(child.cert_pem.bytes()).subject
    assert tls.issuer == child_subject.rfc4514_string()
    assert len(handler.envelopes) == 2
