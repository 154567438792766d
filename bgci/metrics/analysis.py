"""The traffic analysis of one environment: its figures over a window, and the verdict on them.

The figures come from the exporter's series in Prometheus (see exporter.py):
requests and 5xx answers by `increase()` over the range, p95 by `histogram_quantile`
over the latency histogram. The verdict (:func:`judge`) is pure and says why.

No data is a failure, not a pass: fewer than `min_requests` requests in the window
means the analysis could not show the environment is good, and a gate that passes
without evidence is no gate (`bgci promote --analyze` then rolls back).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bgci.errors import ConfigError
from bgci.status import Traffic

if TYPE_CHECKING:
    from bgci.metrics.prometheus import PrometheusClient

ROLES = ("live", "previous", "preview")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, option: str = "window") -> float:
    """'60s', '2m', '500ms', '1.5h' or a plain number of seconds -> seconds (> 0)."""
    match = _DURATION.match(str(text))
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"{option}: {text!r} is not a duration (e.g. 60s, 2m, 500ms)", option=option)
    return float(match[1]) * _UNITS[match[2]]


def promql_range(seconds: float) -> str:
    """A PromQL range of whole milliseconds, e.g. 5000ms."""
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class Criteria:
    """What an environment must show over `window` seconds of its traffic (of `role`, or all when "")."""

    window: float
    max_error_ratio: float
    max_p95_ms: float = 0.0  # 0: no latency limit
    min_requests: int = 1
    role: str = ""

    def __post_init__(self) -> None:
        if self.role and self.role not in ROLES:
            raise ConfigError(f"role: {self.role!r} is not one of {', '.join(ROLES)}", option="role")
        if not 0 <= self.max_error_ratio <= 1:
            raise ConfigError(f"max_error_ratio: {self.max_error_ratio} is not in 0..1", option="max_error_ratio")
        if self.window <= 0 or self.max_p95_ms < 0 or self.min_requests < 1:
            raise ConfigError("window must be > 0, max_p95_ms >= 0 and min_requests >= 1")


@dataclass(frozen=True)
class Figures:
    """What Prometheus says about the environment's traffic over the range."""

    requests: float
    errors: float  # 5xx answers
    p95_ms: float | None  # None: no latency data
    seconds: float  # the query range

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        ratio = "-" if self.error_ratio is None else f"{self.error_ratio:.4f}"
        p95 = "-" if self.p95_ms is None else f"{self.p95_ms:.1f} ms"
        return (f"{self.requests:.0f} requests ({self.rps:.2f}/s), {self.errors:.0f} 5xx, error ratio {ratio}, "
                f"p95 {p95}")


@dataclass(frozen=True)
class Verdict:
    outcome: str  # pass | fail | no-data (a failure too)
    reasons: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"


def judge(figures: Figures, criteria: Criteria) -> Verdict:
    """Pass only with enough requests, an error ratio within the limit and (when limited) p95 within it."""
    if figures.requests < criteria.min_requests:
        return Verdict("no-data", (f"no data: {figures.requests:.0f} requests in {figures.seconds:g} s, "
                                   f"need at least {criteria.min_requests}",))
    reasons = []
    ratio = figures.error_ratio or 0.0
    if ratio > criteria.max_error_ratio:
        reasons.append(f"error ratio {ratio:.4f} > {criteria.max_error_ratio:g} "
                       f"({figures.errors:.0f} of {figures.requests:.0f} requests 5xx)")
    if criteria.max_p95_ms:
        if figures.p95_ms is None:
            reasons.append("no latency data for p95")
        elif figures.p95_ms > criteria.max_p95_ms:
            reasons.append(f"p95 {figures.p95_ms:.1f} ms > {criteria.max_p95_ms:g} ms")
    return Verdict("fail", tuple(reasons)) if reasons else Verdict("pass", ())


@dataclass(frozen=True)
class Analysis:
    """One analysis: of what, when, the figures, the verdict and the queries that gave them."""

    app: str
    env: str
    sha: str
    criteria: Criteria
    at: float  # unix time the queries were evaluated at
    figures: Figures
    verdict: Verdict
    queries: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def describe(self) -> str:
        role = f" ({self.criteria.role} traffic)" if self.criteria.role else ""
        head = f"analysis of {self.env}{role} over {self.figures.seconds:g} s: {self.figures.describe()}"
        if self.passed:
            return f"{head}\nverdict: pass"
        return f"{head}\nverdict: {self.verdict.outcome.upper()}: {'; '.join(self.verdict.reasons)}"


# -- the queries (pure) and their evaluation ----------------------------------------------------------------------
def selector(app: str, env: str, role: str = "", extra: str = "") -> str:
    labels = [f'app="{app}"', f'env="{env}"'] + ([f'role="{role}"'] if role else []) + ([extra] if extra else [])
    return "{" + ",".join(labels) + "}"


def queries(app: str, env: str, role: str, seconds: float) -> dict[str, str]:
    """The PromQL for requests, 5xx and p95 of one environment over `seconds`."""
    r, errors = promql_range(seconds), selector(app, env, role, 'status_class="5xx"')
    return {
        "requests": f"sum(increase(bgci_requests_total{selector(app, env, role)}[{r}]))",
        "errors": f"sum(increase(bgci_requests_total{errors}[{r}]))",
        "p95": "histogram_quantile(0.95, sum by (le) "
               f"(rate(bgci_request_duration_seconds_bucket{selector(app, env, role)}[{r}])))",
    }


def measure(client: PrometheusClient, app: str, env: str, role: str, seconds: float,
            at: float | None = None) -> tuple[Figures, tuple[str, ...]]:
    """The figures of `env` over the `seconds` before `at` (default: now), and the queries used."""
    exprs = queries(app, env, role, seconds)
    values = {name: client.query(expr, at).value() for name, expr in exprs.items()}
    p95 = values["p95"]
    figures = Figures(requests=values["requests"] or 0.0, errors=values["errors"] or 0.0,
                      p95_ms=None if p95 is None else p95 * 1000, seconds=seconds)
    return figures, tuple(exprs.values())


def analyze(client: PrometheusClient, app: str, env: str, sha: str, criteria: Criteria, *, lag: float = 0.0,
            since: float | None = None, clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep) -> Analysis:
    """Judge `env` on its traffic.

    Without `since`: the last `criteria.window` seconds, now. With `since` (a switch's time): wait until
    `window` seconds of traffic after it have reached Prometheus (`lag` more), then judge everything
    since the switch, so the first requests after it count too.
    """
    seconds = criteria.window
    if since is not None:
        end = since + criteria.window + lag
        sleep(max(0.0, end - clock()))
        seconds = criteria.window + lag
    at = clock()
    figures, exprs = measure(client, app, env, criteria.role, seconds, at)
    return Analysis(app=app, env=env, sha=sha, criteria=criteria, at=at, figures=figures,
                    verdict=judge(figures, criteria), queries=exprs)


# -- figures for `bgci status` -------------------------------------------------------------------------------------
def traffic_by_env(client: PrometheusClient, app: str, seconds: float) -> dict[str, Traffic]:
    """Every environment of `app` with series in Prometheus: three queries in all."""
    r, sel = promql_range(seconds), f'{{app="{app}"}}'
    rate = client.query(f"sum by (env) (rate(bgci_requests_total{sel}[{r}]))").by("env")
    errors = client.query(f'sum by (env) (rate(bgci_requests_total{{app="{app}",status_class="5xx"}}[{r}]))').by("env")
    p95 = client.query("histogram_quantile(0.95, sum by (env, le) "
                       f"(rate(bgci_request_duration_seconds_bucket{sel}[{r}])))").by("env")
    return {env: Traffic(rps=value, error_ratio=errors.get(env, 0.0) / value if value > 0 else None,
                         p95_ms=p95[env] * 1000 if env in p95 else None, window=seconds)
            for env, value in rate.items()}


# -- the JUnit report -----------------------------------------------------------------------------------------------
def junit_report(analysis: Analysis, prometheus_url: str) -> bytes:
    """One suite, one case per criterion, for Jenkins' junit step."""
    import junit_xml

    from bgci import junit

    f, c, classname = analysis.figures, analysis.criteria, f"analysis.{analysis.env}"
    no_data = analysis.verdict.outcome == "no-data"
    cases = [junit.case("requests", classname, f.seconds, output=f.describe(),
                        failure=analysis.verdict.reasons[0] if no_data else "")]
    ratio_failure = next((r for r in analysis.verdict.reasons if r.startswith("error ratio")), "")
    cases.append(junit.case("error ratio", classname, 0, failure="no data" if no_data else ratio_failure,
                            output=f"error ratio {f.error_ratio} (max {c.max_error_ratio:g})"))
    if c.max_p95_ms:
        p95_failure = next((r for r in analysis.verdict.reasons if "p95" in r), "")
        cases.append(junit.case("p95", classname, 0, failure="no data" if no_data else p95_failure,
                                output=f"p95 {f.p95_ms} ms (max {c.max_p95_ms:g} ms)"))
    suite = junit_xml.TestSuite(f"analysis {analysis.env}", cases)
    properties = {"bgci.env": analysis.env, "bgci.sha": analysis.sha, "bgci.role": c.role or "any",
                  "bgci.window": f"{c.window:g}", "bgci.prometheus": prometheus_url,
                  "bgci.verdict": analysis.verdict.outcome, **{f"bgci.query.{i}": q for i, q in
                                                               enumerate(analysis.queries)}}
    return junit.render([suite], f"analysis {analysis.env}", properties)
