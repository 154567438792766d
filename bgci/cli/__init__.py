"""bgci's command line: a thin click layer over the library.

Commands live one concept per module and are imported only when called, so
`bgci test` does not pay for importing the Marathon client or the router.
Every command raises; :func:`main` turns a BgciError into `Error: ...` on
stderr and the error's exit code.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Sequence

import click

from bgci import __version__
from bgci.cli.common import AppContext, terminate_as_interrupt
from bgci.errors import BgciError, first_line

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
    "analyze": "bgci.cli.metrics_cmds:analyze",
    "exporter": "bgci.cli.metrics_cmds:exporter",
    "targets": "bgci.cli.metrics_cmds:targets",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used (click's documented lazy-loading pattern)."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module_name, attribute = self.lazy[name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
                raise  # bgci's own module is missing: a broken install, not a user error
            raise click.ClickException(f"`bgci {name}` needs the Python package {exc.name!r}, which is not "
                                       f"installed (reinstall bgci: pip install bgci)") from None
        return getattr(module, attribute)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="BGCI_CONFIG",
              help="Path to bgci.toml (default: found in the current directory or its parents).")
@click.option("-q", "--quiet", is_flag=True, help="Print only results, no progress.")
@click.version_option(__version__, prog_name="bgci")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, quiet: bool) -> None:
    """Blue-green CI for Docker web apps: build, test, deploy and promote by git sha."""
    ctx.obj = AppContext(config_file=config_file, quiet=quiet)


def import_command(argv: Sequence[str]) -> None:
    """Import the module of the first argument that names a command, as click would a moment later
    (bgci.console does it while the cycle collector is paused). A missing dependency is left for
    click's turn to report; an option's value that only looks like a command costs an import."""
    for arg in argv:
        if arg in COMMANDS:
            with contextlib.suppress(ImportError):
                importlib.import_module(COMMANDS[arg].partition(":")[0])
            return


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, map errors to one line on stderr and an exit code.

    SIGTERM (how Jenkins aborts a build) is handled like Ctrl-C in every command, so the same
    cleanups run: no container, tag or half-written nginx file is left behind.
    """
    with terminate_as_interrupt():
        try:
            code = cli.main(args=argv, prog_name="bgci", standalone_mode=False)
            if isinstance(code, int) and code:  # ctx.exit(n): click returns n rather than exiting
                sys.exit(code)
        except BgciError as exc:
            click.echo(f"Error: {describe_error(exc, sys.argv[1:] if argv is None else argv)}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except KeyboardInterrupt:  # outside a command (click turns one inside into Abort)
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:
            if not _is_outside_fault(exc):
                raise  # a bug in bgci: the traceback is what a report needs
            click.echo(f"Error: {type(exc).__name__}: {first_line(exc)}", err=True)
            sys.exit(1)


def _is_outside_fault(exc: Exception) -> bool:
    """A file, network, engine or registry fault the library did not turn into a BgciError itself."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("docker", "requests", "urllib3")


def describe_error(exc: BgciError, argv: list[str]) -> str:
    """The error's one line, led by the flag that set the input at fault when the user gave that flag
    (library errors name the input, `sha`, not the flag; the input may have come from bgci.toml)."""
    flag = f"--{exc.option.replace('_', '-')}" if exc.option else ""
    given = flag and any(arg == flag or arg.startswith(flag + "=") for arg in argv)
    return f"{flag}: {exc}" if given else str(exc)
