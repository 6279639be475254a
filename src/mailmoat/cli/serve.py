"""``mailmoat serve``: run the gateway.

Without ``--config``: ``DATA_DIR/config.toml`` is used, and created on the first run together
with a self-signed ECDSA P-256 certificate and an empty users file (see
:func:`mailmoat.gateway.config.default_config` for the ports: 465/587/25/2525 as root,
2465/2587/2525 otherwise). ``DATA_DIR`` defaults to ``/var/lib/mailmoat`` as root, else
``~/.local/share/mailmoat``.

The gateway delivers what it accepts (:mod:`mailmoat.gateway.runtime`): mail for
``relay.local_domains`` goes to ``[delivery] destination`` (default: Maildirs under
``DATA_DIR/mail/<domain>/<user>``), other mail to the recipient domain's MX. The store
(verdicts and the delivery queue, ``mailmoat queue``) is ``store.url``, default
``DATA_DIR/mailmoat.db``. With ``[submission_api] enabled`` the HTTP submission API runs in
worker slot 0.

Signals: SIGHUP reloads the certificates and the users file; SIGTERM/SIGINT stop gracefully.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from mailmoat.errors import ConfigError, SpoolError, StoreError, TLSConfigError
from mailmoat.gateway.config import Config, default_config, load_config


def _print_dkim_records(config: Config) -> None:
    """The TXT records receivers need to verify what we sign (the first run made a key)."""
    from mailmoat.auth.dkim import key_record, txt_strings
    from mailmoat.gateway.pipeline import signing_keys_from_config

    for key in signing_keys_from_config(config):
        strings = " ".join(f'"{part}"' for part in txt_strings(key_record(key.key)))
        click.echo(f"mailmoat: DKIM signing d={key.domain} s={key.selector}; publish: "
                   f"{key.selector}._domainkey.{key.domain}. IN TXT ( {strings} )")


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config file (default: DATA_DIR/config.toml, created on first run).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory for the first-run config, certificate and spool.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes sharing the listeners (default: server.workers, i.e. "
                   "the number of CPUs).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Log level (one line per decision at info).")
@click.option("--grace", type=click.FloatRange(0, 3600), default=30.0, show_default=True,
              help="Seconds a graceful stop waits for sessions in a transaction.")
def serve(config_file: Path | None, data_dir: Path | None, workers: int | None,
          log_level: str, grace: float) -> None:
    """Run the mail gateway: SMTP listeners (SMTPS, STARTTLS, submission with AUTH), the
    durable spool and the delivery queue (local Maildir/LMTP/SMTP destination, MX)."""
    from mailmoat.gateway.server import serve as run
    from mailmoat.web.submit import start_from_config

    logging.basicConfig(
        level=getattr(logging, log_level.upper()), stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    try:
        if config_file is not None:
            config = load_config(config_file)
        else:
            config, created = default_config(data_dir)
            click.echo(f"mailmoat: config {created}")
            _print_dkim_records(config)
        code = run(config, workers=workers, grace=grace, api=start_from_config)
    except (ConfigError, TLSConfigError, SpoolError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:  # pragma: no cover - interactive
        code = 0
    if code:
        raise SystemExit(code)
