"""bgci sha | plan | build: name a commit, decide its build, build it."""

from __future__ import annotations

from collections.abc import Callable

import click

from bgci import build as builds
from bgci import gitplan
from bgci.cli.common import AppContext, emit, json_option, parse_key_values, pass_app

rev_option = click.option("--rev", default="HEAD", show_default=True, help="Commit, branch or tag to use.")


@click.command()
@rev_option
@click.option("--allow-dirty", is_flag=True, help="Accept uncommitted changes in the work tree.")
@pass_app
def sha(app: AppContext, rev: str, allow_dirty: bool) -> None:
    """Print the full 40-character git sha of REV.

    Refuses a dirty work tree (unless --allow-dirty): an image tag must name exactly what is inside.
    """
    repo = gitplan.open_repo(app.settings.project_dir)
    if not allow_dirty:
        gitplan.ensure_clean(repo)
    click.echo(gitplan.resolve_sha(repo, rev))


@click.command()
@rev_option
@json_option
@pass_app
def plan(app: AppContext, rev: str, as_json: bool) -> None:
    """Say which build REV needs: full, deps or code, and why.

    Compares REV with the commit recorded in the newest from-scratch image.
    """
    source = builds.Source.open(app.settings, rev)
    result = builds.plan_build(app.docker, app.settings, source, app.log)
    emit(result, as_json, "\n".join([result.kind, *(f"  {r}" for r in result.reasons)]))


@click.group()
def build() -> None:
    """Build the production image of a commit (full, delta or auto)."""


def _build_options(*, full: bool) -> Callable[[click.Command], click.Command]:
    """The options of a build command; build arguments and the cache only mean something to `docker build`."""
    options = [rev_option,
               click.option("--push/--no-push", default=None,
                            help="Push to the registry (default: push when a registry is configured).")]
    if full:
        options += [click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
                                 help="Build argument (adds to [build.args]); repeatable."),
                    click.option("--cache/--no-cache", "use_cache", default=True, show_default=True,
                                 help="Use Docker's build cache for a full build (the daily rebuild uses --no-cache).")]
    options += [json_option, pass_app]

    def decorate(command: click.Command) -> click.Command:
        for decorator in reversed(options):
            command = decorator(command)
        return command

    return decorate


@build.command()
@_build_options(full=True)
def full(app: AppContext, rev: str, push: bool | None, build_args: tuple[str, ...], use_cache: bool,
         as_json: bool) -> None:
    """`docker build` of REV: tags <app>-from-scratch:<sha>, :latest and <app>:<sha>."""
    source = builds.Source.open(app.settings, rev)
    result = builds.build_full(app.docker, app.settings, source,
                               build_args=parse_key_values(build_args, "--build-arg"),
                               push=_should_push(app, push), log=app.log, use_cache=use_cache)
    _report(result, as_json)


@build.command()
@_build_options(full=False)
def delta(app: AppContext, rev: str, push: bool | None, as_json: bool) -> None:
    """Lay REV's changes onto the newest from-scratch image (reinstalling deps when they changed)."""
    source = builds.Source.open(app.settings, rev)
    result = builds.build_delta(app.docker, app.settings, source,
                                builds.plan_build(app.docker, app.settings, source, app.log),
                                push=_should_push(app, push), log=app.log)
    _report(result, as_json)


@build.command()
@_build_options(full=True)
def auto(app: AppContext, rev: str, push: bool | None, build_args: tuple[str, ...], use_cache: bool,
         as_json: bool) -> None:
    """Plan, then run the build the plan names (--build-arg and --cache apply when it is a full build)."""
    source = builds.Source.open(app.settings, rev)
    result = builds.build_auto(app.docker, app.settings, source,
                               build_args=parse_key_values(build_args, "--build-arg"),
                               push=_should_push(app, push), log=app.log, use_cache=use_cache)
    _report(result, as_json)


def _should_push(app: AppContext, push: bool | None) -> bool:
    return bool(app.settings.registry.url) if push is None else push


def _report(result: builds.BuildResult, as_json: bool) -> None:
    digest = result.digest or result.image_id
    emit(result, as_json, f"built {result.kind}: {result.reference} {digest}")
