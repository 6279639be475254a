"""Interop: ``mailmoat send --mx`` with real DNS (Knot) and a real receiving server (aiosmtpd).

The zone names two MX hosts: the preferred one's address has no server (127.0.0.2), so the
client must move on to the second (RFC 5321 §5.1), whose certificate is issued for its MX
name and verified against it. A domain with a null MX (RFC 7505) is refused without a
connection.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from knot_fixture import KnotServer, knot_server  # noqa: F401  (fixture)

from mailmoat.cli.main import main

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
trustme = pytest.importorskip("trustme")

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.timeout(120)]

ZONE = """
$ORIGIN example.net.
$TTL 300
@       3600 IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60
             IN NS  ns1
             IN MX  10 mx1
             IN MX  20 mx2
ns1          IN A   127.0.0.1
mx1          IN A   127.0.0.2
mx2          IN A   127.0.0.1
nullmx       IN MX  0 .
"""

MESSAGE = b"Subject: via mx\r\nDate: Sat, 28 Nov 2026 21:00:00 +0000\r\nMessage-ID: <mx@example.org>\r\n\r\nHello.\r\n"


class Handler:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def mx2(tmp_path: Path) -> Iterator[tuple[Any, Handler, Path]]:
    ca = trustme.CA()
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx2.example.net").configure_cert(context)
    handler = Handler()
    controller = aiosmtpd_controller.Controller(
        handler, hostname="127.0.0.1", port=_free_port(), tls_context=context,
        require_starttls=True,
    )
    controller.start()
    try:
        yield controller, handler, cafile
    finally:
        controller.stop()


def test_send_via_mx(
    knot_server: Callable[..., KnotServer],  # noqa: F811
    mx2: tuple[Any, Handler, Path],
) -> None:
    dns = knot_server({"example.net": ZONE})
    controller, handler, cafile = mx2
    result = CliRunner().invoke(main, [
        "send", "--mx", "--resolver", dns.address, "--port", str(controller.port),
        "--cafile", str(cafile), "--from", "a@example.org", "--to", "b@example.net",
        "--helo", "client.example.org", "--timeout", "10",
    ], input=MESSAGE)
    assert result.exit_code == 0, result.output
    assert "Name (SNI)  mx2.example.net" in result.output
    assert "Verified    yes (chain and name mx2.example.net)" in result.output
    assert [e.content for e in handler.envelopes] == [MESSAGE]


def test_null_mx_is_refused(
    knot_server: Callable[..., KnotServer],  # noqa: F811
) -> None:
    dns = knot_server({"example.net": ZONE})
    result = CliRunner().invoke(main, [
        "send", "--mx", "--resolver", dns.address, "--from", "a@example.org",
        "--to", "b@nullmx.example.net", "--timeout", "10",
    ], input=MESSAGE)
    assert result.exit_code == 1, result.output
    assert "null MX" in result.output
