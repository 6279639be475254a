"""A static HTTPS server for tests: MTA-STS policies (RFC 8461 §3.2) and other fixed files
(a BIMI logo), served on loopback under a trustme CA.

Use from a test module in tests/interop/::

    from https_fixture import StaticHTTPS, mta_sts_files, serve_https

    server = StaticHTTPS(("127.0.0.1", 0), mta_sts_files({"mta-sts.example.com": POLICY}))
    with serve_https(server, ca, ["mta-sts.example.com"]) as port:
        ...  # https://mta-sts.example.com:{port}/.well-known/mta-sts.txt, SNI and all

Files are keyed by ``(Host without the port, lower-case; path)``; anything else is a 404.
The server runs in a daemon thread and is shut down and closed when the block ends.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["MTA_STS_PATH", "StaticHTTPS", "mta_sts_files", "serve_https"]

#: RFC 8461 §3.3: where a policy host serves the policy
MTA_STS_PATH = "/.well-known/mta-sts.txt"


class _Handler(BaseHTTPRequestHandler):
    server: StaticHTTPS

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        found = self.server.files.get((host, self.path))
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        content_type, body = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class StaticHTTPS(ThreadingHTTPServer):
    """Serves ``files``: ``(host, path) -> (content type, body)``; binds on construction."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int],
                 files: Mapping[tuple[str, str], tuple[str, bytes]]) -> None:
        super().__init__(address, _Handler)
        self.files = dict(files)


def mta_sts_files(policies: Mapping[str, bytes]) -> dict[tuple[str, str], tuple[str, bytes]]:
    """``policy host -> policy text`` as the files of a policy server (``text/plain``)."""
    return {(host.lower(), MTA_STS_PATH): ("text/plain", body)
            for host, body in policies.items()}


@contextlib.contextmanager
def serve_https(server: StaticHTTPS, ca: Any, names: Iterable[str]) -> Iterator[int]:
    """TLS with a certificate from ``ca`` (a ``trustme.CA``) for ``names``; serve until the
    block ends, then close ``server`` (also when the start fails). Yields the bound port."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield int(server.server_address[1])
        finally:
            server.shutdown()
            thread.join(5)
    finally:
        server.server_close()
