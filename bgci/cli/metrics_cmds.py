"""bgci analyze | exporter | targets, and the --analyze options of bgci promote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bgci.cli.common import AppContext, emit, json_option, pass_app, scheduler_option


class Duration(click.ParamType):
    """60s, 2m, 500ms or plain seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from bgci.errors import ConfigError
        from bgci.metrics.analysis import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ConfigError as exc:
            self.fail(exc.message, param, ctx)


def criteria_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--window, --max-error-ratio, --max-p95-ms, --min-requests, --junit-dir (defaults: [metrics])."""
    for option in reversed((
        click.option("--window", type=Duration(), default=None, metavar="DURATION",
                     help="How much traffic to judge, e.g. 60s (default: [metrics] window)."),
        click.option("--max-error-ratio", type=click.FloatRange(0, 1), default=None, metavar="R",
                     help="Fail above this share of 5xx answers (default: [metrics] max_error_ratio)."),
        click.option("--max-p95-ms", type=click.FloatRange(min=0), default=None, metavar="MS",
                     help="Fail when the 95th percentile latency exceeds this (default: [metrics] max_p95_ms; "
                          "0 = no limit)."),
        click.option("--min-requests", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Fewer requests is 'no data', a failure (default: [metrics] min_requests)."),
        click.option("--junit-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Where analysis-<sha>.xml goes (default: [test] results_dir)."),
    )):
        command = option(command)
    return command


def promote_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """bgci promote's --analyze and --analyze-preview, with the criteria options."""
    command = criteria_options(command)
    command = click.option("--analyze-preview", is_flag=True,
                           help="Before the switch, judge ENV's preview traffic of the last window; "
                                "refuse to promote when it fails.")(command)
    return click.option("--analyze", is_flag=True,
                        help="After the switch, judge the live traffic for --window; on failure roll back by "
                             "itself and exit 7. Needs [metrics] prometheus_url.")(command)


def _criteria(app: AppContext, scheduler: str | None, role: str, options: dict[str, Any]) -> Any:
    return app.bgci(scheduler).criteria(window=options.get("window"), max_error_ratio=options.get("max_error_ratio"),
                                        max_p95_ms=options.get("max_p95_ms"),
                                        min_requests=options.get("min_requests"), role=role)


def write_report(app: AppContext, analysis: Any, junit_dir: Path | None) -> Path:
    from bgci import junit
    from bgci.metrics.analysis import junit_report

    bgci = app.bgci()
    path = junit.report_path(bgci.results_dir(junit_dir), "analysis", analysis.sha or analysis.env)
    junit.write(path, junit_report(analysis, bgci.settings.metrics.prometheus_url))
    app.log(f"JUnit report: {path}")
    return path


def promote_analyzed(app: AppContext, env: str, *, scheduler: str | None, wait_lock: float, as_json: bool,
                     describe: Callable[[Any], str], options: dict[str, Any], skip_test_gate: bool = False,
                     on_switched: Callable[[Any, Any], None] = lambda _result, _verdict: None) -> None:
    """`bgci promote ENV --analyze [--analyze-preview]`: the gate of MetricsMixin.promote_analyzed.

    `on_switched(switch_result, verdict)` runs once the outcome is known (the switch report).
    """
    from bgci.errors import AnalysisFailed

    bgci = app.bgci(scheduler)
    live = _criteria(app, scheduler, "live", options)
    preview = _criteria(app, scheduler, "preview", options) if options.get("analyze_preview") else None
    if not options.get("analyze"):  # --analyze-preview alone: judge the preview, then a plain promote
        analysis = bgci.analyze(env, preview)
        write_report(app, analysis, options.get("junit_dir"))
        if not analysis.passed:
            raise AnalysisFailed(f"{env} not promoted: its preview traffic failed the analysis: "
                                 f"{'; '.join(analysis.verdict.reasons)} [{analysis.figures.describe()}]",
                                 analysis=analysis)
        app.log(analysis.describe())
        result = bgci.promote(env, wait_lock=wait_lock, skip_test_gate=skip_test_gate)
        emit(result, as_json, describe(result))
        on_switched(result, _verdict(analysis))
        return
    app.log(f"promoting {env}, then judging its live traffic for {live.window:g} s "
            f"(+{bgci.settings.metrics.lag:g} s for it to reach Prometheus)")
    try:
        outcome = bgci.promote_analyzed(env, live, preview=preview, wait_lock=wait_lock,
                                        skip_test_gate=skip_test_gate)
    except AnalysisFailed as exc:
        if exc.analysis is not None:
            write_report(app, exc.analysis, options.get("junit_dir"))
        if exc.switch is not None:
            on_switched(exc.switch, _verdict(exc.analysis, str(exc)))
        raise
    write_report(app, outcome.analysis, options.get("junit_dir"))
    emit(outcome, as_json, f"{describe(outcome.switch)}\n{outcome.analysis.describe()}")
    on_switched(outcome.switch, _verdict(outcome.analysis))


def _verdict(analysis: Any, summary: str = "") -> Any:
    """The analysis as the switch report shows it (None when no analysis ran)."""
    from bgci.reports import Verdict

    if analysis is None:
        return Verdict(passed=False, summary=summary) if summary else None
    figures = analysis.figures
    shown = {"requests": figures.requests, "5xx": figures.errors, "requests/s": round(figures.rps, 2)}
    if figures.error_ratio is not None:
        shown["error ratio"] = round(figures.error_ratio, 4)
    if figures.p95_ms is not None:
        shown["p95 ms"] = round(figures.p95_ms, 1)
    return Verdict(passed=analysis.passed, summary=summary or analysis.describe(), figures=shown)


@click.command()
@click.argument("env")
@click.option("--role", type=click.Choice(["live", "previous", "preview"]), default=None,
              help="Only this traffic of ENV (default: all of it).")
@criteria_options
@scheduler_option
@json_option
@pass_app
def analyze(app: AppContext, env: str, role: str | None, scheduler: str | None, as_json: bool,
            **options: Any) -> None:
    """Judge ENV on its traffic of the last --window: error ratio (5xx / all) and p95, from Prometheus.

    Prints the figures and the verdict, writes analysis-<sha>.xml for Jenkins, exits 0 on a pass and 7 on a
    failure. Fewer than --min-requests requests is "no data": a failure, since nothing was shown to work.
    """
    from bgci.errors import AnalysisFailed

    bgci = app.bgci(scheduler)
    analysis = bgci.analyze(env, _criteria(app, scheduler, role or "", options))
    write_report(app, analysis, options.get("junit_dir"))
    emit(analysis, as_json, analysis.describe())
    if not analysis.passed:  # the figures are printed above; the error line says why
        raise AnalysisFailed(f"analysis of {env}: {analysis.verdict.outcome}: {'; '.join(analysis.verdict.reasons)}",
                             analysis=analysis)


@click.command()
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Where to serve /metrics (default: [metrics] exporter_listen).")
@click.option("--from-start", is_flag=True, help="Count requests.log from its start, not only new lines.")
@pass_app
def exporter(app: AppContext, listen: str | None, from_start: bool) -> None:
    """Serve Prometheus metrics: requests by env, sha and role from nginx's requests.log, and deploy events.

    Runs until Ctrl-C or SIGTERM.
    """
    from bgci.metrics.exporter import Exporter

    settings = app.settings
    server = Exporter.from_settings(settings, from_start=from_start)
    host, port = server.start(listen or settings.metrics.exporter_listen)
    app.log(f"bgci exporter: http://{host}:{port}/metrics ({server.tail.path})")
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@click.command()
@scheduler_option
@pass_app
def targets(app: AppContext, scheduler: str | None) -> None:
    """Rewrite the Prometheus file_sd targets file ([metrics] targets_file) from what runs now."""
    bgci = app.bgci(scheduler)
    changed = bgci.sync_targets()
    path = bgci.settings.path(bgci.settings.metrics.targets_file)
    click.echo(f"{path}: {'updated' if changed else 'unchanged'}")
