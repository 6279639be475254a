"""``mailmoat serve`` as a process: SIGHUP reloads the certificate without dropping a live
connection, SIGTERM stops gracefully (exit 0), and start-up errors name the bad setting.
"""

from __future__ import annotations

import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_fixture import HOSTNAME, ROOT, make_data_dir, start_server

from mailmoat.net.tls import generate_self_signed

pytestmark = pytest.mark.timeout(90)


def served_certificate(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10) as client:
        assert client.sock is not None
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert der is not None
        return der


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_and_sigterm_stops(tmp_path: Path, workers: int) -> None:
    config = make_data_dir(tmp_path / "gw", listeners=(("implicit-tls", "submission"),),
                           workers=workers)
    server = start_server(config, workers=workers)
    try:
        port = server.port("implicit-tls", "submission")
        before = served_certificate(port)
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        live = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10)
        live.ehlo("live.test")
        generate_self_signed(server.cert, server.data_dir / "key.pem", [HOSTNAME])
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        after = before
        while after == before and time.monotonic() < deadline:
            time.sleep(0.2)
            after = served_certificate(port)
        assert after != before
        assert live.noop()[0] == 250  # the connection made before the reload is still up
        live.quit()
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "gw", listeners=(("starttls", "mx"),))
    config.write_text(config.read_text().replace('mode = "starttls"', 'mode = "startls"'))
    done = subprocess.run(
        [sys.executable, "-m", "mailmoat.cli.main", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
    )
    assert done.returncode != 0
    assert "listener[0].mode" in done.stderr


def test_mismatched_key_is_a_clear_error(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "gw", listeners=(("implicit-tls", "submission"),))
    generate_self_signed(tmp_path / "other.pem", tmp_path / "other-key.pem", ["x.test"])
    (config.parent / "key.pem").write_bytes((tmp_path / "other-key.pem").read_bytes())
    done = subprocess.run(
        [sys.executable, "-m", "mailmoat.cli.main", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
    )
    assert done.returncode != 0
    assert "does not match" in done.stderr
