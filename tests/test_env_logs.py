"""`bgci env logs` on real containers of the sample app: local (the engine's logs API) and Marathon (the
emulator's Mesos agent, /files/read over each task's sandbox), and the log driver they run with.

The sample app writes one line per request (`... "GET /path HTTP/1.1" 404 ...`) on stdout, so a
request to an instance with a unique path is a line we can look for in that instance's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from bgci.environments import EnvironmentService
from bgci.errors import SchedulerError
from bgci.images import resolve_image
from bgci.schedulers.base import Environment, Instance, LogLine
from bgci.schedulers.local import LocalScheduler
from bgci.schedulers.local_logs import log_config_of
from bgci.schedulers.marathon import MarathonClient, MarathonOptions, MarathonScheduler
from tests.conftest import SampleBuild, empty_marathon, push_to_registry
from tests.emulators.marathon import MarathonEmulator
from tests.emulators.mesos_agent import READ_CAP, MesosAgent
from tests.support import Registry
from tests.test_env_local import app_containers, assert_clear_error, bgci

pytestmark = pytest.mark.docker


def hit(instance: Instance, path: str) -> None:
    """One request, so one line in that instance's log; a pause, so the next request's line is later."""
    requests.get(f"http://{instance.address}{path}", timeout=5)
    time.sleep(0.05)


def marked(lines: list[LogLine], marker: str) -> list[tuple[str, str]]:
    """(instance, path) of the request lines whose path contains `marker`, in output order."""
    found = []
    for line in lines:
        if marker in line.text:
            path = line.text.split('"GET ', 1)[1].split(" ", 1)[0]
            found.append((line.instance, path))
    return found


# -- local -----------------------------------------------------------------------------------------------
@pytest.fixture
def local_env(docker_client: docker.DockerClient, sample_build: SampleBuild) -> Iterator[tuple[LocalScheduler,
                                                                                                 Environment]]:
    settings = sample_build.settings
    scheduler = LocalScheduler(docker_client, settings.app, bind_address=settings.deploy.bind_address)
    service = EnvironmentService(scheduler, settings,
                                 resolve=lambda ref: resolve_image(docker_client, settings, ref, lambda _: None))
    name = f"{sample_build.app}-logs"
    env = service.create(service.spec_for(sha=sample_build.sha, name=name, instances=2), timeout=60)
    yield scheduler, env
    service.destroy(name)
    assert app_containers(docker_client, sample_build.app) == []


def test_local_logs_are_merged_in_time_order_with_each_instance_named(local_env: tuple[LocalScheduler,
                                                                                       Environment]) -> None:
    scheduler, env = local_env
    one, two = env.instances
    for round_ in range(3):  # alternating: the merge must interleave them exactly so
        hit(one, f"/seq-{round_}-a")
        hit(two, f"/seq-{round_}-b")
    lines = list(scheduler.logs(env.name))
    assert marked(lines, "/seq-") == [(one.id, "/seq-0-a"), (two.id, "/seq-0-b"), (one.id, "/seq-1-a"),
                                      (two.id, "/seq-1-b"), (one.id, "/seq-2-a"), (two.id, "/seq-2-b")]
    # Every line has the engine's time, and the whole output (start-up lines too) is in time order.
    times = [line.time for line in lines]
    assert None not in times and times == sorted(times)
    assert {line.instance for line in lines} == {one.id, two.id}

    # --tail N: the last N lines of each instance, then merged.
    assert marked(list(scheduler.logs(env.name, tail=1)), "/seq-") == [(one.id, "/seq-2-a"), (two.id, "/seq-2-b")]
    assert list(scheduler.logs(env.name, tail=0)) == []
    # --since: only what came after (to the microsecond, although the engine filters by whole seconds).
    cut = datetime.now(UTC)
    hit(one, "/late-a")
    hit(two, "/late-b")
    assert [line.text.split('"GET ')[1].split()[0] for line in scheduler.logs(env.name, since=cut)] == [
        "/late-a", "/late-b"]


def test_following_in_process_gets_new_lines_and_closing_stops_every_reader(
        local_env: tuple[LocalScheduler, Environment]) -> None:
    scheduler, env = local_env
    stop = threading.Event()

    def requests_to_each() -> None:  # until the streams are attached, requests go unseen (tail 0): keep going
        round_ = 0
        while not stop.is_set():
            for instance in env.instances:
                hit(instance, f"/follow-{round_}")
            round_ += 1
            time.sleep(0.2)

    client = threading.Thread(target=requests_to_each, daemon=True)
    lines = scheduler.logs(env.name, tail=0, follow=True)
    got: list[LogLine] = []
    client.start()
    try:
        deadline = time.monotonic() + 20
        while {i for i, _ in marked(got, "/follow-")} != {i.id for i in env.instances}:
            assert time.monotonic() < deadline, got
            got.append(next(lines))
        assert len([t for t in threading.enumerate() if t.name.startswith("bgci-logs-")]) == 2  # one per instance
    finally:
        stop.set()
        client.join(5)
    lines.close()  # type: ignore[attr-defined]  # what Ctrl-C in the loop does too: streams closed, readers joined
    assert [t.name for t in threading.enumerate() if t.name.startswith("bgci-logs-")] == []
    # Followed lines come in time order too (each instance's stream, merged as they arrive).
    times = [line.time for line in got]
    assert None not in times and times == sorted(times)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_cli_logs_follow_prints_every_instance_and_stops_cleanly_on_a_signal(
        local_env: tuple[LocalScheduler, Environment], sample_build: SampleBuild, stop: signal.Signals) -> None:
    _, env = local_env
    process = subprocess.Popen(["bgci", "env", "logs", env.name, "-f", "--tail", "0"], cwd=sample_build.repo,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 30
        round_ = 0
        while not all(any(line.startswith(f"{i.id} | ") and "/cli-follow-" in line for line in out)
                      for i in env.instances):
            assert time.monotonic() < deadline and process.poll() is None, (out, process.poll())
            for instance in env.instances:
                hit(instance, f"/cli-follow-{round_}")
            round_ += 1
            time.sleep(0.3)
        process.send_signal(stop)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    stderr = process.stderr.read()  # type: ignore[union-attr]
    # Ctrl-C and SIGTERM (a Jenkins abort) end -f normally: exit 0, nothing on stderr, the process gone.
    assert (code, stderr) == (0, ""), (code, stderr)
    assert process.poll() == 0
    # Each line led by its instance, names padded to one width.
    assert all(" | " in line for line in out)


def test_cli_logs_tail_since_and_bad_input(local_env: tuple[LocalScheduler, Environment],
                                           sample_build: SampleBuild) -> None:
    _, env = local_env
    one, two = env.instances
    hit(one, "/cli-a")
    hit(two, "/cli-b")
    result = bgci("env", "logs", env.name, "--tail", "1", "--since", "10m", cwd=sample_build.repo)
    assert result.returncode == 0, result.stderr
    assert [line.split(" | ")[0] for line in result.stdout.splitlines()] == [one.id, two.id]
    assert '"GET /cli-a' in result.stdout.splitlines()[0] and '"GET /cli-b' in result.stdout.splitlines()[1]
    assert_clear_error(bgci("env", "logs", env.name, "--since", "yesterday", cwd=sample_build.repo), 2,
                       "--since: since 'yesterday': neither a duration")
    assert bgci("env", "logs", env.name, "--tail", "-1", cwd=sample_build.repo).returncode == 2
    assert_clear_error(bgci("env", "logs", "nope", cwd=sample_build.repo), 8, "no environment nope")


def test_log_driver_and_options_reach_every_container_and_an_unreadable_one_is_named(
        docker_client: docker.DockerClient, sample_build: SampleBuild, tmp_path: Path) -> None:
    settings = sample_build.settings
    deploy = replace(settings.deploy, log_driver="json-file", log_options={"max-size": "1m", "max-file": "2"})
    configured = replace(settings, deploy=deploy)
    scheduler = LocalScheduler(docker_client, settings.app, log_config=log_config_of(configured.deploy))
    service = EnvironmentService(scheduler, configured,
                                 resolve=lambda ref: resolve_image(docker_client, settings, ref, lambda _: None))
    name = f"{sample_build.app}-driver"
    try:
        service.create(service.spec_for(sha=sample_build.sha, name=name, instances=1), timeout=60)
        service.scale(name, 2, timeout=60)  # a scale-up copies its sibling's log config
        wanted = {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
        assert [c.attrs["HostConfig"]["LogConfig"] for c in app_containers(docker_client, sample_build.app, name)] \
            == [wanted, wanted]
    finally:
        service.destroy(name)

    # "none": the engine keeps nothing to read back. Through the CLI, from bgci.toml's [deploy].
    config = tmp_path / "bgci.toml"
    config.write_text((sample_build.repo / "bgci.toml").read_text().replace(
        "[deploy]\n", '[deploy]\nlog_driver = "none"\n', 1))
    name = f"{sample_build.app}-none"
    created = bgci("--config", str(config), "env", "create", "--sha", sample_build.sha, "--name", name,
                   "--instances", "1", "--no-preview", cwd=sample_build.repo)
    try:
        assert created.returncode == 0, created.stderr
        (container,) = app_containers(docker_client, sample_build.app, name)
        assert container.attrs["HostConfig"]["LogConfig"]["Type"] == "none"
        for follow in ([], ["-f"]):
            result = bgci("--config", str(config), "env", "logs", name, *follow, cwd=sample_build.repo)
            assert_clear_error(result, 8, f"cannot read the logs of {name}.1: its log driver 'none'")
        with pytest.raises(SchedulerError, match="json-file, local, journald"):
            list(LocalScheduler(docker_client, settings.app).logs(name))
    finally:
        assert bgci("--config", str(config), "env", "destroy", name, cwd=sample_build.repo).returncode == 0


# -- the emulator's Mesos agent -------------------------------------------------------------------------------
@pytest.fixture
def agent() -> Iterator[MesosAgent]:
    agent = MesosAgent("127.0.0.1", "agent-S0", "framework-0000")
    agent.start()
    yield agent
    agent.stop()


def test_emulated_files_read_answers_as_mesos_documents_it(agent: MesosAgent) -> None:
    """Each assertion: what apache/mesos src/files/files.cpp (FilesProcess::read) does."""
    sandbox = agent.sandbox("shop_a.instance-1")
    (sandbox / "stdout").write_bytes(b"one\ntwo\n" + b"x" * (READ_CAP + 10))
    path = f"{sandbox}/stdout"
    size = (sandbox / "stdout").stat().st_size

    def read(**params: Any) -> requests.Response:
        return requests.get(agent.url + "/files/read", params=params, timeout=5)

    # offset and length: {"data": the bytes there, "offset": where they start}.
    assert read(path=path, offset=4, length=3).json() == {"data": "two", "offset": 4}
    # offset -1 (also the default): the size, no data; what `mesos cat` asks first.
    assert read(path=path, offset=-1).json() == {"data": "", "offset": size}
    assert read(path=path).json() == {"data": "", "offset": size}
    # At or past the end: the size, no data (how a reader knows it caught up).
    assert read(path=path, offset=size + 100, length=5).json() == {"data": "", "offset": size}
    # No length: the rest of the file, capped at 16 pages.
    assert len(read(path=path, offset=0).json()["data"]) == READ_CAP
    # A path the agent does not serve: 404. A directory: 400. No path, or a bad number: 400.
    assert read(path=f"{sandbox}/nope").status_code == 404
    assert read(path="/etc/passwd").status_code == 404  # outside every attached sandbox
    assert read(path=f"{sandbox}/../../../../../../etc/passwd").status_code == 404
    assert (read(path=str(sandbox)).status_code, read(path=str(sandbox)).text) == (400, "Cannot read a directory.\n")
    assert read().text == "Expecting 'path=value' in query.\n"
    assert read(path=path, offset="x").status_code == 400
    # /files/browse lists the sandbox; /state names it as the executor's directory (executor id = task id).
    listing = requests.get(agent.url + "/files/browse", params={"path": str(sandbox)}, timeout=5).json()
    assert [(f["path"], f["size"]) for f in listing] == [(f"{sandbox}/stderr", 0), (path, size)]
    state = requests.get(agent.url + "/state", timeout=5).json()
    (executor,) = state["frameworks"][0]["executors"]
    assert (executor["id"], executor["directory"]) == ("shop_a.instance-1", str(sandbox))


# -- Marathon ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pushed_build(sample_build: SampleBuild, session_registry: Registry,
                 docker_client: docker.DockerClient) -> SampleBuild:
    settings = push_to_registry(docker_client, sample_build.settings, sample_build.sha, session_registry.address)
    return SampleBuild(sample_build.repo, settings, sample_build.sha, sample_build.result)


@pytest.fixture
def marathon_env(marathon: MarathonEmulator, pushed_build: SampleBuild,
                 docker_client: docker.DockerClient) -> Iterator[tuple[MarathonScheduler, Environment]]:
    settings = pushed_build.settings
    settings = replace(settings, deploy=replace(settings.deploy, log_driver="none"))  # Mesos' sandbox reads it anyway
    scheduler = MarathonScheduler(MarathonClient([marathon.url]), settings.app, lock_timeout=30,
                                  agent_port=marathon.agent_port, options=MarathonOptions.from_settings(settings))
    service = EnvironmentService(scheduler, settings,
                                 resolve=lambda ref: resolve_image(docker_client, settings, ref, lambda _: None))
    env = service.create(service.spec_for(sha=pushed_build.sha, name=f"{pushed_build.app}-mlogs", instances=2),
                         timeout=60)
    yield scheduler, env
    assert empty_marathon(marathon) == [scheduler.app_id(env.name)]


def test_marathon_logs_come_from_each_tasks_sandbox(marathon_env: tuple[MarathonScheduler, Environment],
                                                    marathon: MarathonEmulator, pushed_build: SampleBuild,
                                                    tmp_path: Path) -> None:
    scheduler, env = marathon_env
    one, two = env.instances
    # The body carried the log driver as Docker parameters (the emulator ran the tasks with it).
    posted = [r.body for r in marathon.requests_log if (r.method, r.path) == ("POST", "/v2/apps")]
    assert posted[-1]["container"]["docker"]["parameters"] == [{"key": "log-driver", "value": "none"}]
    for round_ in range(2):
        hit(one, f"/m-{round_}-a")
        hit(two, f"/m-{round_}-b")
    # No timestamps in a sandbox: instance after instance (staging order), each in its file's order.
    lines = list(scheduler.logs(env.name))
    assert marked(lines, "/m-") == [(one.id, "/m-0-a"), (one.id, "/m-1-a"), (two.id, "/m-0-b"), (two.id, "/m-1-b")]
    assert all(line.time is None for line in lines)
    assert any("web-app listening" in line.text for line in lines)  # from the first line on
    # --tail 1: each task's last line (the emulator's health checks keep writing /health lines after ours).
    last = list(scheduler.logs(env.name, tail=1))
    later = list(scheduler.logs(env.name))
    for instance in env.instances:
        (only,) = [line.text for line in last if line.instance == instance.id]
        mine = [line.text for line in later if line.instance == instance.id]
        assert only in mine and all('"GET /health ' in text for text in mine[mine.index(only) + 1:])

    # Following: new lines of every task, read by polling /files/read from where the last read ended.
    followed = scheduler.logs(env.name, tail=0, follow=True)
    seen: list[LogLine] = [next(followed)]  # reading starts at the first next(): a /health line comes soon
    hit(one, "/m-follow-a")
    hit(two, "/m-follow-b")
    deadline = time.monotonic() + 15
    while {path for _, path in marked(seen, "/m-follow-")} != {"/m-follow-a", "/m-follow-b"}:
        assert time.monotonic() < deadline, seen
        seen.append(next(followed))
    followed.close()  # type: ignore[attr-defined]
    assert {(i, p) for i, p in marked(seen, "/m-follow-")} == {(one.id, "/m-follow-a"), (two.id, "/m-follow-b")}

    # The CLI: prefixes are task ids; --since is refused (no timestamps to filter by).
    config = tmp_path / "bgci.toml"
    config.write_text((pushed_build.repo / "bgci.toml").read_text()
                      + f"\n[deploy.marathon]\nagent_port = {marathon.agent_port}\n")
    on = {"BGCI_MARATHON_URLS": marathon.url, "BGCI_REGISTRY": pushed_build.settings.registry.url}
    result = bgci("--config", str(config), "env", "logs", env.name, "--scheduler", "marathon", "--tail", "1",
                  cwd=pushed_build.repo, env=on)
    assert result.returncode == 0, result.stderr
    assert [line.split(" | ")[0].strip() for line in result.stdout.splitlines()] == [one.id, two.id]
    assert_clear_error(bgci("--config", str(config), "env", "logs", env.name, "--scheduler", "marathon",
                            "--since", "1h", cwd=pushed_build.repo, env=on), 2,
                       "--since: logs by time (since) are not available on Marathon")
    # A wrong agent port: one clear error naming the agent, not a traceback.
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(config.read_text().replace(f"agent_port = {marathon.agent_port}", "agent_port = 9"))
    assert_clear_error(bgci("--config", str(wrong), "env", "logs", env.name, "--scheduler", "marathon",
                            cwd=pushed_build.repo, env=on), 8, "Mesos agent http://127.0.0.1:9 not answering")
