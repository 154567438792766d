"""Test-run overhead: `bgci test` against a bare `docker run --rm IMAGE <same command>`.

Run from the repository root:  python benchmarks/test_overhead.py [--runs 7]

Builds the sample app in a temp repository (bgci's library, unique app name)
and its test image (production + memcached), then times, interleaved so drift
hits all alike, medians of:
  - `docker run --rm` of the test image with the [test] command and environment,
  - the `bgci test --image <sha image>` console script (a new Python process:
    interpreter start and imports included), same image, same command, from a
    venv where pip installed bgci (benchmarks/installed.py says why),
  - `bgci.testing.run_tests` in-process (what bgci itself adds around the run:
    image resolution, the report's stat and copy, JUnit normalising and writing),
  - `bgci test --help`: the interpreter's start and the imports of `bgci test`
    alone, the part of the CLI's overhead that no change to the test run itself can remove.
Target (issue 9): at most 0.15 s of overhead. Exits 1 when the CLI misses it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import importcost
from benchmarks.installed import Installed, installed_bgci, start_seconds
from bgci import build as builds
from bgci import images, testing
from bgci.config import Settings, load_settings
from bgci.dockerhost import connect
from tests.conftest import remove_app_images
from tests.support import make_sample_repo, unique_app_name

TARGET_SECONDS = 0.15  # `bgci test` over a bare `docker run --rm` of the same suite


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (at least 5)")
    parser.add_argument("--baseline", metavar="REV", help="also measure the import cost at this git revision")
    args = parser.parse_args()
    runs = max(5, args.runs)
    client = connect()
    app = unique_app_name("benchtest")
    with tempfile.TemporaryDirectory() as workdir, installed_bgci() as installed:
        repo = make_sample_repo(Path(workdir), app)
        settings = load_settings(repo / "bgci.toml")
        try:
            figures = measure(client, settings, Path(workdir), runs, installed)
        finally:
            remove_app_images(client, app)
        status = report(figures, runs)
        print(f"python start (`python -c pass`): venv {start_seconds(installed.python) * 1000:.0f} ms")
        importcost.report("bgci test", importcost.TEST, args.baseline, installed.python)
    sys.exit(status)


def measure(client, settings: Settings, workdir: Path, runs: int,  # type: ignore[no-untyped-def]
            installed: Installed) -> dict[str, list[float]]:
    quiet: Callable[[str], None] = lambda _: None  # noqa: E731
    source = builds.Source.open(settings, "HEAD")
    builds.build_full(client, settings, source, build_args={}, push=False, log=quiet)
    image = images.resolve_image(client, settings, images.reference_for_sha(settings, source.sha), quiet)
    test_image = testing.ensure_test_image(client, settings, image, quiet)  # built once, outside the timings

    env_flags = [flag for key, value in settings.test.env.items() for flag in ("-e", f"{key}={value}")]
    bare = ["docker", "run", "--rm", *env_flags, test_image.reference, *settings.test.command]
    cli = [str(installed.bgci), "--quiet", "--config", str(settings.config_file), "test", "--image", image.reference,
           "--junit-dir", str(workdir / "cli")]

    def run_bare() -> None:
        subprocess.run(bare, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run_cli() -> None:
        subprocess.run(cli, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=installed.environ())

    def run_library() -> None:
        resolved = images.resolve_image(client, settings, image.reference, quiet)
        testing.run_tests(client, settings, resolved, results_dir=workdir / "lib", output=quiet,
                          log=quiet).raise_for_status()

    def run_help() -> None:
        subprocess.run([cli[0], "test", "--help"], check=True, stdout=subprocess.DEVNULL, env=installed.environ())

    actions = {"docker run --rm": run_bare, "bgci test (CLI)": run_cli, "run_tests (library)": run_library,
               "bgci test --help": run_help}
    for action in actions.values():  # warm-up: page cache, connection pools, the engine's own caches
        action()
    figures: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            figures[name].append(timed(action))
    return figures


def report(figures: dict[str, list[float]], runs: int) -> int:
    print(f"sample app suite in its test image, {runs} interleaved runs each (seconds)")
    print(f"{'':22} {'median':>8} {'min':>8} {'max':>8}")
    for name, times in figures.items():
        print(f"{name:22} {statistics.median(times):8.3f} {min(times):8.3f} {max(times):8.3f}")
    bare = statistics.median(figures["docker run --rm"])
    cli = statistics.median(figures["bgci test (CLI)"]) - bare
    library = statistics.median(figures["run_tests (library)"]) - bare
    print(f"overhead of bgci test (CLI, new process): {cli:+.3f} s  (target <= {TARGET_SECONDS} s: "
          f"{'met' if cli <= TARGET_SECONDS else 'MISSED'})")
    print(f"overhead of run_tests (in-process):       {library:+.3f} s")
    return 0 if cli <= TARGET_SECONDS else 1


if __name__ == "__main__":
    main()
