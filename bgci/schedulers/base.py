"""The one small interface every scheduler backend implements.

An environment is one image (by digest, with its git sha) times N instances.
Its metadata lives on the scheduler's own objects (Docker labels, Marathon
labels), so bgci keeps no private state that could drift from what runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from bgci import labels
from bgci.errors import SchedulerError
from bgci.logs import LogLine  # one line of an instance's log; the backends import it from here too

ProgressCallback = Callable[[int, int], None]
"""Called as progress(healthy_instances, wanted_instances) while waiting."""


@dataclass(frozen=True)
class Instance:
    """One running copy of an environment's image, reachable at host:port."""

    id: str
    host: str
    port: int
    state: str  # scheduler's word: running, starting, exited, TASK_RUNNING, ...
    healthy: bool | None = None  # None: not checked (yet)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class EnvironmentSpec:
    """What to create: everything a backend needs, nothing it must look up."""

    name: str
    app: str
    sha: str
    image: str  # the reference to run: an image id or repo@sha256:digest
    digest: str
    instances: int
    container_port: int
    health_path: str
    created_by: str
    created_at: str  # ISO 8601, UTC
    env: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        return {
            labels.APP: self.app,
            labels.ENV: self.name,
            labels.SHA: self.sha,
            labels.DIGEST: self.digest,
            labels.IMAGE: self.image,
            labels.CREATED_AT: self.created_at,
            labels.CREATED_BY: self.created_by,
            labels.HEALTH_PATH: self.health_path,
        }


@dataclass(frozen=True)
class Environment:
    """An environment as the scheduler reports it now."""

    name: str
    app: str
    sha: str
    image: str
    digest: str
    wanted_instances: int
    created_at: str
    created_by: str
    scheduler: str
    instances: tuple[Instance, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # raw server data

    @property
    def healthy_instances(self) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.healthy)

    @property
    def is_ready(self) -> bool:
        return len(self.healthy_instances) == self.wanted_instances == len(self.instances)


def require_instances(name: str, instances: int, *, scaling: bool = False) -> None:
    """Every backend refuses fewer than 1 instance itself: a library caller may skip the service's checks."""
    if instances >= 1:
        return
    if scaling:
        raise SchedulerError(f"environment {name}: cannot scale to {instances} instances, at least 1 needed",
                             hint=f"use `bgci env destroy {name}` to remove it")
    raise SchedulerError(f"environment {name}: {instances} instances, at least 1 needed")


@runtime_checkable
class Scheduler(Protocol):
    """Create, wait for, inspect, scale and destroy environments of one app, and read their logs."""

    name: str  # "local" or "marathon"

    def create(self, spec: EnvironmentSpec) -> Environment:
        """Start spec.instances instances; raise EnvironmentExists if the name is taken."""

    def wait_until_ready(self, name: str, timeout: float, progress: ProgressCallback | None = None) -> Environment:
        """Block until every instance is healthy; raise EnvironmentFailed with the reason otherwise."""

    def get(self, name: str, *, health: bool = True) -> Environment:
        """The environment with its instances and their health; raise EnvironmentNotFound.

        health=False: the caller checks health itself (promote probes right before the switch), so a
        backend that would have to probe each instance for it leaves Instance.healthy None.
        """

    def list(self, *, health: bool = True) -> list[Environment]:
        """Every environment of this app, oldest first (`health` as for get)."""

    def scale(self, name: str, instances: int) -> Environment:
        """Change the number of instances (does not wait: call wait_until_ready)."""

    def destroy(self, name: str) -> None:
        """Remove every instance and the environment; raise EnvironmentNotFound."""

    def logs(self, name: str, since: datetime | None = None, tail: int | None = None,
             follow: bool = False) -> Iterator[LogLine]:
        """Every instance's log lines, merged (see each backend for its order); `tail` counts per instance.

        Reading starts at the first next(). With `follow`, new lines keep coming until the iterator is
        closed (close(), or Ctrl-C inside it, stops every reader).
        """
