"""Our client (``send_message``) into our own gateway (``mailmoat serve`` as a subprocess).

Closes the loop of issue #3: the message the client was told was queued is in the spool under
the id the server named, byte for byte after the Received field the server prepended, and
that Received field records the same TLS version and cipher the client negotiated.
"""

from __future__ import annotations

from collections.abc import Iterator

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

from mailmoat.net.smtp_client import SendError, SendResult, Timeouts, probe, send_message

pytestmark = pytest.mark.timeout(120)
FAST = Timeouts.uniform(20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_data_dir(tmp_path_factory.mktemp("gw"))
    running = start_server(config)
    yield running
    assert running.stop() == 0


def body(tag: str) -> bytes:
    return (f"From: {USER_ADDRESS}\r\nTo: bob@{HOSTNAME}\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@test>\r\n\r\nbody of {tag}\r\n.dot\r\n").encode()


def spooled(server: RunningServer, result: SendResult) -> bytes:
    assert result.queue_id is not None
    return server.spool().read_message(result.queue_id)


def tls_comment(message: bytes) -> bytes:
    end = message.index(b"\r\n\r\n")
    return message[:end]


async def _send(server: RunningServer, tag: str, mode: str, role: str, **kwargs: object
                ) -> SendResult:
    options: dict[str, object] = {
        "mail_from": USER_ADDRESS, "rcpt_to": [f"bob@{HOSTNAME}"], "host": "127.0.0.1",
        "port": server.port(mode, role), "mode": mode, "server_name": HOSTNAME,
        "cafile": server.cert, "helo": "client.test", "timeouts": FAST,
    }
    options.update(kwargs)
    return await send_message(body(tag), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "mechanism"), [("implicit-tls", "PLAIN"), ("starttls", "LOGIN")])
async def test_submission_with_auth(server: RunningServer, mode: str, mechanism: str) -> None:
    tag = f"send-{mode}-{mechanism}"
    result = await _send(server, tag, mode, "submission", username=USER, password=PASSWORD,
                         auth_mechanism=mechanism)
    tls = result.session.tls
    assert tls is not None
    assert tls.verified
    assert result.session.auth_reply is not None
    assert result.session.auth_reply.code == 235
    message = spooled(server, result)
    sent_head, _, sent_body = body(tag).partition(b"\r\n\r\n")
    assert message.endswith(b"\r\n\r\n" + sent_body)
    head = tls_comment(message)
    # The submitted fields arrive unchanged; the MSA adds the missing Date (RFC 6409 §8.3).
    for line in sent_head.split(b"\r\n"):
        assert b"\r\n" + line + b"\r\n" in head + b"\r\n"
    assert b"\r\nDate: " in head
    assert f"using {tls.version} with cipher {tls.cipher}".encode() in head.replace(b"\r\n", b"")
    assert b"ESMTPSA" in head
    entry = server.spool().get(result.queue_id or "")
    assert entry.envelope.auth_user == USER
    assert entry.envelope.tls is not None
    assert entry.envelope.tls.cipher == tls.cipher


async def test_submission_refuses_us_without_auth(server: RunningServer) -> None:
    with pytest.raises(SendError) as info:
        await _send(server, "noauth", "starttls", "submission", rcpt_to=["x@elsewhere.example"])
    assert info.value.stage in ("mail", "rcpt")
    assert info.value.reply is not None
    assert info.value.reply.code >= 500


async def test_mx_starttls_and_opportunistic_plain(server: RunningServer) -> None:
    result = await _send(server, "send-mx-tls", "starttls", "mx")
    assert result.session.tls is not None
    assert spooled(server, result).endswith(body("send-mx-tls"))
    result = await _send(server, "send-mx-plain", "plain", "mx")
    assert result.session.tls is None
    message = spooled(server, result)
    assert message.endswith(body("send-mx-plain"))
    assert b"using TLS" not in tls_comment(message)


async def test_pipelining_and_bdat_into_our_server(server: RunningServer) -> None:
    result = await _send(server, "send-ext", "starttls", "mx")
    caps = result.session.capabilities
    assert {"PIPELINING", "CHUNKING"} <= set(caps)
    assert result.used_pipelining
    assert result.used_bdat
    assert spooled(server, result).endswith(body("send-ext"))
    without = await _send(server, "send-data", "starttls", "mx", chunking=False)
    assert not without.used_bdat
    assert spooled(server, without).endswith(body("send-data"))


async def test_probe_agrees_with_openssl_on_our_certificate(server: RunningServer) -> None:
    # send_message verified it with OpenSSL (cafile = the server's self-signed certificate);
    # the probe's own check must reach the same answer, and refuse another name.
    session = await probe("127.0.0.1", port=server.port("starttls", "mx"), server_name=HOSTNAME,
                          cafile=server.cert, timeouts=FAST)
    assert session.tls is not None
    assert session.tls.verify_error is not None
    assert f"would verify for {HOSTNAME}" in session.tls.verify_error
    assert session.ehlo_after_tls is not None
    assert "STARTTLS" not in session.ehlo_after_tls
    other = await probe("127.0.0.1", port=server.port("starttls", "mx"), server_name="other.test",
                        cafile=server.cert, timeouts=FAST)
    assert other.tls is not None
    assert other.tls.verify_error is not None
    assert "would verify" not in other.tls.verify_error
