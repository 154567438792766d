"""The switch report: one self-contained HTML page (inline CSS and SVG, no script, nothing fetched). Pure.

Jenkins archives it beside the build; a browser opened from the artifact list shows
requests per second by environment, failed requests and p95 latency across the
switch, and the analysis verdict when one was made.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jinja2

from bgci.reports import charts

if TYPE_CHECKING:
    from bgci.deployer import SwitchResult
    from bgci.reports.requestlog import LogWindow
    from bgci.reports.traffic import Traffic

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("bgci", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=True,  # HTML: every value from a log line, a name or a verdict is escaped
)


@dataclass(frozen=True)
class Verdict:
    """The analysis of a switch (e.g. `promote --analyze`): passed or not, why, and the figures it used."""

    passed: bool
    summary: str
    figures: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SwitchReport:
    """Everything the page shows: the switch, the traffic nginx logged around it, the verdict."""

    app: str
    server_name: str
    result: SwitchResult
    traffic: Traffic
    log: LogWindow
    verdict: Verdict | None = None
    generated_at: float = 0.0  # epoch seconds

    @property
    def failed(self) -> int:
        return self.traffic.failed_total

    def describe(self) -> str:
        """One line for the console."""
        envs = ", ".join(f"{env} {n}" for env, n in self.traffic.by_env.items())
        return f"{self.traffic.total} requests ({envs or 'none'}), {self.failed} failed"


def utc(epoch: float, millis: bool = False) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{moment.microsecond // 1000:03d}" if millis else "") + " UTC"


def milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def render_switch_report(report: SwitchReport) -> str:
    """The HTML page for `report`."""
    traffic, window = report.traffic, report.traffic.window
    colours = charts.colours_for(traffic.envs)
    chart_list = [charts.rps_chart(window, traffic.rps, colours), charts.failed_chart(window, traffic.failed),
                  charts.latency_chart(window, traffic.p95)]
    return _templates.get_template("switch-report.html.j2").render(
        report=report, result=report.result, traffic=traffic, window=window, colours=colours, charts=chart_list,
        verdict=report.verdict, phases=("before", "during", "after"), utc=utc, ms=milliseconds,
        before=window.switch_started - window.start, after=window.end - window.switch_verified,
        failed_colour=charts.FAILED_COLOUR)
