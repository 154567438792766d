"""Task logs from the Mesos agents' sandboxes: `/state` for the directory, `/files/read` for the bytes.

Mesos documents `/files/read` with `path`, `offset` and `length`, answering
`{"data": ..., "offset": n}`; with `offset=-1` it answers the file's size and no
data, a read stops at the end of the file and at 16 pages (64 KiB), and a path
the agent does not serve is 404 (apache/mesos src/files/files.cpp,
FilesProcess::read). A task's sandbox is its executor's `directory` in the
agent's `/state`; a Marathon Docker task runs under an executor of its own id
(Mesos' own `mesos cat` finds a sandbox the same way). Mesos' Docker executor
fills `stdout` and `stderr` there from `docker run`'s attached output, so they
hold the app's lines whatever Docker log driver the task has.

The files carry no timestamps, so lines are not merged by time: without
follow, instance after instance (in the order the tasks were staged), each
file's lines in order, stdout then stderr; with follow, the files are polled
every `poll_interval` and new lines come out in the order they are read, each
instance's lines in file order. `tail` counts per file.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from bgci.errors import SchedulerError, SchedulerUnavailable
from bgci.schedulers.base import LogLine
from bgci.schedulers.marathon.models import MarathonTask, malformed, read, read_list, read_object

CHUNK = 65536  # Mesos caps one read at 16 pages
POLL_INTERVAL = 0.5
FILES = ("stdout", "stderr")


class AgentClient:
    """One Mesos agent's HTTP API (`/state`, `/files/read`) on a shared Session; one method per call."""

    def __init__(self, session: requests.Session, url: str, timeout: float = 10.0) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.timeout = (min(timeout, 3.05), timeout)

    def state(self) -> Any:
        return self._get("/state", {})

    def read(self, path: str, offset: int, length: int | None = None) -> tuple[bytes, int] | None:
        """(data, offset) from /files/read; offset=-1 gives (b"", size); None when the agent has no such file."""
        params = {"path": path, "offset": str(offset), **({"length": str(length)} if length is not None else {})}
        answer = self._get("/files/read", params)
        if answer is None:
            return None
        where = f"{self.url}/files/read"
        data = read(read_object(answer, where), "data", str, where, "")
        # Offsets count bytes; the JSON string carries them as text.
        return data.encode("utf-8", "surrogateescape"), read(answer, "offset", int, where)

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            response = self.session.get(self.url + path, params=params, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise SchedulerUnavailable(f"Mesos agent {self.url} not answering {path}: {type(exc).__name__}",
                                       hint="is deploy.marathon.agent_port the agents' port (Mesos: 5051)?") from None
        if response.status_code == 404 and path == "/files/read":
            return None
        if response.status_code >= 400:
            reason = response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason
            raise SchedulerError(f"Mesos agent {self.url} answered {response.status_code} to {path}: {reason}")
        try:
            return response.json()
        except ValueError:
            raise malformed(f"{self.url}{path}", f"not JSON: {response.text[:60]!r}") from None


def sandbox_directory(state: Any, task_id: str, where: str) -> str | None:
    """The sandbox of `task_id` in an agent's /state: its executor's directory (executor id = task id, or an
    executor running that task); live executors first, then completed ones."""
    agent = read_object(state, where)
    for fi, framework in enumerate(read_list(agent, "frameworks", dict, where, [])):
        for key in ("executors", "completed_executors"):
            here = f"{where}.frameworks[{fi}]"
            for ei, executor in enumerate(read_list(framework, key, dict, here, [])):
                spot = f"{here}.{key}[{ei}]"
                tasks = [*read_list(executor, "tasks", dict, spot, []),
                         *read_list(executor, "completed_tasks", dict, spot, [])]
                if read(executor, "id", str, spot) == task_id or any(t.get("id") == task_id for t in tasks):
                    return read(executor, "directory", str, spot)
    return None


@dataclass
class SandboxFile:
    """One sandbox file being read: where the next read starts, and a line not yet ended."""

    instance: str
    agent: AgentClient
    path: str
    offset: int = 0
    partial: bytes = field(default=b"", repr=False)

    def read_new(self, until: int | None = None) -> list[LogLine]:
        """The complete lines written since the last read, up to byte `until` when given (a file the agent no
        longer has gives none)."""
        lines: list[LogLine] = []
        while until is None or self.offset < until:
            length = CHUNK if until is None else min(CHUNK, until - self.offset)
            answer = self.agent.read(self.path, self.offset, length)
            if answer is None or not answer[0]:
                break
            data, offset = answer
            self.offset = offset + len(data)
            *complete, self.partial = (self.partial + data).split(b"\n")
            lines += [LogLine(self.instance, None, raw.decode("utf-8", "replace")) for raw in complete]
        return lines

    def _read_range(self, start: int, end: int) -> bytes:
        """Bytes start..end, in as many reads as the agent's cap needs (padded if the file shrank)."""
        data = b""
        while start + len(data) < end:
            answer = self.agent.read(self.path, start + len(data), end - start - len(data))
            if answer is None or not answer[0]:
                break
            data += answer[0]
        return data.ljust(end - start, b"\0")

    def flush(self) -> list[LogLine]:
        """The last line when the file does not end with a newline (yet)."""
        rest, self.partial = self.partial, b""
        return [LogLine(self.instance, None, rest.decode("utf-8", "replace"))] if rest else []

    def seek_tail(self, count: int) -> int:
        """Start `count` lines before the end (all of the file when it has fewer); the size then."""
        answer = self.agent.read(self.path, -1)  # Mesos: offset -1 answers the size
        size = answer[1] if answer else 0
        if count == 0:
            self.offset = size
            return size
        start, seen = size, b""
        while start > 0 and seen.count(b"\n") <= count:  # count lines need count + 1 newlines before them
            end, start = start, max(0, start - CHUNK)
            seen = self._read_range(start, end) + seen
        ends = [i for i, byte in enumerate(seen) if byte == 0x0A]
        if seen.endswith(b"\n"):
            ends.pop()  # the last line's own newline
        self.offset = start + ends[-count] + 1 if len(ends) >= count else start
        return size


def open_files(tasks: Sequence[MarathonTask], agent_port: int, session: requests.Session,
               timeout: float) -> list[SandboxFile]:
    """stdout and stderr of each task's sandbox, found in its agent's /state (read once per agent)."""
    agents: dict[str, AgentClient] = {}
    states: dict[str, Any] = {}
    files = []
    for task in tasks:
        host = f"[{task.host}]" if ":" in task.host else task.host
        url = f"http://{host}:{agent_port}"
        agent = agents.setdefault(url, AgentClient(session, url, timeout))
        if url not in states:
            states[url] = agent.state()
        directory = sandbox_directory(states[url], task.id, f"{url}/state")
        if directory is None:
            raise SchedulerError(f"task {task.id}: its agent {url} lists no sandbox for it",
                                 hint="is deploy.marathon.agent_port the port of the agents that run the tasks?")
        files += [SandboxFile(task.id, agent, f"{directory.rstrip('/')}/{name}") for name in FILES]
    return files


def read_sandboxes(files: Sequence[SandboxFile], tail: int | None, follow: bool, session: requests.Session,
                   poll_interval: float = POLL_INTERVAL,
                   sleep: Callable[[float], None] = time.sleep) -> Iterator[LogLine]:
    """The files' lines (see the module's docstring for the order); closes `session` when done or closed."""
    try:
        # Every file's start first, before any line goes out: "now" is one moment for all of them.
        ends = [sandbox_file.seek_tail(tail) if tail is not None else None for sandbox_file in files]
        for sandbox_file, end in zip(files, ends, strict=True):
            # With a tail, the last lines as of then (more may have been written since: -f reads those).
            yield from sandbox_file.read_new(None if follow else end)
            if not follow:
                yield from sandbox_file.flush()
        while follow:
            sleep(poll_interval)
            for sandbox_file in files:
                yield from sandbox_file.read_new()
    finally:
        with contextlib.suppress(Exception):
            session.close()

