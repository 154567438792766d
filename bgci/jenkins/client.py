"""The Jenkins transport: python-jenkins' `jenkins.Jenkins` with bgci's errors.

Every transport problem becomes a :class:`~bgci.errors.JenkinsError` here, once, with a one-line
message naming the URL and what was asked. python-jenkins folds 401, 403 and 500 into one
JenkinsException ("Possibly authentication failed"); the status is read back from the requests
error it was raised from. Messages never contain the user's token: it is only ever in the
session's Authorization header, credentials in the URL are removed before the URL is shown, and
every message is scrubbed of the secret once more as a last line of defence.

Like docker-py's `APIClient`, the client is the transport plus one mixin per resource: job push
(:mod:`bgci.jenkins.push`) and builds (:mod:`bgci.jenkins.builds`). The mixins only use `call`,
`request` and the attributes set here, and never import this module.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests

import jenkins
from bgci.errors import ConfigError, JenkinsAuthError, JenkinsError, JenkinsNotFound, JenkinsUnreachable
from bgci.jenkins.builds import BuildsMixin
from bgci.jenkins.push import PushMixin

if TYPE_CHECKING:
    from bgci.config import Settings

T = TypeVar("T")


# -- the client --------------------------------------------------------------------------------------
class JenkinsClient(PushMixin, BuildsMixin):
    """python-jenkins' `jenkins.Jenkins` with bgci's errors, job push and build following."""

    def __init__(self, url: str, username: str = "", token: str = "", *, timeout: float = 30.0,
                 poll_interval: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not url:
            raise ConfigError("no Jenkins URL", hint="set [jenkins] url in bgci.toml, BGCI_JENKINS_URL or --url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"Jenkins URL {display_url(url)!r} is not an http(s):// URL")
        if parts.username and not username:  # http://user:token@host/ works, but is never shown
            username, token = parts.username, parts.password or token
        if username and not token:
            raise ConfigError(f"a Jenkins user ({username}) but no API token",
                              hint="set BGCI_JENKINS_TOKEN (or BGCI_JENKINS_TOKEN_FILE, or JENKINS_API_TOKEN)")
        self.url = display_url(url)
        self._secrets = [s for s in (token, parts.password) if s]
        self._timeout = timeout
        self.poll_interval = poll_interval
        self._sleep, self._clock = sleep, clock
        self.server = jenkins.Jenkins(self.url, username or None, token if username else None, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None, **kwargs: Any) -> JenkinsClient:
        credentials = settings.jenkins_credentials
        return cls(url or settings.jenkins.url, credentials.username, credentials.password,
                   timeout=settings.jenkins.timeout, **kwargs)

    # -- transport -----------------------------------------------------------------------------------
    def call(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one python-jenkins call; any failure becomes a JenkinsError saying `what` failed."""
        try:
            return function(*args, **kwargs)
        except jenkins.NotFoundException:
            raise JenkinsNotFound(self._scrub(f"{what}: not found on {self.url}")) from None
        except jenkins.TimeoutException:
            raise JenkinsUnreachable(self._scrub(f"{what}: {self.url} did not answer within {self._timeout:g} s"),
                                     hint="is Jenkins up and the URL right?") from None
        except jenkins.JenkinsException as exc:
            raise self._from_jenkins_exception(what, exc) from None
        except requests.exceptions.ConnectionError as exc:
            raise JenkinsUnreachable(self._scrub(f"{what}: cannot connect to {self.url}: {_reason(exc)}"),
                                     hint="is Jenkins up and the URL right?") from None
        except requests.exceptions.RequestException as exc:
            response = exc.response
            detail = f"HTTP {response.status_code} {_x_error(response)}" if response is not None \
                else type(exc).__name__
            raise JenkinsError(self._scrub(f"{what}: {self.url} answered {detail.strip()}")) from None

    def _from_jenkins_exception(self, what: str, exc: jenkins.JenkinsException) -> JenkinsError:
        response = getattr(exc.__context__, "response", None)
        status = response.status_code if response is not None else None
        if status == 401:
            return JenkinsAuthError(
                self._scrub(f"{what}: {self.url} refused the credentials (HTTP 401)"), 401,
                hint="set BGCI_JENKINS_USER and BGCI_JENKINS_TOKEN (a Jenkins API token)")
        if status == 403:
            body = _text(response)
            if "crumb" in body.lower():
                return JenkinsAuthError(
                    self._scrub(f"{what}: {self.url} wants a CSRF crumb and none was valid (HTTP 403)"), 403,
                    hint="use an API token (it needs no crumb) or check the crumb issuer")
            return JenkinsAuthError(
                self._scrub(f"{what}: {self.url} refused it (HTTP 403): the user lacks the permission"), 403,
                hint="check BGCI_JENKINS_USER's permissions (Job/Configure, Job/Create, Job/Build, Job/Delete)")
        if status is not None:
            return JenkinsError(self._scrub(f"{what}: {self.url} answered HTTP {status} {_x_error(response)}".strip()))
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JenkinsError(self._scrub(f"{what}: {first}"))

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    def request(self, what: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A raw request on python-jenkins' session (same auth, crumb, timeout and errors)."""
        req = requests.Request(method, self.server._build_url(path), **kwargs)
        return self.call(what, self.server.jenkins_request, req)

    # -- reading -------------------------------------------------------------------------------------
    def whoami(self) -> str:
        return str(self.call("who am I", self.server.get_whoami).get("id", ""))

    def get_config(self, name: str) -> str | None:
        """A job's config.xml, or None when there is no such job."""
        try:
            return self.call(f"read {name}", self.server.get_job_config, name)
        except JenkinsNotFound:
            return None

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every item on the server, folders included, each with 'fullname' and '_class'."""
        return self.call("list jobs", self.server.get_all_jobs)


# -- helpers -----------------------------------------------------------------------------------------
def display_url(url: str) -> str:
    """The URL without user:password@, ending in / (as python-jenkins uses it)."""
    parts = urlsplit(url.strip())
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _reason(exc: Exception) -> str:
    """'connection refused', 'name does not resolve', ... from urllib3's nested errors."""
    text = str(exc)
    for pattern, reason in ((r"Connection refused", "connection refused"),
                            (r"Name or service not known|nodename nor servname|getaddrinfo failed|"
                             r"Temporary failure in name resolution", "the host name does not resolve"),
                            (r"timed out", "timed out"), (r"SSL|CERTIFICATE", "TLS failed"),
                            (r"Max retries exceeded", "no answer after retries")):
        if re.search(pattern, text):
            return reason
    return type(exc).__name__


def _text(response: Any) -> str:
    try:
        return str(response.text)
    except Exception:  # a body that does not decode says nothing useful
        return ""


def _x_error(response: Any) -> str:
    """Jenkins' own one-line reason (the X-Error header of a hudson.model.Failure), when it sent one."""
    error = response.headers.get("X-Error", "") if response is not None else ""
    return f"({error})" if error else f"({response.reason})" if getattr(response, "reason", "") else ""
