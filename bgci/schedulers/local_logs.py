"""The local backend's logs: the engine's logs API for each container, with timestamps to merge by.

Without follow, each container's lines are read whole and merged by time. With
follow, one thread per container reads its stream (follow=True) into one queue,
and :class:`~bgci.logs.TimeOrderedBuffer` puts them in time order as they
arrive; closing the iterator (or Ctrl-C/SIGTERM inside it) closes every stream
and joins every thread. Following ends by itself when every container has stopped.

A log driver the engine cannot read back (`none`, or `syslog`/`fluentd`/... without
the engine's dual logging cache) is one clear SchedulerError naming the driver.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bgci.dockerhost import engine_errors, explanation
from bgci.errors import SchedulerError
from bgci.logs import READABLE_DRIVERS, TimeOrderedBuffer, merge_by_time, parse_engine_line
from bgci.schedulers.base import LogLine

if TYPE_CHECKING:
    import docker

    from bgci.config import DeploySettings

JOIN_TIMEOUT = 2.0  # seconds to wait for a reader thread once its stream is closed
QUEUE_POLL = 0.5  # seconds the follower waits on its queue at most (so Ctrl-C is seen at once)

Instances = Sequence[tuple[str, str]]  # (instance name, container id), in index order


def read_logs(client: docker.DockerClient, instances: Instances, since: datetime | None = None,
              tail: int | None = None, follow: bool = False) -> Iterator[LogLine]:
    """Every container's lines (`tail` per container), merged by the engine's timestamps."""
    if follow:
        return _follow(client, instances, since, tail)
    return merge_by_time([_history(client, name, cid, since, tail) for name, cid in instances])


def log_config_of(deploy: DeploySettings) -> dict[str, Any] | None:
    """HostConfig.LogConfig from [deploy] log_driver and log_options; None: the engine's default."""
    if not (deploy.log_driver or deploy.log_options):
        return None
    return {"Type": deploy.log_driver, "Config": dict(deploy.log_options)}


def last_lines_of(client: docker.DockerClient, ids: Sequence[str], count: int) -> list[list[str]]:
    """Each container's last lines, for error messages; concurrently, since the engine holds a restarting
    container's logs back for up to its restart delay."""
    if not ids:
        return []
    from concurrent.futures import ThreadPoolExecutor  # only for a failure's message: not on promote's path

    with ThreadPoolExecutor(min(16, len(ids))) as pool:
        return list(pool.map(lambda container_id: last_lines(client, container_id, count), ids))


def last_lines(client: docker.DockerClient, container_id: str, count: int) -> list[str]:
    """A container's last non-empty lines, for error messages: never raises."""
    from docker.errors import DockerException

    try:
        raw = client.api.logs(container_id, stdout=True, stderr=True, tail=count)
    except DockerException:
        return ["(logs unavailable)"]
    lines = raw.decode("utf-8", "replace").splitlines()
    return [line for line in lines if line.strip()] or ["(no output)"]


def _options(since: datetime | None, tail: int | None) -> dict[str, Any]:
    # The engine takes whole seconds here (docker-py drops fractions): read from the second, filter exactly.
    options: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True,
                               "tail": "all" if tail is None else tail}
    if since is not None:
        options["since"] = max(1, math.floor(since.timestamp()))
    return options


def _kept(line: LogLine, since: datetime | None) -> bool:
    return since is None or line.time is None or line.time >= since


def _history(client: docker.DockerClient, name: str, container_id: str, since: datetime | None,
             tail: int | None) -> list[LogLine]:
    if tail == 0:
        return []
    with _reading(client, name, container_id):
        raw = client.api.logs(container_id, **_options(since, tail))
    lines = (parse_engine_line(name, text) for text in raw.decode("utf-8", "replace").splitlines())
    return [line for line in lines if _kept(line, since)]


@contextlib.contextmanager
def _reading(client: docker.DockerClient, name: str, container_id: str) -> Iterator[None]:
    """Engine errors as bgci's; a driver the engine cannot read back named in one line."""
    from docker.errors import APIError

    with engine_errors(f"read the logs of {name}", SchedulerError):
        try:
            yield
        except APIError as exc:
            if "does not support reading" in explanation(exc):
                raise unreadable_driver(name, _driver(client, container_id)) from None
            raise


def unreadable_driver(name: str, driver: str) -> SchedulerError:
    return SchedulerError(
        f"cannot read the logs of {name}: its log driver {driver!r} does not let the Docker engine read them "
        "back", hint=f"`bgci env logs` reads {', '.join(READABLE_DRIVERS)} (others only with the engine's dual "
                     f"logging on); read them where {driver} sends them, or change [deploy] log_driver")


def _driver(client: docker.DockerClient, container_id: str) -> str:
    from docker.errors import DockerException

    with contextlib.suppress(DockerException):
        return str(client.api.inspect_container(container_id)["HostConfig"]["LogConfig"]["Type"])
    return "?"


def _follow(client: docker.DockerClient, instances: Instances, since: datetime | None,
            tail: int | None) -> Iterator[LogLine]:
    arrivals: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    streams: list[Any] = []
    threads: list[threading.Thread] = []
    try:
        for name, container_id in instances:
            with _reading(client, name, container_id):
                stream = client.api.logs(container_id, stream=True, follow=True, **_options(since, tail))
            streams.append(stream)
            thread = threading.Thread(target=_pump, args=(name, stream, arrivals), name=f"bgci-logs-{name}",
                                      daemon=True)
            thread.start()
            threads.append(thread)
        buffer = TimeOrderedBuffer(name for name, _ in instances)
        live = len(threads)
        while live or len(buffer):
            due = buffer.next_due()
            try:
                kind, name, item = arrivals.get(timeout=QUEUE_POLL if due is None else min(due, QUEUE_POLL))
            except queue.Empty:
                pass
            else:
                if kind == "line" and _kept(item, since):
                    buffer.add(name, item)
                elif kind == "end":
                    live -= 1
                    buffer.end(name)
            yield from buffer.ready()
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)


def _pump(name: str, stream: Any, arrivals: queue.Queue[tuple[str, str, Any]]) -> None:
    """One container's stream into the queue, a line at a time; ends when the stream ends or is closed."""
    partial = b""
    try:
        for chunk in stream:
            partial += chunk
            *complete, partial = partial.split(b"\n")
            for raw in complete:
                arrivals.put(("line", name, parse_engine_line(name, raw.decode("utf-8", "replace"))))
        if partial:
            arrivals.put(("line", name, parse_engine_line(name, partial.decode("utf-8", "replace"))))
    except Exception:  # close() from the reader ends the stream with a socket error: the normal end
        pass
    finally:
        arrivals.put(("end", name, None))
