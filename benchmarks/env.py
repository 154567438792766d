"""Environment benchmark: seconds from `create` until every instance answers its health path.

Run from the repository root:  python benchmarks/env.py [--runs 5] [--instances 1,3,6] [--section local]

It builds the sample app once (a full build in a temp git repo, FROM the local
base image), then for each N creates an environment of N instances through
the same service `bgci env create` uses (name check, create, wait until
ready), times it, and destroys it (timed too). The original Marathon-based
Deployer needed about 10 s; the target for the local backend is N = 3 ready in
at most 3 s (median).

Sections: each backend is one entry of SECTIONS, a function from the shared
Context (the built sample app) to its Rows. `local` runs on this Docker
engine; a Marathon section is added as another entry.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from bgci import build as builds
from bgci.config import Settings, load_settings
from bgci.dockerhost import connect
from bgci.environments import EnvironmentService
from bgci.images import resolve_image
from bgci.schedulers.base import Scheduler
from bgci.schedulers.local import LocalScheduler
from tests.conftest import remove_app_containers, remove_app_images
from tests.support import make_sample_repo, unique_app_name

TARGETS = {("local", 3): 3.0}  # (section, instances) -> median seconds to ready
# mar-lag: seconds from the Marathon emulator ending a deployment to bgci reporting ready (event-driven wait)
TARGETS.update({("mar-lag", n): 0.3 for n in (1, 3, 6)})
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Context:
    """What every section shares: the sample app, built once."""

    client: docker.DockerClient
    settings: Settings
    sha: str
    counts: list[int]
    runs: int


@dataclass(frozen=True)
class Row:
    section: str
    instances: int
    ready: list[float]  # seconds from create to every instance healthy, one per run
    destroy: list[float]


def measure(scheduler: Scheduler, context: Context, section: str) -> list[Row]:
    """Create, wait until ready and destroy N instances, `runs` times for each N."""
    service = EnvironmentService(scheduler, context.settings,
                                 resolve=lambda ref: resolve_image(context.client, context.settings, ref, _quiet))
    rows = []
    for count in context.counts:
        ready, destroy = [], []
        for run in range(context.runs):
            spec = service.spec_for(sha=context.sha, name=f"{context.settings.app}-n{count}-r{run}",
                                    instances=count)
            started = time.perf_counter()
            service.create(spec, timeout=READY_TIMEOUT)
            ready.append(time.perf_counter() - started)
            started = time.perf_counter()
            service.destroy(spec.name)
            destroy.append(time.perf_counter() - started)
        rows.append(Row(section, count, ready, destroy))
    return rows


def local_section(context: Context) -> list[Row]:
    scheduler = LocalScheduler(context.client, context.settings.app,
                               bind_address=context.settings.deploy.bind_address)
    return measure(scheduler, context, "local")


def marathon_section(context: Context) -> list[Row]:
    from benchmarks.env_marathon import measure  # imported when used: it starts the Marathon emulator

    return [Row(**row) for row in measure(context.client, context.settings, context.sha, context.counts,
                                          context.runs)]


# name -> section; a Marathon section registers here with the same signature.
SECTIONS: dict[str, Callable[[Context], list[Row]]] = {"local": local_section, "marathon": marathon_section}


def report(rows: list[Row]) -> bool:
    """Print medians (and min/max); return whether every target was met."""
    print(f"{'section':<10} {'N':>3} {'ready median':>13} {'min':>7} {'max':>7} {'destroy median':>15}  target")
    met = True
    for row in rows:
        median = statistics.median(row.ready)
        target = TARGETS.get((row.section, row.instances))
        verdict = "" if target is None else f"<= {target:g}s {'ok' if median <= target else 'MISSED'}"
        met = met and (target is None or median <= target)
        print(f"{row.section:<10} {row.instances:>3} {median:>12.2f}s {min(row.ready):>6.2f}s "
              f"{max(row.ready):>6.2f}s {statistics.median(row.destroy):>14.2f}s  {verdict}")
    print(f"({len(rows[0].ready) if rows else 0} runs each; the original Marathon Deployer: about 10 s)")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", default="1,3,6", help="comma-separated instance counts")
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS),
                        help="backend to measure; repeatable (default: all)")
    args = parser.parse_args()
    client = connect()
    app = unique_app_name("benchenv")
    with tempfile.TemporaryDirectory() as workdir:
        repo = make_sample_repo(Path(workdir), app)
        settings = load_settings(repo / "bgci.toml")
        source = builds.Source.open(settings, "HEAD")
        builds.build_full(client, settings, source, build_args={}, push=False, log=_quiet)
        context = Context(client, settings, source.sha, [int(n) for n in args.instances.split(",")], args.runs)
        try:
            rows = [row for name in args.section or sorted(SECTIONS) for row in SECTIONS[name](context)]
        finally:
            remove_app_containers(client, app)
            remove_app_images(client, app)
    return 0 if report(rows) else 1



def _quiet(_message: str) -> None:
    pass


if __name__ == "__main__":
    sys.exit(main())
