"""The one boundary between bgci and the Docker engine.

docker-py raises three kinds of thing: APIError (the engine answered with an
error status), its other DockerExceptions (bad input such as an invalid
repository name, a missing socket) and plain requests errors (the engine went
away mid-call). :func:`engine_errors` turns each into a BgciError once, with
the stage's error class (so its exit code) and a hint; every module that talks
to the engine calls it instead of catching docker's errors itself, as
docker-py's models rely on its api layer.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bgci.engine.dockerpy import DEFAULT_TIMEOUT, docker_client
from bgci.engine.transport import UNAVAILABLE_HINT, EngineAPIError, engine_address
from bgci.errors import BgciError, DockerUnavailable, ImageNotFound, first_line

if TYPE_CHECKING:
    import docker


def connect(timeout: int = DEFAULT_TIMEOUT, address: str | None = None) -> docker.DockerClient:
    """docker-py's client for DOCKER_HOST (default: the local socket), or for the plain engine at
    `address` (bgci.engine.dockerpy.docker_client), with an engine that does not answer as a clear
    DockerUnavailable. One client per engine and process."""
    with engine_errors("connect to the Docker engine"):
        return docker_client(address, timeout)


@contextlib.contextmanager
def engine_errors(action: str, error: type[BgciError] = BgciError, hint: str | None = None) -> Iterator[None]:
    """Raise a BgciError for any Docker or HTTP error inside: `error` for the engine's refusals,
    ImageNotFound for a missing image, DockerUnavailable when the engine does not answer.

    Covers docker-py's errors and the light client's (bgci.engine), and imports docker-py and
    requests only to look at an error, when they were imported (so raised it) already.
    Usable as a decorator too (contextmanager objects are ContextDecorators).
    """
    try:
        yield
    except BgciError:
        raise
    except Exception as exc:
        converted = _converted(exc, action, error, hint)
        if converted is None:
            raise
        raise converted from None


def _converted(exc: Exception, action: str, error: type[BgciError], hint: str | None) -> BgciError | None:
    """The BgciError for an engine error, None for any other exception (it propagates as it is)."""
    if isinstance(exc, EngineAPIError):
        if exc.status_code == 404 and "no such image" in exc.explanation.lower():  # docker-py's ImageNotFound
            return _image_not_found(action, exc)
        return error(f"{action}: the Docker engine said: {explanation(exc)}", hint=hint)
    if "docker" not in sys.modules and "requests" not in sys.modules:
        return None  # neither was used, so neither raised it
    import requests
    import urllib3
    from docker.errors import APIError, DockerException
    from docker.errors import ImageNotFound as DockerImageNotFound

    if isinstance(exc, DockerImageNotFound):
        return _image_not_found(action, exc)
    if isinstance(exc, APIError):
        return error(f"{action}: the Docker engine said: {explanation(exc)}", hint=hint)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return _unavailable(action, exc)
    if isinstance(exc, DockerException):
        if _is_connection_problem(exc):
            return _unavailable(action, exc)
        return error(f"{action}: {first_line(exc)}", hint=hint)
    if isinstance(exc, requests.RequestException):
        return error(f"{action}: {type(exc).__name__}: {first_line(exc)}", hint=hint)
    # docker-py reads build, pull and push streams from urllib3 itself: a stream broken midway is the engine gone.
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return _unavailable(action, exc)
    return None


def explanation(exc: Exception) -> str:
    """The engine's own words for an APIError (its `explanation`), on one line."""
    return first_line(getattr(exc, "explanation", None) or exc)


def _image_not_found(action: str, exc: Exception) -> ImageNotFound:
    return ImageNotFound(f"{action}: {explanation(exc)}",
                         hint="build it with `bgci build auto`, or set BGCI_REGISTRY to pull it")


def _unavailable(action: str, exc: BaseException) -> DockerUnavailable:
    return DockerUnavailable(f"{action}: Docker daemon not answering at {engine_address()}: {first_line(exc)}",
                             hint=UNAVAILABLE_HINT)


def _is_connection_problem(exc: Exception) -> bool:
    # docker.from_env() wraps a refused socket as "Error while fetching server API version: ..."
    import requests

    text = str(exc)
    return isinstance(exc.__cause__ or exc.__context__, requests.ConnectionError) or any(
        word in text for word in ("Connection refused", "No such file or directory", "Connection aborted",
                                  "Error while fetching server API version"))
