"""Every command group against the faults a new user meets in the first week, through the console script.

Each fault must end in one `Error: ...` line naming what to check, the stage's exit code, no traceback,
and nothing left behind (no container, no image tag of the app).

- "Engine stopped": DOCKER_HOST points at a socket file nothing listens on. That is what a killed
  dockerd leaves (its socket file stays, connections are refused), and what bgci sees of a stopped one.
- "Registry down": registry.url names a loopback port nothing listens on, as when the registry is
  restarted; bgci retries for registry.retry_seconds (1 s here), then gives up.
- "Bad registry URL": BGCI_REGISTRY with a scheme and a trailing slash, the commonest typo.
- "Engine gone mid-command": DOCKER_HOST is an EngineProxy (tests/support.py) that is cut while the
  command streams from the engine: open connections closed under bgci, the socket file gone, as when
  dockerd stops during a Jenkins job.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from tests.conftest import remove_app_images
from tests.support import EngineProxy, free_port, git, make_sample_repo, unique_app_name

# Exit codes (bgci.errors): 2 config, 4 Docker engine, 6 registry.
CONFIG, ENGINE, REGISTRY = 2, 4, 6


def run(repo: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BGCI_")}
    return subprocess.run(["bgci", *args], cwd=repo, capture_output=True, text=True, timeout=300,
                          env={**clean, **env})


def run_all(repo: Path, commands: list[list[str]], env: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda args: run(repo, args, env), commands))
    return {" ".join(args): result for args, result in zip(commands, results, strict=True)}


def assert_one_line_error(command: str, result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert "Traceback" not in result.stderr, f"bgci {command}:\n{result.stderr}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, f"bgci {command}:\n{result.stderr}"
    assert result.returncode == code, f"bgci {command}: exit {result.returncode}: {errors[0]}"
    assert fragment in errors[0], f"bgci {command}: {errors[0]}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Path]:
    app = unique_app_name("faults")
    repo = make_sample_repo(tmp_path_factory.mktemp("faults"), app,
                            extra_toml="")
    config = repo / "bgci.toml"
    config.write_text(config.read_text().replace("[registry]\n", "[registry]\nretry_seconds = 1\n", 1))
    git(repo, "commit", "-qam", "short registry retries")
    yield repo
    assert_nothing_left(docker_client, app)


def assert_nothing_left(client: docker.DockerClient, app: str) -> None:
    assert client.containers.list(all=True, filters={"label": f"io.bgci.app={app}"}) == []
    tags = [t for image in client.images.list() for t in image.tags if app in t]
    assert tags == []


def app_of(repo: Path) -> str:
    return next(line.split('"')[1] for line in (repo / "bgci.toml").read_text().splitlines()
                if line.startswith("app = "))


def dead_socket(directory: Path) -> str:
    """A unix socket file with no listener: connections to it are refused, as after dockerd was killed."""
    path = directory / "docker.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    return f"unix://{path}"


@pytest.mark.docker
def test_every_command_group_with_the_engine_stopped(repo: Path, tmp_path: Path,
                                                     docker_client: docker.DockerClient) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    commands = [["plan"], ["build", "auto"], ["build", "full"], ["build", "delta"],
                ["test", "--sha", sha], ["smoke", "--env", "e1"],
                ["env", "create", "--sha", sha], ["env", "list"], ["env", "scale", "e1", "2"], ["env", "destroy", "e1"],
                ["promote", "e1"], ["rollback"], ["status"]]
    results = run_all(repo, commands, {"DOCKER_HOST": dead_socket(tmp_path)})
    for command, result in results.items():
        assert_one_line_error(command, result, ENGINE, "Docker daemon not answering")
        assert "start dockerd" in result.stderr
    assert_nothing_left(docker_client, app_of(repo))


@pytest.mark.docker
def test_every_command_that_pulls_or_pushes_with_the_registry_down(repo: Path,
                                                                   docker_client: docker.DockerClient) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    down = f"127.0.0.1:{free_port()}"
    commands = [["plan"], ["build", "auto"], ["test", "--sha", sha], ["env", "create", "--sha", sha, "--no-preview"]]
    for command, result in run_all(repo, commands, {"BGCI_REGISTRY": down}).items():
        assert_one_line_error(command, result, REGISTRY, down)
        assert "check that the registry answers" in result.stderr
    assert_nothing_left(docker_client, app_of(repo))

    # A build that cannot push fails the same way. Its image is sound, so its local tags stay for a
    # rerun to push; no container is left, and nothing claims it reached the registry.
    result = run(repo, ["build", "full", "--push"], {"BGCI_REGISTRY": down})
    assert_one_line_error("build full --push", result, REGISTRY, down)
    app = app_of(repo)
    assert docker_client.containers.list(all=True, filters={"label": f"io.bgci.app={app}"}) == []
    remove_app_images(docker_client, app)


@pytest.mark.docker
def test_a_registry_url_with_a_scheme_is_refused_before_any_work(repo: Path,
                                                                 docker_client: docker.DockerClient) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    commands = [["plan"], ["build", "auto"], ["test", "--sha", sha], ["smoke", "--env", "e1"],
                ["env", "create", "--sha", sha], ["env", "list"], ["promote", "e1"], ["status"]]
    results = run_all(repo, commands, {"BGCI_REGISTRY": "http://127.0.0.1:5000/"})
    for command, result in results.items():
        assert_one_line_error(command, result, CONFIG, "problem(s)")
        # The problem names the variable it came from and the form wanted.
        assert "registry.url (from BGCI_REGISTRY): 'http://127.0.0.1:5000/' is not allowed" in result.stderr
        assert "host[:port][/path] with no scheme" in result.stderr
    assert_nothing_left(docker_client, app_of(repo))


@pytest.mark.docker
def test_the_engine_going_away_during_a_full_build(repo: Path, tmp_path: Path) -> None:
    proxy = EngineProxy(tmp_path / "engine.sock")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BGCI_")}
    process = subprocess.Popen(["bgci", "build", "full", "--no-cache"], cwd=repo, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**clean, "DOCKER_HOST": proxy.address})
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # the build's log, streamed from the engine
        seen.append(line)
        if "Running in" in line:  # a RUN step is under way
            break
    proxy.cut()
    stderr = "".join(seen) + process.stderr.read()
    process.wait(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    # docker-py reads the build stream from urllib3 itself: a broken stream is the engine gone, exit 4.
    assert_one_line_error("build full", result, ENGINE, "full build: Docker daemon not answering")
    # No tag: the module's teardown checks that no image of the app is tagged and no container is left.
