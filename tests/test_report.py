"""The switch report's pure parts on a synthetic request log: reading a window, bucketing, p95, the page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bgci.deployer import SwitchResult
from bgci.reports import Verdict, Window, parse_line, percentile, read_window, render_switch_report, summarize
from bgci.reports.charts import colours_for, nice_ceiling
from bgci.reports.page import SwitchReport
from bgci.reports.requestlog import LogWindow, lines_backwards
from bgci.reports.traffic import classify

T0 = 1_796_075_876.0  # the switch starts here
SHAS = {"web-blue": "a" * 40, "web-green": "b" * 40}


def line(at: float, env: str, status: int = 200, request_time: float = 0.002, *, role: str = "live",
         upstream_status: str | None = None, app: str = "web", uri: str = "/") -> str:
    upstream = str(status) if upstream_status is None else upstream_status
    return json.dumps({"time": "2026-11-30T21:57:56+00:00", "msec": round(at, 3), "app": app, "env": env,
                       "sha": SHAS.get(env, ""), "role": role, "host": "web.localhost", "method": "GET", "uri": uri,
                       "status": status, "bytes": 41, "request_time": request_time,
                       "upstream_addr": "-" if upstream in ("", "-") else "127.0.0.1:39323",
                       "upstream_status": upstream, "upstream_time": "0.001"}, separators=(",", ":"))


def synthetic(path: Path) -> list[str]:
    """10 req/s from blue for 5 s before the switch, 10 req/s from green for 5 s after; a few oddities."""
    lines = [line(T0 - 30 + i * 0.5, "web-blue") for i in range(20)]  # long before the window
    lines += [line(T0 - 5 + i / 10, "web-blue", request_time=0.001 * (i % 10 + 1)) for i in range(50)]
    lines += [line(T0 + 0.3 + i / 10, "web-green", request_time=0.010) for i in range(47)]
    lines += [
        line(T0 + 1.05, "web-green", 502, upstream_status="502"),  # nginx: no instance answered
        line(T0 + 1.10, "web-green", 504, upstream_status="-"),
        line(T0 + 2.50, "web-green", 500, uri="/boom"),  # the app's own error
        line(T0 + 2.60, "web-green", 404, uri="/missing"),  # the app's 404: failed too
        line(T0 + 2.70, "web-green", 499, upstream_status=""),  # the client went away: not failed
        line(T0 + 3.00, "web-green", role="preview"),  # not plotted
        line(T0 + 3.10, "web-green", app="other-app"),  # another app's server in a shared nginx
        '{"torn": ',
    ]
    lines.insert(60, line(T0 - 4.95, "web-blue"))  # out of order: a worker flushed late
    lines += [line(T0 + 20 + i, "web-green") for i in range(5)]  # after the window
    path.write_text("\n".join(lines) + "\n")
    return lines


@pytest.fixture
def window() -> Window:
    return Window.around(T0, T0 + 0.25, before=5, after=4.75)  # [T0 - 5, T0 + 5): 10 buckets


def test_parse_line_reads_nginx_json_and_refuses_anything_else() -> None:
    request = parse_line(line(T0, "web-green", 200))
    assert request is not None
    assert (request.at, request.env, request.role, request.status, request.upstream_answered) == (
        T0, "web-green", "live", 200, True)
    assert parse_line(line(T0, "web-green", 502, upstream_status="502")).upstream_answered is False
    assert parse_line(line(T0, "x", 200, upstream_status="502, 200")).upstream_answered is True  # retried
    for bad in ("", "{}", "not json", '{"msec": "x", "app": "a", "env": "", "sha": "", "role": "", "status": 1,'
                                      ' "request_time": 0}', "[1, 2]"):
        assert parse_line(bad) is None


def test_read_window_reads_back_from_the_end_only_as_far_as_needed(tmp_path: Path, window: Window) -> None:
    log = tmp_path / "requests.log"
    synthetic(log)
    got = read_window(log, window.start, window.end, app="web", slack=10)
    assert got.covers_start and got.unreadable == 1
    assert [r.at for r in got.requests] == sorted(r.at for r in got.requests)
    assert all(window.start <= r.at < window.end and r.app == "web" for r in got.requests)
    assert len(got.requests) == 51 + 47 + 6  # blue (one late line), green, oddities incl. the preview
    # Lines cut across block boundaries are joined again.
    with log.open("rb") as handle:
        assert list(lines_backwards(handle, block=7)) == [x.encode() for x in reversed(log.read_text().splitlines())]
    assert read_window(tmp_path / "absent.log", window.start, window.end).requests == ()


def test_read_window_continues_in_the_rotated_log(tmp_path: Path, window: Window) -> None:
    log = tmp_path / "requests.log"
    lines = synthetic(tmp_path / "all.log")
    (tmp_path / "requests.log.1").write_text("\n".join(lines[:40]) + "\n")
    log.write_text("\n".join(lines[40:]) + "\n")
    assert read_window(log, window.start, window.end, app="web").requests == \
        read_window(tmp_path / "all.log", window.start, window.end, app="web").requests
    # Not reaching back to the start while an older file exists: the page says traffic may be missing.
    (tmp_path / "requests.log.1").rename(tmp_path / "requests.log.2.gz")
    assert not read_window(log, window.start, window.end, app="web").covers_start


def test_summarize_buckets_by_environment_with_failures_and_p95(tmp_path: Path, window: Window) -> None:
    log = tmp_path / "requests.log"
    synthetic(log)
    traffic = summarize(read_window(log, window.start, window.end, app="web").requests, window,
                        order=["web-blue", "web-green"])
    assert window.buckets == 10 and traffic.envs == ("web-blue", "web-green")
    assert traffic.rps["web-blue"] == (11, 10, 10, 10, 10, 0, 0, 0, 0, 0)  # the late line counts in its own second
    assert traffic.rps["web-green"] == (0, 0, 0, 0, 0, 7, 12, 13, 10, 10)  # 47 + 4 failures + the 499
    assert traffic.by_env == {"web-blue": 51, "web-green": 52} and traffic.total == 103
    assert traffic.by_phase["before"] == {"web-blue": 51}
    assert traffic.by_phase["after"] == {"web-green": 52} and traffic.by_phase["during"] == {}
    assert (traffic.failed_app, traffic.failed_nginx, traffic.client_errors) == (2, 2, 1)
    assert traffic.failed_total == 4 and traffic.failed == (0, 0, 0, 0, 0, 0, 2, 2, 0, 0)
    assert [(f.status, f.origin) for f in traffic.failures] == [(502, "nginx"), (504, "nginx"), (500, "app"),
                                                                 (404, "app")]
    assert traffic.not_plotted == 1  # the preview request
    assert traffic.shas == {"web-blue": SHAS["web-blue"], "web-green": SHAS["web-green"]}
    # p95 per bucket: blue's 10 requests a second take 1..10 ms; nearest rank 95 % of 10 is the 10th.
    assert traffic.p95[:5] == (0.010, 0.010, 0.010, 0.010, 0.010)
    assert traffic.p95_by_env["web-green"] == pytest.approx(0.010)
    assert traffic.peak_rps == 13


def test_an_environment_named_first_gets_a_series_without_any_request(window: Window) -> None:
    traffic = summarize([], window, order=["web-blue", "web-green"])
    assert traffic.envs == ("web-blue", "web-green") and traffic.total == 0 and traffic.p95 == (None,) * 10


def test_percentile_nearest_rank() -> None:
    assert percentile([], 95) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile(range(1, 101), 95) == 95
    assert percentile(range(1, 21), 95) == 19
    assert percentile([5, 1, 4, 2, 3], 50) == 3


def test_classify() -> None:
    kinds = [classify(parse_line(line(T0, "e", status, upstream_status=up)))  # type: ignore[arg-type]
             for status, up in ((200, None), (301, None), (404, None), (503, None), (502, "502"), (504, "-"),
                                (502, "502, 502"), (499, ""), (400, "-"), (500, ""))]
    assert kinds == ["ok", "ok", "app", "app", "nginx", "nginx", "nginx", "client", "client", "nginx"]


def test_window_and_axes() -> None:
    w = Window.around(100.0, 100.4, before=10, after=10)
    assert (w.start, w.end, w.buckets) == (90.0, 111.0, 21)  # the end rounded up to a whole second
    assert (w.bucket_of(89.99), w.bucket_of(90.0), w.bucket_of(110.99), w.bucket_of(111.0)) == (None, 0, 20, None)
    assert Window.around(100.0, 100.2, before=2.5, after=2.5).end == 103.5  # whole buckets from the start
    with pytest.raises(ValueError):
        Window.around(100.0, 100.0, before=-1, after=0)
    assert nice_ceiling(0) == (1.0, 0.25)
    assert nice_ceiling(7) == (8.0, 2.0)
    assert nice_ceiling(230) == (250.0, 50.0)
    assert nice_ceiling(0.012) == (0.0125, 0.0025)
    assert colours_for(["web-green", "web-blue", "canary"]) == {"web-green": "#2e9e44", "web-blue": "#1f6fb4",
                                                                "canary": "#e8861a"}


def report_for(tmp_path: Path, window: Window, verdict: Verdict | None = None,
               live: str = "web-green") -> SwitchReport:
    log = tmp_path / "requests.log"
    synthetic(log)
    logged = read_window(log, window.start, window.end, app="web")
    result = SwitchResult(action="promote", live=live, sha=SHAS["web-green"], previous="web-blue",
                          servers=("127.0.0.1:1",), seconds=0.25, started_at=window.switch_started,
                          verified_at=window.switch_verified)
    traffic = summarize(logged.requests, window, order=["web-blue", live])
    return SwitchReport("web", "web.localhost", result, traffic, logged, verdict, generated_at=T0 + 10)


def test_page_is_self_contained_and_shows_each_environment_failures_and_the_switch(
        tmp_path: Path, window: Window) -> None:
    html = render_switch_report(report_for(tmp_path, window))
    assert not re.search(r"<script|<link|@import|url\(|src=|href=", html, re.IGNORECASE)
    assert re.findall(r'<g class="series" data-env="([^"]+)"', html) == ["web-blue", "web-green"]
    assert 'data-figure="failed">4<' in html and 'data-figure="requests">103<' in html
    assert 'data-figure="verdict">no analysis run<' in html
    assert html.count('class="marker"') == 6  # started and verified, on each of the three charts
    assert "switch started" in html and "verified (+0.25 s)" in html
    assert html.count('<rect class="failed"') == 2  # two seconds with failures
    assert "GET /boom" in html and "1 preview requests in the window are not plotted" in html


def test_page_shows_a_verdict_and_escapes_what_it_prints(tmp_path: Path, window: Window) -> None:
    verdict = Verdict(False, "error rate 4% > 1% <script>alert(1)</script>", {"error_rate": 0.04})
    html = render_switch_report(report_for(tmp_path, window, verdict, live='web-green"><script>x</script>'))
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-figure="verdict">failed<' in html and "error_rate" in html
    log = LogWindow("x", 0, 1, (), 0, True)
    assert log.requests == ()
