"""`bgci exporter`: request metrics from nginx's requests.log and deploy series from bgci's own files.

nginx writes one JSON line per request its live and preview servers proxy (see
templates/nginx/include-log-format.conf); this process follows that file and keeps, per app,
env, sha and role:

    bgci_requests_total{status_class}          requests by 1xx..5xx
    bgci_request_duration_seconds              a histogram of nginx's request_time
    bgci_upstream_errors_total                 upstream attempts that failed (502, 503, 504: what
                                               nginx's proxy_next_upstream treats as failures)

`role` is live or preview as nginx routed the request, except that preview traffic to
the environment the state file names as previous is `previous`: only bgci knows that,
which is why this is an exporter and not an mtail program. Every series of an
environment is created at zero when it is first seen, so `increase()` counts its first
errors too. The deploy series are read from the state and events files at each scrape:

    bgci_live_info{env,sha}                    1 for the live environment
    bgci_deploy_events_total{action}           create, destroy, scale, promote, rollback, auto-rollback
    bgci_last_deploy_timestamp_seconds{action}
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

from bgci.metrics.analysis import ROLES
from bgci.metrics.events import EventLog, all_events, count_by_action
from bgci.state import RouterState, load_state

if TYPE_CHECKING:
    from bgci.config import Settings

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UPSTREAM_FAILURES = frozenset({"502", "503", "504"})
POLL_SECONDS = 0.2
LABELS = ("app", "env", "sha", "role")


@dataclass(frozen=True)
class RequestLine:
    """What the exporter reads from one line of requests.log."""

    app: str
    env: str
    sha: str
    role: str
    status: int
    request_time: float
    upstream_failures: int


def parse_line(text: str) -> RequestLine | None:
    """One line of requests.log, or None when it is not one of bgci's request lines."""
    try:
        data = json.loads(text)
        status = data["status"]
        request_time = data["request_time"]
        fields = [data["app"], data["env"], data["sha"], data["role"]]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(status, int) and isinstance(request_time, int | float)
            and all(isinstance(f, str) for f in fields) and fields[1]):
        return None
    attempts = str(data.get("upstream_status", "")).replace(":", ",").split(",")
    failures = sum(1 for a in attempts if a.strip() in UPSTREAM_FAILURES)
    return RequestLine(*fields, status=status, request_time=float(request_time), upstream_failures=failures)


def role_for(line: RequestLine, state: RouterState) -> str:
    """nginx's role, with preview traffic of the state file's previous environment called previous."""
    if line.role == "preview" and state.previous is not None and state.previous.env == line.env:
        return "previous"
    return line.role if line.role in ROLES else "preview"


class StateReader:
    """The state file, re-read only when it changed (its mtime and size)."""

    def __init__(self, path: Path) -> None:
        self.path, self._seen, self._state = path, (0, -1), RouterState()

    def state(self) -> RouterState:
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            return RouterState()
        if seen != self._seen:
            self._state, self._seen = load_state(self.path), seen
        return self._state


class LogTail:
    """New complete lines of a growing file; starts again at 0 when it is truncated or replaced (rotated)."""

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path, self.offset, self.inode, self.partial = path, 0, None, b""
        if not from_start:
            try:
                stat = path.stat()
                self.offset, self.inode = stat.st_size, stat.st_ino
            except FileNotFoundError:
                pass

    def read(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self.inode or stat.st_size < self.offset:
            self.offset, self.inode, self.partial = 0, stat.st_ino, b""
        if stat.st_size == self.offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines if line.strip()]


class RequestMetrics:
    """The request series of one app in a registry."""

    def __init__(self, registry: CollectorRegistry, app: str) -> None:
        self.app = app
        self.requests = Counter("bgci_requests", "Requests proxied by nginx, by status class.",
                                [*LABELS, "status_class"], registry=registry)
        self.duration = Histogram("bgci_request_duration_seconds", "nginx's request_time of proxied requests.",
                                  LABELS, buckets=BUCKETS, registry=registry)
        self.upstream_errors = Counter("bgci_upstream_errors", "Upstream attempts that failed (502, 503, 504).",
                                       LABELS, registry=registry)
        self.lines = Counter("bgci_exporter_lines", "Lines of requests.log read, by outcome.", ["outcome"],
                             registry=registry)
        for outcome in ("counted", "other_app", "unreadable"):
            self.lines.labels(outcome)
        self._known: set[tuple[str, str]] = set()

    def observe(self, text: str, state: RouterState) -> None:
        line = parse_line(text)
        if line is None:
            self.lines.labels("unreadable").inc()
            return
        if line.app != self.app:
            self.lines.labels("other_app").inc()  # a system nginx shared by several apps
            return
        self._declare(line.env, line.sha)
        labels = (self.app, line.env, line.sha, role_for(line, state))
        status_class = f"{line.status // 100}xx" if 100 <= line.status < 600 else "5xx"
        self.requests.labels(*labels, status_class).inc()
        self.duration.labels(*labels).observe(line.request_time)
        if line.upstream_failures:
            self.upstream_errors.labels(*labels).inc(line.upstream_failures)
        self.lines.labels("counted").inc()

    def _declare(self, env: str, sha: str) -> None:
        """Every series of a new environment at zero, so that its first requests show in increase()."""
        if (env, sha) in self._known:
            return
        self._known.add((env, sha))
        for role in ROLES:
            for status_class in STATUS_CLASSES:
                self.requests.labels(self.app, env, sha, role, status_class)
            self.duration.labels(self.app, env, sha, role)
            self.upstream_errors.labels(self.app, env, sha, role)


class DeployCollector:
    """bgci_live_info, bgci_deploy_events_total and bgci_last_deploy_timestamp_seconds, read at each scrape."""

    def __init__(self, app: str, states: StateReader, events: EventLog) -> None:
        self.app, self.states, self.events = app, states, events

    def collect(self) -> Iterator[Metric]:
        state = self.states.state()
        live = GaugeMetricFamily("bgci_live_info", "The live environment (1).", labels=["app", "env", "sha"])
        if state.live is not None:
            live.add_metric([self.app, state.live.env, state.live.sha], 1)
        yield live
        counts = count_by_action(all_events(self.events.read(), state))
        total = CounterMetricFamily("bgci_deploy_events", "Deploy events by action.", labels=["app", "action"])
        last = GaugeMetricFamily("bgci_last_deploy_timestamp_seconds", "Unix time of the newest event by action "
                                 "(0: none).", labels=["app", "action"])
        for count in counts:
            total.add_metric([self.app, count.action], count.count)
            last.add_metric([self.app, count.action], count.last)
        yield total
        yield last


class Exporter:
    """Follows requests.log in a thread and serves /metrics over HTTP."""

    def __init__(self, app: str, requests_log: Path, state_file: Path, events_file: Path, *,
                 from_start: bool = False) -> None:
        disable_created_metrics()  # no *_created series: they double the count and nothing reads them
        self.registry = CollectorRegistry(auto_describe=True)
        self.states = StateReader(state_file)
        self.metrics = RequestMetrics(self.registry, app)
        self.registry.register(DeployCollector(app, self.states, EventLog(events_file)))
        self.tail = LogTail(requests_log, from_start=from_start)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, *, from_start: bool = False) -> Exporter:
        from bgci.router.site import Layout

        return cls(settings.app, Layout(settings.path(settings.nginx.dir)).requests_log,
                   settings.path(settings.nginx.state_file), settings.path(settings.metrics.events_file),
                   from_start=from_start)

    def poll(self) -> int:
        """Count the lines written since the last poll; how many there were."""
        with self._lock:
            lines = self.tail.read()
            state = self.states.state() if lines else RouterState()
            for line in lines:
                self.metrics.observe(line, state)
            return len(lines)

    def _follow(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()

    def start(self, listen: str) -> tuple[str, int]:
        """Serve /metrics on `host:port` (port 0: any free one) and follow the log; the address served."""
        host, _, port = listen.rpartition(":")
        self._server, thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                                 registry=self.registry)
        follower = threading.Thread(target=self._follow, name="bgci-exporter-tail", daemon=True)
        follower.start()
        self._threads = [thread, follower]
        return self._server.server_address[0], self._server.server_address[1]

    def wait(self) -> None:
        """Block until stop() (or Ctrl-C / SIGTERM in the caller)."""
        while not self._stop.wait(1.0):
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
