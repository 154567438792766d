"""Deploy events through the application layer: the events file, the file_sd targets and Graphite.

Real parts: Graphite's carbon-cache (Debian's graphite-carbon) in the foreground with its own
config on a loopback port, its whisper files read back with whisper-fetch; Debian's nginx;
instances are loopback HTTP servers (tests/test_router_nginx.py's LoopbackScheduler).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgci.app import Bgci
from bgci.config import MetricsSettings, Settings
from bgci.metrics.events import EventLog
from bgci.router import NginxRouter
from bgci.state import load_state
from tests.metrics_support import Carbon, wait_for
from tests.support import free_port
from tests.test_router_nginx import SHA_BLUE, SHA_GREEN, LoopbackScheduler, nginx_settings


def untested_ok(settings: Settings) -> Settings:
    """The loopback environments here run no image, so no `bgci test` can vouch for them: no test gate."""
    return dataclasses.replace(settings, deploy=dataclasses.replace(settings.deploy, require_tested=False))


@pytest.fixture
def carbon(tmp_path: Path) -> Iterator[Carbon]:
    server = Carbon(tmp_path / "carbon").start()
    yield server
    server.stop()


def loopback_bgci(settings: Settings, scheduler: LoopbackScheduler) -> Bgci:
    bgci = Bgci(settings, environ={"USER": "tester"})
    bgci.scheduler = scheduler  # type: ignore[misc]  # the cached collaborator, given instead of built
    return bgci


@pytest.fixture
def scheduler() -> Iterator[LoopbackScheduler]:
    scheduler = LoopbackScheduler()
    yield scheduler
    scheduler.close()


def test_deploy_events_reach_carbon_the_events_file_and_the_targets(tmp_path: Path, carbon: Carbon,
                                                                    scheduler: LoopbackScheduler) -> None:
    """Promote, rollback and destroy through Bgci: each a line in events.jsonl, a point in carbon's whisper
    file bgci.<app>.deploys.<action>, and a rewrite of the file_sd targets with the new roles."""
    base = untested_ok(nginx_settings(tmp_path))
    settings = dataclasses.replace(base, metrics=MetricsSettings(graphite=carbon.address, targets_file="targets.json",
                                                                 events_file="events.jsonl"))
    router = NginxRouter.from_settings(settings)
    router.start()
    try:
        scheduler.add("blue", SHA_BLUE)
        scheduler.add("green", SHA_GREEN)
        scheduler.add("old", SHA_BLUE, instances=1)
        bgci = loopback_bgci(settings, scheduler)
        started = time.time()
        bgci.promote("blue")
        bgci.promote("green")
        targets = json.loads(settings.path("targets.json").read_text())
        assert {g["labels"]["env"]: g["labels"]["role"] for g in targets} == {
            "blue": "previous", "green": "live", "old": "none"}
        bgci.rollback()
        bgci.destroy_environment("old")
    finally:
        router.stop()

    events = EventLog(settings.path("events.jsonl")).read()
    assert [(e.action, e.env) for e in events] == [("promote", "blue"), ("promote", "green"), ("rollback", "blue"),
                                                   ("destroy", "old")]
    history = load_state(settings.path(settings.nginx.state_file)).history
    assert [e.at for e in events[:3]] == [s.at for s in history]  # a switch's event is its state record
    targets = json.loads(settings.path("targets.json").read_text())
    assert {g["labels"]["env"]: g["labels"]["role"] for g in targets} == {"blue": "live", "green": "previous"}

    app = settings.app.replace(".", "_")
    for action, count in (("promote", 2), ("rollback", 1), ("destroy", 1)):
        metric = f"bgci.{app}.deploys.{action}"
        # whisper keeps one point per second: two promotes in one second are one point (value 1)
        points = wait_for(lambda m=metric: carbon.points(m, started), 30, f"carbon never wrote {metric}")
        assert 1 <= len(points) <= count and all(v == 1.0 for _, v in points)
        assert all(started - 1 <= t <= time.time() + 1 for t, _ in points)


def test_graphite_away_never_fails_a_deploy(tmp_path: Path, scheduler: LoopbackScheduler) -> None:
    """A refused connection to Graphite is a warning; the promote and its event in the file still happen."""
    base = untested_ok(nginx_settings(tmp_path))
    settings = dataclasses.replace(base, metrics=MetricsSettings(graphite=f"127.0.0.1:{free_port()}",
                                                                 events_file="events.jsonl"))
    router = NginxRouter.from_settings(settings)
    router.start()
    try:
        scheduler.add("blue", SHA_BLUE)
        warnings: list[str] = []
        bgci = loopback_bgci(settings, scheduler)
        bgci.log = warnings.append
        assert bgci.promote("blue").live == "blue"
    finally:
        router.stop()
    assert any("Graphite at 127.0.0.1:" in w for w in warnings), warnings
    assert [e.action for e in EventLog(settings.path("events.jsonl")).read()] == ["promote"]
