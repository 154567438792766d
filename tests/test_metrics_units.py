"""The pure parts of bgci.metrics: readers of Prometheus' JSON, verdicts, the exporter's line handling,
deploy events, file_sd groups, state compatibility and the [metrics] settings. No servers here:
tests/test_metrics_prometheus.py runs them against real Prometheus, nginx and containers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bgci.config import load_settings
from bgci.errors import ConfigError, PrometheusError
from bgci.metrics import graphite
from bgci.metrics.analysis import Criteria, Figures, judge, parse_duration, queries
from bgci.metrics.events import DeployEvent, EventLog, all_events, count_by_action
from bgci.metrics.exporter import LogTail, RequestMetrics, parse_line, role_for
from bgci.metrics.prometheus import read_query_answer
from bgci.metrics.targets import target_groups
from bgci.schedulers.base import Environment, Instance
from bgci.state import RouterState, Switch, load_state, save_state

SHA = "ab" * 20


def vector(*samples: tuple[dict, str]) -> dict:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [1.5, v]} for m, v in samples]}}


# -- typed readers ---------------------------------------------------------------------------------------------
def test_readers_read_vectors_scalars_and_nan() -> None:
    result = read_query_answer(vector(({"env": "blue"}, "3"), ({"env": "green"}, "NaN")))
    assert result.by("env") == {"blue": 3.0}  # NaN: no data
    assert read_query_answer(vector()).value() is None
    assert read_query_answer(vector(({}, "NaN"))).value() is None
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [2.0, "+Inf"]}}
    assert math.isinf(read_query_answer(scalar).value() or 0)


@pytest.mark.parametrize(("body", "field"), [
    ("<html>proxy</html>", "query: expected an object"),
    ({"status": "success"}, "query.data: missing"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "query.data.resultType"),
    ({"status": "success", "data": {"resultType": "vector", "result": {}}}, "query.data.result: expected a list"),
    (vector(({"env": 1}, "1")), "query.data.result[0].metric.env"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, 2]}]}},
     "query.data.result[0].value[1]: expected a string"),
    (vector(({}, "lots")), "query.data.result[0].value[1]: not a number"),
])
def test_a_malformed_answer_names_the_field_at_fault(body: object, field: str) -> None:
    with pytest.raises(PrometheusError) as caught:
        read_query_answer(body)
    assert field in str(caught.value) and caught.value.exit_code == 11


# -- verdicts ------------------------------------------------------------------------------------------------------
def test_judge_passes_fails_and_calls_no_traffic_a_failure() -> None:
    criteria = Criteria(window=60, max_error_ratio=0.01, max_p95_ms=250, min_requests=10)
    assert judge(Figures(requests=100, errors=1, p95_ms=20, seconds=60), criteria).passed
    failed = judge(Figures(requests=100, errors=5, p95_ms=300, seconds=60), criteria)
    assert failed.outcome == "fail" and len(failed.reasons) == 2
    assert "error ratio 0.0500 > 0.01 (5 of 100 requests 5xx)" in failed.reasons[0]
    assert "p95 300.0 ms > 250 ms" in failed.reasons[1]
    no_data = judge(Figures(requests=3, errors=0, p95_ms=None, seconds=60), criteria)
    assert not no_data.passed and no_data.outcome == "no-data" and "need at least 10" in no_data.reasons[0]
    # no latency limit: p95 is not judged (and may be missing)
    assert judge(Figures(100, 0, None, 60), Criteria(window=60, max_error_ratio=0)).passed


def test_durations_and_queries() -> None:
    assert [parse_duration(t) for t in ("60s", "2m", "500ms", "1.5h", "7")] == [60, 120, 0.5, 5400, 7]
    for bad in ("", "0s", "-1s", "soon", "5d"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    q = queries("web-app", "green", "live", 5)
    assert q["errors"] == ('sum(increase(bgci_requests_total{app="web-app",env="green",role="live",'
                           'status_class="5xx"}[5000ms]))')
    assert q["p95"].startswith("histogram_quantile(0.95, sum by (le) (rate(bgci_request_duration_seconds_bucket{")
    with pytest.raises(ConfigError):
        Criteria(window=5, max_error_ratio=0.1, role="canary")


# -- the exporter's reading of requests.log ------------------------------------------------------------------------
def line(env: str = "green", role: str = "preview", status: int = 200, upstream: str = "200", app: str = "web-app",
         request_time: float = 0.004) -> str:
    return json.dumps({"time": "t", "msec": 1.0, "app": app, "env": env, "sha": SHA, "role": role, "host": "h",
                       "method": "GET", "uri": "/", "status": status, "bytes": 1, "request_time": request_time,
                       "upstream_addr": "127.0.0.1:1", "upstream_status": upstream, "upstream_time": "0.001"})


def test_preview_traffic_of_the_previous_environment_is_role_previous() -> None:
    # Only bgci's state file knows which environment was live before: nginx logs its preview as "preview".
    state = RouterState(live=Switch("green", SHA, "promote", "t2", "x"), previous=Switch("blue", SHA, "promote",
                                                                                         "t1", "x"))
    assert role_for(parse_line(line(env="blue")), state) == "previous"  # type: ignore[arg-type]
    assert role_for(parse_line(line(env="green")), state) == "preview"  # type: ignore[arg-type]
    assert role_for(parse_line(line(env="green", role="live")), state) == "live"  # type: ignore[arg-type]
    assert parse_line("not json") is None and parse_line(json.dumps({"env": "x"})) is None
    # upstream attempts: a refused instance (502) then another that answered
    assert parse_line(line(upstream="502, 200")).upstream_failures == 1  # type: ignore[union-attr]


def test_request_metrics_declare_every_series_of_a_new_environment_at_zero() -> None:
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry, "web-app")
    state = RouterState()
    metrics.observe(line(status=200), state)
    metrics.observe(line(status=503, upstream="503"), state)
    metrics.observe(line(app="other-app"), state)
    metrics.observe("garbage", state)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"app": "web-app", "env": "green", "sha": SHA, **labels})

    assert value("bgci_requests_total", role="preview", status_class="2xx") == 1
    assert value("bgci_requests_total", role="preview", status_class="5xx") == 1
    # declared at zero on first sight, so a first error later still shows in increase()
    assert value("bgci_requests_total", role="live", status_class="5xx") == 0
    assert value("bgci_upstream_errors_total", role="preview") == 1
    assert value("bgci_request_duration_seconds_count", role="preview") == 2
    assert value("bgci_request_duration_seconds_bucket", role="preview", le="0.005") == 2
    assert registry.get_sample_value("bgci_exporter_lines_total", {"outcome": "other_app"}) == 1
    assert registry.get_sample_value("bgci_exporter_lines_total", {"outcome": "unreadable"}) == 1


def test_log_tail_follows_appends_truncation_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    log.write_text("old\n")
    tail = LogTail(log)  # starts at the end
    assert tail.read() == []
    with log.open("a") as handle:
        handle.write("one\ntw")
    assert tail.read() == ["one"]  # a partial line waits for its end
    with log.open("a") as handle:
        handle.write("o\n")
    assert tail.read() == ["two"]
    log.write_text("x\n")  # truncated (copytruncate)
    assert tail.read() == ["x"]
    log.rename(tmp_path / "requests.log.1")
    log.write_text("new\n")  # rotated: a new file
    assert tail.read() == ["new"]
    assert LogTail(log, from_start=True).read() == ["new"]


# -- deploy events ---------------------------------------------------------------------------------------------------
def test_events_join_the_log_and_the_history_each_once(tmp_path: Path) -> None:
    events = EventLog(tmp_path / "events.jsonl")
    promote = Switch("green", SHA, "promote", "2026-11-30T10:00:00+00:00", "me")
    events.append(DeployEvent("create", "green", SHA, "2026-11-30T09:00:00+00:00"))
    events.append(DeployEvent("promote", "green", SHA, promote.at, "me"))  # also in the history
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write('{"action": "destr')  # a torn last line
    auto = Switch("blue", SHA, "auto-rollback", "2026-11-30T10:01:00+00:00", "me", reason="error ratio 0.5")
    state = RouterState(history=(promote, auto))
    joined = all_events(events.read(), state)
    assert [e.action for e in joined] == ["create", "promote", "auto-rollback"]
    counts = {c.action: (c.count, c.last) for c in count_by_action(joined)}
    assert counts["promote"][0] == 1 and counts["destroy"] == (0, 0.0)
    assert counts["auto-rollback"] == (1, DeployEvent("x", "y", at=auto.at).timestamp)
    assert graphite.plaintext_lines("web.app", joined[-1:]) == (
        f"bgci.web_app.deploys.auto-rollback 1 {int(joined[-1].timestamp)}\n".encode())


def test_state_file_stays_readable_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    old = {"live": {"env": "b", "sha": SHA, "action": "promote", "at": "t", "by": "x", "build_url": ""},
           "previous": None, "history": [{"env": "b", "sha": SHA, "action": "promote", "at": "t", "by": "x"}]}
    path.write_text(json.dumps(old))  # written by a bgci without `reason`
    state = load_state(path)
    assert state.live is not None and state.live.reason == ""
    save_state(path, state.after(Switch("a", SHA, "auto-rollback", "t2", "x", reason="no data")))
    data = json.loads(path.read_text())
    assert "reason" not in data["history"][0]  # empty reasons are left out: an older bgci reads the file
    assert data["live"]["reason"] == "no data"
    data["live"]["future_field"] = 1  # a newer bgci's field is ignored, not an error
    path.write_text(json.dumps(data))
    assert load_state(path).live.action == "auto-rollback"  # type: ignore[union-attr]


# -- file_sd -----------------------------------------------------------------------------------------------------------
def test_target_groups_label_every_instance_with_its_role() -> None:
    def env(name: str, *ports: int) -> Environment:
        return Environment(name=name, app="web-app", sha=SHA, image="i", digest="", wanted_instances=len(ports),
                           created_at="", created_by="", scheduler="local",
                           instances=tuple(Instance(id=f"{name}{p}", host="127.0.0.1", port=p, state="running",
                                                    healthy=True) for p in ports))

    state = RouterState(live=Switch("green", SHA, "promote", "t", "x"), previous=Switch("blue", SHA, "promote", "t",
                                                                                        "x"))
    groups = target_groups("web-app", [env("green", 2, 1), env("blue", 3), env("new", 4), env("idle", 5),
                                       env("starting")], state, ["green", "new"])
    assert [(g["labels"]["env"], g["labels"]["role"], g["targets"]) for g in groups] == [
        ("blue", "previous", ["127.0.0.1:3"]), ("green", "live", ["127.0.0.1:1", "127.0.0.1:2"]),
        ("idle", "none", ["127.0.0.1:5"]), ("new", "preview", ["127.0.0.1:4"])]
    assert groups[0]["labels"] == {"app": "web-app", "env": "blue", "sha": SHA, "role": "previous"}


# -- settings ----------------------------------------------------------------------------------------------------------
def test_metrics_settings_are_validated_and_the_environment_overrides_the_url(tmp_path: Path) -> None:
    config = tmp_path / "bgci.toml"
    config.write_text('app = "web-app"\n[metrics]\nprometheus_url = "prometheus:9090"\nmax_error_ratio = 2\n'
                      'graphite = "carbon"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    problems = "\n".join(caught.value.problems)
    assert "metrics.prometheus_url: 'prometheus:9090' is not allowed" in problems
    assert "metrics.max_error_ratio: 2.0 is above the maximum 1" in problems
    assert "metrics.graphite: 'carbon' is not allowed (allowed: host:port" in problems
    config.write_text('app = "web-app"\n[metrics]\nwindow = 30\n')
    settings = load_settings(config, environ={"BGCI_PROMETHEUS_URL": "http://127.0.0.1:9090"})
    assert settings.metrics.prometheus_url == "http://127.0.0.1:9090" and settings.metrics.window == 30.0
    assert load_settings(config, environ={}).metrics.prometheus_url == ""
