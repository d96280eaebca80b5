"""The `keyturn` command. Subcommands load lazily from the side that implements them, so a
zone worker installed with `keyturn[worker]` runs without Flask or peewee."""
from __future__ import annotations

import importlib
import os
import sys

import click

from shared.errors import KeyturnError
from shared.settings import SettingsError


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (click's documented pattern)."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module_name, attr = self.lazy[name].split(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            if (exc.name or "").split(".")[0] in OWN_PACKAGES:
                raise
            side = module_name.split(".")[0]
            return unavailable(name, f"`{name}` needs the {side} part: "
                                     f"pip install 'keyturn[{side}]' ({exc.name} is missing)")


def unavailable(name: str, message: str) -> click.Command:
    """A stand-in for a command whose dependencies are not installed: help says so, use fails."""

    def fail(**_):
        raise click.ClickException(message)

    return click.Command(name, callback=fail, help=message, add_help_option=False,
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


OWN_PACKAGES = ("controller", "worker", "shared")


CONTROLLER = "controller.cli"
ZONE_COMMANDS = {"add": f"{CONTROLLER}:zone_add", "list": f"{CONTROLLER}:zone_list",
                 "edit": f"{CONTROLLER}:zone_edit", "delete": f"{CONTROLLER}:zone_delete",
                 "keygen": "worker.cli:zone_keygen",
                 "broker-account": "shared.broker_accounts:zone_command"}
COMMANDS = {name: f"{CONTROLLER}:{name}" for name in (
    "init", "asset", "account", "node", "plan", "execution", "records", "secret", "daemon",
    "serve")}
COMMANDS["worker"] = "worker.cli:worker"
COMMANDS["user"] = "controller.web.cli:user"
COMMANDS["broker-account"] = "shared.broker_accounts:broker_account"
COMMANDS["integration"] = "controller.integration_cli:integration"
COMMANDS["webhook"] = "controller.integration_cli:webhook"


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="keyturn")
def cli():
    """keyturn: rotate account secrets across a fleet."""


@cli.group(cls=LazyGroup, lazy=ZONE_COMMANDS)
def zone():
    """Network zones: their keys and their workers."""


def main() -> None:
    """Entry point: known failures become one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        show_error(exc)
        sys.exit(exc.exit_code)
    except SettingsError as exc:
        click.echo(f"keyturn: bad setting {exc}", err=True)
        sys.exit(2)
    except KeyturnError as exc:
        click.echo(f"keyturn: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:   # an operator gets one line; KEYTURN_TRACEBACK=1 shows the rest
        if os.environ.get("KEYTURN_TRACEBACK"):
            raise
        click.echo(f"keyturn: {type(exc).__name__}: {exc}".splitlines()[0], err=True)
        sys.exit(1)


def show_error(exc: click.ClickException) -> None:
    """Every error as `keyturn: <what> (<why>)` on stderr, click's own too (it says `Error:`);
    a usage error first shows the command's usage and where help is."""
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        click.echo(exc.ctx.get_usage(), err=True)
        click.echo(f"Try '{exc.ctx.command_path} {exc.ctx.help_option_names[0]}' for help.",
                   err=True)
    click.echo(f"keyturn: {exc.format_message()}", err=True)


if __name__ == "__main__":
    main()
