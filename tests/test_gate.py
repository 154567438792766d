"""The test gate: `bgci promote` only switches to an image whose digest passed `bgci test`.

Through the console script, with real nginx and the sample app's session builds on the local
engine. The registry path (the pass pushed as a tag, checked by another agent) is exercised by
tests/test_lifecycle.py's fresh-agent test.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from bgci import gate
from bgci.errors import EnvironmentNotFound
from bgci.schedulers.local import LocalScheduler
from bgci.state import load_state
from tests.conftest import SampleBuild
from tests.test_lifecycle import Project, ok


def untag_passes(client: docker.DockerClient, *builds: SampleBuild) -> None:
    for build in builds:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(f"{build.settings.image_repository}:{gate.tested_tag(build.sha)}")


@pytest.fixture
def project(tmp_path: Path, docker_client: docker.DockerClient, sample_build: SampleBuild,
            sample_build_b: SampleBuild) -> Iterator[Project]:
    """Blue (sample_build) and green (sample_build_b) running, blue live; neither image has a recorded pass."""
    project = Project(tmp_path, sample_build)
    project.router.start()
    untag_passes(docker_client, sample_build, sample_build_b)
    try:
        for name, build in (("gate-blue", sample_build), ("gate-green", sample_build_b)):
            ok(project.bgci("env", "create", "--sha", build.sha, "--name", name, "--instances", "1"))
        ok(project.bgci("promote", "gate-blue", "--skip-test-gate"))
        yield project
    finally:
        project.router.stop()
        scheduler = LocalScheduler(docker_client, project.app)
        for name in ("gate-blue", "gate-green"):
            with contextlib.suppress(EnvironmentNotFound):
                scheduler.destroy(name)  # the live one too: the test's router is gone


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("Error: ")]


@pytest.mark.docker
def test_an_untested_image_is_refused_and_live_stays(project: Project, sample_build: SampleBuild,
                                                     sample_build_b: SampleBuild) -> None:
    refused = project.bgci("promote", "gate-green")
    (line,) = error_lines(refused)
    assert refused.returncode == 7
    assert f"no `bgci test` passed for {sample_build_b.sha[:12]}" in line
    assert f"run `bgci test --sha {sample_build_b.sha}`" in line  # which command would make a record
    assert project.live() == (200, "gate-blue", sample_build.sha)
    assert project.state()[0] == "gate-blue"


@pytest.mark.docker
def test_a_pass_of_the_same_digest_opens_the_gate(project: Project, sample_build_b: SampleBuild,
                                                  docker_client: docker.DockerClient) -> None:
    # `bgci test` runs the suite in the image and records the pass against its digest.
    tested = ok(project.bgci("test", "--sha", sample_build_b.sha, "--junit-dir", str(project.config.parent / "j")))
    assert "recorded the pass" in tested.stderr
    ok(project.bgci("promote", "gate-green"))
    assert project.live() == (200, "gate-green", sample_build_b.sha)


@pytest.mark.docker
def test_a_pass_of_another_image_with_the_same_sha_does_not_count(
        project: Project, sample_build: SampleBuild, sample_build_b: SampleBuild,
        docker_client: docker.DockerClient) -> None:
    # A rebuild of a sha, or a hand-made tag: the record names a digest, and green runs another one.
    other = docker_client.images.get(sample_build.result.reference)
    other.tag(sample_build_b.settings.image_repository, gate.tested_tag(sample_build_b.sha))
    refused = project.bgci("promote", "gate-green")
    (line,) = error_lines(refused)
    assert refused.returncode == 7 and "a different image" in line
    assert project.state()[0] == "gate-blue"


@pytest.mark.docker
def test_the_override_is_explicit_and_recorded(project: Project) -> None:
    ok(project.bgci("promote", "gate-green", "--skip-test-gate"))
    history = load_state(project.settings.path("state.json")).history
    assert history[-1].env == "gate-green" and "test gate skipped" in history[-1].reason


@pytest.mark.docker
def test_an_app_can_turn_the_gate_off(project: Project, sample_build_b: SampleBuild) -> None:
    config = project.config
    config.write_text(config.read_text().replace("[deploy]\n", "[deploy]\nrequire_tested = false\n", 1))
    ok(project.bgci("promote", "gate-green"))
    assert project.live() == (200, "gate-green", sample_build_b.sha)
    assert load_state(project.settings.path("state.json")).history[-1].reason == ""
