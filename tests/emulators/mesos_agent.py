"""The Mesos agent endpoints the Marathon emulator's tasks need for their logs: /state and /files/*.

Test support, never imported by ``bgci``. Each task gets a real sandbox directory
(``<root>/slaves/<agent>/frameworks/<framework>/executors/<task>/runs/<run>``) with
``stdout`` and ``stderr`` files, written by a thread attached to the task's container
before it starts: what ``docker run`` attached does, which is how Mesos' Docker
executor fills a sandbox (apache/mesos src/docker/docker.hpp: ``Docker::run`` hands
the CLI the stdout/stderr it writes to). So the files hold the app's output whatever
Docker log driver the task has, as on a real agent.

The endpoints follow apache/mesos src/files/files.cpp (FilesProcess):

* ``GET /files/read?path=&offset=&length=`` -> ``{"data": str, "offset": int}``. ``path`` missing:
  400 ``Expecting 'path=value' in query.``; offset/length not numbers: 400 ``Failed to parse ...``;
  a path not served: 404 (empty body); a directory: 400 ``Cannot read a directory.``; offset
  defaults to -1, which means the file's size; length defaults to the rest of the file and is
  capped at 16 pages (64 KiB); an offset at or past the end answers ``{"offset": size, "data": ""}``.
* ``GET /files/browse?path=`` -> a list of ``{path, nlink, size, mtime, mode, uid, gid}``, sorted.
* ``GET /files/debug`` -> the attached paths (virtual -> real); each sandbox is attached under its
  own real path, as the agent attaches an executor's directory.
* ``GET /state`` -> ``{id, pid, hostname, frameworks: [{id, name, executors: [{id, name, source,
  directory, tasks, completed_tasks}], completed_executors}], completed_frameworks}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
READ_CAP = PAGE_SIZE * 16  # files.cpp: "Cap the read length at 16 pages."


class MesosAgent:
    """Sandboxes of the emulator's tasks, served on their own loopback port like an agent's 5051."""

    def __init__(self, host: str, agent_id: str, framework_id: str) -> None:
        self.host = host
        self.agent_id = agent_id
        self.framework_id = framework_id
        self.root = Path(tempfile.mkdtemp(prefix="bgci-emu-mesos-"))
        self.port = 0
        self.url = ""
        self._lock = threading.Lock()
        self._executors: dict[str, dict[str, Any]] = {}  # task id -> executor JSON (live)
        self._completed: dict[str, dict[str, Any]] = {}
        self._attached: dict[str, str] = {}  # virtual path -> real path
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = type("AgentHandler", (_Handler,), {"agent": self})
        self._server = ThreadingHTTPServer((self.host, 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                         name="mesos-agent-emu-http", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- sandboxes -------------------------------------------------------------------------------------------
    def sandbox(self, task_id: str) -> Path:
        """The task's sandbox directory (created once; a relaunch of the same task id appends to it)."""
        with self._lock:
            if task_id in self._executors:
                return Path(self._executors[task_id]["directory"])
            directory = (self.root / "slaves" / self.agent_id / "frameworks" / self.framework_id / "executors"
                         / task_id / "runs" / str(uuid.uuid4()))
            directory.mkdir(parents=True)
            for name in ("stdout", "stderr"):
                (directory / name).touch()
            real = str(directory.resolve())
            self._attached[real] = real
            self._executors[task_id] = {
                "id": task_id, "name": f"Command Executor (Task: {task_id})", "source": task_id,
                "directory": real, "container": str(uuid.uuid4()),
                "tasks": [{"id": task_id, "framework_id": self.framework_id, "executor_id": "",
                           "slave_id": self.agent_id, "state": "TASK_RUNNING"}],
                "queued_tasks": [], "completed_tasks": [],
            }
            return directory

    def capture(self, task_id: str, docker_api: Any, container_id: str) -> None:
        """Attach to the (created, not yet started) container and copy its output into the sandbox."""
        directory = self.sandbox(task_id)
        stream = docker_api.attach(container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True)
        thread = threading.Thread(target=_copy, args=(stream, directory), name=f"mesos-agent-emu-{task_id[-8:]}",
                                  daemon=True)
        thread.start()
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def complete(self, task_id: str, state: str) -> None:
        """The task ended: its executor moves to completed_executors; the sandbox stays readable."""
        with self._lock:
            executor = self._executors.pop(task_id, None)
            if executor is not None:
                executor["completed_tasks"] = [{**t, "state": state} for t in executor["tasks"]]
                executor["tasks"] = []
                self._completed[task_id] = executor

    def state(self) -> dict[str, Any]:
        with self._lock:
            framework = {"id": self.framework_id, "name": "marathon",
                         "executors": [json.loads(json.dumps(e)) for e in self._executors.values()],
                         "completed_executors": [json.loads(json.dumps(e)) for e in self._completed.values()]}
        return {"id": self.agent_id, "pid": f"slave(1)@{self.host}:{self.port}", "hostname": self.host,
                "frameworks": [framework], "completed_frameworks": []}

    def resolve(self, virtual: str) -> Path | None:
        """files.cpp resolve(): the longest attached prefix, then the rest below it, never outside it."""
        tokens = virtual.rstrip("/").split("/")
        with self._lock:
            attached = dict(self._attached)
        for cut in range(len(tokens), 0, -1):
            prefix = "/".join(tokens[:cut])
            if prefix in attached:
                real = Path(attached[prefix], *tokens[cut:]).resolve()
                inside = real == Path(attached[prefix]) or Path(attached[prefix]) in real.parents
                return real if inside and real.exists() else None
        return None


def _copy(stream: Any, directory: Path) -> None:
    # The stream ends when the container is removed (an error then, suppressed: the normal end).
    with open(directory / "stdout", "ab") as out, open(directory / "stderr", "ab") as err, \
            contextlib.suppress(Exception):
        for stdout, stderr in stream:
            for data, target in ((stdout, out), (stderr, err)):
                if data:
                    target.write(data)
                    target.flush()


class _Handler(BaseHTTPRequestHandler):
    agent: MesosAgent
    protocol_version = "HTTP/1.1"
    server_version = "Mesos-emulator"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("mesos-agent-emulator: " + format, *args)

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = (json.dumps(body) if content_type == "application/json" else str(body)).encode("utf-8",
                                                                                              "surrogateescape")
        if status == 404 and body == "":
            data = b""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        route = parsed.path.rstrip("/")
        if route in ("/state", "/state.json", "/slave(1)/state", "/slave(1)/state.json"):
            return self._send(200, self.agent.state())
        if route in ("/files/debug", "/files/debug.json"):
            with self.agent._lock:
                return self._send(200, dict(self.agent._attached))
        if route in ("/files/read", "/files/read.json"):
            return self._read(query)
        if route in ("/files/browse", "/files/browse.json"):
            return self._browse(query)
        return self._send(404, "", "text/plain")

    def _read(self, query: dict[str, str]) -> None:
        path = query.get("path", "")
        if not path:
            return self._send(400, "Expecting 'path=value' in query.\n", "text/plain")
        numbers = {}
        for name in ("offset", "length"):
            try:
                numbers[name] = int(query[name]) if name in query else -1
            except ValueError:
                return self._send(400, f"Failed to parse {name}: Failed to convert '{query[name]}' to number.\n",
                                  "text/plain")
        real = self.agent.resolve(path)
        if real is None:
            return self._send(404, "", "text/plain")
        if real.is_dir():
            return self._send(400, "Cannot read a directory.\n", "text/plain")
        size = real.stat().st_size
        offset = size if numbers["offset"] == -1 else numbers["offset"]
        length = size - offset if numbers["length"] == -1 else numbers["length"]
        length = min(length, READ_CAP)
        if offset >= size:
            return self._send(200, {"offset": size, "data": ""})
        if offset < 0:
            return self._send(500, f"Failed to seek file at '{real}': Invalid argument", "text/plain")
        with open(real, "rb") as handle:
            handle.seek(offset)
            data = handle.read(max(0, length))
        return self._send(200, {"offset": offset, "data": data.decode("utf-8", "surrogateescape")})

    def _browse(self, query: dict[str, str]) -> None:
        path = query.get("path", "")
        if not path:
            return self._send(400, "Expecting 'path=value' in query.\n", "text/plain")
        real = self.agent.resolve(path)
        if real is None:
            return self._send(404, "", "text/plain")
        listing = []
        for entry in sorted(real.iterdir()) if real.is_dir() else []:
            info = entry.stat()
            listing.append({"path": f"{path.rstrip('/')}/{entry.name}", "nlink": info.st_nlink,
                            "size": info.st_size, "mtime": info.st_mtime, "mode": stat.filemode(info.st_mode),
                            "uid": str(info.st_uid), "gid": str(info.st_gid)})
        return self._send(200, listing)
