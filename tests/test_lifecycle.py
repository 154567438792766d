"""The application layer under the conditions of a real build agent, through real `bgci` processes.

- An HTTP proxy in the environment (Jenkins agents often have one): instance and nginx checks go direct.
- A Jenkins abort (SIGTERM) in the middle of a long command: what was started is removed.
- Races between real concurrent processes: two creates of one name, destroy against promote, two promotes.

Each test runs the sample app's images (session builds) on the local engine, behind a real nginx.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from bgci import build as builds
from bgci.config import load_settings
from bgci.router import NginxRouter
from bgci.schedulers.local import LocalScheduler
from bgci.state import load_state
from tests.conftest import SampleBuild, remove_app_containers, remove_app_images
from tests.support import EngineProxy, Registry, commit_all, free_port, make_sample_repo, unique_app_name
from tests.test_faults import ENGINE, assert_one_line_error
from tests.test_router_nginx import NGINX, ask

# A proxy that is never there: any request sent through it fails with ProxyError.
DEAD_PROXY = "http://127.0.0.1:9"


class Project:
    """A bgci.toml for the sample app's session builds with its own embedded nginx, and a way to run bgci."""

    def __init__(self, directory: Path, build: SampleBuild) -> None:
        self.config = directory / "bgci.toml"
        self.config.write_text((build.repo / "bgci.toml").read_text() + (
            f'\n[nginx]\nlisten = "127.0.0.1:{free_port()}"\ndir = "nginx"\nstate_file = "state.json"\n'
            f'nginx_binary = "{NGINX}"\nverify_timeout = 5.0\n'))
        self.settings = load_settings(self.config)
        self.router = NginxRouter.from_settings(self.settings)
        self.app = build.app

    def bgci(self, *args: str, env: dict[str, str] | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bgci", "--config", str(self.config), *args], capture_output=True, text=True,
                               timeout=timeout, env={**os.environ, **(env or {})})

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(["bgci", "--config", str(self.config), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})

    def containers(self, client: docker.DockerClient, env: str) -> list:
        return client.containers.list(all=True, filters={"label": [f"io.bgci.app={self.app}", f"io.bgci.env={env}",
                                                                  "io.bgci.index"]})

    def live(self) -> tuple[int, str | None, str]:
        return ask(self.router, self.settings.nginx.server_name)

    def state(self) -> tuple[str | None, str | None]:
        state = load_state(self.settings.path("state.json"))
        return (state.live.env if state.live else None, state.previous.env if state.previous else None)


@pytest.fixture
def project(tmp_path: Path, docker_client: docker.DockerClient, sample_build: SampleBuild,
            tested_builds: tuple[SampleBuild, SampleBuild]) -> Iterator[Project]:
    project = Project(tmp_path, sample_build)
    project.router.start()
    yield project
    project.router.stop()
    remove_app_containers_of(docker_client, project)


def remove_app_containers_of(client: docker.DockerClient, project: Project) -> None:
    scheduler = LocalScheduler(client, project.app)
    for environment in scheduler.list():
        if environment.name.startswith("lc-"):
            scheduler.destroy(environment.name)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.docker
def test_an_http_proxy_in_the_environment_changes_nothing(project: Project, sample_build: SampleBuild,
                                                          sample_build_b: SampleBuild) -> None:
    # Real behaviour: requests sends http:// URLs through http_proxy unless the host is in no_proxy; a proxy
    # cannot reach the agent's loopback or a cluster's instances, so every probe must go direct.
    proxy = {"http_proxy": DEAD_PROXY, "HTTP_PROXY": DEAD_PROXY, "https_proxy": DEAD_PROXY,
             "HTTPS_PROXY": DEAD_PROXY, "no_proxy": "", "NO_PROXY": ""}
    blue, green = "lc-proxy-blue", "lc-proxy-green"
    ok(project.bgci("env", "create", "--sha", sample_build.sha, "--name", blue, "--instances", "2", env=proxy))
    ok(project.bgci("env", "create", "--sha", sample_build_b.sha, "--name", green, "--instances", "2", env=proxy))
    smoke = ok(project.bgci("smoke", "--env", green, "--junit-dir", str(project.config.parent / "junit"), env=proxy))
    assert "failed" not in smoke.stdout.lower() or " 0 failed" in smoke.stdout.lower()
    ok(project.bgci("promote", blue, env=proxy))
    ok(project.bgci("promote", green, env=proxy))
    assert project.live() == (200, green, sample_build_b.sha)
    ok(project.bgci("rollback", env=proxy))
    assert project.live() == (200, blue, sample_build.sha)
    status = json.loads(ok(project.bgci("status", "--json", env=proxy)).stdout)
    assert {e["name"]: e["healthy"] for e in status["environments"]} == {blue: True, green: True}


@pytest.mark.docker
def test_a_jenkins_abort_during_env_create_leaves_no_container(project: Project, sample_build: SampleBuild,
                                                               docker_client: docker.DockerClient) -> None:
    # Jenkins aborts a build by sending SIGTERM to its processes. bgci must treat it as Ctrl-C: the
    # environment it was starting is removed before it exits.
    name = "lc-abort"
    process = project.popen("env", "create", "--sha", sample_build.sha, "--name", name, "--instances", "3")
    deadline = time.monotonic() + 60
    while not project.containers(docker_client, name) and time.monotonic() < deadline:
        time.sleep(0.02)  # the first container exists: the create is under way
    assert project.containers(docker_client, name), "the create never started a container"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "Traceback" not in stderr, stderr
    assert "Aborted." in stderr
    assert project.containers(docker_client, name) == []


@pytest.mark.docker
def test_a_jenkins_abort_half_a_second_into_env_create_leaves_no_container(
        project: Project, sample_build: SampleBuild, docker_client: docker.DockerClient) -> None:
    # The issue's own reproduction: SIGTERM 0.5 s after the command started, whatever it is doing then.
    # Later signals may come after the create is done: then all of it stays. Never anything in between.
    outcomes = {}
    for delay in (0.5, 0.8, 1.2):
        name = f"lc-abort-{int(delay * 10)}"
        process = project.popen("env", "create", "--sha", sample_build.sha, "--name", name, "--instances", "3")
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr
        left = project.containers(docker_client, name)
        outcomes[delay] = "done" if process.returncode == 0 else "aborted"
        if outcomes[delay] == "done":
            assert len(left) == 3 and "Aborted." not in stderr, f"after SIGTERM at {delay}s: {stderr}"
            assert project.bgci("env", "destroy", name).returncode == 0
        else:
            assert left == [], f"after SIGTERM at {delay}s: {stderr}"
    assert outcomes[0.5] == "aborted", outcomes  # a create takes longer than that: the abort was tested


@pytest.mark.docker
def test_a_jenkins_abort_during_a_scale_up_goes_back_to_the_old_count(
        project: Project, sample_build: SampleBuild, docker_client: docker.DockerClient) -> None:
    # SIGTERM while the new instances are not ready yet: undone like a failed scale-up, and the
    # instance the environment had keeps running (it was never restarted).
    name = "lc-scale"
    ok(project.bgci("env", "create", "--sha", sample_build.sha, "--name", name, "--instances", "1", "--no-preview"))
    [first] = project.containers(docker_client, name)
    process = project.popen("env", "scale", name, "3")
    deadline = time.monotonic() + 60
    while (sum(c.status == "running" for c in project.containers(docker_client, name)) < 3
           and time.monotonic() < deadline):
        time.sleep(0.02)  # the new containers run: bgci waits for them to answer their health check
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "Aborted." in stderr and "Traceback" not in stderr, stderr
    assert f"scaling {name} back to 1 instance(s)" in stderr
    left = project.containers(docker_client, name)
    assert [c.id for c in left] == [first.id] and left[0].status == "running"


def cut_engine_when(project: Project, args: list[str], ready: Callable[[], bool],
                    socket_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `bgci ARGS` through an EngineProxy and cut it (dockerd stopping) once `ready()`."""
    proxy = EngineProxy(socket_path)
    process = project.popen(*args, env={"DOCKER_HOST": proxy.address})
    deadline = time.monotonic() + 60
    while not ready() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    proxy.cut()
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.docker
def test_the_engine_going_away_during_a_test_run_or_a_create_names_what_is_left(
        project: Project, sample_build: SampleBuild, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    # dockerd stops during a Jenkins job: exit 4 and one line saying so. With the engine gone, bgci cannot
    # remove what it started; the line names it and says how (this proxy's engine lives on, so we can).
    def running(**labels: str) -> Callable[[], bool]:
        wanted = [f"io.bgci.app={project.app}", *(f"{k}={v}" for k, v in labels.items())]
        return lambda: bool(docker_client.containers.list(sparse=True, filters={"label": wanted, "status": "running"}))

    result = cut_engine_when(project, ["test", "--sha", sample_build.sha], running(**{"io.bgci.kind": "test-run"}),
                             tmp_path / "test.sock")
    assert_one_line_error("test", result, ENGINE, "Docker daemon not answering")
    left = re.search(r"the test container (\S+) may be left: `docker rm -f \1`", result.stderr)
    assert left, result.stderr
    docker_client.containers.get(left.group(1)).remove(force=True)  # it was left, by that name

    name = "lc-cut"
    result = cut_engine_when(project, ["env", "create", "--sha", sample_build.sha, "--name", name, "--instances",
                                       "2", "--no-preview"], running(**{"io.bgci.env": name}), tmp_path / "env.sock")
    assert_one_line_error("env create", result, ENGINE, "Docker daemon not answering")
    assert f"run `bgci env destroy {name}`" in result.stderr
    ok(project.bgci("env", "destroy", name))
    assert project.containers(docker_client, name) == []


@pytest.mark.docker
def test_two_creates_of_one_name_one_wins(project: Project, sample_build: SampleBuild,
                                          docker_client: docker.DockerClient) -> None:
    # Two Jenkins jobs create the same environment at once: exactly one wins, the other fails cleanly,
    # and the winner's N instances are all there (the loser removed none of them).
    name = "lc-race"
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: project.bgci("env", "create", "--sha", sample_build.sha, "--name", name,
                                                            "--instances", "3", "--no-preview"), range(2)))
        codes = sorted(r.returncode for r in results)
        assert codes == [0, 8], [r.stderr for r in results]
        loser = next(r for r in results if r.returncode)
        assert "exists already" in loser.stderr and "Traceback" not in loser.stderr, loser.stderr
        running = project.containers(docker_client, name)
        assert sorted(c.name for c in running) == [f"{name}.1", f"{name}.2", f"{name}.3"]
        assert all(c.status == "running" for c in running)
        ok(project.bgci("env", "destroy", name))


@pytest.mark.docker
def test_destroy_racing_promote_never_leaves_live_without_instances(
        project: Project, sample_build: SampleBuild, sample_build_b: SampleBuild) -> None:
    # `env destroy` checks "not live", unroutes and destroys under the switch lock promote holds too:
    # whichever runs first, the other sees its result. Live never points at a destroyed environment.
    blue, green = "lc-live", "lc-doomed"
    ok(project.bgci("env", "create", "--sha", sample_build.sha, "--name", blue, "--no-preview"))
    ok(project.bgci("promote", blue))
    outcomes = set()
    for _ in range(3):
        ok(project.bgci("env", "create", "--sha", sample_build_b.sha, "--name", green, "--no-preview"))
        with ThreadPoolExecutor(2) as pool:
            promote = pool.submit(project.bgci, "promote", green, "--wait-lock", "60")
            destroy = pool.submit(project.bgci, "env", "destroy", green)
            promoted, destroyed = promote.result(), destroy.result()
        live, _ = project.state()
        if destroyed.returncode == 0:  # destroy first: the promote found nothing to promote
            assert promoted.returncode != 0 and live == blue, promoted.stderr
            assert project.live()[1] == blue
            outcomes.add("destroy first")
        else:  # promote first: the destroy was refused, green is live and still runs
            assert promoted.returncode == 0 and "is live" in destroyed.stderr, (promoted.stderr, destroyed.stderr)
            assert live == green and project.live() == (200, green, sample_build_b.sha)
            ok(project.bgci("promote", blue))
            ok(project.bgci("env", "destroy", green))
            outcomes.add("promote first")
        assert "Traceback" not in promoted.stderr + destroyed.stderr
    assert outcomes  # which order won each round is up to the scheduler; both are safe


@pytest.mark.docker
def test_two_promotes_take_turns_and_the_state_matches_what_nginx_serves(
        project: Project, sample_build: SampleBuild, sample_build_b: SampleBuild) -> None:
    # Two promote buttons pressed at once: one waits for the other (--wait-lock); the state file's
    # live/previous are the last and the first, and nginx serves the last.
    blue, green = "lc-one", "lc-two"
    ok(project.bgci("env", "create", "--sha", sample_build.sha, "--name", blue, "--no-preview"))
    ok(project.bgci("env", "create", "--sha", sample_build_b.sha, "--name", green, "--no-preview"))
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda env: project.bgci("promote", env, "--wait-lock", "60", "--json"),
                                    [blue, green]))
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        live, previous = project.state()
        assert {live, previous} == {blue, green}
        shas = {blue: sample_build.sha, green: sample_build_b.sha}
        assert project.live() == (200, live, shas[live])


@pytest.mark.docker
def test_a_fresh_agent_tests_runs_and_promotes_an_image_that_is_only_in_the_registry(
        tmp_path: Path, docker_client: docker.DockerClient, session_registry: Registry) -> None:
    # A Jenkins agent that did not build the image has it only in the registry: `bgci test`,
    # `bgci env create` and `bgci promote` pull what they need by the sha's tag.
    app = unique_app_name("fresh")
    repo = make_sample_repo(tmp_path, app, registry=session_registry.address)
    config = repo / "bgci.toml"
    config.write_text(config.read_text().replace('extra_packages = ["memcached"]', "extra_packages = []"))
    sha = commit_all(repo, "no test-only packages: this test is about pulling")
    settings = load_settings(config)
    project: Project | None = None
    try:
        built = builds.build_full(docker_client, settings, builds.Source.open(settings, "HEAD"), build_args={},
                                  push=True, log=lambda _: None)
        assert built.digest.startswith("sha256:")

        def forget_locally() -> None:  # what the agent never had: every tag and the image itself
            remove_app_images(docker_client, app)
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.images.remove(built.image_id, force=True)
            with pytest.raises(docker.errors.ImageNotFound):
                docker_client.images.get(built.image_id)

        forget_locally()
        (tmp_path / "agent").mkdir()
        project = Project(tmp_path / "agent", SampleBuild(repo, settings, sha, built))
        tested = ok(project.bgci("test", "--sha", sha, "--junit-dir", str(tmp_path / "junit")))
        assert built.digest in (tmp_path / "junit" / f"unit-{sha}.xml").read_text()
        assert "Traceback" not in tested.stderr

        forget_locally()
        project.router.start()
        created = json.loads(ok(project.bgci("env", "create", "--sha", sha, "--name", "lc-fresh", "--instances", "1",
                                             "--json")).stdout)
        assert created["digest"] == built.digest  # the registry's digest: exactly what was pushed
        ok(project.bgci("promote", "lc-fresh"))
        assert project.live() == (200, "lc-fresh", sha)
    finally:
        if project is not None:
            project.router.stop()
        remove_app_containers(docker_client, app)
        remove_app_images(docker_client, app)


@pytest.mark.docker
def test_a_jenkins_abort_during_a_full_build_leaves_no_container_and_no_tag(
        tmp_path: Path, docker_client: docker.DockerClient) -> None:
    # The engine runs `docker build` for bgci over one HTTP request: when bgci goes away, the engine
    # cancels the build and (forcerm) removes its intermediate containers. No tag is made before
    # the build succeeded, so none can point at a half-built image.
    app = unique_app_name("abortbuild")
    repo = make_sample_repo(tmp_path, app)
    # The listing itself (no inspect per container: the engine is removing some of them meanwhile).
    before = {c["Id"] for c in docker_client.api.containers(all=True)}
    process = subprocess.Popen(["bgci", "--config", str(repo / "bgci.toml"), "build", "full", "--no-cache"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # --no-cache: the apt-get step takes seconds, time enough to abort in it
        seen.append(line)
        if line.startswith("Step ") and " : RUN " in line:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=60)
    assert process.returncode != 0 and "Traceback" not in rest, "".join(seen) + rest
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = [c for c in docker_client.api.containers(all=True)
                if c["Id"] not in before and not any(k.startswith("io.bgci.") for k in (c.get("Labels") or {}))]
        if not left:
            break
        time.sleep(0.5)  # the engine removes the build's containers as it unwinds
    assert left == [], [c["Names"] for c in left]
    assert [t for image in docker_client.images.list() for t in image.tags if app in t] == []
