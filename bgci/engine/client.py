"""The light engine client: the Docker Engine API calls bgci's promote and test paths make, over bgci.http11.

Unversioned paths: the engine answers them with its newest API version, as docker-py's
negotiated version would. Each call builds a path, makes one request and returns what the
engine said, docker-py's api layer in small; errors are bgci.engine.transport's.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from bgci import http11
from bgci.engine.transport import (
    READ_TIMEOUT,
    EngineAPIError,
    EngineTimeout,
    Filters,
    Transport,
    decode_header,
    encode_auth,
    engine_address,
)
from bgci.errors import first_line

if TYPE_CHECKING:
    import docker

FRAME_HEADER = struct.Struct(">BxxxL")  # stream (0 stdin, 1 stdout, 2 stderr), 3 zero bytes, payload length
PATH_STAT_HEADER = "X-Docker-Container-Path-Stat"


class EngineClient:
    """The Docker Engine API at `address` (default: DOCKER_HOST, else the local socket)."""

    def __init__(self, address: str | None = None, timeout: float = READ_TIMEOUT) -> None:
        self.transport = Transport(address or engine_address(), timeout)

    @property
    def address(self) -> str:
        return self.transport.address

    # -- reads ---------------------------------------------------------------------------------------------
    def containers(self, all: bool = True, filters: Filters | None = None) -> list[dict[str, Any]]:
        """GET /containers/json: the listing docker-py's `api.containers(all=..., filters=...)` returns."""
        params = {"all": "1" if all else "0", "limit": "-1"}
        if filters:
            params["filters"] = json.dumps({k: [v] if isinstance(v, str) else list(v) for k, v in filters.items()})
        answer = self.get_json("/containers/json?" + urlencode(params), "list containers")
        return list(answer or [])

    def inspect_image(self, reference: str) -> dict[str, Any] | None:
        """GET /images/{reference}/json: the image's attributes, or None when the engine has no such image."""
        return self.get_json(f"/images/{_quoted(reference)}/json", f"inspect image {reference}", missing_ok=True)

    def distribution(self, reference: str, auth: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """GET /distribution/{reference}/json: what the registry says `reference` names (the engine asks it,
        with its TLS settings and `auth`); None when the registry has no such manifest (404)."""
        headers = {"X-Registry-Auth": encode_auth(auth)} if auth else {}
        return self.get_json(f"/distribution/{_quoted(reference)}/json",
                             f"inspect {reference} on its registry", headers=headers, missing_ok=True)

    def ping(self) -> None:
        """GET /_ping: DockerUnavailable unless the engine answers, EngineAPIError unless it says OK."""
        self.get("/_ping", "connect to the Docker engine")

    def get_json(self, path: str, action: str, *, headers: Mapping[str, str] | None = None,
                 missing_ok: bool = False) -> Any:
        """The decoded JSON of GET `path`; None for a 404 when `missing_ok`; EngineAPIError for other errors."""
        status, body = self.get(path, action, headers=headers, missing_ok=missing_ok)
        if status == 404:
            return None
        return _decoded(status, body)

    def get(self, path: str, action: str, *, headers: Mapping[str, str] | None = None,
            missing_ok: bool = False) -> tuple[int, bytes]:
        """(status, body) of GET `path`."""
        answer = self.transport.request("GET", path, action, headers=headers, missing_ok=missing_ok)
        return answer.status, answer.body

    # -- a container's run ---------------------------------------------------------------------------------
    def create_container(self, image: str, command: Sequence[str], *, environment: Mapping[str, str],
                         name: str, labels: Mapping[str, str]) -> str:
        """POST /containers/create: a detached container, no TTY, nothing published; its id.

        The body is what docker-py's `containers.create(image, command=, environment=, name=, labels=,
        detach=True)` sends (its None fields left out), so the container is the same either way.
        """
        body = {
            "Tty": False, "OpenStdin": False, "StdinOnce": False,
            "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
            "Env": [f"{key}={value}" for key, value in environment.items()],
            "Cmd": list(command), "Image": image, "NetworkDisabled": False,
            "HostConfig": {"NetworkMode": "default"}, "Labels": dict(labels),
        }
        answer = self.transport.request("POST", "/containers/create?" + urlencode({"name": name}),
                                        f"create container {name}", body=body)
        return str(_decoded(answer.status, answer.body)["Id"])

    def start_container(self, container_id: str) -> None:
        """POST /containers/{id}/start."""
        self.transport.request("POST", f"/containers/{_quoted(container_id)}/start", "start the container")

    def wait_container(self, container_id: str, timeout: float) -> int | None:
        """POST /containers/{id}/wait: the container's exit status, or None when `timeout` s passed first.

        The engine sends the answer's headers at once and its body when the container stops, so the
        socket's timeout is the wait's.
        """
        try:
            answer = self.transport.request("POST", f"/containers/{_quoted(container_id)}/wait",
                                            "wait for the container", timeout=timeout)
        except EngineTimeout:
            return None
        return int(_decoded(answer.status, answer.body)["StatusCode"])

    def kill_container(self, container_id: str) -> None:
        """POST /containers/{id}/kill: SIGKILL (the engine's default); EngineAPIError (409) if it is not running."""
        self.transport.request("POST", f"/containers/{_quoted(container_id)}/kill", "kill the container")

    def remove_container(self, container_id: str) -> bool:
        """DELETE /containers/{id}?v=1&force=1: killed if running, with its anonymous volumes;
        False when there was no such container (gone already)."""
        answer = self.transport.request("DELETE", f"/containers/{_quoted(container_id)}?v=1&force=1",
                                        f"remove container {container_id}", missing_ok=True)
        return answer.status != 404

    def archive_stat(self, container_id: str, path: str) -> dict[str, Any] | None:
        """HEAD /containers/{id}/archive: the engine's stat of `path` (name, size, mode, mtime, linkTarget),
        or None when the container has no such path."""
        answer = self.transport.request("HEAD", _archive_path(container_id, path), f"look at {path}",
                                        missing_ok=True)
        header = answer.headers.get(PATH_STAT_HEADER)
        return decode_header(header) if answer.status != 404 and header else None

    def get_archive(self, container_id: str, path: str) -> bytes | None:
        """GET /containers/{id}/archive: a tar of `path`, or None when the container has no such path."""
        answer = self.transport.request("GET", _archive_path(container_id, path), f"copy {path} out",
                                        missing_ok=True)
        return None if answer.status == 404 else answer.body

    def logs(self, container_id: str, *, follow: bool = False, stdout: bool = True,
             stderr: bool = True) -> Iterator[bytes]:
        """GET /containers/{id}/logs: the output as the engine sends it, stdout and stderr in one stream;
        with `follow`, until the container stops. For containers without a TTY (create_container's)."""
        params = urlencode({"follow": int(follow), "stdout": int(stdout), "stderr": int(stderr)})
        action = "read the container's output"
        with self.transport.stream("GET", f"/containers/{_quoted(container_id)}/logs?{params}", action) as response:
            try:
                for _stream, payload in demultiplex(response):
                    yield payload
            except OSError as exc:
                raise self.transport.unavailable(action, exc) from None

    # -- images --------------------------------------------------------------------------------------------
    def tag_image(self, image: str, repository: str, tag: str) -> None:
        """POST /images/{image}/tag: `repository:tag` names `image` (an id or a reference) from now on."""
        self.transport.request("POST", f"/images/{_quoted(image)}/tag?" + urlencode({"repo": repository, "tag": tag}),
                               f"tag {image} as {repository}:{tag}")

    def docker_client(self) -> docker.DockerClient:
        """docker-py on this engine, for what only it does here (builds, pushes, pulls): imported now."""
        from bgci.engine.dockerpy import docker_client

        return docker_client(self.address)


def demultiplex(response: http11.Response) -> Iterator[tuple[int, bytes]]:
    """(stream, payload) per frame of Docker's multiplexed stream (the output of a container without a TTY):
    an 8-byte header (FRAME_HEADER), then the payload. Ends at the end of the body, a cut frame included."""
    while True:
        header = response.read(FRAME_HEADER.size)
        if len(header) < FRAME_HEADER.size:
            return
        stream, length = FRAME_HEADER.unpack(header)
        payload = response.read(length)
        if payload:
            yield stream, payload
        if len(payload) < length:
            return


def _archive_path(container_id: str, path: str) -> str:
    return f"/containers/{_quoted(container_id)}/archive?" + urlencode({"path": path})


def _quoted(value: str) -> str:
    """A path argument, quoted as docker-py's _url does."""
    return quote(value, safe="/:")


def _decoded(status: int, body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        raise EngineAPIError(status, f"not JSON: {first_line(body[:200])}") from None
