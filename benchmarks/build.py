"""Build benchmark: full vs delta builds of the sample app, and what a code-only delta pushes.

Run from the repository root:  python benchmarks/build.py [--runs 3]

In a temp clone of the sample app padded with >= 5 MB of committed files (so laying
the whole tree instead of the change would show), it measures medians of:
  - full build (`docker build --no-cache`, what the daily from-scratch rebuild does),
  - code-only delta and deps delta (bgci's plan + delta build),
  - `docker build` with a warm cache after the same code-only change (what a user would run),
and the bytes a code-only delta adds to a loopback registry. Targets (issue 2):
code delta <= full / 20, code delta <= warm docker build, pushed <= changed files + 64 KiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bgci import build as builds
from bgci.config import load_settings
from bgci.dockerhost import connect
from tests.conftest import remove_app_images
from tests.support import BASE_IMAGE, Registry, commit_all, make_sample_repo, unique_app_name

PADDING_FILES, PADDING_BYTES = 5, 1_100_000  # 5.5 MB of incompressible committed files


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    client = connect()
    app = unique_app_name("benchbuild")
    with tempfile.TemporaryDirectory() as workdir:
        registry = Registry(Path(workdir) / "registry").start()
        repo = make_sample_repo(Path(workdir), app, registry=registry.address)
        (repo / "assets").mkdir()
        for index in range(PADDING_FILES):
            (repo / "assets" / f"blob{index}.bin").write_bytes(os.urandom(PADDING_BYTES))
        commit_all(repo, "pad the tree with 5.5 MB of assets")
        settings = load_settings(repo / "bgci.toml")
        quiet: Callable[[str], None] = lambda _: None  # noqa: E731
        try:
            figures = measure(client, settings, repo, runs, registry, quiet)
        finally:
            registry.stop()
            remove_app_images(client, app)
            subprocess.run(["docker", "rmi", "-f", "benchbuild-warm:latest"], capture_output=True, check=False)
    report(figures, runs)


def measure(client, settings, repo: Path, runs: int, registry: Registry,  # type: ignore[no-untyped-def]
            log: Callable[[str], None]) -> dict[str, object]:
    def source() -> builds.Source:
        return builds.Source.open(settings, "HEAD")

    full_times = [timed(lambda: builds.build_full(client, settings, source(), build_args={}, push=False, log=log,
                                                  use_cache=False)) for _ in range(runs)]
    # The from-scratch image every delta below sits on; pushed so the registry holds its layers.
    builds.build_full(client, settings, source(), build_args={}, push=True, log=log)

    code_times, docker_times, pushed, changed_sizes = [], [], [], []
    for run in range(runs):
        changed = repo / "lib" / "WebApp.pm"
        changed.write_text(changed.read_text() + f"\n# benchmark change {run}\n")
        commit_all(repo, f"code change {run}")
        plan = builds.plan_build(client, settings, source(), log)
        assert plan.kind == "code", plan.reasons
        code_times.append(timed(lambda: builds.build_auto(client, settings, source(), build_args={}, push=False,
                                                          log=log)))
        before = registry.stored_bytes()
        builds.build_auto(client, settings, source(), build_args={}, push=True, log=log)
        pushed.append(registry.stored_bytes() - before)
        changed_sizes.append(changed.stat().st_size + len("0" * 41))  # the file plus REVISION
        docker_times.append(timed(lambda: warm_docker_build(repo)))

    deps_times = []
    for run in range(runs):
        cpanfile = repo / "cpanfile"
        cpanfile.write_text(cpanfile.read_text() + f"\n# dependency change {run}\n")
        commit_all(repo, f"deps change {run}")
        assert builds.plan_build(client, settings, source(), log).kind == "deps"
        deps_times.append(timed(lambda: builds.build_auto(client, settings, source(), build_args={}, push=False,
                                                          log=log)))
    return {"full": full_times, "code": code_times, "deps": deps_times, "docker": docker_times,
            "pushed": pushed, "changed": changed_sizes}


def warm_docker_build(repo: Path) -> None:
    """What a user would do instead: `docker build` of the work dir, its cache warm from the previous run."""
    subprocess.run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", "benchbuild-warm:latest",
                    str(repo)], check=True, capture_output=True)


def report(figures: dict[str, list[float]], runs: int) -> None:
    full, code, docker_warm = (statistics.median(figures[k]) for k in ("full", "code", "docker"))
    pushed, allowed = max(figures["pushed"]), max(figures["changed"]) + 64 * 1024
    print(f"build benchmark, medians of {runs} runs (seconds)")
    for name, key in [("full build (--no-cache)", "full"), ("code-only delta", "code"), ("deps delta", "deps"),
                      ("warm-cache docker build", "docker")]:
        values = ", ".join(f"{v:.2f}" for v in figures[key])
        print(f"  {name:<26} {statistics.median(figures[key]):8.2f}   runs: {values}")
    print(f"  bytes pushed for a code-only delta: {pushed} (changed files + 64 KiB = {allowed})")
    print("targets")
    print(f"  code delta <= full / 20:         {code:.2f} <= {full / 20:.2f}  "
          f"{'met' if code <= full / 20 else 'MISSED'}")
    print(f"  code delta <= warm docker build: {code:.2f} <= {docker_warm:.2f}  "
          f"{'met' if code <= docker_warm else 'MISSED'}")
    print(f"  pushed <= changed + 64 KiB:      {pushed} <= {allowed}  {'met' if pushed <= allowed else 'MISSED'}")


if __name__ == "__main__":
    main()
