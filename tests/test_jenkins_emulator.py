"""The Jenkins emulator, driven through the real python-jenkins client (raw requests where it has no call).

Each docstring names the real Jenkins behaviour the assertions stand for.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
import requests

import jenkins
from tests.emulators.jenkins import JenkinsEmulator
from tests.emulators.jenkins.model import QueueItem

TOKEN, PASSWORD = "api-token-0001", "s3cret-password"


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[JenkinsEmulator]:
    with JenkinsEmulator(
        tmp_path / "jenkins_home", users={"admin": TOKEN}, passwords={"admin": PASSWORD}, kill_grace=2,
        credentials={"registry": ("deployer", "hunter2-pass"), "api": "tok-XYZ-123"},
    ) as e:
        yield e


@pytest.fixture
def server(emu: JenkinsEmulator) -> jenkins.Jenkins:
    return jenkins.Jenkins(emu.url, "admin", password=TOKEN, timeout=10)


def shell(command: str) -> str:
    return f"<hudson.tasks.Shell><command>{escape(command)}</command></hudson.tasks.Shell>"


def string_param(name: str, default: str = "") -> str:
    return (f"<hudson.model.StringParameterDefinition><name>{name}</name>"
            f"<defaultValue>{escape(default)}</defaultValue></hudson.model.StringParameterDefinition>")


def job_xml(*builders: str, params: tuple[str, ...] = (), publishers: str = "", wrappers: str = "", scm: str = "",
            concurrent: bool = False, disabled: bool = False, description: str = "",
            quiet_period: int | None = None) -> str:
    props = (f"<hudson.model.ParametersDefinitionProperty><parameterDefinitions>{''.join(params)}"
             "</parameterDefinitions></hudson.model.ParametersDefinitionProperty>") if params else ""
    return f"""<?xml version='1.1' encoding='UTF-8'?>
<project>
  <description>{escape(description)}</description>
  <keepDependencies>false</keepDependencies>
  <properties>{props}</properties>
  {scm or '<scm class="hudson.scm.NullSCM"/>'}
  <canRoam>true</canRoam>
  <disabled>{str(disabled).lower()}</disabled>
  <triggers><hudson.triggers.TimerTrigger><spec>H 2 * * *</spec></hudson.triggers.TimerTrigger></triggers>
  <concurrentBuild>{str(concurrent).lower()}</concurrentBuild>
  {'' if quiet_period is None else f'<quietPeriod>{quiet_period}</quietPeriod>'}
  <builders>{''.join(builders)}</builders>
  <publishers>{publishers}</publishers>
  <buildWrappers>{wrappers}</buildWrappers>
</project>"""


def queued_build_number(server: jenkins.Jenkins, queue_id: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = server.get_queue_item(queue_id)
        if item.get("executable"):
            return item["executable"]["number"]
        time.sleep(0.05)
    raise AssertionError(f"queue item {queue_id} never started: {item}")


def run(server: jenkins.Jenkins, emu: JenkinsEmulator, name: str, params: dict[str, str] | None = None) -> dict:
    number = queued_build_number(server, server.build_job(name, params))
    emu.wait_for_build(name, number)
    return server.get_build_info(name, number)


def session_with_crumb(emu: JenkinsEmulator, auth: tuple[str, str]) -> requests.Session:
    s = requests.Session()
    s.auth = auth
    crumb = s.get(emu.url + "/crumbIssuer/api/json").json()
    s.headers[crumb["crumbRequestField"]] = crumb["crumb"]
    return s


# ------------------------------------------------------------------------------ security
def test_post_needs_crumb_of_the_same_session(emu: JenkinsEmulator) -> None:
    """CrumbFilter + DefaultCrumbIssuer: a password-authenticated POST needs the crumb issued to that user in
    that session (JSESSIONID cookie); without it 403 "No valid crumb was included in the request".
    python-jenkins fetches the crumb once and its Session keeps the cookie, so its POSTs pass."""
    url, auth, xml = emu.url + "/createItem?name=a", ("admin", PASSWORD), job_xml(shell("true"))
    headers = {"Content-Type": "text/xml"}
    r = requests.post(url, data=xml, headers=headers, auth=auth)
    assert r.status_code == 403 and "No valid crumb was included in the request" in r.text
    s = session_with_crumb(emu, auth)
    assert any(c.name.startswith("JSESSIONID.") for c in s.cookies)
    stolen = s.headers["Jenkins-Crumb"]
    r = requests.post(url, data=xml, headers={**headers, "Jenkins-Crumb": stolen}, auth=auth)  # no cookie
    assert r.status_code == 403
    assert s.post(url, data=xml, headers=headers).status_code == 200

    pj = jenkins.Jenkins(emu.url, "admin", password=PASSWORD)
    pj.create_job("b", xml)
    pj.reconfig_job("b", job_xml(shell("true"), description="changed"))
    assert pj.crumb and "changed" in pj.get_job_config("b")


def test_api_token_posts_need_no_crumb(emu: JenkinsEmulator) -> None:
    """ApiCrumbExclusion (Jenkins >= 2.96): requests authenticated with an API token skip the crumb check."""
    r = requests.post(emu.url + "/createItem?name=t", data=job_xml(shell("true")),
                      headers={"Content-Type": "text/xml"}, auth=("admin", TOKEN))
    assert r.status_code == 200


def test_wrong_token_is_401_and_anonymous_is_403(emu: JenkinsEmulator, tmp_path: Path) -> None:
    """BasicHeaderProcessor answers wrong credentials with 401 + WWW-Authenticate Basic realm="Jenkins";
    HudsonAuthenticationEntryPoint answers anonymous requests without Overall/Read 403 "Authentication
    required" (X-Jenkins still advertised). python-jenkins turns both into JenkinsException."""
    with pytest.raises(jenkins.JenkinsException, match=r"\[401\]"):
        jenkins.Jenkins(emu.url, "admin", password="wrong").get_whoami()
    r = requests.get(emu.url + "/api/json", auth=("nobody", TOKEN))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="Jenkins"'
    r = requests.get(emu.url + "/api/json")
    assert r.status_code == 403 and "Authentication required" in r.text and r.headers["X-Jenkins"]
    with pytest.raises(jenkins.JenkinsException, match=r"\[403\]"):
        jenkins.Jenkins(emu.url).get_jobs()
    with JenkinsEmulator(tmp_path / "open", users={"admin": TOKEN}, anonymous_read=True) as open_jenkins:
        assert jenkins.Jenkins(open_jenkins.url).get_jobs() == []
        anon_post = requests.post(open_jenkins.url + "/createItem?name=x", data="<project/>",
                                  headers={"Content-Type": "text/xml"})
        assert anon_post.status_code == 403


def test_whoami_and_version(server: jenkins.Jenkins) -> None:
    """/me/api/json names the authenticated user; every response carries X-Jenkins: <version>."""
    assert server.get_whoami()["id"] == "admin"
    assert server.get_version().startswith("2.")


# ------------------------------------------------------------------------------ items
def test_create_existing_job_is_an_error(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """createItem of an existing name: Failure "A job already exists with the name \u2018x\u2019" -> 400 with X-Error
    (Jetty writes the curly quotes as '?'); python-jenkins checks first and raises JenkinsException."""
    server.create_job("dup", job_xml(shell("true")))
    with pytest.raises(jenkins.JenkinsException, match="already exists"):
        server.create_job("dup", job_xml(shell("true")))
    r = requests.post(emu.url + "/createItem?name=dup", data=job_xml(), headers={"Content-Type": "text/xml"},
                      auth=("admin", TOKEN))
    assert r.status_code == 400 and r.headers["X-Error"] == "A job already exists with the name ?dup?"
    r = requests.post(emu.url + "/createItem?name=a%3Ab", data=job_xml(), headers={"Content-Type": "text/xml"},
                      auth=("admin", TOKEN))
    assert r.status_code == 400 and "unsafe character" in r.headers["X-Error"]


def test_malformed_xml_is_rejected(server: jenkins.Jenkins) -> None:
    """createProjectFromXML: XMLUtils.safeTransform fails -> IOException "Failed to persist config.xml" -> 500,
    and the half-created item is removed; python-jenkins raises JenkinsException."""
    with pytest.raises(jenkins.JenkinsException, match=r"\[500\]"):
        server.create_job("broken", "<project><builders></project>")
    assert not server.job_exists("broken")
    server.create_job("ok", job_xml())
    with pytest.raises(jenkins.JenkinsException, match=r"\[500\]"):
        server.reconfig_job("ok", "<project")


def test_folder_and_nested_job(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """Folders (cloudbees-folder): create_folder posts ?mode=...Folder; jobs nest as /job/F/job/J, JOB_NAME is
    the full name, the workspace is $JENKINS_HOME/workspace/F/J; get_all_jobs recurses with tree=jobs[...]."""
    server.create_folder("team")
    assert server.is_folder("team")
    server.create_job("team/app", job_xml(shell('echo "name=$JOB_NAME base=$JOB_BASE_NAME ws=$WORKSPACE"')))
    names = {j["fullname"] for j in server.get_all_jobs()}
    assert names == {"team", "team/app"}
    assert server.get_job_info("team/app")["url"] == emu.url + "/job/team/job/app/"
    info = run(server, emu, "team/app")
    console = server.get_build_console_output("team/app", info["number"])
    assert f"name=team/app base=app ws={emu.root / 'workspace/team/app'}" in console
    folder_xml = ("<com.cloudbees.hudson.plugins.folder.Folder><description>d</description>"
                  "</com.cloudbees.hudson.plugins.folder.Folder>")
    server.create_job("team/sub", folder_xml)
    server.create_job("team/sub/deep", job_xml())
    assert server.job_exists("team/sub/deep")
    with pytest.raises(jenkins.JenkinsException, match="folder for the job does not exist"):
        server.create_job("nofolder/job", job_xml())


def test_reconfig_and_delete(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """POST config.xml replaces the configuration (GET returns it as XML 1.1, XmlFile's header);
    doDelete (POST) answers 302 to the parent and the job is gone."""
    server.create_job("app", job_xml(description="one"))
    server.reconfig_job("app", job_xml(description="two"))
    config = server.get_job_config("app")
    assert config.startswith("<?xml version='1.1'") and "<description>two</description>" in config
    assert server.get_job_info("app")["description"] == "two"
    server.delete_job("app")
    assert not server.job_exists("app")
    server.create_job("gone", job_xml())
    s = session_with_crumb(emu, ("admin", TOKEN))
    r = s.post(emu.url + "/job/gone/doDelete", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == emu.url + "/"


# ------------------------------------------------------------------------------ builds
def test_a_waiting_item_says_why_whenever_it_is_read() -> None:
    """Jenkins computes a waiting item's `why` at each request (WaitingItem.getCauseOfBlockage), so a
    client that reads the item right after queueing it, before Queue.maintain ran, still gets the quiet
    period left, never null; past it, "Finished waiting". Other states say what maintain decided."""
    item = QueueItem(1, "p", [], [], not_before=time.monotonic() + 3)
    assert (item.state, item.why) == ("waiting", None)  # as queued: maintain has not run yet
    assert item.why_now(item.not_before - 2.5) == "In the quiet period. Expires in 2.5 sec"
    assert item.why_now(item.not_before + 0.1) == "Finished waiting"
    item.state, item.why = "buildable", "Waiting for next available executor"
    assert item.why_now(time.monotonic()) == "Waiting for next available executor"


def test_a_new_item_says_why_before_the_queue_is_maintained(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """The same through the API: read between buildWithParameters and the next Queue.maintain (paused
    here), a new item already says why it waits; with no quiet period left, "Finished waiting"."""
    server.create_job("slow", job_xml(shell("true")))
    server.create_job("quick", job_xml(shell("true"), quiet_period=0))
    emu.state.quiet_period = 3.0
    emu.queue_paused.set()
    slow, quick = server.build_job("slow"), server.build_job("quick")
    time.sleep(0.05)
    assert server.get_queue_item(slow)["why"].startswith("In the quiet period. Expires in")
    assert server.get_queue_item(quick)["why"] == "Finished waiting"
    emu.queue_paused.clear()
    emu.wait_for_build("quick", queued_build_number(server, quick))


def test_build_with_parameters_through_the_queue(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """buildWithParameters: 201 + Location queue/item/N; the item shows `why` (quiet period) then
    `executable` {number, url}; the build sees its parameters (defaults for missing ones) and Jenkins' env."""
    emu.state.quiet_period = 3.0  # long enough to see the item wait on a loaded machine
    server.create_job("p", job_xml(
        shell('echo "greet=$GREETING who=$WHO n=$BUILD_NUMBER id=$BUILD_ID tag=$BUILD_TAG node=$NODE_NAME"\n'
              'echo "url=$BUILD_URL jurl=$JOB_URL jenkins=$JENKINS_URL exec=$EXECUTOR_NUMBER"'),
        params=(string_param("GREETING", "hello"), string_param("WHO", "world"))))
    queue_id = server.build_job("p", {"WHO": "bgci"})
    item = server.get_queue_item(queue_id)
    assert item["why"].startswith("In the quiet period. Expires in")
    assert item["task"]["name"] == "p"
    number = queued_build_number(server, queue_id)
    emu.wait_for_build("p", number)
    info = server.get_build_info("p", number)
    assert (info["number"], info["result"], info["building"]) == (1, "SUCCESS", False)
    assert info["url"] == emu.url + "/job/p/1/" and info["duration"] >= 0 and info["timestamp"] > 0
    params = {p["name"]: p["value"] for a in info["actions"] for p in a.get("parameters", [])}
    assert params == {"GREETING": "hello", "WHO": "bgci"}
    console = server.get_build_console_output("p", number)
    assert "greet=hello who=bgci n=1 id=1 tag=jenkins-p-1 node=built-in" in console
    assert f"url={emu.url}/job/p/1/ jurl={emu.url}/job/p/ jenkins={emu.url}/ exec=" in console
    assert console.startswith("Started by user admin") and console.rstrip().endswith("Finished: SUCCESS")
    job = server.get_job_info("p")
    assert job["lastBuild"]["number"] == 1 and job["nextBuildNumber"] == 2 and job["color"] == "blue"
    assert job["property"][0]["parameterDefinitions"][0]["defaultParameterValue"]["value"] == "hello"


def test_failing_shell_fails_the_build(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """Shell runs `sh -xe`: a failing command ends the step, the build is FAILURE and later builders are skipped."""
    server.create_job("f", job_xml(shell("echo before\nfalse\necho after-false"), shell("echo second-step")))
    info = run(server, emu, "f")
    console = server.get_build_console_output("f", info["number"])
    assert info["result"] == "FAILURE" and server.get_job_info("f")["color"] == "red"
    assert "+ false" in console and "after-false" not in console and "second-step" not in console
    assert "Build step 'Execute shell' marked build as failure" in console


def test_disabled_job_is_not_buildable(server: jenkins.Jenkins) -> None:
    """ParameterizedJobMixIn.doBuild: a disabled job answers 409 "<job> is not buildable"."""
    server.create_job("off", job_xml(disabled=True))
    with pytest.raises(requests.HTTPError) as err:
        server.build_job("off")
    assert err.value.response.status_code == 409
    assert server.get_job_info("off")["buildable"] is False
    server.enable_job("off")
    assert server.get_job_info("off")["buildable"] is True


JUNIT = """<testsuite name="s" tests="2"><testcase classname="t" name="ok"/>
<testcase classname="t" name="bad"><failure message="boom">trace</failure></testcase></testsuite>"""


def junit_publisher(pattern: str, allow_empty: bool = False) -> str:
    return (f"<hudson.tasks.junit.JUnitResultArchiver><testResults>{pattern}</testResults>"
            f"<allowEmptyResults>{str(allow_empty).lower()}</allowEmptyResults></hudson.tasks.junit.JUnitResultArchiver>")


def test_junit_failure_makes_build_unstable(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """JUnitResultArchiver: a report with a failing case turns SUCCESS into UNSTABLE; counts are in the
    TestResultAction (failCount/skipCount/totalCount) and in testReport/api/json."""
    server.create_job("ut", job_xml(shell(f"mkdir -p reports\ncat > reports/r.xml <<'EOF'\n{JUNIT}\nEOF"),
                                    publishers=junit_publisher("reports/*.xml")))
    info = run(server, emu, "ut")
    assert info["result"] == "UNSTABLE"
    action = next(a for a in info["actions"] if a.get("_class") == "hudson.tasks.junit.TestResultAction")
    assert (action["failCount"], action["skipCount"], action["totalCount"]) == (1, 0, 2)
    assert server.get_build_test_report("ut", info["number"])["failCount"] == 1
    assert server.get_job_info("ut")["color"] == "yellow"


def test_missing_junit_reports_fail_the_build(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """JUnitResultArchiver without allowEmptyResults: no report -> "No test report files were found.
    Configuration error?" and FAILURE; reports left from an earlier build are "not new" -> FAILURE too."""
    server.create_job("nr", job_xml(shell("true"), publishers=junit_publisher("reports/*.xml")))
    info = run(server, emu, "nr")
    assert info["result"] == "FAILURE"
    assert "No test report files were found. Configuration error?" in server.get_build_console_output("nr", 1)
    stale = emu.workspace("nr") / "reports/old.xml"
    stale.parent.mkdir(parents=True)
    stale.write_text(JUNIT)
    old = time.time() - 600
    os.utime(stale, (old, old))
    assert run(server, emu, "nr")["result"] == "FAILURE"
    assert "none of them are new" in server.get_build_console_output("nr", 2)
    server.create_job("ok-empty", job_xml(shell("true"), publishers=junit_publisher("x/*.xml", True)))
    assert run(server, emu, "ok-empty")["result"] == "SUCCESS"


def test_bound_credentials_are_masked(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """credentials-binding SecretBuildWrapper: bound variables are in the environment, their secret values
    appear as **** in the console (also in sh -x traces); a username is not secret by default."""
    b = "org.jenkinsci.plugins.credentialsbinding.impl."
    wrapper = (f"<{b}SecretBuildWrapper><bindings>"
               f"<{b}UsernamePasswordMultiBinding><credentialsId>registry</credentialsId>"
               "<usernameVariable>REG_USER</usernameVariable><passwordVariable>REG_PASS</passwordVariable>"
               f"</{b}UsernamePasswordMultiBinding>"
               f"<{b}StringBinding><credentialsId>api</credentialsId><variable>API_TOKEN</variable></{b}StringBinding>"
               f"</bindings></{b}SecretBuildWrapper>")
    server.create_job("cred", job_xml(shell(
        'echo "user=$REG_USER pass=$REG_PASS token=$API_TOKEN"\n'
        'test "$REG_PASS" = hunter2-pass && test "$API_TOKEN" = tok-XYZ-123 && echo values-ok'),
        wrappers=wrapper))
    info = run(server, emu, "cred")
    console = server.get_build_console_output("cred", info["number"])
    assert info["result"] == "SUCCESS" and "values-ok" in console
    assert "hunter2-pass" not in console and "tok-XYZ-123" not in console
    assert "user=deployer pass=**** token=****" in console

    server.create_job("nocred", job_xml(shell("true"), wrappers=wrapper.replace("registry", "missing")))
    assert run(server, emu, "nocred")["result"] == "FAILURE"


def test_downstream_trigger_hands_on_parameters(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """parameterized-trigger BuildTrigger: on SUCCESS the downstream job is queued with the predefined
    properties expanded from the upstream build's env, plus the current parameters; cause UpstreamCause."""
    p = "hudson.plugins.parameterizedtrigger."
    trigger = (f"<{p}BuildTrigger><configs><{p}BuildTriggerConfig><configs>"
               f"<{p}CurrentBuildParameters/>"
               f"<{p}PredefinedBuildParameters><properties>IMAGE=app:${{BUILD_NUMBER}}\nSOURCE=$JOB_NAME"
               f"</properties></{p}PredefinedBuildParameters>"
               f"<{p}FileBuildParameters><propertiesFile>out.properties</propertiesFile></{p}FileBuildParameters>"
               f"</configs><projects>deploy</projects><condition>SUCCESS</condition>"
               f"</{p}BuildTriggerConfig></configs></{p}BuildTrigger>")
    server.create_job("deploy", job_xml(shell('echo "deploying $IMAGE from $SOURCE env=$ENV sha=$SHA"'),
                                        params=(string_param("IMAGE"), string_param("SOURCE"),
                                                string_param("ENV", "blue"), string_param("SHA"))))
    server.create_job("build", job_xml(shell("echo SHA=abc123 > out.properties"), publishers=trigger,
                                       params=(string_param("ENV", "green"),)))
    assert run(server, emu, "build", {"ENV": "green"})["result"] == "SUCCESS"
    assert "Triggering a new build of deploy" in server.get_build_console_output("build", 1)
    down = emu.wait_for_build("deploy", 1)
    console = server.get_build_console_output("deploy", 1)
    assert down.result == "SUCCESS"
    assert "deploying app:1 from build env=green sha=abc123" in console
    assert 'Started by upstream project "build" build number 1' in console
    assert server.get_job_info("build")["downstreamProjects"][0]["name"] == "deploy"


def test_description_setter_and_rest_description(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """description-setter: the first console line matching the regexp sets the description (\\1 = group 1);
    a build may also set it itself via POST .../submitDescription (here curl with the API token)."""
    setter = ("<hudson.plugins.descriptionsetter.DescriptionSetterPublisher><regexp>^VERSION=(.*)$</regexp>"
              "<description>version \\1</description></hudson.plugins.descriptionsetter.DescriptionSetterPublisher>")
    server.create_job("ds", job_xml(shell("echo VERSION=1.2.3"), publishers=setter))
    info = run(server, emu, "ds")
    assert info["description"] == "version 1.2.3"
    assert "[description-setter] Description set: version 1.2.3" in server.get_build_console_output("ds", 1)

    server.create_job("self", job_xml(shell(
        f'curl -sf -u admin:{TOKEN} --data-urlencode "description=deployed to blue" "${{BUILD_URL}}submitDescription"'
    )))
    assert run(server, emu, "self")["description"] == "deployed to blue"
    s = session_with_crumb(emu, ("admin", PASSWORD))
    r = s.post(emu.url + "/job/self/1/submitDescription", data={"description": "edited"}, allow_redirects=False)
    assert r.status_code == 302 and server.get_build_info("self", 1)["description"] == "edited"


def test_stop_sends_sigterm_and_aborts(server: jenkins.Jenkins, emu: JenkinsEmulator) -> None:
    """Executor.interrupt + ProcessTree.killAll: stop (POST) sends SIGTERM to the build's processes (SIGKILL
    after a grace period); the result is ABORTED. progressiveText streams the console meanwhile."""
    server.create_job("long", job_xml(shell(
        "trap 'echo got-term > \"$WORKSPACE/terminated\"; exit 143' TERM\necho started\n"
        "sleep 30 &\nwait")))
    number = queued_build_number(server, server.build_job("long"))
    deadline = time.monotonic() + 10
    while "started" not in server.get_build_console_output("long", number):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = requests.get(f"{emu.url}/job/long/{number}/logText/progressiveText", params={"start": 0},
                     auth=("admin", TOKEN))
    assert r.headers["X-More-Data"] == "true" and int(r.headers["X-Text-Size"]) == len(r.content)
    assert server.get_build_info("long", number)["building"] is True
    server.stop_build("long", number)
    build = emu.wait_for_build("long", number, timeout=15)
    assert build.result == "ABORTED"
    assert (emu.workspace("long") / "terminated").read_text().strip() == "got-term"
    assert "Aborted by admin" in server.get_build_console_output("long", number)


def test_no_concurrent_builds_queue_up(server: jenkins.Jenkins, emu: JenkinsEmulator, tmp_path: Path) -> None:
    """concurrentBuild=false: a second build waits in the queue, why "Build #1 is already in progress";
    concurrentBuild=true runs both at once, the second in workspace@2 (WorkspaceList)."""
    gate = tmp_path / "gate"
    wait_gate = shell(f'while [ ! -e "{gate}" ]; do sleep 0.05; done\necho "ws=$WORKSPACE"')
    server.create_job("serial", job_xml(wait_gate, params=(string_param("N"),)))
    first = queued_build_number(server, server.build_job("serial", {"N": "1"}))
    second_q = server.build_job("serial", {"N": "2"})
    deadline = time.monotonic() + 5
    while not (server.get_queue_item(second_q).get("why") or "").startswith("Build #1 is already in progress"):
        assert time.monotonic() < deadline, server.get_queue_item(second_q)
        time.sleep(0.05)
    assert server.get_job_info("serial")["inQueue"] is True
    assert [i["id"] for i in server.get_queue_info()] == [second_q]
    gate.touch()
    second = queued_build_number(server, second_q)
    assert (first, second) == (1, 2)
    assert emu.wait_for_build("serial", 2).result == "SUCCESS"
    gate.unlink()

    server.create_job("par", job_xml(wait_gate, params=(string_param("N"),), concurrent=True))
    a = queued_build_number(server, server.build_job("par", {"N": "1"}))
    b = queued_build_number(server, server.build_job("par", {"N": "2"}))
    assert server.get_build_info("par", a)["building"] and server.get_build_info("par", b)["building"]
    gate.touch()
    emu.wait_for_build("par", a)
    emu.wait_for_build("par", b)
    assert f"ws={emu.workspace('par')}@2" in server.get_build_console_output("par", b)


def test_git_checkout_into_the_job_workspace(server: jenkins.Jenkins, emu: JenkinsEmulator, tmp_path: Path) -> None:
    """GitSCM: fetches into refs/remotes/origin/*, checks the branch (spec may use a build parameter) out
    detached in the job's workspace, sets GIT_COMMIT and GIT_BRANCH=origin/<branch>; the workspace persists."""
    repo = tmp_path / "repo"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "hello.txt").write_text("v1\n")
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "first"], check=True)
    subprocess.run(["git", "-C", str(repo), "branch", "feature"], check=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    scm = (f'<scm class="hudson.plugins.git.GitSCM"><configVersion>2</configVersion><userRemoteConfigs>'
           f"<hudson.plugins.git.UserRemoteConfig><url>file://{repo}</url></hudson.plugins.git.UserRemoteConfig>"
           "</userRemoteConfigs><branches><hudson.plugins.git.BranchSpec><name>*/${BRANCH}</name>"
           "</hudson.plugins.git.BranchSpec></branches></scm>")
    server.create_job("src", job_xml(shell('cat hello.txt\necho "commit=$GIT_COMMIT branch=$GIT_BRANCH"\n'
                                           "touch built-marker"),
                                     params=(string_param("BRANCH", "main"),), scm=scm))
    info = run(server, emu, "src", {"BRANCH": "feature"})
    console = server.get_build_console_output("src", info["number"])
    assert info["result"] == "SUCCESS", console
    assert f"commit={sha} branch=origin/feature" in console and "\nv1\n" in console
    assert (emu.workspace("src") / "built-marker").exists()
    assert run(server, emu, "src", {"BRANCH": "nope"})["result"] == "FAILURE"
    assert "Couldn't find any revision to build" in server.get_build_console_output("src", 2)
    assert (emu.workspace("src") / "built-marker").exists()


def test_identical_queued_request_is_absorbed(server: jenkins.Jenkins, emu: JenkinsEmulator, tmp_path: Path) -> None:
    """Queue.schedule2: while an item of the job with the same parameters waits, a new request joins it;
    buildWithParameters then answers 303 to that item (no Location for python-jenkins to read after the
    redirect, so it raises EmptyResponseException) -- different parameters queue a new item."""
    gate = tmp_path / "gate"
    server.create_job("q", job_xml(shell(f'while [ ! -e "{gate}" ]; do sleep 0.05; done'),
                                   params=(string_param("N"),)))
    queued_build_number(server, server.build_job("q", {"N": "1"}))
    waiting = server.build_job("q", {"N": "2"})
    r = requests.post(emu.url + "/job/q/buildWithParameters", params={"N": "2"}, auth=("admin", TOKEN),
                      allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == f"{emu.url}/queue/item/{waiting}/"
    with pytest.raises(jenkins.EmptyResponseException):
        server.build_job("q", {"N": "2"})
    assert server.build_job("q", {"N": "3"}) != waiting
    gate.touch()
    emu.wait_for_build("q", 3)
    assert sorted(server.get_job_info("q")["builds"], key=lambda b: b["number"])[-1]["number"] == 3
