"""Chart geometry for the switch report: pixel coordinates for inline SVG, computed here, drawn by the template. Pure.

The x axis is time, in seconds from the moment the switch started; every chart of a
report shares it, and marks the switch (started, verified) with two vertical lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bgci.reports.traffic import BUCKET, Window

WIDTH, HEIGHT = 1100, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 30, 34  # margins around the plot area
# Colours by role in the switch: the environment left behind, the one made live, then any other.
PALETTE = ("#1f6fb4", "#2e9e44", "#e8861a", "#8e5bbd", "#8c564b", "#d6479b", "#6f6f6f")
NAMED = {"blue": "#1f6fb4", "green": "#2e9e44"}
FAILED_COLOUR = "#d62728"


@dataclass(frozen=True)
class Tick:
    at: float  # pixels along the axis
    label: str


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    lines: tuple[str, ...]  # SVG polyline points ("x,y x,y ..."), one per unbroken run
    area: str  # SVG path under the line ("" for none)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Marker:
    x: float
    label: str
    anchor: str  # SVG text-anchor: the label sits left (end) or right (start) of the line


@dataclass(frozen=True)
class Chart:
    """One chart: a plot area [left, right] x [top, bottom] in a WIDTH x HEIGHT SVG."""

    id: str
    title: str
    y_label: str
    left: float
    top: float
    right: float
    bottom: float
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    series: tuple[Series, ...] = ()
    bars: tuple[Bar, ...] = ()
    markers: tuple[Marker, ...] = ()
    band: tuple[float, float] = (0.0, 0.0)  # x from .. to: between the switch's start and its verification
    note: str = ""  # printed across an empty plot
    width: int = WIDTH
    height: int = HEIGHT


def colours_for(envs: Sequence[str]) -> dict[str, str]:
    """A colour per environment: blue/green by name when the name says so, else the palette in order."""
    colours: dict[str, str] = {}
    for env in envs:
        named = [c for word, c in NAMED.items() if word in env.lower() and c not in colours.values()]
        if len(named) == 1:
            colours[env] = named[0]
    free = [c for c in PALETTE if c not in colours.values()]
    for i, env in enumerate(e for e in envs if e not in colours):
        colours[env] = free[i % len(free)]
    return {env: colours[env] for env in envs}


def nice_ceiling(value: float) -> tuple[float, float]:
    """(top, step): an axis top of at least `value` in 1, 2 or 5 times a power of ten, with at most 5 steps."""
    if value <= 0:
        return 1.0, 0.25
    for power in range(math.floor(math.log10(value / 5)) - 1, 99):
        for unit in (1, 2, 2.5, 5):
            step = unit * 10.0 ** power
            if step * 5 >= value:
                return step * math.ceil(value / step - 1e-9), step
    raise AssertionError("unreachable")


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


class Frame:
    """The shared x axis (a window) and one y scale: data -> pixels."""

    def __init__(self, window: Window, y_top: float, y_step: float) -> None:
        self.window, self.y_top, self.y_step = window, y_top, y_step
        self.left, self.top, self.right, self.bottom = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM

    def x(self, at: float) -> float:
        span = max(self.window.end - self.window.start, 1e-9)
        return round(self.left + (at - self.window.start) / span * (self.right - self.left), 1)

    def y(self, value: float) -> float:
        return round(self.bottom - value / self.y_top * (self.bottom - self.top), 1)

    def centre(self, bucket: int) -> float:
        return self.x(self.window.start + (bucket + 0.5) * BUCKET)

    def x_ticks(self) -> tuple[Tick, ...]:
        """Whole seconds from the switch's start, in steps that keep about 20 or fewer labels."""
        w = self.window
        step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 10**9)
                    if (w.end - w.start) / s <= 22)
        first = math.ceil((w.start - w.switch_started) / step) * step
        ticks, offset = [], first
        while w.switch_started + offset <= w.end + 1e-6:
            ticks.append(Tick(self.x(w.switch_started + offset), "0" if offset == 0 else f"{offset:+g}"))
            offset += step
        return tuple(ticks)

    def y_ticks(self) -> tuple[Tick, ...]:
        count = round(self.y_top / self.y_step)
        return tuple(Tick(self.y(i * self.y_step), _number(i * self.y_step)) for i in range(count + 1))

    def markers(self) -> tuple[tuple[Marker, ...], tuple[float, float]]:
        w = self.window
        took = w.switch_verified - w.switch_started
        started, verified = self.x(w.switch_started), self.x(w.switch_verified)
        return (Marker(started, "switch started", "end"),
                Marker(verified, f"verified (+{took:.2f} s)", "start")), (started, verified)

    def chart(self, id: str, title: str, y_label: str, **parts: object) -> Chart:
        markers, band = self.markers()
        return Chart(id=id, title=title, y_label=y_label, left=self.left, top=self.top, right=self.right,
                     bottom=self.bottom, x_ticks=self.x_ticks(), y_ticks=self.y_ticks(), markers=markers,
                     band=band, **parts)  # type: ignore[arg-type]

    def series(self, name: str, colour: str, values: Sequence[float | None], *, area: bool = False) -> Series:
        """A step line, level across each bucket, broken where a value is None; `area` fills down to zero."""
        runs: list[list[tuple[float, float]]] = [[]]
        w = self.window
        for i, value in enumerate(values):
            if value is None:
                if runs[-1]:
                    runs.append([])
                continue
            y = self.y(value)
            runs[-1] += [(self.x(w.start + i * BUCKET), y), (self.x(min(w.start + (i + 1) * BUCKET, w.end)), y)]
        runs = [run for run in runs if run]
        lines = tuple(" ".join(f"{x:g},{y:g}" for x, y in run) for run in runs)
        fill = ""
        if area and runs:
            base = self.y(0)
            fill = " ".join(f"M{run[0][0]:g},{base:g} " + " ".join(f"L{x:g},{y:g}" for x, y in run)
                            + f" L{run[-1][0]:g},{base:g} Z" for run in runs)
        return Series(name, colour, lines, fill)


def rps_chart(window: Window, rps: dict[str, Sequence[int]], colours: dict[str, str]) -> Chart:
    top, step = nice_ceiling(max((max(v, default=0) for v in rps.values()), default=0))
    frame = Frame(window, top, step)
    series = tuple(frame.series(env, colours[env], counts, area=True) for env, counts in rps.items())
    return frame.chart("rps", "Requests per second by environment", "requests/s", series=series,
                       note="" if any(any(v) for v in rps.values()) else "no request in this window")


def failed_chart(window: Window, failed: Sequence[int]) -> Chart:
    top, step = nice_ceiling(max(failed, default=0))
    frame = Frame(window, top, step)
    width = max(frame.x(window.start + BUCKET) - frame.x(window.start) - 2, 1)
    bars = tuple(Bar(round(frame.centre(i) - width / 2, 1), frame.y(n), round(width, 1),
                     round(frame.y(0) - frame.y(n), 1), f"{n} failed at {i - _offset(window):+g} s")
                 for i, n in enumerate(failed) if n)
    return frame.chart("failed", "Failed requests per second", "failed/s", bars=bars,
                       note="" if bars else "no failed request")


def latency_chart(window: Window, p95: Sequence[float | None]) -> Chart:
    millis = [None if v is None else v * 1000 for v in p95]
    top, step = nice_ceiling(max((v for v in millis if v is not None), default=0))
    frame = Frame(window, top, step)
    series = (frame.series("p95", "#444444", millis),) if any(v is not None for v in millis) else ()
    return frame.chart("p95", "p95 latency (nginx request_time) per second", "ms", series=series,
                       note="" if series else "no request in this window")


def _offset(window: Window) -> float:
    """The switch's start, in buckets from the window's start."""
    return (window.switch_started - window.start) / BUCKET
