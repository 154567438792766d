"""`bgci test` on the real engine with the sample app: pass, fail, no XML, broken XML, hang, extras.

The sample app is built once per session (conftest's `sample_build`); its test
image (production + memcached) once per module. Every run checks that no
container of the image is left behind, and every report is checked the way a
Jenkins `junit` step reads it. The library is called with the light engine client
(bgci.engine.connect()), as `bgci test` calls it; docker-py only looks from outside
(and, once, calls ensure_test_image: callers holding a docker-py client still can).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from bgci import build as builds
from bgci import images, labels, testing
from bgci.config import Settings, load_settings
from bgci.engine import connect
from bgci.errors import ConfigError, TestsFailed
from bgci.images import ImageRef
from tests.conftest import SampleBuild, remove_app_images
from tests.support import commit_all, make_sample_repo, unique_app_name
from tests.test_junit import assert_jenkins_readable

pytestmark = pytest.mark.docker


def bgci(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bgci", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=os.environ.copy())


@contextlib.contextmanager
def no_container_left(client: docker.DockerClient, image_id: str) -> Iterator[None]:
    """Fail if the block leaves a container of `image_id` (or of an image built on it) behind."""
    def ids() -> set[str]:
        return {c.id for c in client.containers.list(all=True, filters={"ancestor": image_id})}

    before = ids()
    yield
    assert ids() - before == set(), "a test container was left behind"


@pytest.fixture(scope="module")
def prod(sample_build: SampleBuild) -> ImageRef:
    reference = images.reference_for_sha(sample_build.settings, sample_build.sha)
    return images.resolve_image(connect(), sample_build.settings, reference, lambda _: None)


@pytest.fixture(scope="module")
def test_image(sample_build: SampleBuild, prod: ImageRef) -> ImageRef:
    return testing.ensure_test_image(connect(), sample_build.settings, prod, lambda _: None)


def without_extras(settings: Settings, **test: object) -> Settings:
    """The sample's settings running straight in the production image, with [test] changes."""
    return dataclasses.replace(settings, test=dataclasses.replace(settings.test, extra_packages=[], **test))


def run(client: docker.DockerClient, settings: Settings, image: ImageRef, tmp_path: Path,
        timeout: float | None = None) -> tuple[testing.TestReport, list[str]]:
    output: list[str] = []
    with no_container_left(client, image.id):
        report = testing.run_tests(connect(), settings, image, results_dir=tmp_path, timeout=timeout,
                                   output=output.append, log=lambda _: None)
    assert_jenkins_readable(report.junit_file)
    return report, output


# -- the suite in the test image ---------------------------------------------------------------------
def test_passing_suite_in_the_test_image_lists_every_test(docker_client: docker.DockerClient,
                                                          sample_build: SampleBuild, prod: ImageRef,
                                                          test_image: ImageRef, tmp_path: Path) -> None:
    report, output = run(docker_client, sample_build.settings, prod, tmp_path)
    assert report.passed and report.exit_code == 0 and report.problem == "", report.reason()
    report.raise_for_status()  # a green run raises nothing
    # The report is named by kind and sha, and names the exact image (digest) and where the suite ran.
    assert report.junit_file == tmp_path / f"unit-{sample_build.sha}.xml"
    root = assert_jenkins_readable(report.junit_file)
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert sorted(suites) == ["t_01_routes_t", "t_02_server_t", "t_03_memcached_t", "t_04_metrics_t"]
    props = {p.get("name"): p.get("value") for p in suites["t_01_routes_t"].find("properties")}
    assert props["bgci.digest"] == prod.digest and props["bgci.sha"] == sample_build.sha
    assert props["bgci.run-image"] == test_image.reference == report.run_image
    # Every top-level TAP result the suite printed (streamed to us) is a test case in the report.
    tap_results = [line for line in output if re.match(r"^(not )?ok \d+", line)]
    assert len(tap_results) == report.summary.tests == int(root.get("tests")) > 0
    # The memcached test started its own memcached and talked to it: 9 passing cases, none skipped.
    memcached = suites["t_03_memcached_t"]
    assert (memcached.get("tests"), memcached.get("failures")) == ("9", "0")
    assert memcached.find("testcase[@name='set']") is not None


def test_test_image_is_production_plus_packages_and_production_stays_clean(
        docker_client: docker.DockerClient, sample_build: SampleBuild, prod: ImageRef, test_image: ImageRef) -> None:
    # Tagged from the production digest and the package list, labelled with what it was built from.
    assert test_image.reference == testing.test_image_tag(sample_build.settings, prod, ["memcached"])
    assert re.fullmatch(rf"{sample_build.app}-test:[0-9a-f]{{12}}-[0-9a-f]{{12}}", test_image.reference)
    found = docker_client.images.get(test_image.id).labels
    assert found[labels.TEST_BASE_DIGEST] == prod.digest
    assert found[labels.TEST_PACKAGES] == "memcached"
    assert test_image.sha == sample_build.sha  # the revision label is inherited: same code
    # Reused, not rebuilt, while the tag exists.
    logs: list[str] = []
    again = testing.ensure_test_image(docker_client, sample_build.settings, prod, logs.append)
    assert again.id == test_image.id and logs == [f"reusing test image {test_image.reference}"]
    # memcached is installed in the test image only; the production image is the one the build made.
    with no_container_left(docker_client, prod.id):
        docker_client.containers.run(test_image.id, ["dpkg", "-s", "memcached"], remove=True)
        with pytest.raises(docker.errors.ContainerError):
            docker_client.containers.run(prod.id, ["dpkg", "-s", "memcached"], remove=True)
    assert docker_client.images.get(prod.reference).id == sample_build.result.image_id


# -- the ways a run can go wrong ---------------------------------------------------------------------
@pytest.mark.parametrize(("command", "exit_code", "failure_type", "problem"), [
    # exits 0 but writes nothing: bgci's own red report, exit 7
    (["true"], 0, "no-report", "the suite wrote no JUnit file at /app/junit_output.xml (exit status 0)"),
    # exits non-zero and writes nothing: the suite's status passes through, its output is in the report
    (["sh", "-c", "echo boom >&2; exit 3"], 3, "no-report",
     "the suite wrote no JUnit file at /app/junit_output.xml (exit status 3)"),
    # writes half a document
    (["sh", "-c", "printf '<testsuites><testsuite name=\"x\">' > $JUNIT_OUTPUT_FILE"], 0, "broken-report",
     "the JUnit file /app/junit_output.xml is broken: not well-formed XML: no element found: line 1, column 32"),
    # writes a well-formed report with no test in it
    (["sh", "-c", "echo '<testsuites/>' > $JUNIT_OUTPUT_FILE"], 0, "no-tests",
     "the JUnit file /app/junit_output.xml lists no test cases"),
], ids=["exit-0-no-xml", "exit-3-no-xml", "broken-xml", "no-test-cases"])
def test_runs_without_a_usable_report_get_bgci_s_failing_report(
        docker_client: docker.DockerClient, sample_build: SampleBuild, prod: ImageRef, tmp_path: Path,
        command: list[str], exit_code: int, failure_type: str, problem: str) -> None:
    report, output = run(docker_client, without_extras(sample_build.settings, command=command), prod, tmp_path)
    assert (report.exit_code, report.problem, report.passed) == (exit_code, problem, False)
    # Jenkins still gets a report: one failing case that says what went wrong, with the output's last lines.
    root = assert_jenkins_readable(report.junit_file)
    (case,) = root.iter("testcase")
    assert (case.get("classname"), case.get("name")) == ("bgci.unit", "test run")
    failure = case.find("failure")
    assert (failure.get("type"), failure.get("message")) == (failure_type, problem)
    assert all(line in failure.text for line in output)
    with pytest.raises(TestsFailed) as failed:
        report.raise_for_status()
    assert failed.value.exit_code == (exit_code or 7)  # the suite's own status, else bgci's 7


def test_a_report_baked_into_the_image_is_not_this_run_s(docker_client: docker.DockerClient,
                                                         sample_build: SampleBuild, prod: ImageRef,
                                                         tmp_path: Path) -> None:
    # /app/cpanfile exists in the image; a run that does not write it must not pass it off as its report.
    settings = without_extras(sample_build.settings, command=["true"], junit_path="/app/cpanfile")
    report, _ = run(docker_client, settings, prod, tmp_path)
    assert report.problem == "the suite wrote no JUnit file at /app/cpanfile (exit status 0)"


def test_a_command_that_cannot_start_is_reported(docker_client: docker.DockerClient, sample_build: SampleBuild,
                                                 prod: ImageRef, tmp_path: Path) -> None:
    report, _ = run(docker_client, without_extras(sample_build.settings, command=["/no/such/prove"]), prod, tmp_path)
    # The engine's own reason (no such file) is in the report; exit 7 since the suite never ran.
    assert report.exit_code is None
    assert report.problem.startswith("the test container did not start: ")
    assert "/no/such/prove" in report.problem
    with pytest.raises(TestsFailed) as failed:
        report.raise_for_status()
    assert failed.value.exit_code == 7


def hanging_config(sample_build: SampleBuild, directory: Path) -> Path:
    """A copy of the sample's bgci.toml whose suite prints `started` and hangs, run in the production image."""
    config = directory / "bgci.toml"
    text = (sample_build.repo / "bgci.toml").read_text()
    text = re.sub(r"(?m)^command = .*$", 'command = ["sh", "-c", "echo started; sleep 60"]', text)
    config.write_text(text.replace('extra_packages = ["memcached"]', "extra_packages = []"))
    assert load_settings(config).test.command[-1] == "echo started; sleep 60"
    return config


def test_hanging_suite_is_killed_at_the_timeout(docker_client: docker.DockerClient, sample_build: SampleBuild,
                                                prod: ImageRef, tmp_path: Path) -> None:
    config = hanging_config(sample_build, tmp_path)  # `--image` below, so no git is needed
    with no_container_left(docker_client, prod.id):
        result = bgci("--config", str(config), "test", "--image", prod.reference, "--timeout", "3",
                      "--junit-dir", str(tmp_path / "out"), "--json", cwd=tmp_path)
    # Killed after 3 s (not 60), exit 7, one `Error:` line, and a report that says it timed out.
    assert result.returncode == 7, result.stderr
    summary = json.loads(result.stdout)
    assert summary["timed_out"] is True and summary["exit_code"] is None
    assert 3 <= summary["duration"] < 30  # killed at its timeout, not at the suite's own 60 s
    assert "Error: tests of " in result.stderr and "timed out after 3 s" in result.stderr
    assert "started" in result.stderr  # the suite's output was streamed while it ran
    failure = assert_jenkins_readable(tmp_path / "out" / f"unit-{prod.sha}.xml").find(".//failure")
    assert failure.get("type") == "timeout"
    assert failure.get("message") == "timed out after 3 s: the container was killed (SIGKILL)"
    assert "started" in failure.text


def test_aborted_build_sigterm_still_removes_the_container(docker_client: docker.DockerClient,
                                                           sample_build: SampleBuild, prod: ImageRef,
                                                           tmp_path: Path) -> None:
    config = hanging_config(sample_build, tmp_path)
    stderr = tmp_path / "stderr"
    script = Path(sys.executable).with_name("bgci")  # the console script itself: the signal reaches bgci
    with no_container_left(docker_client, prod.id), stderr.open("w") as err:
        process = subprocess.Popen([str(script if script.exists() else "bgci"), "--config", str(config), "test",
                                    "--image", prod.reference], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 60
        while "started" not in stderr.read_text().splitlines() and time.monotonic() < deadline:
            time.sleep(0.05)
        # The suite runs (its output line came through). Jenkins aborts the build with SIGTERM, to the
        # step's process group and to each process of the build, and once more to those still there when
        # the step has ended: bgci stops at once, non-zero, and the later signals do not cut its cleanup.
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            process.send_signal(signal.SIGTERM)
            time.sleep(0.01)
        assert process.wait(timeout=1) != 0
    assert stderr.read_text().rstrip().endswith(("Aborted.", "Interrupted."))  # click's word, or bgci's


# -- a failing suite, end to end through the command line --------------------------------------------
@pytest.fixture(scope="module")
def failing_repo(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Path]:
    """The sample app with one deliberately failing test, built (from cache: one small layer changes)."""
    app = unique_app_name("failtest")
    repo = make_sample_repo(tmp_path_factory.mktemp("failing"), app)
    config = repo / "bgci.toml"
    config.write_text(config.read_text().replace('extra_packages = ["memcached"]', "extra_packages = []"))
    (repo / "t" / "04-fails.t").write_text(
        "use strict;\nuse warnings;\nuse Test::More;\n"
        "ok 1, 'this one passes';\nis 1 + 1, 3, 'deliberately wrong sum';\ndone_testing;\n")
    commit_all(repo, "a failing test")
    settings = load_settings(config)
    builds.build_full(docker_client, settings, builds.Source.open(settings, "HEAD"), build_args={}, push=False,
                      log=lambda _: None)
    yield repo
    remove_app_images(docker_client, app)


def test_failing_suite_passes_its_exit_code_through(docker_client: docker.DockerClient, failing_repo: Path) -> None:
    settings = load_settings(failing_repo / "bgci.toml")
    sha = builds.Source.open(settings, "HEAD").sha
    image_id = docker_client.images.get(f"{settings.app}:{sha}").id
    with no_container_left(docker_client, image_id):
        result = bgci("test", "--json", cwd=failing_repo)  # default: the image of HEAD's sha
    summary = json.loads(result.stdout)
    # prove's own non-zero status is bgci's exit status (not bgci's 7): Jenkins sees the suite's verdict.
    assert summary["exit_code"] not in (0, None, 7)
    assert result.returncode == summary["exit_code"], result.stderr
    assert summary["failed"] == ["t_04_fails_t: deliberately wrong sum"]
    assert "Error: tests of" in result.stderr and "deliberately wrong sum" in result.stderr
    root = assert_jenkins_readable(failing_repo / "test-results" / f"unit-{sha}.xml")
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("t_04_fails_t", "deliberately wrong sum")]
    assert int(root.get("tests")) == summary["tests"] > 20  # the passing tests are reported too


def test_unknown_image_or_sha_is_a_clear_error(sample_build: SampleBuild) -> None:
    unknown_sha = bgci("test", "--sha", "0" * 40, cwd=sample_build.repo)
    assert unknown_sha.returncode == 4 and "Traceback" not in unknown_sha.stderr
    assert f"Error: image {sample_build.app}:{'0' * 40} not found locally" in unknown_sha.stderr
    unknown_image = bgci("test", "--image", "bgci-no-such-image:1", cwd=sample_build.repo)
    assert unknown_image.returncode == 4
    assert "Error: image bgci-no-such-image:1 not found locally" in unknown_image.stderr
    short_sha = bgci("test", "--sha", "abc123", cwd=sample_build.repo)
    assert short_sha.returncode == 2 and "expected a full 40-character git sha" in short_sha.stderr
    both = bgci("test", "--sha", "0" * 40, "--image", "x", cwd=sample_build.repo)
    assert both.returncode == 2 and "exclude each other" in both.stderr


# -- pure parts --------------------------------------------------------------------------------------
def test_test_image_tag_depends_on_the_digest_and_the_package_set() -> None:
    settings = Settings(app="web")
    image = ImageRef(reference="web:1", id="sha256:" + "a" * 64, repo_digest="", sha="")
    tag = testing.test_image_tag(settings, image, ["memcached", "mysql-server"])
    # Order and duplicates do not matter; another package or another image gives another tag.
    assert tag == testing.test_image_tag(settings, image, ["mysql-server", "memcached", "memcached"])
    assert tag.startswith("web-test:aaaaaaaaaaaa-")
    assert tag != testing.test_image_tag(settings, image, ["memcached"])
    pushed = dataclasses.replace(image, repo_digest="reg/web@sha256:" + "b" * 64)
    assert testing.test_image_tag(settings, pushed, ["memcached"]).startswith("web-test:bbbbbbbbbbbb-")


def test_test_dockerfile_installs_as_root_and_gives_the_user_back() -> None:
    text = testing.test_dockerfile("sha256:abc", ["memcached"], "app", {"io.bgci.kind": "test"})
    lines = text.splitlines()
    assert lines[:2] == ["FROM sha256:abc", "USER root"]
    assert "apt-get install -y --no-install-recommends memcached" in text
    assert lines[-2:] == ['LABEL io.bgci.kind="test"', "USER app"]
    # A name that could smuggle shell into the RUN line is refused.
    with pytest.raises(ConfigError, match="not a Debian package name"):
        testing.test_dockerfile("sha256:abc", ["memcached; rm -rf /"], "", {})


def test_non_zero_exit_with_a_green_report_gets_a_failing_case() -> None:
    xml = b'<testsuite name="t"><testcase name="a" classname="t" time="0.1"/></testsuite>'
    run_ = testing.SuiteRun(exit_code=255, timed_out=False, duration=1.0, junit=xml, output_tail=("Bail out!",))
    data, problem = testing.suite_report(run_, "/app/j.xml", 10, "unit x", {"bgci.kind": "unit"})
    # The harness's own case is kept, and one more says why the step is red.
    names = [(c.get("classname"), c.get("name")) for c in ET.fromstring(data).iter("testcase")]
    assert problem == "" and names == [("bgci.unit", "exit status"), ("t", "a")]
