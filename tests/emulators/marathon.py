"""A Marathon v2 REST API emulator that runs every task as a real Docker container.

Test support for bgci's Marathon scheduler backend: never imported by the ``bgci`` package.
The reference for every shape below is ``../shared/reference/marathon`` (README, the
AppDefinition JSON schema and real response bodies / a captured event stream).

Usage::

    with MarathonEmulator(health_interval=0.2) as marathon:
        requests.post(marathon.url + "/v2/apps", json=app)
        ...

What is emulated (Marathon 1.5 behaviour unless ``legacy_shapes=True``):

* ``POST/GET /v2/apps``, ``GET/PUT/DELETE /v2/apps/{id}``, ``POST /v2/apps/{id}/restart``,
  ``GET /v2/apps/{id}/versions``, ``GET/DELETE /v2/apps/{id}/tasks[/{taskId}]``, ``GET /v2/tasks``,
  ``GET /v2/deployments``, ``DELETE /v2/deployments/{id}[?force=true]``, ``GET /v2/info``,
  ``GET /v2/leader``, ``GET /ping`` and the ``GET /v2/events`` Server-Sent-Events stream.
* The Mesos agent of every task (``agent_url``, ``agent_port``: a second loopback server, see
  ``tests/emulators/mesos_agent.py``): ``/state`` and ``/files/read|browse|debug`` over each task's
  sandbox, whose ``stdout``/``stderr`` hold the container's output.
* Bodies are validated with ``jsonschema.Draft4Validator`` against AppDefinition.schema.json
  plus a few of Marathon's semantic rules (422 ``{"message":"Object is not valid","details":[..]}``).
* One deployment at a time per app (409 "App is locked ..."), ``?force=true`` cancels the
  running one (which then ends with ``deployment_failed``).
* Each task is a Docker container (labels ``io.bgci.emulator=marathon`` and
  ``io.bgci.emulator.instance=<this emulator's id>``); ports are published on ``bind_address``;
  health checks are probed every ``health_interval`` seconds; crashed tasks are relaunched
  with Marathon's backoff (``backoffSeconds`` * ``backoffFactor`` ^ n, capped by
  ``maxLaunchDelaySeconds``), so a crash-looping app never finishes its deployment.

Decisions where Marathon's behaviour is unclear or impossible to reproduce here are listed in
``DECISIONS`` at the end of this module.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as _dt
import http.client
import json
import logging
import os
import posixpath
import queue
import re
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.emulators.http import AbortableServer
from tests.emulators.mesos_agent import MesosAgent

log = logging.getLogger(__name__)

LABEL_EMULATOR = "io.bgci.emulator"
LABEL_INSTANCE = "io.bgci.emulator.instance"
LABEL_TASK = "io.bgci.emulator.task-id"
LABEL_APP = "io.bgci.emulator.app-id"
EMULATOR_NAME = "marathon"



def reference_dir() -> Path:
    """Marathon's schema and example answers: BGCI_MARATHON_REFERENCE, default ../shared/reference/marathon."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "marathon"
    return Path(os.environ.get("BGCI_MARATHON_REFERENCE") or default)


DEFAULT_SCHEMA_PATH = reference_dir() / "AppDefinition.schema.json"

TERMINAL_STATES = frozenset(
    {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE"}
)
# Marathon's TaskFailure is recorded for these states only (TASK_FINISHED and TASK_KILLED are no failure).
FAILURE_STATES = frozenset({"TASK_FAILED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE"})

# One path segment of an app id, as Marathon's PathId validation has it.
_ID_SEGMENT = re.compile(r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$")

LOCKED_MESSAGE = (
    "App is locked by one or more deployments. Override with the option '?force=true'. "
    "View details at '/v2/deployments/<DEPLOYMENT_ID>'."
)

_JETTY_HTML = (
    "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/>\n"
    "<title>Error {code} {reason}</title>\n</head>\n<body><h2>HTTP ERROR {code}</h2>\n"
    "<p>Problem accessing {path}. Reason:\n<pre>    {reason}</pre></p>\n</body>\n</html>\n"
)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalize_app_id(raw: str) -> str:
    """'web-app/env1', '/web-app/env1/' -> '/web-app/env1' (Marathon's canonical absolute PathId)."""
    path = posixpath.normpath("/" + (raw or "").strip("/"))
    return "/" if path in ("/", "//") else path.rstrip("/")


def valid_app_id(app_id: str) -> bool:
    parts = [p for p in app_id.split("/") if p]
    return bool(parts) and all(_ID_SEGMENT.match(p) for p in parts)


def task_id_prefix(app_id: str) -> str:
    """Marathon's task id prefix: '/web-app/env1' -> 'web-app_env1'."""
    return app_id.strip("/").replace("/", "_")


class LoggedRequest(tuple):
    """One received request: a ``(method, path, body)`` tuple plus ``query``, ``headers``, ``raw_path``.

    ``path`` has no query string; ``body`` is the parsed JSON (None without a body, the raw text when
    it is not JSON)."""

    def __new__(cls, method: str, path: str, body: Any, query: dict[str, list[str]], headers: dict[str, str],
                raw_path: str):
        self = super().__new__(cls, (method, path, body))
        self.query = query
        self.headers = headers
        self.raw_path = raw_path
        return self

    method = property(lambda self: self[0])
    path = property(lambda self: self[1])
    body = property(lambda self: self[2])


class _HttpError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None,
                 content_type: str = "application/json"):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


def _not_valid(details: list[dict[str, Any]]) -> _HttpError:
    return _HttpError(422, {"message": "Object is not valid", "details": details})


def _unknown_app(app_id: str) -> _HttpError:
    return _HttpError(404, {"message": f"App '{app_id}' does not exist"})


@dataclass
class _Task:
    id: str
    app_id: str
    version: str  # the app version the task was launched with
    config_version: str  # the app's lastConfigChangeAt when launched (a restart replaces older ones)
    staged_at: str
    hc_count: int
    state: str = "TASK_STAGING"
    started_at: str | None = None
    container_id: str | None = None
    container_name: str = ""
    host_ports: list[int] = field(default_factory=list)
    service_ports: list[int] = field(default_factory=list)
    ip_address: str | None = None
    busy: bool = False  # a launch / kill / exit-collection is in flight
    killing: bool = False
    kill_reason: str = ""
    launched_mono: float | None = None
    started_mono: float | None = None
    health: list[dict[str, Any] | None] = field(default_factory=list)
    probing: bool = False
    next_probe: float = 0.0

    def __post_init__(self) -> None:
        self.health = [None] * self.hc_count

    def healthy(self) -> bool:
        return self.hc_count > 0 and all(h is not None and h["alive"] for h in self.health)

    def unhealthy(self) -> bool:
        return any(h is not None and not h["alive"] for h in self.health)


@dataclass
class _App:
    definition: dict[str, Any]
    version: str
    last_scaling_at: str
    last_config_change_at: str
    tasks: dict[str, _Task] = field(default_factory=dict)
    last_failure: dict[str, Any] | None = None
    backoff: float = 1.0
    next_launch: float = 0.0
    versions: list[str] = field(default_factory=list)
    dying: bool = False

    @property
    def id(self) -> str:
        return self.definition["id"]


@dataclass
class _Deployment:
    id: str
    version: str
    app_id: str
    steps: list[str]  # one action name per step
    original: dict[str, Any] | None
    target: dict[str, Any] | None
    current_step: int = 1
    done_since: float | None = None
    started_mono: float = field(default_factory=time.monotonic)

    @property
    def kind(self) -> str:
        return self.steps[-1] if self.steps else "ScaleApplication"

    def steps_json(self) -> list[dict[str, Any]]:
        return [{"actions": [{"action": a, "app": self.app_id}]} for a in self.steps]

    def current_actions(self) -> list[dict[str, Any]]:
        if not self.steps:
            return []
        action = self.steps[min(self.current_step, len(self.steps)) - 1]
        return [{"action": action, "app": self.app_id, "readinessCheckResults": []}]


class _Subscriber:
    def __init__(self, conn: socket.socket, remote: str, event_types: set[str]):
        self.conn = conn
        self.remote = remote
        self.event_types = event_types
        self.queue: queue.Queue[tuple[str, str] | None] = queue.Queue()

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class MarathonEmulator:
    """Marathon's v2 REST API on a local port; every task a real Docker container.

    Fault injection and switches (all may be changed while it runs):

    * ``fail_next_requests(count, status=500)``: the next ``count`` requests (any path) answer ``status``.
    * ``drop_event_streams()``: abort every open ``/v2/events`` connection now (like a network drop).
    * ``events_enabled = False``: ``/v2/events`` answers 404 ``URI not found`` (a Marathon or proxy
      without the event stream; every Marathon >= 0.9 has it always on).
    * ``fail_tasks = True`` / ``fail_tasks_for(app_id_or_image)`` / ``stop_failing_tasks()``: new tasks
      exit at once with status 1 (TASK_FAILED, message ``injected task failure``) instead of running.
    * ``deployment_delay``: seconds a finished deployment still stays in /v2/deployments (and locks
      its app) before ``deployment_success``.
    * ``requests_log``: every request as ``(method, path, json_body)`` (see ``LoggedRequest``).
    * ``reset_faults()`` undoes all of the above; ``container_ids(app_id=None)`` lists the containers
      it runs; ``event_stream_count`` counts open /v2/events connections.

    Constructor: ``docker_client`` (default ``docker.from_env()``), ``host``/``port`` (0: a free port) of the
    API, ``schema_path`` (default the reference AppDefinition.schema.json), ``health_interval`` (seconds
    between health probes of a task), ``bind_address`` (host ports are published there; it is every task's
    ``host``), and keyword-only: ``credentials=(user, password)`` and/or ``token`` (auth),
    ``legacy_shapes`` (answer like Marathon < 1.5), ``deployment_delay``, ``reconcile_interval``,
    ``kill_grace_period`` (max seconds between SIGTERM and SIGKILL), ``sse_heartbeat`` (seconds between
    keep-alive newlines on /v2/events), ``default_image`` (runs apps without a container),
    ``marathon_version`` (reported by /v2/info).
    """

    def __init__(
        self,
        docker_client: Any = None,
        host: str = "127.0.0.1",
        port: int = 0,
        schema_path: str | os.PathLike[str] | None = None,
        health_interval: float = 0.2,
        bind_address: str = "127.0.0.1",
        *,
        credentials: tuple[str, str] | None = None,
        token: str | None = None,
        legacy_shapes: bool = False,
        deployment_delay: float = 0.0,
        reconcile_interval: float = 0.1,
        kill_grace_period: float = 1.0,
        sse_heartbeat: float = 10.0,
        default_image: str = "bgci-base:bookworm",
        marathon_version: str | None = None,
    ) -> None:
        self._docker: Any = docker_client
        self._own_docker = docker_client is None
        self.host = host
        self.port = port
        self.schema_path = Path(schema_path) if schema_path else DEFAULT_SCHEMA_PATH
        self.health_interval = health_interval
        self.bind_address = bind_address
        self.credentials = credentials
        self.token = token
        self.legacy_shapes = legacy_shapes
        self.deployment_delay = deployment_delay
        self.reconcile_interval = reconcile_interval
        self.kill_grace_period = kill_grace_period
        self.sse_heartbeat = sse_heartbeat
        self.default_image = default_image
        self.marathon_version = marathon_version or ("1.4.12" if legacy_shapes else "1.5.0")
        self.events_enabled = True
        self.fail_tasks = False
        self.instance_id = uuid.uuid4().hex[:12]
        self.framework_id = f"{uuid.uuid4()}-0000"
        self.slave_id = f"{uuid.uuid4()}-S0"
        self.requests_log: list[LoggedRequest] = []
        # app id -> time.perf_counter() when its latest deployment succeeded (benchmarks/env_marathon.py)
        self.deployment_finished_at: dict[str, float] = {}
        self.url = ""
        self.agent: MesosAgent | None = None  # the tasks' Mesos agent (sandboxes), while started
        self.agent_url = ""
        self.agent_port = 0

        self._lock = threading.RLock()
        self._apps: dict[str, _App] = {}
        self._dying: list[_App] = []
        self._deployments: dict[str, _Deployment] = {}
        self._subscribers: list[_Subscriber] = []
        self._fail_next: list[int] = []
        self._fail_targets: set[str] = set()
        self._next_service_port = 10000
        self._last_version = ""
        self._known_containers: set[str] = set()
        self._server: AbortableServer | None = None
        self._server_thread: threading.Thread | None = None
        self._reconciler: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stop_event = threading.Event()
        self._stopping = False
        self._started = False
        self._validator: Any = None
        self._update_validator: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._started:
            return
        import jsonschema  # test extra

        schema = json.loads(self.schema_path.read_text())
        self._validator = jsonschema.Draft4Validator(schema)
        update_schema = copy.deepcopy(schema)
        update_schema.pop("required", None)
        self._update_validator = jsonschema.Draft4Validator(update_schema)
        if self._docker is None:
            import docker  # test extra

            self._docker = docker.from_env()
        self._docker.ping()
        self._stop_event.clear()
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix=f"marathon-emu-{self.instance_id}")
        handler = type("MarathonHandler", (_Handler,), {"emulator": self})
        self._server = AbortableServer((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"marathon-emu-http-{self.instance_id}", daemon=True,
        )
        self._server_thread.start()
        self._reconciler = threading.Thread(
            target=self._reconcile_loop, name=f"marathon-emu-reconcile-{self.instance_id}", daemon=True
        )
        self._reconciler.start()
        self.agent = MesosAgent(self.bind_address, self.slave_id, self.framework_id)
        self.agent.start()
        self.agent_url, self.agent_port = self.agent.url, self.agent.port
        self._started = True

    def stop(self) -> None:
        """Stop serving and remove every container this emulator started (also after errors)."""
        self._stopping = True
        self._stop_event.set()
        errors: list[str] = []
        with contextlib.suppress(Exception):
            self.drop_event_streams()
        if self._server is not None:
            try:
                self._server.shutdown()
                self._server.server_close()
                self._server.abort_connections()
            except Exception as exc:
                errors.append(f"http server: {exc}")
            self._server = None
        if self._reconciler is not None:
            self._reconciler.join(timeout=10)
            self._reconciler = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._docker is not None:
            errors.extend(self._remove_all_containers())
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
            if self._own_docker:
                with contextlib.suppress(Exception):
                    self._docker.close()
                self._docker = None
        self._started = False
        if errors:
            log.warning("MarathonEmulator.stop: %s", "; ".join(errors))

    def __enter__(self) -> MarathonEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _remove_all_containers(self) -> list[str]:
        errors: list[str] = []
        ids: set[str] = set(self._known_containers)
        try:
            for c in self._docker.api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance_id}"}):
                ids.add(c["Id"])
        except Exception as exc:
            errors.append(f"listing containers: {exc}")
        for cid in ids:
            try:
                self._docker.api.remove_container(cid, force=True)
            except Exception as exc:
                if "No such container" not in str(exc) and "404" not in str(exc):
                    errors.append(f"removing {cid[:12]}: {exc}")
        self._known_containers.clear()
        return errors

    def container_ids(self, app_id: str | None = None) -> list[str]:
        """Ids of the Docker containers this emulator runs now (optionally of one app)."""
        filters = [f"{LABEL_INSTANCE}={self.instance_id}"]
        if app_id is not None:
            filters.append(f"{LABEL_APP}={normalize_app_id(app_id)}")
        return [c["Id"] for c in self._docker.api.containers(all=True, filters={"label": filters})]

    # ------------------------------------------------------------------ fault injection
    def fail_next_requests(self, count: int, status: int = 500) -> None:
        with self._lock:
            self._fail_next.extend([status] * count)

    def drop_event_streams(self) -> None:
        with self._lock:
            subs = list(self._subscribers)
        for sub in subs:
            sub.queue.put(None)
            with contextlib.suppress(OSError):
                sub.conn.shutdown(socket.SHUT_RDWR)

    def fail_tasks_for(self, app_id_or_image: str) -> None:
        """New tasks of this app (id) or of apps running this image fail instead of running."""
        with self._lock:
            self._fail_targets.add(app_id_or_image)
            if app_id_or_image.startswith("/") or ("/" not in app_id_or_image and ":" not in app_id_or_image):
                self._fail_targets.add(normalize_app_id(app_id_or_image))

    def stop_failing_tasks(self) -> None:
        with self._lock:
            self._fail_targets.clear()
            self.fail_tasks = False

    def reset_faults(self) -> None:
        """Undo every fault injection: pending failures, failing tasks, events off, deployment_delay."""
        with self._lock:
            self._fail_next.clear()
            self._fail_targets.clear()
            self.fail_tasks = False
            self.events_enabled = True
            self.deployment_delay = 0.0

    @property
    def event_stream_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    # ------------------------------------------------------------------ events
    def _emit(self, event_type: str, payload: dict[str, Any]) -> None:
        event = dict(payload)
        event["eventType"] = event_type
        event["timestamp"] = _now_iso()
        data = json.dumps(event, separators=(",", ":"))
        with self._lock:
            for sub in self._subscribers:
                if sub.wants(event_type):
                    sub.queue.put((event_type, data))

    # ------------------------------------------------------------------ versions, ids
    def _new_version(self) -> str:
        with self._lock:
            v = _now_iso()
            if v <= self._last_version:
                last = _dt.datetime.strptime(self._last_version, "%Y-%m-%dT%H:%M:%S.%fZ")
                v = (last + _dt.timedelta(milliseconds=1)).isoformat(timespec="milliseconds") + "Z"
            self._last_version = v
            return v

    def _new_task_id(self, app_id: str) -> str:
        infix = "" if self.legacy_shapes else "instance-"
        return f"{task_id_prefix(app_id)}.{infix}{uuid.uuid4()}"

    def _service_port(self) -> int:
        with self._lock:
            p = self._next_service_port
            self._next_service_port += 1
            return p

    # ------------------------------------------------------------------ validation and normalization
    def _validate(self, body: Any, *, update: bool) -> None:
        validator = self._update_validator if update else self._validator
        grouped: dict[str, list[str]] = {}
        for err in validator.iter_errors(body):
            base = "/" + "/".join(str(p) for p in err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                allowed = set(err.schema.get("properties", {}))
                extra = [k for k in err.instance if k not in allowed]
                for key in extra or [""]:
                    path = (base.rstrip("/") + "/" + key) if key else base
                    grouped.setdefault(path, []).append(err.message)
                continue
            grouped.setdefault(base, []).append(err.message)
        if grouped:
            raise _not_valid([{"path": p, "errors": e} for p, e in sorted(grouped.items())])

    def _semantic_checks(self, d: dict[str, Any]) -> None:
        details: list[dict[str, Any]] = []
        if not valid_app_id(d["id"]):
            details.append({"path": "/id", "errors": ["must fully match regular expression '^(([a-z0-9]|[a-z0-9]"
                                                      "[a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*"
                                                      "[a-z0-9])|(\\.|\\.\\.)$'"]})
        if not d.get("cmd") and not d.get("args") and not d.get("container"):
            details.append({"path": "/", "errors": [
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."]})
        container = d.get("container")
        docker_image = (container or {}).get("docker", {}).get("image")
        if container and container.get("type", "DOCKER") == "DOCKER" and not docker_image:
            details.append({"path": "/container/docker", "errors": ["must not be empty"]})
        ports = self._port_count(d)
        for i, hc in enumerate(d.get("healthChecks", [])):
            if hc.get("protocol") in ("COMMAND",) or "port" in hc:
                continue
            if hc.get("portIndex", 0) >= ports:
                details.append({"path": f"/healthChecks({i})", "errors": [
                    "Health check port indices must address an element of the ports array or container port "
                    "mappings."]})
        if details:
            raise _not_valid(details)

    @staticmethod
    def _port_count(d: dict[str, Any]) -> int:
        mode = d["networks"][0]["mode"] if d.get("networks") else "host"
        if mode == "host":
            return len(d.get("portDefinitions", []))
        return len((d.get("container") or {}).get("portMappings", []))

    def _canonicalize(self, body: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """The app as Marathon 1.5 stores it: every default filled, the new networking form."""
        b = copy.deepcopy(body)
        d: dict[str, Any] = {"id": normalize_app_id(b["id"])}
        for key in ("acceptedResourceRoles",):
            if key in b:
                d[key] = b[key]
        d["backoffFactor"] = b.get("backoffFactor", 1.15)
        d["backoffSeconds"] = b.get("backoffSeconds", 1)
        for key in ("cmd", "args", "user"):
            if b.get(key) is not None:
                d[key] = b[key]
        d["constraints"] = b.get("constraints", [])
        networks = b.get("networks")
        container = b.get("container")
        mappings: list[dict[str, Any]] | None = None
        if container is not None:
            c = copy.deepcopy(container)
            c.setdefault("type", "DOCKER")
            docker = c.get("docker")
            legacy_network = None
            if docker is not None:
                legacy_network = docker.pop("network", None)
                legacy_mappings = docker.pop("portMappings", None)
                if "portMappings" not in c and legacy_mappings is not None:
                    c["portMappings"] = legacy_mappings
                docker.setdefault("forcePullImage", False)
                docker.setdefault("parameters", [])
                docker.setdefault("privileged", False)
            c.setdefault("volumes", [])
            if not networks:
                if legacy_network == "HOST":
                    networks = [{"mode": "host"}]
                elif legacy_network == "USER":
                    networks = [{"mode": "container", "name": "dcos"}]
                elif legacy_network == "BRIDGE" or c.get("portMappings"):
                    networks = [{"mode": "container/bridge"}]
            mappings = c.pop("portMappings", None)
            d["container"] = c
        networks = copy.deepcopy(networks) or [{"mode": "host"}]
        for n in networks:
            n.setdefault("mode", "container")
        mode = networks[0]["mode"]
        old_service = []
        if previous is not None:
            old_service = [m.get("servicePort") for m in (previous.get("container") or {}).get("portMappings", [])]
            old_service += [p.get("port") for p in previous.get("portDefinitions", [])]
        if mode != "host" and container is not None:
            norm = []
            for i, m in enumerate(mappings or []):
                nm: dict[str, Any] = {"containerPort": m.get("containerPort", 0)}
                if "hostPort" in m or mode == "container/bridge":
                    nm["hostPort"] = m.get("hostPort", 0)
                nm["labels"] = m.get("labels", {})
                if "name" in m:
                    nm["name"] = m["name"]
                nm["protocol"] = m.get("protocol", "tcp")
                sp = m.get("servicePort", 0)
                if not sp:
                    sp = old_service[i] if i < len(old_service) and old_service[i] else self._service_port()
                nm["servicePort"] = sp
                if "networkNames" in m:
                    nm["networkNames"] = m["networkNames"]
                norm.append(nm)
            d["container"]["portMappings"] = norm
        elif container is not None:
            d["container"]["portMappings"] = []
        d["cpus"] = b.get("cpus", 1)
        d["dependencies"] = [normalize_app_id(x) for x in b.get("dependencies", [])]
        d["disk"] = b.get("disk", 0)
        d["env"] = b.get("env", {})
        d["executor"] = b.get("executor", "")
        fetch = b.get("fetch")
        if fetch is None:
            fetch = [{"uri": u, "extract": True, "executable": False, "cache": False} for u in b.get("uris", [])]
        d["fetch"] = fetch
        d["gpus"] = b.get("gpus", 0)
        d["healthChecks"] = [self._canonical_health_check(hc) for hc in b.get("healthChecks", [])]
        d["instances"] = b.get("instances", 1)
        d["labels"] = b.get("labels", {})
        d["maxLaunchDelaySeconds"] = b.get("maxLaunchDelaySeconds", 3600)
        d["mem"] = b.get("mem", 128)
        d["networks"] = networks
        if mode == "host":
            pdefs = b.get("portDefinitions")
            if pdefs is None:
                ports = b.get("ports")
                pdefs = [{"port": p} for p in ports] if ports is not None else [{"port": 0}]
            norm_defs = []
            for i, p in enumerate(pdefs):
                nd = {"port": p.get("port", 0), "protocol": p.get("protocol", "tcp"), "labels": p.get("labels", {})}
                if "name" in p:
                    nd["name"] = p["name"]
                if not nd["port"]:
                    nd["port"] = old_service[i] if i < len(old_service) and old_service[i] else self._service_port()
                norm_defs.append(nd)
            d["portDefinitions"] = norm_defs
        else:
            d["portDefinitions"] = []
        d["readinessChecks"] = b.get("readinessChecks", [])
        d["requirePorts"] = b.get("requirePorts", False)
        for key in ("residency", "executorResources", "taskKillGracePeriodSeconds", "tty"):
            if key in b:
                d[key] = b[key]
        d["secrets"] = b.get("secrets", {})
        d["upgradeStrategy"] = {"maximumOverCapacity": 1, "minimumHealthCapacity": 1, **b.get("upgradeStrategy", {})}
        d["killSelection"] = b.get("killSelection", "YOUNGEST_FIRST")
        d["unreachableStrategy"] = b.get("unreachableStrategy", {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0})
        return d

    @staticmethod
    def _canonical_health_check(hc: dict[str, Any]) -> dict[str, Any]:
        out = {
            "gracePeriodSeconds": hc.get("gracePeriodSeconds", 300),
            "intervalSeconds": hc.get("intervalSeconds", 60),
            "maxConsecutiveFailures": hc.get("maxConsecutiveFailures", 3),
            "timeoutSeconds": hc.get("timeoutSeconds", 20),
            "delaySeconds": hc.get("delaySeconds", 15),
        }
        protocol = hc.get("protocol", "HTTP")
        out["protocol"] = protocol
        if protocol in ("HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"):
            out["path"] = hc.get("path", "/")
            out["ignoreHttp1xx"] = hc.get("ignoreHttp1xx", False)
        if protocol != "COMMAND":
            if "port" in hc:
                out["port"] = hc["port"]
            else:
                out["portIndex"] = hc.get("portIndex", 0)
            if protocol.startswith("MESOS_"):
                out["ipProtocol"] = hc.get("ipProtocol", "IPv4")
        else:
            out["command"] = hc.get("command", {})
        return out

    # ------------------------------------------------------------------ rendering
    def _render_definition(self, app: _App) -> dict[str, Any]:
        d = copy.deepcopy(app.definition)
        if self.legacy_shapes:
            mode = d["networks"][0]["mode"]
            network = {"host": "HOST", "container/bridge": "BRIDGE"}.get(mode, "USER")
            container = d.get("container")
            mappings = []
            if container is not None:
                mappings = container.pop("portMappings", [])
                docker = container.get("docker")
                if docker is not None:
                    docker["network"] = network
                    if network != "HOST":
                        docker["portMappings"] = mappings
            d.pop("networks", None)
            d["ipAddress"] = None
            d["ports"] = [p["port"] for p in d["portDefinitions"]] if network == "HOST" else [
                m["servicePort"] for m in mappings]
            d["uris"] = [f["uri"] for f in d.get("fetch", [])]
        d["version"] = app.version
        d["versionInfo"] = {"lastScalingAt": app.last_scaling_at, "lastConfigChangeAt": app.last_config_change_at}
        return d

    def _render_task(self, app: _App, t: _Task) -> dict[str, Any]:
        out: dict[str, Any] = {
            "appId": app.id,
            "host": self.bind_address,
            "id": t.id,
            "ipAddresses": [{"ipAddress": t.ip_address, "protocol": "IPv4"}] if t.ip_address else [],
            "ports": list(t.host_ports),
            "servicePorts": list(t.service_ports),
            "slaveId": self.slave_id,
            "stagedAt": t.staged_at,
            "startedAt": t.started_at,
            "state": t.state,
            "version": t.version,
            "localVolumes": [],
            "region": "primary",
            "zone": "a",
            "role": "*",
        }
        results = [self._render_health(t, h) for h in t.health if h is not None]
        if app.definition.get("healthChecks"):
            out["healthCheckResults"] = results
        return out

    def _render_health(self, t: _Task, h: dict[str, Any]) -> dict[str, Any]:
        out = {k: h[k] for k in ("alive", "consecutiveFailures", "firstSuccess", "lastFailure", "lastSuccess",
                                 "lastFailureCause")}
        if self.legacy_shapes:
            out["taskId"] = t.id
        else:
            out["instanceId"] = t.id
        return out

    def _counts(self, app: _App) -> dict[str, int]:
        tasks = list(app.tasks.values())
        has_hc = bool(app.definition.get("healthChecks"))
        return {
            "tasksStaged": sum(1 for t in tasks if t.state == "TASK_STAGING"),
            "tasksRunning": sum(1 for t in tasks if t.state == "TASK_RUNNING"),
            "tasksHealthy": sum(1 for t in tasks if has_hc and t.healthy()),
            "tasksUnhealthy": sum(1 for t in tasks if has_hc and t.unhealthy()),
        }

    def _render_app(self, app: _App, *, tasks: bool, last_failure: bool) -> dict[str, Any]:
        d = self._render_definition(app)
        d.update(self._counts(app))
        d["deployments"] = [{"id": dep.id} for dep in self._deployments.values() if dep.app_id == app.id]
        if tasks:
            d["tasks"] = [self._render_task(app, t) for t in app.tasks.values()]
        if last_failure and app.last_failure is not None:
            d["lastTaskFailure"] = dict(app.last_failure)
        return d

    def _render_deployment(self, dep: _Deployment) -> dict[str, Any]:
        return {
            "id": dep.id,
            "version": dep.version,
            "affectedApps": [dep.app_id],
            "affectedPods": [],
            "steps": dep.steps_json(),
            "currentActions": dep.current_actions(),
            "currentStep": dep.current_step,
            "totalSteps": len(dep.steps),
        }

    def _plan(self, dep: _Deployment) -> dict[str, Any]:
        def group(app_json: dict[str, Any] | None, version: str) -> dict[str, Any]:
            return {"id": "/", "apps": [app_json] if app_json else [], "groups": [], "pods": [],
                    "dependencies": [], "version": version}

        return {
            "id": dep.id,
            "original": group(dep.original, dep.version),
            "target": group(dep.target, dep.version),
            "steps": dep.steps_json(),
            "version": dep.version,
        }

    # ------------------------------------------------------------------ deployments (call with the lock held)
    def _locks(self, app_id: str) -> list[_Deployment]:
        return [d for d in self._deployments.values() if d.app_id == app_id]

    def _check_lock(self, app_id: str, force: bool) -> None:
        locking = self._locks(app_id)
        if not locking:
            return
        if not force:
            raise _HttpError(409, {"message": LOCKED_MESSAGE, "deployments": [{"id": d.id} for d in locking]})
        for dep in locking:
            self._cancel_deployment(dep)

    def _cancel_deployment(self, dep: _Deployment) -> None:
        self._deployments.pop(dep.id, None)
        self._emit("deployment_failed", {"id": dep.id, "plan": self._plan(dep)})

    def _start_deployment(self, app_id: str, steps: list[str], original: dict[str, Any] | None,
                          target: dict[str, Any] | None, version: str) -> _Deployment:
        dep = _Deployment(id=str(uuid.uuid4()), version=version, app_id=app_id, steps=steps,
                          original=original, target=target)
        self._deployments[dep.id] = dep
        app = self._apps.get(app_id)
        if app is not None:  # Marathon resets the launch delay when a deployment starts
            app.backoff = float(app.definition["backoffSeconds"])
            app.next_launch = 0.0
        self._emit("deployment_info", {"plan": self._plan(dep), "currentStep": {"actions": [
            {"action": a["action"], "app": a["app"]} for a in dep.current_actions()]}})
        return dep

    def _deployment_done(self, dep: _Deployment) -> bool:
        if dep.kind == "StopApplication":
            return not any(a.id == dep.app_id for a in self._dying)
        app = self._apps.get(dep.app_id)
        if app is None:
            return True
        wanted = app.definition["instances"]
        has_hc = bool(app.definition.get("healthChecks"))
        tasks = list(app.tasks.values())
        if len(tasks) != wanted:
            return False
        for t in tasks:
            if t.killing or t.config_version != app.last_config_change_at or t.state != "TASK_RUNNING":
                return False
            if has_hc and not t.healthy():
                return False
        return True

    def _advance_deployments(self) -> None:
        now = time.monotonic()
        for dep in list(self._deployments.values()):
            if dep.current_step < len(dep.steps) and dep.steps[dep.current_step - 1] == "StartApplication":
                self._emit("deployment_step_success", {"plan": self._plan(dep), "currentStep": {
                    "actions": [{"action": "StartApplication", "app": dep.app_id}]}})
                dep.current_step += 1
                self._emit("deployment_info", {"plan": self._plan(dep), "currentStep": {"actions": [
                    {"action": a["action"], "app": a["app"]} for a in dep.current_actions()]}})
            if not self._deployment_done(dep):
                dep.done_since = None
                continue
            if dep.done_since is None:
                dep.done_since = now
            if now - dep.done_since < self.deployment_delay:
                continue
            self._deployments.pop(dep.id, None)
            self.deployment_finished_at[dep.app_id] = time.perf_counter()
            self._emit("deployment_step_success", {"plan": self._plan(dep), "currentStep": {
                "actions": [{"action": a["action"], "app": a["app"]} for a in dep.current_actions()]}})
            self._emit("deployment_success", {"id": dep.id, "plan": self._plan(dep)})

    # ------------------------------------------------------------------ API operations (lock held by caller)
    def _api_post_event(self, handler: _Handler, app_json: dict[str, Any]) -> None:
        self._emit("api_post_event", {"clientIp": handler.client_address[0], "uri": handler.path.split("?")[0],
                                      "appDefinition": app_json})

    def _create_app(self, handler: _Handler, canonical: dict[str, Any], force: bool) -> tuple[_App, _Deployment]:
        app_id = canonical["id"]
        self._check_lock(app_id, force)
        version = self._new_version()
        app = _App(definition=canonical, version=version, last_scaling_at=version, last_config_change_at=version,
                   backoff=float(canonical["backoffSeconds"]), versions=[version])
        self._apps[app_id] = app
        rendered = self._render_definition(app)
        self._api_post_event(handler, rendered)
        dep = self._start_deployment(app_id, ["StartApplication", "ScaleApplication"], None, rendered, version)
        return app, dep

    def _update_app(self, handler: _Handler, app: _App, new_def: dict[str, Any], force: bool,
                    restart: bool = False) -> _Deployment:
        self._check_lock(app.id, force)
        original = self._render_definition(app)
        old_cmp = {k: v for k, v in app.definition.items() if k != "instances"}
        new_cmp = {k: v for k, v in new_def.items() if k != "instances"}
        version = self._new_version()
        app.definition = new_def
        app.version = version
        app.versions.append(version)
        config_change = restart or old_cmp != new_cmp
        if config_change:
            app.last_config_change_at = version
            app.last_scaling_at = version
            step = "RestartApplication"
        else:
            app.last_scaling_at = version
            step = "ScaleApplication"
        target = self._render_definition(app)
        if not restart:
            self._api_post_event(handler, target)
        return self._start_deployment(app.id, [step], original, target, version)

    def _delete_app(self, handler: _Handler, app: _App, force: bool) -> _Deployment:
        self._check_lock(app.id, force)
        original = self._render_definition(app)
        self._api_post_event(handler, {"id": app.id})
        del self._apps[app.id]
        app.dying = True
        for t in app.tasks.values():
            if not t.killing:
                t.killing = True
                t.kill_reason = "app deleted"
        self._dying.append(app)
        return self._start_deployment(app.id, ["StopApplication"], original, None, self._new_version())

    def _merge_update(self, app: _App, body: dict[str, Any], partial: bool) -> dict[str, Any]:
        if partial:
            merged = copy.deepcopy(app.definition)
            if "container" in body and "networks" not in body:
                merged.pop("networks", None)
            if "networks" in body and "container" not in body and merged.get("container"):
                merged["container"].pop("portMappings", None)
            for k, v in body.items():
                if k in ("version", "versionInfo"):
                    continue
                merged[k] = copy.deepcopy(v)
        else:
            merged = {k: copy.deepcopy(v) for k, v in body.items() if k not in ("version", "versionInfo")}
        merged["id"] = app.id
        return merged

    # ------------------------------------------------------------------ request dispatch
    def _handle(self, h: _Handler, method: str) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(parsed.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        raw = h.read_body()
        body: Any = None
        body_error: str | None = None
        if raw:
            text = raw.decode("utf-8", errors="replace")
            try:
                body = json.loads(text)
            except ValueError as exc:
                body, body_error = text, str(exc)
        with self._lock:
            self.requests_log.append(LoggedRequest(method, path, body, query, dict(h.headers.items()), h.path))
            injected = self._fail_next.pop(0) if self._fail_next else None
        try:
            if injected is not None:
                reason = http.client.responses.get(injected, "Error")
                raise _HttpError(injected, {"message": f"{reason} (injected by MarathonEmulator)"})
            self._authenticate(h, path)
            self._route(h, method, path, query, raw, body, body_error)
        except _HttpError as err:
            h.send(err.status, err.body, err.headers, err.content_type)
        except Exception as exc:  # a bug in the emulator: answer like Marathon's mapper does
            log.exception("MarathonEmulator: %s %s failed", method, h.path)
            h.send(500, {"message": f"{type(exc).__name__}: {exc}"})

    def _authenticate(self, h: _Handler, path: str) -> None:
        if not self.credentials and not self.token:
            return
        header = h.headers.get("Authorization", "")
        if self.credentials and header.lower().startswith("basic "):
            with contextlib.suppress(ValueError):
                user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
                if (user, password) == tuple(self.credentials):
                    return
        if self.token and header.strip() == f"token={self.token}":
            return
        challenge = 'Basic realm="Mesosphere"' if self.credentials else "acsjwt"
        raise _HttpError(401, _JETTY_HTML.format(code=401, reason="Unauthorized", path=path),
                         {"WWW-Authenticate": challenge}, content_type="text/html;charset=ISO-8859-1")

    def _route(self, h: _Handler, method: str, path: str, query: dict[str, list[str]], raw: bytes, body: Any,
               body_error: str | None) -> None:
        def allow(*methods: str) -> None:
            if method not in methods:
                raise _HttpError(405, {"message": "Method Not Allowed"}, {"Allow": ",".join(methods)})

        def json_body() -> Any:
            ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if raw and ctype not in ("application/json",) and not ctype.endswith("+json"):
                raise _HttpError(415, {"message": "Unsupported Media Type"})
            if not raw:
                raise _HttpError(400, {"message": "Please specify data in JSON format",
                                       "details": "No content to map due to end-of-input"})
            if body_error is not None:
                raise _HttpError(400, {"message": "Invalid JSON", "details": body_error})
            return body

        force = _flag(query, "force")
        p = path.rstrip("/") or "/"
        if p == "/ping":
            allow("GET", "HEAD")
            return h.send_text(200, "pong")
        if p == "/v2/info":
            allow("GET")
            return h.send(200, self._info())
        if p == "/v2/leader":
            allow("GET", "DELETE")
            if method == "DELETE":
                return h.send(200, {"message": "Leadership abdicated"})
            return h.send(200, {"leader": f"{self.host}:{self.port}"})
        if p == "/v2/events":
            allow("GET")
            return self._serve_events(h, query)
        if p == "/v2/tasks":
            allow("GET")
            with self._lock:
                status = {s.lower() for s in query.get("status", []) if s}
                tasks = [self._render_task(a, t) for a in self._apps.values() for t in a.tasks.values()
                         if not status or t.state.removeprefix("TASK_").lower() in status]
            return h.send(200, {"tasks": tasks})
        if p == "/v2/deployments":
            allow("GET")
            with self._lock:
                return h.send(200, [self._render_deployment(d) for d in self._deployments.values()])
        if p.startswith("/v2/deployments/"):
            allow("DELETE")
            return self._delete_deployment(h, p[len("/v2/deployments/"):], force)
        if p == "/v2/apps":
            allow("GET", "POST")
            if method == "GET":
                return h.send(200, self._list_apps(query))
            return self._post_app(h, json_body(), force)
        if p.startswith("/v2/apps/"):
            rest = p[len("/v2/apps/"):]
            m = re.match(r"^(?P<id>.+)/tasks(?:/(?P<task>[^/]+))?$", rest)
            if m:
                return self._app_tasks(h, method, normalize_app_id(m["id"]), m["task"], query)
            if rest.endswith("/restart"):
                allow("POST")
                return self._restart_app(h, normalize_app_id(rest[: -len("/restart")]), force)
            if rest.endswith("/versions"):
                allow("GET")
                with self._lock:
                    app = self._get_app(normalize_app_id(rest[: -len("/versions")]))
                    return h.send(200, {"versions": list(reversed(app.versions))})
            app_id = normalize_app_id(rest)
            allow("GET", "PUT", "DELETE")
            if method == "GET":
                with self._lock:
                    app = self._get_app(app_id)
                    return h.send(200, {"app": self._render_app(app, tasks=True, last_failure=True)})
            if method == "PUT":
                return self._put_app(h, app_id, json_body(), force, _flag(query, "partialUpdate", True))
            return self._delete_app_request(h, app_id, force)
        raise _HttpError(404, {"message": f"URI not found: {h.path.split('?')[0]}"})

    def _get_app(self, app_id: str) -> _App:
        app = self._apps.get(app_id)
        if app is None:
            raise _unknown_app(app_id)
        return app

    def _info(self) -> dict[str, Any]:
        return {
            "name": "marathon",
            "version": self.marathon_version,
            "buildref": "unknown",
            "elected": True,
            "leader": f"{self.host}:{self.port}",
            "frameworkId": self.framework_id,
            "marathon_config": {
                "checkpoint": True, "executor": "//cmd", "failover_timeout": 604800, "features": [],
                "framework_name": "marathon", "ha": True, "hostname": self.host, "launch_token": 100,
                "local_port_max": 20000, "local_port_min": 10000, "master": "zk://localhost:2181/mesos",
                "mesos_role": None, "mesos_user": "root", "task_launch_timeout": 300000,
                "webui_url": None,
            },
            "zookeeper_config": {"zk": "zk://localhost:2181/marathon", "zk_timeout": 10000,
                                 "zk_session_timeout": 10000, "zk_max_versions": 50},
            "http_config": {"http_port": self.port, "https_port": 8443},
        }

    def _list_apps(self, query: dict[str, list[str]]) -> dict[str, Any]:
        embed = set(query.get("embed", []))
        with_tasks = bool(embed & {"apps.tasks", "app.tasks", "apps.failures", "app.failures"})
        with_failure = bool(embed & {"apps.lastTaskFailure", "app.lastTaskFailure", "apps.failures",
                                     "app.failures"})
        id_filter = (query.get("id") or [""])[0]
        cmd_filter = (query.get("cmd") or [""])[0]
        label_filter = (query.get("label") or [""])[0]
        selectors = _parse_label_selector(label_filter) if label_filter else []
        with self._lock:
            apps = []
            for app in sorted(self._apps.values(), key=lambda a: a.id):
                # Marathon's ?id= and ?cmd= are case-insensitive *contains* filters, not prefixes.
                if id_filter and id_filter.lower() not in app.id.lower():
                    continue
                if cmd_filter and cmd_filter.lower() not in (app.definition.get("cmd") or "").lower():
                    continue
                if selectors and not all(sel(app.definition.get("labels", {})) for sel in selectors):
                    continue
                apps.append(self._render_app(app, tasks=with_tasks, last_failure=with_failure))
        return {"apps": apps}

    def _post_app(self, h: _Handler, body: Any, force: bool) -> None:
        self._validate(body, update=False)
        with self._lock:
            app_id = normalize_app_id(body["id"])
            if app_id in self._apps:
                raise _HttpError(409, {"message": f"An app with id [{app_id}] already exists."})
            canonical = self._canonicalize(body)
            self._semantic_checks(canonical)
            app, dep = self._create_app(h, canonical, force)
            out = self._render_app(app, tasks=True, last_failure=False)
            out["tasks"] = []
            out["deployments"] = [{"id": dep.id}]
        h.send(201, out, {"Marathon-Deployment-Id": dep.id, "Location": f"{self.url}/v2/apps{app_id}"})

    def _put_app(self, h: _Handler, app_id: str, body: Any, force: bool, partial: bool) -> None:
        self._validate(body, update=True)
        with self._lock:
            app = self._apps.get(app_id)
            if app is None:
                if not valid_app_id(app_id):
                    raise _not_valid([{"path": "/id", "errors": ["must fully match regular expression"]}])
                canonical = self._canonicalize({**body, "id": app_id})
                self._semantic_checks(canonical)
                _, dep = self._create_app(h, canonical, force)
                status = 201
            else:
                merged = self._merge_update(app, body, partial)
                self._validate(merged, update=False)
                canonical = self._canonicalize(merged, previous=app.definition)
                self._semantic_checks(canonical)
                dep = self._update_app(h, app, canonical, force)
                status = 200
        h.send(status, {"deploymentId": dep.id, "version": dep.version}, {"Marathon-Deployment-Id": dep.id})

    def _delete_app_request(self, h: _Handler, app_id: str, force: bool) -> None:
        with self._lock:
            app = self._get_app(app_id)
            dep = self._delete_app(h, app, force)
        h.send(200, {"deploymentId": dep.id, "version": dep.version}, {"Marathon-Deployment-Id": dep.id})

    def _restart_app(self, h: _Handler, app_id: str, force: bool) -> None:
        with self._lock:
            app = self._get_app(app_id)
            dep = self._update_app(h, app, copy.deepcopy(app.definition), force, restart=True)
        h.send(200, {"deploymentId": dep.id, "version": dep.version}, {"Marathon-Deployment-Id": dep.id})

    def _app_tasks(self, h: _Handler, method: str, app_id: str, task_id: str | None,
                   query: dict[str, list[str]]) -> None:
        if method not in ("GET", "DELETE") or (task_id and method != "DELETE"):
            raise _HttpError(405, {"message": "Method Not Allowed"}, {"Allow": "DELETE" if task_id else "GET,DELETE"})
        scale = _flag(query, "scale")
        with self._lock:
            app = self._get_app(app_id)
            if method == "GET":
                return h.send(200, {"tasks": [self._render_task(app, t) for t in app.tasks.values()]})
            if task_id is not None:
                task = app.tasks.get(task_id)
                if task is None:
                    raise _HttpError(404, {"message": f"Task '{task_id}' does not exist"})
                victims = [task]
            else:
                host = (query.get("host") or [None])[0]
                victims = [t for t in app.tasks.values() if host in (None, "*", self.bind_address)]
            rendered = [self._render_task(app, t) for t in victims]
            for t in victims:
                t.killing, t.kill_reason = True, "killed via API"
            if scale:
                new_def = copy.deepcopy(app.definition)
                new_def["instances"] = max(0, new_def["instances"] - len(victims))
                dep = self._update_app(h, app, new_def, _flag(query, "force"))
                return h.send(200, {"deploymentId": dep.id, "version": dep.version},
                              {"Marathon-Deployment-Id": dep.id})
        if task_id is not None:
            return h.send(200, {"task": rendered[0]})
        return h.send(200, {"tasks": rendered})

    def _delete_deployment(self, h: _Handler, dep_id: str, force: bool) -> None:
        with self._lock:
            dep = self._deployments.get(dep_id)
            if dep is None:
                raise _HttpError(404, {"message": f"DeploymentPlan {dep_id} does not exist"})
            self._cancel_deployment(dep)
            if force:  # cancel only: the app keeps its new definition, nothing is rolled back
                return h.send(202, None)
            # roll back: a new (forced) deployment to the original state
            if dep.original is None:
                app = self._apps.get(dep.app_id)
                new_dep = self._delete_app(h, app, True) if app else None
            elif dep.target is None or dep.app_id not in self._apps:
                body = {k: v for k, v in dep.original.items() if k not in ("version", "versionInfo")}
                _, new_dep = self._create_app(h, self._canonicalize(body), True)
            else:
                app = self._apps[dep.app_id]
                body = {k: v for k, v in dep.original.items() if k not in ("version", "versionInfo")}
                new_dep = self._update_app(h, app, self._canonicalize(body, previous=app.definition), True)
            if new_dep is None:
                return h.send(202, None)
        h.send(200, {"deploymentId": new_dep.id, "version": new_dep.version},
               {"Marathon-Deployment-Id": new_dep.id})

    # ------------------------------------------------------------------ event stream
    def _serve_events(self, h: _Handler, query: dict[str, list[str]]) -> None:
        if not self.events_enabled:
            raise _HttpError(404, {"message": "URI not found: /v2/events"})
        accept = ",".join(h.headers.get_all("Accept") or [])
        if "text/event-stream" not in accept:
            # Marathon's event servlet (Jetty EventSourceServlet) falls back to HttpServlet.doGet: 405, HTML.
            raise _HttpError(405, _JETTY_HTML.format(code=405, reason="HTTP method GET is not supported by this URL",
                                                     path="/v2/events"), content_type="text/html;charset=ISO-8859-1")
        types = {t for v in query.get("event_type", []) for t in v.split(",") if t}
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream;charset=utf-8")
        h.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.flush()
        remote = h.client_address[0]
        sub = _Subscriber(h.connection, remote, types)
        with self._lock:
            self._subscribers.append(sub)
        self._emit("event_stream_attached", {"remoteAddress": remote})
        h.close_connection = True
        try:
            while not self._stopping:
                try:
                    item = sub.queue.get(timeout=self.sse_heartbeat)
                except queue.Empty:
                    h.write_chunk(b"\r\n")
                    continue
                if item is None:
                    break
                event_type, data = item
                h.write_chunk(f"event: {event_type}\ndata: {data}\n\n".encode())
        except OSError:
            pass
        finally:
            with self._lock:
                if sub in self._subscribers:
                    self._subscribers.remove(sub)
            self._emit("event_stream_detached", {"remoteAddress": remote})
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ reconciliation
    def _reconcile_loop(self) -> None:
        while not self._stop_event.wait(self.reconcile_interval):
            try:
                self._reconcile_once()
            except Exception:
                log.exception("MarathonEmulator: reconcile failed")

    def _submit(self, fn: Any, *args: Any) -> None:
        executor = self._executor
        if executor is None or self._stopping:
            return
        with contextlib.suppress(RuntimeError):  # shutting down
            executor.submit(self._guard, fn, *args)

    @staticmethod
    def _guard(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("MarathonEmulator: %s failed", getattr(fn, "__name__", fn))

    def _all_apps(self) -> list[_App]:
        return list(self._apps.values()) + list(self._dying)

    def _reconcile_once(self) -> None:
        snapshot_time = time.monotonic()
        try:
            listed = self._docker.api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance_id}"})
        except Exception as exc:
            log.warning("MarathonEmulator: cannot list containers: %s", exc)
            listed = None
        states: dict[str, dict[str, Any]] = {}
        for c in listed or []:
            tid = (c.get("Labels") or {}).get(LABEL_TASK)
            if tid:
                states[tid] = c
        now = time.monotonic()
        with self._lock:
            for app in self._all_apps():
                for t in list(app.tasks.values()):
                    if t.busy or listed is None:
                        continue
                    if t.killing:
                        t.busy = True
                        self._submit(self._kill_task, app, t)
                        continue
                    if t.container_id is None:
                        continue
                    info = states.get(t.id)
                    if info is None:
                        if t.launched_mono is not None and t.launched_mono < snapshot_time:
                            self._task_terminal(app, t, "TASK_FAILED", "Container disappeared (removed outside "
                                                                       "the scheduler)")
                        continue
                    state = info.get("State")
                    if state == "running" and t.state == "TASK_STAGING":
                        t.state = "TASK_RUNNING"
                        t.started_at = _now_iso()
                        t.started_mono = now
                        t.next_probe = now
                        self._status_event(app, t, "")
                    elif state in ("exited", "dead"):
                        t.busy = True
                        self._submit(self._collect_exit, app, t)
                    if t.state == "TASK_RUNNING" and not t.probing and now >= t.next_probe and t.hc_count:
                        t.probing = True
                        self._submit(self._probe_task, app, t)
            for app in list(self._apps.values()):
                self._scale(app, now)
            self._dying = [a for a in self._dying if a.tasks]
            self._advance_deployments()

    def _scale(self, app: _App, now: float) -> None:
        d = app.definition
        wanted = d["instances"]
        live = [t for t in app.tasks.values() if not t.killing]
        current = [t for t in live if t.config_version == app.last_config_change_at]
        old = [t for t in live if t.config_version != app.last_config_change_at]
        missing = wanted - len(current)
        if missing > 0 and now >= app.next_launch and not self._stopping:
            for _ in range(missing):
                self._launch(app)
        elif missing < 0:
            # Not-yet-running tasks go first, then by age as killSelection says (default YOUNGEST_FIRST).
            youngest_first = d.get("killSelection", "YOUNGEST_FIRST") == "YOUNGEST_FIRST"
            staging = [t for t in current if t.state != "TASK_RUNNING"]
            running = sorted((t for t in current if t.state == "TASK_RUNNING"), key=lambda t: t.staged_at,
                             reverse=youngest_first)
            for t in (staging + running)[:-missing]:
                t.killing, t.kill_reason = True, "scaled down"
        if old:
            has_hc = bool(d.get("healthChecks"))
            ready = [t for t in current if t.state == "TASK_RUNNING" and (t.healthy() or not has_hc)]
            keep = max(0, wanted - len(ready))
            for t in sorted(old, key=lambda t: t.staged_at)[: max(0, len(old) - keep)]:
                t.killing, t.kill_reason = True, "replaced by a new version"

    def _launch(self, app: _App) -> None:
        d = app.definition
        t = _Task(id=self._new_task_id(app.id), app_id=app.id, version=app.version,
                  config_version=app.last_config_change_at, staged_at=_now_iso(), hc_count=len(d["healthChecks"]))
        t.container_name = f"bgci-emu-marathon-{self.instance_id}-{t.id.rsplit('.', 1)[-1][-12:]}"
        t.busy = True
        app.tasks[t.id] = t
        image = ((d.get("container") or {}).get("docker") or {}).get("image") or self.default_image
        inject = self.fail_tasks or bool({app.id, image} & self._fail_targets)
        self._submit(self._start_container, app, t, copy.deepcopy(d), inject)

    def _status_event(self, app: _App, t: _Task, message: str) -> None:
        payload: dict[str, Any] = {
            "slaveId": self.slave_id, "taskId": t.id, "taskStatus": t.state, "message": message,
            "appId": app.id, "host": self.bind_address, "ports": list(t.host_ports), "version": t.version,
        }
        if not self.legacy_shapes:
            payload["ipAddresses"] = [{"ipAddress": t.ip_address, "protocol": "IPv4"}] if t.ip_address else []
        self._emit("status_update_event", payload)

    def _task_terminal(self, app: _App, t: _Task, state: str, message: str) -> None:
        """Record a terminal status (lock held): event, lastTaskFailure, expunge, backoff."""
        t.state = state
        self._status_event(app, t, message)
        app.tasks.pop(t.id, None)
        if self.agent is not None:
            self.agent.complete(t.id, state)
        if state in FAILURE_STATES:
            app.last_failure = {
                "appId": app.id, "host": self.bind_address, "message": message, "state": state,
                "taskId": t.id, "timestamp": _now_iso(), "version": t.version, "slaveId": self.slave_id,
            }
        if state != "TASK_KILLED" and not app.dying:
            d = app.definition
            app.next_launch = time.monotonic() + app.backoff
            app.backoff = min(app.backoff * float(d["backoffFactor"]), float(d["maxLaunchDelaySeconds"]))

    # ------------------------------------------------------------------ docker work (no lock held)
    def _container_spec(self, app_id: str, d: dict[str, Any], t: _Task, inject: bool) -> dict[str, Any]:
        container = d.get("container") or {}
        docker_cfg = container.get("docker") or {}
        mode = d["networks"][0]["mode"]
        env: dict[str, str] = {}
        labels = {str(k): str(v) for k, v in d.get("labels", {}).items()}
        log_driver, log_options = None, {}
        for p in docker_cfg.get("parameters", []):
            if p.get("key") == "label" and "=" in p.get("value", ""):
                k, _, v = p["value"].partition("=")
                labels[k] = v
            elif p.get("key") == "log-driver":  # docker run --log-driver / --log-opt, as Mesos passes them
                log_driver = p.get("value", "")
            elif p.get("key") == "log-opt" and "=" in p.get("value", ""):
                k, _, v = p["value"].partition("=")
                log_options[k] = v
        labels.update({LABEL_EMULATOR: EMULATOR_NAME, LABEL_INSTANCE: self.instance_id, LABEL_TASK: t.id,
                       LABEL_APP: app_id})
        kwargs: dict[str, Any] = {"name": t.container_name, "labels": labels, "detach": True}
        if log_driver or log_options:
            kwargs["log_config"] = {"Type": log_driver or "json-file", "Config": log_options}
        if mode == "host":
            kwargs["network_mode"] = "host"
            ports_wanted = [p["port"] if d.get("requirePorts") else 0 for p in d["portDefinitions"]]
            mappings: list[dict[str, Any]] = []
            service = [p["port"] for p in d["portDefinitions"]]
        else:
            mappings = container.get("portMappings", [])
            ports_wanted = [m.get("hostPort", 0) for m in mappings if "hostPort" in m]
            service = [m["servicePort"] for m in mappings]
        host_ports = [p or _free_port(self.bind_address) for p in ports_wanted]
        if mode != "host":
            published: dict[str, Any] = {}
            it = iter(host_ports)
            for m in mappings:
                if "hostPort" not in m:
                    continue
                hp = next(it)
                for proto in m.get("protocol", "tcp").split(","):
                    published[f"{m.get('containerPort') or hp}/{proto}"] = (self.bind_address, hp)
            kwargs["ports"] = published
        env["HOST"] = self.bind_address
        for i, hp in enumerate(host_ports):
            env[f"PORT{i}"] = str(hp)
        if host_ports:
            env["PORT"] = str(host_ports[0])
            env["PORTS"] = ",".join(str(p) for p in host_ports)
        for m, hp in zip([m for m in mappings if "hostPort" in m], host_ports, strict=False):
            if m.get("containerPort"):
                env[f"PORT_{m['containerPort']}"] = str(hp)
            if m.get("name"):
                env[f"PORT_{m['name'].upper().replace('-', '_')}"] = str(hp)
        env.update({
            "MARATHON_APP_ID": app_id, "MARATHON_APP_VERSION": t.version, "MESOS_TASK_ID": t.id,
            "MARATHON_APP_RESOURCE_CPUS": str(d["cpus"]), "MARATHON_APP_RESOURCE_MEM": str(d["mem"]),
            "MARATHON_APP_RESOURCE_DISK": str(d["disk"]), "MARATHON_APP_RESOURCE_GPUS": str(d["gpus"]),
            "MARATHON_APP_LABELS": " ".join(sorted(d.get("labels", {}))),
        })
        for k, v in d.get("labels", {}).items():
            env["MARATHON_APP_LABEL_" + re.sub(r"[^A-Za-z0-9_]", "_", k).upper()] = str(v)
        image = docker_cfg.get("image") or self.default_image
        if docker_cfg.get("image"):
            env["MARATHON_APP_DOCKER_IMAGE"] = image
        for k, v in d.get("env", {}).items():
            if isinstance(v, str):  # secret references ({"secret": ...}) cannot be resolved here
                env[k] = v
        kwargs["environment"] = env
        if inject:
            kwargs["entrypoint"] = ["/bin/sh", "-c"]
            kwargs["command"] = ["echo 'injected task failure (MarathonEmulator.fail_tasks)' >&2; exit 1"]
        elif d.get("cmd"):
            # Mesos' Docker containerizer runs a shell command as: docker run --entrypoint /bin/sh IMAGE -c CMD
            kwargs["entrypoint"] = ["/bin/sh", "-c"]
            kwargs["command"] = [d["cmd"]]
        elif d.get("args"):
            kwargs["command"] = list(d["args"])
        binds = {}
        for v in container.get("volumes", []):
            if v.get("hostPath") and v.get("containerPath"):
                binds[v["hostPath"]] = {"bind": v["containerPath"], "mode": "ro" if v.get("mode") == "RO" else "rw"}
        if binds:
            kwargs["volumes"] = binds
        if d.get("tty"):
            kwargs["tty"] = True
        return {"image": image, "kwargs": kwargs, "host_ports": host_ports, "service": service, "mode": mode}

    def _start_container(self, app: _App, t: _Task, d: dict[str, Any], inject: bool) -> None:
        error: str | None = None
        container = None
        spec: dict[str, Any] = {}
        for attempt in range(3):
            spec = self._container_spec(app.id, d, t, inject)
            try:
                container = self._docker.containers.create(spec["image"], **spec["kwargs"])
                self._known_containers.add(container.id)
                if self.agent is not None:  # attached before it starts, as `docker run` is: no line is missed
                    self.agent.capture(t.id, self._docker.api, container.id)
                container.start()
                break
            except Exception as exc:
                error = str(getattr(exc, "explanation", None) or exc)
                if container is not None:
                    with contextlib.suppress(Exception):
                        container.remove(force=True)
                    self._known_containers.discard(container.id)
                    container = None
                retry = "port is already allocated" in error or "address already in use" in error
                if not retry or attempt == 2:
                    break
                t.container_name += "r"
        ip = None
        if container is not None:
            error = None
            with contextlib.suppress(Exception):
                container.reload()
                nets = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
                ip = next((n.get("IPAddress") for n in nets.values() if n.get("IPAddress")), None)
            if spec["mode"] == "host":
                ip = self.bind_address
        with self._lock:
            t.busy = False
            if container is None:
                t.host_ports = []
                self._task_terminal(app, t, "TASK_FAILED", f"Failed to launch container: {error}")
                return
            t.container_id = container.id
            t.host_ports = spec["host_ports"]
            t.service_ports = spec["service"]
            t.ip_address = ip
            t.launched_mono = time.monotonic()
        if self._stopping:
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def _collect_exit(self, app: _App, t: _Task) -> None:
        code, tail = None, ""
        try:
            c = self._docker.containers.get(t.container_id)
            code = c.attrs.get("State", {}).get("ExitCode")
            tail = c.logs(stdout=True, stderr=True, tail=10).decode("utf-8", errors="replace").strip()
            c.remove(force=True)
        except Exception as exc:
            tail = tail or f"(could not read the container: {exc})"
        self._known_containers.discard(t.container_id or "")
        message = f"Container exited with status {code}"
        if tail:
            message += "; last log lines:\n" + tail
        with self._lock:
            t.busy = False
            if t.id in app.tasks:
                self._task_terminal(app, t, "TASK_FINISHED" if code == 0 else "TASK_FAILED", message)

    def _kill_task(self, app: _App, t: _Task) -> None:
        if t.container_id:
            grace = min(float(app.definition.get("taskKillGracePeriodSeconds", self.kill_grace_period)),
                        self.kill_grace_period)
            try:
                c = self._docker.containers.get(t.container_id)
                with contextlib.suppress(Exception):
                    c.stop(timeout=max(0, round(grace)))
                c.remove(force=True)
            except Exception as exc:
                if "No such container" not in str(exc) and "404" not in str(exc):
                    log.warning("MarathonEmulator: killing %s: %s", t.id, exc)
            self._known_containers.discard(t.container_id)
        with self._lock:
            t.busy = False
            if t.id in app.tasks:
                self._task_terminal(app, t, "TASK_KILLED", t.kill_reason)

    def _probe_task(self, app: _App, t: _Task) -> None:
        try:
            with self._lock:
                checks = copy.deepcopy(app.definition.get("healthChecks", []))
                ports = list(t.host_ports)
                cid = t.container_id
            results = [self._probe(hc, ports, cid) for hc in checks]
        finally:
            with self._lock:
                t.probing = False
                t.next_probe = time.monotonic() + self.health_interval
        with self._lock:
            if t.id not in app.tasks or t.killing or t.state != "TASK_RUNNING":
                return
            for i, (hc, (alive, cause)) in enumerate(zip(checks, results, strict=False)):
                if i >= len(t.health):
                    break
                self._record_health(app, t, i, hc, alive, cause)

    def _probe(self, hc: dict[str, Any], ports: list[int], cid: str | None) -> tuple[bool, str | None]:
        protocol = hc.get("protocol", "HTTP")
        timeout = max(0.2, min(float(hc.get("timeoutSeconds", 20)), 2.0))
        if protocol == "COMMAND":
            cmd = (hc.get("command") or {}).get("value", "true")
            try:
                res = self._docker.containers.get(cid).exec_run(["/bin/sh", "-c", cmd])
                return res.exit_code == 0, None if res.exit_code == 0 else f"exit code {res.exit_code}"
            except Exception as exc:
                return False, str(exc)
        port = hc.get("port") or (ports[hc.get("portIndex", 0)] if hc.get("portIndex", 0) < len(ports) else None)
        if not port:
            return False, "no port for the health check"
        if protocol in ("TCP", "MESOS_TCP"):
            try:
                with socket.create_connection((self.bind_address, port), timeout=timeout):
                    return True, None
            except OSError as exc:
                return False, str(exc)
        secure = protocol in ("HTTPS", "MESOS_HTTPS")
        try:
            if secure:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    self.bind_address, port, timeout=timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(self.bind_address, port, timeout=timeout)
            try:
                conn.request("GET", hc.get("path", "/"), headers={"User-Agent": "marathon-emulator"})
                status = conn.getresponse().status
            finally:
                conn.close()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if 200 <= status < 400 or (100 <= status < 200 and hc.get("ignoreHttp1xx")):
            return True, None
        return False, f"{status} {http.client.responses.get(status, '')}".strip()

    def _record_health(self, app: _App, t: _Task, i: int, hc: dict[str, Any], alive: bool,
                       cause: str | None) -> None:
        now_iso = _now_iso()
        res = t.health[i]
        before = res["alive"] if res is not None else None
        if alive:
            if res is None:
                res = {"alive": True, "consecutiveFailures": 0, "firstSuccess": now_iso, "lastSuccess": now_iso,
                       "lastFailure": None, "lastFailureCause": None}
            else:
                res.update(alive=True, consecutiveFailures=0, lastSuccess=now_iso)
                res["firstSuccess"] = res["firstSuccess"] or now_iso
        else:
            never_healthy = res is None or res.get("firstSuccess") is None
            in_grace = (time.monotonic() - (t.started_mono or 0)) < float(hc.get("gracePeriodSeconds", 300))
            if never_healthy and in_grace:
                return  # Marathon ignores failures within the grace period until the first success
            if res is None:
                res = {"alive": False, "consecutiveFailures": 0, "firstSuccess": None, "lastSuccess": None,
                       "lastFailure": None, "lastFailureCause": None}
            res.update(alive=False, consecutiveFailures=res["consecutiveFailures"] + 1, lastFailure=now_iso,
                       lastFailureCause=cause)
        t.health[i] = res
        if before != res["alive"]:
            payload = {"appId": app.id, "instanceId": t.id, "version": t.version, "alive": res["alive"]}
            if self.legacy_shapes:
                payload = {"appId": app.id, "taskId": t.id, "version": t.version, "alive": res["alive"]}
            self._emit("health_status_changed_event", payload)
        if not alive:
            self._emit("failed_health_check_event", {"appId": app.id, "taskId": t.id, "instanceId": t.id,
                                                     "healthCheck": hc})
            limit = int(hc.get("maxConsecutiveFailures", 3))
            if limit > 0 and res["consecutiveFailures"] >= limit and not t.killing:
                t.killing, t.kill_reason = True, f"unhealthy: {cause}"
                self._emit("unhealthy_task_kill_event", {
                    "appId": app.id, "taskId": t.id, "instanceId": t.id, "version": t.version,
                    "reason": cause or "", "host": self.bind_address, "slaveId": self.slave_id})


# ---------------------------------------------------------------------- HTTP plumbing
class _Handler(BaseHTTPRequestHandler):
    emulator: MarathonEmulator
    protocol_version = "HTTP/1.1"
    server_version = "Jetty(9.3.z-SNAPSHOT)"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("marathon-emulator: " + format, *args)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status: int, body: Any, headers: dict[str, str] | None = None,
             content_type: str = "application/json") -> None:
        if body is None:
            data = b""
        elif isinstance(body, str | bytes):
            data = body.encode() if isinstance(body, str) else body
        else:
            data = json.dumps(body).encode()
        self.send_response(status)
        if data or content_type != "application/json":
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_text(self, status: int, text: str) -> None:
        self.send(status, text, content_type="text/plain;charset=utf-8")

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self.emulator._handle(self, "GET")

    def do_POST(self) -> None:
        self.emulator._handle(self, "POST")

    def do_PUT(self) -> None:
        self.emulator._handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.emulator._handle(self, "DELETE")

    def do_PATCH(self) -> None:
        self.emulator._handle(self, "PATCH")

    def do_HEAD(self) -> None:
        self.emulator._handle(self, "HEAD")

    def do_OPTIONS(self) -> None:
        self.emulator._handle(self, "OPTIONS")


# ---------------------------------------------------------------------- helpers
def _flag(query: dict[str, list[str]], name: str, default: bool = False) -> bool:
    values = query.get(name)
    if not values:
        return default
    return values[-1].strip().lower() == "true"


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _parse_label_selector(text: str) -> list[Any]:
    """Marathon's ?label= selector: 'a', 'a==b', 'a!=b', 'a in (b, c)', 'a notin (b, c)', comma-joined."""
    selectors = []
    for m in re.finditer(r"\s*([^,\s=!()]+)\s*(?:(==|!=)\s*([^,\s()]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*(?:,|$)",
                         text):
        key, op, value, set_op, values = m.groups()
        if op == "==":
            selectors.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            selectors.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif set_op:
            vals = {v.strip() for v in values.split(",")}
            if set_op == "in":
                selectors.append(lambda labels, k=key, vs=vals: labels.get(k) in vs)
            else:
                selectors.append(lambda labels, k=key, vs=vals: labels.get(k) not in vs)
        else:
            selectors.append(lambda labels, k=key: k in labels)
    return selectors


def iter_sse(lines: Iterable[str]) -> Iterable[tuple[str, dict[str, Any]]]:
    """Parse an SSE line stream (e.g. ``response.iter_lines(decode_unicode=True)``) into (event, data)."""
    event, data = None, []
    for line in lines:
        if line in ("", "\r"):
            if data:
                yield event or "message", json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


DECISIONS = """
Where Marathon's behaviour was unclear, or impossible to reproduce on one Docker host:

* events_enabled=False: /v2/events answers 404 {"message":"URI not found: /v2/events"} -- what a Marathon
  older than 0.9 (no event stream) or a proxy that does not route it does. Marathon >= 0.9 always serves it
  (--disable_http_event_callback only concerns the old HTTP callbacks).
* /v2/events without "Accept: text/event-stream": 405 with Jetty's HTML error page (Marathon's event
  servlet falls back to HttpServlet.doGet), not a JSON body.
* 401: Jetty's HTML page with WWW-Authenticate: Basic realm="Mesosphere" (--http_credentials); with only a
  token configured the challenge is "acsjwt" (DC/OS). Either credential is accepted when both are set.
* Task ids: "web-app_env1.instance-<uuid>" (Marathon >= 1.4); with legacy_shapes "web-app_env1.<uuid>".
  The instanceId of a task (healthCheckResults, health_status_changed_event) equals its task id.
* Terminal tasks are expunged at once, as Marathon does: a failed task is visible in the
  status_update_event (taskStatus TASK_FAILED + message) and in the app's lastTaskFailure, not in tasks[].
  TASK_FINISHED (exit 0) is relaunched too but, like in Marathon, is no "failure".
* A crash-looping app is relaunched with backoffSeconds * backoffFactor^n (capped by maxLaunchDelaySeconds);
  its deployment never finishes (Marathon has no deployment timeout); only ?force or DELETE
  /v2/deployments/{id} ends it (deployment_failed).
* DELETE /v2/apps/{id} needs ?force=true while a deployment runs (1.5 default force=false). After a
  DELETE the app is gone from /v2/apps at once but its StopApplication deployment still locks the id, so
  an immediate re-POST of the same id answers 409 "App is locked" (as real Marathon does).
* ?id= on GET /v2/apps is Marathon's case-insensitive "contains" filter, not a prefix filter.
* POST/PUT bodies need Content-Type application/json (Jersey: 415 otherwise). Invalid JSON:
  400 {"message":"Invalid JSON","details":"<parser message>"}; empty body: 400 "Please specify data in
  JSON format". Unknown route: 404 {"message":"URI not found: <path>"}; wrong method: 405
  {"message":"Method Not Allowed"} with an Allow header.
* 422 details: one entry per JSON path (unknown properties get the path of the property itself, e.g.
  "/foo"); the error texts are jsonschema's, not Marathon's.
* Networking: without "networks" an app is container/bridge when it has port mappings (either form),
  else host. Host ports are picked from the free ports of bind_address (so $PORT0 etc. are known at
  launch); health checks (HTTP, MESOS_HTTP, HTTPS, TCP) probe bind_address:hostPort, COMMAND runs
  "docker exec". intervalSeconds/delaySeconds are replaced by health_interval; gracePeriodSeconds and
  maxConsecutiveFailures are honoured (a task failing too often is killed and relaunched).
* Ignored: constraints (one host), cpus/mem/disk limits, readinessChecks, dependencies, fetch/uris,
  secrets, docker parameters other than "label", "log-driver" and "log-opt", privileged, forcePullImage
  (nothing is pulled: a missing image gives TASK_FAILED "Failed to launch container: ..."). Apps without a
  container run their cmd in
  default_image with host networking.
* Config changes (anything but instances) and /restart replace tasks: new tasks first, an old one is
  killed for every new healthy one (minimumHealthCapacity 1, maximumOverCapacity 1).
* The Mesos agent: one for every task, on its own loopback port (agent_port; a real one listens on 5051
  of the task's host). A task's sandbox is its executor's directory, executor id = task id (Mesos' command
  executor for a Docker task); stdout/stderr are copied from the container's attach stream, which
  starts before the container does, as `docker run` attached does on an agent. Unlike a real agent, the
  executor writes no lines of its own there ("Registered docker executor...", "Starting task..."). Ended
  tasks' sandboxes stay readable (completed_executors) until the emulator stops; no sandbox GC.
"""
