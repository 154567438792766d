"""`bgci jobs render`: the sample app's jobs through jenkins-job-builder, read back as Jenkins would.

Each test parses the generated config.xml with xml.etree and checks the element Jenkins reads
for that behaviour (the class names are those of Jenkins core and the plugins named in jobs/).
No Jenkins is needed: rendering is offline and pure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bgci.cli import cli
from bgci.config import Settings, load_settings
from bgci.errors import ConfigError
from bgci.jenkins.jobs import RenderedJob, builtin_jobs_dir, marker, render_jobs
from tests.support import REPO_ROOT, SAMPLE_APP

SAMPLE_TOML = SAMPLE_APP / "bgci.toml"
FOLDER = "web-app"
SECRETS = {
    "BGCI_JENKINS_TOKEN": "jenkins-token-0f3a9c",
    "JENKINS_API_TOKEN": "jenkins-api-token-77d1e0",
    "BGCI_REGISTRY_PASSWORD": "registry-pass-5e2b81",
    "BGCI_REGISTRY_USERNAME": "registry-user-c4d902",
    "BGCI_MARATHON_PASSWORD": "marathon-pass-93ab17",
}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(SAMPLE_TOML, environ={})


@pytest.fixture(scope="module")
def rendered(settings: Settings) -> dict[str, RenderedJob]:
    return {job.name: job for job in render_jobs(settings)}


def xml_of(rendered: dict[str, RenderedJob], short: str) -> ET.Element:
    return ET.fromstring(rendered[f"{FOLDER}/web-app-{short}"].xml)


def shell_commands(root: ET.Element) -> list[str]:
    return [element.findtext("command") or "" for element in root.iter("hudson.tasks.Shell")]


def bgci_lines(root: ET.Element) -> list[str]:
    """The lines of the job's shell steps that run bgci (shell redirections cut off)."""
    lines = []
    for command in shell_commands(root):
        lines += [line.strip() for line in command.splitlines() if line.strip().startswith("bgci ")]
    return lines


def parse_with_click(line: str) -> list[str]:
    """Resolve a `bgci ...` line through bgci's real click parser, as a shell would split it.

    Returns the command path (e.g. ['bgci', 'env', 'create']); raises click's UsageError or
    NoSuchOption when a subcommand, option or argument is not accepted.
    """
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    for i, token in enumerate(tokens):
        if token in {">", ">>", "<", "|", "&&", "||", ";", "&"}:
            tokens = tokens[:i]
            break
    assert tokens[0] == "bgci"
    # The values the shell would substitute: the job's parameters and the env name from JSON.
    values = {"$SHA": "0" * 40, "$ENV": "web-app-0123456789ab", "$name": "web-app-0123456789ab"}
    args = [values.get(token, token) for token in tokens[1:]]
    ctx = cli.make_context("bgci", list(args))
    path = ["bgci"]
    command: click.Command = cli
    while isinstance(command, click.Group):
        remaining = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") \
            else [*ctx.protected_args, *ctx.args]
        if not remaining:
            break
        name, sub, rest = command.resolve_command(ctx, remaining)
        assert sub is not None, f"{line!r}: no such command {name!r}"
        path.append(name or "")
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return path


# -- the jobs ----------------------------------------------------------------------------------------
def test_the_six_jobs_are_rendered_in_the_configured_folder(rendered: dict[str, RenderedJob]) -> None:
    """Jenkins' full names (`folder/job`): what python-jenkins and the job URLs use."""
    assert sorted(rendered) == [f"{FOLDER}/web-app-{job}" for job in
                                ("build", "full", "pipeline", "promote", "rollback", "test")]
    for job in rendered.values():
        assert job.folder == FOLDER
        assert job.xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>')


def test_full_job_rebuilds_nightly_without_cache(rendered: dict[str, RenderedJob]) -> None:
    """hudson.triggers.TimerTrigger's spec is the cron line Jenkins schedules (H = hashed per job)."""
    root = xml_of(rendered, "full")
    assert root.tag == "project"  # a freestyle job: also buildable on demand
    assert root.findtext("triggers/hudson.triggers.TimerTrigger/spec") == "H H(2-5) * * *"
    assert shell_commands(root) == ["bgci build full --no-cache\n"]
    assert root.findtext("scm/branches/hudson.plugins.git.BranchSpec/name") == "main"


def test_build_job_polls_the_branch_and_hands_the_sha_to_test(rendered: dict[str, RenderedJob]) -> None:
    """SCMTrigger: the git plugin's /git/notifyCommit push hook triggers it (ignorePostCommitHooks
    false), polling is the fallback. Parameterized Trigger's predefined SHA=${GIT_COMMIT} is the
    commit the git plugin checked out, expanded by Jenkins when the build succeeds."""
    root = xml_of(rendered, "build")
    trigger = root.find("triggers/hudson.triggers.SCMTrigger")
    assert trigger is not None
    assert trigger.findtext("spec") == "H/5 * * * *"
    assert trigger.findtext("ignorePostCommitHooks") == "false"
    remote = root.find("scm/userRemoteConfigs/hudson.plugins.git.UserRemoteConfig")
    assert remote is not None and remote.findtext("url") == "https://git.example.org/example/web-app.git"
    assert root.findtext("scm/branches/hudson.plugins.git.BranchSpec/name") == "main"
    assert shell_commands(root) == ["bgci build auto\n"]
    config = root.find("publishers/hudson.plugins.parameterizedtrigger.BuildTrigger/configs/"
                       "hudson.plugins.parameterizedtrigger.BuildTriggerConfig")
    assert config is not None
    assert config.findtext("projects") == "web-app-test"  # relative to the folder, as Jenkins resolves it
    assert config.findtext("condition") == "SUCCESS"
    assert config.findtext("configs/hudson.plugins.parameterizedtrigger.PredefinedBuildParameters/"
                           "properties") == "SHA=${GIT_COMMIT}"


def test_test_job_tests_creates_the_environment_and_smoke_checks_it(rendered: dict[str, RenderedJob]) -> None:
    """One shell step with unstableReturn 7: bgci's exit 7 (tests or smoke checks failed) makes the
    build UNSTABLE, and stops the step, so no environment is made of a red commit."""
    root = xml_of(rendered, "test")
    parameter = root.find("properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions/"
                          "hudson.model.StringParameterDefinition")
    assert parameter is not None and parameter.findtext("name") == "SHA"
    assert root.findtext("scm/branches/hudson.plugins.git.BranchSpec/name") == "$SHA"  # checks out that commit
    (shell,) = root.iter("hudson.tasks.Shell")
    assert shell.findtext("unstableReturn") == "7"
    assert bgci_lines(root) == [
        'bgci test --sha "$SHA"',
        'bgci env create --sha "$SHA" --json > bgci-env.json',
        'bgci smoke --env "$name"',
    ]
    junit = root.find("publishers/hudson.tasks.junit.JUnitResultArchiver")
    assert junit is not None and junit.findtext("testResults") == "test-results/*.xml"
    setter = root.find("publishers/hudson.plugins.descriptionsetter.DescriptionSetterPublisher")
    assert setter is not None
    assert setter.findtext("regexp") == "^BGCI_DESCRIPTION (.*)$"
    assert setter.findtext("regexpForFailed") == "^BGCI_PREVIEW (.*)$"


def test_test_job_takes_the_environment_name_from_bgci_json(rendered: dict[str, RenderedJob], tmp_path: Path) -> None:
    """Runs the test job's shell as Jenkins does (`sh -xe`, JENKINS_URL and SHA in the environment)
    with a stand-in `bgci` on PATH whose `env create --json` names the environment something no one
    could guess from the sha. The line the Description Setter matches must carry that name in the
    preview URL and in the promote form link (Build With Parameters' /parambuild/?ENV=)."""
    (shell,) = xml_of(rendered, "test").iter("hudson.tasks.Shell")
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "bgci"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$*" in
  "env create"*) echo '{{"name": "not-from-the-sha", "sha": "'$SHA'", "ready": true}}' ;;
esac
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    sha = "1234567890abcdef1234567890abcdef12345678"
    env = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "SHA": sha,
           "JENKINS_URL": "https://ci.example.org/"}
    done = subprocess.run(["sh", "-xe", "-c", shell.findtext("command") or ""], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [f"test --sha {sha}", f"env create --sha {sha} --json",
                                              "smoke --env not-from-the-sha"]
    setter = xml_of(rendered, "test").find("publishers/hudson.plugins.descriptionsetter.DescriptionSetterPublisher")
    assert setter is not None
    # The plugin matches its regexp against each console line (stdout; `sh -x` traces go to stderr
    # and start with "+ ", so the anchored regexps never match a trace).
    matches = [m.group(1) for line in done.stdout.splitlines()
               if (m := re.match(setter.findtext("regexp") or "", line))]
    assert matches == [
        '<a href="http://not-from-the-sha.preview.localhost:8080/">http://not-from-the-sha.preview.localhost:8080/</a>'
        ' <a href="https://ci.example.org/job/web-app/job/web-app-promote/parambuild/?ENV=not-from-the-sha">'
        'Promote not-from-the-sha</a>'
    ]
    failed = [line for line in done.stdout.splitlines() if re.match(setter.findtext("regexpForFailed") or "", line)]
    assert len(failed) == 1 and "not-from-the-sha.preview.localhost" in failed[0]


def test_test_job_without_sha_fails_with_a_reason(rendered: dict[str, RenderedJob], tmp_path: Path) -> None:
    """A build started by hand without SHA: exit 2 (FAILURE, not UNSTABLE) before anything runs."""
    (shell,) = xml_of(rendered, "test").iter("hudson.tasks.Shell")
    done = subprocess.run(["sh", "-e", "-c", shell.findtext("command") or ""], cwd=tmp_path,
                          env={"PATH": os.environ["PATH"], "SHA": ""}, capture_output=True, text=True)
    assert done.returncode == 2
    assert "SHA is required" in done.stderr


def test_promote_and_rollback_run_one_at_a_time_on_the_router(rendered: dict[str, RenderedJob]) -> None:
    """concurrentBuild false: Jenkins queues a second build until the first is done. assignedNode
    is the label expression that picks the agent."""
    promote, rollback = xml_of(rendered, "promote"), xml_of(rendered, "rollback")
    for root in (promote, rollback):
        assert root.findtext("concurrentBuild") == "false"
        assert root.findtext("assignedNode") == "router"
        assert root.find("buildWrappers/org.jenkinsci.plugins.credentialsbinding.impl.SecretBuildWrapper") is None
    parameter = promote.find("properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions/"
                             "hudson.model.StringParameterDefinition")
    assert parameter is not None and parameter.findtext("name") == "ENV"
    assert bgci_lines(promote) == ['bgci promote "$ENV"']
    assert bgci_lines(rollback) == ["bgci rollback"]


def test_build_jobs_run_on_the_docker_label(rendered: dict[str, RenderedJob]) -> None:
    for short in ("full", "build", "test"):
        assert xml_of(rendered, short).findtext("assignedNode") == "docker"


def test_pipeline_job_reads_the_jenkinsfile_from_scm(rendered: dict[str, RenderedJob]) -> None:
    """workflow-job's flow-definition with a CpsScmFlowDefinition: the Jenkinsfile from the branch."""
    root = xml_of(rendered, "pipeline")
    assert root.tag == "flow-definition"
    definition = root.find("definition")
    assert definition is not None
    assert definition.get("class") == "org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition"
    assert definition.findtext("scriptPath") == "Jenkinsfile"
    assert definition.findtext("scm/branches/hudson.plugins.git.BranchSpec/name") == "main"


def test_every_bgci_command_line_is_accepted_by_bgcis_parser(rendered: dict[str, RenderedJob]) -> None:
    """The real click group resolves each subcommand and parses its options and arguments, so a
    renamed option or command breaks this test and not a Jenkins build."""
    seen = {}
    for job in rendered.values():
        for line in bgci_lines(ET.fromstring(job.xml)):
            seen[line] = parse_with_click(line)
    assert seen == {
        "bgci build full --no-cache": ["bgci", "build", "full"],
        "bgci build auto": ["bgci", "build", "auto"],
        'bgci test --sha "$SHA"': ["bgci", "test"],
        'bgci env create --sha "$SHA" --json > bgci-env.json': ["bgci", "env", "create"],
        'bgci smoke --env "$name"': ["bgci", "smoke"],
        'bgci promote "$ENV"': ["bgci", "promote"],
        "bgci rollback": ["bgci", "rollback"],
    }
    with pytest.raises(click.UsageError):  # the check has teeth
        parse_with_click("bgci build full --no-such-option")


# -- credentials and secrets -------------------------------------------------------------------------
def test_registry_credentials_are_bound_by_id_to_the_variables_bgci_reads(
        rendered: dict[str, RenderedJob], tmp_path: Path) -> None:
    """Credentials Binding's UsernamePasswordMultiBinding sets the two variables for the build
    only; the XML holds the credentials id, and bgci reads exactly those variables."""
    for short in ("full", "build", "test"):
        binding = xml_of(rendered, short).find(
            "buildWrappers/org.jenkinsci.plugins.credentialsbinding.impl.SecretBuildWrapper/bindings/"
            "org.jenkinsci.plugins.credentialsbinding.impl.UsernamePasswordMultiBinding")
        assert binding is not None, short
        assert binding.findtext("credentialsId") == "bgci-registry"
        assert binding.findtext("usernameVariable") == "BGCI_REGISTRY_USERNAME"
        assert binding.findtext("passwordVariable") == "BGCI_REGISTRY_PASSWORD"
    read = load_settings(SAMPLE_TOML, environ={"BGCI_REGISTRY_USERNAME": "u", "BGCI_REGISTRY_PASSWORD": "p"})
    assert (read.registry_credentials.username, read.registry_credentials.password) == ("u", "p")


def test_no_secret_from_the_environment_reaches_any_xml(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(SAMPLE_TOML)  # reads the real environment, secrets included
    assert settings.jenkins_credentials.password == SECRETS["BGCI_JENKINS_TOKEN"]
    everything = b"".join(job.xml for job in render_jobs(settings))
    for value in SECRETS.values():
        assert value.encode() not in everything


@pytest.mark.parametrize(("environ", "expected"), [
    ({"BGCI_JENKINS_USER": "bgci", "BGCI_JENKINS_TOKEN": "t1"}, ("bgci", "t1")),
    ({"JENKINS_USER_ID": "ci", "JENKINS_API_TOKEN": "t2"}, ("ci", "t2")),  # what Jenkins' own CLI reads
    ({"BGCI_JENKINS_USER": "bgci", "JENKINS_USER_ID": "ci", "BGCI_JENKINS_TOKEN": "t1", "JENKINS_API_TOKEN": "t2"},
     ("bgci", "t1")),  # bgci's names win
])
def test_jenkins_user_and_token_come_from_the_environment(environ: dict[str, str], expected: tuple[str, str]) -> None:
    credentials = load_settings(SAMPLE_TOML, environ=environ).jenkins_credentials
    assert (credentials.username, credentials.password) == expected
    assert expected[1] not in repr(credentials)


def test_every_job_carries_this_apps_marker(rendered: dict[str, RenderedJob]) -> None:
    """What `push --delete-old` looks for: a description line naming the app exactly."""
    for job in rendered.values():
        description = ET.fromstring(job.xml).findtext("description") or ""
        assert marker("web-app") in description.splitlines(), job.name
        assert marker("web") not in description.splitlines()


# -- purity ------------------------------------------------------------------------------------------
def test_rendering_is_byte_identical_across_runs_and_processes(rendered: dict[str, RenderedJob]) -> None:
    """Two fresh interpreters with different hash seeds give the same bytes as this one."""
    script = ("import hashlib, sys; from bgci.config import load_settings; from bgci.jenkins.jobs import render_jobs;"
              f"jobs = render_jobs(load_settings({str(SAMPLE_TOML)!r}, environ={{}}));"
              "print(hashlib.sha256(b''.join(j.name.encode() + j.xml for j in jobs)).hexdigest())")
    expected = hashlib.sha256(b"".join(j.name.encode() + j.xml for j in rendered.values())).hexdigest()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert done.stdout.strip() == expected


def test_builtin_templates_are_the_top_level_jobs_directory() -> None:
    """The package finds them through bgci/jenkins/jobs, a symlink a wheel build copies (package data)."""
    assert builtin_jobs_dir().resolve() == (REPO_ROOT / "jobs").resolve()
    assert (builtin_jobs_dir() / "bgci.yaml").is_file()


# -- an app's own templates, and mistakes --------------------------------------------------------------
def app_copy(tmp_path: Path, extra_toml: str = "") -> Path:
    """The sample app's bgci.toml in a directory of its own, with an (empty) jobs/ directory."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "bgci.toml").write_text(SAMPLE_TOML.read_text() + extra_toml)
    return tmp_path / "bgci.toml"


def test_an_apps_own_template_and_macro_are_added(tmp_path: Path) -> None:
    toml = app_copy(tmp_path, '\n[jenkins.params]\nreport-label = "reports"\n')
    (tmp_path / "jobs" / "report.yaml").write_text("""
- builder:
    name: print-report
    builders:
      - shell: 'echo report for {who}'
- job-template:
    name: '{folder-prefix}{app}-report'
    node: '{report-label}'
    builders:
      - print-report:
          who: '{app}'
""")
    jobs = {job.name: job for job in render_jobs(load_settings(toml, environ={}))}
    assert f"{FOLDER}/web-app-report" in jobs and len(jobs) == 7
    root = ET.fromstring(jobs[f"{FOLDER}/web-app-report"].xml)
    assert root.findtext("assignedNode") == "reports"
    assert shell_commands(root) == ["echo report for web-app"]
    assert marker("web-app") in (root.findtext("description") or "").splitlines()


def test_an_apps_job_group_is_instantiated_once(tmp_path: Path) -> None:
    toml = app_copy(tmp_path)
    (tmp_path / "jobs" / "extra.yaml").write_text("""
- job-template:
    name: '{app}-lint'
    builders: [{shell: 'true'}]
- job-template:
    name: '{app}-docs'
    builders: [{shell: 'true'}]
- job-group:
    name: web-extras
    jobs: ['{app}-lint', '{app}-docs']
""")
    names = [job.name for job in render_jobs(load_settings(toml, environ={}))]
    assert names.count("web-app-lint") == 1 and names.count("web-app-docs") == 1


@pytest.mark.parametrize(("content", "expected"), [
    ("- job-template:\n    name: '{app}-x'\n    builders:\n      - no-such-builder\n",
     "Unknown entry point or macro 'no-such-builder'"),
    ("- job-template:\n    name: '{app}-x'\n    builders:\n      - shell: 'echo {undefined-param}'\n",
     "Missing parameter: 'undefined-param'"),
    ("- job-template:\n    name: '{app}-x'\n   builders: [\n", "not valid YAML"),
])
def test_a_bad_template_is_one_line_naming_the_file(tmp_path: Path, content: str, expected: str) -> None:
    toml = app_copy(tmp_path)
    bad = tmp_path / "jobs" / "broken.yaml"
    bad.write_text(content)
    with pytest.raises(ConfigError) as caught:
        render_jobs(load_settings(toml, environ={}))
    message = str(caught.value)
    assert "\n" not in message
    assert f"{bad.resolve()}:" in message
    assert expected in message


def test_missing_git_url_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bgci.toml").write_text('app = "web-app"\n[jenkins]\nfolder = "ci"\n')
    with pytest.raises(ConfigError) as caught:
        render_jobs(load_settings(tmp_path / "bgci.toml", environ={}))
    assert any("jenkins.git_url: required" in p for p in caught.value.problems)


def test_no_folder_puts_jobs_at_the_top_level(tmp_path: Path) -> None:
    (tmp_path / "bgci.toml").write_text('app = "shop"\n[jenkins]\ngit_url = "https://git.example.org/shop.git"\n')
    jobs = {job.name: job for job in render_jobs(load_settings(tmp_path / "bgci.toml", environ={}))}
    assert "shop-test" in jobs
    command = shell_commands(ET.fromstring(jobs["shop-test"].xml))[0]
    assert '"${JENKINS_URL}job/shop-promote/parambuild/?ENV=$name"' in command


# -- the command ---------------------------------------------------------------------------------------
def test_cli_render_lists_and_writes_the_same_bytes(rendered: dict[str, RenderedJob], tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["--config", str(SAMPLE_TOML), "jobs", "render", "--json"], env={},
                           catch_exceptions=False)
    assert listed.exit_code == 0
    assert json.loads(listed.stdout) == sorted(rendered)
    written = runner.invoke(cli, ["--config", str(SAMPLE_TOML), "jobs", "render", "-o", str(tmp_path / "out")],
                            catch_exceptions=False)
    assert written.exit_code == 0
    for name, job in rendered.items():
        assert (tmp_path / "out" / name / "config.xml").read_bytes() == job.xml
