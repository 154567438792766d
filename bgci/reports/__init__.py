"""Reports on what nginx served: a picture of one switch, from nginx's request log.

    requestlog.py  read the JSON lines of <nginx.dir>/logs/requests.log in a time window (I/O, the edge)
    traffic.py     pure: requests per second by environment, failures and p95 latency per 1 s bucket
    page.py        pure: the chart geometry and the self-contained HTML page (inline SVG, no script)

`Bgci.switch_report` puts them together after a promote or rollback.
"""

from bgci.reports.page import SwitchReport, Verdict, render_switch_report
from bgci.reports.requestlog import LoggedRequest, parse_line, read_window
from bgci.reports.traffic import Traffic, Window, percentile, summarize

__all__ = ["LoggedRequest", "SwitchReport", "Traffic", "Verdict", "Window", "parse_line", "percentile",
           "read_window", "render_switch_report", "summarize"]
