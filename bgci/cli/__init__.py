"""bgci's command line: a thin click layer over the library.

Commands live one concept per module and are imported only when called, so
`bgci test` does not pay for importing the Marathon client or the router.
Every command raises; :func:`main` turns a BgciError into `Error: ...` on
stderr and the error's exit code.
"""

from __future__ import annotations

import importlib
import sys

import click

from bgci import __version__
from bgci.cli.common import AppContext
from bgci.errors import BgciError

# command name -> "module:attribute", loaded on first use
COMMANDS = {
    "sha": "bgci.cli.build_cmds:sha",
    "plan": "bgci.cli.build_cmds:plan",
    "build": "bgci.cli.build_cmds:build",
    "test": "bgci.cli.test_cmds:test",
    "smoke": "bgci.cli.test_cmds:smoke",
    "env": "bgci.cli.env_cmds:env",
    "router": "bgci.cli.router_cmds:router",
    "promote": "bgci.cli.router_cmds:promote",
    "rollback": "bgci.cli.router_cmds:rollback",
    "status": "bgci.cli.router_cmds:status",
    "jobs": "bgci.cli.jobs_cmds:jobs",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used (click's documented lazy-loading pattern)."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attribute = self.lazy[name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError:
                return None  # a command whose module is not there yet
            return getattr(module, attribute)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="BGCI_CONFIG",
              help="Path to bgci.toml (default: found in the current directory or its parents).")
@click.option("-q", "--quiet", is_flag=True, help="Print only results, no progress.")
@click.version_option(__version__, prog_name="bgci")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, quiet: bool) -> None:
    """Blue-green CI for Docker web apps: build, test, deploy and promote by git sha."""
    ctx.obj = AppContext(config_file=config_file, quiet=quiet)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, map errors to one line on stderr and an exit code."""
    try:
        cli.main(args=argv, prog_name="bgci", standalone_mode=False)
    except BgciError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
