"""From `git push` to live through the generated Jenkins jobs, on the emulator, against the real stack.

What each step stands for in a real Jenkins:
- `{app}-build` is what the git plugin starts on a push; its parameterized trigger hands the commit
  (SHA=${GIT_COMMIT}) to `{app}-test`, which runs in a workspace of its own;
- `{app}-test`'s JUnit publisher archives the reports and its description setter shows the preview
  and the promote link: the promote button is that link, which opens `{app}-promote` with ENV filled;
- `{app}-promote` and `{app}-rollback` run on the router agent, in workspaces of their own, and act
  on the one router directory the jobs export (BGCI_ROUTER_DIR);
- Jenkins' stop button sends SIGTERM to the build's processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import docker
import pytest

from bgci import build as builds
from bgci.config import load_settings
from tests.jenkins_flow import TOKEN, JenkinsFlow
from tests.support import Registry, commit_all

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
         session_registry: Registry) -> Iterator[JenkinsFlow]:
    flow = JenkinsFlow(tmp_path_factory.mktemp("jenkins-flow"), session_registry).start()
    yield flow
    flow.stop(docker_client)


def push_and_build(flow: JenkinsFlow, build_number: int, message: str) -> tuple[str, str, dict]:
    """Commit, run {app}-build, wait for the {app}-test build it starts: (sha, environment, test build)."""
    sha = flow.commit_code_change(message)
    built = flow.run("build")
    assert built["result"] == "SUCCESS", flow.console("build", built["number"])
    tested = flow.wait_for_build("test", build_number)
    assert tested["result"] == "SUCCESS", flow.console("test", build_number)
    parameters = next(a for a in tested["actions"] if "parameters" in a)["parameters"]
    assert {(p["name"], p["value"]) for p in parameters} == {("SHA", sha)}
    return sha, flow.environment_of(tested), tested


def test_push_to_live_and_back_through_the_generated_jobs(flow: JenkinsFlow,
                                                          docker_client: docker.DockerClient) -> None:
    # The first push: no from-scratch image yet, so a full build; then tests, environment, preview.
    first_sha, first_env, _ = push_and_build(flow, 1, "first push")
    assert "full build" in flow.console("build", 1) or "plan: full" in flow.console("build", 1)
    assert flow.run("promote", {"ENV": first_env})["result"] == "SUCCESS"
    assert flow.live() == (200, first_env, first_sha)

    # A code-only push: a delta build, tests in its image, a second environment with its preview.
    sha, env, tested = push_and_build(flow, 2, "a code change")
    assert "plan: code" in flow.console("build", 2)
    console = flow.console("test", 2)
    assert "testing " in console and "recorded the pass" in console and "preview: http://" in console
    reports = next(a for a in tested["actions"] if a.get("_class") == "hudson.tasks.junit.TestResultAction")
    assert reports["totalCount"] > 0 and reports["failCount"] == 0  # JUnit archived: unit and smoke reports
    assert f"{env}.preview.localhost" in tested["description"] and f"ENV={env}" in tested["description"]
    assert TOKEN not in console and "registry-secret-5d1" not in console  # the binding is masked

    # The promote button: the promote job with the environment from the test job's description.
    promoted = flow.run("promote", {"ENV": env})
    assert promoted["result"] == "SUCCESS", flow.console("promote", promoted["number"])
    assert flow.live() == (200, env, sha)

    # Rollback brings the first one back.
    rolled = flow.run("rollback")
    assert rolled["result"] == "SUCCESS", flow.console("rollback", rolled["number"])
    assert flow.live() == (200, first_env, first_sha)

    # Each job ran in its own workspace; the router state lives in the router directory alone.
    workspaces = {kind: flow.workspace(kind) for kind in ("build", "test", "promote", "rollback")}
    assert len(set(workspaces.values())) == 4 and all(w.is_dir() for w in workspaces.values())
    assert (workspaces["test"] / "test-results" / f"unit-{sha}.xml").is_file()
    assert (flow.router_dir / "state.json").is_file()
    assert not any((w / ".bgci").exists() for w in workspaces.values())


def test_the_promote_job_refuses_an_image_that_never_passed_its_tests(flow: JenkinsFlow,
                                                                      docker_client: docker.DockerClient) -> None:
    # A commit built and deployed by hand, never through `bgci test`.
    sha = flow.commit_code_change("built, never tested")
    settings = flow.settings
    builds.build_auto(docker_client, settings, builds.Source.open(settings, sha), build_args={}, push=True,
                      log=lambda _: None)
    from bgci.app import Bgci

    untested = Bgci(settings).create_environment(sha=sha, name=f"{flow.app}-untested", instances=1, preview=False)
    live_before = flow.live()
    refused = flow.run("promote", {"ENV": untested.name})
    assert refused["result"] == "FAILURE"
    assert f"no `bgci test` passed for {sha[:12]}" in flow.console("promote", refused["number"])
    assert flow.live() == live_before


def test_stopping_a_running_test_job_leaves_no_container(flow: JenkinsFlow,
                                                         docker_client: docker.DockerClient) -> None:
    # A suite that takes a minute: the job is stopped while it runs in its container.
    (flow.repo / "t" / "00-slow.t").write_text("use strict;\nuse Test::More;\nsleep 60;\nok 1;\ndone_testing;\n")
    sha = commit_all(flow.repo, "a slow test")
    settings = load_settings(flow.repo / "bgci.toml")
    builds.build_auto(docker_client, settings, builds.Source.open(settings, sha), build_args={}, push=True,
                      log=lambda _: None)
    assert flow.client is not None
    started = flow.client.trigger(flow.job("test"), {"SHA": sha})
    test_runs = {"label": [f"io.bgci.app={flow.app}", "io.bgci.kind=test-run"]}
    deadline = time.monotonic() + 120
    while not docker_client.containers.list(filters=test_runs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert docker_client.containers.list(filters=test_runs), flow.console("test", started.number)
    flow.client.server.stop_build(flow.job("test"), started.number)
    stopped = flow.wait_for_build("test", started.number, timeout=60)
    assert stopped["result"] == "ABORTED"
    # Jenkins marks the build aborted as it signals the processes; bgci's cleanup finishes within
    # the grace before SIGKILL (5 s here, as in Jenkins), or never.
    deadline = time.monotonic() + 15
    while docker_client.containers.list(all=True, filters=test_runs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_client.containers.list(all=True, filters=test_runs) == [], flow.console("test", started.number)
    envs = {"label": [f"io.bgci.app={flow.app}", f"io.bgci.sha={sha}", "io.bgci.index"]}
    assert docker_client.containers.list(all=True, filters=envs) == []
