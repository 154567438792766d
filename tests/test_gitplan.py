"""Plan decisions: full, deps or code from the git diff, base age and layer budget.

`decide` is pure; the git parts run against real repositories.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bgci import gitplan
from bgci.config import BuildSettings
from bgci.errors import DirtyWorkTree, GitError
from bgci.gitplan import BaseImage, Change
from tests.support import commit_all, git

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BUILD = BuildSettings(infrastructure_paths=["Dockerfile", "docker/"],
                      dependency_paths=["cpanfile", "cpanfile.snapshot", "vendor/"], layer_budget=50)


def base(sha: str = "a" * 40, age_hours: float = 1, layers: int = 10) -> BaseImage:
    return BaseImage("app-from-scratch:latest", "sha256:abc", sha, NOW - timedelta(hours=age_hours), layers)


def test_no_base_image_means_full() -> None:
    plan = gitplan.decide("b" * 40, None, None, BUILD, "", NOW)
    assert plan.kind == "full"
    assert plan.reasons == ["no from-scratch image exists yet"]


@pytest.mark.parametrize(("changes", "kind", "reason"), [
    ([Change("M", "lib/WebApp.pm")], "code", "code changed: lib/WebApp.pm"),
    ([Change("D", "t/old.t"), Change("A", "t/new.t")], "code", "code changed: t/old.t, t/new.t"),
    ([Change("M", "cpanfile"), Change("M", "lib/WebApp.pm")], "deps", "dependencies changed: cpanfile"),
    ([Change("A", "vendor/cache/x.tar.gz")], "deps", "dependencies changed: vendor/cache/x.tar.gz"),
    ([Change("M", "Dockerfile"), Change("M", "cpanfile")], "full", "infrastructure changed: Dockerfile"),
    ([Change("A", "docker/nginx.conf")], "full", "infrastructure changed: docker/nginx.conf"),
    ([], "code", "no change since the from-scratch commit"),
])
def test_kind_follows_the_highest_layer_changed(changes: list[Change], kind: str, reason: str) -> None:
    plan = gitplan.decide("b" * 40, base(), changes, BUILD, "", NOW)
    assert plan.kind == kind
    assert reason in plan.reasons


def test_too_old_base_means_full_even_for_code() -> None:
    plan = gitplan.decide("b" * 40, base(age_hours=30), [Change("M", "lib/x.pm")], BUILD, "", NOW)
    assert plan.kind == "full"
    assert any("30.0 h old (max_age_hours = 24)" in r for r in plan.reasons)


def test_layer_budget_means_full() -> None:
    plan = gitplan.decide("b" * 40, base(layers=50), [Change("M", "lib/x.pm")], BUILD, "", NOW)
    assert plan.kind == "full"
    assert "a delta would make 51 layers (layer_budget = 50)" in plan.reasons
    assert gitplan.decide("b" * 40, base(layers=49), [], BUILD, "", NOW).kind == "code"


def test_base_commit_unknown_to_the_repository_means_full() -> None:
    plan = gitplan.decide("b" * 40, base(), None, BUILD, "", NOW)
    assert plan.kind == "full"
    assert any("is not in this repository" in r for r in plan.reasons)


def test_paths_are_relative_to_the_app_directory_in_a_monorepo() -> None:
    changes = [Change("M", "apps/web/cpanfile"), Change("M", "other/Dockerfile")]
    plan = gitplan.decide("b" * 40, base(), changes, BUILD, "apps/web", NOW)
    assert plan.kind == "deps"  # other/Dockerfile is outside the app: not its infrastructure
    assert plan.dependency_changes == ["cpanfile"]


# -- against a real repository -----------------------------------------------------------------------
@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "t@t")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "old.txt").write_text("old")
    commit_all(tmp_path, "one")
    return tmp_path


def test_changed_files_splits_renames_into_delete_and_add(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "mv", "old.txt", "new.txt")
    (repo / "a.txt").write_text("changed")
    second = commit_all(repo, "two")
    changes = gitplan.changed_files(gitplan.open_repo(repo), first, second)
    assert sorted((c.status, c.path) for c in changes) == [("A", "new.txt"), ("D", "old.txt"), ("M", "a.txt")]


def test_resolve_sha_and_its_errors(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    handle = gitplan.open_repo(repo)
    assert gitplan.resolve_sha(handle, "HEAD") == git(repo, "rev-parse", "HEAD")
    assert len(gitplan.resolve_sha(handle, "main")) == 40
    with pytest.raises(GitError, match="unknown revision 'nope'"):
        gitplan.resolve_sha(handle, "nope")
    with pytest.raises(GitError, match="is not inside a git repository"):
        gitplan.open_repo(tmp_path_factory.mktemp("plain"))


def test_dirty_tree_is_refused_untracked_files_are_not(repo: Path) -> None:
    handle = gitplan.open_repo(repo)
    (repo / "untracked.txt").write_text("x")
    gitplan.ensure_clean(handle)  # untracked files never reach an image (builds use git's tree)
    (repo / "a.txt").write_text("dirty")
    with pytest.raises(DirtyWorkTree, match=r"uncommitted changes \(a.txt\)"):
        gitplan.ensure_clean(handle)
