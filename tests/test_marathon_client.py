"""The Marathon transport and the pure parts of the Marathon backend.

Pure tests first: the app body against Marathon's own AppDefinition schema,
reading real response bodies (../shared/reference/marathon/examples) in both
the 1.5+ and the older shape, malformed answers, the decisions. Then the
transport over real HTTP against the Marathon emulator (retries, failover,
422, 409 locks, credentials). Only what the emulator cannot answer (bodies
no Marathon sends) comes from a canned HTTP server. Each test says which real
Marathon behaviour its assertions stand for.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bgci import labels
from bgci.config import Credentials, DeploySettings, MarathonSettings, Settings
from bgci.errors import ConfigError, DeploymentInProgress, MarathonAPIError, SchedulerError, SchedulerUnavailable
from bgci.schedulers import get_scheduler
from bgci.schedulers.base import EnvironmentSpec, Scheduler
from bgci.schedulers.local import LocalScheduler
from bgci.schedulers.marathon import (
    EventWatch,
    MarathonApp,
    MarathonClient,
    MarathonOptions,
    MarathonScheduler,
    MarathonTask,
    TaskFailure,
    app_definition,
    marathon_app_id,
)
from bgci.schedulers.marathon.client import display_url
from bgci.schedulers.marathon.definition import check_pullable
from bgci.schedulers.marathon.events import read_sse
from bgci.schedulers.marathon.models import deployments_touching, render_error_body
from bgci.schedulers.marathon.scheduler import environment_from, is_ready, task_failures
from tests.conftest import empty_marathon, require_marathon_reference
from tests.emulators.marathon import DEFAULT_SCHEMA_PATH, MarathonEmulator
from tests.support import free_port

EXAMPLES = DEFAULT_SCHEMA_PATH.parent / "examples"
needs_reference = pytest.mark.usefixtures("marathon_reference")


def example(name: str) -> Any:
    """One of Marathon's own example answers (skips, or fails under CI, when the reference is missing)."""
    return json.loads((require_marathon_reference() / "examples" / name).read_text())


def spec(**changes: Any) -> EnvironmentSpec:
    values: dict[str, Any] = {
        "name": "shop-0123456789ab", "app": "shop", "sha": "0123456789ab" + "c" * 28,
        "image": "registry.example.com:5000/shop@sha256:" + "d" * 64, "digest": "sha256:" + "d" * 64,
        "instances": 3, "container_port": 8000, "health_path": "/health", "created_by": "jenkins",
        "created_at": "2024-05-01T12:00:00Z",
    }
    values.update(changes)
    return EnvironmentSpec(**values)


# -- the body bgci sends -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def validator(marathon_reference: Path) -> jsonschema.Draft4Validator:
    # Draft 4 explicitly: the schema's $schema names no draft (see the reference README).
    return jsonschema.Draft4Validator(json.loads(DEFAULT_SCHEMA_PATH.read_text()))


@needs_reference
@pytest.mark.parametrize(("the_spec", "options"), [
    (spec(), MarathonOptions()),
    (spec(instances=1, env={"WEB_APP_ENV": "staging", "EMPTY": ""}), MarathonOptions(cpus=1, mem=512)),
    (spec(image="sha256:" + "e" * 64, health_path="/status?full=1"),
     MarathonOptions(constraints=(("hostname", "UNIQUE"),))),
    (spec(instances=100), MarathonOptions(constraints=(("hostname", "UNIQUE"), ("rack_id", "GROUP_BY", "3"),
                                                       ("zone", "LIKE", "eu-.*")),
                                          minimum_health_capacity=0.5, maximum_over_capacity=0.2,
                                          health_protocol="HTTP")),
])
def test_every_app_body_validates_against_marathons_schema(validator: jsonschema.Draft4Validator,
                                                           the_spec: EnvironmentSpec, options: MarathonOptions) -> None:
    body = app_definition(marathon_app_id(the_spec.app, the_spec.name), the_spec, options)
    # Marathon validates POST /v2/apps with this schema and answers 422 for what it rejects.
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == []
    # The 1.5+ form: networks with container/bridge, container.portMappings (not docker.portMappings).
    assert body["networks"] == [{"mode": "container/bridge"}]
    assert body["container"]["portMappings"] == [{"containerPort": 8000, "hostPort": 0, "protocol": "tcp",
                                                  "name": "http"}]
    assert body["container"]["docker"] == {"image": the_spec.image, "forcePullImage": False}
    (check,) = body["healthChecks"]
    assert (check["protocol"], check["path"], check["portIndex"]) == (options.health_protocol,
                                                                       the_spec.health_path, 0)
    # Metadata lives in the app's labels, nowhere else; constraints only when configured.
    assert body["labels"] == the_spec.labels() and body["env"] == the_spec.env
    assert body.get("constraints", []) == [list(c) for c in options.constraints]
    assert body["upgradeStrategy"] == {"minimumHealthCapacity": options.minimum_health_capacity,
                                       "maximumOverCapacity": options.maximum_over_capacity}


@needs_reference
def test_the_schema_check_has_teeth(validator: jsonschema.Draft4Validator) -> None:
    # What Marathon's schema rejects, the validator rejects too: a pass above means something.
    body = app_definition("/shop/x", spec(), MarathonOptions())
    for broken in ({**body, "instances": -1}, {**body, "colour": "blue"},
                   {**body, "constraints": [["hostname", "SOMETIMES"]]},
                   {**body, "healthChecks": [{**body["healthChecks"][0], "protocol": "GRPC"}]}):
        assert list(validator.iter_errors(broken))


@pytest.mark.parametrize("image", [
    "sha256:" + "e" * 64, "e" * 64, "e" * 12,  # local image ids: what bgci names when no registry holds the image
    "web:1", "shop@sha256:" + "d" * 64, "library/nginx:1.25",  # no registry host: Docker Hub, where bgci never pushes
])
def test_an_image_agents_cannot_pull_is_refused(image: str) -> None:
    # A Mesos agent pulls the image by reference on its own host; a local id exists only on the building host.
    with pytest.raises(ConfigError) as caught:
        check_pullable(image)
    assert f"image {image}: Marathon agents cannot pull" in str(caught.value)
    assert "BGCI_REGISTRY" in str(caught.value)


@pytest.mark.parametrize("image", [
    "registry.example.com:5000/shop@sha256:" + "d" * 64, "127.0.0.1:5000/shop:1", "localhost/shop:1",
    "docker.io/library/nginx:1.25", "registry:5000/team/shop:1",
])
def test_an_image_with_a_registry_host_is_sent(image: str) -> None:
    check_pullable(image)


def test_each_marathon_module_imports_only_lower_ones() -> None:
    # The layering the package docstring promises: readers and bodies, then transport, events, policy on top.
    layers = ["models", "definition", "client", "events", "sandbox", "scheduler"]
    for level, name in enumerate(layers):
        module = importlib.import_module(f"bgci.schedulers.marathon.{name}")
        tree = ast.parse(Path(module.__file__ or "").read_text())
        imported = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("bgci.schedulers.marathon.")}
        assert imported <= set(layers[:level]), f"{name} imports {sorted(imported - set(layers[:level]))}"


def test_app_ids_are_one_group_per_app() -> None:
    # Marathon ids are lower-case segments of [a-z0-9-] separated by dots; `_` (a valid bgci app name) is not.
    assert marathon_app_id("shop", "shop-0123") == "/shop/shop-0123"
    assert marathon_app_id("web_app", "e1") == "/web-app/e1"


def test_no_marathon_urls_is_a_config_error_naming_the_setting() -> None:
    settings = Settings(app="shop", deploy=DeploySettings(scheduler="marathon"))
    with pytest.raises(ConfigError) as caught:
        get_scheduler(settings)
    assert "deploy.marathon.urls" in str(caught.value) and "BGCI_MARATHON_URLS" in str(caught.value)
    with pytest.raises(ConfigError, match=r"deploy\.marathon\.urls: 'marathon:8080' is not an http"):
        MarathonClient(["marathon:8080"])
    # With a URL, get_scheduler builds the backend from the settings (nothing is contacted yet).
    settings = Settings(app="shop", deploy=DeploySettings(marathon=MarathonSettings(
        urls=["http://m1:8080", "http://m2:8080/"], cpus=0.5, constraints=[["hostname", "UNIQUE"]])))
    scheduler = get_scheduler(settings, "marathon")
    assert isinstance(scheduler, MarathonScheduler) and isinstance(scheduler, Scheduler)
    assert scheduler.client.urls == ["http://m1:8080", "http://m2:8080"]
    assert scheduler.options.cpus == 0.5 and scheduler.options.constraints == (("hostname", "UNIQUE"),)


def test_force_is_a_setting_of_the_backend_chosen_by_get_scheduler() -> None:
    # --force (Marathon's ?force=true) is given when the backend is built; the local engine accepts and ignores it.
    settings = Settings(app="shop", deploy=DeploySettings(marathon=MarathonSettings(urls=["http://m1:8080"])))
    assert get_scheduler(settings, "marathon", force=True).force is True  # type: ignore[attr-defined]
    assert get_scheduler(settings, "marathon").force is False  # type: ignore[attr-defined]
    assert MarathonScheduler.from_settings(settings, force=True).force is True
    assert "force" in inspect.signature(LocalScheduler.from_settings).parameters


# -- reading Marathon's answers -----------------------------------------------------------------------------
def new_shape_app() -> dict[str, Any]:
    """GET /v2/apps/{id} as Marathon 1.5+ answers: the listed app plus embedded tasks with health results."""
    app = copy.deepcopy(example("app_list.json")["apps"][0])
    for deprecated in ("ports", "uris"):
        app.pop(deprecated, None)
    app.update(id="/shop/e1", instances=2, tasksRunning=2, deployments=[], labels=spec().labels(),
               networks=[{"mode": "container/bridge"}],
               container={"type": "DOCKER", "docker": {"image": "shop@sha256:" + "d" * 64},
                          "portMappings": [{"containerPort": 8000, "hostPort": 0, "servicePort": 10001}]})
    tasks = copy.deepcopy(example("tasks.json")["tasks"])
    for task in tasks:
        task["version"] = app["version"]
        task["healthCheckResults"] = [{"alive": True, "consecutiveFailures": 0, "instanceId": task["id"]}]
    app["tasks"] = tasks
    return app


def old_shape_app() -> dict[str, Any]:
    """The same app as Marathon before 1.5 answered: container.docker.portMappings, taskId, no task state."""
    app = new_shape_app()
    app.pop("networks")
    app["container"] = copy.deepcopy(example("app.json")["container"])  # docker.network BRIDGE + portMappings
    for task in app["tasks"]:
        task["taskId"] = task.pop("id")
        task.pop("state")
        for result in task["healthCheckResults"]:
            result["taskId"] = result.pop("instanceId")
    return app


def test_reads_the_marathon_1_5_shape() -> None:
    app = MarathonApp.from_json(new_shape_app(), "app")
    assert (app.id, app.instances, app.tasks_running, app.container_port) == ("/shop/e1", 2, 2, 8000)
    # Tasks: id, host, ports[] and state as in examples/tasks.json, ordered by stagedAt.
    assert [t.id for t in app.tasks] == ["tools_docker_registry.002b4d28-46b9-11e5-b731-525400cce7ed",
                                         "frontend-foosball.083be411-5d1f-11e5-88f7-56b91e7a505b"]
    env = environment_from(app)
    assert [i.address for i in env.instances] == ["srv2.example.com:31721", "srv4.example.com:31292"]
    assert all(i.healthy and i.state == "TASK_RUNNING" for i in env.instances)
    # Metadata comes from the labels only.
    assert (env.name, env.sha, env.created_by, env.scheduler) == (spec().name, spec().sha, "jenkins", "marathon")
    assert env.is_ready and is_ready(app, [])


def test_reads_the_older_shape() -> None:
    app = MarathonApp.from_json(old_shape_app(), "app")
    # container.docker.portMappings (Marathon < 1.5) gives the same container port.
    assert app.container_port == 80
    # `taskId` instead of `id`; no `state` field (Marathon < 1.2): a started task is running.
    assert [(t.id, t.state) for t in app.tasks] == [
        ("tools_docker_registry.002b4d28-46b9-11e5-b731-525400cce7ed", "TASK_RUNNING"),
        ("frontend-foosball.083be411-5d1f-11e5-88f7-56b91e7a505b", "TASK_RUNNING")]
    assert environment_from(app).is_ready


def test_health_is_none_until_marathon_reports_a_result() -> None:
    # Marathon omits healthCheckResults (or sends []) until the first check ran: not known, so not ready.
    data = new_shape_app()
    data["tasks"][0]["healthCheckResults"] = []
    data["tasks"][1]["healthCheckResults"][0]["alive"] = False
    app = MarathonApp.from_json(data, "app")
    assert [t.healthy for t in app.tasks] == [False, None]
    assert not is_ready(app, []) and len(environment_from(app).healthy_instances) == 0


def broken(path: str, value: Any) -> dict[str, Any]:
    """new_shape_app() with one field replaced (a value of DELETE removes it)."""
    data = new_shape_app()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value == "DELETE":
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(("change", "fragment"), [
    (("instances", "DELETE"), "app.instances: missing"),
    (("instances", "three"), 'app.instances: expected an integer, got "three"'),
    (("instances", True), "app.instances: expected an integer, got true"),
    (("tasks", {"a": 1}), "app.tasks: expected a list"),
    (("tasks.0.ports", ["31000"]), 'app.tasks[0].ports[0]: expected an integer, got "31000"'),
    (("tasks.0.host", "DELETE"), "app.tasks[0].host: missing"),
    (("tasks.1.id", "DELETE"), "app.tasks[1].id: missing (and no taskId either)"),
    (("tasks.0.healthCheckResults.0.alive", "yes"), "app.tasks[0].healthCheckResults[0].alive: expected a "
                                                           'boolean, got "yes"'),
    (("labels", {labels.ENV: 7}), "app.labels.io.bgci.env: expected a string, got 7"),
    (("deployments", [{"version": "x"}]), "app.deployments[0].id: missing"),
    (("container", {"portMappings": "8000"}), "app.container.portMappings: expected a list"),
    (None, "app: expected an object"),
])
@needs_reference
def test_malformed_answers_name_the_field(change: tuple[str, Any] | None, fragment: str) -> None:
    # A proxy page, another API or a broken Marathon: a clear error naming the field, not a KeyError/TypeError.
    data = broken(*change) if change else ["not", "an", "app"]
    with pytest.raises(SchedulerError) as caught:
        MarathonApp.from_json(data, "app")
    assert fragment in str(caught.value)
    assert "malformed" in str(caught.value)


def test_malformed_deployment_lists_name_the_field() -> None:
    # GET /v2/deployments is a list of {id, affectedApps, ...} (examples/deployments.json).
    assert deployments_touching(example("deployments.json"), "/foo") == ["97c136bf-5a28-4821-9d94-480d9fbb01c8"]
    assert deployments_touching(example("deployments.json"), "/bar") == []
    with pytest.raises(SchedulerError, match=r"GET /v2/deployments: expected a list"):
        deployments_touching({"deployments": []}, "/foo")
    with pytest.raises(SchedulerError, match=r"GET /v2/deployments\[0\].affectedApps: expected a list"):
        deployments_touching([{"id": "d1", "affectedApps": "/foo"}], "/foo")


# -- decisions ----------------------------------------------------------------------------------------------
def test_ready_needs_no_deployment_every_task_running_and_every_check_alive() -> None:
    app = MarathonApp.from_json(new_shape_app(), "app")
    assert is_ready(app, [])
    # Marathon: a deployment is finished when it is gone from /v2/deployments (and from the app's deployments).
    assert not is_ready(app, ["d1"])
    assert not is_ready(MarathonApp.from_json({**new_shape_app(), "deployments": [{"id": "d1"}]}, "app"), [])
    # tasksRunning counts TASK_RUNNING tasks; it must equal instances (more while a scale-down kills tasks).
    assert not is_ready(MarathonApp.from_json({**new_shape_app(), "tasksRunning": 1}, "app"), [])
    assert not is_ready(MarathonApp.from_json({**new_shape_app(), "instances": 3}, "app"), [])


def test_only_failures_of_the_current_version_fail_a_wait() -> None:
    app = MarathonApp.from_json({**new_shape_app(), "version": "v2", "lastTaskFailure": {
        "taskId": "old.1", "state": "TASK_FAILED", "message": "from an earlier attempt", "host": "h",
        "version": "v1"}}, "app")
    # A status_update_event as Marathon sends it (examples/events.txt) for a task of the current version.
    crashed = TaskFailure.from_event("status_update_event", {
        "taskId": "shop_e1.1", "taskStatus": "TASK_FAILED", "message": "Container exited with status 1\nboom",
        "appId": "/shop/e1", "host": "h1", "version": "v2"})
    killed = TaskFailure.from_event("status_update_event", {"taskId": "shop_e1.2", "taskStatus": "TASK_KILLED",
                                                            "appId": "/shop/e1", "host": "h1", "version": "v2"})
    unhealthy = TaskFailure.from_event("unhealthy_task_kill_event", {
        "appId": "/shop/e1", "taskId": "shop_e1.3", "version": "v2", "reason": "503 Service Unavailable",
        "host": "h2"})
    assert killed is None  # Marathon kills tasks on every scale-down and delete: not a failure by itself
    assert crashed is not None and unhealthy is not None
    # lastTaskFailure of version v1 belongs to an earlier deployment: ignored.
    assert task_failures(app, [crashed, unhealthy]) == [crashed, unhealthy]
    assert task_failures(app, []) == []
    assert crashed.describe() == ["shop_e1.1 on h1: TASK_FAILED: Container exited with status 1", "  boom"]
    assert unhealthy.describe() == ["shop_e1.3 on h2: TASK_KILLED: killed as unhealthy: 503 Service Unavailable"]
    # The same failure, of the current version, from lastTaskFailure alone (no event stream).
    current = MarathonApp.from_json({**new_shape_app(), "version": "v1", "lastTaskFailure": {
        "taskId": "old.1", "state": "TASK_FAILED", "message": "m", "host": "h", "version": "v1"}}, "app")
    assert [f.task_id for f in task_failures(current, [])] == ["old.1"]


def test_error_bodies_render_on_one_line() -> None:
    # Marathon 1.x 422: {"message":"Object is not valid","details":[{"path","errors"}]}.
    assert render_error_body({"message": "Object is not valid", "details": [
        {"path": "/instances", "errors": ["must be >= 0"]},
        {"path": "/container/docker/image", "errors": ["must not be empty", "is required"]}]}) == (
        "Object is not valid; /instances: must be >= 0; /container/docker/image: must not be empty, is required")
    # Older Marathon: {"message", "errors":[{"attribute","error"}]}; 400: "details" is a string.
    assert render_error_body({"message": "Bad", "errors": [{"attribute": "id", "error": "taken"}]}) == "Bad; id: taken"
    assert render_error_body({"message": "Invalid JSON", "details": "Unexpected end"}) == "Invalid JSON; Unexpected end"
    assert render_error_body("<html>") == ""


@needs_reference
def test_reads_a_real_captured_event_stream() -> None:
    # examples/events.txt is a /v2/events capture: "event: <type>" and "data: <json>" lines, blank-separated.
    events = list(read_sse((EXAMPLES / "events.txt").read_text().splitlines()))
    types = [t for t, _ in events]
    assert types[0] == "event_stream_attached" and "status_update_event" in types
    failed = [data for t, data in events if t == "status_update_event" and data["taskStatus"] == "TASK_FAILED"]
    failure = TaskFailure.from_event("status_update_event", failed[0])
    assert failure is not None and failure.message.startswith("Failed to launch container")
    # Heartbeat newlines and non-JSON data are skipped, not fatal.
    assert list(read_sse(["", "\r", "event: x", "data: {not json", "", "data: {\"eventType\": \"y\"}", ""])) == [
        ("y", {"eventType": "y"})]


def test_urls_in_messages_carry_no_credentials() -> None:
    assert display_url("https://ci:s3cret@marathon.example.com:8443/base") == "https://marathon.example.com:8443/base"
    assert display_url("http://marathon:8080") == "http://marathon:8080"


# -- the transport, against the emulator ---------------------------------------------------------------------
@pytest.fixture
def emulator(marathon: MarathonEmulator) -> Iterator[MarathonEmulator]:
    """The shared emulator, its request log cleared; afterwards faults reset, every app and container gone."""
    marathon.requests_log.clear()
    yield marathon
    empty_marathon(marathon)


def client_for(*urls: str, **kwargs: Any) -> tuple[MarathonClient, list[float]]:
    """A client whose backoff sleeps are recorded instead of slept."""
    slept: list[float] = []
    return MarathonClient(list(urls), sleep=slept.append, **kwargs), slept


def requests_to(emulator: MarathonEmulator, method: str, path: str) -> list[Any]:
    return [r for r in emulator.requests_log if (r.method, r.path) == (method, path)]


def sleeper_app(app_id: str, instances: int = 1, cmd: str = "sleep 300") -> dict[str, Any]:
    """A cheap app (the emulator runs `cmd` in its default image): enough to hold a deployment lock."""
    return {"id": app_id, "cmd": cmd, "instances": instances, "cpus": 0.1, "mem": 32,
            "labels": {"io.bgci.app": "locks"}}


@pytest.mark.docker
def test_a_500_is_retried_with_backoff_then_succeeds(emulator: MarathonEmulator) -> None:
    client, slept = client_for(emulator.url, backoff=0.1)
    emulator.fail_next_requests(2, status=500)
    # Marathon answers 500 on internal errors (and 503 without a leader); a later try may succeed.
    assert client.deployments() == []
    assert len(requests_to(emulator, "GET", "/v2/deployments")) == 3
    assert slept == [0.1, 0.2]  # tenacity's exponential backoff between rounds


@pytest.mark.docker
def test_a_500_that_persists_is_reported_with_marathons_message(emulator: MarathonEmulator) -> None:
    client, slept = client_for(emulator.url, attempts=3)
    emulator.fail_next_requests(10, status=500)
    with pytest.raises(MarathonAPIError) as caught:
        client.list_apps("/shop/")
    assert caught.value.status_code == 500 and caught.value.is_server_error()
    assert "Marathon answered 500 to GET /v2/apps after 3 attempt(s)" in str(caught.value)
    assert "injected by MarathonEmulator" in str(caught.value)  # Marathon's own message, passed on
    assert len(requests_to(emulator, "GET", "/v2/apps")) == 3 and len(slept) == 2


@pytest.mark.docker
def test_a_refused_first_url_fails_over_to_the_second(emulator: MarathonEmulator) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    client, slept = client_for(down, emulator.url)
    # An HA Marathon is several URLs; a dead one refuses connections, the next one answers.
    assert client.list_apps("/shop/") == {"apps": []}
    assert client.deployments() == []
    # No backoff was needed, and the answering URL is now tried first (the dead one only once).
    assert slept == [] and client._url_order()[0] == emulator.url
    assert len(emulator.requests_log) == 2


@pytest.mark.docker
def test_a_5xx_from_one_marathon_fails_over_within_the_same_round(emulator: MarathonEmulator) -> None:
    # Two URLs of one cluster; the first answers 503 (e.g. no leader elected), the second serves it.
    client, slept = client_for(emulator.url, emulator.url.replace("127.0.0.1", "localhost"))
    emulator.fail_next_requests(1, status=503)
    assert client.deployments() == [] and slept == []
    assert [r.headers["Host"].split(":")[0] for r in emulator.requests_log] == ["127.0.0.1", "localhost"]


def test_no_marathon_answering_is_scheduler_unavailable() -> None:
    first, second = f"http://127.0.0.1:{free_port()}", f"http://localhost:{free_port()}"
    client, slept = client_for(first, second, attempts=3)
    with pytest.raises(SchedulerUnavailable) as caught:
        client.deployments()
    message = str(caught.value)
    assert message.startswith("no Marathon answered GET /v2/deployments after 3 attempt(s)")
    assert f"{first} (connection refused)" in message and f"{second} (connection refused)" in message
    assert "BGCI_MARATHON_URLS" in message and len(slept) == 2
    assert caught.value.exit_code == 8


@pytest.mark.docker
def test_a_422_shows_marathons_details(emulator: MarathonEmulator) -> None:
    client, _ = client_for(emulator.url)
    # Marathon validates bodies against AppDefinition and answers 422 with one detail per JSON path.
    with pytest.raises(MarathonAPIError) as caught:
        client.create_app({**sleeper_app("/shop/bad"), "instances": -1, "colour": "blue"})
    message = str(caught.value)
    assert caught.value.status_code == 422 and caught.value.is_client_error()
    assert message.startswith("Marathon answered 422 to POST /v2/apps: Object is not valid; /colour: ")
    assert "/instances: -1 is less than the minimum of 0" in message and "\n" not in message
    # Through the backend: a health check protocol Marathon does not know is refused the same way.
    scheduler = MarathonScheduler(client, "shop", options=MarathonOptions(health_protocol="GRPC"))
    with pytest.raises(MarathonAPIError, match=r"422 .*/healthChecks/0/protocol: 'GRPC' is not one of"):
        scheduler.create(spec())
    assert emulator.container_ids() == []


@pytest.mark.docker
def test_a_409_lock_is_waited_for_then_the_call_succeeds(emulator: MarathonEmulator) -> None:
    client, _ = client_for(emulator.url)
    emulator.deployment_delay = 1.5  # the deployment stays running (and locking) 1.5 s after its task runs
    client.create_app(sleeper_app("/locks/a"))
    scheduler = MarathonScheduler(client, "locks", lock_timeout=30)
    started = time.monotonic()
    env = scheduler.scale("a", 2)
    # Marathon: one deployment at a time per app, 409 {"deployments":[{"id"}]} meanwhile; no ?force sent.
    puts = requests_to(emulator, "PUT", "/v2/apps/locks/a")
    assert env.wanted_instances == 2 and len(puts) >= 2
    assert all("force" not in p.query for p in puts)
    assert time.monotonic() - started >= 1.0


@pytest.mark.docker
def test_a_lock_that_does_not_end_names_its_deployment_and_force_overrides_it(emulator: MarathonEmulator) -> None:
    client, _ = client_for(emulator.url)
    emulator.deployment_delay = 60  # a deployment that will not end during this test
    _, deployment_id = client.create_app(sleeper_app("/locks/b"))
    with pytest.raises(DeploymentInProgress) as caught:
        MarathonScheduler(client, "locks", lock_timeout=1).scale("b", 2)
    # The error names the deployment (what /v2/deployments/{id} shows) and how to go on.
    assert caught.value.deployment_ids == [deployment_id] and deployment_id in str(caught.value)
    assert "--force" in str(caught.value) and caught.value.exit_code == 8
    # ?force=true only when asked: Marathon then cancels the running deployment and starts ours.
    env = MarathonScheduler(client, "locks", lock_timeout=1, force=True).scale("b", 2)
    assert env.wanted_instances == 2
    forced = [r for r in requests_to(emulator, "PUT", "/v2/apps/locks/b") if "force" in r.query]
    assert len(forced) == 1 and forced[0].query["force"] == ["true"]
    assert deployment_id not in {d["id"] for d in client.deployments()}


@pytest.mark.docker
@needs_reference
def test_credentials_are_sent_and_never_shown(docker_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    with MarathonEmulator(docker_client, credentials=("ci", "s3cret-pw"), token="t0ken-secret") as secured:
        # --http_credentials: HTTP basic auth; DC/OS: "Authorization: token=<token>".
        assert MarathonClient([secured.url], Credentials("ci", "s3cret-pw")).deployments() == []
        assert MarathonClient([secured.url], Credentials(token="t0ken-secret")).deployments() == []
        assert secured.requests_log[-1].headers["Authorization"] == "token=t0ken-secret"
        # Wrong credentials: Marathon answers 401 with Jetty's HTML page.
        with pytest.raises(MarathonAPIError) as refused:
            MarathonClient([secured.url], Credentials("ci", "wr0ng-pw")).deployments()
        assert refused.value.status_code == 401 and "BGCI_MARATHON_TOKEN" in str(refused.value)
    # Credentials in a URL (user:password@host) are used by requests but never shown.
    port = free_port()
    with pytest.raises(SchedulerUnavailable) as unavailable:
        MarathonClient([f"http://ci:url-s3cret@127.0.0.1:{port}"], Credentials("ci", "s3cret-pw"), attempts=2,
                       sleep=lambda _: None).deployments()
    assert f"http://127.0.0.1:{port} (connection refused)" in str(unavailable.value)
    texts = [str(refused.value), repr(refused.value), str(unavailable.value), caplog.text]
    for secret in ("s3cret-pw", "wr0ng-pw", "t0ken-secret", "url-s3cret"):
        assert not any(secret in text for text in texts), secret


# -- answers no Marathon sends: a canned HTTP server -----------------------------------------------------------
class Canned:
    """Serves fixed (status, content type, body) answers per path over real HTTP."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        answers_ = answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, content_type, body = answers_.get(self.path.split("?")[0], (404, "text/plain", "nope"))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_malformed_http_answers_are_clear_errors() -> None:
    app = new_shape_app()
    app["tasks"][0]["ports"] = "31292"
    canned = Canned({
        "/v2/apps/shop/broken": (200, "application/json", json.dumps({"app": app})),
        "/v2/apps/shop/noapp": (200, "application/json", json.dumps({"apps": []})),
        "/v2/apps": (200, "text/html", "<html><body>Welcome to nginx!</body></html>"),
        "/v2/deployments": (200, "application/json", json.dumps({"message": "not a list"})),
    })
    try:
        scheduler = MarathonScheduler(MarathonClient([canned.url]), "shop")
        # Each names the request and the field, in one error, not a KeyError or a TypeError.
        with pytest.raises(SchedulerError, match=r"GET /v2/apps/shop/broken: app.tasks\[0\].ports: expected a list"):
            scheduler.get("broken")
        with pytest.raises(SchedulerError, match=r"GET /v2/apps/shop/noapp: app: expected an object, got null"):
            scheduler.get("noapp")
        with pytest.raises(SchedulerError, match=r"GET /v2/apps: not JSON \(text/html\): '<html><body>Welcome"):
            scheduler.list()
        with pytest.raises(SchedulerError, match=r"GET /v2/deployments: expected a list"):
            deployments_touching(scheduler.client.deployments(), "/shop/x")
    finally:
        canned.close()


def test_task_readers_accept_every_documented_field_form() -> None:
    # A task without ports (not launched yet) or health results is fine; no port means no backend yet.
    task = MarathonTask.from_json({"id": "t1", "host": "h", "state": "TASK_STAGING"}, "task")
    assert (task.ports, task.healthy, task.state) == ((), None, "TASK_STAGING")
    assert MarathonTask.from_json({"taskId": "t2", "host": "h"}, "task").state == "TASK_STAGING"


def test_reference_app_list_is_readable() -> None:
    # examples/app_list.json (an app without container: ports only, deployments listed) reads cleanly.
    app = MarathonApp.from_json(example("app_list.json")["apps"][0], "apps[0]")
    assert app.deployment_ids == ("9538079c-3898-4e32-aa31-799bf9097f74",) and app.container_port is None
    assert not is_ready(app, [])


def wait_for_streams(emulator: MarathonEmulator, count: int, timeout: float = 5) -> None:
    """Until the emulator counts `count` open /v2/events streams (it notices a closed one at its next heartbeat)."""
    deadline = time.monotonic() + timeout
    while emulator.event_stream_count != count:
        assert time.monotonic() < deadline, f"{emulator.event_stream_count} event streams open, not {count}"
        time.sleep(0.05)


@pytest.mark.docker
def test_the_event_watch_wakes_on_events_and_reconnects_after_a_drop(emulator: MarathonEmulator) -> None:
    client, _ = client_for(emulator.url)
    wait_for_streams(emulator, 0)  # streams of earlier tests are closed
    with EventWatch(client, "/locks/w") as watch:
        # Marathon streams /v2/events as SSE to a client that sends Accept: text/event-stream.
        assert watch.attached
        wait_for_streams(emulator, 1)
        watch.clear()
        client.create_app(sleeper_app("/locks/w"))
        started = time.monotonic()
        watch.wait(60)  # a status_update_event of /locks/w (TASK_RUNNING) wakes it long before 60 s
        assert time.monotonic() - started < 30
        # A dropped stream (network, Marathon failover) is reconnected by itself.
        emulator.drop_event_streams()
        deadline = time.monotonic() + 5
        while not (watch.attached and emulator.event_stream_count == 1):
            assert time.monotonic() < deadline, "the event stream was not reconnected"
            time.sleep(0.05)
    # Closed on exit: the emulator's next heartbeat finds no reader (a live one would keep it open).
    wait_for_streams(emulator, 0, timeout=3)


@pytest.mark.docker
def test_without_an_event_stream_the_watch_gives_up_at_once(emulator: MarathonEmulator) -> None:
    # A Marathon (or proxy) without /v2/events answers 404: polling alone carries the waits.
    emulator.events_enabled = False
    client, _ = client_for(emulator.url)
    started = time.monotonic()
    with EventWatch(client, "/locks/none") as watch:
        assert not watch.attached
    # At once: one request, no retries (a guard of 10 s only catches a retry loop, not slowness).
    assert time.monotonic() - started < 10 and len(requests_to(emulator, "GET", "/v2/events")) == 1


@needs_reference
def test_a_log_driver_rides_in_the_docker_parameters_and_validates(validator: jsonschema.Draft4Validator) -> None:
    body = app_definition("/shop/x", spec(), MarathonOptions(log_driver="syslog",
                                                             log_options=(("syslog-address", "udp://10.0.0.1:514"),)))
    # Mesos runs `docker run --log-driver syslog --log-opt syslog-address=...`; Marathon's schema accepts it.
    assert body["container"]["docker"]["parameters"] == [
        {"key": "log-driver", "value": "syslog"}, {"key": "log-opt", "value": "syslog-address=udp://10.0.0.1:514"}]
    assert [e.message for e in validator.iter_errors(body)] == []
