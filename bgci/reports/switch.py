"""After a promote or rollback: wait for the traffic after it, read nginx's log, write the page. The I/O edge.

The window runs from `before` seconds before the switch started to `after` seconds
after it was verified. The traffic after a switch has to happen before it can be
shown, so `wait_for_traffic` sleeps until the window has closed and nginx has
flushed its log buffers (flush=1s in templates/nginx/requests-log.conf); called later, it returns at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bgci.errors import BgciError
from bgci.files import write_atomic
from bgci.reports.page import SwitchReport, Verdict, render_switch_report, utc
from bgci.reports.requestlog import read_window
from bgci.reports.traffic import Window, summarize

if TYPE_CHECKING:
    from bgci.deployer import SwitchResult

FLUSH = 1.5  # seconds: nginx writes a buffered log line within 1 s
BEFORE = AFTER = 10.0  # default window, seconds


def window_for(result: SwitchResult, before: float, after: float) -> Window:
    """The window around `result` (a result without times, from an older caller, is taken as now)."""
    started = result.started_at or time.time()
    return Window.around(started, result.verified_at or started, before, after)


def wait_for_traffic(window: Window, *, log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
                     now: Callable[[], float] = time.time) -> float:
    """Sleep until the window has closed and nginx has flushed its log; the seconds slept."""
    remaining = window.end + FLUSH - now()
    if remaining <= 0:
        return 0.0
    log(f"switch report: collecting traffic until {window.end - window.switch_verified:g} s after the switch "
        f"was verified ({utc(window.end)}), {remaining:.1f} s")
    sleep(remaining)
    return remaining


def collect(log_path: Path, *, app: str, server_name: str, result: SwitchResult, window: Window,
            verdict: Verdict | None = None, now: Callable[[], float] = time.time) -> SwitchReport:
    """The report's data: the app's requests in the window, bucketed; the environment left behind listed first."""
    logged = read_window(log_path, window.start, window.end, app=app)
    traffic = summarize(logged.requests, window, order=[e for e in (result.previous, result.live) if e])
    return SwitchReport(app=app, server_name=server_name, result=result, traffic=traffic, log=logged,
                        verdict=verdict, generated_at=now())


def write(path: Path, report: SwitchReport) -> None:
    """Render and write the page atomically (Jenkins may archive it at any moment), making its directory."""
    html = render_switch_report(report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, html)
    except OSError as exc:
        raise BgciError(f"cannot write the switch report to {path}: {exc.strerror or exc}",
                        hint=f"the {report.result.action} itself succeeded; {report.result.live} is live",
                        option="report") from exc
