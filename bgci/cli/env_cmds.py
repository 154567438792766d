"""bgci env create | list | show | backends | logs | scale | destroy | prune: environments of the app by git sha.

No prompts anywhere: Jenkins runs these unattended, and `destroy` names one environment exactly.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from typing import Any

import click

from bgci import environments
from bgci.cli.common import AppContext, emit, json_option, parse_key_values, pass_app, scheduler_option
from bgci.environments import SHORT_SHA
from bgci.schedulers.base import Environment, ProgressCallback

timeout_option = click.option("--timeout", type=float, default=None, metavar="SECONDS",
                              help="How long to wait for every instance to be healthy (default: deploy.ready_timeout).")
force_option = click.option("--force", is_flag=True,
                            help="Marathon: override a deployment that locks the app (?force=true) instead of waiting.")


def _check(name: str | None = None, instances: int | None = None, timeout: float | None = None) -> None:
    """Refuse bad input before Docker or Marathon is contacted (the service checks again)."""
    if name is not None:
        environments.validate_name(name)
    if instances is not None:
        environments.validate_instances(instances)
    if timeout is not None:
        environments.validate_timeout(timeout)


def _progress(app: AppContext) -> ProgressCallback:
    """'healthy 2/3 (1.4s)' on stderr, once per change."""
    started, last = time.monotonic(), [(-1, -1)]

    def report(healthy: int, wanted: int) -> None:
        if (healthy, wanted) != last[0]:
            last[0] = (healthy, wanted)
            app.log(f"healthy {healthy}/{wanted} ({time.monotonic() - started:.1f}s)")

    return report


@click.group()
def env() -> None:
    """Environments: one image (by git sha) times N instances, on the local engine or Marathon."""


@env.command()
@click.option("--sha", help="Git sha (40 characters) of a built commit: runs <app>:<sha>.")
@click.option("--image", help="Image reference to run instead (its revision label gives the sha).")
@click.option("--name", help="Environment name (default: <app>-<first 12 of sha>).")
@click.option("--instances", type=int, default=None, help="Number of instances (default: deploy.instances).")
@scheduler_option
@timeout_option
@click.option("--keep-failed", is_flag=True, help="Keep the instances of a failed create for inspection.")
@click.option("--env", "env_vars", multiple=True, metavar="KEY=VALUE", help="Environment variable; repeatable.")
@click.option("--preview/--no-preview", default=True, show_default=True,
              help="Route <env>.<nginx.preview_domain> to it once ready (tested with nginx -t, reloaded).")
@force_option
@json_option
@pass_app
def create(app: AppContext, sha: str | None, image: str | None, name: str | None, instances: int | None,
           scheduler: str | None, timeout: float | None, keep_failed: bool, env_vars: tuple[str, ...],
           preview: bool, force: bool, as_json: bool) -> None:
    """Start N instances of a commit; wait until healthy; give it its preview hostname.

    Healthy: every instance answers the health path (deploy.health_path) with 2xx.
    A failed create (or preview) removes its instances unless --keep-failed.
    """
    if not (sha or image):
        raise click.UsageError("pass --sha SHA or --image REF")
    variables = parse_key_values(env_vars, "--env")
    _check(name=name, instances=instances, timeout=timeout)
    bgci = app.bgci(scheduler, force)
    result = bgci.create_environment(sha=sha, image=image, name=name, instances=instances, env=variables,
                                     timeout=timeout, keep_failed=keep_failed, preview=preview, progress=_progress(app))
    data = {**_as_dict(result), "preview_url": bgci.preview_url(result.name) if preview else ""}
    emit(data, as_json, _describe(result))


@env.command(name="list")
@scheduler_option
@json_option
@pass_app
def list_(app: AppContext, scheduler: str | None, as_json: bool) -> None:
    """List the app's environments, oldest first.

    Each with its sha, healthy/wanted instances, and who created it when.
    """
    found = app.bgci(scheduler).list_environments()
    if not found and not as_json:
        app.log(f"no environments of {app.settings.app}")
        return
    lines = [f"{'NAME':<40} {'SHA':<12} {'HEALTHY':>7}  {'CREATED':<20} BY"]
    lines += [f"{e.name:<40} {e.sha[:SHORT_SHA]:<12} {_health(e):>7}  {e.created_at:<20} {e.created_by}"
              for e in found]
    emit([_as_dict(e) for e in found], as_json, "\n".join(lines))


@env.command()
@click.argument("name")
@scheduler_option
@json_option
@pass_app
def show(app: AppContext, name: str, scheduler: str | None, as_json: bool) -> None:
    """Show an environment and its instances.

    Its sha, image digest, who created it when, and each instance's address and health.
    """
    environment = app.bgci(scheduler).get_environment(name)
    emit(_as_dict(environment), as_json, _describe(environment))


@env.command()
@click.argument("name")
@scheduler_option
@json_option
@pass_app
def backends(app: AppContext, name: str, scheduler: str | None, as_json: bool) -> None:
    """Print host:port of each instance, one a line.

    Running instances only: what an nginx upstream block needs.
    """
    environment = app.bgci(scheduler).get_environment(name)
    addresses = [i.address for i in environment.instances if i.port]
    emit(addresses, as_json, "\n".join(addresses))


@env.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C or SIGTERM, then exit 0.")
@click.option("--since", metavar="WHEN", help="Only lines since then: 10m, 30s, 2h ago, or an ISO 8601 time "
                                             "(local time without an offset). Not on Marathon.")
@click.option("--tail", type=click.IntRange(min=0), metavar="N", help="Only each instance's last N lines.")
@scheduler_option
@pass_app
def logs(app: AppContext, name: str, follow: bool, since: str | None, tail: int | None,
         scheduler: str | None) -> None:
    """Print the instances' logs, each line led by its instance.

    Local: merged by the engine's timestamps. Marathon: read from each task's
    Mesos sandbox (stdout, stderr), which has no timestamps: instance after
    instance, and with -f in the order read. With -f, Ctrl-C or SIGTERM is the
    normal end: exit 0, nothing on stderr.
    """
    from bgci.logs import format_line, parse_since

    lines = None
    width = 0
    try:
        lines = app.bgci(scheduler).environment_logs(name, since=parse_since(since) if since else None,
                                                     tail=tail, follow=follow)
        for line in lines:
            width = max(width, len(line.instance))
            click.echo(format_line(line, width))
    except KeyboardInterrupt:
        pass  # how -f ends: the readers are closed below
    finally:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while the readers close
            close = getattr(lines, "close", None)
            if close is not None:
                close()


@env.command()
@click.argument("name")
@click.argument("instances", type=int)
@scheduler_option
@timeout_option
@force_option
@json_option
@pass_app
def scale(app: AppContext, name: str, instances: int, scheduler: str | None, timeout: float | None,
          force: bool, as_json: bool) -> None:
    """Scale NAME to INSTANCES; wait until healthy.

    Scaling out adds the next indexes; scaling in removes the highest. A failed
    or aborted (Ctrl-C, SIGTERM) scale-out goes back to the previous count.
    """
    _check(instances=instances, timeout=timeout)
    environment = app.bgci(scheduler, force).scale_environment(name, instances, timeout=timeout,
                                                               progress=_progress(app))
    emit(_as_dict(environment), as_json, _describe(environment))


@env.command()
@click.argument("name")
@scheduler_option
@force_option
@json_option
@pass_app
def destroy(app: AppContext, name: str, scheduler: str | None, force: bool, as_json: bool) -> None:
    """Remove NAME's preview hostname, then stop and remove every instance.

    Refused for the live environment; checked, unrouted and destroyed under the switch lock, so a
    promote cannot make NAME live in between. No prompt: Jenkins runs it unattended,
    and NAME names one environment exactly.
    """
    app.bgci(scheduler, force).destroy_environment(name)
    emit({"destroyed": name}, as_json, f"destroyed {name}")


@env.command()
@click.option("--keep", type=click.IntRange(min=0), required=True, metavar="N",
              help="How many of the newest environments to keep besides the live and previous ones.")
@scheduler_option
@json_option
@pass_app
def prune(app: AppContext, keep: int, scheduler: str | None, as_json: bool) -> None:
    """Destroy every environment that is neither live, previous nor among the newest N.

    Each goes like `bgci env destroy`: preview removed first, under the switch lock.
    """
    doomed = app.bgci(scheduler).prune_environments(keep)
    emit({"destroyed": doomed}, as_json, "\n".join(f"destroyed {name}" for name in doomed) or "nothing to prune")


# -- output ------------------------------------------------------------------------------------------
def _health(environment: Environment) -> str:
    return f"{len(environment.healthy_instances)}/{environment.wanted_instances}"


def _as_dict(environment: Environment) -> dict[str, Any]:
    data = {k: v for k, v in asdict(environment).items() if k != "attrs"}
    data["instances"] = [{**asdict(i), "address": i.address} for i in environment.instances]
    data["ready"] = environment.is_ready
    data["healthy_instances"] = len(environment.healthy_instances)
    return data


def _describe(environment: Environment) -> str:
    lines = [
        f"{environment.name}: {_health(environment)} healthy ({environment.scheduler})",
        f"  sha      {environment.sha}",
        f"  image    {environment.image}",
        f"  digest   {environment.digest}",
        f"  created  {environment.created_at} by {environment.created_by}",
    ]
    for instance in environment.instances:
        health = {True: "healthy", False: "unhealthy", None: "-"}[instance.healthy]
        lines.append(f"  {instance.id:<30} {instance.address:<22} {instance.state:<10} {health}")
    return "\n".join(lines)
