"""A code-only commit to live through the generated Jenkins jobs, on the Jenkins emulator.

Run from the repository root:  python benchmarks/jenkins_flow.py [--runs 5]

Sets up what tests/test_jenkins_e2e.py does (the sample app's jobs pushed to the emulator, a loopback
registry, the router agent's nginx), makes a first push (a full build, from Docker's cache) and
promotes it, then times `--runs` code-only commits from the commit to the new sha answering on the
live name, with N=2 instances per environment:

  build    `{app}-build`: checkout, `bgci build auto` (a code delta) and its push
  test     `{app}-test`: checkout, `bgci test`, `bgci env create` (with its preview), `bgci smoke`
  promote  `{app}-promote`: checkout, `bgci promote` (health, nginx -t, reload, verify)
  between  Jenkins' own hand-offs: triggers, queue, polling by the client

Our goal is a median under 15 s on these 2-core machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bgci.dockerhost import connect
from tests.jenkins_flow import JenkinsFlow
from tests.support import Registry

GOAL = 15.0
STAGES = ("build", "test", "promote", "between")


def one_commit(flow: JenkinsFlow, run: int) -> dict[str, float]:
    """Seconds per stage for one code-only commit, from the commit to the live name answering it."""
    started = time.monotonic()
    sha = flow.commit_code_change(f"benchmark commit {run}")
    built = flow.run("build")
    tested = flow.wait_for_build("test", built["number"])  # each build starts one test build
    assert tested["result"] == "SUCCESS", flow.console("test", tested["number"])
    promoted = flow.run("promote", {"ENV": flow.environment_of(tested)})
    assert promoted["result"] == "SUCCESS", flow.console("promote", promoted["number"])
    deadline = time.monotonic() + 60
    while flow.live()[2] != sha:
        assert time.monotonic() < deadline, "the new sha never answered on the live name"
        time.sleep(0.01)
    total = time.monotonic() - started
    stages = {"build": built["duration"] / 1000, "test": tested["duration"] / 1000,
              "promote": promoted["duration"] / 1000}
    return {**stages, "between": total - sum(stages.values()), "total": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    client = connect()
    with tempfile.TemporaryDirectory() as workdir:
        registry = Registry(Path(workdir) / "registry").start()
        flow = JenkinsFlow(Path(workdir), registry, prefix="benchflow")
        try:
            flow.start()
            first = flow.commit_code_change("first push")
            flow.run("build")
            tested = flow.wait_for_build("test", 1)
            assert tested["result"] == "SUCCESS", flow.console("test", 1)
            flow.run("promote", {"ENV": flow.environment_of(tested)})
            assert flow.live()[2] == first
            runs = [one_commit(flow, n) for n in range(args.runs)]
        finally:
            flow.stop(client)
            registry.stop()
    totals = [r["total"] for r in runs]
    median = statistics.median(totals)
    print(f"code-only commit to live through the emulated jobs, N=2 instances, {args.runs} runs")
    print(f"{'stage':<10} {'median':>8} {'share':>7}")
    for stage in STAGES:
        values = [r[stage] for r in runs]
        print(f"{stage:<10} {statistics.median(values):>7.2f}s {statistics.median(values) / median:>6.0%}")
    print(f"{'total':<10} {median:>7.2f}s   (min {min(totals):.2f}s, max {max(totals):.2f}s)  "
          f"goal < {GOAL:g}s: {'met' if median < GOAL else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
