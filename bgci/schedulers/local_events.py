"""The local backend's container events: exits seen while a wait runs (ExitWatch, used by local.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

from bgci.dockerhost import engine_errors
from bgci.errors import SchedulerError

if TYPE_CHECKING:
    import docker

# `die` events this old are replayed when a wait begins: they cover an exit between create() and the wait.
EXIT_REPLAY_SECONDS = 2.0


class ExitWatch:
    """Exit codes from the `die` events of some containers, collected by a thread while a wait runs."""

    def __init__(self, client: docker.DockerClient, filters: dict[str, list[str]]) -> None:
        with engine_errors("watch container events", SchedulerError):
            self._stream = client.api.events(
                since=time.time() - EXIT_REPLAY_SECONDS, decode=True,
                filters={**filters, "type": ["container"], "event": ["die"]})
        self._codes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._collect, name="bgci-exit-watch", daemon=True)
        self._thread.start()

    def codes(self) -> dict[str, str]:
        """Container id -> exit code of its latest exit seen so far."""
        with self._lock:
            return dict(self._codes)

    def _collect(self) -> None:
        with contextlib.suppress(Exception):  # close() ends the stream with a socket error
            for event in self._stream:
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                with self._lock:
                    self._codes[event["id"]] = attributes.get("exitCode", "?")

    def __enter__(self) -> ExitWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stream.close()
        self._thread.join(timeout=2)
