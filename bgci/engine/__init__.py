"""A small Docker Engine API client over bgci.http11: what `bgci promote` and `bgci test` ask of the engine.

docker-py costs ~185 ms of imports (requests, urllib3, charset_normalizer, ssl, docker
itself) before its first request. Promote only reads (the environment's containers, for the
test gate an image or a registry's manifest); a test run creates, starts, waits for, kills
and removes one container, follows its output, copies a file out and tags an image. So
those calls go to the engine's API directly, as JSON over its unix socket (DOCKER_HOST
unix://..., default /var/run/docker.sock) or plain tcp://host:port.

- transport: HTTP to the engine, a new connection per request; errors converted once.
- client: :class:`EngineClient`, the calls.
- dockerpy: :class:`DockerPyEngine`, the same calls through docker-py, for an engine that
  speaks TLS or ssh (DOCKER_TLS_VERIFY or DOCKER_CERT_PATH set, an https:// or ssh://
  DOCKER_HOST), or a docker-py client a caller already holds (:func:`as_engine`).

Errors: an engine that does not answer is DockerUnavailable, worded as bgci.dockerhost
words it; any other error status is :class:`EngineAPIError` with the engine's own message,
which bgci.dockerhost.engine_errors turns into the caller's stage error. What only docker-py
does here (builds, pushes, pulls) goes through `Engine.docker_client()`, imported then.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from bgci.engine.client import EngineClient, demultiplex
from bgci.engine.dockerpy import DockerPyEngine, docker_client
from bgci.engine.transport import (
    READ_TIMEOUT,
    EngineAPIError,
    EngineTimeout,
    Filters,
    encode_auth,
    engine_address,
    uses_tls,
)

if TYPE_CHECKING:
    import docker

__all__ = ["READ_TIMEOUT", "DockerPyEngine", "DockerPyReader", "Engine", "EngineAPIError", "EngineClient",
           "EngineReader", "EngineTimeout", "Filters", "as_engine", "connect", "demultiplex",
           "encode_auth", "uses_tls"]

DockerPyReader = DockerPyEngine  # its name while it only read


class EngineReader(Protocol):
    """The reads promote needs."""

    def containers(self, all: bool = True, filters: Filters | None = None) -> list[dict[str, Any]]: ...

    def inspect_image(self, reference: str) -> dict[str, Any] | None: ...

    def distribution(self, reference: str, auth: Mapping[str, str] | None = None) -> dict[str, Any] | None: ...


class Engine(EngineReader, Protocol):
    """Everything bgci asks of the engine without docker-py: the reads, and a test run's calls."""

    def create_container(self, image: str, command: Sequence[str], *, environment: Mapping[str, str],
                         name: str, labels: Mapping[str, str]) -> str: ...

    def start_container(self, container_id: str) -> None: ...

    def wait_container(self, container_id: str, timeout: float) -> int | None: ...

    def kill_container(self, container_id: str) -> None: ...

    def remove_container(self, container_id: str) -> bool: ...

    def archive_stat(self, container_id: str, path: str) -> dict[str, Any] | None: ...

    def get_archive(self, container_id: str, path: str) -> bytes | None: ...

    def logs(self, container_id: str, *, follow: bool = False, stdout: bool = True,
             stderr: bool = True) -> Iterator[bytes]: ...

    def tag_image(self, image: str, repository: str, tag: str) -> None: ...

    def docker_client(self) -> docker.DockerClient: ...


_engines: dict[str, Engine] = {}


def connect() -> Engine:
    """The engine at DOCKER_HOST: the light client, or docker-py's when the engine speaks TLS (or ssh).

    Its first request (GET /_ping) checks that the engine answers, as bgci.dockerhost.connect() does:
    an engine that does not answer fails here, clearly. One per engine and process.
    """
    address = engine_address()
    if address not in _engines:
        if uses_tls():
            _engines[address] = DockerPyEngine(docker_client())  # docker-py's errors: callers' engine_errors
        else:
            client = EngineClient(address)
            client.ping()
            _engines[address] = client
    return _engines[address]


def as_engine(client: Engine | docker.DockerClient) -> Engine:
    """`client` as an Engine: a docker-py client (what a library caller may hold) through DockerPyEngine."""
    docker_module = sys.modules.get("docker")  # not imported: `client` cannot be docker-py's
    if docker_module is not None and isinstance(client, docker_module.DockerClient):
        return DockerPyEngine(client)
    return client  # type: ignore[return-value]
