"""The sample app's generated Jenkins jobs on the Jenkins emulator, against the real stack.

Shared by tests/test_jenkins_e2e.py and benchmarks/jenkins_flow.py. The jobs are rendered from
jobs/ by `bgci jobs` and pushed through python-jenkins; the emulator clones the sample repo into
each job's own workspace and runs the jobs' shell steps, which call the real `bgci` against the
real Docker engine, registry and nginx. The router agent's state lives in one directory
(`[jenkins] router_dir`, exported as BGCI_ROUTER_DIR by the jobs), not in any workspace.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import docker

from bgci import probe
from bgci.config import Settings, load_settings
from bgci.errors import EnvironmentNotFound
from bgci.jenkins.client import JenkinsClient
from bgci.jenkins.jobs import render_jobs
from bgci.netaddr import listen_address
from bgci.router import NginxRouter
from bgci.schedulers.local import LocalScheduler
from tests.conftest import remove_app_containers, remove_app_images
from tests.emulators.jenkins import JenkinsEmulator
from tests.support import Registry, commit_all, free_port, git, make_sample_repo, unique_app_name

USER, TOKEN = "ci-bot", "tok-3c9e1f55aa"  # the API token must never show in any output
NGINX = "/usr/sbin/nginx"


class JenkinsFlow:
    """An app repo, its jobs pushed to a Jenkins emulator, a registry and the router agent's nginx."""

    def __init__(self, workdir: Path, registry: Registry, *, prefix: str = "jflow") -> None:
        self.workdir = workdir
        self.app = unique_app_name(prefix)
        self.repo = make_sample_repo(workdir, self.app, registry=registry.address)
        self.router_dir = workdir / "router"
        config = self.repo / "bgci.toml"
        text = (config.read_text().replace('extra_packages = ["memcached"]', "extra_packages = []")
                .replace('folder = "web-app"', 'folder = ""')
                .replace('git_url = "https://git.example.org/example/web-app.git"',
                         f'git_url = "{self.repo}"\nrouter_dir = "{self.router_dir}"'))
        config.write_text(text + (
            f'\n[nginx]\nlisten = "127.0.0.1:{free_port()}"\nnginx_binary = "{NGINX}"\nverify_timeout = 10.0\n'))
        commit_all(self.repo, "jobs for the Jenkins flow")
        self.emulator = JenkinsEmulator(workdir / "jenkins", users={USER: TOKEN}, kill_grace=5.0,
                                        credentials={"bgci-registry": ("ci", "registry-secret-5d1")})
        self.client: JenkinsClient | None = None
        self.router: NginxRouter | None = None

    @property
    def settings(self) -> Settings:
        """The router agent's view of bgci.toml: its nginx and state in the one router directory."""
        return load_settings(self.repo / "bgci.toml", environ={"BGCI_ROUTER_DIR": str(self.router_dir)})

    def start(self) -> JenkinsFlow:
        self.emulator.start()
        self.client = JenkinsClient(self.emulator.url, USER, TOKEN, poll_interval=0.05)
        jobs = [job for job in render_jobs(self.settings) if not job.name.endswith("-pipeline")]  # no workflow-job
        self.client.push(jobs, app=self.app)
        self.router = NginxRouter.from_settings(self.settings)
        self.router.start()
        return self

    def stop(self, client: docker.DockerClient) -> None:
        if self.router is not None:
            self.router.stop()
        self.emulator.stop()
        scheduler = LocalScheduler(client, self.app)
        for environment in scheduler.list():
            with contextlib.suppress(EnvironmentNotFound):
                scheduler.destroy(environment.name)
        remove_app_containers(client, self.app)
        remove_app_images(client, self.app)

    # -- git -------------------------------------------------------------------------------------------
    def commit_code_change(self, message: str) -> str:
        readme = self.repo / "README.md"
        readme.write_text(readme.read_text() + f"\n{message}\n")
        return commit_all(self.repo, message)

    def head(self) -> str:
        return git(self.repo, "rev-parse", "HEAD")

    # -- jobs ------------------------------------------------------------------------------------------
    def job(self, kind: str) -> str:
        return f"{self.app}-{kind}"

    def run(self, kind: str, params: dict[str, str] | None = None, timeout: float = 600) -> dict:
        """Trigger a job, wait for its result; the build's api/json."""
        assert self.client is not None
        result = self.client.trigger(self.job(kind), params, wait=True, timeout=timeout)
        return self.build(kind, result.number)

    def build(self, kind: str, number: int) -> dict:
        assert self.client is not None
        return self.client.server.get_build_info(self.job(kind), number)

    def wait_for_build(self, kind: str, number: int, timeout: float = 600) -> dict:
        """Wait until build `number` of a job (started by a trigger upstream) exists and is over."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):  # not there yet: the trigger queues it after upstream ends
                info = self.build(kind, number)
                if not info["building"] and info["result"]:
                    return info
            assert time.monotonic() < deadline, f"{self.job(kind)} #{number} did not finish"
            time.sleep(0.1)

    def console(self, kind: str, number: int) -> str:
        assert self.client is not None
        return self.client.server.get_build_console_output(self.job(kind), number)

    def workspace(self, kind: str) -> Path:
        return self.emulator.root / "workspace" / self.job(kind)

    @staticmethod
    def environment_of(test_build: dict) -> str:
        """The environment a test build made: from its description's promote link (ENV=<name>)."""
        found = re.search(r"ENV=([a-z0-9-]+)", test_build.get("description") or "")
        assert found, f"no promote link in the description: {test_build.get('description')!r}"
        return found[1]

    # -- the live name ---------------------------------------------------------------------------------
    def live(self) -> tuple[int, str, str]:
        """(status, environment header, body) of the live name through the router's nginx."""
        settings = self.settings
        host, port = listen_address(settings.nginx.listen)
        answer = probe.get(host, port, "/", headers={"Host": settings.nginx.server_name}, timeout=(5, 5))
        return answer.status, answer.headers.get(settings.nginx.env_header, ""), answer.text.strip()
