"""What every command shares: settings, the application object, progress output, --json and --scheduler."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bgci.config import Settings, load_settings
from bgci.schedulers import BACKENDS

if TYPE_CHECKING:
    import docker

    from bgci.app import Bgci

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
scheduler_option = click.option(
    "--scheduler", type=click.Choice(sorted(BACKENDS)), default=None,
    help="Scheduler backend (default: deploy.scheduler in bgci.toml, or BGCI_SCHEDULER).")


@dataclass
class AppContext:
    """The context object (click's ctx.obj): built once, clients made on first use."""

    config_file: str | None = None
    quiet: bool = False
    _bgci: Bgci | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(Path(self.config_file) if self.config_file else None)

    @cached_property
    def docker(self) -> docker.DockerClient:
        return self.bgci().docker

    def bgci(self, scheduler: str | None = None, force: bool = False) -> Bgci:
        """The application object for this app (one per command run; the options of the first call win)."""
        if self._bgci is None:
            from bgci.app import Bgci

            self._bgci = Bgci(self.settings, scheduler=scheduler, force=force, log=self.log)
        return self._bgci

    def log(self, message: str) -> None:
        """Progress for humans: stderr, so stdout stays the result."""
        if not self.quiet:
            click.echo(message, err=True)


pass_app = click.make_pass_decorator(AppContext)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Jenkins aborts a build with SIGTERM: raise KeyboardInterrupt instead of dying, so cleanups run.

    Jenkins signals the step's process group and each process of the build, and again those still
    there when the step has ended: only the first SIGTERM interrupts. A later one would cut short the
    cleanup the first started; Jenkins' SIGKILL after its grace period is the hard stop.
    """
    interrupted = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def emit(value: Any, as_json: bool, text: str | None = None) -> None:
    """Print a result: JSON for machines, else `text` (default: str(value))."""
    if as_json:
        click.echo(json.dumps(_plain(value), indent=2, sort_keys=True, default=str))
    else:
        click.echo(text if text is not None else str(value))
    sys.stdout.flush()


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in asdict(value).items() if k != "attrs"}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_key_values(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """KEY=VALUE pairs from a repeated option; a clear usage error otherwise."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        result[key] = value
    return result
