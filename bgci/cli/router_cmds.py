"""bgci router start|stop|status, promote, rollback, status: the live name and who serves it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bgci.cli.common import AppContext, emit, json_option, pass_app, scheduler_option
from bgci.cli.metrics_cmds import promote_analyzed, promote_options

if TYPE_CHECKING:  # only in annotations: `bgci promote` imports the router when it builds it, not before
    from bgci.deployer import SwitchResult
    from bgci.reports import Verdict
    from bgci.router import NginxStatus
    from bgci.status import Status

wait_lock_option = click.option("--wait-lock", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
                                show_default=True, help="Wait this long for another promote/rollback to finish.")


def report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--report FILE.html, --report-before, --report-after: the picture of the switch (bgci/reports)."""
    for option in reversed((
        click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE.html",
                     help="Then write a self-contained HTML report of the traffic across the switch to FILE "
                          "(waits --report-after seconds after the switch to collect it)."),
        click.option("--report-before", type=click.FloatRange(min=0), default=10.0, metavar="SECONDS",
                     show_default=True, help="The report starts this long before the switch started."),
        click.option("--report-after", type=click.FloatRange(min=0), default=10.0, metavar="SECONDS",
                     show_default=True, help="The report ends this long after the switch was verified."),
    )):
        command = option(command)
    return command


@click.group()
def router() -> None:
    """bgci's own nginx (nginx.mode = embedded): start, stop, status."""


@router.command()
@json_option
@pass_app
def start(app: AppContext, as_json: bool) -> None:
    """Start the embedded nginx (`nginx -p <nginx.dir>`), listening on nginx.listen."""
    emit(app.bgci().router.start(), as_json, _nginx_line(app, "started"))


@router.command()
@json_option
@pass_app
def stop(app: AppContext, as_json: bool) -> None:
    """Stop the embedded nginx gracefully (in-flight requests finish)."""
    emit(app.bgci().router.stop(), as_json, "nginx stopped")


@router.command(name="status")
@json_option
@pass_app
def router_status(app: AppContext, as_json: bool) -> None:
    """Is nginx running, where does it listen, which file to include."""
    result = app.bgci().router.status()
    emit(result, as_json, _describe_nginx(result))


@click.command()
@click.argument("env")
@wait_lock_option
@click.option("--skip-test-gate", is_flag=True,
              help="Promote even if ENV's image digest has no passing `bgci test` (recorded in the history).")
@promote_options
@scheduler_option
@json_option
@report_options
@pass_app
def promote(app: AppContext, env: str, wait_lock: float, skip_test_gate: bool, scheduler: str | None,
            as_json: bool, report: Path | None, report_before: float, report_after: float, **analysis: object) -> None:
    """Make ENV live: every instance healthy now, nginx tested, switched, reloaded and verified.

    ENV's image digest must have passed `bgci test` ([deploy] require_tested, on by default).
    On any failure the previous configuration is restored and the command exits non-zero. With
    --analyze, a failing analysis of the live traffic rolls back by itself (exit 7).
    """
    if analysis["analyze"] or analysis["analyze_preview"]:
        promote_analyzed(app, env, scheduler=scheduler, wait_lock=wait_lock, as_json=as_json,
                         describe=_describe_switch, options=analysis, skip_test_gate=skip_test_gate,
                         on_switched=lambda result, verdict: _write_report(app, result, report, report_before,
                                                                           report_after, verdict))
        return
    app.log(f"promoting {env}")
    # A Jenkins abort undoes a switch under way.
    result = app.bgci(scheduler).promote(env, wait_lock=wait_lock, skip_test_gate=skip_test_gate)
    emit(result, as_json, _describe_switch(result))
    _write_report(app, result, report, report_before, report_after)


@click.command()
@wait_lock_option
@scheduler_option
@json_option
@report_options
@pass_app
def rollback(app: AppContext, wait_lock: float, scheduler: str | None, as_json: bool,
             report: Path | None, report_before: float, report_after: float) -> None:
    """Make the previous environment live again (it must still run and be healthy)."""
    result = app.bgci(scheduler).rollback(wait_lock=wait_lock)
    emit(result, as_json, _describe_switch(result))
    _write_report(app, result, report, report_before, report_after)


def _write_report(app: AppContext, result: SwitchResult, path: Path | None, before: float, after: float,
                  verdict: Verdict | None = None) -> None:
    if path is not None:
        summary = app.bgci().switch_report(result, path, before=before, after=after, verdict=verdict)
        app.log(f"switch report: {path}: {summary.describe()}")


@click.command()
@scheduler_option
@json_option
@pass_app
def status(app: AppContext, scheduler: str | None, as_json: bool) -> None:
    """Live, previous and preview environments, with their instances and health (probed now)."""
    result = app.bgci(scheduler).status()
    emit(result, as_json, _describe_status(result))


# -- text output --------------------------------------------------------------------------------------
def _nginx_line(app: AppContext, verb: str) -> str:
    return f"nginx {verb}: http://{app.settings.nginx.listen} ({app.settings.nginx.server_name})"


def _describe_nginx(nginx: NginxStatus) -> str:
    state = f"running (pid {nginx.pid})" if nginx.running and nginx.pid else "running" if nginx.running \
        else "not running"
    lines = [f"nginx ({nginx.mode}): {state}, listen {nginx.listen}, config {nginx.config}"]
    return "\n".join([*lines, f"  {nginx.detail}"] if nginx.detail else lines)


def _describe_switch(result: SwitchResult) -> str:
    previous = f", previous: {result.previous}" if result.previous else ""
    return (f"{result.action}: {result.live} ({result.sha[:12]}) is live on {len(result.servers)} instance(s)"
            f"{previous} [{result.seconds:.2f} s]")


def _describe_status(status: Status) -> str:
    lines = [f"{status.app}: {status.server_name}", _describe_nginx(status.nginx)]
    for role, switch in (("live", status.live), ("previous", status.previous)):
        if switch is None:
            lines.append(f"{role}: -")
            continue
        build = f" {switch.build_url}" if switch.build_url else ""
        lines.append(f"{role}: {switch.env} ({switch.sha[:12]}) {switch.action} by {switch.by} at {switch.at}{build}")
    lines.extend(f"missing: {name} is in the state file but no longer runs" for name in status.missing)
    for env in status.environments:
        healthy = sum(i.healthy for i in env.instances)
        roles = ",".join(env.roles) or "-"
        lines.append(f"  {env.name:<20} {roles:<22} {env.sha[:12]}  {healthy}/{len(env.instances)} healthy"
                     f"  created {env.created_at}")
        if env.preview_host:
            lines.append(f"      preview: http://{env.preview_host}")
        if env.traffic is not None:
            lines.append(f"      traffic: {env.traffic.describe()}")
        lines.extend(f"      {i.id:<24} {i.address:<22} {i.state:<10} {'healthy' if i.healthy else 'UNHEALTHY'}"
                     for i in env.instances)
    if status.metrics_note:
        lines.append(f"(traffic: {status.metrics_note})")
    return "\n".join(lines)
