"""Full and delta builds of the app's production image, tagged by git sha.

Both paths take the code from git (the commit's tree, never the work dir) and
add a REVISION file holding the sha, so the app directory of a delta image
equals that of a full build of the same commit.

- full: `docker build` of a tar made from the commit's tree; tags
  `<repo>-from-scratch:<sha>`, `:latest` and `<repo>:<sha>`.
- delta: one layer on the newest from-scratch image. Only the files changed
  since its commit are laid in (so the layer, and the push, stay small); files
  deleted since are removed; for `deps` the dependency directory is removed and
  the install command runs. The container is committed with the base image's
  config restored, checked, and only then tagged `<repo>:<sha>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import re
import shlex
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import docker
import git
from docker.errors import APIError, DockerException
from docker.errors import ImageNotFound as DockerImageNotFound

from bgci import gitplan, labels
from bgci.archive import context_tar, single_file_tar
from bgci.config import Settings
from bgci.dockerhost import engine_errors
from bgci.errors import BuildFailed, ConfigError, ImageNotFound
from bgci.gitplan import BaseImage, Plan
from bgci.images import split_reference
from bgci.registry import login, pull_image, push_image

Log = Callable[[str], None]

# The parts of an image's config a delta must keep exactly as the base image has them.
KEPT_CONFIG = ("Cmd", "Entrypoint", "Env", "ExposedPorts", "WorkingDir", "User", "Healthcheck",
               "Volumes", "StopSignal", "Shell", "OnBuild")
LOG_TAIL_LINES = 20
DELTA_SCRIPT = "/.bgci-delta.sh"  # laid in, run, and deleted in the same container: no trace in the layer


@dataclass(frozen=True)
class BuildResult:
    kind: str  # full | deps | code
    sha: str
    reference: str  # <repo>:<sha>, the one name every commit has whichever path built it
    image_id: str
    tags: list[str]
    digest: str  # registry digest when pushed, else ""


@dataclass(frozen=True)
class Source:
    """Where the app lives in the repository, and which commit to build."""

    repo: git.Repo
    sha: str
    context_prefix: str  # the build context's directory, relative to the repository root ("" = root)
    project_prefix: str  # bgci.toml's directory, relative to the repository root

    @classmethod
    def open(cls, settings: Settings, rev: str) -> Source:
        repo = gitplan.open_repo(settings.project_dir)
        root = Path(repo.working_tree_dir or ".").resolve()
        return cls(repo=repo, sha=gitplan.resolve_sha(repo, rev),
                   context_prefix=_relative_prefix(settings.path(settings.build.context), root),
                   project_prefix=_relative_prefix(settings.project_dir, root))


# -- planning ----------------------------------------------------------------------------------------
def find_base_image(client: docker.DockerClient, settings: Settings, log: Log) -> BaseImage | None:
    """The newest from-scratch image: `:latest`, refreshed from the registry when there is one."""
    reference = f"{settings.from_scratch_repository}:latest"
    if settings.registry.url:
        with contextlib.suppress(ImageNotFound):  # nothing pushed yet: a local one may still exist
            pull_image(client, settings.from_scratch_repository, "latest",
                       credentials=settings.registry_credentials,
                       retry_seconds=settings.registry.retry_seconds, log=log)
    try:
        image = client.images.get(reference)
    except DockerImageNotFound:
        return None
    attrs = image.attrs
    created = datetime.fromisoformat(attrs["Created"][:26].rstrip("Z")).replace(tzinfo=UTC)
    return BaseImage(reference=reference, image_id=image.id,
                     sha=((attrs.get("Config") or {}).get("Labels") or {}).get(labels.REVISION, ""),
                     created=created, layers=len(attrs.get("RootFS", {}).get("Layers") or []))


@engine_errors("build plan", BuildFailed)
def plan_build(client: docker.DockerClient, settings: Settings, source: Source, log: Log) -> Plan:
    base = find_base_image(client, settings, log)
    changes = None
    if base and base.sha and gitplan.has_commit(source.repo, base.sha):
        changes = gitplan.changed_files(source.repo, base.sha, source.sha)
    return gitplan.decide(source.sha, base, changes, settings.build, source.project_prefix)


# -- full build --------------------------------------------------------------------------------------
@engine_errors("full build", BuildFailed)
def build_full(client: docker.DockerClient, settings: Settings, source: Source, *,
               build_args: dict[str, str], push: bool, log: Log, use_cache: bool = True) -> BuildResult:
    """`docker build` of the commit. The scheduled (daily) rebuild passes use_cache=False, so that
    OS packages really are fetched again rather than taken from the build cache."""
    commit = source.repo.commit(source.sha)
    dockerfile = _join(source.context_prefix, settings.build.dockerfile)
    if not _exists_in(commit, dockerfile):
        raise ConfigError(f"Dockerfile missing: {dockerfile} is not in commit {source.sha[:12]}",
                          hint="check build.dockerfile and build.context in bgci.toml, and commit the file")
    _login_if_pushing(client, settings, push)
    context = context_tar(commit, source.context_prefix, settings.build.revision_file)
    image_labels = {labels.REVISION: source.sha, labels.APP: settings.app, labels.KIND: "full"}
    log(f"full build of {source.sha[:12]} ({len(context.getbuffer()) // 1024} KiB context)")
    stream = client.api.build(fileobj=context, custom_context=True, dockerfile=settings.build.dockerfile,
                              buildargs={**settings.build.args, **build_args}, labels=image_labels,
                              rm=True, forcerm=True, nocache=not use_cache, decode=True)
    image_id = _follow_build(stream, log)
    tags = [f"{settings.from_scratch_repository}:{source.sha}", f"{settings.image_repository}:{source.sha}"]
    result = _tag_and_push(client, settings, "full", source.sha, image_id, tags, push, log)
    if _move_latest(client, settings, source, image_id, push, log):
        result = dataclasses.replace(result, tags=[tags[0], f"{settings.from_scratch_repository}:latest", tags[1]])
    return result


def _move_latest(client: docker.DockerClient, settings: Settings, source: Source, image_id: str, push: bool,
                 log: Log) -> bool:
    """Point `<app>-from-scratch:latest` at this build, unless it holds a newer commit already.

    Two full builds can finish in either order (a daily rebuild of an old commit and a push, say);
    a descendant of this commit is newer, so it stays. One host's builds take turns on a lock
    file, so the check and the tag are one step.
    """
    repository = settings.from_scratch_repository
    with _latest_lock(repository):
        current = _revision_of(client, f"{repository}:latest")
        if current and current != source.sha and gitplan.has_commit(source.repo, current) \
                and source.repo.is_ancestor(source.sha, current):
            log(f"{repository}:latest stays at {current[:12]}: it is newer than {source.sha[:12]}")
            return False
        client.images.get(image_id).tag(repository, "latest")
        if push:
            push_image(client, repository, "latest", credentials=settings.registry_credentials,
                       retry_seconds=settings.registry.retry_seconds, log=log)
        return True


@contextlib.contextmanager
def _latest_lock(repository: str) -> Iterator[None]:
    directory = Path(tempfile.gettempdir()) / "bgci-locks"
    directory.mkdir(exist_ok=True)
    path = directory / (re.sub(r"[^A-Za-z0-9_.-]+", "_", repository) + ".latest.lock")
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        yield


def _revision_of(client: docker.DockerClient, reference: str) -> str:
    try:
        image = client.images.get(reference)
    except DockerImageNotFound:
        return ""
    return ((image.attrs.get("Config") or {}).get("Labels") or {}).get(labels.REVISION, "")


def _follow_build(stream: Iterable[dict[str, object]], log: Log) -> str:
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    image_id = ""
    try:
        for record in stream:
            if "error" in record:
                raise BuildFailed(f"docker build failed: {str(record['error']).strip()}", list(tail))
            text = str(record.get("stream", ""))
            for line in text.splitlines():
                if line.strip():
                    tail.append(line)
                    log(line)
            aux = record.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
    except APIError as exc:
        raise BuildFailed(f"docker build failed: {exc.explanation or exc}", list(tail)) from None
    if not image_id:
        raise BuildFailed("docker build ended without an image", list(tail))
    return image_id


# -- delta build -------------------------------------------------------------------------------------
@engine_errors("delta build", BuildFailed)
def build_delta(client: docker.DockerClient, settings: Settings, source: Source, plan: Plan, *,
                push: bool, log: Log) -> BuildResult:
    if plan.kind == "full" or plan.base is None:
        raise BuildFailed(f"a delta build is not possible: {'; '.join(plan.reasons)}",
                          hint="run `bgci build full` (or `bgci build auto`)")
    _login_if_pushing(client, settings, push)
    base = client.images.get(plan.base.image_id)
    base_config = base.attrs["Config"]
    commit = source.repo.commit(source.sha)
    changed = [p for p in (_in_context(p, source.context_prefix) for p in plan.changed) if p]
    deleted = [p for p in (_in_context(p, source.context_prefix) for p in plan.deleted) if p]
    script = delta_script(settings, deleted, reinstall=plan.kind == "deps")
    log(f"{plan.kind} delta of {source.sha[:12]} on {plan.base.reference}: "
        f"{len(changed)} changed, {len(deleted)} deleted")

    container = client.containers.create(
        base.id, name=f"bgci-delta-{source.sha[:12]}-{datetime.now(UTC):%H%M%S%f}",
        **(_script_override(base_config) if script else {}),
    )
    try:
        layer = context_tar(commit, source.context_prefix, settings.build.revision_file, only=changed,
                            strip_directories=True)
        container.put_archive(settings.build.app_dir, layer.getvalue())
        if script:
            _run_script(container, script, log)
        image_id = _commit_with_config(container, base_config, source.sha, plan, settings.app)
    finally:
        _remove_quietly(container)
    return _tag_and_push(client, settings, plan.kind, source.sha, image_id,
                         [f"{settings.image_repository}:{source.sha}"], push, log)


def delta_script(settings: Settings, deleted: list[str], reinstall: bool) -> str:
    """Shell run in the delta container: remove deleted files (and dirs they leave empty), reinstall."""
    if not deleted and not reinstall:
        return ""
    app_dir = settings.build.app_dir
    lines = ["set -e", f"rm -f {DELTA_SCRIPT}", f"cd {shlex.quote(app_dir)}"]
    for path in deleted:
        lines.append(f"rm -f -- {shlex.quote(path)}")
        parent = PurePosixPath(path).parent
        if str(parent) != ".":
            lines.append(f"rmdir -p --ignore-fail-on-non-empty -- {shlex.quote(str(parent))} 2>/dev/null || true")
    if reinstall:
        lines.append(f"rm -rf -- {shlex.quote(settings.build.dependency_dir)}")
        lines.append(settings.build.install_command)
    return "\n".join(lines) + "\n"


def _script_override(base_config: dict[str, object]) -> dict[str, object]:
    """How to make the container run the delta script without leaking into the committed config.

    On commit the daemon fills every field left empty in the given config from the container's
    own, so only override a field the base image sets (it is restored from the base on commit).
    """
    command = ["/bin/sh", DELTA_SCRIPT]
    override: dict[str, object] = {"entrypoint": command} if base_config.get("Entrypoint") else {"command": command}
    if base_config.get("User"):
        override["user"] = "0"  # deletions and installs need root; the base's USER is restored on commit
    return override


def _run_script(container: docker.models.containers.Container, script: str, log: Log) -> None:
    container.put_archive("/", single_file_tar(DELTA_SCRIPT.lstrip("/"), script.encode(), 0o755))
    container.start()
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    for chunk in container.logs(stream=True, follow=True):
        for line in chunk.decode(errors="replace").splitlines():
            tail.append(line)
            log(line)
    status = container.wait().get("StatusCode", 1)
    if status != 0:
        raise BuildFailed(f"delta build: the install step exited with {status}", list(tail))


def _commit_with_config(container: docker.models.containers.Container, base_config: dict[str, object],
                        sha: str, plan: Plan, app: str) -> str:
    """Commit without a tag, restore the base image's config, and check it really was restored.

    Docker fills empty fields of the given config from the container's, which is how `docker
    commit` used to lose CMD or keep a build command; checking the result catches any such case.
    """
    image_labels = {**(base_config.get("Labels") or {}), labels.REVISION: sha, labels.APP: app,  # type: ignore[dict-item]
              labels.KIND: plan.kind, labels.BASE_REVISION: plan.base.sha if plan.base else ""}
    conf = {key: base_config.get(key) for key in KEPT_CONFIG} | {"Labels": image_labels}
    image_id = container.client.api.commit(container.id, conf=conf)["Id"]
    committed = container.client.images.get(image_id).attrs["Config"]
    drifted = [key for key in KEPT_CONFIG if (committed.get(key) or None) != (base_config.get(key) or None)]
    if drifted:
        container.client.images.remove(image_id, force=True)
        raise BuildFailed(f"delta build: the committed image's {', '.join(drifted)} differ from the base image's",
                          hint="give the base image a CMD or ENTRYPOINT")
    return image_id


# -- shared ------------------------------------------------------------------------------------------
def _tag_and_push(client: docker.DockerClient, settings: Settings, kind: str, sha: str, image_id: str,
                  tags: list[str], push: bool, log: Log) -> BuildResult:
    image = client.images.get(image_id)
    for tag in tags:
        repository, name = split_reference(tag)
        image.tag(repository, name)
    digest = ""
    if push:
        for tag in tags:
            repository, name = split_reference(tag)
            pushed = push_image(client, repository, name, credentials=settings.registry_credentials,
                                retry_seconds=settings.registry.retry_seconds, log=log)
            if tag == tags[-1]:
                digest = pushed
    return BuildResult(kind=kind, sha=sha, reference=tags[-1], image_id=image_id, tags=tags, digest=digest)


def _login_if_pushing(client: docker.DockerClient, settings: Settings, push: bool) -> None:
    if push and not settings.registry.url:
        raise ConfigError("pushing needs a registry", hint="set registry.url in bgci.toml or BGCI_REGISTRY",
                          option="push")
    if push:
        login(client, settings.registry.url, settings.registry_credentials)


def _remove_quietly(container: docker.models.containers.Container) -> None:
    with contextlib.suppress(DockerException):  # already gone
        container.remove(force=True)


def _exists_in(commit: git.Commit, path: str) -> bool:
    try:
        commit.tree / path
    except KeyError:
        return False
    return True


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _in_context(path: str, prefix: str) -> str | None:
    if not prefix:
        return path
    return path[len(prefix) + 1:] if path.startswith(prefix + "/") else None


def _relative_prefix(directory: Path, root: Path) -> str:
    try:
        relative = directory.resolve().relative_to(root)
    except ValueError:
        raise ConfigError(f"{directory} is outside the git repository {root}") from None
    return "" if str(relative) == "." else relative.as_posix()


def build_auto(client: docker.DockerClient, settings: Settings, source: Source, *,
               build_args: dict[str, str], push: bool, log: Log, use_cache: bool = True) -> BuildResult:
    """Plan, then build what the plan names."""
    plan = plan_build(client, settings, source, log)
    log(f"plan: {plan.kind} ({'; '.join(plan.reasons)})")
    if plan.kind == "full":
        return build_full(client, settings, source, build_args=build_args, push=push, log=log,
                          use_cache=use_cache)
    return build_delta(client, settings, source, plan, push=push, log=log)
