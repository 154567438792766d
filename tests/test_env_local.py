"""The local scheduler and `bgci env`: real containers of the sample app on this Docker engine.

The first tests are the backend's pure decisions over canned container
listings (no daemon). The rest run the sample image built once per session
(`sample_build`): every container they start carries that build's unique app
name, and `leftovers` checks (and cleans) what each test left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker
import pytest
import requests

from bgci import labels
from bgci.environments import EnvironmentService
from bgci.errors import EnvironmentFailed, EnvironmentNotFound
from bgci.images import resolve_image
from bgci.schedulers.base import Scheduler
from bgci.schedulers.local import LocalScheduler, environment_from, exit_reason, plan_scale, published_address
from tests.conftest import SampleBuild

UNBUILT_SHA = "0" * 40


# -- pure decisions ------------------------------------------------------------------------------------
def summary(index: int, state: str = "running", port: int = 32000, ip: str = "127.0.0.1", **extra: str) -> dict:
    """One container as GET /containers/json lists it (the fields the backend reads)."""
    return {
        "Id": f"id{index}", "Names": [f"/shop-abc.{index}"], "State": state, "Status": "Up 2 seconds",
        "Ports": [{"IP": ip, "PrivatePort": 8000, "PublicPort": port + index, "Type": "tcp"}] if port else [],
        "Labels": {labels.APP: "shop", labels.ENV: "shop-abc", labels.SHA: "a" * 40, labels.INDEX: str(index),
                   **extra},
    }


def test_scale_plan_keeps_the_lowest_indexes_and_fills_gaps() -> None:
    assert plan_scale({1, 2, 3}, 5) == ([4, 5], [])  # scale up: the next indexes
    assert plan_scale({1, 2, 5}, 4) == ([3], [])  # a hole (a removed .3) is filled first
    assert plan_scale({1, 2, 3, 4, 5}, 2) == ([], [3, 4, 5])  # scale down: the highest go
    assert plan_scale({1, 2}, 2) == ([], [])


def test_an_exit_counts_even_when_the_restart_policy_brought_the_container_back() -> None:
    # A die event seen during the wait fails it although the listing already says running again.
    assert exit_reason(summary(1), "1") == "exited with code 1"
    # Exited for good, or between two restarts: the listing alone says enough.
    assert "restarting" in exit_reason(summary(1, state="restarting"), None)
    assert "exited" in exit_reason(summary(1, state="exited"), None)
    # Starting or running without an exit: may still become healthy.
    assert exit_reason(summary(1, state="created"), None) is None
    assert exit_reason(summary(1), None) is None


def test_published_address_is_the_ipv4_binding_and_wildcards_mean_loopback() -> None:
    both = summary(1, ip="::")
    both["Ports"].insert(0, {"IP": "::", "PrivatePort": 8000, "PublicPort": 40001, "Type": "tcp"})
    both["Ports"][1]["IP"] = "0.0.0.0"
    # bind_address 0.0.0.0 publishes on every address; this host reaches it on loopback.
    assert published_address(both) == ("127.0.0.1", 32001)
    assert published_address(summary(2, ip="10.1.2.3")) == ("10.1.2.3", 32002)
    # Not running: nothing published, so no backend to report.
    assert published_address(summary(3, state="exited", port=0)) == ("", 0)


def test_environment_from_listing_orders_instances_and_counts_health() -> None:
    containers = [summary(3), summary(1, **{"io.bgci.created-by": "alice"}), summary(2)]
    env = environment_from(containers, {"id1": True, "id2": True, "id3": False})
    # Instances in index order; metadata from the lowest index; wanted = containers that exist.
    assert [i.id for i in env.instances] == ["shop-abc.1", "shop-abc.2", "shop-abc.3"]
    assert (env.name, env.created_by, env.wanted_instances, env.scheduler) == ("shop-abc", "alice", 3, "local")
    # Ready only when every instance answered its health path.
    assert not env.is_ready and len(env.healthy_instances) == 2
    assert environment_from(containers, {"id1": True, "id2": True, "id3": True}).is_ready


class FakeEngine:
    """Just the Docker API calls a wait makes: the listing, the die-event stream and logs (canned)."""

    def __init__(self, containers: list[dict], events: list[dict]) -> None:
        self.containers_listed, self.events_given = containers, events
        self.api = self

    def containers(self, **_filters: object) -> list[dict]:
        return self.containers_listed

    def events(self, **_options: object) -> FakeStream:
        return FakeStream(self.events_given)

    def logs(self, container_id: str, **_options: object) -> bytes:
        return f"log of {container_id}\n".encode()


class FakeStream(list):
    def close(self) -> None:
        pass


def test_wait_times_out_on_its_clock_and_reports_progress_once_per_change() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the clock advances only when the loop sleeps
        slept.append(seconds)
        now[0] += seconds

    # Not running yet (nothing published): never healthy, so only the deadline can end the wait.
    engine = FakeEngine([summary(1, state="created", port=0)], [])
    scheduler = LocalScheduler(engine, "shop", clock=lambda: now[0], sleep=sleep)  # type: ignore[arg-type]
    progress: list[tuple[int, int]] = []
    with pytest.raises(EnvironmentFailed, match=r"not ready after 1s: 0/1 instances healthy") as caught:
        scheduler.wait_until_ready("shop-abc", 1.0, lambda healthy, wanted: progress.append((healthy, wanted)))
    # Polled every 50 ms until the deadline, without real sleeping; progress said 0/1 once, not each round.
    assert len(slept) == 20 and set(slept) == {0.05}
    assert progress == [(0, 1)]
    assert "shop-abc.1: created" in str(caught.value) and "log of id1" in str(caught.value)


def test_a_die_event_fails_the_wait_although_the_listing_says_running() -> None:
    # What the restart policy does: the app exited, and the engine already restarted it.
    engine = FakeEngine([summary(1, port=0), summary(2, port=0)],
                        [{"id": "id2", "Actor": {"Attributes": {"exitCode": "3"}}}])
    scheduler = LocalScheduler(engine, "shop", sleep=lambda _: time.sleep(0.01))  # type: ignore[arg-type]
    with pytest.raises(EnvironmentFailed, match=r"shop-abc.2 exited") as caught:
        scheduler.wait_until_ready("shop-abc", 30)
    assert "shop-abc.2: exited with code 3" in str(caught.value) and "log of id2" in str(caught.value)
    assert "shop-abc.1" not in str(caught.value)


def test_local_scheduler_has_the_whole_interface() -> None:
    assert all(hasattr(LocalScheduler, m) for m in ("create", "wait_until_ready", "get", "list", "scale",
                                                    "destroy", "from_settings"))


# -- with real containers ------------------------------------------------------------------------------
def app_containers(client: docker.DockerClient, app: str, env: str | None = None) -> list:
    wanted = [f"{labels.APP}={app}", labels.INDEX] + ([f"{labels.ENV}={env}"] if env else [])
    return client.containers.list(all=True, filters={"label": wanted})


@pytest.fixture
def leftovers(docker_client: docker.DockerClient, sample_build: SampleBuild) -> Iterator[None]:
    """After each test: no container of the sample app may be left; remove any so later tests start clean."""
    yield
    left = app_containers(docker_client, sample_build.app)
    for container in left:
        container.remove(force=True, v=True)
    assert not left, f"left behind: {[c.name for c in left]}"


@pytest.fixture
def service(docker_client: docker.DockerClient, sample_build: SampleBuild, leftovers: None) -> EnvironmentService:
    settings = sample_build.settings
    scheduler = LocalScheduler(docker_client, settings.app, bind_address=settings.deploy.bind_address)
    assert isinstance(scheduler, Scheduler)
    return EnvironmentService(scheduler, settings,
                              resolve=lambda ref: resolve_image(docker_client, settings, ref, lambda _: None))


def get_text(address: str, path: str) -> str:
    response = requests.get(f"http://{address}{path}", timeout=5)
    response.raise_for_status()
    return response.text.strip()


@pytest.mark.docker
def test_three_instances_scale_to_five_and_two_then_destroy(service: EnvironmentService, sample_build: SampleBuild,
                                                           docker_client: docker.DockerClient) -> None:
    name = f"{sample_build.app}-flow"
    progress: list[tuple[int, int]] = []
    started = time.monotonic()
    env = service.create(service.spec_for(sha=sample_build.sha, name=name, instances=3), timeout=60,
                         progress=lambda healthy, wanted: progress.append((healthy, wanted)))
    ready_after = time.monotonic() - started
    # Ready means every instance serves the commit's code: GET / answers the sha, on three distinct ports.
    assert env.is_ready and len(env.instances) == 3
    assert {get_text(i.address, "/") for i in env.instances} == {sample_build.sha}
    assert len({i.address for i in env.instances}) == 3
    # Progress went up to 3 of 3 (what `bgci env create` prints as "healthy 3/3").
    assert progress[-1] == (3, 3) and progress == sorted(progress)
    assert ready_after < 30, ready_after  # the target is seconds; this only catches a hang

    # Metadata lives on the containers, nowhere else: names, labels, published on bind_address, restart policy.
    containers = sorted(app_containers(docker_client, sample_build.app, name), key=lambda c: c.name)
    assert [c.name for c in containers] == [f"{name}.1", f"{name}.2", f"{name}.3"]
    found = containers[0].labels
    assert found[labels.SHA] == sample_build.sha and found["io.bgci.created-at"] == env.created_at
    assert found["io.bgci.digest"] == env.digest == docker_client.images.get(sample_build.result.reference).id
    assert containers[0].attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert containers[0].attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"

    # Scale out: two more instances, all five serving; the first three kept their ports (not restarted).
    five = service.scale(name, 5, timeout=60)
    assert five.is_ready and [i.id for i in five.instances] == [f"{name}.{n}" for n in range(1, 6)]
    assert [i.address for i in five.instances[:3]] == [i.address for i in env.instances]
    assert {get_text(i.address, "/health") for i in five.instances} == {"ok"}

    # Scale in: the highest indexes go, and their containers are gone from the engine.
    two = service.scale(name, 2, timeout=60)
    assert [i.id for i in two.instances] == [f"{name}.1", f"{name}.2"] and two.is_ready
    assert len(app_containers(docker_client, sample_build.app, name)) == 2
    assert [(e.name, len(e.healthy_instances)) for e in service.list()] == [(name, 2)]

    # Destroy leaves nothing: no container, and the environment is unknown.
    service.destroy(name)
    assert app_containers(docker_client, sample_build.app, name) == []
    with pytest.raises(EnvironmentNotFound):
        service.get(name)


@pytest.mark.docker
def test_an_app_that_exits_at_start_fails_the_create_at_once(service: EnvironmentService,
                                                             sample_build: SampleBuild,
                                                             docker_client: docker.DockerClient) -> None:
    name = f"{sample_build.app}-exits"
    spec = service.spec_for(sha=sample_build.sha, name=name, instances=2, env={"WEB_APP_FAIL_AT_START": "1"})
    started = time.monotonic()
    with pytest.raises(EnvironmentFailed) as caught:
        service.create(spec, timeout=60)
    elapsed = time.monotonic() - started
    # Failed on the first exit, long before the 60 s timeout (the restart policy must not hide it).
    assert elapsed < 15, elapsed
    message = str(caught.value)
    assert "exited with code 1" in message
    # The reason is the app's own last words.
    assert "WEB_APP_FAIL_AT_START=1: refusing to start" in message
    assert "were removed" in message
    # Nothing left behind.
    assert app_containers(docker_client, sample_build.app, name) == []


@pytest.mark.docker
def test_an_instance_that_never_answers_times_out_with_its_state(service: EnvironmentService,
                                                                sample_build: SampleBuild) -> None:
    spec = replace(service.spec_for(sha=sample_build.sha, name=f"{sample_build.app}-deaf", instances=1),
                   health_path="/no-such-health-path")
    started = time.monotonic()
    with pytest.raises(EnvironmentFailed) as caught:
        service.create(spec, timeout=1.5)
    # The timeout is kept (a round more at most), and the error says which instance answered what.
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "not ready after 1.5s: 0/1 instances healthy" in message
    assert "/no-such-health-path not answering 2xx" in message
    # Its log tail shows the app running and answering the probes, with 404.
    assert '"GET /no-such-health-path HTTP/1.1" 404' in message


# -- the command line, through the installed console script --------------------------------------------
def bgci(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bgci", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_clear_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    """One `Error: ...` line (the details may follow it), the stage's exit code, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and fragment in result.stderr, result.stderr


@pytest.mark.docker
def test_cli_create_backends_show_scale_destroy(sample_build: SampleBuild, docker_client: docker.DockerClient,
                                                leftovers: None) -> None:
    repo, name = sample_build.repo, f"{sample_build.app}-cli"
    created = bgci("env", "create", "--sha", sample_build.sha, "--name", name, "--instances", "2", "--json",
                   cwd=repo)
    assert created.returncode == 0, created.stderr
    data = json.loads(created.stdout)
    assert data["ready"] and data["healthy_instances"] == 2 and data["sha"] == sample_build.sha
    # The long wait shows its progress on stderr, ending with every instance healthy.
    assert "healthy 2/2" in created.stderr

    # `backends`: one host:port a line, each a working server of that sha (what nginx upstreams need).
    backends = bgci("env", "backends", name, cwd=repo)
    lines = backends.stdout.split()
    assert len(lines) == 2 and {get_text(line, "/") for line in lines} == {sample_build.sha}

    # Same name again: refused, the running one untouched.
    assert_clear_error(bgci("env", "create", "--sha", sample_build.sha, "--name", name, cwd=repo), 8,
                       "exists already")
    shown = json.loads(bgci("env", "show", name, "--json", cwd=repo).stdout)
    assert [i["address"] for i in shown["instances"]] == lines and shown["ready"]

    scaled = bgci("env", "scale", name, "3", cwd=repo)
    assert scaled.returncode == 0 and "3/3 healthy" in scaled.stdout, scaled.stderr
    listed = json.loads(bgci("env", "list", "--json", cwd=repo).stdout)
    assert [(e["name"], e["healthy_instances"]) for e in listed] == [(name, 3)]

    destroyed = bgci("env", "destroy", name, cwd=repo)
    assert destroyed.returncode == 0 and destroyed.stdout.strip() == f"destroyed {name}"
    assert app_containers(docker_client, sample_build.app) == []
    assert_clear_error(bgci("env", "show", name, cwd=repo), 8, f"no environment {name}")


@pytest.mark.docker
def test_cli_keep_failed_keeps_the_failed_instances(sample_build: SampleBuild, docker_client: docker.DockerClient,
                                                    leftovers: None) -> None:
    repo, name = sample_build.repo, f"{sample_build.app}-kept"
    result = bgci("env", "create", "--sha", sample_build.sha, "--name", name, "--instances", "1", "--keep-failed",
                  "--env", "WEB_APP_FAIL_AT_START=1", "--timeout", "30", cwd=repo)
    assert_clear_error(result, 8, "refusing to start")
    assert f"kept for inspection: remove it with `bgci env destroy {name}`" in result.stderr
    # Kept: the container is still there to inspect, with its logs.
    assert [c.name for c in app_containers(docker_client, sample_build.app, name)] == [f"{name}.1"]
    assert bgci("env", "destroy", name, cwd=repo).returncode == 0
    assert app_containers(docker_client, sample_build.app, name) == []


@pytest.mark.docker
@pytest.mark.parametrize(("args", "code", "fragment"), [
    (["--sha", "abc123"], 2, "expected a full 40-character git sha"),
    (["--sha", UNBUILT_SHA], 4, f":{UNBUILT_SHA} not found locally"),
    (["--image", "no-such-image:v1"], 4, "no-such-image:v1 not found locally"),
    (["--sha", "SHA", "--instances", "0"], 2, "--instances: 0 instances: allowed are 1 to 100"),
    (["--sha", "SHA", "--instances", "5000"], 2, "--instances: 5000 instances: allowed are 1 to 100"),
    (["--sha", "SHA", "--name", "Not_A_Dns_Label"], 2, "--name: environment name 'Not_A_Dns_Label': not valid"),
    (["--sha", "SHA", "--timeout", "0"], 2, "--timeout: timeout 0: expected seconds above 0"),
    (["--sha", "SHA", "--scheduler", "kubernetes"], 2, "'kubernetes' is not one of"),
    ([], 2, "pass --sha SHA or --image REF"),
])
def test_cli_bad_input_gives_clear_errors(sample_build: SampleBuild, args: list[str], code: int,
                                          fragment: str, leftovers: None) -> None:
    args = [sample_build.sha if a == "SHA" else a for a in args]
    assert_clear_error(bgci("env", "create", *args, cwd=sample_build.repo), code, fragment)


@pytest.mark.docker
def test_cli_docker_not_answering_and_unknown_environments(sample_build: SampleBuild, tmp_path: Path,
                                                           leftovers: None) -> None:
    # The local scheduler's engine not reachable: a clear error naming where it looked, not a traceback.
    result = bgci("env", "list", cwd=sample_build.repo, env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert_clear_error(result, 4, "Docker daemon not answering")
    for command in (["show", "nope"], ["backends", "nope"], ["scale", "nope", "2"], ["destroy", "nope"]):
        assert_clear_error(bgci("env", *command, cwd=sample_build.repo), 8, "no environment nope")
    assert_clear_error(bgci("env", "scale", "nope", "0", cwd=sample_build.repo), 2, "0 instances: allowed are 1 to 100")
