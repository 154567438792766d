"""The Marathon backend and `bgci env --scheduler marathon`: real containers of the sample app via the emulator.

The emulator (tests/emulators/marathon.py) serves Marathon's API and runs each
task as a Docker container of the image bgci names, so what these tests check
over HTTP (ready, ports, health, removal) really ran. Each test says which
Marathon behaviour its assertions stand for; `clean` fails a test that left an
app or a container behind, after removing them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import jsonschema
import pytest
import requests

from bgci import labels
from bgci.environments import EnvironmentService
from bgci.errors import ConfigError, DeploymentInProgress, EnvironmentFailed, EnvironmentNotFound
from bgci.images import resolve_image
from bgci.schedulers.base import Scheduler
from bgci.schedulers.marathon import MarathonClient, MarathonScheduler
from tests.conftest import SampleBuild, empty_marathon, push_to_registry
from tests.emulators.marathon import DEFAULT_SCHEMA_PATH, MarathonEmulator
from tests.support import Registry, free_port
from tests.test_env_local import assert_clear_error, bgci, get_text

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def sample_build(sample_build: SampleBuild, session_registry: Registry,
                 docker_client: docker.DockerClient) -> SampleBuild:
    """The session's sample build (same repo and sha), pushed to the loopback registry, its settings naming it.

    Marathon agents pull the image by reference, so bgci sends `<registry>/<app>@sha256:...`; the local
    image id it names without a registry is refused (test_a_local_image_id_is_refused_before_anything_is_sent).
    """
    settings = push_to_registry(docker_client, sample_build.settings, sample_build.sha, session_registry.address)
    return SampleBuild(sample_build.repo, settings, sample_build.sha, sample_build.result)


@pytest.fixture
def clean(marathon: MarathonEmulator) -> Iterator[MarathonEmulator]:
    """Before: an empty request log. After: faults reset; no app and no container may be left (removed if so)."""
    marathon.requests_log.clear()
    yield marathon
    apps = empty_marathon(marathon)
    assert not apps, f"left behind: {apps}"


def make_scheduler(marathon: MarathonEmulator, app: str, **kwargs: Any) -> MarathonScheduler:
    kwargs.setdefault("lock_timeout", 30)
    return MarathonScheduler(MarathonClient([marathon.url]), app, **kwargs)


def make_service(scheduler: Scheduler, sample_build: SampleBuild, docker_client: docker.DockerClient,
                 ) -> EnvironmentService:
    settings = sample_build.settings
    return EnvironmentService(scheduler, settings,
                              resolve=lambda ref: resolve_image(docker_client, settings, ref, lambda _: None))


@pytest.fixture
def scheduler(clean: MarathonEmulator, sample_build: SampleBuild) -> MarathonScheduler:
    return make_scheduler(clean, sample_build.app)


@pytest.fixture
def service(scheduler: MarathonScheduler, sample_build: SampleBuild,
            docker_client: docker.DockerClient) -> EnvironmentService:
    return make_service(scheduler, sample_build, docker_client)


def env_containers(client: docker.DockerClient, env: str) -> list[Any]:
    """Containers carrying the environment's label (the emulator copies the app's labels onto each task)."""
    return client.containers.list(all=True, filters={"label": f"{labels.ENV}={env}"})


def posted_bodies(marathon: MarathonEmulator) -> list[Any]:
    return [r.body for r in marathon.requests_log if (r.method, r.path) == ("POST", "/v2/apps")]


# -- the environment flow --------------------------------------------------------------------------------------
def test_three_instances_scale_to_five_and_two_then_destroy(
        service: EnvironmentService, scheduler: MarathonScheduler, clean: MarathonEmulator,
        sample_build: SampleBuild, docker_client: docker.DockerClient) -> None:
    name = f"{sample_build.app}-flow"
    app_id = scheduler.app_id(name)
    progress: list[tuple[int, int]] = []
    env = service.create(service.spec_for(sha=sample_build.sha, name=name, instances=3), timeout=60,
                         progress=lambda healthy, wanted: progress.append((healthy, wanted)))
    # Ready means every task serves the commit: GET / answers the sha, on three distinct host ports.
    assert env.is_ready and len(env.instances) == 3 and env.scheduler == "marathon"
    assert {get_text(i.address, "/") for i in env.instances} == {sample_build.sha}
    assert len({i.address for i in env.instances}) == 3
    assert progress[-1] == (3, 3) and progress == sorted(progress)
    # Marathon's own view agrees: the deployment is gone, 3 running and healthy tasks.
    app = clean.url + "/v2/apps" + app_id
    raw = requests.get(app, timeout=5).json()["app"]
    assert (raw["tasksRunning"], raw["tasksHealthy"], raw["deployments"]) == (3, 3, [])
    # Metadata lives in the app's labels, nowhere else; the body sent passed Marathon's schema.
    assert raw["labels"][labels.SHA] == sample_build.sha and raw["labels"]["io.bgci.created-at"] == env.created_at
    (body,) = posted_bodies(clean)
    jsonschema.Draft4Validator(json.loads(DEFAULT_SCHEMA_PATH.read_text())).validate(body)
    assert [(e.name, len(e.healthy_instances)) for e in service.list()] == [(name, 3)]

    # Scale out: the three tasks stay (same addresses), two more join, all serving.
    five = service.scale(name, 5, timeout=60)
    assert five.is_ready and {i.address for i in env.instances} < {i.address for i in five.instances}
    assert {get_text(i.address, "/health") for i in five.instances} == {"ok"}
    # Scale in: Marathon kills the youngest first (killSelection YOUNGEST_FIRST); two of the first three stay.
    two = service.scale(name, 2, timeout=60)
    assert two.is_ready and len(two.instances) == 2
    assert {i.address for i in two.instances} < {i.address for i in env.instances}
    assert len(clean.container_ids(app_id)) == 2

    # Destroy leaves nothing: no app, no container (by the emulator's and by the environment's labels).
    service.destroy(name)
    assert clean.container_ids(app_id) == [] and env_containers(docker_client, name) == []
    with pytest.raises(EnvironmentNotFound, match=f"no environment {name} of app {sample_build.app} on Marathon"):
        service.get(name)
    assert service.list() == []


def test_an_app_that_exits_at_start_fails_the_create_and_is_removed(
        service: EnvironmentService, scheduler: MarathonScheduler, clean: MarathonEmulator,
        sample_build: SampleBuild, docker_client: docker.DockerClient) -> None:
    name = f"{sample_build.app}-exits"
    spec = service.spec_for(sha=sample_build.sha, name=name, instances=2, env={"WEB_APP_FAIL_AT_START": "1"})
    started = time.monotonic()
    with pytest.raises(EnvironmentFailed) as caught:
        service.create(spec, timeout=60)
    # Marathon relaunches a crashing task for ever (its deployment never ends): bgci stops at the first
    # TASK_FAILED, long before the timeout, with the task's message (the app's own last words).
    assert time.monotonic() - started < 20
    message = str(caught.value)
    assert f"environment {name} failed on Marathon" in message and "TASK_FAILED" in message
    assert "WEB_APP_FAIL_AT_START=1: refusing to start" in message
    assert "were removed" in message
    # The failed create's own deployment was overridden to delete it: no app, no container.
    assert requests.get(clean.url + "/v2/apps" + scheduler.app_id(name), timeout=5).status_code == 404
    assert clean.container_ids() == [] and env_containers(docker_client, name) == []


def test_an_instance_that_never_answers_times_out_with_how_many_were_healthy(
        service: EnvironmentService, clean: MarathonEmulator, sample_build: SampleBuild) -> None:
    spec = replace(service.spec_for(sha=sample_build.sha, name=f"{sample_build.app}-deaf", instances=2),
                   health_path="/no-such-health-path")
    started = time.monotonic()
    with pytest.raises(EnvironmentFailed) as caught:
        service.create(spec, timeout=2)
    # Marathon ignores health check failures within gracePeriodSeconds until a first success: the tasks run,
    # are never alive, and the deployment never ends; only the timeout stops the wait.
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "not ready after 2s: 0/2 instances healthy" in message
    assert message.count("TASK_RUNNING, no health check result yet") == 2
    assert "still running" in message and "were removed" in message
    assert clean.container_ids() == []


def test_keep_failed_keeps_the_app_and_only_force_removes_it_while_it_crash_loops(
        service: EnvironmentService, clean: MarathonEmulator, sample_build: SampleBuild,
        docker_client: docker.DockerClient) -> None:
    name = f"{sample_build.app}-kept"
    spec = service.spec_for(sha=sample_build.sha, name=name, instances=1, env={"WEB_APP_FAIL_AT_START": "1"})
    with pytest.raises(EnvironmentFailed, match="kept for inspection"):
        service.create(spec, timeout=60, keep_failed=True)
    # Kept: the app is still in Marathon, still locked by its crash-looping deployment.
    kept = make_scheduler(clean, sample_build.app, lock_timeout=1)  # another process: the lock is not its own
    assert kept.get(name).name == name
    with pytest.raises(DeploymentInProgress) as caught:
        kept.destroy(name)
    (running,) = [d["id"] for d in requests.get(clean.url + "/v2/deployments", timeout=5).json()]
    assert caught.value.deployment_ids == [running] and running in str(caught.value) and "--force" in str(caught.value)
    # --force: ?force=true on the DELETE; nothing is left.
    make_scheduler(clean, sample_build.app, force=True).destroy(name)
    assert clean.container_ids() == [] and env_containers(docker_client, name) == []


def test_a_stream_dropped_mid_deployment_still_finishes_by_polling(
        service: EnvironmentService, scheduler: MarathonScheduler, clean: MarathonEmulator,
        sample_build: SampleBuild) -> None:
    name = f"{sample_build.app}-drop"
    app_id = scheduler.app_id(name)
    dropped: dict[str, Any] = {}

    def drop_once_attached() -> None:
        deadline = time.monotonic() + 30
        while clean.event_stream_count == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        clean.events_enabled = False  # reconnects now get 404: only polling can see the rest
        clean.drop_event_streams()
        dropped["deployment_finished"] = app_id in clean.deployment_finished_at

    # The emulator notices a closed stream of an earlier test at its next heartbeat: let it, so ours is the one.
    deadline = time.monotonic() + 5
    while clean.event_stream_count:
        assert time.monotonic() < deadline, "a stale event stream stays open"
        time.sleep(0.05)
    dropper = threading.Thread(target=drop_once_attached)
    dropper.start()
    env = service.create(service.spec_for(sha=sample_build.sha, name=name, instances=2), timeout=60)
    ready_at = time.perf_counter()
    dropper.join()
    # Dropped while the deployment still ran (a network drop, a Marathon leader change).
    assert dropped == {"deployment_finished": False}
    assert env.is_ready and {get_text(i.address, "/") for i in env.instances} == {sample_build.sha}
    # The wait tried to reconnect (404), then polled until ready. How soon after the deployment's end
    # (within a poll interval) is measured by benchmarks/env_marathon.py; here only a guard against hangs.
    assert len([r for r in clean.requests_log if r.path == "/v2/events"]) >= 2 and clean.event_stream_count == 0
    assert ready_at - clean.deployment_finished_at[app_id] < scheduler.poll_interval + 10
    service.destroy(name)


def test_create_waits_for_the_delete_of_the_same_name_to_finish(
        service: EnvironmentService, scheduler: MarathonScheduler, clean: MarathonEmulator,
        sample_build: SampleBuild) -> None:
    name = f"{sample_build.app}-again"
    app_id = scheduler.app_id(name)
    service.create(service.spec_for(sha=sample_build.sha, name=name, instances=1), timeout=60)
    # Marathon: DELETE is itself a deployment; the app is gone from /v2/apps at once, but the id stays
    # locked until the deployment ends, so an immediate POST gets 409 "App is locked".
    clean.deployment_delay = 1.5
    scheduler.client.delete_app(app_id)
    again = service.create(service.spec_for(sha=sample_build.sha, name=name, instances=1), timeout=60)
    assert again.is_ready and get_text(again.instances[0].address, "/") == sample_build.sha
    assert len([b for b in posted_bodies(clean) if b["id"] == app_id]) >= 3  # first, refused (409), accepted
    clean.deployment_delay = 0
    service.destroy(name)


def test_a_local_image_id_is_refused_before_anything_is_sent(
        service: EnvironmentService, scheduler: MarathonScheduler, clean: MarathonEmulator,
        sample_build: SampleBuild, docker_client: docker.DockerClient) -> None:
    # A Mesos agent pulls the image by reference, on its own host; a local image id (what bgci names when
    # no registry holds the image) exists only in the engine of the host that built it. Marathon would
    # accept the app and every task would fail to pull. (The emulator shares our engine and could run it:
    # so the refusal here is bgci's own.)
    image_id = docker_client.images.get(f"{sample_build.settings.image_repository}:{sample_build.sha}").id
    spec = replace(service.spec_for(sha=sample_build.sha, name=f"{sample_build.app}-local"), image=image_id)
    with pytest.raises(ConfigError) as caught:
        scheduler.create(spec)
    assert f"image {image_id}: Marathon agents cannot pull a local image id" in str(caught.value)
    assert "BGCI_REGISTRY" in str(caught.value) and caught.value.exit_code == 2
    # Nothing was sent: no app in Marathon, no request but reads.
    assert requests.get(clean.url + "/v2/apps", timeout=5).json()["apps"] == []
    assert [r for r in clean.requests_log if r.method != "GET"] == []


@pytest.mark.usefixtures("marathon_reference")
def test_older_marathon_shapes_work_end_to_end(sample_build: SampleBuild, docker_client: docker.DockerClient) -> None:
    # Marathon < 1.5 answers with container.docker.portMappings and healthCheckResults[].taskId.
    with MarathonEmulator(docker_client, legacy_shapes=True, health_interval=0.2, sse_heartbeat=0.5) as old:
        scheduler = make_scheduler(old, sample_build.app)
        service = make_service(scheduler, sample_build, docker_client)
        name = f"{sample_build.app}-old"
        env = service.create(service.spec_for(sha=sample_build.sha, name=name, instances=1), timeout=60)
        assert "portMappings" in env.attrs["container"]["docker"] and "networks" not in env.attrs
        assert "taskId" in env.attrs["tasks"][0]["healthCheckResults"][0]
        assert env.is_ready and get_text(env.instances[0].address, "/") == sample_build.sha
        service.destroy(name)
        assert old.container_ids() == []


# -- the command line ------------------------------------------------------------------------------------------
def marathon_env(marathon: MarathonEmulator, build: SampleBuild) -> dict[str, str]:
    """The repo's bgci.toml names no registry: the CLI gets the one the image was pushed to."""
    return {"BGCI_MARATHON_URLS": marathon.url, "BGCI_REGISTRY": build.settings.registry.url}


def test_cli_create_list_show_backends_destroy(clean: MarathonEmulator, sample_build: SampleBuild,
                                               docker_client: docker.DockerClient) -> None:
    repo, name, env = sample_build.repo, f"{sample_build.app}-cli", marathon_env(clean, sample_build)
    on = ["--scheduler", "marathon"]
    created = bgci("env", "create", *on, "--sha", sample_build.sha, "--name", name, "--instances", "3",
                   "--no-preview", "--json", cwd=repo, env=env)
    assert created.returncode == 0, created.stderr
    data = json.loads(created.stdout)
    assert data["ready"] and data["healthy_instances"] == 3 and data["scheduler"] == "marathon"
    assert "healthy 3/3" in created.stderr  # the long wait shows its progress

    listed = json.loads(bgci("env", "list", *on, "--json", cwd=repo, env=env).stdout)
    assert [(e["name"], e["sha"], e["healthy_instances"]) for e in listed] == [(name, sample_build.sha, 3)]
    shown = json.loads(bgci("env", "show", name, *on, "--json", cwd=repo, env=env).stdout)
    assert shown["ready"] and all(i["state"] == "TASK_RUNNING" and i["healthy"] for i in shown["instances"])
    # `backends`: one host:port a line, each a working server of that sha (what nginx upstreams need).
    lines = bgci("env", "backends", name, *on, cwd=repo, env=env).stdout.split()
    assert sorted(lines) == sorted(i["address"] for i in shown["instances"])
    assert {get_text(line, "/") for line in lines} == {sample_build.sha}
    assert json.loads(bgci("env", "backends", name, *on, "--json", cwd=repo, env=env).stdout) == lines

    destroyed = bgci("env", "destroy", name, *on, "--json", cwd=repo, env=env)
    assert destroyed.returncode == 0 and json.loads(destroyed.stdout) == {"destroyed": name}, destroyed.stderr
    assert clean.container_ids() == [] and env_containers(docker_client, name) == []
    assert_clear_error(bgci("env", "show", name, *on, cwd=repo, env=env), 8, f"no environment {name}")


def test_cli_keep_failed_then_destroy_needs_force_while_the_app_crash_loops(
        clean: MarathonEmulator, sample_build: SampleBuild, tmp_path: Path,
        docker_client: docker.DockerClient) -> None:
    # A config whose ready_timeout (also the wait for a Marathon lock) is short.
    config = tmp_path / "bgci.toml"
    text = (sample_build.repo / "bgci.toml").read_text()
    config.write_text(text.replace("[deploy]\n", "[deploy]\nready_timeout = 2\n", 1))
    repo, name, env = sample_build.repo, f"{sample_build.app}-clikept", marathon_env(clean, sample_build)
    on = ["--config", str(config), "env"]
    failed = bgci(*on, "create", "--scheduler", "marathon", "--sha", sample_build.sha, "--name", name,
                  "--instances", "1", "--keep-failed", "--env", "WEB_APP_FAIL_AT_START=1", "--timeout", "30",
                  cwd=repo, env=env)
    assert_clear_error(failed, 8, "refusing to start")
    assert "kept for inspection" in failed.stderr
    # Another process: the crash loop's deployment locks the app; waited for (2 s), then named.
    locked = bgci(*on, "destroy", name, "--scheduler", "marathon", cwd=repo, env=env)
    assert_clear_error(locked, 8, "is locked by Marathon deployment")
    assert "pass --force" in locked.stderr
    forced = bgci(*on, "destroy", name, "--scheduler", "marathon", "--force", cwd=repo, env=env)
    assert forced.returncode == 0, forced.stderr
    assert clean.container_ids() == [] and env_containers(docker_client, name) == []


def test_cli_without_a_registry_is_refused_with_how_to_push(clean: MarathonEmulator,
                                                           sample_build: SampleBuild) -> None:
    # The repo's bgci.toml names no registry, so the image of the sha is only in the local engine: Marathon's
    # agents, on other hosts, could not pull it. Refused with the stage's exit code; nothing reaches Marathon.
    result = bgci("env", "create", "--scheduler", "marathon", "--sha", sample_build.sha, "--name",
                  f"{sample_build.app}-noreg", "--no-preview", cwd=sample_build.repo,
                  env={"BGCI_MARATHON_URLS": clean.url})
    assert_clear_error(result, 2, "Marathon agents cannot pull a local image id")
    assert "BGCI_REGISTRY" in result.stderr
    assert requests.get(clean.url + "/v2/apps", timeout=5).json()["apps"] == []


def test_cli_marathon_not_reachable_or_not_configured(sample_build: SampleBuild) -> None:
    repo = sample_build.repo
    down = {"BGCI_MARATHON_URLS": f"http://127.0.0.1:{free_port()}"}
    started = time.monotonic()
    result = bgci("env", "list", "--scheduler", "marathon", cwd=repo, env=down)
    # Connection refused: retried with backoff, then one clear error and the scheduler's exit code.
    assert_clear_error(result, 8, "no Marathon answered GET /v2/apps after 4 attempt(s)")
    assert "(connection refused)" in result.stderr and time.monotonic() - started < 15
    result = bgci("env", "list", "--scheduler", "marathon", cwd=repo, env={"BGCI_MARATHON_URLS": ""})
    assert_clear_error(result, 2, "deploy.marathon.urls is empty")
