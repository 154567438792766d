"""The local backend: an environment is N containers on this Docker engine.

Each instance is a container named `<env>.<index>` (index from 1), labelled
with the spec's labels plus its index, publishing the app's port on a random
host port of `bind_address`. Everything `get`/`list` report is read back from
the containers, so there is no state of ours to drift.

Reads use the engine's container listing, not `inspect`: inspect blocks while
a container is being restarted, the listing does not. Readiness is polled (a
listing and N concurrent HTTP probes every `poll_interval`); exits come as
`die` events, so an instance that exits fails the wait at once even when the
restart policy has already brought it back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from bgci import labels
from bgci.config import Settings
from bgci.dockerhost import engine_errors
from bgci.errors import (
    EnvironmentExists,
    EnvironmentFailed,
    EnvironmentNotFound,
    SchedulerError,
)
from bgci.probe import check_health, probe_each
from bgci.schedulers.base import Environment, EnvironmentSpec, Instance, LogLine, ProgressCallback, require_instances
from bgci.schedulers.local_events import ExitWatch
from bgci.schedulers.local_logs import last_lines_of, log_config_of, read_logs

if TYPE_CHECKING:
    import docker

    from bgci.engine import EngineReader

# A crashed app comes back by itself, a few times: a crash loop must end in `exited`, with its logs kept.
RESTART_POLICY = {"Name": "on-failure", "MaximumRetryCount": 3}
POLL_INTERVAL = 0.05  # seconds between readiness rounds: the app starts in ~0.2 s
PROBE_TIMEOUT = (0.5, 2.0)  # connect, read: loopback answers in milliseconds
STOP_TIMEOUT = 5  # seconds between SIGTERM and SIGKILL on destroy/scale down
LOG_TAIL_LINES = 10
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")
MAX_WORKERS = 16  # threads for concurrent container starts/stops
FAILED_STATES = ("exited", "dead", "restarting")

Summary = dict[str, Any]  # one container as the engine's listing (GET /containers/json) shows it


@dataclass(frozen=True)
class InstanceTemplate:
    """What every container of one environment shares; index and name are added per container."""

    image: str
    labels: dict[str, str]
    environment: dict[str, str] | list[str]
    container_port: int
    log_config: dict[str, Any] | None = None  # HostConfig.LogConfig: {"Type": driver, "Config": options}

    @classmethod
    def from_spec(cls, spec: EnvironmentSpec, log_config: dict[str, Any] | None = None) -> InstanceTemplate:
        return cls(spec.image, spec.labels(), dict(spec.env), spec.container_port, log_config)

    @classmethod
    def from_container(cls, attrs: dict[str, Any]) -> InstanceTemplate:
        """Copy an instance (scale up) from its inspect data: same image, labels, variables and port."""
        ours = {k: v for k, v in (attrs["Config"].get("Labels") or {}).items() if k.startswith(labels.PREFIX)}
        port_key = next(iter(attrs["HostConfig"].get("PortBindings") or {}), "")
        return cls(ours.get(labels.IMAGE) or attrs["Config"]["Image"], ours,
                   list(attrs["Config"].get("Env") or []), int(port_key.split("/")[0]),
                   attrs["HostConfig"].get("LogConfig") or None)


# -- pure decisions over container summaries (tested without a daemon) ------------------------------------
def container_name(env: str, index: int) -> str:
    return f"{env}.{index}"


def instance_index(summary: Summary) -> int:
    return int((summary.get("Labels") or {}).get(labels.INDEX, "0"))


def plan_scale(indexes: Collection[int], wanted: int) -> tuple[list[int], list[int]]:
    """(indexes to create, indexes to remove): keep the lowest, fill the smallest free indexes."""
    ordered = sorted(indexes)
    if len(ordered) >= wanted:
        return [], ordered[wanted:]
    missing, candidate = [], 1
    while len(missing) < wanted - len(ordered):
        if candidate not in indexes:
            missing.append(candidate)
        candidate += 1
    return missing, []


def exit_reason(summary: Summary, exit_code: str | None) -> str | None:
    """Why this container counts as exited, or None while it may still become healthy.

    `exit_code` comes from a `die` event: with the restart policy, the listing may
    already say `running` again for an app that exited a moment ago.
    """
    if exit_code is not None:
        return f"exited with code {exit_code}"
    if summary["State"] in FAILED_STATES:
        return f"{summary['State']}: {summary.get('Status', '')}".rstrip(": ")
    return None


def published_address(summary: Summary) -> tuple[str, int]:
    """(host, port) where the container's port is published; ("", 0) while it is not running."""
    for binding in summary.get("Ports") or []:
        host = binding.get("IP", "")
        if binding.get("PublicPort") and ":" not in host:  # IPv4: what nginx upstreams and our probes use
            return ("127.0.0.1" if host in WILDCARD_ADDRESSES else host), int(binding["PublicPort"])
    return "", 0


def instance_from(summary: Summary, healthy: bool | None) -> Instance:
    host, port = published_address(summary)
    return Instance(id=summary["Names"][0].lstrip("/"), host=host, port=port, state=summary["State"],
                    healthy=healthy)


def environment_from(containers: Sequence[Summary], health: dict[str, bool]) -> Environment:
    """An Environment from its containers (metadata from the lowest index) and probe results."""
    ordered = sorted(containers, key=instance_index)
    found = ordered[0].get("Labels") or {}
    instances = tuple(instance_from(c, health.get(c["Id"])) for c in ordered)
    return Environment(
        name=found[labels.ENV], app=found.get(labels.APP, ""), sha=found.get(labels.SHA, ""),
        image=found.get(labels.IMAGE, ""), digest=found.get(labels.DIGEST, ""), wanted_instances=len(ordered),
        created_at=found.get(labels.CREATED_AT, ""), created_by=found.get(labels.CREATED_BY, ""),
        scheduler=LocalScheduler.name, instances=instances, attrs={"containers": list(ordered)},
    )


# -- the backend -------------------------------------------------------------------------------------------
class LocalScheduler:
    """Environments of one app as labelled containers on one Docker engine.

    Listings go through `reader` (from settings: bgci.engine's light client, so `bgci promote`
    never imports docker-py); the rest through docker-py's `client`, connected on first use.
    """

    name = "local"

    def __init__(self, client: docker.DockerClient | None, app: str, *, reader: EngineReader | None = None,
                 bind_address: str = "127.0.0.1", poll_interval: float = POLL_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 log_config: dict[str, Any] | None = None) -> None:
        if client is not None:
            self.client = client  # instead of connecting on first use
        if reader is None:
            from bgci.engine import DockerPyEngine

            reader = DockerPyEngine(client or self.client)
        self.reader = reader
        self.app = app
        self.bind_address = bind_address
        self.log_config = log_config  # for new environments; scale-ups copy their siblings'
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep

    @cached_property
    def client(self) -> docker.DockerClient:
        """docker-py, for everything but listings: connected on first use."""
        from bgci.dockerhost import connect

        return connect()

    @classmethod
    def from_settings(cls, settings: Settings, *, force: bool = False) -> LocalScheduler:
        """From deploy.bind_address and log_driver/log_options. `force` has no effect here: the engine has no
        deployment locks to override."""
        from bgci import engine

        with engine_errors("connect to the Docker engine"):  # a TLS engine's docker-py errors too
            reader = engine.connect()
        return cls(None, settings.app, reader=reader, bind_address=settings.deploy.bind_address,
                   log_config=log_config_of(settings.deploy))

    # -- the Scheduler interface ---------------------------------------------------------------------------
    def create(self, spec: EnvironmentSpec) -> Environment:
        """Start the instances; EnvironmentExists if the name is taken, also by a create racing this one.

        Instance 1 starts alone first: the engine's unique container names make it the claim on
        the environment's name, so of two concurrent creates exactly one wins, and the loser has
        started nothing.
        """
        require_instances(spec.name, spec.instances)
        with engine_errors(f"create environment {spec.name}", SchedulerError):
            taken = self.reader.containers(all=True, filters={"label": f"{labels.ENV}={spec.name}"})
        if taken:
            owner = (taken[0].get("Labels") or {}).get(labels.APP, "?")
            raise EnvironmentExists(f"environment {spec.name} exists already (app {owner}, local Docker engine)",
                                    hint=f"pick another --name or run `bgci env destroy {spec.name}`")
        template = InstanceTemplate.from_spec(spec, self.log_config)
        claim = self._start(template, spec.name, [1])
        try:
            self._start(template, spec.name, list(range(2, spec.instances + 1)))
        except BaseException:
            with contextlib.suppress(SchedulerError):
                self._remove(claim, graceful=False)
            raise
        return self.get(spec.name)

    def wait_until_ready(self, name: str, timeout: float, progress: ProgressCallback | None = None) -> Environment:
        """Poll until every instance answers its health path; progress(healthy, wanted) on each change."""
        deadline = self._clock() + timeout
        reported = -1
        with ExitWatch(self.client, self._filters(name)) as exits:
            while True:
                containers = self._containers(name)
                self._raise_if_exited(name, containers, exits.codes())
                env = environment_from(containers, self._probe_all(containers))
                if progress and len(env.healthy_instances) != reported:
                    reported = len(env.healthy_instances)
                    progress(reported, env.wanted_instances)
                if env.is_ready:
                    return env
                if self._clock() >= deadline:
                    raise self._timed_out(env, timeout)
                self._sleep(self.poll_interval)

    def get(self, name: str, *, health: bool = True) -> Environment:
        containers = self._containers(name)
        return environment_from(containers, self._probe_all(containers) if health else {})

    def list(self, *, health: bool = True) -> list[Environment]:
        with engine_errors("list environments", SchedulerError):
            containers = self.reader.containers(all=True, filters=self._filters())
        by_env: dict[str, list[Summary]] = {}
        for summary in containers:
            by_env.setdefault(summary["Labels"][labels.ENV], []).append(summary)
        probed = self._probe_all(containers) if health else {}
        environments = [environment_from(summaries, probed) for summaries in by_env.values()]
        return sorted(environments, key=lambda e: (e.created_at, e.name))

    def scale(self, name: str, instances: int) -> Environment:
        require_instances(name, instances, scaling=True)
        containers = self._containers(name)
        by_index = {instance_index(c): c for c in containers}
        to_create, to_remove = plan_scale(by_index, instances)
        if to_create:
            with engine_errors(f"inspect {name}", SchedulerError):
                template = InstanceTemplate.from_container(self.client.api.inspect_container(
                    by_index[min(by_index)]["Id"]))
            self._start(template, name, to_create)
        self._remove([by_index[i]["Id"] for i in to_remove], graceful=True)
        return self.get(name, health=False)  # not ready yet: wait_until_ready probes

    def destroy(self, name: str) -> None:
        self._remove([c["Id"] for c in self._containers(name)], graceful=True)

    def logs(self, name: str, since: datetime | None = None, tail: int | None = None,
             follow: bool = False) -> Iterator[LogLine]:
        """The engine's logs of every container, merged by their timestamps (bgci/logs.py says how exactly)."""
        containers = sorted(self._containers(name), key=instance_index)
        instances = [(instance_from(c, None).id, c["Id"]) for c in containers]
        return read_logs(self.client, instances, since=since, tail=tail, follow=follow)

    # -- containers ----------------------------------------------------------------------------------------
    def _filters(self, env: str | None = None) -> dict[str, list[str]]:
        # Containers of app images inherit the image's io.bgci.app label: the index label marks ours.
        wanted = [f"{labels.APP}={self.app}", labels.INDEX, f"{labels.ENV}={env}" if env else labels.ENV]
        return {"label": wanted}

    def _containers(self, name: str) -> list[Summary]:
        """Every container of environment `name`, as listed; EnvironmentNotFound if none."""
        with engine_errors(f"list containers of {name}", SchedulerError):
            found = self.reader.containers(all=True, filters=self._filters(name))
        if not found:
            raise EnvironmentNotFound(f"no environment {name} of app {self.app} on the local Docker engine",
                                      hint="see `bgci env list`")
        return found

    def _start(self, template: InstanceTemplate, env: str, indexes: list[int]) -> list[str]:
        """Create and start one container per index, concurrently; all or none (on failure, remove ours).

        Returns the ids of the containers it created.
        """
        from docker.errors import APIError

        created: list[str] = []
        lock = threading.Lock()

        def start(index: int) -> None:
            with engine_errors(f"start {container_name(env, index)}", SchedulerError):
                try:
                    container = self.client.api.create_container(
                        template.image, name=container_name(env, index),
                        labels={**template.labels, labels.INDEX: str(index)},
                        environment=template.environment, ports=[template.container_port],
                        host_config=self.client.api.create_host_config(
                            restart_policy=RESTART_POLICY, log_config=template.log_config,
                            port_bindings={template.container_port: (self.bind_address, None)}),
                    )
                except APIError as exc:
                    if exc.status_code != 409:
                        raise
                    raise EnvironmentExists(f"environment {env} exists already: container {container_name(env, index)} "
                                            "was created by another process", hint="pick another --name") from None
                with lock:
                    created.append(container["Id"])
                self.client.api.start(container["Id"])

        try:
            _run_all(start, indexes)
        except BaseException:
            with contextlib.suppress(SchedulerError):
                self._remove(created, graceful=False)
            raise
        return created

    def _remove(self, ids: list[str], graceful: bool) -> None:
        """Stop (SIGTERM, then SIGKILL after STOP_TIMEOUT) and remove containers, concurrently."""
        from docker.errors import NotFound

        def remove(container_id: str) -> None:
            with engine_errors(f"remove container {container_id[:12]}", SchedulerError):
                try:
                    if graceful:
                        self.client.api.stop(container_id, timeout=STOP_TIMEOUT)
                    self.client.api.remove_container(container_id, v=True, force=True)
                except NotFound:
                    pass  # gone already: what we wanted

        _run_all(remove, ids)

    # -- readiness -----------------------------------------------------------------------------------------
    def _probe_all(self, containers: Sequence[Summary]) -> dict[str, bool]:
        """Container id -> does it answer its health path with 2xx (running ones only)."""
        running = [c for c in containers if c["State"] == "running"]
        return dict(zip((c["Id"] for c in running), probe_each(self._probe, running), strict=True))

    def _probe(self, summary: Summary) -> bool:
        host, port = published_address(summary)
        path = (summary.get("Labels") or {}).get(labels.HEALTH_PATH, "/")
        return bool(port) and not check_health(host, port, path, timeout=PROBE_TIMEOUT)

    def _raise_if_exited(self, name: str, containers: Sequence[Summary], exit_codes: dict[str, str]) -> None:
        exited = [(c, reason) for c in sorted(containers, key=instance_index)
                  if (reason := exit_reason(c, exit_codes.get(c["Id"])))]
        if not exited:
            return
        details: list[str] = []
        tails = last_lines_of(self.client, [c["Id"] for c, _ in exited], LOG_TAIL_LINES)
        for (summary, reason), tail in zip(exited, tails, strict=True):
            details.append(f"{instance_from(summary, None).id}: {reason}; last log lines:")
            details.extend(f"  {line}" for line in tail)
        names = ", ".join(instance_from(c, None).id for c, _ in exited)
        raise EnvironmentFailed(f"environment {name} failed: {names} exited", details)

    def _timed_out(self, env: Environment, timeout: float) -> EnvironmentFailed:
        unhealthy = [(c, i) for c, i in zip(env.attrs["containers"], env.instances, strict=True) if not i.healthy]
        details: list[str] = []
        tails = last_lines_of(self.client, [c["Id"] for c, _ in unhealthy], LOG_TAIL_LINES)
        for (summary, instance), tail in zip(unhealthy, tails, strict=True):
            path = (summary.get("Labels") or {}).get(labels.HEALTH_PATH, "/")
            details.append(f"{instance.id}: {instance.state}, {instance.address}{path} not answering 2xx; "
                           "last log lines:")
            details.extend(f"  {line}" for line in tail)
        return EnvironmentFailed(
            f"environment {env.name} not ready after {timeout:g}s: "
            f"{len(env.healthy_instances)}/{env.wanted_instances} instances healthy", details)


def _run_all(action: Callable[[Any], None], items: Sequence[Any]) -> None:
    """action(item) for every item concurrently; wait for all, then raise the first error.

    Even when interrupted (Ctrl-C, a Jenkins abort) it waits for the calls under way and drops
    the ones not begun: a cleanup after it must not race a thread still starting a container.
    """
    if not items:
        return
    from concurrent.futures import ThreadPoolExecutor, wait  # here: `bgci promote` never needs it

    pool = ThreadPoolExecutor(min(MAX_WORKERS, len(items)))
    try:
        futures = [pool.submit(action, item) for item in items]
        wait(futures)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception()]
    if errors:
        raise errors[0]
