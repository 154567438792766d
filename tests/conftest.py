"""Fixtures over the real parts: the Docker engine, the local base image, a loopback registry.

Integration tests do not skip when a part is missing: CI installs everything
(scripts/setup.sh), so a missing part is a failure to report, not to hide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from bgci.config import Settings, load_settings
from tests.emulators.marathon import MarathonEmulator, reference_dir
from tests.support import BASE_IMAGE, Registry, make_sample_repo, unique_app_name


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    from bgci.dockerhost import connect

    client = connect()
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {BASE_IMAGE} is missing: run scripts/setup.sh")
    return client


@pytest.fixture(scope="session")
def session_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    registry = Registry(tmp_path_factory.mktemp("registry")).start()
    yield registry
    registry.stop()


def remove_app_images(client: docker.DockerClient, app: str) -> None:
    """Remove every image tag of one (test-unique) app name."""
    for image in client.images.list():
        for tag in image.tags:
            repository = tag.rsplit(":", 1)[0].rsplit("/", 1)[-1]
            if repository in (app, f"{app}-from-scratch", f"{app}-test"):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag, force=True)


def remove_app_containers(client: docker.DockerClient, app: str) -> None:
    """Remove every container of one (test-unique) app name, e.g. what an interrupted run left."""
    for container in client.containers.list(all=True, filters={"label": f"io.bgci.app={app}"}):
        container.remove(force=True, v=True)


def push_to_registry(client: docker.DockerClient, settings: Settings, sha: str, registry: str) -> Settings:
    """`settings` with registry.url = `registry`, where the local image of `sha` is tagged and pushed (what
    `bgci build` does when a registry is set); for schedulers whose hosts pull by reference (Marathon)."""
    from bgci.registry import push_image

    pushed = dataclasses.replace(settings, registry=dataclasses.replace(settings.registry, url=registry))
    client.images.get(f"{settings.image_repository}:{sha}").tag(pushed.image_repository, sha)
    push_image(client, pushed.image_repository, sha, credentials=pushed.registry_credentials,
               retry_seconds=pushed.registry.retry_seconds, log=lambda _: None)
    return pushed


class SampleBuild:
    """The sample app in a git repo of its own, with a full build of its first commit."""

    def __init__(self, repo: Path, settings: Settings, sha: str, result: object) -> None:
        self.repo, self.settings, self.sha, self.result = repo, settings, sha, result

    @property
    def app(self) -> str:
        return self.settings.app


@pytest.fixture(scope="session")
def sample_build(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[SampleBuild]:
    """One full build of the sample app per test session, shared by every suite that needs an image."""
    from bgci import build as builds

    app = unique_app_name("webapp")
    repo = make_sample_repo(tmp_path_factory.mktemp("sample"), app)
    settings = load_settings(repo / "bgci.toml")
    source = builds.Source.open(settings, "HEAD")
    result = builds.build_full(docker_client, settings, source, build_args={}, push=False, log=lambda _: None)
    yield SampleBuild(repo, settings, source.sha, result)
    remove_app_images(docker_client, app)


@pytest.fixture(scope="session")
def sample_build_b(sample_build: SampleBuild, tmp_path_factory: pytest.TempPathFactory,
                   docker_client: docker.DockerClient) -> SampleBuild:
    """A second commit of the sample app (README only: a code delta on sample_build), built in a clone.

    The clone keeps sample_build.repo's HEAD where other suites expect it; the image has the same
    app name, so sample_build's cleanup removes it too.
    """
    import subprocess

    from bgci import build as builds
    from tests.support import commit_all, git

    clone = tmp_path_factory.mktemp("sample-b") / "web-app"
    subprocess.run(["git", "clone", "-q", str(sample_build.repo), str(clone)], check=True)
    git(clone, "config", "user.email", "ci@bgci.test")
    git(clone, "config", "user.name", "bgci tests")
    (clone / "README.md").write_text((clone / "README.md").read_text() + "\nA second commit.\n")
    commit_all(clone, "second commit")
    settings = load_settings(clone / "bgci.toml")
    source = builds.Source.open(settings, "HEAD")
    result = builds.build_auto(docker_client, settings, source, build_args={}, push=False, log=lambda _: None)
    return SampleBuild(clone, settings, source.sha, result)


def require_marathon_reference() -> Path:
    """Marathon's own schema and example answers (../shared/reference/marathon, or BGCI_MARATHON_REFERENCE).

    Missing, the test asking skips with one reason; under CI=true that is a failure instead, since
    CI lays shared/ beside the clone.
    """
    path = reference_dir()
    if not (path / "AppDefinition.schema.json").is_file():
        message = (f"Marathon reference data not found at {path}: put shared/ beside the repository "
                   "or set BGCI_MARATHON_REFERENCE")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def marathon_reference() -> Path:
    """The one fixture for the Marathon reference data (see require_marathon_reference)."""
    return require_marathon_reference()


@pytest.fixture(scope="module")
def marathon(docker_client: docker.DockerClient, marathon_reference: Path) -> Iterator[MarathonEmulator]:
    """A Marathon emulator per test module, with quick health checks and SSE heartbeats."""
    emulator = MarathonEmulator(docker_client, health_interval=0.2, sse_heartbeat=0.5)
    emulator.start()
    yield emulator
    emulator.stop()


def empty_marathon(marathon: MarathonEmulator, timeout: float = 30) -> list[str]:
    """Reset its faults, force-delete every app and wait until their containers are gone; the app ids deleted."""
    marathon.reset_faults()
    session = requests.Session()
    apps = [a["id"] for a in session.get(marathon.url + "/v2/apps").json()["apps"]]
    for app_id in apps:
        session.delete(marathon.url + "/v2/apps" + app_id, params={"force": "true"})
    deadline = time.monotonic() + timeout
    while marathon.container_ids() or session.get(marathon.url + "/v2/deployments").json():
        assert time.monotonic() < deadline, "emulator cleanup did not finish"
        time.sleep(0.1)
    return apps


@pytest.fixture(scope="session")
def tested_builds(docker_client: docker.DockerClient, sample_build: SampleBuild,
                  sample_build_b: SampleBuild) -> tuple[SampleBuild, SampleBuild]:
    """Both sample builds with their `bgci test` pass recorded, so the test gate lets them be promoted.

    Recorded as `bgci test` does after a pass (bgci.gate.record_pass); running the suite itself is
    tests/test_testing.py's business.
    """
    from bgci import gate
    from bgci.images import resolve_image

    for build in (sample_build, sample_build_b):
        image = resolve_image(docker_client, build.settings, build.result.reference, lambda _: None)
        gate.record_pass(docker_client, build.settings, image, lambda _: None)
    return sample_build, sample_build_b
