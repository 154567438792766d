"""Run the app's test suite inside its production image and hand Jenkins a JUnit report.

The image is resolved to its digest first, so the report names exactly what
was tested. The suite runs in a fresh container (the image's WORKDIR, the
configured command and environment); its output is streamed while it runs, its
JUnit file is copied out through the Docker archive API, and the container
(with its anonymous volumes) is removed whatever happens.

Decisions:

- Extras: tests that start their own servers (Test::TCP, Test::mysqld) need
  packages production must not carry. With ``[test] extra_packages`` the suite
  runs in a *test image*: ``FROM`` the production image by id plus those Debian
  packages, tagged ``<repo>-test:<digest-hex12>-<packages-hash12>`` and reused
  while that tag exists. The production image is never changed.
- Timeout: counted from the container's start; at the deadline the container
  gets SIGKILL (a hung suite is not trusted to handle SIGTERM) and the report
  says it was killed.
- Always a report: when the suite wrote no JUnit file (or only the image had
  one), wrote one that does not parse, reported no test cases, timed out or
  could not start, bgci writes a report of its own with one failing test case,
  ``bgci.<kind>: test run``, whose message says what went wrong and whose body
  holds the last lines of output.
- Exit codes (:meth:`TestReport.raise_for_status`): the suite's own non-zero
  status passes through; a problem bgci detected (above), or failures in the
  report of a suite that exited 0, is TestsFailed's 7.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgci import labels
from bgci.config import Settings, TestSettings
from bgci.dockerhost import engine_errors
from bgci.engine import EngineAPIError, as_engine
from bgci.errors import ConfigError, DockerUnavailable, ImageNotFound, TestsFailed
from bgci.images import ImageRef, find_local

if TYPE_CHECKING:
    import docker

    from bgci import junit
    from bgci.engine import Engine

Log = Callable[[str], None]

PACKAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$")  # name[:arch][=version]
OUTPUT_TAIL_LINES = 40
MAX_REPORT_BYTES = 64 * 1024 * 1024
KILL_WAIT_SECONDS = 30


@dataclass(frozen=True)
class SuiteRun:
    """What one container run produced."""

    exit_code: int | None  # None when it never started or was killed
    timed_out: bool
    duration: float
    junit: bytes | None  # None: the run wrote no file at the JUnit path
    output_tail: tuple[str, ...] = ()
    start_error: str = ""


@dataclass(frozen=True)
class TestReport:
    """The outcome of one test run: what ran, how it ended, and the JUnit file Jenkins reads."""

    __test__ = False  # not a pytest test class

    kind: str  # "unit"
    image: ImageRef  # the production image, by digest
    run_image: str  # the image the suite ran in: the test image's tag, or the production image id
    command: list[str]
    exit_code: int | None  # the suite's; None when killed at the timeout or never started
    timed_out: bool
    duration: float
    junit_file: Path
    summary: junit.Summary
    problem: str = ""  # why bgci wrote the report itself; "" when it is the suite's own

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.problem and self.summary.passed

    def raise_for_status(self) -> None:
        """Raise TestsFailed (carrying the suite's exit code when it has one) unless the run passed."""
        if self.passed:
            return
        raise TestsFailed(f"tests of {self.image.reference} ({self.image.digest}) failed: {self.reason()}",
                          suite_exit_code=self.exit_code or None, report_file=str(self.junit_file))

    def reason(self) -> str:
        if self.problem:
            return self.problem
        failed = ", ".join(self.summary.failed[:5]) + (", ..." if len(self.summary.failed) > 5 else "")
        status = f"exit status {self.exit_code}"
        return f"{status}; failed: {failed}" if failed else status

    def describe(self) -> str:
        s = self.summary
        verdict = "passed" if self.passed else "FAILED"
        return (f"{verdict}: {s.tests} tests, {s.failures} failures, {s.errors} errors, {s.skipped} skipped "
                f"in {self.duration:.1f} s; {self.image.reference} {self.image.digest}; report {self.junit_file}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "passed": self.passed, "reference": self.image.reference, "sha": self.image.sha,
            "image_id": self.image.id, "digest": self.image.digest, "run_image": self.run_image,
            "command": self.command, "exit_code": self.exit_code, "timed_out": self.timed_out,
            "duration": round(self.duration, 3), "junit_file": str(self.junit_file), "problem": self.problem,
            "tests": self.summary.tests, "failures": self.summary.failures, "errors": self.summary.errors,
            "skipped": self.summary.skipped, "failed": list(self.summary.failed),
        }


# -- the whole run -----------------------------------------------------------------------------------
@engine_errors("test run", TestsFailed, hint="the suite did not run to its end; nothing was left behind")
def run_tests(client: Engine | docker.DockerClient, settings: Settings, image: ImageRef, *, results_dir: Path,
              timeout: float | None = None, output: Log, log: Log) -> TestReport:
    """Run the suite against `image` (through its test image when extras are configured); write the report.

    `client` is a bgci.engine Engine (or a docker-py client): docker-py is needed only to build a test image.
    """
    engine = as_engine(client)
    test = settings.test
    timeout = timeout or test.timeout
    run_image = ensure_test_image(engine, settings, image, log)
    name = image.sha or f"digest-{_hex12(image.digest)}"
    log(f"testing {image.reference} ({image.digest}) in {run_image.reference}: {' '.join(test.command)}")
    run = run_suite(engine, run_image.id, test, timeout=timeout, output=output,
                    name=f"{settings.app}-test-{name[:12]}-{uuid.uuid4().hex[:6]}",
                    container_labels={labels.APP: settings.app, labels.KIND: "test-run"})
    properties = {"bgci.kind": "unit", "bgci.app": settings.app, "bgci.sha": image.sha,
                  "bgci.image": image.reference, "bgci.digest": image.digest, "bgci.run-image": run_image.reference}
    data, problem = suite_report(run, test.junit_path, timeout, f"unit {name}", properties)
    from bgci import junit  # see _import_report_modules

    path = junit.write(junit.report_path(results_dir, "unit", name), data)
    return TestReport(kind="unit", image=image, run_image=run_image.reference, command=list(test.command),
                      exit_code=run.exit_code, timed_out=run.timed_out, duration=run.duration, junit_file=path,
                      summary=junit.summarize(data), problem=problem)


# -- the test image: production + extra packages ----------------------------------------------------
def test_image_tag(settings: Settings, image: ImageRef, packages: list[str]) -> str:
    """`<repo>-test:<digest-hex12>-<hash12 of the sorted packages>`: one tag per (image content, package set)."""
    import hashlib  # here, not at the top: it starts OpenSSL, ~5% of a new `bgci test`'s imports

    packages_hash = hashlib.sha256(" ".join(sorted(set(packages))).encode()).hexdigest()[:12]
    return f"{settings.image_repository}-test:{_hex12(image.digest)}-{packages_hash}"


def test_dockerfile(base_image_id: str, packages: list[str], user: str, image_labels: dict[str, str]) -> str:
    """FROM the production image by id, install the packages as root, give the image its user back."""
    for package in packages:
        if not PACKAGE_PATTERN.match(package):
            raise ConfigError(f"[test] extra_packages: {package!r} is not a Debian package name",
                              hint="use name, name:arch or name=version")
    lines = [
        f"FROM {base_image_id}",
        "USER root",
        "RUN apt-get update \\\n"
        f" && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {' '.join(packages)} \\\n"
        " && rm -rf /var/lib/apt/lists/*",
        "LABEL " + " ".join(f"{key}={json.dumps(value)}" for key, value in sorted(image_labels.items())),
    ]
    if user and user not in ("root", "0"):
        lines.append(f"USER {user}")
    return "\n".join(lines) + "\n"


def ensure_test_image(client: Engine | docker.DockerClient, settings: Settings, image: ImageRef,
                      log: Log) -> ImageRef:
    """The image the suite runs in: `image` itself, or its test image (built once, then reused)."""
    engine = as_engine(client)
    packages = sorted(set(settings.test.extra_packages))
    if not packages:
        return image
    tag = test_image_tag(settings, image, packages)
    found = find_local(engine, tag)
    if found is not None:
        log(f"reusing test image {tag}")
        return found
    return _build_test_image(engine, image, tag, packages, log)


def _build_test_image(engine: Engine, image: ImageRef, tag: str, packages: list[str], log: Log) -> ImageRef:
    """`docker build` of test_dockerfile, through docker-py (imported here: most runs reuse the image)."""
    from bgci.build import _follow_build  # the build stream reader shared with full builds

    user = ((engine.inspect_image(image.id) or {}).get("Config") or {}).get("User") or ""
    image_labels = {labels.KIND: "test", labels.TEST_BASE: image.id, labels.TEST_BASE_DIGEST: image.digest,
                    labels.TEST_PACKAGES: " ".join(packages)}
    dockerfile = test_dockerfile(image.id, packages, user, image_labels).encode()
    import tarfile

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    log(f"building test image {tag}: {image.reference} + {' '.join(packages)}")
    stream = engine.docker_client().api.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                                              forcerm=True, decode=True)
    _follow_build(stream, log)
    built = find_local(engine, tag)
    if built is None:
        raise ImageNotFound(f"test image {tag}: built, yet the engine does not have it")
    return built


# -- one container run -------------------------------------------------------------------------------
def run_suite(engine: Engine, image_id: str, test: TestSettings, *, timeout: float, output: Log,
              name: str, container_labels: dict[str, str]) -> SuiteRun:
    """Run the command in a fresh container, stream its output, copy the JUnit file out, remove it."""
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    container_id = ""
    started = time.monotonic()
    try:
        try:
            container_id = engine.create_container(image_id, test.command, environment=test.env, name=name,
                                                   labels=container_labels)
            before = engine.archive_stat(container_id, test.junit_path)
            started = time.monotonic()
            engine.start_container(container_id)
        except EngineAPIError as exc:  # no such command, no such user, ...: the run itself could not happen
            return SuiteRun(exit_code=None, timed_out=False, duration=time.monotonic() - started, junit=None,
                            start_error=exc.explanation)
        reader = threading.Thread(target=_stream_output, args=(engine, container_id, output, tail), daemon=True)
        reader.start()
        threading.Thread(target=_import_report_modules, daemon=True).start()
        exit_code, timed_out = _wait(engine, container_id, timeout)
        reader.join(timeout=10)
        duration = time.monotonic() - started
        return SuiteRun(exit_code=exit_code, timed_out=timed_out, duration=duration,
                        junit=_copy_report(engine, container_id, test.junit_path, before), output_tail=tuple(tail))
    finally:
        # By name when create was interrupted after the engine made the container.
        _remove_run_container(engine, container_id or name, name)


def _remove_run_container(engine: Engine, container: str, name: str) -> None:
    """Remove the run's container, gone already or not. An engine that stopped answering may have
    left it: the error says so and how to remove it."""
    try:
        engine.remove_container(container)
    except EngineAPIError:
        pass
    except DockerUnavailable as exc:
        left = f"the test container {name} may be left: `docker rm -f {name}` once the engine answers"
        exc.hint = "; ".join(filter(None, [exc.hint, left]))
        raise


def _import_report_modules() -> None:
    """Import what reading and writing the report needs (tarfile, bgci.junit with xml.etree) while the
    suite runs and this process only waits: a new `bgci test` would otherwise spend ~12 ms on them
    after the container stopped (benchmarks/test_overhead.py). The functions that use them import
    them again, which waits for this thread's import if it is not done."""
    import tarfile  # noqa: F401

    from bgci import junit  # noqa: F401


def _stream_output(engine: Engine, container_id: str, output: Log, tail: deque[str]) -> None:
    """Pass the container's output on line by line, keeping the last lines for a failure report."""
    pending = b""
    try:
        for chunk in engine.logs(container_id, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _emit(line, output, tail)
    except Exception:  # the container or the engine went away: what was read is all there is
        pass  # (and an exception left to this thread would print a traceback)
    if pending:
        _emit(pending, output, tail)


def _emit(raw: bytes, output: Log, tail: deque[str]) -> None:
    line = raw.decode("utf-8", errors="replace").rstrip("\r")
    tail.append(line)
    output(line)


def _wait(engine: Engine, container_id: str, timeout: float) -> tuple[int | None, bool]:
    """(exit code, timed out): wait up to `timeout` s, then SIGKILL the whole container."""
    exit_code = engine.wait_container(container_id, timeout)
    if exit_code is not None:
        return exit_code, False
    try:
        engine.kill_container(container_id)
    except EngineAPIError:  # it exited just as the deadline passed: its own status stands
        exit_code = engine.wait_container(container_id, KILL_WAIT_SECONDS)
        return exit_code, exit_code is None
    engine.wait_container(container_id, KILL_WAIT_SECONDS)
    return None, True


def _copy_report(engine: Engine, container_id: str, path: str, before: dict[str, Any] | None) -> bytes | None:
    """The JUnit file this run wrote, via the archive API; None if the run did not write one.

    `before` is the file as the image had it (None: absent): a report baked into
    the image and left untouched is not this run's.
    """
    stat = engine.archive_stat(container_id, path)
    if stat is None:
        return None
    if before is not None and all(stat.get(k) == before.get(k) for k in ("size", "mode", "mtime")):
        return None
    if int(stat.get("size", 0)) > MAX_REPORT_BYTES:
        return b""  # reported as broken: far too big to be a test report
    archive = engine.get_archive(container_id, path)
    if archive is None:
        return None
    import tarfile  # see _import_report_modules

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            return None
        extracted = tar.extractfile(member)
        return extracted.read() if extracted else None


# -- the report --------------------------------------------------------------------------------------
def suite_report(run: SuiteRun, junit_path: str, timeout: float, name: str,
                 properties: dict[str, str]) -> tuple[bytes, str]:
    """(JUnit document, problem): the suite's own report when it is usable, else bgci's failing one."""
    from bgci import junit  # see _import_report_modules

    failure_type, problem = _run_problem(run, junit_path, timeout)
    if not problem and run.junit is not None:
        try:
            data = junit.normalize(run.junit, name, properties)
        except ValueError as exc:
            failure_type, problem = "broken-report", f"the JUnit file {junit_path} is broken: {exc}"
        else:
            summary = junit.summarize(data)
            if summary.tests == 0:
                failure_type, problem = "no-tests", f"the JUnit file {junit_path} lists no test cases"
            elif run.exit_code and summary.passed:
                return _with_exit_status(data, run, name, properties), ""
            else:
                return data, ""
    return _failure_document(run, failure_type, problem, name, properties), problem


def _run_problem(run: SuiteRun, junit_path: str, timeout: float) -> tuple[str, str]:
    """(failure type, message) when the run itself went wrong, else ("", "")."""
    if run.start_error:
        return "no-start", f"the test container did not start: {run.start_error}"
    if run.timed_out:
        return "timeout", f"timed out after {timeout:g} s: the container was killed (SIGKILL)"
    if run.junit is None:
        return "no-report", f"the suite wrote no JUnit file at {junit_path} (exit status {run.exit_code})"
    return "", ""


def _failure_document(run: SuiteRun, failure_type: str, problem: str, name: str,
                      properties: dict[str, str]) -> bytes:
    """One suite, one failing case `bgci.<kind>: test run` saying what went wrong, with the output's tail."""
    from bgci import junit  # see _import_report_modules

    output = "\n".join(["last lines of output:", *run.output_tail]) if run.output_tail else "no output"
    kind = properties.get("bgci.kind", "test")
    failed = junit.case("test run", f"bgci.{kind}", run.duration, failure=problem, output=output,
                        failure_type=failure_type)
    return junit.render([junit.suite(f"bgci.{kind}", [failed])], name, properties)


def _with_exit_status(data: bytes, run: SuiteRun, name: str, properties: dict[str, str]) -> bytes:
    """A suite that exited non-zero but reports no failure gets one, so Jenkins shows why the step failed."""
    from bgci import junit  # see _import_report_modules

    kind = properties.get("bgci.kind", "test")
    failed = junit.case("exit status", f"bgci.{kind}", 0.0,
                        failure=f"the suite exited with status {run.exit_code} but its report has no failure",
                        output="\n".join(run.output_tail), failure_type="exit-status")
    extra = junit.render([junit.suite(f"bgci.{kind}", [failed])], name, properties)
    return junit.merge([data, extra], name)


def _hex12(digest: str) -> str:
    return digest.rsplit(":", 1)[-1][:12]
