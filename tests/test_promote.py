"""Promote, preview, rollback and status with real nginx and real containers (the local backend).

Two environments of the sample app: blue runs the session's full build
(`sample_build`), green a second commit (`sample_build_b`, a code delta). The
sample app answers GET / with its git sha, so every answer through nginx says
both which environment nginx chose (the header) and which build served it (the body).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from bgci.config import Settings, load_settings
from bgci.deployer import Deployer
from bgci.environments import EnvironmentService
from bgci.errors import EnvironmentNotFound
from bgci.images import resolve_image
from bgci.router import NginxRouter
from bgci.schedulers.local import LocalScheduler
from bgci.state import Actor, SwitchLock, load_state
from tests.conftest import SampleBuild
from tests.support import free_port
from tests.test_router_nginx import NGINX, ask, config_files

BUILD_URL = "https://jenkins.example/job/web-app/7/"


@dataclass
class BlueGreen:
    """Two running environments of the sample app behind a running embedded nginx."""

    settings: Settings
    config: Path
    service: EnvironmentService
    router: NginxRouter
    deployer: Deployer
    blue: str
    green: str
    shas: dict[str, str]  # env name -> the sha its instances answer

    def live(self) -> tuple[int, str | None, str]:
        return ask(self.router, self.settings.nginx.server_name)


def start_blue_green(project: Path, docker_client: docker.DockerClient, a: SampleBuild, b: SampleBuild,
                     instances: int = 2) -> BlueGreen:
    """Write a bgci.toml for the sample app with an embedded nginx on a free port, create blue and green."""
    config = project / "bgci.toml"
    config.write_text((a.repo / "bgci.toml").read_text() + (
        f'\n[nginx]\nlisten = "127.0.0.1:{free_port()}"\ndir = "nginx"\nstate_file = "state.json"\n'
        f'nginx_binary = "{NGINX}"\nverify_timeout = 5.0\n'))
    settings = load_settings(config)
    scheduler = LocalScheduler(docker_client, settings.app, bind_address=settings.deploy.bind_address)
    router = NginxRouter.from_settings(settings)
    deployer = Deployer(scheduler, router, state_file=settings.path("state.json"),
                        lock=SwitchLock(router.layout.lock_file), actor=Actor("tests@ci", BUILD_URL))
    service = EnvironmentService(scheduler, settings,
                                 resolve=lambda ref: resolve_image(docker_client, settings, ref, lambda _: None))
    blue, green = f"{a.app}-blue", f"{a.app}-green"
    router.start()
    try:
        for name, build in ((blue, a), (green, b)):
            service.create(service.spec_for(sha=build.sha, name=name, instances=instances), timeout=60)
    except BaseException:
        stop_blue_green(router, scheduler, [blue, green])
        raise
    return BlueGreen(settings, config, service, router, deployer, blue, green, {blue: a.sha, green: b.sha})


def stop_blue_green(router: NginxRouter, scheduler: LocalScheduler, names: list[str]) -> None:
    router.stop()
    for name in names:
        with contextlib.suppress(EnvironmentNotFound):
            scheduler.destroy(name)


@pytest.fixture(scope="module")
def bg(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, sample_build: SampleBuild,
       sample_build_b: SampleBuild, tested_builds: tuple[SampleBuild, SampleBuild]) -> Iterator[BlueGreen]:
    setup = start_blue_green(tmp_path_factory.mktemp("promote"), docker_client, sample_build, sample_build_b)
    yield setup
    stop_blue_green(setup.router, setup.service.scheduler, [e.name for e in setup.service.list()])


def bgci(bg: BlueGreen, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script, as Jenkins runs it."""
    return subprocess.run(["bgci", "--config", str(bg.config), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BUILD_URL": BUILD_URL})


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.docker
def test_promote_preview_rollback_status(bg: BlueGreen) -> None:
    promoted = bgci(bg, "promote", bg.blue)
    assert promoted.returncode == 0, promoted.stderr
    # The live name is served by blue's containers: nginx's header and blue's sha in the body.
    assert bg.live() == (200, bg.blue, bg.shas[bg.blue])

    # Preview: green at its own hostname, while the live name stays on blue.
    bg.deployer.register_preview(bg.service.get(bg.green))
    assert ask(bg.router, f"{bg.green}.preview.localhost") == (200, bg.green, bg.shas[bg.green])
    assert bg.live()[1] == bg.blue

    promoted = bgci(bg, "promote", bg.green, "--json")
    assert promoted.returncode == 0, promoted.stderr
    result = json.loads(promoted.stdout)
    assert (result["live"], result["previous"], result["sha"]) == (bg.green, bg.blue, bg.shas[bg.green])
    assert bg.live() == (200, bg.green, bg.shas[bg.green])
    # Round robin reaches both of green's containers, and every answer is green's build.
    answers = {bg.live() for _ in range(8)}
    assert answers == {(200, bg.green, bg.shas[bg.green])}

    status = bgci(bg, "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    # status: live and previous with who and which Jenkins build; roles and health of every instance.
    assert data["live"]["env"] == bg.green and data["live"]["build_url"] == BUILD_URL
    assert data["previous"]["env"] == bg.blue
    roles = {e["name"]: e["roles"] for e in data["environments"]}
    assert roles == {bg.blue: ["previous"], bg.green: ["live", "preview"]}
    assert all(i["healthy"] for e in data["environments"] for i in e["instances"])
    assert [len(e["instances"]) for e in data["environments"]] == [2, 2]
    text = bgci(bg, "status").stdout
    assert f"live: {bg.green}" in text and f"preview: http://{bg.green}.preview.localhost" in text

    rolled = bgci(bg, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert f"rollback: {bg.blue}" in rolled.stdout
    assert bg.live() == (200, bg.blue, bg.shas[bg.blue])
    state = load_state(bg.settings.path("state.json"))
    assert [s.action for s in state.history][-3:] == ["promote", "promote", "rollback"]


def health_requests(addresses: list[str]) -> dict[str, int]:
    """Instance address -> how many GET /health it has answered: the sample app's own request counter."""
    counts = {}
    for address in addresses:
        text = requests.get(f"http://{address}/metrics", timeout=5).text
        counts[address] = sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                              if line.startswith("webapp_requests_total{") and 'path="/health"' in line)
    return counts


@pytest.mark.docker
def test_promote_rollback_and_status_ask_each_instance_once(bg: BlueGreen) -> None:
    # The health check right before the switch is the only one: reading the environment first, and
    # the Prometheus targets and state afterwards, do not probe again (nginx's verification asks
    # verify_path, "/", through the new upstream). status probes every instance once.
    envs = {name: [i.address for i in bg.service.scheduler.get(name, health=False).instances]
            for name in (bg.blue, bg.green)}
    everyone = [address for addresses in envs.values() for address in addresses]
    for args, asks in ((("promote", bg.green), envs[bg.green]), (("promote", bg.blue), envs[bg.blue]),
                       (("rollback",), envs[bg.green]), (("status",), everyone)):
        before = health_requests(everyone)
        result = bgci(bg, *args)
        assert result.returncode == 0, result.stderr
        after = health_requests(everyone)
        asked = {address: after[address] - before[address] for address in everyone}
        assert asked == {address: int(address in asks) for address in everyone}, (args, asked)
    assert bg.live()[1] == bg.green


@pytest.mark.docker
def test_an_environment_answering_for_another_sha_is_not_promoted(bg: BlueGreen, sample_build: SampleBuild,
                                                                   sample_build_b: SampleBuild) -> None:
    assert bgci(bg, "promote", bg.blue).returncode == 0
    before = config_files(bg.router)
    # Labelled as green's commit, but running blue's image: it answers / with blue's sha.
    name = f"{sample_build.app}-impostor"
    spec = dataclasses.replace(bg.service.spec_for(sha=sample_build.sha, name=name, instances=1),
                               sha=sample_build_b.sha)
    bg.service.create(spec, timeout=60)
    try:
        # The test gate sees it first: its digest is not the one green's commit passed its tests with.
        gated = bgci(bg, "promote", name)
        assert gated.returncode == 7 and "a different image" in error_line(gated)
        # Past the gate (on purpose), nginx's verification still sees blue's sha answering.
        result = bgci(bg, "promote", name, "--skip-test-gate")
        # Exit 9 (router), one clear line naming the mismatch and saying nothing changed.
        assert result.returncode == 9
        line = error_line(result)
        assert f"instead of sha {sample_build_b.sha}" in line and "restored" in line
        assert config_files(bg.router) == before  # byte for byte
        assert bg.live() == (200, bg.blue, bg.shas[bg.blue])  # live stayed on blue
    finally:
        bg.service.destroy(name)


@pytest.mark.docker
def test_cli_errors_are_clear(bg: BlueGreen, tmp_path: Path) -> None:
    # Unknown environment: the scheduler's error, exit 8.
    result = bgci(bg, "promote", "no-such-env")
    assert result.returncode == 8 and "no environment no-such-env" in error_line(result)

    # Lock held by another promote: exit 9 naming the holder and its Jenkins build.
    holder = Actor("alice@jenkins-2", "https://jenkins.example/job/web-app/6/")
    with SwitchLock(bg.router.layout.lock_file).hold(holder, f"promote {bg.green}"):
        result = bgci(bg, "promote", bg.blue)
    assert result.returncode == 9
    assert f"promote {bg.green} by alice@jenkins-2" in error_line(result) and "/job/web-app/6/" in result.stderr

    # nginx not running (another nginx dir, never started): exit 9 and how to start it.
    stopped = tmp_path / "bgci.toml"
    stopped.write_text(bg.config.read_text().replace('dir = "nginx"', f'dir = "{tmp_path}/nginx"'))
    result = subprocess.run(["bgci", "--config", str(stopped), "promote", bg.blue], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 9 and "bgci router start" in error_line(result)


@pytest.mark.docker
def test_env_hooks_register_previews_and_prune_destroys_the_rest(bg: BlueGreen, sample_build: SampleBuild) -> None:
    # The wiring env create/destroy use: on_ready registers the preview, on_destroyed removes it.
    bg.service.on_ready.append(bg.deployer.register_preview)
    bg.service.on_destroyed.append(bg.deployer.unregister_preview)
    extra = f"{sample_build.app}-extra"
    try:
        bg.service.create(bg.service.spec_for(sha=sample_build.sha, name=extra, instances=1), timeout=60)
        # Ready, so its preview hostname serves it through nginx.
        assert ask(bg.router, f"{extra}.preview.localhost") == (200, extra, sample_build.sha)
        bg.service.destroy(extra)
        assert ask(bg.router, f"{extra}.preview.localhost")[:2] == (404, None)

        # prune --keep 0: neither live nor previous may go; the extra one does, with its preview.
        bg.deployer.promote(bg.blue)
        bg.deployer.promote(bg.green)
        bg.service.create(bg.service.spec_for(sha=sample_build.sha, name=extra, instances=1), timeout=60)
        assert bg.deployer.prune(keep=0) == [extra]
        assert sorted(e.name for e in bg.service.list()) == sorted([bg.blue, bg.green])
        assert ask(bg.router, f"{extra}.preview.localhost")[0] == 404
    finally:
        bg.service.on_ready.clear()
        bg.service.on_destroyed.clear()
        with contextlib.suppress(EnvironmentNotFound):
            bg.service.scheduler.destroy(extra)


@pytest.mark.docker
def test_cli_env_keeps_previews_in_step_and_guards_the_live_one(bg: BlueGreen, sample_build: SampleBuild) -> None:
    extra = f"{sample_build.app}-cli"
    preview = f"{extra}.preview.localhost"
    try:
        # `bgci env create` registers <env>.<preview domain> once every instance is healthy.
        created = bgci(bg, "env", "create", "--sha", sample_build.sha, "--name", extra, "--instances", "1")
        assert created.returncode == 0, created.stderr
        assert f"preview: http://{preview}" in created.stderr
        assert ask(bg.router, preview) == (200, extra, sample_build.sha)
        # `bgci env destroy` unroutes it first: nginx answers its catch-all 404 without an environment.
        assert bgci(bg, "env", "destroy", extra).returncode == 0
        assert ask(bg.router, preview)[:2] == (404, None)
        assert not bg.router.layout.preview_file(extra).exists()

        # The live environment cannot be destroyed: the live name would have no instance left.
        assert bgci(bg, "promote", bg.green).returncode == 0
        assert bgci(bg, "promote", bg.blue).returncode == 0
        refused = bgci(bg, "env", "destroy", bg.blue)
        assert refused.returncode == 9 and f"environment {bg.blue} is live" in error_line(refused)
        assert bg.live() == (200, bg.blue, bg.shas[bg.blue])

        # `bgci env prune --keep 0`: live (blue) and previous (green) stay, everything else goes.
        assert bgci(bg, "env", "create", "--sha", sample_build.sha, "--name", extra, "--instances", "1",
                    "--no-preview").returncode == 0
        assert not bg.router.layout.preview_file(extra).exists()
        pruned = bgci(bg, "env", "prune", "--keep", "0", "--json")
        assert pruned.returncode == 0, pruned.stderr
        assert json.loads(pruned.stdout) == {"destroyed": [extra]}
        assert sorted(e.name for e in bg.service.list()) == sorted([bg.blue, bg.green])
    finally:
        with contextlib.suppress(EnvironmentNotFound):
            bg.service.scheduler.destroy(extra)


@pytest.mark.docker
def test_a_promote_aborted_by_jenkins_restores_the_previous_config(bg: BlueGreen, tmp_path: Path) -> None:
    assert bgci(bg, "promote", bg.blue).returncode == 0
    before = config_files(bg.router)
    # Verification that can never succeed (a path the app answers 404), with a long timeout:
    # the promote is still verifying when Jenkins aborts the build with SIGTERM.
    slow = tmp_path / "bgci.toml"
    slow.write_text(bg.config.read_text()
                    .replace("verify_timeout = 5.0", 'verify_timeout = 60.0\nverify_path = "/nope"')
                    .replace('dir = "nginx"', f'dir = "{bg.router.layout.root}"')
                    .replace('state_file = "state.json"', f'state_file = "{bg.settings.path("state.json")}"'))
    process = subprocess.Popen(["bgci", "--config", str(slow), "promote", bg.green], stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 30
    while bg.router.live_env() != bg.green and time.monotonic() < deadline:
        time.sleep(0.02)  # wait until the new live.conf is in place: the switch is under way
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    # It stopped at once (click reports the interrupt as "Aborted.", exit 1) and undid the switch:
    # same files, live still blue, state unchanged.
    assert process.returncode == 1 and "Aborted." in stderr, stderr
    assert config_files(bg.router) == before
    assert bg.live() == (200, bg.blue, bg.shas[bg.blue])
    assert load_state(bg.settings.path("state.json")).live.env == bg.blue  # type: ignore[union-attr]
