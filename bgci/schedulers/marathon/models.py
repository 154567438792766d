"""Typed readers of what Marathon answers: each reader names the field at fault.

A malformed answer (a proxy page, another API, a field of the wrong type) is a
clear SchedulerError from :func:`malformed`, never a KeyError deep in the
policy. :class:`MarathonApp` and :class:`MarathonTask` read both the 1.5+
shape and the older one; each keeps the raw JSON in `.attrs`, like docker-py's
models. Pure: no HTTP here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bgci.errors import SchedulerError

# States of a task that ended although nobody asked it to (TASK_FINISHED: a web server must not exit).
FAILED_STATES = frozenset({"TASK_FAILED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_FINISHED"})
DETAIL_LINES = 12  # lines of one task's failure message kept in an error (log tails can be long)

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
        labels = read(app, "labels", dict, where, {})
        for key, value in labels.items():
            if not isinstance(value, str):
                raise malformed(f"{where}.labels.{key}", f"expected a string, got {json.dumps(value)[:60]}")
        tasks = tuple(sorted((MarathonTask.from_json(t, f"{where}.tasks[{i}]")
                              for i, t in enumerate(read_list(app, "tasks", dict, where, []))),
                             key=lambda t: (t.staged_at, t.id)))
        deployments = read_list(app, "deployments", dict, where, [])
        failure = app.get("lastTaskFailure")
        return cls(
            id=read(app, "id", str, where), instances=read(app, "instances", int, where),
            version=read(app, "version", str, where, ""), labels=labels, tasks=tasks,
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
