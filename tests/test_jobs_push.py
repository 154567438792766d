"""`bgci jobs push` and `bgci jobs trigger` through python-jenkins against the Jenkins emulator.

The emulator (tests/emulators/jenkins) serves Jenkins' REST API over real HTTP and runs freestyle
builds with /bin/sh; its DECISIONS list where each behaviour comes from. Each test's docstring
says which Jenkins behaviour its assertions stand for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgci.config import Settings, load_settings
from bgci.errors import ConfigError, JenkinsAuthError, JenkinsBuildFailed, JenkinsError, JenkinsUnreachable
from bgci.jenkins.client import JenkinsClient
from bgci.jenkins.jobs import RenderedJob, marker, render_jobs
from bgci.jenkins.push import normalise
from tests.emulators.jenkins import JenkinsEmulator
from tests.support import REPO_ROOT, SAMPLE_APP, free_port

USER, TOKEN = "admin", "tok-6b1f0c9e2d"  # the token must never appear in any output
PIPELINE = "web-app/web-app-pipeline"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[JenkinsEmulator]:
    with JenkinsEmulator(tmp_path / "jenkins", users={USER: TOKEN}, passwords={"alice": "alice-password"},
                         kill_grace=1.0) as emu:
        yield emu


@pytest.fixture
def settings() -> Settings:
    return load_settings(SAMPLE_APP / "bgci.toml", environ={})


def sample_jobs(settings: Settings) -> list[RenderedJob]:
    """The sample app's jobs but the pipeline one: the emulator stores no <flow-definition>
    (workflow-job is not emulated); pushing it is tested on its own below."""
    return [job for job in render_jobs(settings) if job.name != PIPELINE]


def client_for(emu: JenkinsEmulator, user: str = USER, token: str = TOKEN, **kwargs: object) -> JenkinsClient:
    return JenkinsClient(emu.url, user, token, poll_interval=0.05, **kwargs)  # type: ignore[arg-type]


def record_requests(client: JenkinsClient) -> list[tuple[str, str]]:
    """Every HTTP request python-jenkins sends from now on, as (method, path)."""
    sent: list[tuple[str, str]] = []
    original = client.server.jenkins_request

    def recording(req, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append((req.method, req.url.split("/", 3)[3]))
        return original(req, *args, **kwargs)

    client.server.jenkins_request = recording  # type: ignore[method-assign]
    return sent


def freestyle(shell: str, description: str = "", params: tuple[str, ...] = (), unstable_return: int | None = None,
              concurrent: bool = False) -> bytes:
    """A hand-made freestyle config.xml, as someone would create through the UI."""
    definitions = "".join(f"<hudson.model.StringParameterDefinition><name>{p}</name><defaultValue/>"
                          "</hudson.model.StringParameterDefinition>" for p in params)
    properties = (f"<hudson.model.ParametersDefinitionProperty><parameterDefinitions>{definitions}"
                  "</parameterDefinitions></hudson.model.ParametersDefinitionProperty>") if params else ""
    unstable = f"<unstableReturn>{unstable_return}</unstableReturn>" if unstable_return is not None else ""
    return (f"<?xml version='1.1' encoding='UTF-8'?><project><description>{description}</description>"
            f"<properties>{properties}</properties><concurrentBuild>{str(concurrent).lower()}</concurrentBuild>"
            f"<builders><hudson.tasks.Shell><command>{shell}</command>{unstable}</hudson.tasks.Shell></builders>"
            "<publishers/><buildWrappers/></project>").encode()


def bgci_cli(*args: str, config: Path, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `bgci` process (python3 -m bgci) with this worktree first on the path."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BGCI_", "JENKINS_"))}
    environ.update({"PYTHONPATH": str(REPO_ROOT), "BGCI_CONFIG": str(config), **(env or {})})
    return subprocess.run([sys.executable, "-m", "bgci", *args], capture_output=True, text=True, env=environ,
                          timeout=timeout)


def app_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    """The sample app's bgci.toml pointing at the emulator."""
    text = (SAMPLE_APP / "bgci.toml").read_text().replace('url = "http://127.0.0.1:8081/"', f'url = "{url}"')
    path = tmp_path / "app" / "bgci.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + extra)
    return path


# -- push --------------------------------------------------------------------------------------------
def test_push_creates_the_folder_and_jobs_then_is_a_no_op(emulator: JenkinsEmulator, settings: Settings) -> None:
    """createItem with an XML body makes each job (python-jenkins create_job); config.xml reads
    back what was posted, re-declared as XML 1.1 (XmlFile), which normalising ignores. A second
    push only reads: no POST at all, so Jenkins keeps the jobs' config history untouched."""
    client = client_for(emulator)
    jobs = sample_jobs(settings)
    first = client.push(jobs, app="web-app")
    assert first.folders == ["web-app"]
    assert first.created == [job.name for job in jobs] and not first.updated and not first.deleted
    for job in jobs:
        on_server = client.server.get_job_config(job.name)
        assert on_server.startswith("<?xml version='1.1'")
        assert normalise(on_server) == normalise(job.xml)
    assert ET.fromstring(client.server.get_job_config("web-app")).tag == "com.cloudbees.hudson.plugins.folder.Folder"

    sent = record_requests(client)
    second = client.push(jobs, app="web-app")
    assert second.unchanged == [job.name for job in jobs] and not second.changed
    assert [s for s in sent if s[0] != "GET"] == []


def test_push_updates_only_the_changed_job(emulator: JenkinsEmulator, tmp_path: Path) -> None:
    """POST config.xml reconfigures one job; the others are neither read-modified nor written."""
    client = client_for(emulator)
    client.push(sample_jobs(load_settings(app_config(tmp_path, emulator.url), environ={})), app="web-app")
    changed = load_settings(app_config(tmp_path, emulator.url, extra='full_schedule = "H 4 * * *"\n'), environ={})
    sent = record_requests(client)
    result = client.push(sample_jobs(changed), app="web-app")
    assert result.updated == ["web-app/web-app-full"] and not result.created
    assert len(result.unchanged) == 4
    assert [s for s in sent if s[0] == "POST"] == [("POST", "job/web-app/job/web-app-full/config.xml")]
    on_server = ET.fromstring(client.server.get_job_config("web-app/web-app-full"))
    assert on_server.findtext("triggers/hudson.triggers.TimerTrigger/spec") == "H 4 * * *"


def test_delete_old_removes_only_this_apps_managed_jobs(emulator: JenkinsEmulator, settings: Settings) -> None:
    """Jenkins has no notion of "managed": the marker line in the description is what bgci owns.
    A hand-made job, another app's bgci job and a folder survive; this app's job that is no
    longer rendered (even in another folder) is deleted (doDelete)."""
    client = client_for(emulator)
    jobs = sample_jobs(settings)
    client.push(jobs, app="web-app")
    extra = [
        RenderedJob("hand-made", freestyle("true", "made through the UI")),
        RenderedJob("web-app/web-app-notes", freestyle("true", "a colleague's job next to ours")),
        RenderedJob("other-app-build", freestyle("true", marker("other-app"))),
        RenderedJob("web-app-build-similar", freestyle("true", marker("web-app2"))),
        RenderedJob("web-app/web-app-obsolete", freestyle("true", f"once rendered\n\n{marker('web-app')}")),
        RenderedJob("old-folder/web-app-moved", freestyle("true", marker("web-app"))),
    ]
    client.push(extra, app="someone-else")

    dry = client.push(jobs, app="web-app", delete_old=True, dry_run=True)
    assert dry.deleted == ["old-folder/web-app-moved", "web-app/web-app-obsolete"]
    assert client.get_config("web-app/web-app-obsolete") is not None  # a dry run deletes nothing

    result = client.push(jobs, app="web-app", delete_old=True)
    assert result.deleted == ["old-folder/web-app-moved", "web-app/web-app-obsolete"]
    assert client.get_config("web-app/web-app-obsolete") is None
    assert client.get_config("old-folder/web-app-moved") is None
    for survivor in ("hand-made", "web-app/web-app-notes", "other-app-build", "web-app-build-similar", "old-folder"):
        assert client.get_config(survivor) is not None, survivor
    assert all(client.get_config(job.name) is not None for job in jobs)


def test_dry_run_changes_nothing(emulator: JenkinsEmulator, settings: Settings, tmp_path: Path) -> None:
    """Only GET requests: no createItem, no config.xml POST, no doDelete."""
    client = client_for(emulator)
    sent = record_requests(client)
    result = client.push(sample_jobs(settings), app="web-app", dry_run=True, delete_old=True)
    assert result.dry_run and result.folders == ["web-app"] and len(result.created) == 5
    assert {method for method, _ in sent} == {"GET"}
    assert client.list_jobs() == []

    config = app_config(tmp_path, emulator.url)
    done = bgci_cli("jobs", "push", "--dry-run", config=config, env={"BGCI_JENKINS_USER": USER,
                                                                     "BGCI_JENKINS_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dry run: 6 created, 0 updated, 0 unchanged, 0 deleted")
    assert "would create folder web-app" in done.stderr and "would create web-app/web-app-test" in done.stderr
    assert client.list_jobs() == []


def test_pushing_the_pipeline_job_to_a_jenkins_without_it_fails_saying_what_was_pushed(
        emulator: JenkinsEmulator, settings: Settings) -> None:
    """A Jenkins without workflow-job cannot read <flow-definition>: createItem answers 500.
    Each job is its own request (Jenkins has no multi-job transaction), so the error lists the
    jobs already pushed and a rerun continues from there."""
    client = client_for(emulator)
    with pytest.raises(JenkinsError) as caught:
        client.push(render_jobs(settings), app="web-app")
    message = str(caught.value)
    assert "create web-app/web-app-pipeline" in message and "HTTP 500" in message
    assert "already pushed: folder web-app, web-app/web-app-build, web-app/web-app-full" in message
    assert "\n" not in message and TOKEN not in message
    rerun = client.push(sample_jobs(settings), app="web-app")
    assert rerun.unchanged == ["web-app/web-app-build", "web-app/web-app-full"]
    assert rerun.created == ["web-app/web-app-promote", "web-app/web-app-rollback", "web-app/web-app-test"]


def test_nested_folders_are_created_parents_first(emulator: JenkinsEmulator, tmp_path: Path) -> None:
    """createItem only creates in an existing folder (Jenkins answers 404 otherwise)."""
    settings = load_settings(app_config(tmp_path, emulator.url).parent / "bgci.toml", environ={})
    nested = [RenderedJob(f"ci/web/{job.base_name}", job.xml) for job in sample_jobs(settings)[:1]]
    result = client_for(emulator).push(nested, app="web-app")
    assert result.folders == ["ci", "ci/web"]
    assert result.created == ["ci/web/web-app-build"]


def test_push_refuses_a_folder_that_is_a_job(emulator: JenkinsEmulator, settings: Settings) -> None:
    client = client_for(emulator)
    client.push([RenderedJob("web-app", freestyle("true"))], app="x")
    with pytest.raises(Exception, match=r"web-app on .* is a job, not a folder"):
        client.push(sample_jobs(settings), app="web-app")


# -- errors, and the token -----------------------------------------------------------------------------
def test_wrong_token_is_401_and_never_shown(emulator: JenkinsEmulator, settings: Settings) -> None:
    """BasicHeaderProcessor: a wrong API token is 401, never a fallback to anonymous."""
    wrong = "wrong-token-a81c"
    with pytest.raises(JenkinsAuthError) as caught:
        client_for(emulator, token=wrong).push(sample_jobs(settings), app="web-app")
    assert caught.value.status_code == 401
    assert "refused the credentials (HTTP 401)" in str(caught.value)
    assert wrong not in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 10


def test_anonymous_without_permission_is_403(tmp_path: Path, settings: Settings) -> None:
    """Anonymous may read (anonymous_read) but not create: Jenkins answers 403 to the POST."""
    with JenkinsEmulator(tmp_path / "j", users={USER: TOKEN}, anonymous_read=True) as emu, \
            pytest.raises(JenkinsAuthError) as caught:
        JenkinsClient(emu.url).push(sample_jobs(settings), app="web-app")
    assert caught.value.status_code == 403
    assert "lacks the permission" in str(caught.value)


def test_missing_crumb_is_a_clear_403(emulator: JenkinsEmulator, settings: Settings) -> None:
    """With a password (not an API token) Jenkins' CrumbFilter wants the crumb of this session.
    python-jenkins fetches it once; when the session cookie is gone (expired, Jenkins restarted)
    the cached crumb is no longer valid and the POST is refused with 403."""
    client = client_for(emulator, user="alice", token="alice-password")
    client.push(sample_jobs(settings)[:1], app="web-app")  # crumb and session work together
    client.server._session.cookies.clear()
    with pytest.raises(JenkinsAuthError) as caught:
        client.push(sample_jobs(settings), app="web-app")
    assert caught.value.status_code == 403
    assert "CSRF crumb" in str(caught.value)
    assert "alice-password" not in str(caught.value)


def test_unreachable_jenkins_is_one_line(settings: Settings) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    started = time.monotonic()
    with pytest.raises(JenkinsUnreachable) as caught:
        JenkinsClient(url, USER, TOKEN, timeout=5).push(sample_jobs(settings), app="web-app")
    assert time.monotonic() - started < 30
    assert str(caught.value).startswith(f"read web-app/web-app-build: cannot connect to {url}: connection refused")
    assert TOKEN not in str(caught.value)


def test_credentials_in_the_url_are_used_and_never_shown(emulator: JenkinsEmulator, settings: Settings) -> None:
    host = emulator.url.removeprefix("http://")
    client = JenkinsClient(f"http://{USER}:{TOKEN}@{host}/")
    assert TOKEN not in client.url
    assert client.push(sample_jobs(settings)[:1], app="web-app").created
    bad = JenkinsClient(f"http://{USER}:not-{TOKEN}@{host}/")
    with pytest.raises(JenkinsAuthError) as caught:
        bad.push(sample_jobs(settings), app="web-app")
    assert TOKEN not in str(caught.value)


def test_a_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        JenkinsClient("")
    with pytest.raises(ConfigError):
        JenkinsClient("ftp://jenkins.example.org/")


def test_cli_errors_show_no_token(emulator: JenkinsEmulator, tmp_path: Path) -> None:
    """The whole process output (stdout and stderr) of failing pushes: one Error line, exit 10."""
    config = app_config(tmp_path, emulator.url)
    outputs = []
    for env in ({"BGCI_JENKINS_USER": USER, "BGCI_JENKINS_TOKEN": f"{TOKEN}-wrong"},
                {"BGCI_JENKINS_USER": USER, "BGCI_JENKINS_TOKEN": TOKEN,
                 "BGCI_JENKINS_URL": f"http://127.0.0.1:{free_port()}/"}):
        done = bgci_cli("jobs", "push", config=config, env=env)
        assert done.returncode == 10, done.stderr
        error_lines = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
        assert len(error_lines) == 1 and "Traceback" not in done.stderr
        outputs.append(done.stdout + done.stderr)
    assert "HTTP 401" in outputs[0] and "connection refused" in outputs[1]
    assert all(TOKEN not in output for output in outputs)


# -- trigger -----------------------------------------------------------------------------------------
@pytest.fixture
def build_jobs(emulator: JenkinsEmulator) -> JenkinsClient:
    client = client_for(emulator)
    client.push([
        RenderedJob("ok", freestyle("true")),
        RenderedJob("broken", freestyle("false")),
        RenderedJob("red-tests", freestyle("echo 1 test failed; exit 7", unstable_return=7)),
        RenderedJob("greet", freestyle("echo hello $WHO; echo done", params=("WHO",))),
        RenderedJob("slow", freestyle("echo started; sleep 30")),
    ], app="x")
    return client


def test_trigger_returns_number_and_result(build_jobs: JenkinsClient) -> None:
    """build → 201 with Location queue/item/N; the queue item's executable gives the number once
    the build left the queue; the build's result: SUCCESS, FAILURE (non-zero shell), UNSTABLE
    (the shell's unstableReturn)."""
    first = build_jobs.trigger("ok", wait=True)
    assert (first.number, first.result, first.exit_code) == (1, "SUCCESS", 0)
    assert first.url.endswith("/job/ok/1/")
    assert build_jobs.trigger("ok", wait=True).number == 2
    broken = build_jobs.trigger("broken", wait=True)
    assert (broken.result, broken.exit_code) == ("FAILURE", 10)
    unstable = build_jobs.trigger("red-tests", wait=True)
    assert (unstable.result, unstable.exit_code) == ("UNSTABLE", 7)
    started = build_jobs.trigger("ok")  # without wait: the number, result unknown
    assert started.number == 3 and started.result is None


def test_trigger_follows_the_console_with_parameters(build_jobs: JenkinsClient) -> None:
    """buildWithParameters; progressiveText streams the console from ?start= using X-Text-Size."""
    lines: list[str] = []
    result = build_jobs.trigger("greet", {"WHO": "bgci"}, follow=True, on_line=lines.append)
    assert result.result == "SUCCESS"
    assert "hello bgci" in lines and "done" in lines
    assert lines[-1] == "Finished: SUCCESS"
    assert len(lines) == len(set(lines))  # nothing streamed twice


def test_trigger_cli_exit_codes(emulator: JenkinsEmulator, build_jobs: JenkinsClient, tmp_path: Path) -> None:
    """The shell (and a Jenkins step calling bgci) sees SUCCESS 0, UNSTABLE 7, FAILURE 10."""
    config = app_config(tmp_path, emulator.url).parent / "top.toml"
    config.write_text(app_config(tmp_path, emulator.url).read_text().replace('folder = "web-app"', 'folder = ""'))
    env = {"BGCI_JENKINS_USER": USER, "BGCI_JENKINS_TOKEN": TOKEN}
    ok = bgci_cli("jobs", "trigger", "ok", "--wait", config=config, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok #1 SUCCESS http")
    follow = bgci_cli("jobs", "trigger", "greet", "-p", "WHO=cli", "--follow", config=config, env=env)
    assert follow.returncode == 0 and "hello cli" in follow.stdout
    red = bgci_cli("jobs", "trigger", "/red-tests", "--wait", config=config, env=env)
    assert red.returncode == 7 and "UNSTABLE (tests failed)" in red.stderr
    broken = bgci_cli("jobs", "trigger", "broken", "--wait", config=config, env=env)
    assert broken.returncode == 10 and "ended FAILURE" in broken.stderr
    missing = bgci_cli("jobs", "trigger", "no-such-job", config=config, env=env)
    assert missing.returncode == 10 and "start no-such-job: not found" in missing.stderr
    for done in (ok, follow, red, broken, missing):
        assert TOKEN not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_sigterm_while_following_stops_waiting_and_leaves_the_build_running(
        emulator: JenkinsEmulator, build_jobs: JenkinsClient, tmp_path: Path) -> None:
    """A Jenkins abort of the calling job (SIGTERM) or Ctrl-C: bgci stops following without a
    traceback, exits 130 and says the build keeps running in Jenkins (it is not stopped)."""
    config = app_config(tmp_path, emulator.url).parent / "top.toml"
    config.write_text(app_config(tmp_path, emulator.url).read_text().replace('folder = "web-app"', 'folder = ""'))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BGCI_", "JENKINS_"))}
    environ.update({"PYTHONPATH": str(REPO_ROOT), "BGCI_CONFIG": str(config), "BGCI_JENKINS_USER": USER,
                    "BGCI_JENKINS_TOKEN": TOKEN})
    process = subprocess.Popen([sys.executable, "-m", "bgci", "jobs", "trigger", "slow", "--follow"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
    try:
        deadline = time.monotonic() + 30
        while (record := emulator.build_record("slow", 1)) is None or b"started" not in bytes(record.console):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        time.sleep(0.5)  # bgci is following the console now
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Error: stopped waiting; slow #1 keeps running in Jenkins" in stderr
    assert "started" in stdout
    record = emulator.build_record("slow", 1)
    assert record is not None and record.building
    build_jobs.server.stop_build("slow", 1)


def test_waiting_gives_up_at_the_timeout(build_jobs: JenkinsClient) -> None:
    with pytest.raises(JenkinsError, match="timed out: slow #1 is still running"):
        build_jobs.trigger("slow", wait=True, timeout=1)
    build_jobs.server.stop_build("slow", 1)


def test_a_cancelled_queue_item_is_reported(emulator: JenkinsEmulator, build_jobs: JenkinsClient) -> None:
    """Queue.cancel: the left item says cancelled and never gets an executable."""
    build_jobs.trigger("slow")
    queue_id = build_jobs.server.build_job("slow")  # waits: concurrent builds are off
    build_jobs.server.cancel_queue(queue_id)
    with pytest.raises(JenkinsBuildFailed, match="was cancelled before it started"):
        build_jobs.wait_for_start("slow", queue_id)
    build_jobs.server.stop_build("slow", 1)


# -- the rendered jobs, run ----------------------------------------------------------------------------
FAKE_BGCI = """#!/bin/sh
# Stands in for bgci on the Jenkins agent: records each call, answers like the real commands.
echo "$* registry-user=${BGCI_REGISTRY_USERNAME:-unset} registry-password=${BGCI_REGISTRY_PASSWORD:+set}" >> "$CALLS"
case "$1 $2" in
  "test --sha")
    mkdir -p test-results
    echo '<testsuite name="unit" tests="1"><testcase classname="t" name="ok"/></testsuite>' \\
      > "test-results/unit-$3.xml"
    exit "${FAKE_TEST_EXIT:-0}" ;;
  "env create")
    echo "healthy 2/2" >&2
    echo '{"name": "env-from-json", "sha": "'"$4"'", "ready": true}' ;;
  "promote "*)
    echo "begin $2" >> "$CALLS.router"; sleep 0.5; echo "end $2" >> "$CALLS.router" ;;
  "smoke --env")
    echo '<testsuite name="smoke" tests="1"><testcase classname="smoke" name="health"/></testsuite>' \\
      > test-results/smoke.xml ;;
esac
"""


@pytest.fixture
def fake_bgci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `bgci` first on the PATH the emulator's builds inherit; returns the file its calls go to."""
    calls = tmp_path / "bgci-calls"
    script = tmp_path / "agent-bin" / "bgci"
    script.parent.mkdir()
    script.write_text(FAKE_BGCI)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(calls))
    return calls


@pytest.fixture
def chain(tmp_path: Path, fake_bgci: Path) -> Iterator[tuple[JenkinsEmulator, JenkinsClient, str]]:
    """The sample app's jobs pushed to a Jenkins with the registry credential, cloning a real repo."""
    from tests.support import commit_all, git

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "ci@bgci.test")
    git(repo, "config", "user.name", "bgci tests")
    (repo / "README").write_text("the app\n")
    sha = commit_all(repo, "first")
    with JenkinsEmulator(tmp_path / "jenkins", users={USER: TOKEN}, kill_grace=1.0,
                         credentials={"bgci-registry": ("registry-bot", "registry-secret-93f1")}) as emu:
        config = app_config(tmp_path, emu.url)
        config.write_text(config.read_text().replace("https://git.example.org/example/web-app.git", str(repo)))
        client = client_for(emu)
        client.push(sample_jobs(load_settings(config, environ={})), app="web-app")
        yield emu, client, sha


def test_build_hands_the_sha_to_test_which_links_the_promote_form(
        chain: tuple[JenkinsEmulator, JenkinsClient, str], fake_bgci: Path) -> None:
    """The rendered jobs, run: git checkout of the branch sets GIT_COMMIT; Parameterized Trigger
    starts <app>-test with SHA=${GIT_COMMIT} expanded; the test job checks out $SHA, runs bgci with
    the registry credential bound (its password masked in the console), records JUnit, and the
    Description Setter puts the environment named by bgci's JSON into the promote link."""
    emu, client, sha = chain
    built = client.trigger("web-app/web-app-build", wait=True)
    assert built.result == "SUCCESS"
    test = emu.wait_for_build("web-app/web-app-test", 1)
    assert test.result == "SUCCESS", bytes(test.console).decode()
    assert test.param_dict["SHA"] == sha
    assert fake_bgci.read_text().splitlines() == [
        "build auto registry-user=registry-bot registry-password=set",
        f"test --sha {sha} registry-user=registry-bot registry-password=set",
        f"env create --sha {sha} --json registry-user=registry-bot registry-password=set",
        "smoke --env env-from-json registry-user=registry-bot registry-password=set",
    ]
    assert test.test_report is not None and test.test_report["passCount"] == 2
    assert test.description == (
        '<a href="http://env-from-json.preview.localhost:8080/">http://env-from-json.preview.localhost:8080/</a> '
        f'<a href="{emu.url}/job/web-app/job/web-app-promote/parambuild/?ENV=env-from-json">Promote env-from-json</a>')
    assert b"registry-secret-93f1" not in bytes(test.console)


def test_failing_tests_make_the_test_job_unstable_without_an_environment(
        chain: tuple[JenkinsEmulator, JenkinsClient, str], fake_bgci: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """unstableReturn 7: bgci's exit 7 marks the build UNSTABLE and ends the step, so no
    environment is created; JUnit still records the report; `jobs trigger` exits 7."""
    emu, client, sha = chain
    monkeypatch.setenv("FAKE_TEST_EXIT", "7")
    result = client.trigger("web-app/web-app-test", {"SHA": sha}, wait=True)
    assert (result.result, result.exit_code) == ("UNSTABLE", 7)
    assert [line.split(" registry-")[0] for line in fake_bgci.read_text().splitlines()] == [f"test --sha {sha}"]
    record = emu.build_record("web-app/web-app-test", result.number)
    assert record is not None and record.test_report is not None and record.description is None


def test_promote_runs_one_at_a_time_with_the_env_parameter(
        chain: tuple[JenkinsEmulator, JenkinsClient, str], fake_bgci: Path) -> None:
    """concurrentBuild false: a second promote waits in the queue ("Build #1 is already in
    progress") until the first is done, so two switches never overlap. The promote job binds no
    registry credential, and refuses to run without ENV."""
    emu, client, _ = chain
    first = client.trigger("web-app/web-app-promote", {"ENV": "web-app-aaaaaaaaaaaa"})
    second = client.trigger("web-app/web-app-promote", {"ENV": "web-app-bbbbbbbbbbbb"})
    for build in (first, second):
        assert emu.wait_for_build("web-app/web-app-promote", build.number).result == "SUCCESS"
    assert Path(f"{fake_bgci}.router").read_text().splitlines() == [
        "begin web-app-aaaaaaaaaaaa", "end web-app-aaaaaaaaaaaa",
        "begin web-app-bbbbbbbbbbbb", "end web-app-bbbbbbbbbbbb",
    ]
    assert "promote web-app-aaaaaaaaaaaa registry-user=unset registry-password=" in fake_bgci.read_text()
    empty = client.trigger("web-app/web-app-promote", {"ENV": ""}, wait=True)
    assert empty.result == "FAILURE"
    assert "ENV is required" in client.server.get_build_console_output("web-app/web-app-promote", empty.number)
