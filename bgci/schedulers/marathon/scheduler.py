"""The policy: environments of one app as Marathon apps `/<app>/<env>`, on top of the client.

Waiting: each event about the app (:class:`EventWatch`), and every
`poll_interval` anyway, triggers a re-read of `/v2/apps/{id}` and
`/v2/deployments`. Ready = no deployment touches the app, tasksRunning ==
instances, and every health check result of every task is alive. A wait fails
at once when a task launched with the app's current version fails (status
events, lastTaskFailure) or is killed for failing its health checks
(unhealthy_task_kill_event). A bare TASK_KILLED is no failure: scale-downs and
deletes kill tasks routinely. These decisions live here, not in models: they
are what this backend means by ready and failed, while models only read.

Locks (409): Marathon lets one deployment touch an app at a time. A call that
meets a lock waits for the locking deployments to end (up to `lock_timeout`),
then raises DeploymentInProgress naming them. `?force=true` is sent only when
asked (`force=True`, the CLI's --force), or over a deployment this scheduler
started itself and then gave up on (a failed wait): cleaning up after a failed
create must not need --force, and overrides nobody else's work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from bgci import labels
from bgci.config import Settings
from bgci.errors import (
    ConfigError,
    DeploymentInProgress,
    EnvironmentExists,
    EnvironmentFailed,
    EnvironmentNotFound,
    MarathonAPIError,
    SchedulerError,
)
from bgci.schedulers.base import Environment, EnvironmentSpec, Instance, LogLine, ProgressCallback, require_instances
from bgci.schedulers.marathon.client import MarathonClient, no_urls_error
from bgci.schedulers.marathon.definition import (
    MarathonOptions,
    app_definition,
    app_group,
    check_pullable,
    marathon_app_id,
)
from bgci.schedulers.marathon.events import EventWatch
from bgci.schedulers.marathon.models import (
    MarathonApp,
    MarathonTask,
    TaskFailure,
    deployments_touching,
    read,
    read_list,
    read_object,
)

T = TypeVar("T")

POLL_INTERVAL = 1.0  # seconds between re-reads when no event arrives (the stream may be gone)


# -- pure: decisions -------------------------------------------------------------------------------------
def is_ready(app: MarathonApp, deployment_ids: Sequence[str]) -> bool:
    """No deployment touches the app, every wanted task runs, and all their health checks are alive."""
    return (not deployment_ids and not app.deployment_ids and app.tasks_running == app.instances
            == len(app.tasks) and all(t.state == "TASK_RUNNING" and t.healthy for t in app.tasks))


def task_failures(app: MarathonApp, seen: Iterable[TaskFailure]) -> list[TaskFailure]:
    """Failures of tasks launched with the app's current version: older ones belong to an earlier attempt."""
    found: dict[str, TaskFailure] = {}
    for failure in [*seen, *([app.last_failure] if app.last_failure else [])]:
        if failure.version == app.version and failure.task_id not in found:
            found[failure.task_id] = failure
    return list(found.values())


def instance_from(task: MarathonTask) -> Instance:
    return Instance(id=task.id, host=task.host, port=task.ports[0] if task.ports else 0, state=task.state,
                    healthy=task.healthy)


def environment_from(app: MarathonApp) -> Environment:
    """An Environment from its app: metadata from the labels, instances from the tasks."""
    found = app.labels
    return Environment(
        name=found.get(labels.ENV) or app.id.rsplit("/", 1)[-1], app=found.get(labels.APP, ""),
        sha=found.get(labels.SHA, ""), image=found.get(labels.IMAGE, ""), digest=found.get(labels.DIGEST, ""),
        wanted_instances=app.instances, created_at=found.get(labels.CREATED_AT, ""),
        created_by=found.get(labels.CREATED_BY, ""), scheduler=MarathonScheduler.name,
        instances=tuple(instance_from(t) for t in app.tasks), attrs=app.attrs,
    )


# -- the backend -----------------------------------------------------------------------------------------
class MarathonScheduler:
    """Environments of one app as Marathon apps `/<app>/<env>`; all metadata in the apps' labels."""

    name = "marathon"

    def __init__(self, client: MarathonClient, app: str, *, options: MarathonOptions | None = None,
                 force: bool = False, lock_timeout: float = 60.0, poll_interval: float = POLL_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, agent_port: int = 5051) -> None:
        self.client = client
        self.agent_port = agent_port  # the Mesos agents' HTTP port: task sandboxes (logs) are read there
        self.app = app
        self.options = options or MarathonOptions()
        self.force = force
        self.lock_timeout = lock_timeout
        self.poll_interval = poll_interval
        self._clock = clock
        self._started: dict[str, set[str]] = {}  # app id -> deployments this scheduler started
        self._abandoned: set[str] = set()  # deployments of ours whose wait failed: ours to override

    @classmethod
    def from_settings(cls, settings: Settings, *, force: bool = False) -> MarathonScheduler:
        """From deploy.marathon; `force` overrides deployments that lock an app (the CLI's --force)."""
        marathon = settings.deploy.marathon
        if not marathon.urls:
            raise no_urls_error()
        client = MarathonClient(marathon.urls, settings.marathon_credentials, timeout=marathon.request_timeout)
        return cls(client, settings.app, options=MarathonOptions.from_settings(settings), force=force,
                   lock_timeout=settings.deploy.ready_timeout, agent_port=marathon.agent_port)

    def app_id(self, name: str) -> str:
        return marathon_app_id(self.app, name)

    # -- the Scheduler interface ---------------------------------------------------------------------------
    def create(self, spec: EnvironmentSpec) -> Environment:
        require_instances(spec.name, spec.instances)
        check_pullable(spec.image)  # before anything is sent: Marathon would accept it, its agents would fail
        app_id = self.app_id(spec.name)
        body = app_definition(app_id, spec, self.options)
        try:
            created, deployment_id = self._unlocked(app_id, lambda force: self.client.create_app(body, force))
        except DeploymentInProgress:
            raise
        except MarathonAPIError as exc:
            if exc.status_code != 409:
                raise
            return self._existing(spec, app_id)  # a retried POST that had gone through, or someone else's
        if not deployment_id and isinstance(created, dict):
            deployment_id = next((str(d.get("id")) for d in created.get("deployments") or [] if
                                  isinstance(d, dict)), "")
        self._remember(app_id, [deployment_id])
        return self.get(spec.name)

    def wait_until_ready(self, name: str, timeout: float, progress: ProgressCallback | None = None) -> Environment:
        """Re-read the app on each event (and every poll_interval) until ready; fail on a failed task or time."""
        app_id = self.app_id(name)
        deadline = self._clock() + timeout
        rounds = _ReadyRounds(self, name, progress)
        try:
            ready = self._until(app_id, deadline, rounds.step)
            if ready is None:
                raise rounds.timed_out(timeout)
        except BaseException:
            self._abandoned.update(self._started.get(app_id, ()))
            raise
        return ready

    def get(self, name: str, *, health: bool = True) -> Environment:
        """Health comes with the tasks (Marathon's own checks), so `health` changes nothing here."""
        return environment_from(self._app(name))

    def list(self, *, health: bool = True) -> list[Environment]:
        prefix = f"/{app_group(self.app)}/"
        data = read_object(self.client.list_apps(prefix), "GET /v2/apps")
        apps = [MarathonApp.from_json(a, f"GET /v2/apps: apps[{i}]")
                for i, a in enumerate(read_list(data, "apps", dict, "GET /v2/apps"))]
        # ?id= is a "contains" filter: keep only bgci's apps directly under /<app>/.
        ours = [environment_from(a) for a in apps
                if a.id.startswith(prefix) and "/" not in a.id[len(prefix):] and a.labels.get(labels.APP) == self.app]
        return sorted(ours, key=lambda e: (e.created_at, e.name))

    def scale(self, name: str, instances: int) -> Environment:
        require_instances(name, instances, scaling=True)
        app_id = self.app_id(name)
        self._app(name)  # PUT would create a missing app: refuse unknown names first
        answer = self._unlocked(app_id, lambda force: self.client.update_app(app_id, {"instances": instances}, force))
        self._remember(app_id, [self._deployment_id(answer, f"PUT /v2/apps{app_id}")])
        return self.get(name)

    def destroy(self, name: str) -> None:
        """DELETE the app, then wait until its deployment has stopped every task."""
        app_id = self.app_id(name)
        try:
            answer = self._unlocked(app_id, lambda force: self.client.delete_app(app_id, force))
        except MarathonAPIError as exc:
            if exc.status_code == 404:
                raise self._not_found(name) from None
            raise
        deployment_id = self._deployment_id(answer, f"DELETE /v2/apps{app_id}")
        if not self._wait_for_deployments(app_id, [deployment_id], self._clock() + self.lock_timeout):
            raise SchedulerError(f"environment {name}: Marathon still stops its tasks after {self.lock_timeout:g}s "
                                 f"(deployment {deployment_id})", hint="see /v2/deployments in Marathon")

    def logs(self, name: str, since: datetime | None = None, tail: int | None = None,
             follow: bool = False) -> Iterator[LogLine]:
        """Each task's sandbox stdout and stderr from its Mesos agent (sandbox.py says in which order)."""
        import requests

        from bgci.schedulers.marathon.sandbox import open_files, read_sandboxes

        if since is not None:
            raise ConfigError("logs by time (since) are not available on Marathon: task sandbox files carry no "
                              "timestamps",
                              hint="use --tail N instead", option="since")
        tasks = self._app(name).tasks
        session = requests.Session()
        try:
            files = open_files(tasks, self.agent_port, session, self.client.timeout[1])
        except BaseException:
            session.close()
            raise
        return read_sandboxes(files, tail, follow, session)

    # -- reading -------------------------------------------------------------------------------------------
    def _app(self, name: str) -> MarathonApp:
        app_id = self.app_id(name)
        try:
            data = self.client.get_app(app_id)
        except MarathonAPIError as exc:
            if exc.status_code == 404:
                raise self._not_found(name) from None
            raise
        where = f"GET /v2/apps{app_id}"
        return MarathonApp.from_json(read_object(data, where).get("app"), f"{where}: app")

    def _not_found(self, name: str) -> EnvironmentNotFound:
        return EnvironmentNotFound(f"no environment {name} of app {self.app} on Marathon ({self.app_id(name)})",
                                   hint="see `bgci env list --scheduler marathon`")

    @staticmethod
    def _deployment_id(answer: Any, where: str) -> str:
        return read(read_object(answer, where), "deploymentId", str, where)

    def _existing(self, spec: EnvironmentSpec, app_id: str) -> Environment:
        """After a 409 "already exists": our own app (a retried POST went through) is fine, another is not."""
        try:
            app = self._app(spec.name)
        except EnvironmentNotFound:
            app = None
        if app is not None and app.labels == spec.labels():
            self._remember(app_id, list(app.deployment_ids))
            return environment_from(app)
        raise EnvironmentExists(f"environment {spec.name} exists already on Marathon ({app_id})",
                                hint=f"pick another --name or run `bgci env destroy {spec.name}`")

    # -- waiting -------------------------------------------------------------------------------------------
    def _until(self, app_id: str, deadline: float, step: Callable[[EventWatch], T | None]) -> T | None:
        """step() on each event about the app and every poll_interval, until it returns a value or time is up."""
        with EventWatch(self.client, app_id) as watch:
            while True:
                watch.clear()  # before reading: an event during the read wakes the next round at once
                result = step(watch)
                if result is not None:
                    return result
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return None
                watch.wait(min(self.poll_interval, remaining))

    def _wait_for_deployments(self, app_id: str, ids: Sequence[str], deadline: float) -> bool:
        """Whether the deployments `ids` (none given: every one touching the app) ended before the deadline."""
        def step(_watch: EventWatch) -> bool | None:
            running = set(deployments_touching(self.client.deployments(), app_id))
            return True if not (running & set(ids) if ids else running) else None

        return bool(self._until(app_id, deadline, step))

    def _unlocked(self, app_id: str, call: Callable[[bool], T]) -> T:
        """call(force) once no deployment locks the app: wait for locks (up to lock_timeout), override ours."""
        deadline = self._clock() + self.lock_timeout
        force = self.force
        while True:
            try:
                return call(force)
            except DeploymentInProgress as exc:
                if exc.deployment_ids and set(exc.deployment_ids) <= self._abandoned and not force:
                    force = True  # our own failed deployment: end it rather than wait for a crash loop
                    continue
                if not self._wait_for_deployments(app_id, exc.deployment_ids, deadline):
                    raise self._locked(app_id, exc.deployment_ids) from None

    def _locked(self, app_id: str, ids: Sequence[str]) -> DeploymentInProgress:
        return DeploymentInProgress(
            f"{app_id} is locked by Marathon deployment {', '.join(ids) or '?'}, still running after "
            f"{self.lock_timeout:g}s", list(ids),
            hint="wait for it to finish, or pass --force to override it (Marathon's ?force=true)")

    def _remember(self, app_id: str, deployment_ids: Sequence[str]) -> None:
        self._started.setdefault(app_id, set()).update(d for d in deployment_ids if d)

    # -- errors ----------------------------------------------------------------------------------------------
    @staticmethod
    def _failed(name: str, app: MarathonApp, failures: Sequence[TaskFailure]) -> EnvironmentFailed:
        details = [line for failure in failures for line in failure.describe()]
        return EnvironmentFailed(f"environment {name} failed on Marathon: {len(failures)} task(s) of {app.id} "
                                 f"ended ({failures[0].state})", details)


class _ReadyRounds:
    """The rounds of one wait_until_ready: re-read, fail, report progress, decide; the last state kept."""

    def __init__(self, scheduler: MarathonScheduler, name: str, progress: ProgressCallback | None) -> None:
        self.scheduler = scheduler
        self.name = name
        self.progress = progress
        self.reported: tuple[int, int] | None = None
        self.app: MarathonApp | None = None
        self.deployments: list[str] = []

    def step(self, watch: EventWatch) -> Environment | None:
        self.app = app = self.scheduler._app(self.name)
        self.deployments = []
        failures = task_failures(app, watch.failures())
        if failures:
            raise self.scheduler._failed(self.name, app, failures)
        env = environment_from(app)
        counts = (len(env.healthy_instances), env.wanted_instances)
        if self.progress and counts != self.reported:
            self.reported = counts
            self.progress(*counts)
        if not is_ready(app, ()):
            return None
        # /v2/deployments lists the whole cluster's: read it only to confirm what the app says.
        self.deployments = deployments_touching(self.scheduler.client.deployments(), app.id)
        return None if self.deployments else env

    def timed_out(self, timeout: float) -> EnvironmentFailed:
        """What was missing in the last round: unhealthy or missing tasks, running deployments, the last failure."""
        app = self.app
        if app is None:  # no round completed (cannot happen: a wait reads once before it looks at the clock)
            return EnvironmentFailed(f"environment {self.name} not ready after {timeout:g}s")
        healthy = sum(1 for t in app.tasks if t.healthy)
        details = [f"{t.id} on {t.host}:{t.ports[0] if t.ports else '-'}: {t.state}, {_health_words(t)}"
                   for t in app.tasks if not t.healthy]
        if len(app.tasks) < app.instances:
            details.append(f"{app.instances - len(app.tasks)} instance(s) not launched yet")
        running = dict.fromkeys([*self.deployments, *app.deployment_ids])
        details += [f"deployment {d} still running" for d in running]
        if app.last_failure is not None:
            details += ["last task failure:", *(f"  {line}" for line in app.last_failure.describe())]
        return EnvironmentFailed(f"environment {self.name} not ready after {timeout:g}s: "
                                 f"{healthy}/{app.instances} instances healthy", details)


def _health_words(task: MarathonTask) -> str:
    if not task.health:
        return "no health check result yet"
    causes = [str(r.get("lastFailureCause")) for r in task.attrs.get("healthCheckResults", [])
              if isinstance(r, dict) and not r.get("alive") and r.get("lastFailureCause")]
    return "health check failing" + (f": {causes[0]}" if causes else "")
