"""A small read-only Docker Engine API client over http.client: what `bgci promote` reads.

docker-py costs ~100 ms of imports (requests, urllib3, charset_normalizer, docker
itself) before its first request; promote only reads: the environment's containers,
and for the test gate an image (or a registry's manifest) by reference. So those
reads go to the engine's API directly, as JSON over its unix socket (DOCKER_HOST
unix://..., default /var/run/docker.sock) or plain tcp://host:port, a new
connection per request (cheap on a local socket, and safe from any thread).
Unversioned paths: the engine answers them with its newest API version, as
docker-py's negotiated version would.

A TLS engine (DOCKER_TLS_VERIFY or DOCKER_CERT_PATH set, or an https:// or ssh://
DOCKER_HOST) is not spoken to here: :func:`connect` then returns a
:class:`DockerPyReader` over bgci.dockerhost.connect(), with the same methods.

Errors, converted once here: an engine that does not answer (a missing socket, a
refused connection, a timeout) is DockerUnavailable, worded as bgci.dockerhost
words it; any other error status is :class:`EngineAPIError` with the engine's own
`message`, which bgci.dockerhost.engine_errors turns into the caller's stage error.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from bgci.dockerhost import UNAVAILABLE_HINT, engine_address, first_line
from bgci.errors import DockerUnavailable

if TYPE_CHECKING:
    import docker

READ_TIMEOUT = 60.0  # seconds: a listing or an inspect; a registry's answer can take a while
DEFAULT_SOCKET = "/var/run/docker.sock"
DEFAULT_TCP_PORT = 2375
Filters = Mapping[str, str | Sequence[str]]


class EngineAPIError(Exception):
    """The engine answered with an error status; `explanation` is its own message (as docker-py's APIError)."""

    def __init__(self, status_code: int, explanation: str) -> None:
        super().__init__(f"{status_code}: {explanation}")
        self.status_code, self.explanation = status_code, explanation


class EngineReader(Protocol):
    """The reads promote needs, from the light client or docker-py."""

    def containers(self, all: bool = True, filters: Filters | None = None) -> list[dict[str, Any]]: ...

    def inspect_image(self, reference: str) -> dict[str, Any] | None: ...

    def distribution(self, reference: str, auth: Mapping[str, str] | None = None) -> dict[str, Any] | None: ...


_readers: dict[str, EngineReader] = {}


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: the engine's default transport."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def uses_tls(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether DOCKER_HOST needs more than plain HTTP (TLS or ssh): then docker-py does the reads."""
    if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
        return True
    host = environ.get("DOCKER_HOST", "")
    return bool(host) and not host.startswith(("unix://", "tcp://", "http://"))


def connect() -> EngineReader:
    """The reader for DOCKER_HOST: the light client, or docker-py's when the engine speaks TLS (or ssh).

    Its first request (GET /_ping) checks that the engine answers, as bgci.dockerhost.connect() does:
    an engine that does not answer fails here, clearly. One reader per engine and process.
    """
    address = engine_address()
    if address not in _readers:
        if uses_tls():
            from bgci.dockerhost import connect as docker_connect

            _readers[address] = DockerPyReader(docker_connect())
        else:
            client = EngineClient(address)
            client.ping()
            _readers[address] = client
    return _readers[address]


class EngineClient:
    """GET JSON from the Docker Engine API at `address` (default: DOCKER_HOST, else the local socket)."""

    def __init__(self, address: str | None = None, timeout: float = READ_TIMEOUT) -> None:
        self.address = address or engine_address()
        self.timeout = timeout

    def containers(self, all: bool = True, filters: Filters | None = None) -> list[dict[str, Any]]:
        """GET /containers/json: the listing docker-py's `api.containers(all=..., filters=...)` returns."""
        params = {"all": "1" if all else "0", "limit": "-1"}
        if filters:
            params["filters"] = json.dumps({k: [v] if isinstance(v, str) else list(v) for k, v in filters.items()})
        answer = self.get_json("/containers/json?" + urlencode(params), "list containers")
        return list(answer or [])

    def inspect_image(self, reference: str) -> dict[str, Any] | None:
        """GET /images/{reference}/json: the image's attributes, or None when the engine has no such image."""
        return self.get_json(f"/images/{quote(reference, safe='/:')}/json", f"inspect image {reference}",
                             missing_ok=True)

    def distribution(self, reference: str, auth: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """GET /distribution/{reference}/json: what the registry says `reference` names (the engine asks it,
        with its TLS settings and `auth`); None when the registry has no such manifest (404)."""
        headers = {"X-Registry-Auth": encode_auth(auth)} if auth else {}
        return self.get_json(f"/distribution/{quote(reference, safe='/:')}/json",
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
        try:
            return json.loads(body) if body else None
        except ValueError:
            raise EngineAPIError(status, f"not JSON: {first_line(body[:200])}") from None

    def get(self, path: str, action: str, *, headers: Mapping[str, str] | None = None,
            missing_ok: bool = False) -> tuple[int, bytes]:
        """(status, body) of GET `path`, on a new connection; errors as the module's docstring says."""
        connection = self._connection()
        try:
            connection.request("GET", path, headers={"Accept": "application/json", **(headers or {})})
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DockerUnavailable(f"{action}: Docker daemon not answering at {self.address}: {first_line(exc)}",
                                    hint=UNAVAILABLE_HINT) from None
        finally:
            connection.close()
        if response.status >= 400 and not (response.status == 404 and missing_ok):
            raise EngineAPIError(response.status, _message(body) or f"HTTP {response.status} {response.reason}")
        return response.status, body

    def _connection(self) -> http.client.HTTPConnection:
        scheme, _, rest = self.address.partition("://")
        if scheme == "unix":
            return UnixHTTPConnection(rest or DEFAULT_SOCKET, self.timeout)
        if scheme in ("tcp", "http"):
            where = urlsplit(f"http://{rest}")
            return http.client.HTTPConnection(where.hostname or "localhost", where.port or DEFAULT_TCP_PORT,
                                              timeout=self.timeout)
        raise DockerUnavailable(f"DOCKER_HOST={self.address}: not unix://, tcp:// or http://",
                                hint=UNAVAILABLE_HINT)


class DockerPyReader:
    """The same reads through a docker-py client (a TLS engine, or a client the caller already has)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def containers(self, all: bool = True, filters: Filters | None = None) -> list[dict[str, Any]]:
        return list(self.client.api.containers(all=all, filters=filters))

    def inspect_image(self, reference: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        try:
            return dict(self.client.api.inspect_image(reference))
        except NotFound:
            return None

    def distribution(self, reference: str, auth: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        from docker.errors import APIError

        try:
            return dict(self.client.api.inspect_distribution(reference, auth_config=dict(auth) if auth else None))
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise


def encode_auth(auth: Mapping[str, str]) -> str:
    """The X-Registry-Auth header: base64url of the JSON credentials (as docker-py's auth.encode_header)."""
    return base64.urlsafe_b64encode(json.dumps(dict(auth)).encode("ascii")).decode("ascii")


def _message(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return first_line(body.decode("utf-8", "replace")) if body.strip() else ""
    return first_line(answer.get("message", "")) if isinstance(answer, dict) and answer.get("message") else ""
