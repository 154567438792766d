"""The test gate: promote only an image whose own digest passed `bgci test`.

A pass is recorded where any machine can see it: a second tag, `<app>:tested-<sha>`, on the very
image that was tested, pushed to the registry when there is one (the registry then names one
manifest by both tags), else kept on the local engine. The check asks for the digest that tag
names now (the registry through the engine, which knows its TLS and credentials, or the local
engine) and compares it with the environment's digest: a rebuilt image of the same sha, or an
environment of an image nobody tested, does not pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bgci.dockerhost import engine_errors
from bgci.errors import ImageNotFound, RegistryError, UntestedImage

if TYPE_CHECKING:
    import docker

    from bgci.config import Settings
    from bgci.engine import Engine, EngineReader
    from bgci.images import ImageRef
    from bgci.schedulers.base import Environment

Log = Callable[[str], None]
TAG_PREFIX = "tested-"


def tested_tag(sha: str) -> str:
    return f"{TAG_PREFIX}{sha}"


@engine_errors("record the test pass", RegistryError)
def record_pass(client: Engine | docker.DockerClient, settings: Settings, image: ImageRef, log: Log) -> str:
    """Tag the tested image `<repo>:tested-<sha>` (pushed when it came from the registry); the reference.

    `client` is a bgci.engine Engine (or a docker-py client): only the push needs docker-py, imported then.
    """
    from bgci.engine import as_engine

    if not image.sha:
        raise UntestedImage(f"image {image.reference} has no revision label: its pass cannot be recorded by sha")
    engine = as_engine(client)
    repository, tag = settings.image_repository, tested_tag(image.sha)
    engine.tag_image(image.id, repository, tag)
    if settings.registry.url and image.repo_digest:
        from bgci.registry import push_image

        push_image(engine.docker_client(), repository, tag, credentials=settings.registry_credentials,
                   retry_seconds=settings.registry.retry_seconds, log=log)
    log(f"recorded the pass: {repository}:{tag} ({image.digest})")
    return f"{repository}:{tag}"


def tested_digest(reader: EngineReader, settings: Settings, sha: str) -> str:
    """The digest `<repo>:tested-<sha>` names now, or '' when there is no such pass.

    `reader` is read-only (bgci.engine): the light client, so that promote's check needs no docker-py.
    """
    reference = f"{settings.image_repository}:{tested_tag(sha)}"
    with engine_errors(f"look up {reference}", RegistryError):
        if not settings.registry.url:
            image = reader.inspect_image(reference)
            return str(image["Id"]) if image else ""
        answer = reader.distribution(reference, auth=_auth(settings))  # None: "manifest unknown", no such tag
        return str(((answer or {}).get("Descriptor") or {}).get("digest", ""))


def check_tested(reader: EngineReader, settings: Settings, env: Environment) -> None:
    """Raise UntestedImage unless env's image digest has a recorded pass of `bgci test`."""
    if not env.sha:
        raise UntestedImage(f"environment {env.name} names no sha, so no test pass can vouch for it",
                            hint="promote with --skip-test-gate to override")
    try:
        digest = tested_digest(reader, settings, env.sha)
    except ImageNotFound:
        digest = ""
    if digest and digest == env.digest:
        return
    found = f"the last pass of {env.sha[:12]} was for {digest[:19]}, a different image" if digest \
        else f"no `bgci test` passed for {env.sha[:12]}"
    raise UntestedImage(f"environment {env.name} runs {env.digest[:19]}: {found}",
                        hint=f"run `bgci test --sha {env.sha}`, or promote with --skip-test-gate "
                             "(recorded in the state history)")


def _auth(settings: Settings) -> dict[str, str] | None:
    credentials = settings.registry_credentials
    if not credentials.username:
        return None
    return {"username": credentials.username, "password": credentials.password or credentials.token}

