"""A thin, typed client over python-jenkins: push rendered jobs, trigger and follow builds.

Every transport problem becomes a :class:`~bgci.errors.JenkinsError` here, once, with a one-line
message naming the URL and what was asked. python-jenkins folds 401, 403 and 500 into one
JenkinsException ("Possibly authentication failed"); the status is read back from the requests
error it was raised from. Messages never contain the user's token: it is only ever in the
session's Authorization header, credentials in the URL are removed before the URL is shown, and
every message is scrubbed of the secret once more as a last line of defence.

`push` is JJB's `update` over `render_jobs`' bytes: it reads each job's config.xml, compares it
with ours after normalising both (see :func:`normalise`), and only creates or reconfigures what
differs; `delete_old` removes jobs carrying this app's marker that are no longer rendered.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests

import jenkins
from bgci.errors import ConfigError, JenkinsError
from bgci.jenkins.jobs import RenderedJob, has_marker

if TYPE_CHECKING:
    from bgci.config import Settings

T = TypeVar("T")
FOLDER_CLASS = "com.cloudbees.hudson.plugins.folder.Folder"
FOLDER_XML = (
    "<?xml version='1.1' encoding='UTF-8'?>\n"
    f'<{FOLDER_CLASS} plugin="cloudbees-folder">\n'
    "  <description>Created by bgci for its jobs</description>\n"
    "  <properties/>\n"
    f"</{FOLDER_CLASS}>\n"
)
# Build results in Jenkins' order (hudson.model.Result), and what `bgci jobs trigger` exits with.
RESULT_EXIT_CODES = {"SUCCESS": 0, "UNSTABLE": 7}


# -- errors ------------------------------------------------------------------------------------------
class JenkinsUnreachable(JenkinsError):
    """Jenkins did not answer: connection refused, DNS, TLS or a timeout."""


class JenkinsAuthError(JenkinsError):
    """Jenkins refused the credentials (401) or the user may not do this (403, or a missing crumb)."""

    def __init__(self, message: str, status_code: int, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.status_code = status_code


class JenkinsNotFound(JenkinsError):
    """A job, build or queue item does not exist."""


class WaitInterrupted(JenkinsError):
    """Ctrl-C or SIGTERM while waiting for a build: bgci stopped waiting, the build goes on in Jenkins."""

    exit_code = 130  # what a shell reports for a process ended by SIGINT


class JenkinsBuildFailed(JenkinsError):
    """A triggered build ended FAILURE, ABORTED or NOT_BUILT (UNSTABLE is TestsFailed, exit 7)."""


# -- results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushResult:
    """What a push did (or, with dry_run, would do), by full job name."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # folders created for the jobs
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted or self.folders)


@dataclass(frozen=True)
class BuildRef:
    """A build that has left the queue."""

    job: str
    number: int
    url: str


@dataclass(frozen=True)
class BuildResult:
    """A triggered build: its number, URL and result (None when not waited for)."""

    job: str
    number: int
    url: str
    result: str | None = None

    @property
    def exit_code(self) -> int | None:
        """SUCCESS 0, UNSTABLE 7 (tests failed), anything else JenkinsError's 10; None while unknown."""
        if self.result is None:
            return None
        return RESULT_EXIT_CODES.get(self.result, JenkinsError.exit_code)


# -- normalising config.xml --------------------------------------------------------------------------
def normalise(xml: str | bytes) -> bytes:
    """config.xml in a form where only meaningful differences remain.

    Dropped: the XML declaration (Jenkins writes version 1.1, JJB 1.0), indentation and
    surrounding whitespace of text, and `plugin="name@version"` attributes (Jenkins adds the
    installed version). Attribute order is canonical (C14N).
    """
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise JenkinsError(f"config.xml is not well-formed XML: {exc}") from None
    for element in root.iter():
        element.attrib.pop("plugin", None)
    return ET.canonicalize(ET.tostring(root, encoding="unicode"), strip_text=True).encode("utf-8")


def description_of(xml: str | bytes) -> str:
    """The job description in a config.xml ('' when none or unreadable)."""
    try:
        root = ET.fromstring(xml.encode("utf-8") if isinstance(xml, str) else xml)
    except ET.ParseError:
        return ""
    element = root.find("description")
    return element.text or "" if element is not None else ""


# -- the client --------------------------------------------------------------------------------------
class JenkinsClient:
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

    # -- push ----------------------------------------------------------------------------------------
    def push(self, jobs: Iterable[RenderedJob], *, app: str, dry_run: bool = False, delete_old: bool = False,
             on_change: Callable[[str, str], None] | None = None) -> PushResult:
        """Create or reconfigure only the jobs whose normalised config differs; optionally delete old ones.

        Jobs are pushed in name order, folders first. Reading happens before any change; when a
        change fails, the error's message ends with what was already done (each job is its own
        request, as with JJB: Jenkins has no transaction over several jobs; a rerun continues).
        """
        report = on_change or (lambda action, name: None)
        jobs = sorted(jobs, key=lambda job: job.name)
        created: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        plan: list[tuple[str, RenderedJob]] = []
        for job in jobs:  # prepare: read everything first
            current = self.get_config(job.name)
            if current is None:
                plan.append(("create", job))
            elif normalise(current) != normalise(job.xml):
                plan.append(("update", job))
            else:
                unchanged.append(job.name)
        folders = self._missing_folders({job.folder for action, job in plan if action == "create" and job.folder})
        old = self._old_managed_jobs(app, keep={job.name for job in jobs}) if delete_old else []
        done: list[str] = []
        try:
            for folder in folders:
                report("create folder", folder)
                if not dry_run:
                    self.call(f"create folder {folder}", self.server.create_job, folder, FOLDER_XML)
                done.append(f"folder {folder}")
            for action, job in plan:
                report(action, job.name)
                if action == "create":
                    if not dry_run:
                        self.call(f"create {job.name}", self.server.create_job, job.name, job.xml.decode("utf-8"))
                    created.append(job.name)
                else:
                    if not dry_run:
                        self.call(f"update {job.name}", self.server.reconfig_job, job.name, job.xml.decode("utf-8"))
                    updated.append(job.name)
                done.append(job.name)
            for name in old:
                report("delete", name)
                if not dry_run:
                    self.call(f"delete {name}", self.server.delete_job, name)
                done.append(f"deleted {name}")
        except JenkinsError as exc:  # same class (auth, unreachable, ...), saying what is done already
            exc.message = f"{exc.message}; already pushed: {', '.join(done) or 'nothing'}"
            exc.args = (exc.message,)
            raise
        return PushResult(created, updated, unchanged, old, folders, dry_run)

    def _missing_folders(self, folders: set[str]) -> list[str]:
        """Every folder (and parent folder) of these paths that does not exist yet, parents first."""
        wanted = sorted({"/".join(f.split("/")[:i]) for f in folders for i in range(1, f.count("/") + 2)},
                        key=lambda f: (f.count("/"), f))
        missing = []
        for folder in wanted:
            config = None if any(folder.startswith(m + "/") for m in missing) else self.get_config(folder)
            if config is None:
                missing.append(folder)
            elif ET.fromstring(config.encode("utf-8")).tag != FOLDER_CLASS:
                raise JenkinsError(f"{folder} on {self.url} is a job, not a folder",
                                   hint="choose another [jenkins] folder")
        return missing

    def _old_managed_jobs(self, app: str, keep: set[str]) -> list[str]:
        """Jobs carrying this app's marker that are not rendered any more (never folders)."""
        old = []
        for item in self.list_jobs():
            name = item.get("fullname") or item.get("name", "")
            if name in keep or "jobs" in item or item.get("_class", "").endswith("Folder"):
                continue
            config = self.get_config(name)
            if config is not None and has_marker(description_of(config), app):
                old.append(name)
        return sorted(old)

    # -- builds --------------------------------------------------------------------------------------
    def trigger(self, job: str, params: Mapping[str, str] | None = None, *, wait: bool = False,
                follow: bool = False, on_line: Callable[[str], None] | None = None,
                on_started: Callable[[BuildRef], None] | None = None,
                timeout: float | None = None) -> BuildResult:
        """Queue a build, follow the queue item to its build number, optionally wait and stream the console.

        Returns as soon as the build has a number unless `wait` (or `follow`, which implies it).
        An interrupt (Ctrl-C, SIGTERM) while waiting propagates: the build keeps running in Jenkins.
        """
        deadline = None if timeout is None else self._clock() + timeout
        queue_id = self.call(f"start {job}", self.server.build_job, job, dict(params) if params else None)
        build = self.wait_for_start(job, queue_id, deadline)
        if on_started:
            on_started(build)
        if not (wait or follow):
            return BuildResult(build.job, build.number, build.url)
        result = self.wait_for_result(build, follow=follow, on_line=on_line, deadline=deadline)
        return BuildResult(build.job, build.number, build.url, result)

    def wait_for_start(self, job: str, queue_id: int, deadline: float | None = None) -> BuildRef:
        """Poll the queue item until it has become a build."""
        while True:
            item = self.call(f"read queue item {queue_id} of {job}", self.server.get_queue_item, queue_id)
            if item.get("cancelled"):
                raise JenkinsBuildFailed(f"{job}: queue item {queue_id} was cancelled before it started")
            executable = item.get("executable")
            if executable and executable.get("number") is not None:
                number = int(executable["number"])
                url = executable.get("url") or self._build_url(job, number)
                return BuildRef(job, number, url)
            self._pause(deadline, f"{job}: still in the queue ({item.get('why') or 'waiting'})")

    def wait_for_result(self, build: BuildRef, *, follow: bool = False,
                        on_line: Callable[[str], None] | None = None, deadline: float | None = None) -> str:
        """Wait until the build is over and return its result; with `follow`, stream its console."""
        console = _Console(self, build, on_line or (lambda line: None)) if follow else None
        while True:
            if console:
                console.poll()
            info = self.call(f"read {build.job} #{build.number}", self.server.get_build_info,
                             build.job, build.number)
            if not info.get("building") and info.get("result"):
                if console:
                    console.poll(final=True)
                return str(info["result"])
            self._pause(deadline, f"{build.job} #{build.number} is still running: {build.url}")

    def _pause(self, deadline: float | None, what: str) -> None:
        if deadline is not None and self._clock() >= deadline:
            raise JenkinsError(f"timed out: {what}", hint="the build keeps running in Jenkins")
        self._sleep(self.poll_interval)

    def _build_url(self, job: str, number: int) -> str:
        return f"{self.url}{job_path(job)}{number}/"


class _Console:
    """Streams a build's console: progressive text when the server has it, else consoleText by offset."""

    def __init__(self, client: JenkinsClient, build: BuildRef, on_line: Callable[[str], None]) -> None:
        self.client, self.build, self.on_line = client, build, on_line
        self.offset = 0  # bytes for progressiveText, characters for consoleText
        self.progressive = True
        self.partial = ""

    def poll(self, final: bool = False) -> None:
        while True:  # progressiveText may say there is more already
            more = self._read()
            if not (more and self.progressive):
                break
        if final and self.partial:
            self.on_line(self.partial)
            self.partial = ""

    def _read(self) -> bool:
        path = f"{job_path(self.build.job)}{self.build.number}/logText/progressiveText?start={self.offset}"
        if self.progressive:
            try:
                response = self.client.request(f"read the console of {self.build.job} #{self.build.number}",
                                               "GET", path)
            except JenkinsNotFound:
                self.progressive = False
            else:
                self.offset = int(response.headers.get("X-Text-Size", self.offset + len(response.content)))
                self._emit(response.content.decode("utf-8", errors="replace"))
                return response.headers.get("X-More-Data", "").lower() == "true"
        text = self.client.call(f"read the console of {self.build.job} #{self.build.number}",
                                self.client.server.get_build_console_output, self.build.job, self.build.number)
        self._emit(text[self.offset:])
        self.offset = len(text)
        return False

    def _emit(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            self.on_line(line.rstrip("\r"))


# -- helpers -----------------------------------------------------------------------------------------
def job_path(name: str) -> str:
    """`job/a/job/b/` for the full name `a/b`."""
    return "".join(f"job/{quote(part, safe='')}/" for part in name.strip("/").split("/"))


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
