"""The application layer: one object per app, built once from the settings, that the CLI and Python users call.

It owns the collaborators (the Docker clients, the scheduler, the nginx router,
the deployer) and the lifecycle operations that must hold
together: an environment is created and then given its preview; it is checked,
unrouted and destroyed under the one switch lock that promote and rollback
hold, so no promote can slip in between. Everything is built on first use, so
a command pays only for what it touches (`bgci promote` never imports the
build code).

    from bgci.app import Bgci
    from bgci.config import load_settings

    bgci = Bgci(load_settings())
    env = bgci.create_environment(sha="0123...", instances=2)
    bgci.promote(env.name)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from bgci.config import Settings
from bgci.metrics.service import MetricsMixin

if TYPE_CHECKING:
    from datetime import datetime

    import docker

    from bgci.deployer import Deployer, SwitchResult
    from bgci.engine import Engine
    from bgci.environments import EnvironmentService
    from bgci.images import ImageRef
    from bgci.reports import SwitchReport, Verdict
    from bgci.router import NginxRouter
    from bgci.schedulers.base import Environment, LogLine, ProgressCallback, Scheduler
    from bgci.smoke import Target
    from bgci.status import Status
    from bgci.testing import TestReport

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


class Bgci(MetricsMixin):
    """bgci for one app: environments, previews, promote, rollback, status and smoke targets.

    Every lifecycle operation ends with `after_change` (MetricsMixin): the deploy event is
    recorded and the Prometheus targets file rewritten.
    """

    def __init__(self, settings: Settings, *, scheduler: str | None = None, force: bool = False,
                 log: Log = _quiet, environ: Mapping[str, str] | None = None) -> None:
        """`scheduler` picks the backend (default: deploy.scheduler); `force` lets it override another
        deployment's lock (Marathon's ?force=true; the local engine has no such locks)."""
        self.settings = settings
        self.scheduler_name = scheduler or settings.deploy.scheduler
        self.force = force
        self.log = log
        self.environ = os.environ if environ is None else environ

    # -- collaborators, built on first use ---------------------------------------------------------------
    @cached_property
    def docker(self) -> docker.DockerClient:
        from bgci.dockerhost import connect

        return connect()

    @cached_property
    def engine(self) -> Engine:
        """The engine (bgci.engine): through docker-py's client when this process has one already, else the
        light client, so `bgci promote` and `bgci test` never import docker-py."""
        from bgci import engine
        from bgci.dockerhost import engine_errors

        if "docker" in self.__dict__:
            return engine.DockerPyEngine(self.docker)
        with engine_errors("connect to the Docker engine"):  # a TLS engine's docker-py errors too
            return engine.connect()

    @cached_property
    def scheduler(self) -> Scheduler:
        from bgci.schedulers import get_scheduler

        return get_scheduler(self.settings, self.scheduler_name, force=self.force)

    @cached_property
    def router(self) -> NginxRouter:
        from bgci.router import NginxRouter

        return NginxRouter.from_settings(self.settings)

    @cached_property
    def deployer(self) -> Deployer:
        from bgci.deployer import Deployer
        from bgci.state import Actor, SwitchLock

        return Deployer(self.scheduler, self.router, state_file=self.settings.path(self.settings.nginx.state_file),
                        lock=SwitchLock(self.router.layout.lock_file), actor=Actor.from_environment(self.environ),
                        health_path=self.settings.deploy.health_path)

    @cached_property
    def environments(self) -> EnvironmentService:
        """Environments on the scheduler; a failed create's preview goes before its instances do."""
        from bgci.environments import EnvironmentService

        service = EnvironmentService(self.scheduler, self.settings, resolve=self.resolve_image, log=self.log,
                                     environ=self.environ)
        service.before_destroy.append(self.deployer.unregister_preview)
        return service

    # -- images --------------------------------------------------------------------------------------------
    def resolve_image(self, reference: str) -> ImageRef:
        """The exact image `reference` names: local, else pulled from the registry."""
        from bgci.images import resolve_image

        return resolve_image(self.engine, self.settings, reference, self.log)

    def test(self, reference: str, *, results_dir: Path | None = None, timeout: float | None = None,
             output: Log | None = None) -> TestReport:
        """Run the suite in the exact image `reference` names; a pass is recorded for the test gate."""
        from bgci import gate, testing

        image = self.resolve_image(reference)
        report = testing.run_tests(self.engine, self.settings, image, results_dir=self.results_dir(results_dir),
                                   timeout=timeout, output=output or self.log, log=self.log)
        if report.passed:
            gate.record_pass(self.engine, self.settings, image, self.log)
        return report

    # -- environments --------------------------------------------------------------------------------------
    def create_environment(self, *, sha: str | None = None, image: str | None = None, name: str | None = None,
                           instances: int | None = None, env: Mapping[str, str] | None = None,
                           timeout: float | None = None, keep_failed: bool = False, preview: bool = True,
                           progress: ProgressCallback | None = None) -> Environment:
        """Start N instances of a commit's image, wait until every one is healthy, then give it its preview.

        On any failure (a Ctrl-C or a Jenkins abort included) what was started is removed, unless
        `keep_failed`. Of two creates of one name exactly one wins; the other raises EnvironmentExists.
        """
        service = self.environments
        spec = service.spec_for(sha=sha, image=image, name=name, instances=instances, env=env)
        created = service.create(spec, timeout=timeout, keep_failed=keep_failed, progress=progress,
                                 on_ready=[self._register_preview] if preview else [])
        self.after_change("create", created.name, created.sha)
        return created

    def _register_preview(self, environment: Environment) -> None:
        applied = self.deployer.register_preview(environment)
        self.log(f"preview: {self.preview_url(environment.name)}" + (
            "" if applied.reloaded else " (nginx not running: served once `bgci router start` runs)"))

    def preview_url(self, name: str) -> str:
        """Where environment `name`'s preview answers: `http://<name>.<preview_domain>[:port]/`."""
        from bgci.netaddr import listen_address

        _, port = listen_address(self.settings.nginx.listen)
        return f"http://{self.router.site.preview_host(name)}{'' if port == 80 else f':{port}'}/"

    def list_environments(self) -> list[Environment]:
        return self.scheduler.list()

    def get_environment(self, name: str) -> Environment:
        return self.scheduler.get(name)

    def scale_environment(self, name: str, instances: int, *, timeout: float | None = None,
                          progress: ProgressCallback | None = None) -> Environment:
        scaled = self.environments.scale(name, instances, timeout=timeout, progress=progress)
        self.after_change("scale", scaled.name, scaled.sha)
        return scaled

    def destroy_environment(self, name: str) -> None:
        """Check it is not live, remove its preview and destroy it, all under the switch lock."""
        self.deployer.destroy(name)
        self.after_change("destroy", name)

    def environment_logs(self, name: str, *, since: datetime | None = None, tail: int | None = None,
                         follow: bool = False) -> Iterator[LogLine]:
        """Every instance's log lines (`tail` per instance); with `follow`, until the iterator is closed."""
        return self.scheduler.logs(name, since=since, tail=tail, follow=follow)

    def prune_environments(self, keep: int) -> list[str]:
        """Destroy every environment that is neither live, previous nor among the newest `keep`."""
        destroyed = self.deployer.prune(keep)
        for name in destroyed:
            self.after_change("destroy", name)
        return destroyed

    # -- the live name -------------------------------------------------------------------------------------
    def promote(self, name: str, *, wait_lock: float = 0.0, skip_test_gate: bool = False) -> SwitchResult:
        """Make `name` live. Its image must have passed `bgci test` (deploy.require_tested) unless
        `skip_test_gate`, which the state history records."""
        if skip_test_gate:
            result = self.deployer.promote(name, wait_lock=wait_lock, reason="test gate skipped (--skip-test-gate)")
        else:
            check = self._check_tested if self.settings.deploy.require_tested else None
            result = self.deployer.promote(name, wait_lock=wait_lock, check=check)
        self.after_change(result.action, result.live, result.sha, switched=True)
        return result

    def _check_tested(self, environment: Environment) -> None:
        from bgci.gate import check_tested

        check_tested(self.engine, self.settings, environment)

    def rollback(self, *, wait_lock: float = 0.0) -> SwitchResult:
        result = self.deployer.rollback(wait_lock=wait_lock)
        self.after_change(result.action, result.live, result.sha, switched=True)
        return result

    def status(self) -> Status:
        """Live, previous and previews, with each environment's recent traffic when Prometheus is configured."""
        return self.with_traffic(self.deployer.status())

    def switch_report(self, result: SwitchResult, path: Path, *, before: float = 10.0, after: float = 10.0,
                      verdict: Verdict | None = None, sleep: Callable[[float], None] | None = None) -> SwitchReport:
        """Write the HTML picture of a switch to `path`: the traffic nginx logged from `before` s before it
        started to `after` s after it was verified. Sleeps until then (saying so), so call it right after
        promote/rollback; `verdict` is the analysis to show ("no analysis run" without one)."""
        import time

        from bgci.reports import switch

        window = switch.window_for(result, before, after)
        switch.wait_for_traffic(window, log=self.log, sleep=sleep or time.sleep)
        report = switch.collect(self.router.layout.requests_log, app=self.settings.app,
                                server_name=self.router.site.server_name, result=result, window=window,
                                verdict=verdict)
        switch.write(path, report)
        return report

    # -- smoke ---------------------------------------------------------------------------------------------
    def smoke_targets(self, name: str, preview: bool | None = None) -> tuple[Environment, list[Target]]:
        """Every instance of environment `name`, plus its preview hostname through nginx when `preview`
        (default: when the environment has a preview and nginx is running)."""
        from bgci import smoke

        environment = self.scheduler.get(name, health=False)  # the checks themselves say how it answers
        wanted = smoke.preview_by_default(self.settings, environment.name) if preview is None else preview
        return environment, smoke.targets_for_environment(environment, self.settings.nginx, wanted)

    def results_dir(self, override: Path | None = None) -> Path:
        """Where JUnit reports go: `override`, else [test] results_dir next to bgci.toml."""
        return override if override else self.settings.path(self.settings.test.results_dir)
