"""Pushes and pulls through the Docker engine, retried with backoff.

The engine reports registry failures inside the JSON stream, not as HTTP
errors, so each stream is read to the end and its error classified: connection
problems and 5xx are worth retrying (a registry that stops answering for a
while is normal), refused credentials are not. Credentials go to the engine in
the X-Registry-Auth header (docker-py's auth_config), never in argv or output.

docker-py's errors are imported in the functions, whose callers hold a docker-py client
already: importing this module stays cheap for `bgci test`, which pushes and pulls only
sometimes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from bgci.config import Credentials
from bgci.errors import BgciError, ImageNotFound, RegistryAuthError, RegistryError

if TYPE_CHECKING:
    import docker
    import tenacity

Log = Callable[[str], None]

_AUTH_PATTERNS = re.compile(r"unauthorized|authentication required|denied|no basic auth credentials|401", re.I)
_NOT_FOUND_PATTERNS = re.compile(r"manifest unknown|not found|does not exist|repository name not known", re.I)
_TRANSIENT_PATTERNS = re.compile(
    r"connection refused|connection reset|i/o timeout|timeout|EOF|no such host|server misbehaving|"
    r"broken pipe|50[0-9]|service unavailable|bad gateway|internal server error|try again|retry",
    re.I,
)


class TransientRegistryError(RegistryError):
    """A failure worth retrying (connection refused, 5xx, timeouts)."""


def push_image(client: docker.DockerClient, repository: str, tag: str, *, credentials: Credentials,
               retry_seconds: float, log: Log) -> str:
    """Push repository:tag; return the manifest digest the registry stored."""
    from docker.errors import APIError

    def attempt() -> str:
        try:
            stream = client.api.push(repository, tag=tag, stream=True, decode=True,
                                     auth_config=_auth_config(credentials))
            aux = _consume(stream, f"push {repository}:{tag}", log)
        except APIError as exc:
            raise _classify(f"push {repository}:{tag}", exc.explanation or str(exc)) from None
        digest = aux.get("Digest")
        if not digest:
            raise RegistryError(f"push {repository}:{tag}: the registry returned no digest")
        return str(digest)

    return _with_retries(attempt, f"push {repository}:{tag}", retry_seconds, log)


def pull_image(client: docker.DockerClient, repository: str, tag: str, *, credentials: Credentials,
               retry_seconds: float, log: Log) -> None:
    """Pull repository:tag; raise ImageNotFound when the registry does not have it."""
    from docker.errors import APIError, NotFound

    def attempt() -> None:
        try:
            stream = client.api.pull(repository, tag=tag, stream=True, decode=True,
                                     auth_config=_auth_config(credentials))
            _consume(stream, f"pull {repository}:{tag}", log)
        except NotFound as exc:
            raise ImageNotFound(f"image {repository}:{tag} not found in the registry") from exc
        except APIError as exc:
            raise _classify(f"pull {repository}:{tag}", exc.explanation or str(exc)) from None

    _with_retries(attempt, f"pull {repository}:{tag}", retry_seconds, log)


def login(client: docker.DockerClient, registry: str, credentials: Credentials) -> None:
    """Check credentials up front, so a refusal is one clear error before any work."""
    from docker.errors import APIError

    if not credentials.username:
        return
    try:
        client.login(username=credentials.username, password=credentials.password or credentials.token,
                     registry=registry, reauth=True)
    except APIError as exc:
        raise _classify(f"login to {registry}", exc.explanation or str(exc)) from None


def _auth_config(credentials: Credentials) -> dict[str, str] | None:
    if not credentials.username:
        return None  # docker-py falls back to Docker's own config (~/.docker/config.json)
    return {"username": credentials.username, "password": credentials.password or credentials.token}


def _consume(stream: Iterable[dict[str, Any]], what: str, log: Log) -> dict[str, Any]:
    """Read a push/pull stream to its end; return the last 'aux' record; raise on an error record."""
    aux: dict[str, Any] = {}
    last_status = ""
    for record in stream:
        if "error" in record:
            raise _classify(what, record.get("errorDetail", {}).get("message") or record["error"])
        if "aux" in record:
            aux = record["aux"]
        status = record.get("status", "")
        if status and status != last_status and "progress" not in record:
            log(f"{what}: {status}{' ' + record['id'] if record.get('id') else ''}")
            last_status = status
    return aux


def _classify(what: str, message: str) -> BgciError:
    message = message.strip().splitlines()[0][:300] if message.strip() else "unknown error"
    if _AUTH_PATTERNS.search(message):
        return RegistryAuthError(
            f"{what}: the registry refused the credentials: {message}",
            hint="set BGCI_REGISTRY_USERNAME and BGCI_REGISTRY_PASSWORD (or _PASSWORD_FILE), or docker login",
        )
    if _NOT_FOUND_PATTERNS.search(message):
        return ImageNotFound(f"{what}: not found in the registry: {message}")
    if _TRANSIENT_PATTERNS.search(message):
        return TransientRegistryError(f"{what}: {message}")
    return RegistryError(f"{what}: {message}")


def _with_retries(attempt: Callable[[], Any], what: str, retry_seconds: float, log: Log) -> Any:
    import tenacity  # here: most commands never push or pull

    def before_sleep(state: tenacity.RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action else 0
        log(f"{what}: {state.outcome.exception()}; retrying in {wait:.1f}s (attempt {state.attempt_number})")

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientRegistryError),
        wait=tenacity.wait_exponential(multiplier=0.5, max=10),
        stop=tenacity.stop_after_delay(retry_seconds),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except TransientRegistryError as exc:
        raise RegistryError(
            f"{exc.message} (gave up after {retry_seconds:g}s of retries)",
            hint="check that the registry answers, or raise registry.retry_seconds",
        ) from None
