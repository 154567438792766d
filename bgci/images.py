"""Find the exact image a sha or reference names: locally, else pulled from the registry.

Tests and environments must name exactly what they ran, so every lookup ends
in an :class:`ImageRef` carrying the image id and, when the image came from a
registry, its repo digest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bgci import labels
from bgci.config import Settings
from bgci.dockerhost import engine_errors
from bgci.engine import as_engine
from bgci.errors import ConfigError, ImageNotFound

if TYPE_CHECKING:
    import docker

    from bgci.engine import Engine

SHA_PATTERN = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ImageRef:
    """One image: how the user named it, its id, and its digest when a registry has it."""

    reference: str  # repo:tag as asked for
    id: str  # sha256:... (the local image id = config digest)
    repo_digest: str  # repo@sha256:... or "" when the image was never pushed
    sha: str  # the git sha in its revision label, or ""

    @property
    def digest(self) -> str:
        """The content address to report: the registry digest when there is one, else the image id."""
        return self.repo_digest.rsplit("@", 1)[1] if self.repo_digest else self.id

    @property
    def runnable(self) -> str:
        """What to hand a scheduler so it runs exactly this image."""
        return self.repo_digest or self.id


def split_reference(reference: str) -> tuple[str, str]:
    """'host:5000/app:tag' -> ('host:5000/app', 'tag'); no tag means 'latest'."""
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        return reference, "latest"
    return repository, tag


def reference_for_sha(settings: Settings, sha: str) -> str:
    if not SHA_PATTERN.match(sha):
        raise ConfigError(f"sha {sha!r}: expected a full 40-character git sha", hint="see `bgci sha`",
                          option="sha")
    return f"{settings.image_repository}:{sha}"


@engine_errors("find image", ImageNotFound)
def resolve_image(client: Engine | docker.DockerClient, settings: Settings, reference: str,
                  log: Callable[[str], None]) -> ImageRef:
    """Inspect `reference` locally; pull it from the registry when missing; raise ImageNotFound.

    `client` is a bgci.engine Engine (or a docker-py client): only a pull needs docker-py, imported then.
    """
    engine = as_engine(client)
    found = find_local(engine, reference)
    if found is not None:
        return found
    if not settings.registry.url or not reference.startswith(settings.registry.url + "/"):
        raise ImageNotFound(
            f"image {reference} not found locally and no registry to pull it from",
            hint="build it with `bgci build auto` or set BGCI_REGISTRY",
        )
    from bgci.registry import pull_image

    repository, tag = split_reference(reference)
    pull_image(engine.docker_client(), repository, tag, credentials=settings.registry_credentials,
               retry_seconds=settings.registry.retry_seconds, log=log)
    pulled = find_local(engine, reference)
    if pulled is None:
        raise ImageNotFound(f"image {reference}: pulled, yet the engine does not have it")
    return pulled


def find_local(engine: Engine, reference: str) -> ImageRef | None:
    """The image `reference` names on the engine itself, or None."""
    attrs = engine.inspect_image(reference)
    return image_ref(attrs, reference) if attrs is not None else None


def image_ref(attrs: Mapping[str, Any], reference: str) -> ImageRef:
    """The ImageRef of an image's attributes (the engine's inspect answer), as named by `reference`."""
    repository, _ = split_reference(reference)
    repo_digest = next((d for d in attrs.get("RepoDigests") or [] if d.startswith(repository + "@")), "")
    found = (attrs.get("Config") or {}).get("Labels") or {}
    return ImageRef(reference=reference, id=attrs["Id"], repo_digest=repo_digest, sha=found.get(labels.REVISION, ""))
