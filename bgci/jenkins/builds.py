"""Triggering and following builds, as a mixin of the client.

`trigger` queues a build, follows the queue item to its build number and, if asked, waits for
the result while streaming the console. Polling goes through the client's `poll_interval`,
`_sleep` and `_clock`, so tests do not sleep. It uses only the client's transport (`call`,
`request`, `server`, `url`) and never imports the client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from bgci.errors import JenkinsBuildFailed, JenkinsError, JenkinsNotFound

if TYPE_CHECKING:
    import requests

    import jenkins

T = TypeVar("T")
# Build results in Jenkins' order (hudson.model.Result), and what `bgci jobs trigger` exits with.
RESULT_EXIT_CODES = {"SUCCESS": 0, "UNSTABLE": 7}


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


# -- the mixin ---------------------------------------------------------------------------------------
class BuildsMixin:
    """Build triggering for :class:`~bgci.jenkins.client.JenkinsClient`; the transport comes from the client."""

    # Provided by the client (declared here for type checkers only; no runtime import of it).
    url: str
    server: jenkins.Jenkins
    poll_interval: float
    _sleep: Callable[[float], None]
    _clock: Callable[[], float]

    if TYPE_CHECKING:
        def call(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...
        def request(self, what: str, method: str, path: str, **kwargs: Any) -> requests.Response: ...

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

    def __init__(self, client: BuildsMixin, build: BuildRef, on_line: Callable[[str], None]) -> None:
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


def job_path(name: str) -> str:
    """`job/a/job/b/` for the full name `a/b`."""
    return "".join(f"job/{quote(part, safe='')}/" for part in name.strip("/").split("/"))
