"""The traffic around a switch, in 1 s buckets: requests per environment, failures and p95 latency. Pure.

A request falls in the bucket of the moment nginx logged it (its $msec: the response
was sent). What counts as failed:

- app:   an instance answered with a status outside 2xx/3xx;
- nginx: nginx answered 5xx on its own, above all 502/504 when no instance answered in time
         (a 502 or 504 counts here even when an instance sent it: to a client they are the same);
- nginx's own 4xx (499: the client went away, 400: a malformed request) are the client's
  doing: counted apart, not failed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bgci.reports.requestlog import LoggedRequest

BUCKET = 1.0  # seconds
LISTED_FAILURES = 20
PHASES = ("before", "during", "after")  # the switch started / was verified between them


@dataclass(frozen=True)
class Window:
    """The time a report covers, around one switch (epoch seconds)."""

    start: float
    end: float
    switch_started: float
    switch_verified: float

    @classmethod
    def around(cls, started: float, verified: float, before: float, after: float) -> Window:
        """From `before` seconds before the switch started to `after` seconds after it was verified, the end
        rounded up to a whole bucket (a last partial bucket would look like a drop in traffic)."""
        if before < 0 or after < 0:
            raise ValueError(f"before={before}, after={after}: seconds must be 0 or more")
        verified, start = max(verified, started), started - before
        buckets = max(1, math.ceil((verified + after - start) / BUCKET - 1e-6))
        return cls(start, start + buckets * BUCKET, started, verified)

    @property
    def buckets(self) -> int:
        return max(1, math.ceil((self.end - self.start) / BUCKET - 1e-9))

    def bucket_of(self, at: float) -> int | None:
        index = math.floor((at - self.start) / BUCKET)
        return index if 0 <= index < self.buckets and at < self.end else None

    def phase_of(self, at: float) -> str:
        return "before" if at < self.switch_started else "during" if at < self.switch_verified else "after"


def classify(request: LoggedRequest) -> str:
    """ok, app (an instance's error), nginx (nginx's 5xx: 502/504...) or client (nginx's own 4xx)."""
    if 200 <= request.status < 400:
        return "ok"
    if request.upstream_answered:
        return "app"
    return "nginx" if request.status >= 500 else "client"


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank `q`th percentile (0 < q <= 100) of `values`; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


@dataclass(frozen=True)
class Failure:
    """A failed request, for the list on the page."""

    at: float
    env: str
    status: int
    origin: str  # app or nginx
    method: str
    uri: str
    upstream_status: str


@dataclass(frozen=True)
class Traffic:
    """What nginx served in a window, bucket by bucket (index i covers [start + i s, start + i + 1 s))."""

    window: Window
    envs: tuple[str, ...]  # one series each, in this order
    shas: dict[str, str]  # env -> the sha nginx logged for it
    rps: dict[str, tuple[int, ...]]  # env -> requests per bucket
    failed: tuple[int, ...]  # failed requests per bucket (every environment)
    p95: tuple[float | None, ...]  # seconds, per bucket (every environment); None: no request
    total: int
    by_env: dict[str, int]
    by_phase: dict[str, dict[str, int]]  # before/during/after -> env -> requests
    failed_app: int
    failed_nginx: int
    client_errors: int  # nginx's own 4xx: not failures
    p95_overall: float | None
    p95_by_env: dict[str, float | None]
    failures: tuple[Failure, ...]  # the first LISTED_FAILURES
    not_plotted: int  # requests in the window for other roles (previews)

    @property
    def failed_total(self) -> int:
        return self.failed_app + self.failed_nginx

    @property
    def peak_rps(self) -> int:
        return max((sum(counts) for counts in zip(*self.rps.values(), strict=True)), default=0)


def summarize(requests: Iterable[LoggedRequest], window: Window, *, order: Sequence[str] = (),
              roles: Sequence[str] = ("live",)) -> Traffic:
    """Bucket the requests of `roles` in `window`; `order` names the environments to list first
    (each gets a series even without a request: a new environment that got nothing must show)."""
    n = window.buckets
    rps: dict[str, list[int]] = {env: [0] * n for env in dict.fromkeys(e for e in order if e)}
    failed = [0] * n
    times: list[list[float]] = [[] for _ in range(n)]
    env_times: dict[str, list[float]] = {env: [] for env in rps}
    by_phase: dict[str, Counter[str]] = {phase: Counter() for phase in PHASES}
    kinds: Counter[str] = Counter()
    failures: list[Failure] = []
    not_plotted = 0
    shas: dict[str, str] = {}
    for request in sorted(requests, key=lambda r: r.at):
        index = window.bucket_of(request.at)
        if index is None:
            continue
        if request.role not in roles:
            not_plotted += 1
            continue
        rps.setdefault(request.env, [0] * n)[index] += 1
        shas.setdefault(request.env, request.sha)
        times[index].append(request.request_time)
        env_times.setdefault(request.env, []).append(request.request_time)
        by_phase[window.phase_of(request.at)][request.env] += 1
        kind = classify(request)
        kinds[kind] += 1
        if kind in ("app", "nginx"):
            failed[index] += 1
            if len(failures) < LISTED_FAILURES:
                failures.append(Failure(request.at, request.env, request.status, kind, request.method, request.uri,
                                        request.upstream_status))
    by_env = {env: sum(counts) for env, counts in rps.items()}
    return Traffic(
        window=window, envs=tuple(rps), shas=shas, rps={env: tuple(counts) for env, counts in rps.items()},
        failed=tuple(failed), p95=tuple(percentile(t, 95) for t in times), total=sum(by_env.values()),
        by_env=by_env, by_phase={phase: dict(counts) for phase, counts in by_phase.items()},
        failed_app=kinds["app"], failed_nginx=kinds["nginx"], client_errors=kinds["client"],
        p95_overall=percentile((t for bucket in times for t in bucket), 95),
        p95_by_env={env: percentile(t, 95) for env, t in env_times.items()},
        failures=tuple(failures), not_plotted=not_plotted)
