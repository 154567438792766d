"""Test-run overhead: `bgci test` against a bare `docker run --rm IMAGE <same command>`.

Run from the repository root:  python benchmarks/test_overhead.py [--runs 9]

Builds the sample app in a temp repository (bgci's library, unique app name)
and its test image (production + memcached), then times, interleaved so drift
hits all alike, in rounds:
  - `docker run --rm` of the test image with the [test] command and environment,
  - the `bgci test --image <sha image>` console script (a new Python process:
    interpreter start and imports included), same image, same command, from a
    venv where pip installed bgci (benchmarks/installed.py says why),
  - `bgci.testing.run_tests` in-process (what bgci itself adds around the run:
    image resolution, the report's stat and copy, JUnit normalising and writing),
  - `bgci test --help`: the interpreter's start and the imports of `bgci test`
    alone, the part of the CLI's overhead that no change to the test run itself can remove.
Each for two suites: the app's whole suite (t/: it starts servers, so it varies by
several tenths of a second from run to run) and its unit test alone (t/01-routes.t,
steady), which is what resolves an overhead of a tenth of a second. The overhead is
the median of each round's difference to the bare run. Last, the engine's own cost
of copying the JUnit file out of a stopped container (GET .../archive), beside its
stat (HEAD): the part of bgci's overhead that is the engine's, not bgci's. For the same
reason a third way is timed too: `docker run` (kept), `docker cp` of the JUnit file, `docker rm`,
what a shell step would do to hand Jenkins the same file.
Target (issue 9): at most 0.15 s of overhead, on the unit suite. Exits 1 when the CLI misses it.
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

from benchmarks import importcost
from benchmarks.installed import VENV_PYTHON_HELP, Installed, installed_bgci, start_seconds
from bgci import build as builds
from bgci import images, testing
from bgci.config import Settings, load_settings
from bgci.dockerhost import connect
from bgci.engine import connect as connect_engine
from tests.conftest import remove_app_images
from tests.support import make_sample_repo, unique_app_name

TARGET_SECONDS = 0.15  # `bgci test` over a bare `docker run --rm` of the same suite


def quiet(_message: str) -> None:
    pass


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="timed rounds (at least 5)")
    parser.add_argument("--baseline", metavar="REV", help="also measure the import cost at this git revision")
    parser.add_argument("--venv-python", metavar="PATH", default=sys.executable, help=VENV_PYTHON_HELP)
    args = parser.parse_args()
    runs = max(5, args.runs)
    client = connect()
    app = unique_app_name("benchtest")
    with tempfile.TemporaryDirectory() as workdir, installed_bgci(python=args.venv_python) as installed:
        repo = make_sample_repo(Path(workdir), app)
        settings = load_settings(repo / "bgci.toml")
        try:
            figures, (stat, copy) = measure(client, settings, Path(workdir), runs, installed)
        finally:
            remove_app_images(client, app)
        status = report(figures, runs)
        print(f"the engine copying the JUnit file out of a stopped container: GET archive {copy * 1000:.0f} ms, "
              f"its stat (HEAD) {stat * 1000:.0f} ms (bgci test makes one GET; docker run --rm makes none)")
        print(f"python start (`python -c pass`): venv {start_seconds(installed.python) * 1000:.0f} ms")
        importcost.report("bgci test", importcost.TEST, args.baseline, installed.python)
    sys.exit(status)


def measure(client, settings: Settings, workdir: Path, runs: int,  # type: ignore[no-untyped-def]
            installed: Installed) -> tuple[dict[str, dict[str, list[float]]], tuple[float, float]]:
    """(suite -> action -> seconds per round, the engine's copy-out figures)."""
    source = builds.Source.open(settings, "HEAD")
    builds.build_full(client, settings, source, build_args={}, push=False, log=quiet)
    image = images.resolve_image(client, settings, images.reference_for_sha(settings, source.sha), quiet)
    test_image = testing.ensure_test_image(client, settings, image, quiet)  # built once, outside the timings
    unit_config = settings.config_file.with_name("bgci-unit.toml")
    unit_config.write_text(settings.config_file.read_text().replace('"t/"]', '"t/01-routes.t"]', 1))
    suites = {"whole suite (t/)": settings, "unit test (t/01-routes.t)": load_settings(unit_config)}
    actions = {name: suite_actions(client, suite, image, test_image.reference, workdir, installed)
               for name, suite in suites.items()}
    help_command = [str(installed.bgci), "test", "--help"]
    for suite in actions.values():  # warm-up: page cache, the engine's own caches
        for action in suite.values():
            action()
    figures: dict[str, dict[str, list[float]]] = {name: {action: [] for action in suite}
                                                  for name, suite in actions.items()}
    figures["start"] = {"bgci test --help": []}
    for _ in range(runs):
        for name, suite in actions.items():
            for action_name, action in suite.items():
                figures[name][action_name].append(timed(action))
        figures["start"]["bgci test --help"].append(timed(lambda: subprocess.run(
            help_command, check=True, stdout=subprocess.DEVNULL, env=installed.environ())))
    return figures, copy_out_seconds(suites["unit test (t/01-routes.t)"], test_image.reference)


def suite_actions(client, settings: Settings, image: images.ImageRef, run_image: str,  # type: ignore[no-untyped-def]
                  workdir: Path, installed: Installed) -> dict[str, Callable[[], None]]:
    """The ways to run `settings`' suite: docker's CLI (bare, and doing bgci's job by hand), bgci's CLI, its library."""
    env_flags = [flag for key, value in settings.test.env.items() for flag in ("-e", f"{key}={value}")]
    bare = ["docker", "run", "--rm", *env_flags, run_image, *settings.test.command]
    cli = [str(installed.bgci), "--quiet", "--config", str(settings.config_file), "test", "--image", image.reference,
           "--junit-dir", str(workdir / "cli")]

    def run_bare() -> None:
        subprocess.run(bare, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    by_hand_name = f"{settings.app}-by-hand"
    by_hand = [["docker", "run", "--name", by_hand_name, *env_flags, run_image, *settings.test.command],
               ["docker", "cp", f"{by_hand_name}:{settings.test.junit_path}", str(workdir / "by-hand.xml")],
               ["docker", "rm", by_hand_name]]

    def run_by_hand() -> None:
        """What a shell step would do for the same result: run, copy the JUnit file out, remove."""
        for command in by_hand:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run_cli() -> None:
        subprocess.run(cli, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=installed.environ())

    engine = connect_engine()  # what `bgci test` uses (the docker-py client above would go through docker-py)

    def run_library() -> None:
        resolved = images.resolve_image(engine, settings, image.reference, quiet)
        testing.run_tests(engine, settings, resolved, results_dir=workdir / "lib", output=quiet,
                          log=quiet).raise_for_status()

    return {"docker run --rm": run_bare, "docker run; cp; rm": run_by_hand, "bgci test (CLI)": run_cli,
            "run_tests (library)": run_library}


def copy_out_seconds(settings: Settings, run_image: str, runs: int = 5) -> tuple[float, float]:
    """(median HEAD, median GET) of the JUnit file's archive in a stopped container that wrote it."""
    client = connect_engine()
    container = client.create_container(run_image, settings.test.command, environment=settings.test.env,
                                        name=f"{settings.app}-copyout", labels={})
    try:
        client.start_container(container)
        client.wait_container(container, settings.test.timeout)
        stat = [timed(lambda: client.archive_stat(container, settings.test.junit_path)) for _ in range(runs)]
        copy = [timed(lambda: client.get_archive(container, settings.test.junit_path)) for _ in range(runs)]
    finally:
        client.remove_container(container)
    return statistics.median(stat), statistics.median(copy)


def report(figures: dict[str, dict[str, list[float]]], runs: int) -> int:
    status = 0
    print(f"the sample app's suites in its test image, {runs} interleaved rounds (seconds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end)")
    print(f"{'':42} {'median':>8} {'min':>8} {'max':>8} {'overhead':>9}")
    for suite, actions in figures.items():
        bare = actions.get("docker run --rm")
        for name, times in actions.items():
            label = f"{suite}: {name}" if suite != "start" else name
            overhead = ""
            if bare is not None and name != "docker run --rm":
                overhead = f"{statistics.median(t - b for t, b in zip(times, bare, strict=True)):+9.3f}"
            print(f"{label:42} {statistics.median(times):8.3f} {min(times):8.3f} {max(times):8.3f} {overhead}")
        if suite.startswith("unit"):
            cli = statistics.median(t - b for t, b in zip(actions["bgci test (CLI)"], bare, strict=True))  # type: ignore[arg-type]
            met = cli <= TARGET_SECONDS
            status = 0 if met else 1
            print(f"overhead of bgci test (CLI, new process, unit test; median of the rounds' differences): "
                  f"{cli:+.3f} s  (target <= {TARGET_SECONDS} s: {'met' if met else 'MISSED'})")
            by_hand = statistics.median(t - b for t, b in zip(actions["bgci test (CLI)"], actions["docker run; cp; rm"],
                                                              strict=True))
            print(f"bgci test (CLI) over the same job by hand (docker run; cp; rm), unit test: {by_hand:+.3f} s")
    return status


if __name__ == "__main__":
    main()
