"""Which build a commit needs, from the git diff against the newest from-scratch image.

The image is split into three layers by how hard each is to make idempotent:
infrastructure (Dockerfile, OS packages) -> full build; dependencies (cpanfile,
Gemfile, ...) -> reinstall on the newest full image; code -> just lay it in.
:func:`decide` is pure; gitpython is only touched by the functions above it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

import git

from bgci.config import BuildSettings
from bgci.errors import DirtyWorkTree, GitError

BuildKind = Literal["full", "deps", "code"]


@dataclass(frozen=True)
class Change:
    """One file changed between two commits; `path` is relative to the repository root."""

    status: Literal["A", "M", "D", "T"]
    path: str


@dataclass(frozen=True)
class BaseImage:
    """The newest from-scratch image, as far as planning cares."""

    reference: str
    image_id: str
    sha: str  # the commit recorded in its revision label ("" when missing)
    created: datetime
    layers: int


@dataclass(frozen=True)
class Plan:
    kind: BuildKind
    sha: str
    base: BaseImage | None
    reasons: list[str]
    infrastructure_changes: list[str] = field(default_factory=list)
    dependency_changes: list[str] = field(default_factory=list)
    code_changes: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # added or modified paths, relative to the repository root
    deleted: list[str] = field(default_factory=list)  # deleted paths, relative to the repository root

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        if self.base:
            data["base"] = {**asdict(self.base), "created": self.base.created.isoformat()}
        return data


# -- git at the edge ---------------------------------------------------------------------------------
def open_repo(directory: Path) -> git.Repo:
    try:
        return git.Repo(directory, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitError(f"{directory} is not inside a git repository",
                       hint="run bgci in the app's git checkout, or `git init` and commit") from None


def resolve_sha(repo: git.Repo, rev: str = "HEAD") -> str:
    """The full 40-character sha of the commit `rev` names."""
    try:
        return repo.commit(rev).hexsha
    except (git.BadName, ValueError, git.GitCommandError):
        raise GitError(f"unknown revision {rev!r}", hint="name a commit, branch or tag of this repository") from None


def ensure_clean(repo: git.Repo) -> None:
    """Refuse a work tree with uncommitted changes to tracked files: a sha would not name it."""
    if repo.is_dirty(untracked_files=False):
        dirty = sorted({d.a_path for d in repo.index.diff(None)} | {d.a_path for d in repo.index.diff("HEAD")})
        shown = ", ".join(dirty[:5]) + (", ..." if len(dirty) > 5 else "")
        raise DirtyWorkTree(f"the work tree has uncommitted changes ({shown})",
                            hint="commit or stash them, or pass --allow-dirty")


def changed_files(repo: git.Repo, base_sha: str, sha: str) -> list[Change]:
    """Files that differ between two commits; a rename counts as a delete plus an add."""
    output = repo.git.diff("--name-status", "--no-renames", "-z", base_sha, sha)
    fields = [f for f in output.split("\0") if f]
    return [Change(status=fields[i][0], path=fields[i + 1]) for i in range(0, len(fields), 2)]  # type: ignore[arg-type]


def has_commit(repo: git.Repo, sha: str) -> bool:
    try:
        repo.commit(sha)
    except (git.BadName, ValueError):
        return False
    return True


# -- the decision, pure ------------------------------------------------------------------------------
def decide(sha: str, base: BaseImage | None, changes: list[Change] | None, build: BuildSettings,
           project_prefix: str, now: datetime | None = None) -> Plan:
    """Pick full, deps or code for `sha`, with the reasons.

    `changes` is None when the base commit is not in this repository; `project_prefix` is the
    directory holding bgci.toml, relative to the repository root ("" at the root).
    """
    if base is None:
        return Plan("full", sha, None, ["no from-scratch image exists yet"])
    reasons = _base_problems(base, changes, build, now or datetime.now(UTC))
    if changes is None:
        return Plan("full", sha, base, reasons)
    relative = [(c, _relative_to(c.path, project_prefix)) for c in changes]
    infra = [p for c, p in relative if p is not None and _matches(p, build.infrastructure_paths)]
    deps = [p for c, p in relative if p is not None and p not in infra and _matches(p, build.dependency_paths)]
    code = [p for c, p in relative if p is not None and p not in infra and p not in deps]
    changed = [c.path for c in changes if c.status != "D"]
    deleted = [c.path for c in changes if c.status == "D"]
    if infra:
        reasons.append(f"infrastructure changed: {_shown(infra)}")
    if reasons:
        return Plan("full", sha, base, reasons, infra, deps, code, changed, deleted)
    if deps:
        reasons.append(f"dependencies changed: {_shown(deps)}")
        kind: BuildKind = "deps"
    else:
        kind = "code"
        reasons.append(f"code changed: {_shown(code)}" if code else "no change since the from-scratch commit")
    reasons.append(f"base {base.reference} ({base.sha[:12]}, {base.layers} layers)")
    return Plan(kind, sha, base, reasons, infra, deps, code, changed, deleted)


def _base_problems(base: BaseImage, changes: list[Change] | None, build: BuildSettings,
                   now: datetime) -> list[str]:
    problems = []
    if not base.sha:
        problems.append(f"{base.reference} has no revision label")
    elif changes is None:
        problems.append(f"the from-scratch commit {base.sha[:12]} is not in this repository")
    age_hours = (now - base.created).total_seconds() / 3600
    if build.max_age_hours and age_hours > build.max_age_hours:
        problems.append(f"{base.reference} is {age_hours:.1f} h old (max_age_hours = {build.max_age_hours:g})")
    if base.layers + 1 > build.layer_budget:
        problems.append(
            f"a delta would make {base.layers + 1} layers (layer_budget = {build.layer_budget})")
    return problems


def _relative_to(path: str, prefix: str) -> str | None:
    if not prefix:
        return path
    try:
        return PurePosixPath(path).relative_to(prefix).as_posix()
    except ValueError:
        return None  # outside the app's directory: not part of the image


def _matches(path: str, patterns: list[str]) -> bool:
    """A pattern ending in / names a directory; others are exact paths or fnmatch globs."""
    for pattern in patterns:
        if pattern.endswith("/") and path.startswith(pattern):
            return True
        if path == pattern or fnmatch.fnmatchcase(path, pattern):
            return True
    return False


def _shown(paths: list[str], limit: int = 5) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
