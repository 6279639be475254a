"""``mailmoat`` command group.

Each subcommand lives in its own module under ``mailmoat.cli`` and is loaded lazily, so that
``mailmoat --help`` stays fast and one command's heavy imports do not slow another.
"""

from __future__ import annotations

import importlib

import click

from mailmoat import __version__

#: command name -> "module:attribute" of the click command.
COMMANDS: dict[str, str] = {
    "serve": "mailmoat.cli.serve:serve",
    "send": "mailmoat.cli.send:send",
    "user": "mailmoat.cli.user:user",
    "spool": "mailmoat.cli.spool:spool",
    "spf": "mailmoat.cli.spf:spf",
    "dkim": "mailmoat.cli.dkim:dkim",
    "headers": "mailmoat.cli.headers:headers",
    "check": "mailmoat.cli.check:check",
    "verify": "mailmoat.cli.verify:verify",
    "probe": "mailmoat.cli.probe:probe",
    "queue": "mailmoat.cli.queue:queue",
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not built yet
                return None
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailmoat")
def main() -> None:
    """mailmoat: a secure, verifiable mail gateway (SMTPS, SPF/DKIM/DMARC, transport evidence)."""


if __name__ == "__main__":  # python -m mailmoat.cli.main
    main()
