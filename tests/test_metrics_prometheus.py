"""Request metrics, app scraping and the analysis gate against a real Prometheus (Debian's 2.42).

Real parts: the embedded nginx writing requests.log, the sample app's containers (blue: the
session's full build, green: its second commit, bad: blue's image started with
WEB_APP_FAIL_PATH=/fail, so it answers 500 under /fail: the cheapest real failing
environment), `bgci exporter` as a subprocess, and Prometheus scraping it and the apps'
/metrics (through bgci's file_sd targets file) every second. Nothing is mocked: every figure
below is read back from Prometheus with PromQL. Waits are polls with generous deadlines.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from bgci.config import load_settings
from bgci.metrics.analysis import measure
from bgci.metrics.prometheus import PrometheusClient
from bgci.state import load_state
from tests.conftest import SampleBuild
from tests.metrics_support import Prometheus, wait_for
from tests.support import free_port
from tests.test_promote import BlueGreen, error_line, start_blue_green, stop_blue_green

pytestmark = pytest.mark.docker
LAG = 3.0  # nginx's 1 s log flush + the exporter's poll + one 1 s scrape, with a margin


@dataclass
class Stack:
    bg: BlueGreen
    prometheus: Prometheus
    bad: str
    app: str

    def bgci(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bgci", "--config", str(self.bg.config), *args], capture_output=True, text=True,
                              timeout=180, env={**os.environ, **(env or {})})

    def counts(self, by: str = "env", where: str = "") -> dict[str, float]:
        return self.prometheus.values(f'sum by ({by}) (bgci_requests_total{{app="{self.app}"{where}}})', by)


class Load:
    """Requests through nginx with a Host header, each on its own connection; counts what it sent."""

    def __init__(self, bg: BlueGreen) -> None:
        self.base = bg.router.base_url
        self.session = requests.Session()
        self.session.trust_env = False

    def send(self, host: str, path: str, count: int) -> list[int]:
        return [self.session.get(self.base + path, headers={"Host": host, "Connection": "close"},
                                 timeout=10).status_code for _ in range(count)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, sample_build: SampleBuild,
          sample_build_b: SampleBuild, tested_builds: tuple[SampleBuild, SampleBuild]) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("metrics")
    bg = start_blue_green(workdir, docker_client, sample_build, sample_build_b, instances=2)
    bad = f"{sample_build.app}-bad"
    exporter: subprocess.Popen[bytes] | None = None
    prometheus: Prometheus | None = None
    try:
        bg.service.create(bg.service.spec_for(sha=sample_build.sha, name=bad, instances=1,
                                              env={"WEB_APP_FAIL_PATH": "/fail"}), timeout=60)
        exporter_address = f"127.0.0.1:{free_port()}"
        prometheus = Prometheus(workdir / "prometheus", [exporter_address], file_sd=workdir / "targets.json")
        with bg.config.open("a") as config:
            config.write(f'\n[metrics]\nprometheus_url = "{prometheus.url}"\ntargets_file = "targets.json"\n'
                         f'events_file = "events.jsonl"\nlag = {LAG}\nstatus_window = 30\n')
        bg.settings = load_settings(bg.config)
        prometheus.start()
        exporter = subprocess.Popen(["bgci", "--config", str(bg.config), "exporter", "--listen", exporter_address],
                                    stdout=subprocess.DEVNULL, stderr=open(workdir / "exporter.log", "ab"))  # noqa: SIM115
        stack = Stack(bg, prometheus, bad, sample_build.app)
        for name in (bg.blue, bg.green, bad):  # previews (env create does this; here the envs came from the service)
            bg.deployer.register_preview(bg.service.get(name))
        assert stack.bgci("promote", bg.blue).returncode == 0
        wait_for(lambda: prometheus.query('up{job="bgci"} == 1'), 30, "Prometheus does not scrape the exporter")
        yield stack
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(timeout=20)
        if prometheus is not None:
            prometheus.stop()
        stop_blue_green(bg.router, bg.service.scheduler, [e.name for e in bg.service.list()])


def settled(read: callable, timeout: float = 30) -> dict[str, float]:  # type: ignore[valid-type]
    """A reading that stayed the same over two scrapes (nginx flushed, the exporter read, Prometheus scraped)."""
    previous: list[dict[str, float]] = [{}]

    def same() -> dict[str, float] | None:
        time.sleep(LAG)
        now = read()
        stable = now == previous[0]
        previous[0] = now
        return now if stable and now else None

    return wait_for(same, timeout, "Prometheus' figures did not settle", interval=0)


def test_promql_by_env_counts_what_the_load_generator_sent(stack: Stack) -> None:
    """Real nginx -> requests.log -> bgci exporter -> Prometheus: per-env request counts equal the load sent,
    5xx only where planted, and the role label tells live from preview."""
    bg, load = stack.bg, Load(stack.bg)
    before = settled(lambda: stack.counts(by="env"))
    blue_roles = stack.counts(by="role", where=f',env="{bg.blue}"')
    sent = {bg.blue: load.send(bg.settings.nginx.server_name, "/", 60),
            bg.green: load.send(f"{bg.green}.preview.localhost", "/", 30)
                      + load.send(f"{bg.green}.preview.localhost", "/fail/x", 10),  # 404 here: no fault planted
            stack.bad: load.send(f"{stack.bad}.preview.localhost", "/", 30)
                       + load.send(f"{stack.bad}.preview.localhost", "/fail/x", 10)}
    assert sent[stack.bad].count(500) == 10 and sent[bg.green].count(404) == 10
    want = {env: before.get(env, 0) + len(statuses) for env, statuses in sent.items()}
    # Within a scrape or two of nginx's flush, Prometheus has every request, exactly.
    wait_for(lambda: stack.counts(by="env") == want, 20, f"counts by env never reached {want}", interval=0.2)
    errors = stack.counts(by="env", where=',status_class="5xx"')
    assert errors.get(bg.blue, 0) == 0 and errors.get(bg.green, 0) == 0 and errors[stack.bad] == 10
    roles = stack.counts(by="role", where=f',env="{bg.blue}"')
    assert roles["live"] - blue_roles.get("live", 0) == 60  # the live name's requests, none as preview
    assert roles.get("preview", 0) == blue_roles.get("preview", 0)

    # The analysis queries: error ratio 0 for green, the planted ratio (10 of 40 = 0.25) for bad.
    client = PrometheusClient(stack.prometheus.url)
    green, _ = measure(client, stack.app, bg.green, "preview", 30)
    bad, _ = measure(client, stack.app, stack.bad, "preview", 30)
    assert green.requests > 0 and green.error_ratio == 0
    assert bad.error_ratio == pytest.approx(0.25, abs=0.05) and bad.p95_ms is not None

    # The apps' own /metrics, scraped through bgci's file_sd targets: every instance, labelled by bgci.
    assert stack.bgci("targets").returncode == 0
    targets = json.loads((bg.config.parent / "targets.json").read_text())
    assert {g["labels"]["env"]: len(g["targets"]) for g in targets} == {bg.blue: 2, bg.green: 2, stack.bad: 1}
    up = wait_for(lambda: (r := stack.prometheus.query(f'up{{job="apps",app="{stack.app}"}} == 1')) and len(r) == 5
                  and r, 30, "Prometheus does not scrape all 5 instances")
    assert {(r["metric"]["env"], r["metric"]["role"]) for r in up} == {
        (bg.blue, "live"), (bg.green, "preview"), (stack.bad, "preview")}
    app_counts = stack.prometheus.values(f'sum by (env) (webapp_requests_total{{app="{stack.app}",path="/"}})', "env")
    assert app_counts[bg.blue] >= 60 and app_counts[bg.green] >= 30  # the app counts what reached it


def test_promote_analyze_keeps_a_good_build_and_rolls_back_a_bad_one(stack: Stack, tmp_path: Path) -> None:
    """`bgci promote --analyze` under live load: green (good) stays live; bad (500s under /fail) is rolled back
    by itself, live answers green's sha again, the state history records the auto-rollback, exit 7."""
    bg = stack.bg
    stop = threading.Event()

    def live_load() -> None:
        load = Load(bg)
        while not stop.is_set():
            load.send(bg.settings.nginx.server_name, "/", 3)
            load.send(bg.settings.nginx.server_name, "/fail/x", 1)
            time.sleep(0.02)

    thread = threading.Thread(target=live_load, daemon=True)
    thread.start()
    try:
        good = stack.bgci("promote", bg.green, "--analyze", "--window", "4s", "--max-error-ratio", "0.05",
                          "--junit-dir", str(tmp_path), "--json")
        assert good.returncode == 0, good.stderr
        outcome = json.loads(good.stdout)
        assert outcome["analysis"]["verdict"]["outcome"] == "pass" and outcome["analysis"]["figures"]["requests"] > 10
        assert bg.live() == (200, bg.green, bg.shas[bg.green])

        bad = stack.bgci("promote", stack.bad, "--analyze", "--window", "4s", "--max-error-ratio", "0.05",
                         "--junit-dir", str(tmp_path))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert bad.returncode == 7, bad.stderr
    line = error_line(bad)
    assert f"{stack.bad} rolled back to {bg.green}" in line and "error ratio" in line and "requests" in line
    assert bg.live() == (200, bg.green, bg.shas[bg.green])  # the old sha answers the live name again
    history = load_state(bg.settings.path("state.json")).history
    assert [s.action for s in history[-3:]] == ["promote", "promote", "auto-rollback"]
    assert history[-1].env == bg.green and "error ratio" in history[-1].reason
    report = (tmp_path / f"analysis-{bg.shas[bg.blue]}.xml").read_text()  # bad runs blue's image
    assert 'failures="1"' in report and "error ratio" in report

    # The deploy series: events from the state history and the events file, live info from the state file.
    events = wait_for(lambda: (v := stack.prometheus.values(
        f'bgci_deploy_events_total{{app="{stack.app}"}}', "action")).get("auto-rollback") == 1 and v, 20,
        "bgci_deploy_events_total never showed the auto-rollback")
    assert events["promote"] >= 3 and events["create"] == 0  # these environments came from the service
    live = stack.prometheus.query(f'bgci_live_info{{app="{stack.app}"}}')
    assert [r["metric"]["env"] for r in live] == [bg.green]
    last = stack.prometheus.values(f'bgci_last_deploy_timestamp_seconds{{app="{stack.app}"}}', "action")
    assert time.time() - last["auto-rollback"] < 120


def test_analyze_cli_verdicts_and_no_data(stack: Stack, tmp_path: Path) -> None:
    """`bgci analyze`: pass (exit 0) on clean traffic, fail (7) on the planted 5xx, no data is a failure (7)."""
    bg, load = stack.bg, Load(stack.bg)
    load.send(f"{stack.bad}.preview.localhost", "/", 15)
    load.send(f"{stack.bad}.preview.localhost", "/fail/y", 5)
    load.send(f"{bg.green}.preview.localhost", "/", 20)
    time.sleep(LAG)
    good = stack.bgci("analyze", bg.green, "--role", "preview", "--window", "20s", "--junit-dir", str(tmp_path))
    assert good.returncode == 0, good.stderr
    assert "verdict: pass" in good.stdout and "error ratio 0.0000" in good.stdout
    # (bad is the previous environment since the auto-rollback: its preview traffic has role previous)
    bad = stack.bgci("analyze", stack.bad, "--window", "20s", "--junit-dir", str(tmp_path))
    assert bad.returncode == 7 and "verdict: FAIL: error ratio" in bad.stdout
    assert "error ratio" in error_line(bad)
    nothing = stack.bgci("analyze", bg.blue, "--role", "preview", "--window", "5s", "--junit-dir", str(tmp_path))
    assert nothing.returncode == 7 and "no data: 0 requests" in error_line(nothing)
    assert "NO-DATA" in nothing.stdout


def test_status_shows_traffic_and_a_note_without_prometheus(stack: Stack) -> None:
    """`bgci status` adds rps, error ratio and p95 per environment from Prometheus; without one it says so."""
    bg = stack.bg
    Load(bg).send(bg.settings.nginx.server_name, "/", 20)
    time.sleep(LAG)
    result = stack.bgci("status", "--json")
    assert result.returncode == 0, result.stderr
    traffic = {e["name"]: e["traffic"] for e in json.loads(result.stdout)["environments"]}
    live = traffic[bg.live()[1]]
    assert live is not None and live["rps"] > 0 and live["p95_ms"] is not None and live["error_ratio"] is not None
    assert "traffic: " in stack.bgci("status").stdout
    away = stack.bgci("status", env={"BGCI_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"})
    assert away.returncode == 0 and "(traffic: no traffic figures: Prometheus at" in away.stdout


def test_analyze_without_prometheus_refuses_before_switching(stack: Stack, tmp_path: Path) -> None:
    """--analyze with no [metrics] prometheus_url: a ConfigError (exit 2) and no switch at all."""
    bg = stack.bg
    config = tmp_path / "bgci.toml"
    text = bg.config.read_text().replace(f'prometheus_url = "{stack.prometheus.url}"', 'prometheus_url = ""')
    config.write_text(text.replace('dir = "nginx"', f'dir = "{bg.config.parent}/nginx"').replace(
        'state_file = "state.json"', f'state_file = "{bg.config.parent}/state.json"'))
    before = bg.live()
    result = subprocess.run(["bgci", "--config", str(config), "promote", bg.blue, "--analyze"], capture_output=True,
                            text=True, timeout=120, env={k: v for k, v in os.environ.items()
                                                         if k != "BGCI_PROMETHEUS_URL"})
    assert result.returncode == 2 and "no Prometheus configured" in error_line(result)
    assert bg.live() == before
