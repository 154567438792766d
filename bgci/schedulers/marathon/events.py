"""The event stream: /v2/events (Server-Sent Events) read in a thread, only ever a trigger.

Marathon's advice: events are unordered and may be missed, so each one only
wakes the waiter to re-read `/v2/apps/{id}` and `/v2/deployments`; polling
every poll interval covers a stream that is missing or drops. Task failures the
stream reports (status events with a failed state, unhealthy_task_kill_event)
are kept for the waiter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import requests

from bgci.errors import MarathonAPIError, SchedulerError
from bgci.schedulers.marathon.client import MarathonClient
from bgci.schedulers.marathon.models import TaskFailure

log = logging.getLogger(__name__)

EVENT_TYPES = ("deployment_success", "deployment_failed", "status_update_event", "health_status_changed_event",
               "unhealthy_task_kill_event")
EVENT_CONNECT_WAIT = 1.0  # seconds a wait gives the stream to attach before its first read
EVENT_RECONNECT_DELAYS = (0.2, 2.0)  # first and longest pause before reconnecting a dropped stream


def read_sse(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, data) of each Server-Sent Event; events whose data is not a JSON object are skipped."""
    event, data = "", []
    for line in lines:
        if not line.strip():
            if data:
                with contextlib.suppress(ValueError):
                    decoded = json.loads("\n".join(data))
                    if isinstance(decoded, dict):
                        yield event or str(decoded.get("eventType", "message")), decoded
            event, data = "", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def _shutdown(response: requests.Response) -> None:
    """Unblock a read of `response` in another thread, then close it."""
    with contextlib.suppress(Exception):
        response.raw.shutdown()  # urllib3 >= 2.3: shuts the socket's reading side
    with contextlib.suppress(Exception):
        response.close()


class EventWatch:
    """/v2/events for one app, read in a thread: wakes the waiter on each relevant event, keeps task failures.

    The stream is only a trigger (events are unordered and may be missed): the
    waiter re-reads the app on each wake and at least every poll interval. A
    dropped stream is reconnected with backoff; a Marathon without one (4xx) is
    left alone, and polling does the work.
    """

    def __init__(self, client: MarathonClient, app_id: str) -> None:
        self.client = client
        self.app_id = app_id
        self._session = client.new_session()  # a stream holds its connection: keep it out of the shared pool
        self._changed = threading.Event()
        self._attached = threading.Event()
        self._settled = threading.Event()  # attached, or known not to attach soon
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._failures: list[TaskFailure] = []
        self._response: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, name=f"bgci-marathon-events{app_id}", daemon=True)

    def __enter__(self) -> EventWatch:
        self._thread.start()
        self._settled.wait(EVENT_CONNECT_WAIT)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown(response)
        self._thread.join(timeout=2)
        self._session.close()

    @property
    def attached(self) -> bool:
        return self._attached.is_set()

    def clear(self) -> None:
        self._changed.clear()

    def wait(self, seconds: float) -> None:
        """Until an event about the app arrives, or `seconds` pass."""
        self._changed.wait(seconds)

    def failures(self) -> list[TaskFailure]:
        with self._lock:
            return list(self._failures)

    def _run(self) -> None:
        try:
            self._connect_and_follow()
        except Exception:  # never a traceback from a helper thread: polling carries on without events
            log.exception("Marathon event stream reader stopped")
        finally:
            self._settled.set()

    def _connect_and_follow(self) -> None:
        delay = EVENT_RECONNECT_DELAYS[0]
        while not self._stop.is_set():
            try:
                response = self.client.events(EVENT_TYPES, self._session)
            except MarathonAPIError as exc:
                if exc.is_client_error():  # no event stream here (404, 405, 401): polling only
                    log.info("Marathon event stream not available (%s): polling", exc)
                    return
                response = None
            except SchedulerError:
                response = None
            if response is not None:
                self._follow(response)
                delay = EVENT_RECONNECT_DELAYS[0]
            self._settled.set()
            self._changed.set()  # back from a drop: events may have been missed, re-read now
            self._stop.wait(delay)
            delay = min(delay * 2, EVENT_RECONNECT_DELAYS[1])

    def _follow(self, response: requests.Response) -> None:
        with self._lock:
            self._response = response
        if self._stop.is_set():  # __exit__ ran while we connected, and saw no response to shut down
            response.close()
            return
        self._attached.set()
        self._settled.set()
        try:
            chunk_size = None if response.raw.chunked else 1  # None: each chunk as it arrives
            for event_type, data in read_sse(response.iter_lines(chunk_size=chunk_size, decode_unicode=True)):
                self._on_event(event_type, data)
        except (requests.RequestException, OSError, ValueError, AttributeError):
            pass  # dropped (or shut down by __exit__): the loop decides
        finally:
            self._attached.clear()
            with self._lock:
                self._response = None
            response.close()

    def _on_event(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type.startswith("deployment_"):
            if self._plan_touches_app(data):
                self._changed.set()
            return
        if data.get("appId") != self.app_id:
            return
        failure = TaskFailure.from_event(event_type, data)
        if failure is not None:
            with self._lock:
                self._failures.append(failure)
        self._changed.set()

    def _plan_touches_app(self, data: dict[str, Any]) -> bool:
        plan = data.get("plan")
        if not isinstance(plan, dict) or not isinstance(plan.get("steps"), list):
            return True  # cannot tell: a re-read costs little
        actions = [a for s in plan["steps"] if isinstance(s, dict) for a in s.get("actions") or []]
        return any(isinstance(a, dict) and a.get("app") == self.app_id for a in actions)

