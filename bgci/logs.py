"""Instances' logs, whatever the backend: --since, the engine's timestamps, and merging by time.

Pure: no Docker, no HTTP. The backends read (bgci/schedulers/local_logs.py: the
engine's logs API; bgci/schedulers/marathon/sandbox.py: the Mesos agents'
sandbox files) and hand back :class:`~bgci.schedulers.base.LogLine`\\ s; this
module decides their order.

Order, local: every line carries the engine's timestamp. Without follow, all
instances' lines are merged by it (ties: instance order), so the output is in
time order exactly. With follow, lines arrive over one stream per instance; a
line goes out as soon as every live stream has passed its time, or at the
latest `FOLLOW_WINDOW` seconds after it arrived. So the output is in time order
unless a line reaches bgci more than that window after a later line of another
instance; each instance's own lines always keep their order.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bgci.errors import ConfigError

# What `docker logs` can read back (any other driver only with the engine's dual logging cache on).
READABLE_DRIVERS = ("json-file", "local", "journald")
FOLLOW_WINDOW = 0.3  # seconds a followed line may wait for lines of other instances with earlier times
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
# RFC 3339 with nanoseconds, as the engine writes it with timestamps=true (trailing zeros trimmed).
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class LogLine:
    """One line an instance wrote (stdout or stderr), without its newline."""

    instance: str  # Instance.id: the container name (local) or the Marathon task id
    time: datetime | None  # the engine's timestamp (local, UTC); None where the backend has none (Marathon)
    text: str


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `30s`, `2h`, `1h30m`, `2d` (that long ago), or an ISO 8601 time; local time when it names no
    offset, as `docker logs --since` reads it. Raises ConfigError (option `since`) otherwise."""
    value = text.strip()
    parts = _DURATION.findall(value)
    if parts and "".join(number + unit for number, unit in parts) == value:
        seconds = sum(float(number) * UNITS[unit] for number, unit in parts)
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"since {text!r}: neither a duration (10m, 30s, 2h, 1h30m) nor an ISO 8601 time "
                          "(2024-05-01T12:00:00Z)", option="since") from None
    return (when if when.tzinfo else when.astimezone()).astimezone(UTC)


def parse_engine_line(instance: str, raw: str) -> LogLine:
    """A line of the engine's logs with timestamps=true: `2024-05-01T12:00:00.123456789Z text`."""
    stamp, _, text = raw.partition(" ")
    match = _STAMP.fullmatch(stamp)
    if not match:
        return LogLine(instance, None, raw)
    seconds, fraction, zone = match.groups()
    when = datetime.fromisoformat(f"{seconds}.{(fraction or '').ljust(6, '0')[:6]}"
                                  f"{'+00:00' if zone == 'Z' else zone}")
    return LogLine(instance, when.astimezone(UTC), text)


def _time_key(line: LogLine) -> datetime:
    return line.time or datetime.min.replace(tzinfo=UTC)


def merge_by_time(streams: Iterable[Iterable[LogLine]]) -> Iterator[LogLine]:
    """Each stream is in its own order; merged by time, ties in the streams' order (heapq.merge is stable)."""
    return heapq.merge(*streams, key=_time_key)


def format_line(line: LogLine, width: int = 0) -> str:
    """`web-app-abc.2 | text`: the instance, padded to `width`, then the line."""
    return f"{line.instance:<{width}} | {line.text}"


class TimeOrderedBuffer:
    """Lines of several live streams, released in time order (see the module's docstring).

    A line is released once every live stream has reached its time (a stream's
    lines come in order, so none can come earlier), or `window` seconds after it
    arrived. A stream that ended no longer holds the others back.
    """

    def __init__(self, sources: Iterable[str], window: float = FOLLOW_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reached: dict[str, datetime | None] = dict.fromkeys(sources)
        self._heap: list[tuple[datetime, int, float, LogLine]] = []
        self._count = 0
        self.window = window
        self._clock = clock

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, source: str, line: LogLine) -> None:
        key = _time_key(line)
        reached = self._reached.get(source)
        if source in self._reached and (reached is None or key > reached):
            self._reached[source] = key
        self._count += 1
        heapq.heappush(self._heap, (key, self._count, self._clock(), line))

    def end(self, source: str) -> None:
        self._reached.pop(source, None)

    def ready(self) -> list[LogLine]:
        """The lines that may go out now, in order."""
        now = self._clock()
        marks = list(self._reached.values())
        floor = None if None in marks else min(marks, default=None)
        out = []
        while self._heap:
            key, _, arrived, _ = self._heap[0]
            safe = not marks or (floor is not None and key <= floor)
            if not safe and now - arrived < self.window:
                break
            out.append(heapq.heappop(self._heap)[3])
        return out

    def next_due(self) -> float | None:
        """Seconds until the oldest held line is released by the window; None when none is held."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0][2] + self.window - self._clock())

    def drain(self) -> list[LogLine]:
        return [heapq.heappop(self._heap)[3] for _ in range(len(self._heap))]
