"""Full and delta builds of the sample app on the real Docker engine, pushed to a loopback registry.

One repository per module: a full build of its first commit, then code-only and
deps deltas on later commits, each checked file by file inside the image.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
import requests

from bgci import build as builds
from bgci.build import KEPT_CONFIG, BuildResult, Source
from bgci.config import Settings, load_settings
from bgci.errors import BuildFailed
from tests.conftest import remove_app_images
from tests.support import Registry, commit_all, image_tree, make_sample_repo, read_file_in_image, unique_app_name

pytestmark = pytest.mark.docker
MODULE_V1 = "local/lib/perl5/Acme/BgciSample/V1.pm"
MODULE_V2 = "local/lib/perl5/Acme/BgciSample/V2.pm"


class Project:
    """A sample-app repository with helpers to commit and build."""

    def __init__(self, repo: Path, client: docker.DockerClient) -> None:
        self.repo, self.client = repo, client
        self.logs: list[str] = []

    @property
    def settings(self) -> Settings:
        return load_settings(self.repo / "bgci.toml")

    def build(self, how: Callable[..., BuildResult] = builds.build_auto, settings: Settings | None = None,
              **kwargs: object) -> BuildResult:
        settings = settings or self.settings
        source = Source.open(settings, "HEAD")
        if how is builds.build_delta:
            kwargs["plan"] = builds.plan_build(self.client, settings, source, self.logs.append)
        else:
            kwargs.setdefault("build_args", {})
        return how(self.client, settings, source, push=bool(settings.registry.url), log=self.logs.append,
                   **kwargs)

    def plan_kind(self) -> str:
        source = Source.open(self.settings, "HEAD")
        return builds.plan_build(self.client, self.settings, source, self.logs.append).kind


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
            session_registry: Registry) -> Project:
    app = unique_app_name("buildtest")
    repo = make_sample_repo(tmp_path_factory.mktemp("build"), app, registry=session_registry.address)
    yield Project(repo, docker_client)
    remove_app_images(docker_client, app)


@pytest.fixture(scope="module")
def full(project: Project) -> BuildResult:
    return project.build(builds.build_full)


def config_of(client: docker.DockerClient, reference: str) -> dict[str, object]:
    return client.images.get(reference).attrs["Config"]


def test_full_build_is_tagged_labelled_and_pushed(project: Project, full: BuildResult,
                                                  session_registry: Registry) -> None:
    settings, sha = project.settings, full.sha
    image = project.client.images.get(full.image_id)
    # every commit has one tag name whichever path built it, plus the from-scratch names
    assert set(full.tags) <= set(image.tags)
    assert f"{settings.image_repository}:{sha}" in image.tags
    assert f"{settings.from_scratch_repository}:latest" in image.tags
    labels = image.attrs["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == sha
    assert labels["io.bgci.kind"] == "full"
    # the code came from git, with the sha written beside it
    assert read_file_in_image(project.client, full.image_id, "/app/REVISION") == sha + "\n"
    assert image.attrs["Config"]["Cmd"] == ["carton", "exec", "--", "perl", "bin/app.pl"]
    assert "8000/tcp" in image.attrs["Config"]["ExposedPorts"]
    # the registry serves the manifest under the sha tag, with the digest bgci reported
    answer = requests.get(f"http://{session_registry.address}/v2/{settings.app}/manifests/{sha}",
                          headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Docker-Content-Digest"] == full.digest


def test_code_only_delta_lays_changes_and_keeps_config(project: Project, full: BuildResult) -> None:
    (project.repo / "lib" / "WebApp.pm").write_text(
        (project.repo / "lib" / "WebApp.pm").read_text() + "\n# a code change\n")
    (project.repo / "docs").mkdir()
    (project.repo / "docs" / "added.txt").write_text("new file\n")
    (project.repo / "README.md").unlink()
    sha = commit_all(project.repo, "code only")
    assert project.plan_kind() == "code"

    delta = project.build()
    assert delta.kind == "code"
    assert delta.reference == f"{project.settings.image_repository}:{sha}"
    tree = image_tree(project.client, delta.image_id, "/app")
    full_tree = image_tree(project.client, full.image_id, "/app")
    assert "README.md" not in tree  # deleted since the base commit: removed
    assert "docs/added.txt" in tree
    assert tree["lib/WebApp.pm"] != full_tree["lib/WebApp.pm"]
    assert read_file_in_image(project.client, delta.image_id, "/app/REVISION") == sha + "\n"
    assert tree[MODULE_V1] == full_tree[MODULE_V1]  # dependencies untouched by a code change
    # the base image's config survives the commit (docker commit used to lose CMD/ENV/EXPOSE)
    base_config, delta_config = config_of(project.client, full.image_id), config_of(project.client, delta.image_id)
    for key in KEPT_CONFIG:
        assert delta_config.get(key) == base_config.get(key), key
    assert delta_config["Labels"]["org.opencontainers.image.revision"] == sha
    assert delta_config["Labels"]["io.bgci.base-revision"] == full.sha
    # one layer on the from-scratch image, never a chain
    base_layers = project.client.images.get(full.image_id).attrs["RootFS"]["Layers"]
    delta_layers = project.client.images.get(delta.image_id).attrs["RootFS"]["Layers"]
    assert delta_layers[:-1] == base_layers and len(delta_layers) == len(base_layers) + 1
    assert delta.digest.startswith("sha256:")  # pushed


def test_code_delta_equals_a_full_build_of_the_same_commit(project: Project, full: BuildResult) -> None:
    """The rule that makes deltas safe: same app directory and config as a from-scratch build."""
    (project.repo / "lib" / "Extra.pm").write_text("package Extra; 1;\n")
    commit_all(project.repo, "another code change")
    delta = project.build()
    assert delta.kind == "code"
    delta_tree = image_tree(project.client, delta.image_id, "/app")
    # A from-scratch build of the same commit, kept local so it does not replace :latest in the registry.
    local = dataclasses.replace(project.settings, registry=dataclasses.replace(project.settings.registry, url=""))
    scratch = project.build(builds.build_full, settings=local)
    scratch_tree = image_tree(project.client, scratch.image_id, "/app")
    volatile = {p for p in scratch_tree if p.endswith(("perllocal.pod", "install.json", ".packlist"))}
    assert {p: v for p, v in delta_tree.items() if p not in volatile and v[0] != "dir"} == \
           {p: v for p, v in scratch_tree.items() if p not in volatile and v[0] != "dir"}
    assert {p for p in delta_tree if p in volatile} == volatile  # same files, only install times differ
    delta_config = config_of(project.client, delta.image_id)
    scratch_config = config_of(project.client, scratch.image_id)
    for key in KEPT_CONFIG:
        assert delta_config.get(key) == scratch_config.get(key), key


def test_deps_delta_reinstalls_and_old_modules_are_gone(project: Project, full: BuildResult) -> None:
    subprocess.run(["sh", "tools/bump-dependency.sh", "0.02"], cwd=project.repo, check=True)
    commit_all(project.repo, "bump Acme::BgciSample to 0.02")
    assert project.plan_kind() == "deps"
    delta = project.build()
    assert delta.kind == "deps"
    tree = image_tree(project.client, delta.image_id, "/app")
    assert MODULE_V2 in tree  # the install command ran
    assert MODULE_V1 not in tree  # the old dependency directory was removed first
    assert any("Acme-BgciSample-0.02" in line for line in project.logs)  # its output was streamed


def test_failing_install_leaves_no_container_and_no_tag(project: Project, full: BuildResult) -> None:
    (project.repo / "cpanfile").write_text((project.repo / "cpanfile").read_text() + "\n# touch deps\n")
    sha = commit_all(project.repo, "deps change with a broken installer")
    settings = project.settings
    broken = dataclasses.replace(settings, build=dataclasses.replace(
        settings.build, install_command="echo installing; echo 'cannot reach the mirror' >&2; exit 3"))
    before = {c.id for c in project.client.containers.list(all=True)}
    with pytest.raises(BuildFailed) as caught:
        project.build(settings=broken)
    assert "exited with 3" in str(caught.value)
    assert "cannot reach the mirror" in caught.value.log_tail  # the last log lines are shown
    after = {c.id for c in project.client.containers.list(all=True)}
    assert not {c for c in after - before
                if project.client.containers.get(c).name.startswith(f"bgci-delta-{sha[:12]}")}
    with pytest.raises(docker.errors.ImageNotFound):  # no tag points at a broken build
        project.client.images.get(f"{settings.image_repository}:{sha}")


def test_full_build_failure_shows_last_log_lines(project: Project) -> None:
    dockerfile = project.repo / "Dockerfile"
    original = dockerfile.read_text()
    dockerfile.write_text(original + "\nRUN echo 'about to fail' && false\n")
    sha = commit_all(project.repo, "broken Dockerfile")
    try:
        assert project.plan_kind() == "full"
        with pytest.raises(BuildFailed) as caught:
            project.build(builds.build_full)
        assert "returned a non-zero code: 1" in str(caught.value)
        assert any("about to fail" in line for line in caught.value.log_tail)
        with pytest.raises(docker.errors.ImageNotFound):
            project.client.images.get(f"{project.settings.image_repository}:{sha}")
    finally:
        dockerfile.write_text(original)
        commit_all(project.repo, "fix Dockerfile")
