"""`bgci sha | plan | build` end to end through the installed console script.

Bad input must give one clear line on stderr (`Error: ...`, no traceback) and a
non-zero exit code that says which stage failed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SampleBuild
from tests.support import BASE_IMAGE, Registry, commit_all, git


def bgci(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bgci", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def assert_clear_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr  # progress may come before it; the error is one line
    assert fragment in errors[0], errors[0]


def tiny_repo(tmp_path: Path, dockerfile: str | None, config: str = 'app = "tiny"\n') -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "t@t")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "bgci.toml").write_text(config)
    if dockerfile is not None:
        (tmp_path / "Dockerfile").write_text(dockerfile)
    commit_all(tmp_path, "tiny")
    return tmp_path


def test_no_config_file(tmp_path: Path) -> None:
    assert_clear_error(bgci("sha", cwd=tmp_path), 2, "no bgci.toml in")


def test_invalid_config_lists_problems_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bgci.toml").write_text('app = "x"\n[deploy]\ninstances = -1\n')
    result = bgci("plan", cwd=tmp_path)
    assert_clear_error(result, 2, "1 problem(s)")
    assert "bgci.toml: deploy.instances: -1 is below the minimum 1" in result.stderr


def test_not_a_git_repository(tmp_path: Path) -> None:
    (tmp_path / "bgci.toml").write_text('app = "x"\n')
    assert_clear_error(bgci("sha", cwd=tmp_path), 3, "is not inside a git repository")


def test_sha_unknown_rev_and_dirty_tree(tmp_path: Path) -> None:
    repo = tiny_repo(tmp_path, None)
    result = bgci("sha", cwd=repo)
    assert result.returncode == 0 and result.stdout.strip() == git(repo, "rev-parse", "HEAD")
    assert_clear_error(bgci("sha", "--rev", "no-such-branch", cwd=repo), 3, "unknown revision 'no-such-branch'")
    (repo / "bgci.toml").write_text('app = "tiny"\n# edited\n')
    assert_clear_error(bgci("sha", cwd=repo), 3, "uncommitted changes (bgci.toml)")
    assert bgci("sha", "--allow-dirty", cwd=repo).returncode == 0


def test_docker_daemon_not_answering(tmp_path: Path) -> None:
    repo = tiny_repo(tmp_path, f"FROM {BASE_IMAGE}\n")
    result = bgci("plan", cwd=repo, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert_clear_error(result, 4, "Docker daemon not answering")
    assert "start dockerd" in result.stderr


@pytest.mark.docker
def test_dockerfile_missing(tmp_path: Path) -> None:
    repo = tiny_repo(tmp_path, None, 'app = "tiny"\n[build]\ndockerfile = "docker/Dockerfile"\n')
    assert_clear_error(bgci("build", "full", cwd=repo), 2, "Dockerfile missing: docker/Dockerfile is not in commit")


@pytest.mark.docker
def test_build_failure_shows_its_last_log_lines(tmp_path: Path) -> None:
    repo = tiny_repo(tmp_path, f"FROM {BASE_IMAGE}\nRUN echo 'step output before failing' && exit 7\n",
                     'app = "tiny-broken"\n')
    result = bgci("build", "full", cwd=repo)
    assert_clear_error(result, 5, "docker build failed")
    tail = result.stderr.split("last log lines:", 1)[1]
    assert "step output before failing" in tail


@pytest.mark.docker
def test_registry_refusing_credentials(tmp_path: Path, sample_build: SampleBuild) -> None:
    registry = Registry(tmp_path / "registry", htpasswd=("ci", "right")).start()
    try:
        result = bgci("build", "full", "--push", cwd=sample_build.repo, env={
            "BGCI_REGISTRY": registry.address, "BGCI_REGISTRY_USERNAME": "ci",
            "BGCI_REGISTRY_PASSWORD": "definitely-wrong"})
    finally:
        registry.stop()
    assert_clear_error(result, 6, "refused the credentials")
    assert "definitely-wrong" not in result.stderr + result.stdout  # secrets never reach output


@pytest.mark.docker
def test_plan_and_auto_build_from_the_cli(sample_build: SampleBuild, tmp_path: Path) -> None:
    repo = tmp_path / "web-app"  # a clone: the shared sample repo's HEAD stays where other suites expect it
    subprocess.run(["git", "clone", "-q", str(sample_build.repo), str(repo)], check=True)
    git(repo, "config", "user.email", "t@t")
    git(repo, "config", "user.name", "t")
    (repo / "lib" / "CliChange.pm").write_text("package CliChange; 1;\n")
    sha = commit_all(repo, "cli change")
    plan = bgci("plan", "--json", cwd=repo)
    assert plan.returncode == 0, plan.stderr
    decided = json.loads(plan.stdout)
    assert decided["kind"] == "code" and decided["sha"] == sha
    assert decided["code_changes"] == ["lib/CliChange.pm"]
    assert decided["base"]["sha"] == sample_build.sha

    built = bgci("build", "auto", cwd=repo)
    assert built.returncode == 0, built.stderr
    final = built.stdout.strip().splitlines()[-1]
    # the final line names the image and its digest
    assert final.startswith(f"built code: {sample_build.app}:{sha} sha256:")
    assert "plan: code" in built.stderr  # progress is visible
