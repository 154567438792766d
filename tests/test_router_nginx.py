"""The router and the deployer against a real nginx (Debian's), run as our own process in a temp prefix.

Instances here are real HTTP servers on loopback (Python threads answering `/`
with their sha and `/health` with ok), behind a small in-test scheduler; the
real-container flow is in tests/test_promote.py. Every failure test checks the
two promises: nginx still serves the old environment, and every config file
holds the same bytes as before.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from bgci.cli import cli
from bgci.config import Settings
from bgci.deployer import Deployer
from bgci.errors import (
    EnvironmentNotFound,
    EnvironmentUnhealthy,
    LockHeld,
    NginxConfigInvalid,
    NginxNotRunning,
    RouterError,
    UnsafeUpstream,
    VerificationFailed,
)
from bgci.router import NginxRouter
from bgci.schedulers.base import Environment, Instance
from bgci.state import Actor, SwitchLock, load_state
from tests.support import free_port

SHA_BLUE = "b1" * 20
SHA_GREEN = "9e" * 20
NGINX = "/usr/sbin/nginx"
ACTOR = Actor(who="tester@ci", build_url="https://jenkins.example/job/web-app/42/")


# -- instances: real HTTP servers ---------------------------------------------------------------------
class Backend:
    """One instance: answers GET / with `sha` and GET /health with ok (or 500 when made unhealthy)."""

    def __init__(self, sha: str) -> None:
        self.sha, self.healthy, self.root_status = sha, True, 200
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path == "/health":
                    status, body = (200, "ok\n") if backend.healthy else (500, "sick\n")
                else:
                    status, body = backend.root_status, backend.sha + "\n"
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Bgci-Environment", "forged")  # nginx must replace this
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LoopbackScheduler:
    """A Scheduler whose environments are groups of Backends; `host` overrides what it reports."""

    name = "loopback"

    def __init__(self) -> None:
        self.envs: dict[str, tuple[str, list[Backend]]] = {}
        self.hosts: dict[str, str] = {}
        self.created = 0

    def add(self, name: str, sha: str, instances: int = 2, serves: str | None = None) -> list[Backend]:
        """An environment labelled `sha` whose instances answer `serves` (default: the same sha)."""
        backends = [Backend(serves or sha) for _ in range(instances)]
        self.created += 1
        self.envs[name] = (sha, backends)
        return backends

    def get(self, name: str, *, health: bool = True) -> Environment:
        if name not in self.envs:
            raise EnvironmentNotFound(f"no environment {name}")
        sha, backends = self.envs[name]
        host = self.hosts.get(name, "127.0.0.1")
        instances = tuple(Instance(id=f"{name}.{i}", host=host, port=b.port, state="running", healthy=b.healthy)
                          for i, b in enumerate(backends, 1))
        return Environment(name=name, app="web-app", sha=sha, image="img", digest="", wanted_instances=len(backends),
                           created_at=f"2026-01-01T00:00:{list(self.envs).index(name):02d}Z", created_by="t",
                           scheduler=self.name, instances=instances)

    def list(self, *, health: bool = True) -> list[Environment]:
        return [self.get(name) for name in self.envs]

    def destroy(self, name: str) -> None:
        for backend in self.envs.pop(name)[1]:
            backend.stop()

    def close(self) -> None:
        for name in list(self.envs):
            self.destroy(name)


# -- fixtures ------------------------------------------------------------------------------------------
def nginx_settings(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(app="web-app", project_dir=tmp_path)
    nginx = dataclasses.replace(base.nginx, listen=f"127.0.0.1:{free_port()}", dir="nginx", nginx_binary=NGINX,
                                state_file="state.json", verify_timeout=2.0, **overrides)
    return dataclasses.replace(base, nginx=nginx)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return nginx_settings(tmp_path)


@pytest.fixture
def router(settings: Settings) -> Iterator[NginxRouter]:
    router = NginxRouter.from_settings(settings)
    router.start()
    yield router
    router.stop()


@pytest.fixture
def scheduler() -> Iterator[LoopbackScheduler]:
    scheduler = LoopbackScheduler()
    yield scheduler
    scheduler.close()


def make_deployer(settings: Settings, scheduler: LoopbackScheduler, router: NginxRouter) -> Deployer:
    return Deployer(scheduler, router, state_file=settings.path(settings.nginx.state_file),
                    lock=SwitchLock(router.layout.lock_file), actor=ACTOR)


@pytest.fixture
def deployer(settings: Settings, scheduler: LoopbackScheduler, router: NginxRouter) -> Deployer:
    return make_deployer(settings, scheduler, router)


def ask(router: NginxRouter, host: str, path: str = "/") -> tuple[int, str | None, str]:
    """(status, env header, body) of one request through nginx on a new connection."""
    address, port = router.base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(address, int(port), timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.getheader("X-Bgci-Environment"), response.read().decode().strip()
    finally:
        connection.close()


def config_files(router: NginxRouter) -> dict[str, bytes]:
    """Every file bgci wrote into the nginx dir, by relative path (logs and run files aside)."""
    root = router.layout.root
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.conf"))}


def live(router: NginxRouter) -> tuple[int, str | None, str]:
    return ask(router, router.site.server_name)


# -- the embedded nginx process ------------------------------------------------------------------------
def test_router_start_status_stop(settings: Settings) -> None:
    router = NginxRouter.from_settings(settings)
    assert not router.status().running  # nothing started yet: no pid file
    status = router.start()
    try:
        # Started as our own process, its pid file inside the prefix (no root-owned default paths).
        assert status.running and status.pid == int(router.layout.pid_file.read_text())
        assert router.layout.pid_file.is_relative_to(settings.path("nginx"))
        # Starting twice is harmless: the same master keeps running.
        assert router.start().pid == status.pid
        # Before any promote the live name answers 503, and an unknown host 404 (never an app).
        assert live(router)[0] == 503
        assert ask(router, "elsewhere.example")[0] == 404
        assert ask(router, "nope.preview.localhost")[0] == 404
    finally:
        stopped = router.stop()
    assert not stopped.running
    with pytest.raises(ConnectionRefusedError):
        live(router)  # the port is closed: nginx really exited


def test_router_cli_start_status_stop(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "bgci.toml").write_text(
        f'app = "web-app"\n[nginx]\nlisten = "127.0.0.1:{port}"\ndir = "nginx"\nnginx_binary = "{NGINX}"\n')
    runner = CliRunner()
    config = ["--config", str(tmp_path / "bgci.toml")]
    started = runner.invoke(cli, [*config, "router", "start"])
    try:
        assert started.exit_code == 0, started.output
        status = runner.invoke(cli, [*config, "router", "status", "--json"])
        # --json tells a machine whether it runs and with which pid.
        data = json.loads(status.output)
        assert data["running"] is True and data["pid"] == int((tmp_path / "nginx/run/nginx.pid").read_text())
    finally:
        stopped = runner.invoke(cli, [*config, "router", "stop"])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    assert "not running" in runner.invoke(cli, [*config, "router", "status"]).output


# -- promote, rollback, previews, status --------------------------------------------------------------
def test_promote_rollback_and_state(deployer: Deployer, scheduler: LoopbackScheduler, router: NginxRouter,
                                    settings: Settings) -> None:
    scheduler.add("blue", SHA_BLUE)
    scheduler.add("green", SHA_GREEN)

    result = deployer.promote("blue")
    # The live name is served by blue: nginx's header names it, the body is blue's sha.
    assert live(router) == (200, "blue", SHA_BLUE)
    assert result.live == "blue" and result.previous is None and len(result.servers) == 2

    deployer.promote("green")
    assert live(router) == (200, "green", SHA_GREEN)
    state = load_state(settings.path("state.json"))
    # History says who did it, from which Jenkins build, and what to roll back to.
    assert (state.live.env, state.previous.env) == ("green", "blue")  # type: ignore[union-attr]
    assert state.live.by == "tester@ci" and state.live.build_url.endswith("/42/")  # type: ignore[union-attr]

    result = deployer.rollback()
    assert live(router) == (200, "blue", SHA_BLUE)
    assert (result.live, result.previous) == ("blue", "green")
    # A second rollback goes forward again: rollback swaps live and previous.
    deployer.rollback()
    assert live(router) == (200, "green", SHA_GREEN)
    # Both instances serve: round robin over the upstream reaches each one.
    assert router.live_env() == "green"
    assert [s.action for s in load_state(settings.path("state.json")).history] == [
        "promote", "promote", "rollback", "rollback"]


def test_every_proxied_request_is_logged_as_json_naming_its_environment(
        deployer: Deployer, scheduler: LoopbackScheduler, router: NginxRouter) -> None:
    # nginx writes one JSON line per request of bgci's servers (log_format escape=json, flushed
    # within 1 s): the environment, sha and role that answered, the status and the timings.
    scheduler.add("blue", SHA_BLUE)
    scheduler.add("green", SHA_GREEN)
    deployer.promote("blue")
    deployer.register_preview(scheduler.get("green"))
    # (promote's and the preview's own verification requests are logged too: these two are marked)
    assert ask(router, router.site.server_name, "/?mark=1")[0] == 200
    assert ask(router, "green.preview.localhost", "/?mark=1")[0] == 200
    assert ask(router, "nope.preview.localhost", "/?mark=1")[0] == 404  # no environment: not logged
    deadline = time.monotonic() + 10
    lines: list[dict] = []
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        log = router.layout.requests_log
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        lines = [line for line in lines if line["uri"] == "/?mark=1"]
    by_role = {line["role"]: line for line in lines}
    assert set(by_role) == {"live", "preview"} and len(lines) == 2
    assert (by_role["live"]["env"], by_role["live"]["sha"], by_role["live"]["status"]) == ("blue", SHA_BLUE, 200)
    assert (by_role["preview"]["env"], by_role["preview"]["host"]) == ("green", "green.preview.localhost")
    assert by_role["live"]["app"] == router.site.app and by_role["live"]["upstream_addr"].startswith("127.0.0.1:")
    assert isinstance(by_role["live"]["request_time"], float) and by_role["live"]["msec"] > 1e9


def test_the_longest_environment_name_gets_its_preview(deployer: Deployer, scheduler: LoopbackScheduler,
                                                         router: NginxRouter) -> None:
    # An environment name may be a whole DNS label (63 characters): nginx must accept its preview
    # server name, which a default server_names_hash_bucket_size of 64 cannot hold.
    name = "e" * 63
    scheduler.add(name, SHA_GREEN)
    deployer.register_preview(scheduler.get(name))
    assert ask(router, f"{name}.preview.localhost") == (200, name, SHA_GREEN)


def test_promote_uses_every_instance(deployer: Deployer, scheduler: LoopbackScheduler, router: NginxRouter) -> None:
    backends = scheduler.add("blue", SHA_BLUE, instances=3)
    deployer.promote("blue")
    # The upstream holds exactly the scheduler's instances, so nginx can balance over all of them.
    text = router.layout.live_file.read_text()
    assert all(f"server 127.0.0.1:{b.port} " in text for b in backends)
    # One instance going away does not fail requests: nginx moves on to the next instance.
    backends[0].stop()
    assert {live(router)[0] for _ in range(12)} == {200}


def test_preview_hostnames(deployer: Deployer, scheduler: LoopbackScheduler, router: NginxRouter) -> None:
    scheduler.add("blue", SHA_BLUE)
    scheduler.add("green", SHA_GREEN)
    deployer.promote("blue")
    deployer.register_preview(scheduler.get("green"))
    # The preview hostname reaches green while the live name stays on blue.
    assert ask(router, "green.preview.localhost") == (200, "green", SHA_GREEN)
    assert live(router) == (200, "blue", SHA_BLUE)
    assert router.previews() == ["green"]

    status = deployer.status()
    roles = {e.name: e.roles for e in status.environments}
    # status shows live/previous/preview roles and each instance's health, probed now.
    assert roles == {"blue": ("live",), "green": ("preview",)}
    assert all(i.healthy for e in status.environments for i in e.instances)
    assert status.to_dict()["environments"][1]["preview_host"] == "green.preview.localhost"

    deployer.unregister_preview("green")
    # Removed: the name falls to the preview domain's catch-all 404, not to green or live.
    assert ask(router, "green.preview.localhost")[:2] == (404, None)
    assert not router.layout.preview_file("green").exists()
    assert deployer.unregister_preview("green") is None  # removing twice is a no-op


def test_preview_written_while_nginx_is_stopped_is_served_after_start(
        settings: Settings, scheduler: LoopbackScheduler) -> None:
    router = NginxRouter.from_settings(settings)
    deployer = make_deployer(settings, scheduler, router)
    scheduler.add("green", SHA_GREEN)
    # env create must not fail because the router is down: the file is tested and written, not reloaded.
    applied = deployer.register_preview(scheduler.get("green"))
    assert not applied.reloaded and router.layout.preview_file("green").exists()
    router.start()
    try:
        assert ask(router, "green.preview.localhost") == (200, "green", SHA_GREEN)
    finally:
        router.stop()


def test_status_cli_json(deployer: Deployer, scheduler: LoopbackScheduler) -> None:
    # The CLI is covered with real containers in test_promote.py; here the JSON shape of Status.
    scheduler.add("blue", SHA_BLUE)
    deployer.promote("blue")
    scheduler.envs["blue"][1][0].healthy = False
    data = deployer.status().to_dict()
    env = data["environments"][0]
    # An instance failing its health check now shows as unhealthy, and so does its environment.
    assert [i["healthy"] for i in env["instances"]] == [False, True] and env["healthy"] is False
    assert data["live"]["env"] == "blue" and data["nginx"]["running"] is True
    json.dumps(data)  # plain data: what `bgci status --json` prints


def test_prune_keeps_live_previous_and_newest(deployer: Deployer, scheduler: LoopbackScheduler,
                                              router: NginxRouter) -> None:
    for name in ("e1", "e2", "e3", "e4", "e5"):
        scheduler.add(name, SHA_BLUE)
    deployer.promote("e1")
    deployer.promote("e2")
    deployer.register_preview(scheduler.get("e3"))
    # live e2, previous e1, newest e5: e3 and e4 go, and e3's preview hostname with it.
    assert deployer.prune(keep=1) == ["e3", "e4"]
    assert sorted(scheduler.envs) == ["e1", "e2", "e5"]
    assert router.previews() == []
    assert ask(router, "e3.preview.localhost")[0] == 404


def test_live_environment_cannot_be_destroyed(deployer: Deployer, scheduler: LoopbackScheduler) -> None:
    scheduler.add("blue", SHA_BLUE)
    deployer.promote("blue")
    # Destroying it would leave the live name with no instance at all.
    with pytest.raises(RouterError, match="is live"):
        deployer.destroy("blue")
    assert "blue" in scheduler.envs


# -- failure paths: live stays, files identical ---------------------------------------------------------
@pytest.fixture
def blue_live(deployer: Deployer, scheduler: LoopbackScheduler, router: NginxRouter) -> dict[str, bytes]:
    """blue live, green ready; returns the config files as they are."""
    scheduler.add("blue", SHA_BLUE)
    scheduler.add("green", SHA_GREEN)
    deployer.promote("blue")
    return config_files(router)


def assert_unchanged(router: NginxRouter, before: dict[str, bytes], settings: Settings) -> None:
    assert config_files(router) == before  # byte for byte, no file added or removed
    assert live(router) == (200, "blue", SHA_BLUE)  # nginx still serves the old environment
    assert load_state(settings.path("state.json")).live.env == "blue"  # type: ignore[union-attr]
    assert not list(router.layout.root.glob(".stage-*"))  # no staging left behind


def test_nginx_t_failure_leaves_everything_as_it_was(deployer: Deployer, router: NginxRouter, settings: Settings,
                                                     blue_live: dict[str, bytes]) -> None:
    broken = router.layout.user_dir / "broken.conf"
    broken.write_text("this_is_not_a_directive on;\n")
    before = config_files(router)
    with pytest.raises(NginxConfigInvalid, match="unknown directive"):
        deployer.promote("green")
    assert_unchanged(router, before, settings)


def test_verification_failure_restores_and_reloads(deployer: Deployer, scheduler: LoopbackScheduler,
                                                   router: NginxRouter, settings: Settings,
                                                   blue_live: dict[str, bytes]) -> None:
    # An environment labelled with one sha whose instances answer for another.
    scheduler.add("impostor", SHA_GREEN, serves="0" * 40)
    with pytest.raises(VerificationFailed, match="instead of sha") as raised:
        deployer.promote("impostor")
    assert "restored" in str(raised.value)
    assert_unchanged(router, blue_live, settings)


def test_verification_timeout_restores(deployer: Deployer, scheduler: LoopbackScheduler, router: NginxRouter,
                                       settings: Settings, blue_live: dict[str, bytes]) -> None:
    # Healthy on /health, but / answers 500 through nginx: verification retries until verify_timeout.
    for backend in scheduler.envs["green"][1]:
        backend.root_status = 500
    with pytest.raises(VerificationFailed, match=r"not served by green within 2 s \(last answer: 500 from green\)"):
        deployer.promote("green")
    assert_unchanged(router, blue_live, settings)


def test_reload_failure_in_system_mode_restores(tmp_path: Path, scheduler: LoopbackScheduler, router: NginxRouter,
                                                settings: Settings, blue_live: dict[str, bytes]) -> None:
    # A system nginx driven by commands: here our nginx, with a reload command that fails.
    layout = router.layout
    base = [NGINX, "-p", f"{layout.root}/", "-e", str(layout.error_log), "-c", str(layout.main_file)]
    system = dataclasses.replace(settings, nginx=dataclasses.replace(
        settings.nginx, mode="system", test_command=[*base, "-t", "-q"], reload_command=["sh", "-c", "exit 3"]))
    deployer = make_deployer(system, scheduler, NginxRouter.from_settings(system))
    with pytest.raises(RouterError, match="exit 3 failed"):
        deployer.promote("green")
    assert_unchanged(router, blue_live, settings)

    # The same system nginx with a working reload command switches for real.
    working = dataclasses.replace(system, nginx=dataclasses.replace(system.nginx,
                                                                    reload_command=[*base, "-s", "reload"]))
    system_router = NginxRouter.from_settings(working)
    make_deployer(working, scheduler, system_router).promote("green")
    assert live(router) == (200, "green", SHA_GREEN)
    # Its status: running means something accepts connections on nginx.listen.
    assert system_router.status().running
    router.stop()
    assert not system_router.status().running


def test_reload_refused_by_the_master_restores(deployer: Deployer, router: NginxRouter, settings: Settings,
                                               blue_live: dict[str, bytes]) -> None:
    # A config nginx -t accepts but the running master cannot load: a listen on a port someone else holds
    # (nginx -t does not bind). On SIGHUP the master logs [emerg] and keeps its old configuration.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        (router.layout.user_dir / "extra.conf").write_text(f"server {{ listen 127.0.0.1:{busy}; }}\n")
        before = config_files(router)
        router.verifier.timeout = 120.0  # waiting it out would take 2 minutes
        started = time.monotonic()
        with pytest.raises(RouterError, match=r"did not load the new configuration: .*bind"):
            deployer.promote("green")
        # Found from the error log, not by waiting out verify_timeout (the bound is a generous guard).
        assert time.monotonic() - started < 60
        assert_unchanged(router, before, settings)


def test_system_mode_test_failure_restores_the_renamed_file(scheduler: LoopbackScheduler, router: NginxRouter,
                                                            settings: Settings, blue_live: dict[str, bytes]) -> None:
    # A system nginx is tested on its real paths, after the rename: a failure must put the old file back.
    layout = router.layout
    base = [NGINX, "-p", f"{layout.root}/", "-e", str(layout.error_log), "-c", str(layout.main_file)]
    system = dataclasses.replace(settings, nginx=dataclasses.replace(
        settings.nginx, mode="system", test_command=[*base, "-t", "-q"], reload_command=[*base, "-s", "reload"]))
    (layout.user_dir / "broken.conf").write_text("server { listen nonsense; }\n")
    before = config_files(router)
    with pytest.raises(NginxConfigInvalid):
        make_deployer(system, scheduler, NginxRouter.from_settings(system)).promote("green")
    assert_unchanged(router, before, settings)


def test_state_write_failure_undoes_the_switch(deployer: Deployer, router: NginxRouter, settings: Settings,
                                               blue_live: dict[str, bytes]) -> None:
    # The state file can only change after nginx proved the switch; if it cannot be written, nginx goes back.
    deployer.state_file = settings.path("state.json") / "not-a-dir"  # a path below a file: write fails
    with pytest.raises(OSError):
        deployer.promote("green")
    deployer.state_file = settings.path("state.json")
    assert_unchanged(router, blue_live, settings)


@pytest.mark.parametrize("host", ["127.0.0.1; include /etc/passwd", "127.0.0.1}", "127.0.0.1\nserver x:1",
                                  "127.0.0.1 backup", "include"])
def test_unsafe_hosts_from_the_scheduler_are_refused(host: str, deployer: Deployer, scheduler: LoopbackScheduler,
                                                     router: NginxRouter, settings: Settings,
                                                     blue_live: dict[str, bytes]) -> None:
    scheduler.hosts["green"] = host
    with pytest.raises(UnsafeUpstream):
        deployer.promote("green")
    assert_unchanged(router, blue_live, settings)


def test_unknown_and_unhealthy_environments_are_refused(deployer: Deployer, scheduler: LoopbackScheduler,
                                                        router: NginxRouter, settings: Settings,
                                                        blue_live: dict[str, bytes]) -> None:
    with pytest.raises(EnvironmentNotFound):
        deployer.promote("nope")
    # One sick instance out of two is enough to refuse: promote needs every instance healthy now.
    scheduler.envs["green"][1][1].healthy = False
    with pytest.raises(EnvironmentUnhealthy, match="1 of 2 instances fail /health"):
        deployer.promote("green")
    # An instance that stopped answering at all is refused the same way.
    scheduler.envs["green"][1][1].healthy = True
    scheduler.envs["green"][1][0].stop()
    with pytest.raises(EnvironmentUnhealthy, match="ConnectionRefusedError"):
        deployer.promote("green")
    assert_unchanged(router, blue_live, settings)


def test_rollback_refuses_when_previous_is_gone_or_unhealthy(deployer: Deployer, scheduler: LoopbackScheduler,
                                                             router: NginxRouter, settings: Settings) -> None:
    scheduler.add("blue", SHA_BLUE)
    deployer.promote("blue")
    with pytest.raises(RouterError, match="nothing to roll back to"):
        deployer.rollback()
    scheduler.add("green", SHA_GREEN)
    deployer.promote("green")
    scheduler.envs["blue"][1][0].healthy = False
    with pytest.raises(EnvironmentUnhealthy):
        deployer.rollback()
    scheduler.destroy("blue")
    with pytest.raises(RouterError, match="blue no longer runs"):
        deployer.rollback()
    # Live stays on green through both refusals.
    assert live(router) == (200, "green", SHA_GREEN)


def test_nginx_not_running_is_a_clear_error(settings: Settings, scheduler: LoopbackScheduler) -> None:
    router = NginxRouter.from_settings(settings)
    scheduler.add("blue", SHA_BLUE)
    with pytest.raises(NginxNotRunning, match="bgci router start"):
        make_deployer(settings, scheduler, router).promote("blue")
    # Nothing was written: the live file is still the 503 placeholder.
    assert router.live_env() is None


def test_lock_held_names_the_holder_and_wait_lock_waits(deployer: Deployer, scheduler: LoopbackScheduler,
                                                        router: NginxRouter) -> None:
    scheduler.add("blue", SHA_BLUE)
    other = SwitchLock(router.layout.lock_file)
    holder = Actor(who="alice@jenkins-2", build_url="https://jenkins.example/job/web-app/41/")
    with other.hold(holder, "promote green"):
        with pytest.raises(LockHeld) as raised:
            deployer.promote("blue")
        # The message says who holds it and from which build, so the user knows whom to wait for.
        message = str(raised.value)
        assert "promote green by alice@jenkins-2" in message and "/job/web-app/41/" in message
        assert "--wait-lock" in message
    # Held by a thread for 0.4 s: --wait-lock 5 waits it out and then promotes.
    taken, done = threading.Event(), threading.Event()

    def hold_briefly() -> None:
        with other.hold(holder, "promote green"):
            taken.set()
            done.wait(0.4)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    taken.wait(5)
    assert deployer.promote("blue", wait_lock=5).live == "blue"
    thread.join()
    assert live(router)[1] == "blue"
