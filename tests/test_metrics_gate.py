"""The --analyze gate's edges, with real nginx, loopback instances and a real Prometheus that has no data.

The full gate under load, with containers and the exporter, is in tests/test_metrics_prometheus.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgci.app import Bgci
from bgci.config import MetricsSettings
from bgci.errors import AnalysisFailed, RouterError
from bgci.router import NginxRouter
from bgci.state import load_state
from tests.metrics_support import Prometheus
from tests.test_metrics_graphite import untested_ok
from tests.test_router_nginx import SHA_BLUE, SHA_GREEN, LoopbackScheduler, live, nginx_settings


@pytest.fixture
def scheduler() -> Iterator[LoopbackScheduler]:
    scheduler = LoopbackScheduler()
    yield scheduler
    scheduler.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path / "prometheus", []).start()
    yield server
    server.stop()


def test_no_data_after_the_switch_rolls_back(tmp_path: Path, scheduler: LoopbackScheduler,
                                             prometheus: Prometheus) -> None:
    """No traffic reached Prometheus (no exporter here): the verdict is no-data, a failure, so the promote
    is undone by an automatic rollback recorded with its reason; then a second promote whose live switch
    is no longer the one it made is not rolled back over someone else's switch."""
    settings = dataclasses.replace(untested_ok(nginx_settings(tmp_path)), metrics=MetricsSettings(
        prometheus_url=prometheus.url, lag=0.5, targets_file="", events_file="events.jsonl"))
    router = NginxRouter.from_settings(settings)
    router.start()
    try:
        scheduler.add("blue", SHA_BLUE)
        scheduler.add("green", SHA_GREEN)
        bgci = Bgci(settings, environ={"USER": "tester"})
        bgci.scheduler = scheduler  # type: ignore[misc]
        with pytest.raises(RouterError, match="needs an environment to roll back to"):
            bgci.promote_analyzed("blue", bgci.criteria(window=1))  # nothing live yet: refused, nothing changed
        assert load_state(settings.path(settings.nginx.state_file)).live is None
        bgci.promote("blue")
        with pytest.raises(AnalysisFailed) as caught:
            bgci.promote_analyzed("green", bgci.criteria(window=1))
        assert caught.value.exit_code == 7 and "no-data: no data: 0 requests" in str(caught.value)
        assert caught.value.rollback.live == "blue"  # type: ignore[attr-defined]
        assert live(router) == (200, "blue", SHA_BLUE)
        last = load_state(settings.path(settings.nginx.state_file)).history[-1]
        assert (last.action, last.env) == ("auto-rollback", "blue") and last.reason.startswith("no-data")

        # Someone else switched while the analysis ran: the automatic rollback refuses to undo their switch.
        bgci.promote("green")
        green_switch = load_state(settings.path(settings.nginx.state_file)).live
        bgci.promote("blue")
        with pytest.raises(RouterError, match="live changed since green was promoted"):
            bgci.deployer.rollback(reason="late verdict", expect_live=green_switch)
        assert live(router) == (200, "blue", SHA_BLUE)
    finally:
        router.stop()
