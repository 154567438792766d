"""HTTP to the Docker engine over its unix socket or plain tcp, a new connection per request (bgci.http11).

A new connection is cheap on a local socket and safe from any thread (the test run reads
the logs in one thread while it waits in another). Errors are converted here, once: an
engine that does not answer (a missing socket, a refused connection, a timeout, a
connection dropped mid-answer) is DockerUnavailable, worded as bgci.dockerhost words it
(EngineTimeout for a timeout, so a caller that expects one can tell); any error status is
:class:`EngineAPIError` with the engine's own `message`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bgci import http11
from bgci.errors import DockerUnavailable, first_line
from bgci.netaddr import join_host_port

UNAVAILABLE_HINT = "start dockerd (scripts/setup.sh does) or set DOCKER_HOST"
Filters = Mapping[str, str | Sequence[str]]  # a listing's filters: name -> value(s)
READ_TIMEOUT = 60.0  # seconds: a listing or an inspect; a registry's answer can take a while
DEFAULT_SOCKET = "/var/run/docker.sock"
DEFAULT_TCP_PORT = 2375


def engine_address() -> str:
    """DOCKER_HOST, else the local socket: the engine every bgci client talks to."""
    return os.environ.get("DOCKER_HOST", f"unix://{DEFAULT_SOCKET}")


class EngineAPIError(Exception):
    """The engine answered with an error status; `explanation` is its own message (as docker-py's APIError)."""

    def __init__(self, status_code: int, explanation: str) -> None:
        super().__init__(f"{status_code}: {explanation}")
        self.status_code, self.explanation = status_code, explanation


class EngineTimeout(DockerUnavailable):
    """The engine did not answer within the request's timeout."""


@dataclass(frozen=True)
class Answer:
    """One answer of the engine, read to its end."""

    status: int
    headers: http11.Headers
    body: bytes


class Transport:
    """Requests to the engine at `address` (unix://path, tcp://host:port or http://host:port)."""

    def __init__(self, address: str, timeout: float = READ_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout

    def request(self, method: str, path: str, action: str, *, body: Any = None,
                headers: Mapping[str, str] | None = None, missing_ok: bool = False,
                timeout: float | None = None) -> Answer:
        """Send `method path` (`body` as JSON unless None) and read the answer. `timeout` (default: the
        transport's) bounds each wait for the engine, as a socket timeout does; a 404 is an answer when
        `missing_ok`, any other error status EngineAPIError."""
        response = self._send(method, path, action, body=body, headers=headers, missing_ok=missing_ok,
                              timeout=timeout or self.timeout)
        try:
            return Answer(response.status, response.headers, response.read())
        except OSError as exc:
            raise self.unavailable(action, exc) from None
        finally:
            response.close()

    @contextlib.contextmanager
    def stream(self, method: str, path: str, action: str) -> Iterator[http11.Response]:
        """The response of `method path`, its body unread, with no timeout (a followed log ends when its
        container stops); the connection is closed when the block ends. Errors as `request`'s."""
        response = self._send(method, path, action, timeout=None)
        try:
            yield response
        finally:
            response.close()

    def unavailable(self, action: str, exc: BaseException) -> DockerUnavailable:
        """The error for an engine that did not answer `action`."""
        kind = EngineTimeout if isinstance(exc, TimeoutError) else DockerUnavailable
        return kind(f"{action}: Docker daemon not answering at {self.address}: {first_line(exc)}",
                    hint=UNAVAILABLE_HINT)

    def _send(self, method: str, path: str, action: str, *, body: Any = None,
              headers: Mapping[str, str] | None = None, missing_ok: bool = False,
              timeout: float | None) -> http11.Response:
        """The response, once the engine answered with a status we take; its connection closed on any error."""
        sent = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        try:
            sock, host = self._connect(timeout)
            response = http11.exchange(sock, method, path, host=host, headers=sent, body=data)
        except OSError as exc:  # exchange closed the socket
            raise self.unavailable(action, exc) from None
        if response.status < 400 or (response.status == 404 and missing_ok):
            return response
        try:
            explanation = _message(response.read()) or f"HTTP {response.status} {response.reason}"
        except OSError as exc:
            raise self.unavailable(action, exc) from None
        finally:
            response.close()
        raise EngineAPIError(response.status, explanation)

    def _connect(self, timeout: float | None) -> tuple[socket.socket, str]:
        """A new connection to the engine, and the Host header for it."""
        scheme, _, rest = self.address.partition("://")
        if scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(rest or DEFAULT_SOCKET)
            except BaseException:
                sock.close()
                raise
            return sock, "localhost"
        if scheme in ("tcp", "http"):
            where = urlsplit(f"http://{rest}")
            host, port = where.hostname or "localhost", where.port or DEFAULT_TCP_PORT
            return socket.create_connection((host, port), timeout=timeout), join_host_port(host, port)
        raise DockerUnavailable(f"DOCKER_HOST={self.address}: not unix://, tcp:// or http://",
                                hint=UNAVAILABLE_HINT)


def uses_tls(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether DOCKER_HOST needs more than plain HTTP (TLS or ssh): then docker-py speaks to the engine."""
    if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
        return True
    host = environ.get("DOCKER_HOST", "")
    return bool(host) and not host.startswith(("unix://", "tcp://", "http://"))


def encode_auth(auth: Mapping[str, str]) -> str:
    """The X-Registry-Auth header: base64url of the JSON credentials (as docker-py's auth.encode_header)."""
    return base64.urlsafe_b64encode(json.dumps(dict(auth)).encode("ascii")).decode("ascii")


def decode_header(value: str) -> dict[str, Any]:
    """A JSON header in base64 (X-Docker-Container-Path-Stat), as docker-py's utils.decode_json_header."""
    return dict(json.loads(base64.b64decode(value)))


def _message(body: bytes) -> str:
    """The engine's `message` in an error answer, whole (callers shorten it for one line)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()
    return str(answer.get("message", "")).strip() if isinstance(answer, dict) and answer.get("message") else ""
