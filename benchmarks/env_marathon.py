"""Marathon benchmark: seconds between Marathon finishing a deployment and bgci reporting the environment ready.

Run from the repository root:  python benchmarks/env_marathon.py [--runs 5] [--instances 3]
(`python benchmarks/env.py` runs it too, as its `marathon` section.)

It builds the sample app once, pushes it to a loopback registry (Marathon
refuses a local image id: agents pull by reference), starts the Marathon
emulator (tasks are real containers), then creates environments of N instances through the service
`bgci env create` uses. For each run it takes the emulator's own record of
when it ended the deployment (deployment_finished_at, set just before it emits
deployment_success) and the moment bgci's create returned ready. Target: at
most 0.3 s median, which only an event-driven wait meets (the fallback polls
every second). Create-to-ready is reported too, but it measures the emulator
(container start, its 0.2 s health probes), not what a cluster would take.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from bgci import build as builds
from bgci.config import Settings, load_settings
from bgci.dockerhost import connect
from bgci.environments import EnvironmentService
from bgci.images import resolve_image
from bgci.schedulers.marathon import MarathonClient, MarathonScheduler
from tests.conftest import push_to_registry, remove_app_containers, remove_app_images
from tests.emulators.marathon import MarathonEmulator
from tests.support import Registry, make_sample_repo, unique_app_name

TARGET_LAG = 0.3  # seconds, median
READY_TIMEOUT = 120.0
HEALTH_INTERVAL = 0.2  # the emulator's seconds between health probes of a task


def measure(client: docker.DockerClient, settings: Settings, sha: str, counts: list[int],
            runs: int) -> list[dict[str, Any]]:
    """Rows for benchmarks/env.py: `marathon` (create to ready) and `mar-lag` (deployment end to ready)."""
    rows: list[dict[str, Any]] = []
    with (pushed(client, settings, sha) as settings,  # from here on, the settings naming the registry
          MarathonEmulator(client, health_interval=HEALTH_INTERVAL, sse_heartbeat=1.0) as marathon):
        scheduler = MarathonScheduler(MarathonClient([marathon.url]), settings.app, lock_timeout=READY_TIMEOUT)
        service = EnvironmentService(scheduler, settings,
                                     resolve=lambda ref: resolve_image(client, settings, ref, lambda _: None))
        for count in counts:
            ready, lag, destroy = [], [], []
            for run in range(runs):
                spec = service.spec_for(sha=sha, name=f"{settings.app}-m{count}-r{run}", instances=count)
                started = time.perf_counter()
                service.create(spec, timeout=READY_TIMEOUT)
                reported = time.perf_counter()
                ready.append(reported - started)
                lag.append(reported - marathon.deployment_finished_at[scheduler.app_id(spec.name)])
                started = time.perf_counter()
                service.destroy(spec.name)
                destroy.append(time.perf_counter() - started)
            rows.append({"section": "marathon", "instances": count, "ready": ready, "destroy": destroy})
            rows.append({"section": "mar-lag", "instances": count, "ready": lag, "destroy": destroy})
    return rows


@contextlib.contextmanager
def pushed(client: docker.DockerClient, settings: Settings, sha: str) -> Iterator[Settings]:
    """`settings` naming a loopback registry that holds the image of `sha` (the app's image cleanup removes it)."""
    with tempfile.TemporaryDirectory() as workdir:
        registry = Registry(Path(workdir) / "registry").start()
        try:
            yield push_to_registry(client, settings, sha, registry.address)
        finally:
            registry.stop()


@contextlib.contextmanager
def sample_app(client: docker.DockerClient) -> Iterator[tuple[Settings, str]]:
    """The sample app in a temporary git repo, fully built; its images removed afterwards."""
    app = unique_app_name("benchmar")
    with tempfile.TemporaryDirectory() as workdir:
        repo = make_sample_repo(Path(workdir), app)
        settings = load_settings(repo / "bgci.toml")
        source = builds.Source.open(settings, "HEAD")
        builds.build_full(client, settings, source, build_args={}, push=False, log=lambda _: None)
        try:
            yield settings, source.sha
        finally:
            remove_app_containers(client, app)
            remove_app_images(client, app)


def run(runs: int = 5, instances: int = 3) -> dict[str, Any]:
    """Build the sample app, measure `runs` creates of `instances`; the lag figures and whether the target held."""
    client = connect()
    with sample_app(client) as (settings, sha):
        rows = measure(client, settings, sha, [instances], runs)
    (ready,) = [r["ready"] for r in rows if r["section"] == "marathon"]
    (lag,) = [r["ready"] for r in rows if r["section"] == "mar-lag"]
    median = statistics.median(lag)
    return {"instances": instances, "runs": runs, "lag_median": median, "lag_min": min(lag), "lag_max": max(lag),
            "lags": lag, "ready_median": statistics.median(ready), "target": TARGET_LAG,
            "met": median <= TARGET_LAG}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=3)
    args = parser.parse_args()
    result = run(max(args.runs, 1), args.instances)
    print(f"Marathon (emulator), N = {result['instances']}, {result['runs']} runs")
    print(f"  deployment finished -> bgci ready: median {result['lag_median']:.3f}s "
          f"(min {result['lag_min']:.3f}s, max {result['lag_max']:.3f}s)  target <= {TARGET_LAG:g}s "
          f"{'ok' if result['met'] else 'MISSED'}")
    print(f"  create -> ready (emulator-bound): median {result['ready_median']:.2f}s")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
