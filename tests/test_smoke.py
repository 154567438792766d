"""Smoke checks against real HTTP servers started here: pass, wrong status, wrong body, refused, too slow.

The servers are real sockets on loopback (http.server), so every failure
reason in the reports is what requests really met. `--env` runs against a
small fake Scheduler whose instances are such real servers, and against a real
environment of the sample app on the local scheduler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest

from bgci import images, smoke
from bgci.cli import main
from bgci.config import NginxSettings, Settings, SmokeCheck, load_settings
from bgci.errors import ConfigError, TestsFailed
from bgci.schedulers.base import Environment, EnvironmentSpec, Instance
from tests.conftest import SampleBuild
from tests.support import free_port
from tests.test_junit import assert_jenkins_readable

SHA = "0123456789abcdef0123456789abcdef01234567"


ANSWER_AFTER = 12.0  # seconds the slow and stalled routes take: far beyond any check's timeout
TRICKLE_BYTES = 40  # one every 0.3 s: 12 s for the whole body

class Handler(BaseHTTPRequestHandler):
    """A few routes, each standing for one way an app can answer."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(ANSWER_AFTER)  # answers long after any check's timeout
        if self.path == "/trickle":
            self._trickle()
            return
        if self.path == "/stall":  # headers, then nothing for a long time: the body read itself times out
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            time.sleep(ANSWER_AFTER)
            return
        status, body, extra = {
            "/": (200, f"{SHA}\n", {}),
            "/health": (200, "ok\n", {}),
            "/broken": (503, "down\n", {}),
            "/wrong": (200, "nope\n", {}),
            "/slow": (200, "ok\n", {}),
            "/moved": (301, "", {"Location": "/"}),
            "/host": (200, self.headers.get("Host", ""), {}),
        }.get(self.path, (404, "not found\n", {}))
        self._send(status, body.encode(), extra)

    def _send(self, status: int, body: bytes, extra: dict[str, str]) -> None:
        self.send_response(status)
        host = self.headers.get("Host", "")
        if host.endswith(".preview.localhost"):  # like bgci's nginx router: name the environment it reached
            self.send_header("X-Bgci-Environment", host.split(".", 1)[0])
        for key, value in {"Content-Type": "text/plain", "Content-Length": str(len(body)), **extra}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self) -> None:
        """Headers at once, then one byte every 0.3 s: no single read times out, the whole answer does."""
        self.send_response(200)
        self.send_header("Content-Length", str(TRICKLE_BYTES))
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(TRICKLE_BYTES):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.3)

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeout tests) is expected

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def serving() -> Iterator[Server]:
    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving() as running:
        yield running


def check(name: str, path: str, **kwargs: object) -> SmokeCheck:
    return SmokeCheck(name=name, path=path, **kwargs)  # type: ignore[arg-type]


def run(checks: list[SmokeCheck], targets: list[smoke.Target], tmp_path: Path) -> smoke.SmokeReport:
    report = smoke.run_smoke(checks, targets, results_dir=tmp_path, name="t", properties={}, log=lambda _: None)
    assert_jenkins_readable(report.junit_file)  # every file written is one Jenkins reads
    return report


# -- against a real server ---------------------------------------------------------------------------
def test_passing_checks_write_one_case_per_check(server: Server, tmp_path: Path) -> None:
    checks = [check("health", "/health", body_contains="ok"),
              check("revision", "/", body_regex="^[0-9a-f]{40}$"),
              check("moved", "/moved", status=301)]
    report = run(checks, [smoke.target_for_url(server.url)], tmp_path)
    # The server answered every check as declared (301 too: redirects are not followed).
    assert report.passed, report.describe()
    assert [(r.check, r.status) for r in report.results] == [("health", 200), ("revision", 200), ("moved", 301)]
    report.raise_for_status()  # no failure, no exception
    cases = assert_jenkins_readable(report.junit_file).findall("testsuite/testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("smoke.url", "health"), ("smoke.url", "revision"), ("smoke.url", "moved")]
    assert report.junit_file == tmp_path / "smoke-t.xml"


def test_wrong_status_and_wrong_body_fail_with_the_reason(server: Server, tmp_path: Path) -> None:
    checks = [check("status", "/broken"),
              check("contains", "/wrong", body_contains="ok"),
              check("regex", "/wrong", body_regex="^[0-9a-f]{40}$")]
    report = run(checks, [smoke.target_for_url(server.url)], tmp_path)
    reasons = {r.check: r.reason for r in report.results}
    # The real 503 and the real body are quoted, so the Jenkins page says what came back.
    assert reasons["status"] == "status 503, expected 200"
    assert reasons["contains"] == "body does not contain 'ok': 'nope\\n'"
    assert reasons["regex"] == "body does not match /^[0-9a-f]{40}$/: 'nope\\n'"
    root = assert_jenkins_readable(report.junit_file)
    assert root.get("failures") == "3"
    assert root.find("testsuite/testcase[@name='status']/failure").get("message") == "status 503, expected 200"
    with pytest.raises(TestsFailed, match="3 of 3 smoke checks failed") as failed:
        report.raise_for_status()
    assert failed.value.exit_code == 7 and failed.value.report_file == str(report.junit_file)


def test_refused_connection_is_a_failure_with_the_reason(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    report = run([check("health", "/health")], [smoke.target_for_url(nobody)], tmp_path)
    (result,) = report.results
    # What the kernel said, without requests' object addresses (which would change every run).
    assert result.status is None
    assert result.reason == "request failed: [Errno 111] Connection refused"
    failure = assert_jenkins_readable(report.junit_file).find("testsuite/testcase/failure")
    assert failure.get("message") == result.reason


def test_slow_answer_fails_at_the_timeout_not_after_it(server: Server, tmp_path: Path) -> None:
    report = run([check("slow", "/slow", timeout=0.5)], [smoke.target_for_url(server.url)], tmp_path)
    (result,) = report.results
    # The server answers after 12 s; the check gave up at its 0.5 s timeout and says so (long before the
    # answer: the bound is a guard, the timing itself is benchmarked, not tested).
    assert result.reason == "no answer within the 0.5 s timeout"
    assert 0.5 <= result.seconds < ANSWER_AFTER / 2


def test_trickling_answer_fails_when_the_whole_answer_is_late(server: Server, tmp_path: Path) -> None:
    report = run([check("trickle", "/trickle", timeout=1)], [smoke.target_for_url(server.url)], tmp_path)
    (result,) = report.results
    # Each byte comes within the timeout, but the whole body would take 12 s: the check stops long before.
    assert result.status == 200
    assert "past the 1 s timeout" in result.reason
    assert result.seconds < ANSWER_AFTER / 2


def test_stalled_body_fails_at_the_timeout(server: Server, tmp_path: Path) -> None:
    report = run([check("stall", "/stall", timeout=0.5)], [smoke.target_for_url(server.url)], tmp_path)
    (result,) = report.results
    # The status line came at once, the body never: a timeout, reported as such, after about 0.5 s.
    assert result.reason == "no answer within the 0.5 s timeout"
    assert result.seconds < ANSWER_AFTER / 2


def test_preview_target_sends_its_host_header_over_the_check_s(server: Server, tmp_path: Path) -> None:
    checks = [check("host", "/host", body_regex="^green[.]preview[.]localhost$", headers={"Host": "other"})]
    env_header = {"X-Bgci-Environment": "green"}
    preview = smoke.Target("green.preview", server.url, "green.preview.localhost", expect_headers=env_header)
    plain = smoke.Target("green.instance-1", server.url)
    report = run(checks, [preview, plain], tmp_path)
    results = {r.target: r for r in report.results}
    # The server echoes the Host it received: the router picks the environment by it.
    assert results["green.preview"].passed, results["green.preview"].reason
    # Without a target Host, the check's own Host header is what is sent.
    assert results["green.instance-1"].reason == "body does not match /^green[.]preview[.]localhost$/: 'other'"


def test_preview_answered_by_another_environment_fails(server: Server, tmp_path: Path) -> None:
    # The route for "blue" answers as "green" (say, a stale preview file): the environment header tells.
    wrong = smoke.Target("blue.preview", server.url, "green.preview.localhost",
                         expect_headers={"X-Bgci-Environment": "blue"})
    (result,) = run([check("health", "/health")], [wrong], tmp_path).results
    assert result.status == 200
    assert result.reason == "response header X-Bgci-Environment: 'green', expected 'blue'"


# -- targets, checks and settings (pure) -------------------------------------------------------------
def environment(instances: list[tuple[str, int]], name: str = "green") -> Environment:
    return Environment(name=name, app="web", sha=SHA, image="sha256:1", digest="sha256:1", wanted_instances=2,
                       created_at="", created_by="", scheduler="fake",
                       instances=tuple(Instance(id=f"c{i}", host=h, port=p, state="running", healthy=True)
                                       for i, (h, p) in enumerate(instances)))


def test_environment_targets_are_one_per_instance_plus_preview() -> None:
    env = environment([("127.0.0.1", 9002), ("127.0.0.1", 9001)])
    nginx = NginxSettings(listen="0.0.0.0:8080", preview_domain="preview.example")
    targets = smoke.targets_for_environment(env, nginx, preview=True)
    # Sorted by address so the names (and so the JUnit classnames) are the same every run.
    assert targets == [
        smoke.Target("green.instance-1", "http://127.0.0.1:9001"),
        smoke.Target("green.instance-2", "http://127.0.0.1:9002"),
        smoke.Target("green.preview", "http://127.0.0.1:8080", host_header="green.preview.example",
                     expect_headers={"X-Bgci-Environment": "green"}),
    ]
    assert smoke.targets_for_environment(env, nginx, preview=False) == targets[:2]
    # A bare port in nginx.listen means this host; an IPv6 instance gets brackets in its URL.
    assert smoke.targets_for_environment(environment([("::1", 9)]), NginxSettings(listen="8081"), True) == [
        smoke.Target("green.instance-1", "http://[::1]:9"),
        smoke.Target("green.preview", "http://127.0.0.1:8081", host_header="green.preview.localhost",
                     expect_headers={"X-Bgci-Environment": "green"}),
    ]


def test_bad_checks_and_urls_are_refused_before_any_request() -> None:
    with pytest.raises(ConfigError, match="no smoke checks"):
        smoke.validate_checks([])
    with pytest.raises(ConfigError) as bad:
        smoke.validate_checks([check("a", "/", body_regex="("), check("b", "/")])
    assert bad.value.problems == ["smoke 'a': body_regex '(': missing ), unterminated subpattern at position 0"]
    for url in ("127.0.0.1:8000", "ftp://x", "http://x/path", "http://"):
        with pytest.raises(ConfigError, match="expected http"):
            smoke.target_for_url(url)


def test_an_environment_without_instances_is_a_failing_report(tmp_path: Path) -> None:
    report = run([check("health", "/health")], [], tmp_path)
    # Jenkins still gets a report, and it is red.
    assert not report.passed
    assert report.results[0].reason == "nothing to check: the environment has no instances"


# -- the command line --------------------------------------------------------------------------------
SMOKE_TOML = """app = "smokeapp"
[[smoke]]
name = "health"
path = "/health"
body_contains = "ok"
[[smoke]]
name = "revision"
path = "/"
body_regex = "^[0-9a-f]{40}$"
"""


def bgci(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bgci", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())


def test_cli_url_passes_and_fails_with_exit_codes(server: Server, tmp_path: Path) -> None:
    (tmp_path / "bgci.toml").write_text(SMOKE_TOML)
    passed = bgci("smoke", "--url", server.url, cwd=tmp_path)
    # Exit 0 and the report at the default place, named after the URL's host and port.
    assert passed.returncode == 0, passed.stderr
    port = server.server_address[1]
    report = tmp_path / "test-results" / f"smoke-127.0.0.1-{port}.xml"
    assert assert_jenkins_readable(report).get("tests") == "2"
    assert "passed: 2/2 checks" in passed.stdout

    (tmp_path / "bgci.toml").write_text(SMOKE_TOML.replace('"ok"', '"healthy"'))
    failed = bgci("smoke", "--url", server.url, "--junit-dir", "out", "--name", "pr-42", cwd=tmp_path)
    # One failing check: exit 7 (TestsFailed), one `Error:` line naming it, the report still written.
    assert failed.returncode == 7, failed.stderr
    assert "Error: 1 of 2 smoke checks failed: url health: body does not contain 'healthy'" in failed.stderr
    assert assert_jenkins_readable(tmp_path / "out" / "smoke-pr-42.xml").get("failures") == "1"

    usage = bgci("smoke", cwd=tmp_path)
    assert usage.returncode == 2 and "exactly one of --url and --env" in usage.stderr


def test_a_jenkins_abort_stops_the_checks_at_once_and_writes_no_report(tmp_path: Path) -> None:
    # Jenkins aborts with SIGTERM: bgci stops like at Ctrl-C, without waiting out the check's 60 s
    # timeout, and leaves no report (nor half of one) for Jenkins to mistake for a result.
    (tmp_path / "bgci.toml").write_text('app = "smokeapp"\n[[smoke]]\nname = "health"\npath = "/health"\n'
                                        'timeout = 60\n')
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the connection, never answers
        process = subprocess.Popen(["bgci", "smoke", "--url", f"http://127.0.0.1:{silent.getsockname()[1]}"],
                                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # the check is waiting for an answer
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)  # half the check's timeout
    assert process.returncode != 0 and "Aborted." in stderr and "Traceback" not in stderr, stderr
    results = tmp_path / "test-results"
    assert not results.exists() or list(results.iterdir()) == []


class FakeScheduler:
    """Stands in for get_scheduler(settings): its one environment's instances are real servers."""

    name = "fake"
    environment: Environment | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, force: bool = False) -> FakeScheduler:
        return cls()

    def get(self, name: str, *, health: bool = True) -> Environment:
        assert self.environment is not None and name == self.environment.name
        return self.environment


def test_cli_env_checks_every_instance_and_the_preview(server: Server, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    port = server.server_address[1]
    with serving() as second:
        second_port = second.server_address[1]
        monkeypatch.setattr(FakeScheduler, "environment",
                            environment([("127.0.0.1", port), ("127.0.0.1", second_port)]))
        monkeypatch.setitem(__import__("bgci.schedulers").schedulers.BACKENDS, "local",
                            f"{__name__}:FakeScheduler")
        config = tmp_path / "bgci.toml"
        # The preview target is the same real server: listen = its address, Host routed by name.
        config.write_text(SMOKE_TOML + f'[nginx]\nlisten = "127.0.0.1:{port}"\n')
        assert load_settings(config).nginx.listen.endswith(str(port))

        code = run_main("--config", str(config), "smoke", "--env", "green", "--junit-dir", str(tmp_path))
        root = assert_jenkins_readable(tmp_path / f"smoke-{SHA}.xml")  # named by the environment's sha
        # Default: no router directory, so no preview; each instance got every check.
        assert code == 0
        assert sorted({c.get("classname") for c in root.iter("testcase")}) == [
            "smoke.green.instance-1", "smoke.green.instance-2"]

        code = run_main("--config", str(config), "smoke", "--env", "green", "--preview",
                        "--junit-dir", str(tmp_path))
        root = assert_jenkins_readable(tmp_path / f"smoke-{SHA}.xml")
        assert code == 0 and root.get("tests") == "6"  # 2 checks x (2 instances + preview)
        props = {p.get("name"): p.get("value") for p in root.find("testsuite/properties")}
        assert props["bgci.env"] == "green" and props["bgci.digest"] == "sha256:1"

    # The second server is gone now: its instance's checks fail and the command exits 7. Instances are
    # numbered in address order, so the gone one is instance-1 when its port is the lower one.
    code = run_main("--config", str(config), "smoke", "--env", "green", "--no-preview", "--junit-dir", str(tmp_path))
    root = assert_jenkins_readable(tmp_path / f"smoke-{SHA}.xml")
    assert code == 7
    failed = [c.get("classname") for c in root.iter("testcase") if c.find("failure") is not None]
    gone = 1 if second_port < port else 2
    assert failed == [f"smoke.green.instance-{gone}"] * 2


def run_main(*args: str) -> int:
    """bgci's console entry point in-process (so the monkeypatched scheduler applies); its exit code."""
    try:
        main(["--quiet", *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


# -- a real environment on the local scheduler, and its preview through the real nginx router ---------
@pytest.fixture(scope="module")
def local_env(sample_build: SampleBuild, docker_client: docker.DockerClient) -> Iterator[Environment]:
    """Two instances of the sample app, started by the local scheduler and ready."""
    from bgci.schedulers.local import LocalScheduler

    settings = sample_build.settings
    image = images.resolve_image(docker_client, settings, images.reference_for_sha(settings, sample_build.sha),
                                 lambda _: None)
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    scheduler = LocalScheduler(docker_client, settings.app, bind_address=settings.deploy.bind_address)
    scheduler.create(EnvironmentSpec(
        name=name, app=settings.app, sha=image.sha, image=image.runnable, digest=image.digest, instances=2,
        container_port=settings.deploy.container_port, health_path=settings.deploy.health_path,
        created_by="tests/test_smoke.py", created_at="2024-01-01T00:00:00Z"))
    try:
        yield scheduler.wait_until_ready(name, timeout=60)
    finally:
        scheduler.destroy(name)


@pytest.mark.docker
def test_cli_env_against_real_local_instances(sample_build: SampleBuild, local_env: Environment,
                                              tmp_path: Path) -> None:
    name = local_env.name
    result = bgci("smoke", "--env", name, "--junit-dir", str(tmp_path), cwd=sample_build.repo)
    # The sample app on both instances passes the sample's own [[smoke]] checks (health, revision).
    assert result.returncode == 0, result.stdout + result.stderr
    root = assert_jenkins_readable(tmp_path / f"smoke-{sample_build.sha}.xml")
    cases = sorted((c.get("classname"), c.get("name")) for c in root.iter("testcase"))
    # No preview routed by a running nginx: by default, no preview target.
    assert cases == [(f"smoke.{name}.instance-{i}", check) for i in (1, 2) for check in ("health", "revision")]
    assert root.get("failures") == "0"
    # An environment the scheduler does not know is the scheduler's error (8), one clear line.
    missing = bgci("smoke", "--env", f"{name}-gone", "--json", cwd=sample_build.repo)
    assert missing.returncode == 8 and "Traceback" not in missing.stderr
    assert f"Error: no environment {name}-gone" in missing.stderr


@pytest.mark.docker
def test_env_preview_through_the_real_router(sample_build: SampleBuild, local_env: Environment,
                                            tmp_path: Path) -> None:
    from bgci.router import NginxRouter, upstream_for

    base = dataclasses.replace(sample_build.settings, project_dir=tmp_path)
    settings = dataclasses.replace(base, nginx=dataclasses.replace(
        base.nginx, listen=f"127.0.0.1:{free_port()}", dir="nginx", nginx_binary="/usr/sbin/nginx",
        state_file="state.json"))
    router = NginxRouter.from_settings(settings)
    router.add_preview(upstream_for(local_env))
    # Registered while nginx is stopped: nothing serves the preview hostname, so no preview check by default.
    assert not smoke.preview_by_default(settings, local_env.name)
    router.start()
    try:
        # Registered and served: the preview target is on by default (and only for that environment).
        assert smoke.preview_by_default(settings, local_env.name)
        assert not smoke.preview_by_default(settings, f"{local_env.name}-other")
        targets = smoke.targets_for_environment(local_env, settings.nginx,
                                                smoke.preview_by_default(settings, local_env.name))
        report = smoke.run_smoke(settings.smoke, targets, results_dir=tmp_path, name=local_env.sha,
                                 properties={}, log=lambda _: None)
        # nginx routed <env>.preview.localhost to this environment (its header says so) and the checks passed.
        assert report.passed, report.describe()
        preview = [r for r in report.results if r.target == f"{local_env.name}.preview"]
        assert [(r.check, r.status) for r in preview] == [("health", 200), ("revision", 200)]
        assert_jenkins_readable(report.junit_file)
    finally:
        router.stop()
