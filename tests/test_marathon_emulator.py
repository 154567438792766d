"""The Marathon emulator itself, over real HTTP, with real containers.

Every assertion stands for one behaviour of real Marathon (said in a comment), so that the
tests of bgci's Marathon backend, which run against the emulator, test against Marathon's
behaviour and not against an invention. Shapes are compared with the real response bodies in
../shared/reference/marathon/examples.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import jsonschema
import pytest
import requests

from tests.conftest import require_marathon_reference
from tests.emulators.marathon import DEFAULT_SCHEMA_PATH, LOCKED_MESSAGE, MarathonEmulator, iter_sse

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("marathon_reference")]

EXAMPLES = DEFAULT_SCHEMA_PATH.parent / "examples"
TESTAPP_IMAGE = "bgci-emu-testapp:latest"
BASE_IMAGE = "bgci-base:bookworm"


# A tiny HTTP server in perl (bgci-base is debootstrap minbase: perl-base, no python).
# GET /health -> 200 "ok" (503 once /tmp/unhealthy exists); GET / -> a few Marathon env vars.
TESTAPP_SERVER = r"""#!/usr/bin/perl
use strict;
use warnings;
use IO::Socket::INET;
$SIG{TERM} = sub { exit 0 };
$SIG{PIPE} = 'IGNORE';
my $port = $ENV{LISTEN_PORT} || 8000;
my $srv = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => $port, Listen => 32, ReuseAddr => 1)
  or die "cannot listen on $port: $!";
$| = 1;
print "listening on $port\n";
while (my $c = $srv->accept) {
    $c->timeout(2);
    my $line = <$c>;
    next unless defined $line;
    while (my $h = <$c>) { last if $h =~ /^\r?\n$/ }
    my (undef, $path) = split / /, $line;
    my ($status, $body) = (404, "not found\n");
    if ($path eq '/health') {
        ($status, $body) = -e '/tmp/unhealthy' ? (503, "unhealthy\n") : (200, "ok\n");
    } elsif ($path eq '/') {
        $body = join('', map { "$_=" . ($ENV{$_} // '') . "\n" } qw(MARATHON_APP_ID MESOS_TASK_ID PORT0 GREETING));
        $status = 200;
    }
    my $reason = $status == 200 ? 'OK' : $status == 503 ? 'Service Unavailable' : 'Not Found';
    print $c "HTTP/1.1 $status $reason\r\nContent-Type: text/plain\r\nContent-Length: " . length($body)
      . "\r\nConnection: close\r\n\r\n$body";
    close $c;
}
"""

TESTAPP_DOCKERFILE = f"""FROM {BASE_IMAGE}
COPY server.pl /usr/local/bin/bgci-emu-testapp
RUN chmod 755 /usr/local/bin/bgci-emu-testapp
EXPOSE 8000
CMD ["/usr/local/bin/bgci-emu-testapp"]
"""


# ---------------------------------------------------------------------- helpers
def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def app_definition(app_id: str, instances: int = 1, **overrides: Any) -> dict[str, Any]:
    """A Marathon 1.5+ app as a blue-green client would send it."""
    app: dict[str, Any] = {
        "id": app_id,
        "instances": instances,
        "cpus": 0.1,
        "mem": 64,
        "container": {
            "type": "DOCKER",
            "docker": {"image": TESTAPP_IMAGE},
            "portMappings": [{"containerPort": 8000, "hostPort": 0, "protocol": "tcp", "name": "http"}],
        },
        "networks": [{"mode": "container/bridge"}],
        "env": {"GREETING": "hello"},
        "labels": {"io.bgci.app": "emu-test", "io.bgci.env": app_id.rsplit("/", 1)[-1]},
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 30,
                          "intervalSeconds": 2, "timeoutSeconds": 2, "maxConsecutiveFailures": 3}],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
        "constraints": [["hostname", "UNIQUE"]],
    }
    app.update(overrides)
    return app


class EventStream:
    """A /v2/events reader in a thread: every (event, data) pair lands in ``events``."""

    def __init__(self, url: str, params: dict[str, Any] | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._stop = threading.Event()
        self.response = requests.get(url + "/v2/events", params=params, headers={"Accept": "text/event-stream"},
                                     stream=True, timeout=(3, 10))
        assert self.response.status_code == 200, self.response.text
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            lines = self.response.iter_lines(decode_unicode=True)
            for event in iter_sse(self._until_stopped(lines)):
                self.events.append(event)
        except BaseException as exc:  # a dropped connection ends here
            self.error = exc
        finally:
            self.ended.set()

    def _until_stopped(self, lines: Iterator[str]) -> Iterator[str]:
        for line in lines:  # the emulator's heartbeat makes this loop turn at least every sse_heartbeat s
            if self._stop.is_set():
                return
            yield line

    def wait_for(self, timeout: float, what: str, **match: Any) -> dict[str, Any]:
        event_type = match.pop("event")

        def found() -> dict[str, Any] | None:
            for kind, data in list(self.events):
                if kind == event_type and all(data.get(k) == v for k, v in match.items()):
                    return data
            return None

        return wait_for(found, timeout, what)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [data for kind, data in list(self.events) if kind == event_type]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        self.response.close()


def build_testapp(client: docker.DockerClient) -> str:
    try:
        client.images.get(TESTAPP_IMAGE)
        return TESTAPP_IMAGE
    except docker.errors.ImageNotFound:
        pass
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text, mode in (("Dockerfile", TESTAPP_DOCKERFILE, 0o644), ("server.pl", TESTAPP_SERVER, 0o755)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=TESTAPP_IMAGE, rm=True, forcerm=True,
                        labels={"io.bgci.emulator": "marathon-testapp"})
    return TESTAPP_IMAGE


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def testapp_image(docker_client: docker.DockerClient) -> str:
    # Built once and kept (other suites reuse it): never removed here.
    return build_testapp(docker_client)


@pytest.fixture(scope="module")
def marathon(docker_client: docker.DockerClient, testapp_image: str) -> Iterator[MarathonEmulator]:
    emulator = MarathonEmulator(docker_client, health_interval=0.2, sse_heartbeat=0.5)
    emulator.start()
    yield emulator
    emulator.stop()
    leftovers = docker_client.containers.list(all=True, filters={"label": f"io.bgci.emulator.instance="
                                                                           f"{emulator.instance_id}"})
    assert not leftovers, f"stop() left containers behind: {leftovers}"


@pytest.fixture
def api(marathon: MarathonEmulator) -> Iterator[requests.Session]:
    """A client session; afterwards every app is deleted and every container gone, faults reset."""
    session = requests.Session()
    session.headers["Accept"] = "application/json"
    yield session
    marathon.reset_faults()
    for app in session.get(marathon.url + "/v2/apps").json()["apps"]:
        session.delete(marathon.url + "/v2/apps" + app["id"], params={"force": "true"})
    wait_for(lambda: not marathon.container_ids() and not session.get(marathon.url + "/v2/deployments").json(),
             20, "cleanup of every app")
    session.close()


@pytest.fixture
def events(marathon: MarathonEmulator) -> Iterator[EventStream]:
    stream = EventStream(marathon.url)
    stream.wait_for(5, "event_stream_attached", event="event_stream_attached")
    yield stream
    stream.close()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(json.loads(DEFAULT_SCHEMA_PATH.read_text()))


def example(name: str) -> Any:
    """One of Marathon's own example answers (skips, or fails under CI, when the reference is missing)."""
    return json.loads((require_marathon_reference() / "examples" / name).read_text())


def deployment_ids(api: requests.Session, url: str) -> set[str]:
    return {d["id"] for d in api.get(url + "/v2/deployments").json()}


def wait_deployment_gone(api: requests.Session, url: str, dep_id: str, timeout: float = 20) -> None:
    # Real Marathon: a deployment is finished when it is gone from GET /v2/deployments.
    wait_for(lambda: dep_id not in deployment_ids(api, url), timeout, f"deployment {dep_id} to finish")


def get_app(api: requests.Session, url: str, app_id: str) -> dict[str, Any]:
    r = api.get(url + "/v2/apps" + app_id)
    assert r.status_code == 200, r.text
    return r.json()["app"]


# ---------------------------------------------------------------------- tests
def test_create_app_runs_healthy_tasks_and_finishes_its_deployment(
    marathon: MarathonEmulator, api: requests.Session, events: EventStream, validator: jsonschema.Draft4Validator,
    docker_client: docker.DockerClient,
) -> None:
    body = app_definition("emu-test/create", instances=2)  # a relative id
    r = api.post(marathon.url + "/v2/apps", json=body)

    # Marathon: POST /v2/apps -> 201, header Marathon-Deployment-Id, body = app + deployments, ids made absolute.
    assert r.status_code == 201, r.text
    created = r.json()
    dep_id = r.headers["Marathon-Deployment-Id"]
    assert created["id"] == "/emu-test/create"
    assert created["deployments"] == [{"id": dep_id}]
    assert created["instances"] == 2 and created["tasks"] == []
    # Marathon 1.5+ answers with the new networking form.
    assert created["networks"] == [{"mode": "container/bridge"}]
    assert created["container"]["portMappings"][0]["containerPort"] == 8000
    assert "portMappings" not in created["container"]["docker"]

    # Marathon: the running deployment is listed, with the shape of examples/deployments.json.
    listed = {d["id"]: d for d in api.get(marathon.url + "/v2/deployments").json()}
    assert dep_id in listed
    reference = example("deployments.json")[0]
    assert set(reference) - {"affectedPods"} <= set(listed[dep_id])
    assert listed[dep_id]["affectedApps"] == ["/emu-test/create"]
    assert {a["action"] for s in listed[dep_id]["steps"] for a in s["actions"]} == {"StartApplication",
                                                                                   "ScaleApplication"}
    wait_deployment_gone(api, marathon.url, dep_id)

    # Marathon: once the deployment is gone, every wanted task runs and passes its health checks.
    app = get_app(api, marathon.url, "/emu-test/create")
    assert (app["tasksRunning"], app["tasksHealthy"], app["tasksStaged"], app["tasksUnhealthy"]) == (2, 2, 0, 0)
    assert app["deployments"] == []
    assert len(app["tasks"]) == 2
    task_keys = set(example("tasks.json")["tasks"][0])
    for task in app["tasks"]:
        assert task_keys <= set(task), task_keys - set(task)  # the shape of examples/tasks.json
        assert task["state"] == "TASK_RUNNING"
        assert task["host"] == "127.0.0.1"
        assert re.fullmatch(r"emu-test_create\.instance-[0-9a-f-]{36}", task["id"])
        assert isinstance(task["ports"][0], int) and task["ipAddresses"][0]["protocol"] == "IPv4"
        (result,) = task["healthCheckResults"]
        assert result["alive"] is True and result["instanceId"] == task["id"] and result["consecutiveFailures"] == 0
        # The task really is reachable at host:port (a blue-green router would send traffic there).
        assert requests.get(f"http://{task['host']}:{task['ports'][0]}/health", timeout=5).text == "ok\n"
        env = requests.get(f"http://{task['host']}:{task['ports'][0]}/", timeout=5).text
        assert "MARATHON_APP_ID=/emu-test/create\n" in env and f"MESOS_TASK_ID={task['id']}\n" in env
        assert f"PORT0={task['ports'][0]}\n" in env and "GREETING=hello\n" in env

    # The app list has the shape of examples/app_list.json (counts and deployments, no tasks by default).
    listed_apps = api.get(marathon.url + "/v2/apps", params={"id": "/emu-test/create"}).json()["apps"]
    assert [a["id"] for a in listed_apps] == ["/emu-test/create"]
    ref_app = example("app_list.json")["apps"][0]
    deprecated = {"ports", "uris", "args", "user", "cmd", "acceptedResourceRoles"}
    assert set(ref_app) - deprecated <= set(listed_apps[0])
    assert "tasks" not in listed_apps[0]
    embedded = api.get(marathon.url + "/v2/apps", params={"embed": "apps.tasks"}).json()["apps"]
    assert len(embedded[0]["tasks"]) == 2
    assert len(api.get(marathon.url + "/v2/apps/emu-test/create/tasks").json()["tasks"]) == 2
    assert {t["id"] for t in api.get(marathon.url + "/v2/tasks").json()["tasks"]} >= {t["id"] for t in app["tasks"]}

    # Each task is one labelled container.
    containers = docker_client.containers.list(filters={"label": f"io.bgci.emulator.instance={marathon.instance_id}"})
    assert len(containers) == 2
    for c in containers:
        assert c.labels["io.bgci.emulator"] == "marathon" and c.labels["io.bgci.app"] == "emu-test"

    # Marathon's event stream: status updates, health changes and the deployment's success.
    success = events.wait_for(5, "deployment_success", event="deployment_success", id=dep_id)
    assert success["plan"]["id"] == dep_id and success["timestamp"].endswith("Z")
    for task in app["tasks"]:
        update = events.wait_for(5, "TASK_RUNNING", event="status_update_event", taskId=task["id"])
        assert update["taskStatus"] == "TASK_RUNNING" and update["appId"] == "/emu-test/create"
        assert update["ports"] == task["ports"] and update["host"] == "127.0.0.1" and "version" in update
        health = events.wait_for(5, "health change", event="health_status_changed_event", instanceId=task["id"])
        assert health["alive"] is True and health["appId"] == "/emu-test/create" and "version" in health
    assert events.of_type("api_post_event")[0]["appDefinition"]["id"] == "/emu-test/create"

    # What the client sent is recorded, and validates against Marathon's own schema.
    (posted,) = [req for req in marathon.requests_log if req[:2] == ("POST", "/v2/apps")]
    assert posted.body == body
    validator.validate(posted.body)


def test_a_running_deployment_locks_the_app_until_forced(
    marathon: MarathonEmulator, api: requests.Session, events: EventStream
) -> None:
    marathon.deployment_delay = 2.0
    r = api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/locked"))
    first = r.headers["Marathon-Deployment-Id"]

    # Marathon: only one deployment may touch an app; others get 409 with the locking deployments.
    r = api.put(marathon.url + "/v2/apps/emu-test/locked", json={"instances": 2})
    assert r.status_code == 409
    assert r.json() == {"message": LOCKED_MESSAGE, "deployments": [{"id": first}]}
    assert api.delete(marathon.url + "/v2/apps/emu-test/locked").status_code == 409

    # deployment_delay: the deployment stays listed (and locking) after its tasks are healthy.
    wait_for(lambda: get_app(api, marathon.url, "/emu-test/locked")["tasksHealthy"] == 1, 15, "a healthy task")
    assert first in deployment_ids(api, marathon.url)

    # Marathon: ?force=true cancels the running deployment (deployment_failed) and starts a new one.
    r = api.put(marathon.url + "/v2/apps/emu-test/locked", params={"force": "true"}, json={"instances": 2})
    assert r.status_code == 200, r.text
    second = r.json()["deploymentId"]
    assert second != first and r.headers["Marathon-Deployment-Id"] == second
    assert set(r.json()) == set(example("deployments_result.json"))
    failed = events.wait_for(5, "deployment_failed", event="deployment_failed", id=first)
    assert failed["plan"]["id"] == first
    assert first not in deployment_ids(api, marathon.url)
    assert not events.of_type("deployment_success") or all(e["id"] != first for e in events.of_type(
        "deployment_success"))
    wait_deployment_gone(api, marathon.url, second, timeout=20)
    assert get_app(api, marathon.url, "/emu-test/locked")["tasksHealthy"] == 2


def test_invalid_app_definitions_are_rejected_with_details(
    marathon: MarathonEmulator, api: requests.Session, validator: jsonschema.Draft4Validator
) -> None:
    url = marathon.url + "/v2/apps"

    # Marathon: 422 {"message":"Object is not valid","details":[{"path","errors"}]} on validation failure.
    r = api.post(url, json=app_definition("/emu-test/bad", instances=-1))
    assert r.status_code == 422
    assert r.json()["message"] == "Object is not valid"
    assert [d["path"] for d in r.json()["details"]] == ["/instances"]
    assert r.json()["details"][0]["errors"]

    # Unknown keys are rejected too (additionalProperties: false in AppDefinition.schema.json).
    r = api.post(url, json=app_definition("/emu-test/bad", colour="blue"))
    assert r.status_code == 422 and [d["path"] for d in r.json()["details"]] == ["/colour"]

    # Ids are lower case path segments.
    r = api.post(url, json=app_definition("/emu-test/Bad_Id"))
    assert r.status_code == 422 and "/id" in [d["path"] for d in r.json()["details"]]

    # Marathon's semantic rule beyond the schema: something to run is needed.
    r = api.post(url, json={"id": "/emu-test/nothing"})
    assert r.status_code == 422 and r.json()["details"][0]["path"] == "/"

    # A partial update is validated too.
    api.post(url, json=app_definition("/emu-test/zero", instances=0))
    r = api.put(url + "/emu-test/zero", json={"instances": -3}, params={"force": "true"})
    assert r.status_code == 422 and r.json()["details"][0]["path"] == "/instances"

    # Marathon: 400 "Invalid JSON" for a body that is no JSON; Jersey: 415 without a JSON content type.
    r = api.post(url, data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"] == "Invalid JSON" and r.json()["details"]
    r = api.post(url, data=json.dumps(app_definition("/emu-test/plain")), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415

    # Nothing of that was created, nothing runs.
    ids = [a["id"] for a in api.get(url).json()["apps"]]
    assert ids == ["/emu-test/zero"]
    assert marathon.container_ids() == []
    # The schema the emulator validated with is the reference one: our good body passes it.
    validator.validate(app_definition("/emu-test/good"))


def test_unknown_apps_paths_and_methods(marathon: MarathonEmulator, api: requests.Session) -> None:
    # Marathon: 404 {"message": "App '/x' does not exist"} for an unknown app, on every verb.
    for method in ("GET", "DELETE"):
        r = api.request(method, marathon.url + "/v2/apps/emu-test/nope")
        assert r.status_code == 404 and r.json() == {"message": "App '/emu-test/nope' does not exist"}
    assert api.get(marathon.url + "/v2/apps/emu-test/nope/tasks").status_code == 404
    # Marathon: unknown URIs -> 404 "URI not found"; a verb a resource lacks -> 405.
    r = api.get(marathon.url + "/v2/nothing-here")
    assert r.status_code == 404 and r.json()["message"] == "URI not found: /v2/nothing-here"
    assert api.post(marathon.url + "/v2/info", json={}).status_code == 405
    assert api.delete(marathon.url + "/v2/deployments/no-such-id").status_code == 404
    # Marathon: 409 "An app with id [/x] already exists." on a second POST of the same id.
    app = app_definition("/emu-test/twice", instances=0)
    assert api.post(marathon.url + "/v2/apps", json=app).status_code == 201
    r = api.post(marathon.url + "/v2/apps", json=app)
    assert r.status_code == 409 and r.json() == {"message": "An app with id [/emu-test/twice] already exists."}
    # Marathon: PUT on a missing id creates the app (201 + deployment result).
    r = api.put(marathon.url + "/v2/apps/emu-test/put-created", json=app_definition("/emu-test/put-created", 0))
    assert r.status_code == 201 and set(r.json()) == {"deploymentId", "version"}
    # GET /ping, /v2/info answer like Marathon.
    assert api.get(marathon.url + "/ping").text == "pong"
    info = api.get(marathon.url + "/v2/info").json()
    assert set(example("info.json")) <= set(info) and info["name"] == "marathon"


def test_scale_up_then_down(
    marathon: MarathonEmulator, api: requests.Session, events: EventStream, docker_client: docker.DockerClient
) -> None:
    r = api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/scale", instances=2))
    wait_deployment_gone(api, marathon.url, r.headers["Marathon-Deployment-Id"])
    before = {t["id"] for t in get_app(api, marathon.url, "/emu-test/scale")["tasks"]}

    # Marathon: PUT {"instances": n} -> 200 {"deploymentId","version"}; scaling keeps the running tasks.
    r = api.put(marathon.url + "/v2/apps/emu-test/scale", json={"instances": 3})
    assert r.status_code == 200 and set(r.json()) == {"deploymentId", "version"}
    wait_deployment_gone(api, marathon.url, r.json()["deploymentId"])
    app = get_app(api, marathon.url, "/emu-test/scale")
    assert app["instances"] == 3 and app["tasksHealthy"] == 3 and app["tasksRunning"] == 3
    assert before < {t["id"] for t in app["tasks"]}
    assert app["versionInfo"]["lastScalingAt"] == app["version"] != app["versionInfo"]["lastConfigChangeAt"]
    assert len(marathon.container_ids("/emu-test/scale")) == 3

    # Scale down stops the extra containers (TASK_KILLED).
    r = api.put(marathon.url + "/v2/apps/emu-test/scale", json={"instances": 1})
    wait_deployment_gone(api, marathon.url, r.json()["deploymentId"])
    app = get_app(api, marathon.url, "/emu-test/scale")
    assert app["tasksRunning"] == 1 and len(app["tasks"]) == 1
    remaining = marathon.container_ids("/emu-test/scale")
    assert len(remaining) == 1
    assert docker_client.containers.get(remaining[0]).labels["io.bgci.emulator.task-id"] == app["tasks"][0]["id"]
    killed = [e for e in events.of_type("status_update_event") if e["taskStatus"] == "TASK_KILLED"]
    assert len(killed) == 2


def test_config_change_replaces_every_task(marathon: MarathonEmulator, api: requests.Session) -> None:
    r = api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/config", instances=2))
    wait_deployment_gone(api, marathon.url, r.headers["Marathon-Deployment-Id"])
    before = get_app(api, marathon.url, "/emu-test/config")

    # Marathon: a change other than instances is a RestartApplication deployment: new tasks replace old.
    r = api.put(marathon.url + "/v2/apps/emu-test/config", json={"env": {"GREETING": "second"}})
    assert r.status_code == 200
    (dep,) = [d for d in api.get(marathon.url + "/v2/deployments").json() if d["id"] == r.json()["deploymentId"]]
    assert dep["currentActions"][0]["action"] == "RestartApplication"
    wait_deployment_gone(api, marathon.url, dep["id"])
    after = get_app(api, marathon.url, "/emu-test/config")
    assert not {t["id"] for t in before["tasks"]} & {t["id"] for t in after["tasks"]}
    assert after["tasksHealthy"] == 2 and after["env"] == {"GREETING": "second"}
    assert after["versionInfo"]["lastConfigChangeAt"] == after["version"] > before["version"]
    task = after["tasks"][0]
    assert "GREETING=second\n" in requests.get(f"http://{task['host']}:{task['ports'][0]}/", timeout=5).text
    assert len(marathon.container_ids("/emu-test/config")) == 2

    # Marathon: ?id= is a "contains" filter, not a prefix or exact match.
    api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/config-more", instances=0))
    ids = [a["id"] for a in api.get(marathon.url + "/v2/apps", params={"id": "test/config"}).json()["apps"]]
    assert ids == ["/emu-test/config", "/emu-test/config-more"]


def test_delete_is_a_deployment_that_removes_the_containers(
    marathon: MarathonEmulator, api: requests.Session, docker_client: docker.DockerClient
) -> None:
    r = api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/delete", instances=2))
    wait_deployment_gone(api, marathon.url, r.headers["Marathon-Deployment-Id"])
    containers = marathon.container_ids("/emu-test/delete")
    assert len(containers) == 2

    marathon.deployment_delay = 1.0
    # Marathon: DELETE /v2/apps/{id} -> 200 {"deploymentId","version"}; the app is gone at once ...
    r = api.delete(marathon.url + "/v2/apps/emu-test/delete")
    assert r.status_code == 200 and set(r.json()) == {"deploymentId", "version"}
    dep_id = r.json()["deploymentId"]
    assert api.get(marathon.url + "/v2/apps/emu-test/delete").status_code == 404
    # ... but its StopApplication deployment still locks the id: re-creating it now is refused.
    r = api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/delete"))
    assert r.status_code == 409 and r.json()["deployments"] == [{"id": dep_id}]
    wait_deployment_gone(api, marathon.url, dep_id)
    for cid in containers:
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(cid)


def test_injected_request_failures(marathon: MarathonEmulator, api: requests.Session) -> None:
    marathon.fail_next_requests(2, status=503)
    first = api.get(marathon.url + "/v2/info")
    second = api.get(marathon.url + "/v2/apps")
    third = api.get(marathon.url + "/v2/info")
    # Marathon's errors (e.g. while no leader is elected) are JSON {"message": ...}.
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert "message" in first.json()
    assert [r[:2] for r in marathon.requests_log[-3:]] == [("GET", "/v2/info"), ("GET", "/v2/apps"),
                                                           ("GET", "/v2/info")]

    marathon.fail_next_requests(1)
    assert api.get(marathon.url + "/v2/deployments").status_code == 500


def test_event_stream_rules_and_drops(marathon: MarathonEmulator, api: requests.Session) -> None:
    # Marathon: /v2/events needs Accept: text/event-stream, otherwise 405.
    assert requests.get(marathon.url + "/v2/events", timeout=5).status_code == 405
    # Without an event stream (events_enabled=False) the URI is unknown.
    marathon.events_enabled = False
    assert requests.get(marathon.url + "/v2/events", headers={"Accept": "text/event-stream"},
                        timeout=5).status_code == 404
    marathon.events_enabled = True

    # ?event_type= filters: only the asked types arrive.
    filtered = EventStream(marathon.url, params={"event_type": ["deployment_success", "event_stream_attached"]})
    everything = EventStream(marathon.url)
    try:
        r = api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/events", instances=0))
        dep_id = r.headers["Marathon-Deployment-Id"]
        filtered.wait_for(5, "deployment_success", event="deployment_success", id=dep_id)
        everything.wait_for(5, "deployment_success", event="deployment_success", id=dep_id)
        assert {kind for kind, _ in filtered.events} == {"deployment_success", "event_stream_attached"}
        assert {"api_post_event", "deployment_info"} <= {kind for kind, _ in everything.events}

        # A dropped connection ends the client's read with an error; a reconnect works again.
        marathon.drop_event_streams()
        assert everything.ended.wait(5) and filtered.ended.wait(5)
        assert everything.error is not None
        wait_for(lambda: marathon.event_stream_count == 0, 5, "the streams to be gone")
    finally:
        filtered.close()
        everything.close()
    again = EventStream(marathon.url)
    try:
        attached = again.wait_for(5, "event_stream_attached", event="event_stream_attached")
        assert attached["remoteAddress"] == "127.0.0.1"
    finally:
        again.close()


def test_crashing_tasks_fail_and_are_relaunched_with_backoff(
    marathon: MarathonEmulator, api: requests.Session, events: EventStream
) -> None:
    # With a health check (as bgci's apps have): without one, Marathon would count a task that reached
    # TASK_RUNNING for a moment before crashing, and the deployment could succeed.
    crash = app_definition("/emu-test/crash", instances=1, cmd="echo boom-from-task >&2; exit 3", backoffSeconds=1)
    r = api.post(marathon.url + "/v2/apps", json=crash)
    dep_id = r.headers["Marathon-Deployment-Id"]

    # Marathon: the task ends TASK_FAILED; the status update carries the reason ...
    failed = events.wait_for(10, "TASK_FAILED", event="status_update_event", appId="/emu-test/crash",
                             taskStatus="TASK_FAILED")
    assert "boom-from-task" in failed["message"] and "status 3" in failed["message"]
    # ... the app shows it as lastTaskFailure; terminal tasks are expunged from tasks[].
    app = get_app(api, marathon.url, "/emu-test/crash")
    assert app["lastTaskFailure"]["state"] == "TASK_FAILED"
    assert app["lastTaskFailure"]["taskId"] == failed["taskId"]
    assert "boom-from-task" in app["lastTaskFailure"]["message"]
    assert failed["taskId"] not in {t["id"] for t in app["tasks"]}

    # Marathon relaunches after a backoff; the deployment never finishes on its own.
    wait_for(lambda: len({e["taskId"] for e in events.of_type("status_update_event")
                          if e["appId"] == "/emu-test/crash" and e["taskStatus"] == "TASK_FAILED"}) >= 2,
             15, "a relaunched task to fail again")
    assert dep_id in deployment_ids(api, marathon.url)
    assert not [e for e in events.of_type("deployment_success") if e["id"] == dep_id]

    # Marathon: DELETE /v2/deployments/{id}?force=true cancels it (202).
    r = api.delete(marathon.url + f"/v2/deployments/{dep_id}", params={"force": "true"})
    assert r.status_code == 202
    events.wait_for(5, "deployment_failed", event="deployment_failed", id=dep_id)

    # Injected failures: a healthy image whose tasks are made to fail.
    marathon.fail_tasks_for("/emu-test/injected")
    api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/injected"))
    injected = events.wait_for(10, "injected TASK_FAILED", event="status_update_event",
                               appId="/emu-test/injected", taskStatus="TASK_FAILED")
    assert "injected task failure" in injected["message"]
    assert get_app(api, marathon.url, "/emu-test/injected")["tasksHealthy"] == 0


def test_authentication(docker_client: docker.DockerClient) -> None:
    with MarathonEmulator(docker_client, credentials=("jenkins", "s3cret"), token="tok") as protected:
        # Marathon --http_credentials: 401 with a Basic challenge for realm Mesosphere.
        r = requests.get(protected.url + "/v2/apps", timeout=5)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="Mesosphere"'
        assert requests.get(protected.url + "/v2/apps", auth=("jenkins", "wrong"), timeout=5).status_code == 401
        assert requests.get(protected.url + "/v2/apps", auth=("jenkins", "s3cret"), timeout=5).status_code == 200
        # DC/OS: Authorization: token=<T>.
        r = requests.get(protected.url + "/v2/apps", headers={"Authorization": "token=tok"}, timeout=5)
        assert r.status_code == 200


def test_legacy_shapes(docker_client: docker.DockerClient, testapp_image: str) -> None:
    old_form = {
        "id": "/emu-legacy/web",
        "instances": 1,
        "container": {"type": "DOCKER", "docker": {
            "image": testapp_image, "network": "BRIDGE",
            "portMappings": [{"containerPort": 8000, "hostPort": 0, "protocol": "tcp"}]}},
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 30}],
    }
    with MarathonEmulator(docker_client, legacy_shapes=True, sse_heartbeat=0.5) as old:
        stream = EventStream(old.url)
        try:
            r = requests.post(old.url + "/v2/apps", json=old_form, timeout=5)
            assert r.status_code == 201, r.text
            with requests.Session() as s:
                wait_deployment_gone(s, old.url, r.headers["Marathon-Deployment-Id"])
                app = get_app(s, old.url, "/emu-legacy/web")
            # Marathon < 1.5: container.docker.network / container.docker.portMappings, no "networks".
            assert app["container"]["docker"]["network"] == "BRIDGE"
            assert app["container"]["docker"]["portMappings"][0]["containerPort"] == 8000
            assert "networks" not in app and "portMappings" not in app["container"]
            (task,) = app["tasks"]
            assert re.fullmatch(r"emu-legacy_web\.[0-9a-f-]{36}", task["id"])
            # Older Marathon puts taskId (not instanceId) in healthCheckResults.
            (result,) = task["healthCheckResults"]
            assert result["taskId"] == task["id"] and "instanceId" not in result and result["alive"] is True
            health = stream.wait_for(5, "health event", event="health_status_changed_event", taskId=task["id"])
            assert health["alive"] is True
        finally:
            stream.close()


def test_stop_removes_only_its_own_containers(
    marathon: MarathonEmulator, api: requests.Session, docker_client: docker.DockerClient
) -> None:
    r = api.post(marathon.url + "/v2/apps", json=app_definition("/emu-test/survivor"))
    wait_deployment_gone(api, marathon.url, r.headers["Marathon-Deployment-Id"])
    survivor = marathon.container_ids("/emu-test/survivor")

    other = MarathonEmulator(docker_client)
    other.start()
    try:
        r = requests.post(other.url + "/v2/apps", json=app_definition("/emu-test/other", instances=2), timeout=5)
        assert r.status_code == 201
        wait_for(lambda: len(other.container_ids()) == 2, 15, "the other emulator's containers")
    finally:
        other.stop()
    assert docker_client.containers.list(all=True, filters={"label": f"io.bgci.emulator.instance="
                                                                     f"{other.instance_id}"}) == []
    # The other emulator never touched ours.
    assert marathon.container_ids("/emu-test/survivor") == survivor
    assert docker_client.containers.get(survivor[0]).status == "running"


def test_reference_examples_are_readable() -> None:
    # Guards the reference data the shape checks above rely on.
    assert example("tasks.json")["tasks"] and example("deployments.json")
    assert Path(DEFAULT_SCHEMA_PATH).is_file()
