"""The deploy events of an app: a durable log, and the counts and times Prometheus sees.

Switches (promote, rollback, auto-rollback) are in the state file's history, which
keeps only the last 50; environments come and go on the scheduler, which keeps no
record of what was destroyed. So the application layer appends every event, one
JSON line each, to `[metrics] events_file` (a single O_APPEND write per line: a
reader sees whole lines). :func:`all_events` joins that log with the history, so
switches made before the log existed (or by code that bypassed it) still count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from bgci.state import RouterState, utc_now

ACTIONS = ("create", "destroy", "promote", "rollback", "auto-rollback", "scale")


@dataclass(frozen=True)
class DeployEvent:
    """One line of the deploy events log: a create, promote, rollback or destroy."""

    action: str
    env: str
    sha: str = ""
    at: str = ""  # ISO 8601, UTC, seconds (as the state file writes it)
    by: str = ""
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.action, self.env, self.sha, self.at)

    @property
    def timestamp(self) -> float:
        try:
            return datetime.fromisoformat(self.at).timestamp()
        except ValueError:
            return 0.0


def new_event(action: str, env: str, sha: str = "", by: str = "", reason: str = "") -> DeployEvent:
    return DeployEvent(action=action, env=env, sha=sha, at=utc_now(), by=by, reason=reason)


class EventLog:
    """Append-only JSON lines; unreadable lines (a torn write after a crash) are skipped when read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: DeployEvent) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(asdict(event), sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[DeployEvent]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        events = []
        known = set(DeployEvent.__dataclass_fields__)
        for line in text.splitlines():
            try:
                data = json.loads(line)
                events.append(DeployEvent(**{k: str(v) for k, v in data.items() if k in known}))
            except (ValueError, TypeError):
                continue
        return events


def from_history(state: RouterState) -> list[DeployEvent]:
    return [DeployEvent(action=s.action, env=s.env, sha=s.sha, at=s.at, by=s.by, reason=s.reason)
            for s in state.history]


def all_events(logged: Iterable[DeployEvent], state: RouterState) -> list[DeployEvent]:
    """The log and the state history as one list, each event once, oldest first."""
    seen: dict[tuple[str, str, str, str], DeployEvent] = {}
    for event in [*logged, *from_history(state)]:
        seen.setdefault(event.key, event)
    return sorted(seen.values(), key=lambda e: e.at)


@dataclass(frozen=True)
class ActionCount:
    """How many events of one action, and when the newest was."""

    action: str
    count: int
    last: float  # unix time of the newest, 0 when none


def count_by_action(events: Iterable[DeployEvent]) -> list[ActionCount]:
    """Every known action (zero when it never happened), then any others, with its count and newest time."""
    counts: dict[str, list[float]] = {action: [] for action in ACTIONS}
    for event in events:
        counts.setdefault(event.action, []).append(event.timestamp)
    return [ActionCount(action, len(times), max(times, default=0.0)) for action, times in counts.items()]
