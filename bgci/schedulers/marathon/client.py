"""The transport: Marathon's v2 REST API on one requests Session, like docker-py's APIClient.

One method per call, no decisions. The client owns URL failover, retries
(tenacity, exponential backoff) and turning Marathon's error statuses into
bgci's errors, once; messages never hold credentials (:func:`display_url`).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import requests
import tenacity

from bgci.config import Credentials
from bgci.errors import ConfigError, DeploymentInProgress, MarathonAPIError, SchedulerError, SchedulerUnavailable
from bgci.schedulers.marathon.models import malformed, render_error_body

log = logging.getLogger(__name__)

EVENT_READ_TIMEOUT = 60.0  # a silent stream is reconnected after this (polling covers the gap)


def display_url(url: str) -> str:
    """A URL without user:password@, fit for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def no_urls_error() -> ConfigError:
    return ConfigError("deploy.marathon.urls is empty: bgci does not know where Marathon is",
                       hint="set urls under [deploy.marathon] in bgci.toml, or BGCI_MARATHON_URLS="
                            "http://marathon:8080[,http://marathon2:8080]")


class _Unanswered(Exception):
    """No URL gave a usable answer this round: each failed with a connection error or a 5xx."""

    def __init__(self, problems: list[str], last_5xx: requests.Response | None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.last_5xx = last_5xx


def _connection_reason(exc: requests.RequestException) -> str:
    """Why a connection failed, in a few words (requests' own text can be long and name pools)."""
    text = str(exc)
    for needle, reason in (("Connection refused", "connection refused"), ("Name or service not known",
                           "host name not resolved"), ("No route to host", "no route to host"),
                           ("Connection reset", "connection reset"), ("RemoteDisconnected", "connection closed")):
        if needle in text:
            return reason
    return "timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__


class MarathonClient:
    """Marathon's v2 REST API on one configured requests.Session; one method per call, no decisions.

    Each call tries the URLs in order, starting with the last one that answered
    (a standby or dead Marathon is skipped); a round where none answers (connection
    errors, 5xx) is retried by tenacity with exponential backoff. Errors become
    bgci's: MarathonAPIError (status_code), DeploymentInProgress for a 409 lock,
    SchedulerUnavailable when no URL answered. Messages never hold credentials.
    """

    def __init__(self, urls: Sequence[str], credentials: Credentials | None = None, *, timeout: float = 10.0,
                 attempts: int = 4, backoff: float = 0.25, max_backoff: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.urls = [self._checked_url(u) for u in urls]
        if not self.urls:
            raise no_urls_error()
        self.credentials = credentials or Credentials()
        self.timeout = (min(timeout, 3.05), timeout)  # connect fast to fail over fast; reads may take longer
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._preferred = 0
        self.session = self.new_session()

    @staticmethod
    def _checked_url(url: str) -> str:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"deploy.marathon.urls: {display_url(url)!r} is not an http(s) URL",
                              hint="e.g. http://marathon.example.com:8080 (BGCI_MARATHON_URLS, comma-separated)")
        return url.strip().rstrip("/")

    def new_session(self) -> requests.Session:
        """A Session with the credentials: basic auth, or a DC/OS token (`Authorization: token=...`)."""
        session = requests.Session()
        session.headers["Accept"] = "application/json"
        if self.credentials.token:
            session.headers["Authorization"] = f"token={self.credentials.token}"
        elif self.credentials.username:
            session.auth = (self.credentials.username, self.credentials.password)
        adapter = requests.adapters.HTTPAdapter(max_retries=0)  # retries are ours (tenacity), with failover
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        self.session.close()

    # -- resources -------------------------------------------------------------------------------------------
    def get_app(self, app_id: str) -> Any:
        return self._json("GET", f"/v2/apps{_quote(app_id)}")

    def list_apps(self, id_filter: str) -> Any:
        return self._json("GET", "/v2/apps", params={"id": id_filter, "embed": ["apps.tasks", "apps.lastTaskFailure"]})

    def create_app(self, body: dict[str, Any], force: bool = False) -> tuple[Any, str]:
        """(the created app, the Marathon-Deployment-Id header)."""
        response = self._request("POST", "/v2/apps", params=_force(force), body=body)
        return self._decode(response, "POST", "/v2/apps"), response.headers.get("Marathon-Deployment-Id", "")

    def update_app(self, app_id: str, body: dict[str, Any], force: bool = False) -> Any:
        return self._json("PUT", f"/v2/apps{_quote(app_id)}", params=_force(force), body=body)

    def delete_app(self, app_id: str, force: bool = False) -> Any:
        return self._json("DELETE", f"/v2/apps{_quote(app_id)}", params=_force(force))

    def deployments(self) -> Any:
        return self._json("GET", "/v2/deployments")

    def events(self, event_types: Sequence[str], session: requests.Session,
               read_timeout: float = EVENT_READ_TIMEOUT) -> requests.Response:
        """The open /v2/events stream (SSE) of the first URL that serves it; not retried: callers reconnect."""
        problems = []
        for url in self._url_order():
            try:
                response = session.get(url + "/v2/events", params={"event_type": list(event_types)}, stream=True,
                                       headers={"Accept": "text/event-stream"},
                                       timeout=(self.timeout[0], read_timeout))
            except (requests.ConnectionError, requests.Timeout) as exc:
                problems.append(f"{display_url(url)} ({_connection_reason(exc)})")
                continue
            if response.status_code == 200:
                return response
            error = self._error(response, "GET", "/v2/events")  # reads the body, so before close()
            response.close()
            raise error
        raise SchedulerUnavailable(f"no Marathon answered GET /v2/events: {'; '.join(problems)}")

    # -- plumbing --------------------------------------------------------------------------------------------
    def _json(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              body: dict[str, Any] | None = None) -> Any:
        return self._decode(self._request(method, path, params=params, body=body), method, path)

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 body: dict[str, Any] | None = None) -> requests.Response:
        """One call: every URL in turn, rounds retried with backoff; an error status becomes bgci's error."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            retry=tenacity.retry_if_exception_type(_Unanswered), sleep=self._sleep, reraise=True,
            before_sleep=lambda state: log.info("Marathon %s %s: %s; retrying", method, path,
                                                state.outcome.exception() if state.outcome else "?"),
        )
        try:
            response = retrying(self._try_each_url, method, path, params, body)
        except _Unanswered as exc:
            raise self._unanswered(exc, method, path) from None
        if response.status_code >= 400:
            raise self._error(response, method, path)
        return response

    def _try_each_url(self, method: str, path: str, params: dict[str, Any] | None,
                      body: dict[str, Any] | None) -> requests.Response:
        problems: list[str] = []
        last_5xx = None
        for index in self._url_order_indexes():
            url = self.urls[index]
            try:
                response = self.session.request(method, url + path, params=params, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problems.append(f"{display_url(url)} ({_connection_reason(exc)})")
                continue
            except requests.RequestException as exc:  # e.g. an invalid URL: retrying cannot help
                raise SchedulerError(f"Marathon {method} {path} at {display_url(url)}: {type(exc).__name__}") from None
            if response.status_code >= 500:  # e.g. 503 from a Marathon without a leader: try the next one
                problems.append(f"{display_url(url)} ({response.status_code} {self._message(response)})".rstrip())
                last_5xx = response
                continue
            self._preferred = index
            return response
        raise _Unanswered(problems, last_5xx)

    def _url_order_indexes(self) -> list[int]:
        return [(self._preferred + i) % len(self.urls) for i in range(len(self.urls))]

    def _url_order(self) -> list[str]:
        return [self.urls[i] for i in self._url_order_indexes()]

    def _unanswered(self, exc: _Unanswered, method: str, path: str) -> SchedulerError:
        tries = f"after {self.attempts} attempt(s)"
        if exc.last_5xx is not None:
            status = exc.last_5xx.status_code
            return MarathonAPIError(f"Marathon answered {status} to {method} {path} {tries}: {exc}",
                                    status_code=status)
        return SchedulerUnavailable(f"no Marathon answered {method} {path} {tries}: {exc}",
                                    hint="check deploy.marathon.urls (BGCI_MARATHON_URLS) and that Marathon runs")

    def _error(self, response: requests.Response, method: str, path: str) -> MarathonAPIError:
        """Marathon's error status as bgci's error: 409 locks name their deployments, 422 shows its details."""
        status = response.status_code
        text = self._message(response)
        message = f"Marathon answered {status} to {method} {path}" + (f": {text}" if text else "")
        data = _json_or_none(response)
        if status == 409 and isinstance(data, dict) and isinstance(data.get("deployments"), list):
            ids = [str(d.get("id")) for d in data["deployments"] if isinstance(d, dict) and d.get("id")]
            return DeploymentInProgress(message, ids, hint="wait for it, or pass --force to override it")
        if status in (401, 403):
            return MarathonAPIError(message, status_code=status,
                                    hint="check BGCI_MARATHON_USERNAME/BGCI_MARATHON_PASSWORD or BGCI_MARATHON_TOKEN")
        return MarathonAPIError(message, status_code=status)

    @staticmethod
    def _message(response: requests.Response) -> str:
        data = _json_or_none(response)
        if data is not None:
            return render_error_body(data)
        return response.reason or ""  # an HTML page (Jetty, a proxy): its reason phrase says enough

    @staticmethod
    def _decode(response: requests.Response, method: str, path: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise malformed(f"{method} {path}", f"not JSON ({kind}): {response.text[:60]!r}") from None


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _quote(app_id: str) -> str:
    return urllib.parse.quote(app_id, safe="/")


def _force(force: bool) -> dict[str, str] | None:
    return {"force": "true"} if force else None

