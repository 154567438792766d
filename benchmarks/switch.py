"""Switch benchmark: seconds from the start of a promote to the first answer from the new environment.

Run from the repository root:  python benchmarks/switch.py [--runs 11]

It builds the sample app twice (a full build and a code delta of a second
commit, in a temp git repo), creates two environments of 2 instances on the
local Docker engine, starts bgci's embedded nginx on a free loopback port, and
then measures, alternating between the two environments each run:

- floor:    live.conf already rewritten; a bare `nginx -s reload` on the same config.
- library:  `Deployer.promote` in this process (health check, render, nginx -t, rename, reload, verify).
- cli:      `bgci promote ENV` as Jenkins runs it (a new Python process: imports, settings, Docker),
            from a venv where pip installed bgci (benchmarks/installed.py says why), and, for
            comparison, from this machine's own (editable) install.

Each is timed from its start to the first answer from the new environment, as
seen by a poller opening a new connection per request. The command's own run
time (until it exits, after verifying) is shown too. The target for `bgci
promote` is a median of at most 0.5 s, and at most 0.2 s above the floor (issue 9).
Last, `closes` counts how often a bare reload closes an idle keep-alive connection just as a request goes out on it
(8 connections, 20 reloads): the retries a keep-alive client makes per reload.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from benchmarks import importcost
from benchmarks.installed import VENV_PYTHON_HELP, Installed, developer_script, installed_bgci, start_seconds
from bgci import build as builds
from bgci import gate
from bgci.config import Settings, load_settings
from bgci.deployer import Deployer
from bgci.dockerhost import connect
from bgci.environments import EnvironmentService
from bgci.files import write_atomic
from bgci.images import resolve_image
from bgci.router import NginxRouter, upstream_for
from bgci.router.site import render_live
from bgci.schedulers.local import LocalScheduler
from bgci.state import Actor, SwitchLock
from tests.conftest import remove_app_containers, remove_app_images
from tests.support import commit_all, free_port, git, make_sample_repo, unique_app_name

TARGET = 0.5  # seconds, median, for `bgci promote` from its start to the first answer from the new environment
FLOOR_MARGIN = 0.2  # seconds: and at most this much above the bare reload's floor, measured in the same run
NGINX = "/usr/sbin/nginx"
POLL_INTERVAL = 0.002  # seconds between the poller's requests: the resolution of "first answer"


@dataclass
class Setup:
    settings: Settings
    config: Path
    router: NginxRouter
    deployer: Deployer
    envs: tuple[str, str]


class Poller:
    """Asks nginx for the live name over and over (a new connection each time), noting who answered when."""

    def __init__(self, setup: Setup) -> None:
        self.host = setup.settings.nginx.server_name
        self.header = setup.settings.nginx.env_header
        address, port = setup.router.base_url.removeprefix("http://").rsplit(":", 1)
        self.address, self.port = address, int(port)
        self.seen: list[tuple[float, float, str]] = []  # sent, answered, env
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stopping.is_set():
            connection = http.client.HTTPConnection(self.address, self.port, timeout=5)
            sent = time.perf_counter()
            try:
                connection.request("GET", "/", headers={"Host": self.host})
                response = connection.getresponse()
                response.read()
                self.seen.append((sent, time.perf_counter(), response.getheader(self.header) or ""))
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(POLL_INTERVAL)  # leave the CPUs to what is measured

    def first_from(self, env: str, since: float, timeout: float = 10) -> float:
        """Seconds from `since` to the first answer from `env` to a request sent after `since`."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for sent, answered, who in list(self.seen):
                if who == env and sent >= since:
                    return answered - since
            time.sleep(0.002)
        raise RuntimeError(f"{env} did not answer within {timeout} s")


def measure(setup: Setup, runs: int, switch: Callable[[str], None],
            prepare: Callable[[str], None] | None = None) -> tuple[list[float], list[float]]:
    """(start -> first answer from the target, start -> switch returned), one per run, alternating targets.

    `prepare(target)` runs before the clock starts.
    """
    first, total = [], []
    with Poller(setup) as poller:
        for _ in range(runs):
            target = setup.envs[1] if setup.router.live_env() == setup.envs[0] else setup.envs[0]
            if prepare:
                prepare(target)
            time.sleep(0.2)
            started = time.perf_counter()
            switch(target)
            total.append(time.perf_counter() - started)
            first.append(poller.first_from(target, started))
    return first, total


def measure_floor(setup: Setup, runs: int) -> tuple[list[float], list[float]]:
    """The floor: live.conf rewritten beforehand (untimed); timed is `nginx -s reload` and the wait."""
    layout = setup.router.layout
    scheduler = setup.deployer.scheduler
    texts = {env: render_live(setup.router.site, upstream_for(scheduler.get(env))) for env in setup.envs}
    return measure(setup, runs, lambda _env: subprocess.run(_reload_command(setup), check=True),
                   prepare=lambda env: write_atomic(layout.live_file, texts[env]))


def _reload_command(setup: Setup) -> list[str]:
    layout = setup.router.layout
    return [NGINX, "-p", f"{layout.root}/", "-e", str(layout.error_log), "-c", str(layout.main_file),
            "-s", "reload"]


def cli_promote(setup: Setup, script: Path, environ: dict[str, str]) -> Callable[[str], None]:
    """`bgci promote ENV` in a new process: the console script `script`, run with `environ`."""

    def switch(env: str) -> None:
        subprocess.run([str(script), "-q", "--config", str(setup.config), "promote", env], check=True,
                       stdout=subprocess.DEVNULL, env=environ)

    current = setup.router.live_env() or setup.envs[0]
    switch(current)  # untimed: the page cache, and the bytecode of an install that has none yet
    return switch


def developer_environ(pycache: Path) -> dict[str, str]:
    """For this machine's editable install: bytecode cached in `pycache`, as an installed package has it
    (a PYTHONDONTWRITEBYTECODE environment would otherwise recompile every bgci module on each run)."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = str(pycache)
    return environ


def keepalive_closes(setup: Setup, reloads: int = 20, connections: int = 8) -> tuple[int, int]:
    """(requests that met a connection closed by a bare reload, requests in all)."""
    command = _reload_command(setup)
    closes, total, stopping, lock = [0], [0], threading.Event(), threading.Lock()
    host = setup.settings.nginx.server_name
    address, port = setup.router.base_url.removeprefix("http://").rsplit(":", 1)

    def run() -> None:
        connection = http.client.HTTPConnection(address, int(port), timeout=5)
        while not stopping.is_set():
            try:
                connection.request("GET", "/", headers={"Host": host})
                connection.getresponse().read()
                with lock:
                    total[0] += 1
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                with lock:
                    closes[0] += 1
                connection.close()
                connection = http.client.HTTPConnection(address, int(port), timeout=5)
        connection.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for _ in range(reloads):
        time.sleep(0.25)
        subprocess.run(command, check=True)
    time.sleep(0.25)
    stopping.set()
    for thread in threads:
        thread.join(10)
    return closes[0], total[0]


def prepare(workdir: Path, client: docker.DockerClient, app: str) -> Setup:
    """Two commits built, two environments running, embedded nginx started, the first one live."""
    repo = make_sample_repo(workdir, app)
    settings = load_settings(repo / "bgci.toml")
    shas = []
    for message in ("first", "second"):
        if message == "second":
            (repo / "README.md").write_text((repo / "README.md").read_text() + "\nA second commit.\n")
            commit_all(repo, message)
        source = builds.Source.open(settings, git(repo, "rev-parse", "HEAD"))
        built = builds.build_auto(client, settings, source, build_args={}, push=False, log=_quiet)
        # As a passing `bgci test` would: the promote below goes through the test gate's check.
        gate.record_pass(client, settings, resolve_image(client, settings, built.reference, _quiet), _quiet)
        shas.append(source.sha)
    config = repo / "bgci.toml"
    config.write_text(config.read_text() + (
        f'\n[nginx]\nlisten = "127.0.0.1:{free_port()}"\ndir = "{workdir}/nginx"\n'
        f'state_file = "{workdir}/state.json"\nnginx_binary = "{NGINX}"\n'))
    settings = load_settings(config)
    scheduler = LocalScheduler(client, app, bind_address=settings.deploy.bind_address)
    service = EnvironmentService(scheduler, settings,
                                 resolve=lambda ref: resolve_image(client, settings, ref, _quiet))
    envs = (f"{app}-blue", f"{app}-green")
    for name, sha in zip(envs, shas, strict=True):
        service.create(service.spec_for(sha=sha, name=name, instances=2), timeout=120)
    router = NginxRouter.from_settings(settings)
    router.start()
    deployer = Deployer(scheduler, router, state_file=settings.path(settings.nginx.state_file),
                        lock=SwitchLock(router.layout.lock_file), actor=Actor.from_environment())
    deployer.promote(envs[1])
    return Setup(settings, config, router, deployer, envs)


def report(rows: list[tuple[str, list[float], list[float]]], closes: tuple[int, int], runs: int) -> bool:
    print(f"{'switch':<34} {'first answer: median':>21} {'min':>7} {'max':>7} {'command: median':>16}  target")
    floor = statistics.median(rows[0][1])
    met = True
    for name, first, total in rows:
        median = statistics.median(first)
        verdict = ""
        if name.startswith("bgci promote") and "venv" in name:
            met = median <= TARGET and median - floor <= FLOOR_MARGIN
            verdict = (f"<= {TARGET:g}s and floor + {median - floor:.3f}s <= +{FLOOR_MARGIN:g}s: "
                       f"{'ok' if met else 'MISSED'}")
        print(f"{name:<34} {median * 1000:>19.0f}ms {min(first) * 1000:>5.0f}ms {max(first) * 1000:>5.0f}ms "
              f"{statistics.median(total) * 1000:>14.0f}ms  {verdict}")
    print(f"({runs} runs each, 2 instances per environment, alternating environments; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"keep-alive: {closes[0]} requests met a connection closed by a bare reload "
          f"({closes[0] / 20:.1f} per reload, 8 connections, {closes[1]} requests)")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--baseline", metavar="REV", help="also measure the import cost at this git revision")
    parser.add_argument("--venv-python", metavar="PATH", default=sys.executable, help=VENV_PYTHON_HELP)
    args = parser.parse_args()
    client = connect()
    app = unique_app_name("benchswitch")
    with tempfile.TemporaryDirectory() as workdir, installed_bgci(python=args.venv_python) as installed:
        setup = None
        try:
            setup = prepare(Path(workdir), client, app)
            rows = measure_all(setup, args.runs, installed, Path(workdir) / "pycache")
            closes = keepalive_closes(setup)
        finally:
            if setup is not None:
                setup.router.stop()
            remove_app_containers(client, app)
            remove_app_images(client, app)
        met = report(rows, closes, args.runs)
        print(f"python start (`python -c pass`): venv {start_seconds(installed.python) * 1000:.0f} ms, "
              f"this interpreter {start_seconds(sys.executable) * 1000:.0f} ms")
        importcost.report("bgci promote", importcost.PROMOTE, args.baseline, installed.python)
    return 0 if met else 1


def measure_all(setup: Setup, runs: int, installed: Installed,
                pycache: Path) -> list[tuple[str, list[float], list[float]]]:
    """The rows: floor, library, the venv's console script, and this machine's when it has one."""
    rows = [("bare nginx -s reload (floor)", *measure_floor(setup, runs)),
            ("Deployer.promote (in process)", *measure(setup, runs, lambda env: setup.deployer.promote(env))),
            ("bgci promote ENV (venv, new process)",
             *measure(setup, runs, cli_promote(setup, installed.bgci, installed.environ())))]
    developer = developer_script()
    if developer is not None:
        rows.append(("bgci promote ENV (this machine's)",
                     *measure(setup, runs, cli_promote(setup, developer, developer_environ(pycache)))))
    return rows


def _quiet(_message: str) -> None:
    pass


if __name__ == "__main__":
    sys.exit(main())
