"""The Marathon backend: an environment is one Marathon app, `/<app>/<env>`, with N tasks.

Split as docker-py is: :class:`MarathonClient` is the transport (one requests
Session, URL failover, tenacity retries, Marathon's errors turned into bgci's
once) and makes no decisions; :class:`MarathonScheduler` is the policy on top
(what to send, when an app is ready or failed, how to treat a locked app).
What Marathon answers is read into typed objects (:class:`MarathonApp`,
:class:`MarathonTask`) whose readers name the field at fault, so a malformed
answer is a clear SchedulerError, never a KeyError.

Waiting follows Marathon's advice: `/v2/events` (read by :class:`EventWatch` in
a thread) is only a trigger to re-read `/v2/apps/{id}` and `/v2/deployments`;
polling every `poll_interval` covers a stream that is missing or drops.
Ready = no deployment touches the app, tasksRunning == instances, and every
health check result of every task is alive. A wait fails at once when a task
launched with the app's current version fails (status events, lastTaskFailure)
or is killed for failing its health checks (unhealthy_task_kill_event). A bare
TASK_KILLED is no failure: scale-downs and deletes kill tasks routinely.

Locks (409): Marathon lets one deployment touch an app at a time. A call that
meets a lock waits for the locking deployments to end (up to `lock_timeout`),
then raises DeploymentInProgress naming them. `?force=true` is sent only when
asked (`force=True`, the CLI's --force), or over a deployment this scheduler
started itself and then gave up on (a failed wait): cleaning up after a failed
create must not need --force, and overrides nobody else's work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
import tenacity

from bgci import labels
from bgci.config import Credentials, Settings
from bgci.errors import (
    ConfigError,
    DeploymentInProgress,
    EnvironmentExists,
    EnvironmentFailed,
    EnvironmentNotFound,
    MarathonAPIError,
    SchedulerError,
    SchedulerUnavailable,
)
from bgci.schedulers.base import Environment, EnvironmentSpec, Instance, ProgressCallback

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_INTERVAL = 1.0  # seconds between re-reads when no event arrives (the stream may be gone)
EVENT_TYPES = ("deployment_success", "deployment_failed", "status_update_event", "health_status_changed_event",
               "unhealthy_task_kill_event")
EVENT_CONNECT_WAIT = 1.0  # seconds a wait gives the stream to attach before its first read
EVENT_READ_TIMEOUT = 60.0  # a silent stream is reconnected after this (polling covers the gap)
EVENT_RECONNECT_DELAYS = (0.2, 2.0)  # first and longest pause before reconnecting a dropped stream
# States of a task that ended although nobody asked it to (TASK_FINISHED: a web server must not exit).
FAILED_STATES = frozenset({"TASK_FAILED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_FINISHED"})
PORT_NAME = "http"
DETAIL_LINES = 12  # lines of one task's failure message kept in an error (log tails can be long)


# -- pure: what bgci sends ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MarathonOptions:
    """Everything of an app body that is not in the EnvironmentSpec: resources, placement, health timing."""

    cpus: float = 0.25
    mem: float = 128.0
    constraints: tuple[tuple[str, ...], ...] = ()
    minimum_health_capacity: float = 1.0
    maximum_over_capacity: float = 1.0
    health_protocol: str = "MESOS_HTTP"  # or HTTP (checked by Marathon itself, deprecated since 1.4)
    grace_period_seconds: int = 30
    interval_seconds: int = 2
    timeout_seconds: int = 1
    max_consecutive_failures: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> MarathonOptions:
        m = settings.deploy.marathon
        return cls(cpus=m.cpus, mem=m.mem, constraints=tuple(tuple(c) for c in m.constraints),
                   minimum_health_capacity=m.minimum_health_capacity, maximum_over_capacity=m.maximum_over_capacity)


def app_group(app: str) -> str:
    """The app name as one Marathon id segment: `_` is allowed in bgci app names, not in Marathon ids."""
    return re.sub(r"[^a-z0-9.-]+", "-", app.lower()).strip("-.") or "app"


def marathon_app_id(app: str, env: str) -> str:
    return f"/{app_group(app)}/{env}"


def health_check(path: str, options: MarathonOptions) -> dict[str, Any]:
    check: dict[str, Any] = {
        "protocol": options.health_protocol, "path": path, "portIndex": 0,
        "gracePeriodSeconds": options.grace_period_seconds, "intervalSeconds": options.interval_seconds,
        "timeoutSeconds": options.timeout_seconds, "maxConsecutiveFailures": options.max_consecutive_failures,
    }
    if options.health_protocol.startswith("MESOS_"):
        check["delaySeconds"] = 1  # Mesos waits 15 s before the first check by default: ready takes seconds
    return check


def app_definition(app_id: str, spec: EnvironmentSpec, options: MarathonOptions) -> dict[str, Any]:
    """The POST /v2/apps body, Marathon 1.5+ form; pure, so tests validate it against Marathon's schema."""
    body: dict[str, Any] = {
        "id": app_id,
        "instances": spec.instances,
        "cpus": options.cpus,
        "mem": options.mem,
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "DOCKER",
            "docker": {"image": spec.image, "forcePullImage": False},
            "portMappings": [{"containerPort": spec.container_port, "hostPort": 0, "protocol": "tcp",
                              "name": PORT_NAME}],
        },
        "healthChecks": [health_check(spec.health_path, options)],
        "labels": spec.labels(),
        "env": dict(spec.env),
        "upgradeStrategy": {"minimumHealthCapacity": options.minimum_health_capacity,
                            "maximumOverCapacity": options.maximum_over_capacity},
    }
    if options.constraints:
        body["constraints"] = [list(c) for c in options.constraints]
    return body


# -- pure: reading what Marathon answers ----------------------------------------------------------------
_REQUIRED: Any = object()


def malformed(where: str, problem: str) -> SchedulerError:
    return SchedulerError(f"Marathon's answer is malformed: {where}: {problem}",
                          hint="is every deploy.marathon.urls entry a Marathon 1.x API (not a proxy page)?")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
             dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def read(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = _REQUIRED) -> Any:
    """obj[key] checked against `kind`; a missing (or null) optional field gives `default`."""
    value = obj.get(key)
    if value is None:
        if default is _REQUIRED:
            raise malformed(f"{where}.{key}", "missing")
        return default
    if not _is(value, kind):
        raise malformed(f"{where}.{key}", f"expected {_kind_name(kind)}, got {json.dumps(value)[:60]}")
    return value


def read_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise malformed(where, f"expected an object, got {json.dumps(value)[:60]}")
    return value


def read_list(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
              default: Any = _REQUIRED) -> list[Any]:
    values = read(obj, key, list, where, default)
    for index, value in enumerate(values or ()):
        if not _is(value, kind):
            raise malformed(f"{where}.{key}[{index}]", f"expected {_kind_name(kind)}, got {json.dumps(value)[:60]}")
    return values


@dataclass(frozen=True)
class MarathonTask:
    """One task of an app (new shape: `id`; old: `taskId`), with its health check results."""

    id: str
    host: str
    ports: tuple[int, ...]
    state: str
    version: str
    staged_at: str
    health: tuple[bool, ...]  # alive of each health check result; () when none reported (yet)
    attrs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any, where: str) -> MarathonTask:
        task = read_object(data, where)
        task_id = read(task, "id", str, where, None) or read(task, "taskId", str, where, None)
        if not task_id:
            raise malformed(f"{where}.id", "missing (and no taskId either)")
        started = read(task, "startedAt", str, where, "")
        # Marathon before 1.2 had no `state`: a started task was running.
        state = read(task, "state", str, where, "TASK_RUNNING" if started else "TASK_STAGING")
        results = read_list(task, "healthCheckResults", dict, where, [])
        alive = tuple(read(r, "alive", bool, f"{where}.healthCheckResults[{i}]") for i, r in enumerate(results))
        ports = tuple(read_list(task, "ports", int, where, []))
        return cls(id=task_id, host=read(task, "host", str, where), ports=ports, state=state,
                   version=read(task, "version", str, where, ""),
                   staged_at=read(task, "stagedAt", str, where, ""), health=alive, attrs=task)

    @property
    def healthy(self) -> bool | None:
        """All health check results alive; None while none is reported."""
        return all(self.health) if self.health else None


@dataclass(frozen=True)
class TaskFailure:
    """A task that ended on its own: from a status event, an unhealthy kill or the app's lastTaskFailure."""

    task_id: str
    state: str
    message: str
    host: str
    version: str

    @classmethod
    def from_json(cls, data: Any, where: str) -> TaskFailure:
        failure = read_object(data, where)
        return cls(task_id=read(failure, "taskId", str, where, "?"), state=read(failure, "state", str, where, "?"),
                   message=read(failure, "message", str, where, ""), host=read(failure, "host", str, where, "?"),
                   version=read(failure, "version", str, where, ""))

    @classmethod
    def from_event(cls, event_type: str, data: dict[str, Any]) -> TaskFailure | None:
        """The failure an event reports, or None (events are read leniently: they are only hints)."""
        version = str(data.get("version", ""))
        if event_type == "unhealthy_task_kill_event":
            task = str(data.get("taskId") or data.get("instanceId") or "?")
            return cls(task, "TASK_KILLED", f"killed as unhealthy: {data.get('reason', '')}".rstrip(": "),
                       str(data.get("host", "?")), version)
        if event_type == "status_update_event" and data.get("taskStatus") in FAILED_STATES:
            return cls(str(data.get("taskId", "?")), str(data["taskStatus"]), str(data.get("message", "")),
                       str(data.get("host", "?")), version)
        return None

    def describe(self) -> list[str]:
        lines = [line for line in self.message.splitlines() if line.strip()] or ["(no message)"]
        first, rest = lines[0], lines[1:DETAIL_LINES]
        return [f"{self.task_id} on {self.host}: {self.state}: {first}", *(f"  {line}" for line in rest)]


def _container_port(app: dict[str, Any], where: str) -> int | None:
    """The first port mapping's containerPort: container.portMappings (1.5+) or container.docker.portMappings."""
    container = read(app, "container", dict, where, {})
    docker = read(container, "docker", dict, f"{where}.container", {})
    mappings = (read_list(container, "portMappings", dict, f"{where}.container", None)
                or read_list(docker, "portMappings", dict, f"{where}.container.docker", []))
    return read(mappings[0], "containerPort", int, f"{where}.container.portMappings[0]", None) if mappings else None


@dataclass(frozen=True)
class MarathonApp:
    """One app as GET /v2/apps/{id} (or a /v2/apps list entry with embedded tasks) shows it."""

    id: str
    instances: int
    version: str
    labels: dict[str, str]
    tasks: tuple[MarathonTask, ...]
    tasks_running: int
    deployment_ids: tuple[str, ...]
    last_failure: TaskFailure | None
    container_port: int | None
    attrs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any, where: str) -> MarathonApp:
        app = read_object(data, where)
        app_labels = read(app, "labels", dict, where, {})
        for key, value in app_labels.items():
            if not isinstance(value, str):
                raise malformed(f"{where}.labels.{key}", f"expected a string, got {json.dumps(value)[:60]}")
        tasks = tuple(sorted((MarathonTask.from_json(t, f"{where}.tasks[{i}]")
                              for i, t in enumerate(read_list(app, "tasks", dict, where, []))),
                             key=lambda t: (t.staged_at, t.id)))
        deployments = read_list(app, "deployments", dict, where, [])
        failure = app.get("lastTaskFailure")
        return cls(
            id=read(app, "id", str, where), instances=read(app, "instances", int, where),
            version=read(app, "version", str, where, ""), labels=app_labels, tasks=tasks,
            tasks_running=read(app, "tasksRunning", int, where, sum(t.state == "TASK_RUNNING" for t in tasks)),
            deployment_ids=tuple(read(d, "id", str, f"{where}.deployments[{i}]") for i, d in enumerate(deployments)),
            last_failure=TaskFailure.from_json(failure, f"{where}.lastTaskFailure") if failure else None,
            container_port=_container_port(app, where), attrs=app,
        )


def deployments_touching(data: Any, app_id: str, where: str = "GET /v2/deployments") -> list[str]:
    """Ids of the running deployments (GET /v2/deployments) that affect `app_id`."""
    if not isinstance(data, list):
        raise malformed(where, f"expected a list, got {json.dumps(data)[:60]}")
    found = []
    for index, item in enumerate(data):
        deployment = read_object(item, f"{where}[{index}]")
        if app_id in read_list(deployment, "affectedApps", str, f"{where}[{index}]", []):
            found.append(read(deployment, "id", str, f"{where}[{index}]"))
    return found


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


def render_error_body(data: Any) -> str:
    """Marathon's error JSON in one line: message, then each detail (422 paths and their errors)."""
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message") or "").strip()]
    details = data.get("details", data.get("errors"))
    if isinstance(details, str):
        parts.append(details)
    for item in details if isinstance(details, list) else []:
        if isinstance(item, dict):
            errors = item.get("errors") or [item.get("error", "")]
            where = item.get("path") or item.get("attribute") or "/"
            parts.append(f"{where}: {', '.join(str(e) for e in errors)}")
        else:
            parts.append(str(item))
    return "; ".join(p for p in parts if p)


def display_url(url: str) -> str:
    """A URL without user:password@, fit for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def read_sse(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, data) of each Server-Sent Event; events whose data is not a JSON object are skipped."""
    event, data = "", []
    for line in lines:
        if not line.strip():
            if data:
                with contextlib.suppress(ValueError):
                    decoded = json.loads("\n".join(data))
                    if isinstance(decoded, dict):
                        yield event or str(decoded.get("eventType", "message")), decoded
            event, data = "", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


# -- transport -------------------------------------------------------------------------------------------
def no_urls_error() -> ConfigError:
    return ConfigError("deploy.marathon.urls is empty: bgci does not know where Marathon is",
                       hint="set urls under [deploy.marathon] in bgci.toml, or BGCI_MARATHON_URLS="
                            "http://marathon:8080[,http://marathon2:8080]")


class _Unanswered(Exception):
    """No URL gave a usable answer this round: each failed with a connection error or a 5xx."""

    def __init__(self, problems: list[str], last_5xx: requests.Response | None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.last_5xx = last_5xx


def _connection_reason(exc: requests.RequestException) -> str:
    """Why a connection failed, in a few words (requests' own text can be long and name pools)."""
    text = str(exc)
    for needle, reason in (("Connection refused", "connection refused"), ("Name or service not known",
                           "host name not resolved"), ("No route to host", "no route to host"),
                           ("Connection reset", "connection reset"), ("RemoteDisconnected", "connection closed")):
        if needle in text:
            return reason
    return "timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__


class MarathonClient:
    """Marathon's v2 REST API on one configured requests.Session; one method per call, no decisions.

    Each call tries the URLs in order, starting with the last one that answered
    (a standby or dead Marathon is skipped); a round where none answers (connection
    errors, 5xx) is retried by tenacity with exponential backoff. Errors become
    bgci's: MarathonAPIError (status_code), DeploymentInProgress for a 409 lock,
    SchedulerUnavailable when no URL answered. Messages never hold credentials.
    """

    def __init__(self, urls: Sequence[str], credentials: Credentials | None = None, *, timeout: float = 10.0,
                 attempts: int = 4, backoff: float = 0.25, max_backoff: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.urls = [self._checked_url(u) for u in urls]
        if not self.urls:
            raise no_urls_error()
        self.credentials = credentials or Credentials()
        self.timeout = (min(timeout, 3.05), timeout)  # connect fast to fail over fast; reads may take longer
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._preferred = 0
        self.session = self.new_session()

    @staticmethod
    def _checked_url(url: str) -> str:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"deploy.marathon.urls: {display_url(url)!r} is not an http(s) URL",
                              hint="e.g. http://marathon.example.com:8080 (BGCI_MARATHON_URLS, comma-separated)")
        return url.strip().rstrip("/")

    def new_session(self) -> requests.Session:
        """A Session with the credentials: basic auth, or a DC/OS token (`Authorization: token=...`)."""
        session = requests.Session()
        session.headers["Accept"] = "application/json"
        if self.credentials.token:
            session.headers["Authorization"] = f"token={self.credentials.token}"
        elif self.credentials.username:
            session.auth = (self.credentials.username, self.credentials.password)
        adapter = requests.adapters.HTTPAdapter(max_retries=0)  # retries are ours (tenacity), with failover
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        self.session.close()

    # -- resources -------------------------------------------------------------------------------------------
    def get_app(self, app_id: str) -> Any:
        return self._json("GET", f"/v2/apps{_quote(app_id)}")

    def list_apps(self, id_filter: str) -> Any:
        return self._json("GET", "/v2/apps", params={"id": id_filter, "embed": ["apps.tasks", "apps.lastTaskFailure"]})

    def create_app(self, body: dict[str, Any], force: bool = False) -> tuple[Any, str]:
        """(the created app, the Marathon-Deployment-Id header)."""
        response = self._request("POST", "/v2/apps", params=_force(force), body=body)
        return self._decode(response, "POST", "/v2/apps"), response.headers.get("Marathon-Deployment-Id", "")

    def update_app(self, app_id: str, body: dict[str, Any], force: bool = False) -> Any:
        return self._json("PUT", f"/v2/apps{_quote(app_id)}", params=_force(force), body=body)

    def delete_app(self, app_id: str, force: bool = False) -> Any:
        return self._json("DELETE", f"/v2/apps{_quote(app_id)}", params=_force(force))

    def deployments(self) -> Any:
        return self._json("GET", "/v2/deployments")

    def events(self, event_types: Sequence[str], session: requests.Session,
               read_timeout: float = EVENT_READ_TIMEOUT) -> requests.Response:
        """The open /v2/events stream (SSE) of the first URL that serves it; not retried: callers reconnect."""
        problems = []
        for url in self._url_order():
            try:
                response = session.get(url + "/v2/events", params={"event_type": list(event_types)}, stream=True,
                                       headers={"Accept": "text/event-stream"},
                                       timeout=(self.timeout[0], read_timeout))
            except (requests.ConnectionError, requests.Timeout) as exc:
                problems.append(f"{display_url(url)} ({_connection_reason(exc)})")
                continue
            if response.status_code == 200:
                return response
            error = self._error(response, "GET", "/v2/events")  # reads the body, so before close()
            response.close()
            raise error
        raise SchedulerUnavailable(f"no Marathon answered GET /v2/events: {'; '.join(problems)}")

    # -- plumbing --------------------------------------------------------------------------------------------
    def _json(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              body: dict[str, Any] | None = None) -> Any:
        return self._decode(self._request(method, path, params=params, body=body), method, path)

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 body: dict[str, Any] | None = None) -> requests.Response:
        """One call: every URL in turn, rounds retried with backoff; an error status becomes bgci's error."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            retry=tenacity.retry_if_exception_type(_Unanswered), sleep=self._sleep, reraise=True,
            before_sleep=lambda state: log.info("Marathon %s %s: %s; retrying", method, path,
                                                state.outcome.exception() if state.outcome else "?"),
        )
        try:
            response = retrying(self._try_each_url, method, path, params, body)
        except _Unanswered as exc:
            raise self._unanswered(exc, method, path) from None
        if response.status_code >= 400:
            raise self._error(response, method, path)
        return response

    def _try_each_url(self, method: str, path: str, params: dict[str, Any] | None,
                      body: dict[str, Any] | None) -> requests.Response:
        problems: list[str] = []
        last_5xx = None
        for index in self._url_order_indexes():
            url = self.urls[index]
            try:
                response = self.session.request(method, url + path, params=params, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problems.append(f"{display_url(url)} ({_connection_reason(exc)})")
                continue
            except requests.RequestException as exc:  # e.g. an invalid URL: retrying cannot help
                raise SchedulerError(f"Marathon {method} {path} at {display_url(url)}: {type(exc).__name__}") from None
            if response.status_code >= 500:  # e.g. 503 from a Marathon without a leader: try the next one
                problems.append(f"{display_url(url)} ({response.status_code} {self._message(response)})".rstrip())
                last_5xx = response
                continue
            self._preferred = index
            return response
        raise _Unanswered(problems, last_5xx)

    def _url_order_indexes(self) -> list[int]:
        return [(self._preferred + i) % len(self.urls) for i in range(len(self.urls))]

    def _url_order(self) -> list[str]:
        return [self.urls[i] for i in self._url_order_indexes()]

    def _unanswered(self, exc: _Unanswered, method: str, path: str) -> SchedulerError:
        tries = f"after {self.attempts} attempt(s)"
        if exc.last_5xx is not None:
            status = exc.last_5xx.status_code
            return MarathonAPIError(f"Marathon answered {status} to {method} {path} {tries}: {exc}",
                                    status_code=status)
        return SchedulerUnavailable(f"no Marathon answered {method} {path} {tries}: {exc}",
                                    hint="check deploy.marathon.urls (BGCI_MARATHON_URLS) and that Marathon runs")

    def _error(self, response: requests.Response, method: str, path: str) -> MarathonAPIError:
        """Marathon's error status as bgci's error: 409 locks name their deployments, 422 shows its details."""
        status = response.status_code
        text = self._message(response)
        message = f"Marathon answered {status} to {method} {path}" + (f": {text}" if text else "")
        data = _json_or_none(response)
        if status == 409 and isinstance(data, dict) and isinstance(data.get("deployments"), list):
            ids = [str(d.get("id")) for d in data["deployments"] if isinstance(d, dict) and d.get("id")]
            return DeploymentInProgress(message, ids, hint="wait for it, or pass --force to override it")
        if status in (401, 403):
            return MarathonAPIError(message, status_code=status,
                                    hint="check BGCI_MARATHON_USERNAME/BGCI_MARATHON_PASSWORD or BGCI_MARATHON_TOKEN")
        return MarathonAPIError(message, status_code=status)

    @staticmethod
    def _message(response: requests.Response) -> str:
        data = _json_or_none(response)
        if data is not None:
            return render_error_body(data)
        return response.reason or ""  # an HTML page (Jetty, a proxy): its reason phrase says enough

    @staticmethod
    def _decode(response: requests.Response, method: str, path: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise malformed(f"{method} {path}", f"not JSON ({kind}): {response.text[:60]!r}") from None


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _quote(app_id: str) -> str:
    return urllib.parse.quote(app_id, safe="/")


def _force(force: bool) -> dict[str, str] | None:
    return {"force": "true"} if force else None


def _shutdown(response: requests.Response) -> None:
    """Unblock a read of `response` in another thread, then close it."""
    with contextlib.suppress(Exception):
        response.raw.shutdown()  # urllib3 >= 2.3: shuts the socket's reading side
    with contextlib.suppress(Exception):
        response.close()


# -- the event stream ------------------------------------------------------------------------------------
class EventWatch:
    """/v2/events for one app, read in a thread: wakes the waiter on each relevant event, keeps task failures.

    The stream is only a trigger (events are unordered and may be missed): the
    waiter re-reads the app on each wake and at least every poll interval. A
    dropped stream is reconnected with backoff; a Marathon without one (4xx) is
    left alone, and polling does the work.
    """

    def __init__(self, client: MarathonClient, app_id: str) -> None:
        self.client = client
        self.app_id = app_id
        self._session = client.new_session()  # a stream holds its connection: keep it out of the shared pool
        self._changed = threading.Event()
        self._attached = threading.Event()
        self._settled = threading.Event()  # attached, or known not to attach soon
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._failures: list[TaskFailure] = []
        self._response: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, name=f"bgci-marathon-events{app_id}", daemon=True)

    def __enter__(self) -> EventWatch:
        self._thread.start()
        self._settled.wait(EVENT_CONNECT_WAIT)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown(response)
        self._thread.join(timeout=2)
        self._session.close()

    @property
    def attached(self) -> bool:
        return self._attached.is_set()

    def clear(self) -> None:
        self._changed.clear()

    def wait(self, seconds: float) -> None:
        """Until an event about the app arrives, or `seconds` pass."""
        self._changed.wait(seconds)

    def failures(self) -> list[TaskFailure]:
        with self._lock:
            return list(self._failures)

    def _run(self) -> None:
        try:
            self._connect_and_follow()
        except Exception:  # never a traceback from a helper thread: polling carries on without events
            log.exception("Marathon event stream reader stopped")
        finally:
            self._settled.set()

    def _connect_and_follow(self) -> None:
        delay = EVENT_RECONNECT_DELAYS[0]
        while not self._stop.is_set():
            try:
                response = self.client.events(EVENT_TYPES, self._session)
            except MarathonAPIError as exc:
                if exc.is_client_error():  # no event stream here (404, 405, 401): polling only
                    log.info("Marathon event stream not available (%s): polling", exc)
                    return
                response = None
            except SchedulerError:
                response = None
            if response is not None:
                self._follow(response)
                delay = EVENT_RECONNECT_DELAYS[0]
            self._settled.set()
            self._changed.set()  # back from a drop: events may have been missed, re-read now
            self._stop.wait(delay)
            delay = min(delay * 2, EVENT_RECONNECT_DELAYS[1])

    def _follow(self, response: requests.Response) -> None:
        with self._lock:
            self._response = response
        if self._stop.is_set():  # __exit__ ran while we connected, and saw no response to shut down
            response.close()
            return
        self._attached.set()
        self._settled.set()
        try:
            chunk_size = None if response.raw.chunked else 1  # None: each chunk as it arrives
            for event_type, data in read_sse(response.iter_lines(chunk_size=chunk_size, decode_unicode=True)):
                self._on_event(event_type, data)
        except (requests.RequestException, OSError, ValueError, AttributeError):
            pass  # dropped (or shut down by __exit__): the loop decides
        finally:
            self._attached.clear()
            with self._lock:
                self._response = None
            response.close()

    def _on_event(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type.startswith("deployment_"):
            if self._plan_touches_app(data):
                self._changed.set()
            return
        if data.get("appId") != self.app_id:
            return
        failure = TaskFailure.from_event(event_type, data)
        if failure is not None:
            with self._lock:
                self._failures.append(failure)
        self._changed.set()

    def _plan_touches_app(self, data: dict[str, Any]) -> bool:
        plan = data.get("plan")
        if not isinstance(plan, dict) or not isinstance(plan.get("steps"), list):
            return True  # cannot tell: a re-read costs little
        actions = [a for s in plan["steps"] if isinstance(s, dict) for a in s.get("actions") or []]
        return any(isinstance(a, dict) and a.get("app") == self.app_id for a in actions)


# -- the backend -----------------------------------------------------------------------------------------
class MarathonScheduler:
    """Environments of one app as Marathon apps `/<app>/<env>`; all metadata in the apps' labels."""

    name = "marathon"

    def __init__(self, client: MarathonClient, app: str, *, options: MarathonOptions | None = None,
                 force: bool = False, lock_timeout: float = 60.0, poll_interval: float = POLL_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
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
        marathon = settings.deploy.marathon
        if not marathon.urls:
            raise no_urls_error()
        client = MarathonClient(marathon.urls, settings.marathon_credentials, timeout=marathon.request_timeout)
        return cls(client, settings.app, options=MarathonOptions.from_settings(settings),
                   force=force, lock_timeout=settings.deploy.ready_timeout)

    def app_id(self, name: str) -> str:
        return marathon_app_id(self.app, name)

    # -- the Scheduler interface ---------------------------------------------------------------------------
    def create(self, spec: EnvironmentSpec) -> Environment:
        if spec.instances < 1:
            raise SchedulerError(f"environment {spec.name}: {spec.instances} instances, at least 1 needed")
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

    def get(self, name: str) -> Environment:
        return environment_from(self._app(name))

    def list(self) -> list[Environment]:
        prefix = f"/{app_group(self.app)}/"
        data = read_object(self.client.list_apps(prefix), "GET /v2/apps")
        apps = [MarathonApp.from_json(a, f"GET /v2/apps: apps[{i}]")
                for i, a in enumerate(read_list(data, "apps", dict, "GET /v2/apps"))]
        # ?id= is a "contains" filter: keep only bgci's apps directly under /<app>/.
        ours = [environment_from(a) for a in apps
                if a.id.startswith(prefix) and "/" not in a.id[len(prefix):] and a.labels.get(labels.APP) == self.app]
        return sorted(ours, key=lambda e: (e.created_at, e.name))

    def scale(self, name: str, instances: int) -> Environment:
        if instances < 1:
            raise SchedulerError(f"environment {name}: cannot scale to {instances} instances, at least 1 needed",
                                 hint=f"use `bgci env destroy {name}` to remove it")
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
