"""The Jenkinsfile and the shared library in jenkins/: valid Groovy that, run, calls real bgci commands in order.

Debian's groovy compiles each file as Jenkins' CPS compiler first does (tests/groovy/parse.groovy),
so a syntax error fails here rather than in a Jenkins build. tests/groovy/run_pipeline.groovy then
runs the real Jenkinsfile with jenkins/vars/*.groovy loaded as global steps and every pipeline step
stubbed, and records each call in order with the blocks around it; `sh` answers `bgci sha`,
`bgci env create --json` and `bgci status --json` with what bgci's own serializers print. The tests
below read that log: the commands, their order, their nesting, and that each one parses with the
real click CLI, so the pipeline cannot drift from the CLI it drives. Each test names the Jenkins
behaviour its stubs stand for; the header of run_pipeline.groovy describes the stubs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest

from bgci.cli import cli
from bgci.cli.common import emit
from bgci.cli.env_cmds import _as_dict
from bgci.router import NginxStatus
from bgci.schedulers.base import Environment, Instance
from bgci.status import EnvironmentStatus, InstanceStatus, Status
from tests.support import REPO_ROOT

GROOVY_DIR = REPO_ROOT / "tests" / "groovy"
VARS_DIR = REPO_ROOT / "jenkins" / "vars"
JENKINSFILE = REPO_ROOT / "Jenkinsfile"
GROOVY_FILES = [JENKINSFILE, *sorted((REPO_ROOT / "jenkins").rglob("*.groovy"))]
STEPS = ["bgci", "bgciBuild", "bgciTest", "bgciSmoke", "bgciEnv", "bgciPromote", "bgciRollback", "bgciPipeline"]

SHA = "5f1c0d9e8b7a69584736251403f2e1d0c9b8a796"
ENV_NAME = f"web-app-{SHA[:12]}"
PREVIEW_DOMAIN = "preview.localhost"


# -- running groovy -------------------------------------------------------------------------------------
def groovy(script: str, *arguments: Path | str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    java = shutil.which("java")
    if java and not Path(env.get("JAVA_HOME", "/usr/lib/jvm/default-java"), "bin", "java").exists():
        env["JAVA_HOME"] = str(Path(java).resolve().parent.parent)  # groovy's launcher needs it
    return subprocess.run(["groovy", str(GROOVY_DIR / script), *map(str, arguments)], capture_output=True,
                          text=True, timeout=180, env=env)


def printed(value: Any) -> str:
    """What a bgci command prints for `value` with --json: its own emit(), captured."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(value, as_json=True)
    return out.getvalue()


def env_create_json(name: str) -> str:
    """`bgci env create --json` for a ready environment called `name` (env_cmds._as_dict, as the CLI prints)."""
    environment = Environment(
        name=name, app="web-app", sha=SHA, image=f"registry.example:5000/web-app@sha256:{'e' * 64}",
        digest=f"sha256:{'e' * 64}", wanted_instances=2, created_at="2026-12-01T10:00:00+00:00",
        created_by="jenkins@router-1", scheduler="local",
        instances=(Instance(id="c1", host="127.0.0.1", port=32768, state="running", healthy=True),
                   Instance(id="c2", host="127.0.0.1", port=32769, state="running", healthy=True)))
    return printed(_as_dict(environment))


def status_json(name: str, preview: bool = True) -> str:
    """`bgci status --json` with `name` as a preview environment (or routed nowhere)."""
    status = Status(
        app="web-app", server_name="web-app.example", live=None, previous=None,
        nginx=NginxStatus(mode="embedded", running=preview, pid=123 if preview else None, listen="127.0.0.1:8080",
                          config=".bgci/nginx/nginx.conf"),
        environments=(EnvironmentStatus(
            name=name, sha=SHA, created_at="2026-12-01T10:00:00+00:00", roles=("preview",) if preview else (),
            preview_host=f"{name}.{PREVIEW_DOMAIN}" if preview else "",
            instances=(InstanceStatus(id="c1", address="127.0.0.1:32768", state="running", healthy=True),)),),
        missing=())
    return printed(status)


def scenario(name: str = ENV_NAME, *, preview: bool = True, branch: str | None = "main", answer: str = "proceed",
             env_json: str | None = None, failing: str | None = None) -> dict[str, Any]:
    """Canned answers: `bgci sha`, `env create --json` and `status --json` print what bgci would;
    `failing` is a regex of a command that exits 1; `answer` is the promote input's answer."""
    rules = [{"match": failing, "stdout": "", "exit": 1}] if failing else []
    rules += [
        {"match": r"^bgci sha$", "stdout": SHA + "\n"},
        {"match": r"^bgci env create\b.*--json$",
         "stdout": env_json if env_json is not None else env_create_json(name)},
        {"match": r"^bgci status --json$", "stdout": status_json(name, preview)},
    ]
    return {"env": {"BRANCH_NAME": branch} if branch else {}, "input": {"answer": answer, "by": "alice"}, "sh": rules}


def run_pipeline(tmp_path: Path, given: dict[str, Any], jenkinsfile: Path = JENKINSFILE) -> dict[str, Any]:
    scenario_file, log_file = tmp_path / "scenario.json", tmp_path / "log.json"
    scenario_file.write_text(json.dumps(given))
    result = groovy("run_pipeline.groovy", VARS_DIR, scenario_file, log_file, jenkinsfile)
    assert result.returncode == 0, result.stderr
    return json.loads(log_file.read_text())


def kinds(event: dict[str, Any]) -> list[str]:
    return [block["kind"] for block in event["within"]]


def enclosing(event: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(block["args"] for block in event["within"] if block["kind"] == kind)


def sh_scripts(log: dict[str, Any]) -> list[str]:
    return [e["args"]["script"] for e in log["events"] if e["kind"] == "sh"]


def bgci_commands(log: dict[str, Any]) -> list[str]:
    return [s for s in sh_scripts(log) if s.startswith("bgci ")]


def the(log: dict[str, Any], kind: str, **args: Any) -> dict[str, Any]:
    found = [e for e in log["events"] if e["kind"] == kind and all(e["args"].get(k) == v for k, v in args.items())]
    assert len(found) == 1, (kind, args, found)
    return found[0]


def bgci_sh(log: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [e for e in log["events"] if e["kind"] == "sh" and e["args"]["script"].startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


@pytest.fixture(scope="module")
def approved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The repo's Jenkinsfile on main, every command succeeding, the promote approved by alice."""
    return run_pipeline(tmp_path_factory.mktemp("approved"), scenario())


# -- the CLI check ----------------------------------------------------------------------------------------
def parse_with_cli(command: str) -> list[str]:
    """Parse `bgci ...` with the real click commands, as running it would, without running anything.

    Each level's make_context parses its own options and arguments, so an unknown command or option,
    a missing argument, an extra argument or a bad value raises click's UsageError; returns the
    command path, e.g. ["env", "create"].
    """
    words = shlex.split(command)
    assert words[0] == "bgci", command
    ctx = cli.make_context("bgci", words[1:])
    group: click.Command = cli
    path = []
    while isinstance(group, click.Group):
        protected = getattr(ctx, "_protected_args", None)
        remaining = [*(protected if protected is not None else ctx.protected_args), *ctx.args]
        name, command_, rest = group.resolve_command(ctx, remaining)
        assert name is not None and command_ is not None, command
        path.append(name)
        ctx = command_.make_context(name, rest, parent=ctx)
        group = command_
    return path


@pytest.mark.parametrize("command", [
    "bgci promote",                                 # ENV missing
    f"bgci promote {ENV_NAME} extra",               # one ENV only
    f"bgci env create --sha {SHA} --jsn",           # unknown option
    "bgci smoke --env",                             # option without its value
    "bgci build autoo",                             # no such command
    "bgci env",                                     # a group without its command
    f"bgci promote {ENV_NAME} --wait-lock -1",      # out of range
])
def test_the_cli_check_rejects_what_bgci_would_reject(command: str) -> None:
    """The check below is only worth something if a wrong command fails it (no Jenkins stub here)."""
    with pytest.raises((click.UsageError, click.exceptions.Exit)):
        parse_with_cli(command)


# -- compiling ---------------------------------------------------------------------------------------------
def test_jenkinsfile_and_library_compile() -> None:
    """Jenkins' CPS compiler parses the Jenkinsfile and each vars/ script before running anything."""
    result = groovy("parse.groovy", *GROOVY_FILES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("parsed ") == len(GROOVY_FILES) >= 2


def test_a_syntax_error_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "bgciPipeline.groovy"
    broken.write_text((VARS_DIR / "bgciPipeline.groovy").read_text().replace("stages {", "stages {{", 1))
    result = groovy("parse.groovy", broken)
    assert result.returncode != 0 and "bgciPipeline.groovy" in result.stderr


def test_every_step_is_a_commented_call() -> None:
    """Jenkins makes vars/<name>.groovy a global step `name` whose `name(...)` runs `call(...)`."""
    assert sorted(p.stem for p in VARS_DIR.glob("*.groovy")) == sorted(STEPS)
    for step in STEPS:
        text = (VARS_DIR / f"{step}.groovy").read_text()
        first = text.splitlines()[0]
        assert first.startswith(f"// `{step}") or first.startswith("// `def "), f"{step}.groovy: begin with its use"
        assert re.search(r"^(def|String) call\(", text, re.MULTILINE), f"{step}.groovy has no call()"
    lines = [line for line in JENKINSFILE.read_text().splitlines() if line and not line.startswith("//")]
    assert lines == ["@Library('bgci') _", "bgciPipeline(app: 'web-app', dir: 'examples/web-app')"]


# -- running the Jenkinsfile ---------------------------------------------------------------------------
def test_the_pipeline_runs_bgci_in_order(approved: dict[str, Any]) -> None:
    """Stages run in order on the agent; `sh` stands for the agent's shell, answered from canned output."""
    assert approved["result"] == "SUCCESS", approved["error"]
    assert bgci_commands(approved) == [
        "bgci sha",
        f"bgci build auto --rev {SHA}",
        f"bgci test --sha {SHA}",
        f"bgci env create --sha {SHA} --json",
        "bgci status --json",
        f"bgci smoke --env {ENV_NAME}",
        f"bgci promote {ENV_NAME}",
    ]
    stages = [e["args"]["name"] for e in approved["events"] if e["kind"] == "stage"]
    assert stages == ["Build, test, preview", "Build", "Test", "Environment", "Promote"]
    for command in bgci_commands(approved):
        stage = [b["args"]["name"] for b in bgci_sh(approved, command)["within"] if b["kind"] == "stage"][-1]
        assert stage == {"sha": "Build", "build": "Build", "test": "Test", "env": "Environment", "status":
                         "Environment", "smoke": "Environment", "promote": "Promote"}[command.split()[1]]


def test_every_command_parses_with_the_real_cli(approved: dict[str, Any]) -> None:
    """Each recorded `sh` is the whole command line Jenkins would run: one bgci call, no shell syntax."""
    paths = []
    for command in bgci_commands(approved):
        assert not re.search(r"[|;&<>`$]", command), f"one bgci call per sh step, its exit status Jenkins': {command}"
        try:
            paths.append(parse_with_cli(command))
        except (click.UsageError, click.exceptions.Exit) as exc:
            pytest.fail(f"{command}: {exc}")
    assert paths == [["sha"], ["build", "auto"], ["test"], ["env", "create"], ["status"], ["smoke"], ["promote"]]


def test_promote_waits_behind_input_milestones_lock_and_timeout(approved: dict[str, Any]) -> None:
    """Declarative applies stage options (timeout) first, then waits at the stage's input directive;
    the steps run only once someone proceeds. lock (Lockable Resources) and node wrap their bodies,
    milestone passes in order."""
    promote = bgci_sh(approved, "bgci promote")
    assert kinds(promote)[:2] == ["pipeline", "stage"] and enclosing(promote, "stage") == {"name": "Promote"}
    order = [k for k in kinds(promote) if k in ("timeout", "input", "lock", "node")]
    assert order == ["timeout", "input", "lock", "node"]
    assert enclosing(promote, "timeout") == {"time": 24, "unit": "HOURS", "option": True}
    assert enclosing(promote, "lock") == {"resource": "web-app-live", "inversePrecedence": True}
    input_ = enclosing(promote, "input")
    assert input_["directive"] is True and input_["ok"] == "Promote" and input_["submitter"] == "bgci-promoters"
    assert enclosing(promote, "node") == {"label": "bgci-router"}

    # a milestone before the input and one after it, and one once the lock is held: an older build
    # that reaches any of them after a newer one is aborted instead of promoting
    seq = {e["seq"]: e for e in approved["events"]}
    ask = the(approved, "input", directive=True)["seq"]
    milestones = [e for e in approved["events"] if e["kind"] == "milestone"]
    assert [m["args"]["ordinal"] for m in milestones] == [10, 20, 30]
    assert milestones[0]["seq"] < ask < milestones[1]["seq"] < milestones[2]["seq"] < promote["seq"]
    assert "lock" in kinds(milestones[2]) and "lock" not in kinds(milestones[1])
    assert "lock" not in kinds(seq[ask]), "the lock is taken after the input, not held while waiting"


def test_no_executor_is_held_while_waiting_for_the_input(approved: dict[str, Any]) -> None:
    """A node (agent) is an executor: the input directive of a stage with `agent none` runs outside any."""
    ask = the(approved, "input", directive=True)
    assert "node" not in kinds(ask), ask["within"]
    stages_before = [e for e in approved["events"] if e["seq"] < ask["seq"] and e["kind"] == "node"]
    assert all(e["args"]["label"] == "bgci-router" for e in stages_before)
    assert not [e for e in approved["events"] if e["kind"] == "input" and not e["args"]["directive"]], \
        "an input step inside steps would wait on the stage's agent"
    promote = bgci_sh(approved, "bgci promote")
    assert promote["args"]["env"]["NODE_NAME"] == "bgci-router"
    checkout = [e for e in approved["events"] if e["kind"] == "checkout" and "node" in kinds(e)
                and "input" in kinds(e)]
    assert len(checkout) == 1 and checkout[0]["seq"] < promote["seq"], "promote needs bgci.toml on the router's node"


def test_pipeline_options(approved: dict[str, Any]) -> None:
    """Declarative `options {}` (buildDiscarder/logRotator, disableConcurrentBuilds, Timestamper)."""
    options = the(approved, "options", scope="pipeline")["args"]["items"]
    assert [o["name"] for o in options] == ["buildDiscarder", "disableConcurrentBuilds", "timestamps"]
    assert options[0]["args"] == {"logRotator": {"numToKeepStr": "30"}}


def test_registry_credentials_reach_bgci_only_through_the_environment(approved: dict[str, Any]) -> None:
    """withCredentials(usernamePassword) binds the credential's values to variables for its body (the
    stub binds placeholders), so a secret that reached a command line would show in the recorded sh."""
    build = bgci_sh(approved, "bgci build auto")
    bindings = enclosing(build, "withCredentials")["bindings"]
    assert bindings == [{"type": "usernamePassword", "credentialsId": "bgci-registry",
                         "usernameVariable": "BGCI_REGISTRY_USERNAME", "passwordVariable": "BGCI_REGISTRY_PASSWORD"}]
    assert build["args"]["credentials"] == ["BGCI_REGISTRY_PASSWORD", "BGCI_REGISTRY_USERNAME"]
    others = [e for e in approved["events"] if e["kind"] == "sh" and e is not build]
    assert all(e["args"]["credentials"] == [] for e in others), "credentials only where bgci pushes"
    assert not any("stub-" in script for script in sh_scripts(approved)), "a secret value reached a command line"


SECRET_LITERALS = [
    r"""\b(password|passwd|secret|token|api_?key)\s*[:=]\s*['"][^'"$]+['"]""",  # password: 'hunter2'
    r"""\b[A-Z_]*(PASSWORD|TOKEN|SECRET)=[^$'"\s]""",                          # BGCI_REGISTRY_PASSWORD=hunter2
    r"""--password\b|\s-p\s""",                                                # a login with the secret in argv
    r"""://[^/@\s'"]+:[^/@\s'"]+@""",                                          # https://user:pass@host
]


def secret_literals(text: str) -> list[str]:
    return [m.group(0) for pattern in SECRET_LITERALS for m in re.finditer(pattern, text, re.IGNORECASE)]


def test_no_secret_literal_in_any_groovy_file() -> None:
    """Jenkins keeps secrets in its credentials store; the files only name credential ids."""
    planted = "withEnv(['BGCI_REGISTRY_PASSWORD=hunter2']) { sh 'docker login -p x' }\npassword: 'hunter2'"
    assert len(secret_literals(planted)) == 3  # the check finds what it looks for
    for path in GROOVY_FILES:
        text = path.read_text()
        assert secret_literals(text) == [], path
        assert not re.search(r"\$\{?(env\.)?[A-Z_]*(PASSWORD|TOKEN|SECRET|USERNAME)\b", text), \
            f"{path}: a secret variable is interpolated by Groovy, onto a command line or into the log"
        assert text.count("usernamePassword(") == text.count("withCredentials([usernamePassword("), path


def test_the_environment_name_is_the_one_bgci_prints(tmp_path: Path) -> None:
    """`sh(returnStdout: true)` returns the command's stdout: here bgci's JSON with another name, which
    the library reads with python3 (run for real by the stub) and then uses for smoke and promote."""
    name = "checkout-blue-7"
    log = run_pipeline(tmp_path, scenario(name))
    assert log["result"] == "SUCCESS", log["error"]
    assert bgci_commands(log)[-2:] == [f"bgci smoke --env {name}", f"bgci promote {name}"]
    assert the(log, "input", directive=True)["args"]["message"] == f"Promote {name} to live?"
    assert not any(SHA[:12] in c for c in bgci_commands(log) if c.startswith(("bgci smoke", "bgci promote")))


def test_json_without_a_name_fails_the_build(tmp_path: Path) -> None:
    """A failing sh fails its stage (AbortException); the later stages are skipped, post still runs."""
    log = run_pipeline(tmp_path, scenario(env_json=json.dumps({"sha": SHA, "instances": []})))
    assert log["result"] == "FAILURE"
    parse = next(e for e in log["events"] if e["kind"] == "sh" and e["args"]["script"].startswith("python3"))
    assert parse["exit"] != 0 and "no string field 'name'" in parse["stderr"]
    assert bgci_commands(log)[-1] == f"bgci env create --sha {SHA} --json"
    assert the(log, "stage", name="Promote")["args"]["skipped"] == "earlier failure"
    assert the(log, "junit", testResults=f"examples/web-app/test-results/smoke-{SHA}.xml")


def test_the_preview_url_is_the_build_description(approved: dict[str, Any], tmp_path: Path) -> None:
    """currentBuild.description is what Jenkins shows under the build number."""
    description = the(approved, "currentBuild", field="description")["args"]["value"]
    assert description == f"{ENV_NAME}: http://{ENV_NAME}.{PREVIEW_DOMAIN}"
    without = run_pipeline(tmp_path, scenario(preview=False))
    assert the(without, "currentBuild", field="description")["args"]["value"] == ENV_NAME


def test_junit_reports_are_recorded_even_when_the_suite_fails(approved: dict[str, Any], tmp_path: Path) -> None:
    """`post { always {} }` of a stage runs whatever its steps did; junit records the exact report of this sha
    (a pattern would also pick up older reports left in the workspace)."""
    for stage, report in (("Test", f"unit-{SHA}.xml"), ("Environment", f"smoke-{SHA}.xml")):
        junit = the(approved, "junit", testResults=f"examples/web-app/test-results/{report}")
        assert enclosing(junit, "post") == {"condition": "always"} and stage in [
            b["args"].get("name") for b in junit["within"]]

    red = run_pipeline(tmp_path, scenario(failing=r"^bgci test\b"))
    assert red["result"] == "FAILURE"
    assert bgci_commands(red) == ["bgci sha", f"bgci build auto --rev {SHA}", f"bgci test --sha {SHA}"]
    assert the(red, "junit", testResults=f"examples/web-app/test-results/unit-{SHA}.xml")
    assert [e["args"]["name"] for e in red["events"] if e["args"].get("skipped")] == ["Environment", "Promote"]


def test_an_aborted_input_promotes_nothing(tmp_path: Path) -> None:
    """Answering Abort to an input stops the build (FlowInterruptedException): no steps of the stage run."""
    log = run_pipeline(tmp_path, scenario(answer="abort"))
    assert log["result"] == "ABORTED"
    assert not [c for c in bgci_commands(log) if c.startswith("bgci promote")]
    assert [e["args"]["ordinal"] for e in log["events"] if e["kind"] == "milestone"] == [10]
    assert not [e for e in log["events"] if e["kind"] == "lock"]


def test_the_approver_is_who_bgci_records(approved: dict[str, Any]) -> None:
    """The input's submitterParameter puts who answered into the stage's environment; bgci's state file
    records BUILD_USER_ID as who promoted, and BUILD_URL."""
    promote = bgci_sh(approved, "bgci promote")
    assert promote["args"]["env"]["BUILD_USER_ID"] == "alice"
    assert promote["args"]["env"]["BUILD_URL"]


def test_other_branches_do_not_offer_to_promote(tmp_path: Path) -> None:
    """`when { beforeInput true }` is checked before the input: other branches are not even asked."""
    log = run_pipeline(tmp_path, scenario(branch="feature/login"))
    assert log["result"] == "SUCCESS"
    assert bgci_commands(log)[-1] == f"bgci smoke --env {ENV_NAME}"
    assert not [e for e in log["events"] if e["kind"] == "input"]
    assert the(log, "stage.skipped", name="Promote")["args"]["reason"] == "when"
    assert the(log, "when", point="beforeInput")["args"]["holds"] is False


def test_rollback_step(tmp_path: Path) -> None:
    """A job that rolls back: the step runs `bgci rollback`, which the CLI accepts."""
    jenkinsfile = tmp_path / "Jenkinsfile"
    jenkinsfile.write_text("@Library('bgci') _\nlock(resource: 'web-app-live') { node('bgci-router') { "
                           "bgciRollback() } }\n")
    log = run_pipeline(tmp_path, scenario(), jenkinsfile)
    assert bgci_commands(log) == ["bgci rollback"]
    assert parse_with_cli("bgci rollback") == ["rollback"]


def test_a_missing_app_is_refused(tmp_path: Path) -> None:
    """error() fails the build with its message before any stage runs."""
    jenkinsfile = tmp_path / "Jenkinsfile"
    jenkinsfile.write_text("@Library('bgci') _\nbgciPipeline()\n")
    log = run_pipeline(tmp_path, scenario(), jenkinsfile)
    assert log["result"] == "FAILURE" and "pass the app of bgci.toml" in log["error"]
    assert not [e for e in log["events"] if e["kind"] in ("sh", "stage")]
