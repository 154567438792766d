"""The application layer's metrics operations (mixed into bgci.app.Bgci): events, targets, analysis, traffic.

After every lifecycle operation Bgci calls :meth:`MetricsMixin.after_change`: the event
goes to the events file (and Graphite when configured) and the file_sd targets are
rewritten. These are records of a change that already happened: a failure to write
them is logged, never raised, and never undoes the change.

:meth:`MetricsMixin.promote_analyzed` is the analysis gate, shaped like the router's
transaction: prepare (Prometheus answers, there is something to roll back to, the
preview passes when asked), commit (promote), verify (judge the live traffic since
the switch), undo (an automatic rollback, recorded with its reason in the state
history, unless someone else switched meanwhile). A Ctrl-C or a Jenkins abort during
the analysis undoes the promote too: it was not proven.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from bgci.errors import AnalysisFailed, BgciError, ConfigError, RouterError

if TYPE_CHECKING:
    from collections.abc import Callable

    from bgci.config import Settings
    from bgci.deployer import Deployer, SwitchResult
    from bgci.metrics.analysis import Analysis, Criteria
    from bgci.metrics.events import EventLog
    from bgci.metrics.prometheus import PrometheusClient
    from bgci.router import NginxRouter
    from bgci.schedulers.base import Scheduler
    from bgci.status import Status


@dataclass(frozen=True)
class AnalyzedPromote:
    """A promote that passed its analysis (and its preview's, when asked)."""

    switch: SwitchResult
    analysis: Analysis
    preview_analysis: Analysis | None = None


class MetricsMixin:
    settings: Settings
    deployer: Deployer
    scheduler: Scheduler
    router: NginxRouter
    log: Callable[[str], None]

    # -- collaborators -------------------------------------------------------------------------------------
    @cached_property
    def prometheus(self) -> PrometheusClient:
        """The Prometheus of [metrics] prometheus_url (BGCI_PROMETHEUS_URL); ConfigError when none is set."""
        from bgci.metrics.prometheus import PrometheusClient

        metrics = self.settings.metrics
        if not metrics.prometheus_url:
            raise ConfigError("no Prometheus configured", option="prometheus_url",
                              hint="set [metrics] prometheus_url in bgci.toml or BGCI_PROMETHEUS_URL")
        return PrometheusClient(metrics.prometheus_url, timeout=metrics.query_timeout)

    @cached_property
    def events(self) -> EventLog:
        from bgci.metrics.events import EventLog

        return EventLog(self.settings.path(self.settings.metrics.events_file))

    # -- records of changes ----------------------------------------------------------------------------------
    def after_change(self, action: str, env: str, sha: str = "", *, switched: bool = False) -> None:
        """Record `action` on `env` (a switch's own record, from the state file, when `switched`)."""
        from bgci.metrics.events import DeployEvent, new_event

        try:
            live = self.deployer.state().live if switched else None
            if live is not None:
                event = DeployEvent(action=live.action, env=live.env, sha=live.sha, at=live.at, by=live.by,
                                    reason=live.reason)
            else:
                event = new_event(action, env, sha, by=self.deployer.actor.who)
            self.events.append(event)
            self._send_to_graphite(event)
        except (OSError, BgciError) as exc:
            self.log(f"warning: deploy event {action} {env} not recorded: {exc}")
        self.sync_targets()

    def _send_to_graphite(self, event: object) -> None:
        from bgci.metrics import graphite

        address = self.settings.metrics.graphite
        if not address:
            return
        try:
            graphite.send(address, self.settings.app, [event])  # type: ignore[list-item]
        except OSError as exc:
            self.log(f"warning: Graphite at {address} did not take the deploy event: {exc}")

    def sync_targets(self) -> bool:
        """Rewrite the Prometheus file_sd file from what runs now; True when it changed (never raises)."""
        from bgci.metrics.targets import target_groups, write_targets

        if not self.settings.metrics.targets_file:
            return False
        path = self.settings.path(self.settings.metrics.targets_file)
        try:
            groups = target_groups(self.settings.app, self.scheduler.list(health=False), self.deployer.state(),
                                   self.router.previews())
            return write_targets(path, groups)
        except (OSError, BgciError) as exc:
            self.log(f"warning: Prometheus targets {path} not updated: {exc}")
            return False

    # -- analysis ------------------------------------------------------------------------------------------------
    def criteria(self, *, window: float | None = None, max_error_ratio: float | None = None,
                 max_p95_ms: float | None = None, min_requests: int | None = None, role: str = "") -> Criteria:
        """Criteria from [metrics], each overridden when given."""
        from bgci.metrics.analysis import Criteria

        m = self.settings.metrics
        return Criteria(window=m.window if window is None else window,
                        max_error_ratio=m.max_error_ratio if max_error_ratio is None else max_error_ratio,
                        max_p95_ms=m.max_p95_ms if max_p95_ms is None else max_p95_ms,
                        min_requests=m.min_requests if min_requests is None else min_requests, role=role)

    def analyze(self, name: str, criteria: Criteria, *, since: float | None = None) -> Analysis:
        """Judge environment `name` on its traffic in Prometheus (see bgci.metrics.analysis.analyze)."""
        from bgci.metrics.analysis import analyze

        sha = self.scheduler.get(name, health=False).sha
        return analyze(self.prometheus, self.settings.app, name, sha, criteria, lag=self.settings.metrics.lag,
                       since=since)

    def promote_analyzed(self, name: str, criteria: Criteria, *, preview: Criteria | None = None,
                         wait_lock: float = 0.0, skip_test_gate: bool = False) -> AnalyzedPromote:
        """Promote `name`, judge its live traffic for criteria.window seconds, roll back by itself on failure.

        Raises ConfigError before any change when no Prometheus is configured, PrometheusError when it does
        not answer, RouterError when there is nothing to roll back to, AnalysisFailed (exit 7) when the
        preview's or the live analysis fails (the latter after the automatic rollback).
        """
        self.prometheus.check()
        state = self.deployer.state()
        if state.live is None or state.live.env == name:
            raise RouterError(f"--analyze needs an environment to roll back to: {name} would be live alone",
                              hint="promote without --analyze first")
        preview_analysis = None
        if preview is not None:
            preview_analysis = self.analyze(name, dataclasses.replace(preview, role="preview"))
            if not preview_analysis.passed:
                raise AnalysisFailed(f"{name} not promoted: its preview traffic failed the analysis: "
                                     f"{'; '.join(preview_analysis.verdict.reasons)} "
                                     f"[{preview_analysis.figures.describe()}]", analysis=preview_analysis)
        switch = self.promote(name, wait_lock=wait_lock, skip_test_gate=skip_test_gate)  # type: ignore[attr-defined]
        switched_at, live = time.time(), self.deployer.state().live
        criteria = dataclasses.replace(criteria, role="live")
        try:
            analysis = self.analyze(name, criteria, since=switched_at)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"analysis failed: {exc}"
            self._auto_rollback(name, reason, live, wait_lock)
            if isinstance(exc, BgciError):
                raise AnalysisFailed(f"{name} rolled back: {reason}", switch=switch) from exc
            raise
        if not analysis.passed:
            reason = f"{analysis.verdict.outcome}: {'; '.join(analysis.verdict.reasons)}"
            rollback = self._auto_rollback(name, reason, live, wait_lock)
            raise AnalysisFailed(f"{name} rolled back to {rollback.live} ({rollback.sha[:12]}) after "
                                 f"{analysis.figures.seconds:g} s of live traffic: {reason} "
                                 f"[{analysis.figures.describe()}]", analysis=analysis, rollback=rollback,
                                 switch=switch)
        return AnalyzedPromote(switch=switch, analysis=analysis, preview_analysis=preview_analysis)

    def _auto_rollback(self, name: str, reason: str, live: object, wait_lock: float) -> SwitchResult:
        self.log(f"analysis of {name} failed ({reason}): rolling back")
        result = self.deployer.rollback(max(wait_lock, 60.0), reason=reason, expect_live=live)  # type: ignore[arg-type]
        self.after_change(result.action, result.live, result.sha, switched=True)
        return result

    # -- status -----------------------------------------------------------------------------------------------------
    def with_traffic(self, status: Status) -> Status:
        """`status` with each environment's recent traffic from Prometheus; a note instead when there is none."""
        from bgci.metrics.analysis import traffic_by_env

        if not self.settings.metrics.prometheus_url:
            return dataclasses.replace(status, metrics_note="no Prometheus configured ([metrics] prometheus_url)")
        try:
            traffic = traffic_by_env(self.prometheus, self.settings.app, self.settings.metrics.status_window)
        except BgciError as exc:
            return dataclasses.replace(status, metrics_note=f"no traffic figures: {exc}")
        rows = tuple(dataclasses.replace(e, traffic=traffic.get(e.name)) for e in status.environments)
        return dataclasses.replace(status, environments=rows)
