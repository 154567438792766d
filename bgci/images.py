"""Find the exact image a sha or reference names: locally, else pulled from the registry.

Tests and environments must name exactly what they ran, so every lookup ends
in an :class:`ImageRef` carrying the image id and, when the image came from a
registry, its repo digest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import docker
from docker.errors import ImageNotFound as DockerImageNotFound

from bgci import labels
from bgci.config import Settings
from bgci.dockerhost import engine_errors
from bgci.errors import ConfigError, ImageNotFound
from bgci.registry import pull_image

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
def resolve_image(client: docker.DockerClient, settings: Settings, reference: str,
                  log: Callable[[str], None]) -> ImageRef:
    """Inspect `reference` locally; pull it from the registry when missing; raise ImageNotFound."""
    try:
        image = client.images.get(reference)
    except DockerImageNotFound:
        if not settings.registry.url or not reference.startswith(settings.registry.url + "/"):
            raise ImageNotFound(
                f"image {reference} not found locally and no registry to pull it from",
                hint="build it with `bgci build auto` or set BGCI_REGISTRY",
            ) from None
        repository, tag = split_reference(reference)
        pull_image(client, repository, tag, credentials=settings.registry_credentials,
                   retry_seconds=settings.registry.retry_seconds, log=log)
        image = client.images.get(reference)
    return image_ref(image, reference)


def image_ref(image: docker.models.images.Image, reference: str) -> ImageRef:
    repository, _ = split_reference(reference)
    repo_digest = next((d for d in image.attrs.get("RepoDigests") or [] if d.startswith(repository + "@")), "")
    found = (image.attrs.get("Config") or {}).get("Labels") or {}
    return ImageRef(reference=reference, id=image.id, repo_digest=repo_digest, sha=found.get(labels.REVISION, ""))
