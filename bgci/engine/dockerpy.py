"""docker-py: its client for an engine (:func:`docker_client`), and the light client's calls through it
(:class:`DockerPyEngine`), for a TLS or ssh engine or a docker-py client a caller holds.

Same methods, same answers and the same errors as bgci.engine.client.EngineClient: the
engine's refusals are EngineAPIError (docker-py's APIError converted here); a connection
problem stays docker-py's or requests' error, which bgci.dockerhost.engine_errors turns
into DockerUnavailable at the caller's boundary. docker-py is imported when a client is
made, never by this module's import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bgci.engine.transport import EngineAPIError, Filters, engine_address

if TYPE_CHECKING:
    import docker



DEFAULT_TIMEOUT = 300  # seconds; a commit or a push of a big layer can take a while

_clients: dict[tuple[str, int], docker.DockerClient] = {}


def docker_client(address: str | None = None, timeout: int = DEFAULT_TIMEOUT) -> docker.DockerClient:
    """docker-py's client for DOCKER_HOST (default: the local socket), or for the plain engine at `address`.

    Negotiating the API version is its first request, so an engine that does not answer fails
    here, with docker-py's own error (bgci.dockerhost.connect words it for users). One client per
    engine and process: the scheduler, the test gate and the builds share its connection pool.
    """
    import docker

    key = (address or engine_address(), timeout)
    if key not in _clients:
        if address is None or address == engine_address():
            _clients[key] = docker.from_env(version="auto", timeout=timeout)
        else:
            _clients[key] = docker.DockerClient(base_url=address, version="auto", timeout=timeout)
    return _clients[key]


class DockerPyEngine:
    """bgci.engine's calls over a docker-py client."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    # -- reads ---------------------------------------------------------------------------------------------
    def containers(self, all: bool = True, filters: Filters | None = None) -> list[dict[str, Any]]:
        with api_errors():
            return list(self.client.api.containers(all=all, filters=filters))

    def inspect_image(self, reference: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        with api_errors():
            try:
                return dict(self.client.api.inspect_image(reference))
            except NotFound:
                return None

    def distribution(self, reference: str, auth: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        from docker.errors import NotFound

        with api_errors():
            try:
                return dict(self.client.api.inspect_distribution(reference, auth_config=dict(auth) if auth else None))
            except NotFound:
                return None

    # -- a container's run ---------------------------------------------------------------------------------
    def create_container(self, image: str, command: Sequence[str], *, environment: Mapping[str, str],
                         name: str, labels: Mapping[str, str]) -> str:
        with api_errors():
            return str(self.client.containers.create(image, command=list(command), environment=dict(environment),
                                                     name=name, labels=dict(labels), detach=True).id)

    def start_container(self, container_id: str) -> None:
        with api_errors():
            self.client.api.start(container_id)

    def wait_container(self, container_id: str, timeout: float) -> int | None:
        import requests

        with api_errors():
            try:
                return int(self.client.api.wait(container_id, timeout=timeout)["StatusCode"])
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                return None  # urllib3's read timeout can come wrapped as a ConnectionError

    def kill_container(self, container_id: str) -> None:
        with api_errors():
            self.client.api.kill(container_id)

    def remove_container(self, container_id: str) -> bool:
        from docker.errors import NotFound

        with api_errors():
            try:
                self.client.api.remove_container(container_id, v=True, force=True)
            except NotFound:
                return False
            return True

    def archive_stat(self, container_id: str, path: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        with api_errors():
            try:
                stream, stat = self.client.api.get_archive(container_id, path)
            except NotFound:
                return None
            for _ in stream:  # drain, so the connection goes back to the pool
                pass
            return dict(stat or {})

    def get_archive(self, container_id: str, path: str) -> bytes | None:
        from docker.errors import NotFound

        with api_errors():
            try:
                stream, _ = self.client.api.get_archive(container_id, path)
            except NotFound:
                return None
            return b"".join(stream)

    def logs(self, container_id: str, *, follow: bool = False, stdout: bool = True,
             stderr: bool = True) -> Iterator[bytes]:
        with api_errors():
            yield from self.client.api.logs(container_id, stream=True, follow=follow, stdout=stdout, stderr=stderr)

    # -- images --------------------------------------------------------------------------------------------
    def tag_image(self, image: str, repository: str, tag: str) -> None:
        with api_errors():
            self.client.api.tag(image, repository, tag=tag)

    def docker_client(self) -> docker.DockerClient:
        return self.client


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """docker-py's APIError (the engine's refusal) as EngineAPIError, as the light client raises it."""
    from docker.errors import APIError

    try:
        yield
    except APIError as exc:
        raise EngineAPIError(exc.status_code or 500, str(exc.explanation or exc).strip()) from None
