"""The one part of the Jenkins emulator that touches the OS: it runs a freestyle build.

Order and console lines follow Jenkins (AbstractBuild.AbstractBuildExecution): SCM checkout,
build wrappers (credentials binding), builders (``sh -xe`` scripts), the run-away process kill,
then publishers, recorders before notifiers (JUnit, Description Setter, then the parameterized
trigger), and ``Finished: RESULT``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model import TRIGGER_CONDITIONS, Build, Item, expand, parse_properties, worse

if TYPE_CHECKING:
    from . import JenkinsEmulator

MASK = "****"
JUNIT_STEP = "Publish JUnit test result report"


class _Abort(Exception):
    pass


class BuildRunner:
    def __init__(self, emulator: JenkinsEmulator):
        self.emu = emulator
        self.state = emulator.state
        self._procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self._masks: dict[tuple[str, int], list[str]] = {}

    # ------------------------------------------------------------------------------- console
    def log(self, build: Build, text: str) -> None:
        for secret in sorted(self._masks.get((build.job, build.number), []), key=len, reverse=True):
            text = text.replace(secret, MASK)
        with self.state.lock:
            build.console += text.encode("utf-8", "replace")

    # ------------------------------------------------------------------------------- one build
    def run(self, build: Build) -> None:
        with self.state.lock:
            job = self.state.get(build.job)
        result: str | None = None
        try:
            if job is None:
                raise _Abort
            for cause in build.causes:
                self.log(build, cause["shortDescription"] + "\n")
            ws = Path(f"{self.emu.workspace(job.full_name)}{build.workspace_suffix}")
            ws.mkdir(parents=True, exist_ok=True)
            self.log(build, f"Building in workspace {ws}\n")
            for what in job.config.not_emulated:
                self.log(build, f"WARNING: the Jenkins emulator does not run {what}\n")
            env = self._environment(job, build, ws)
            result = self._perform(job, build, ws, env)
        except _Abort:
            result = "ABORTED"
        except Exception as exc:  # a bug or an OS error: Jenkins' "FATAL" with FAILURE
            self.log(build, f"FATAL: {exc!r}\n")
            result = "FAILURE"
        if build.abort_by is not None:
            result = "ABORTED"
            self.log(build, f"Aborted by {build.abort_by}\n")
        self.log(build, f"Finished: {result}\n")
        with self.state.lock:
            build.result = result
            build.duration = int(time.time() * 1000) - build.timestamp
            build.building = False
            self._masks.pop((build.job, build.number), None)
            self.state.changed.notify_all()

    def _environment(self, job: Item, build: Build, ws: Path) -> dict[str, str]:
        url = self.emu.url + "/"
        job_url = url + "".join(f"job/{p}/" for p in job.full_name.split("/"))
        env = dict(os.environ)
        cookie = uuid.uuid4().hex
        env.update({
            "BUILD_NUMBER": str(build.number), "BUILD_ID": str(build.number),
            "BUILD_DISPLAY_NAME": f"#{build.number}", "JOB_NAME": job.full_name, "JOB_BASE_NAME": job.name,
            "JOB_URL": job_url, "BUILD_URL": f"{job_url}{build.number}/", "JENKINS_URL": url, "HUDSON_URL": url,
            "BUILD_TAG": f"jenkins-{job.full_name.replace('/', '-')}-{build.number}",
            "NODE_NAME": "built-in", "NODE_LABELS": "built-in", "EXECUTOR_NUMBER": str(build.executor),
            "WORKSPACE": str(ws), "WORKSPACE_TMP": f"{ws}@tmp", "JENKINS_HOME": str(self.emu.root),
            "JENKINS_NODE_COOKIE": cookie, "JENKINS_SERVER_COOKIE": cookie,
        })
        env.update(build.param_dict)
        build.env = env
        return env

    def _perform(self, job: Item, build: Build, ws: Path, env: dict[str, str]) -> str:
        result: str | None = None
        cfg = job.config
        if cfg.git_url and not self._checkout(job, build, ws, env):
            result = "FAILURE"
        if result is None and cfg.bindings and not self._bind(build, cfg.bindings, env):
            result = "FAILURE"
        if result is None:
            for step in cfg.shells:
                code = self._shell(job, build, ws, env, step.command)
                if build.abort_by is not None:
                    raise _Abort
                if code == 0:
                    continue
                if step.unstable_return is not None and code == step.unstable_return:
                    result = worse(result, "UNSTABLE")
                    self.log(build, "Build step 'Execute shell' marked build as unstable\n")
                    continue
                self.log(build, "Build step 'Execute shell' marked build as failure\n")
                result = "FAILURE"
                break
        self.kill_cookie(env["JENKINS_NODE_COOKIE"], signal.SIGTERM)
        if build.abort_by is not None:
            raise _Abort
        if cfg.junit is not None:
            result = self._junit(build, ws, cfg.junit, result)
        if cfg.description_setter is not None:
            self._describe(build, cfg.description_setter, env, result)
        if cfg.triggers:
            self._trigger(job, build, ws, env, result or "SUCCESS")
        return result or "SUCCESS"

    # ------------------------------------------------------------------------------------- git
    def _git(self, build: Build, ws: Path, *args: str, log: bool = True) -> str:
        if log:
            self.log(build, f" > git {' '.join(args)} # timeout=10\n")
        proc = subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"Command \"git {' '.join(args)}\" returned status code {proc.returncode}:\n"
                               f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc.stdout.strip()

    def _checkout(self, job: Item, build: Build, ws: Path, env: dict[str, str]) -> bool:
        """GitSCM.checkout: fetch every branch into refs/remotes/origin, check out the revision detached."""
        url = expand(job.config.git_url or "", env)
        self.log(build, "The recommended git tool is: NONE\n")
        try:
            if not (ws / ".git").exists():
                self.log(build, f"Cloning the remote Git repository\nCloning repository {url}\n")
                self._git(build, ws, "init", str(ws))
            self.log(build, f"Fetching upstream changes from {url}\n")
            self._git(build, ws, "fetch", "--tags", "--force", "--progress", "--", url,
                      "+refs/heads/*:refs/remotes/origin/*")
            self._git(build, ws, "config", "remote.origin.url", url)
        except RuntimeError as exc:
            self.log(build, f"ERROR: Error fetching remote repo 'origin'\n{exc}\n")
            return False
        found = None
        for spec in job.config.git_branches:
            found = self._resolve(build, ws, expand(spec, env))
            if found:
                break
        if not found:
            self.log(build, "ERROR: Couldn't find any revision to build. "
                            "Verify the repository and branch configuration for this job.\n")
            return False
        sha, branch = found
        self.log(build, f"Checking out Revision {sha} ({branch})\n")
        self._git(build, ws, "checkout", "-f", sha)
        message = self._git(build, ws, "log", "-1", "--format=%s", sha, log=False)
        self.log(build, f"Commit message: \"{message}\"\n")
        previous = [b.env.get("GIT_COMMIT") for n, b in sorted(job.builds.items()) if n < build.number]
        env.update({"GIT_COMMIT": sha, "GIT_BRANCH": branch, "GIT_URL": url})
        if previous and previous[-1]:
            env["GIT_PREVIOUS_COMMIT"] = previous[-1]
        with self.state.lock:
            build.actions.append({
                "_class": "hudson.plugins.git.util.BuildData",
                "lastBuiltRevision": {"SHA1": sha, "branch": [{"SHA1": sha, "name": branch}]},
                "remoteUrls": [url], "scmName": "",
            })
        return True

    def _resolve(self, build: Build, ws: Path, spec: str) -> tuple[str, str] | None:
        """BranchSpec matching, the common forms: */x, x, origin/x, refs/heads/x, refs/tags/x, a SHA, globs."""
        refs = self._git(build, ws, "for-each-ref", "--format=%(refname)", "refs/remotes/origin", "refs/tags",
                         log=False).splitlines()
        branches = [r.removeprefix("refs/remotes/") for r in refs if r.startswith("refs/remotes/origin/")]
        if spec.startswith("refs/tags/") and spec in refs:
            return self._git(build, ws, "rev-parse", spec + "^{commit}", log=False), spec
        name = spec.removeprefix("refs/heads/")
        pattern = name if name.startswith(("*/", "origin/", "**")) else "origin/" + name
        pattern = "origin/" + pattern[2:] if pattern.startswith("*/") else pattern
        matches = [b for b in branches if b == pattern or (any(c in pattern for c in "*?[") and
                                                            fnmatch.fnmatchcase(b, pattern.replace("**", "*")))]
        if matches:
            branch = matches[0]
            return self._git(build, ws, "rev-parse", f"refs/remotes/{branch}^{{commit}}", log=False), branch
        if re.fullmatch(r"[0-9a-f]{7,40}", spec):
            with contextlib.suppress(RuntimeError):
                return self._git(build, ws, "rev-parse", "--verify", spec + "^{commit}", log=False), "detached"
        return None

    # ----------------------------------------------------------------------------- credentials
    def _bind(self, build: Build, bindings: list[Any], env: dict[str, str]) -> bool:
        """SecretBuildWrapper: each binding sets its variables; the secrets are masked from now on."""
        masks = self._masks.setdefault((build.job, build.number), [])
        for b in bindings:
            cred = self.emu.credentials.get(b.credentials_id)
            if cred is None:
                self.log(build, f"ERROR: Could not find credentials entry with ID '{b.credentials_id}'\n")
                return False
            if b.kind == "StringBinding":
                if not isinstance(cred, str):
                    self.log(build, f"ERROR: Credentials '{b.credentials_id}' is of type 'Username with password' "
                                    "where 'Secret text' was expected\n")
                    return False
                env[b.variables["variable"]] = cred
                masks.append(cred)
                continue
            if isinstance(cred, str):
                self.log(build, f"ERROR: Credentials '{b.credentials_id}' is of type 'Secret text' where "
                                "'Username with password' was expected\n")
                return False
            user, password, user_secret = cred
            if b.kind == "UsernamePasswordBinding":
                env[b.variables["variable"]] = f"{user}:{password}"
                masks.append(f"{user}:{password}")
            else:
                env[b.variables["username"]] = user
                env[b.variables["password"]] = password
            masks.append(password)
            if user_secret:
                masks.append(user)
        masks[:] = [m for m in masks if m]
        return True

    # ----------------------------------------------------------------------------------- shell
    def _shell(self, job: Item, build: Build, ws: Path, env: dict[str, str], command: str) -> int:
        """hudson.tasks.Shell: the script in a temp file under WORKSPACE_TMP, run with sh -xe in the workspace."""
        tmp = Path(f"{ws}@tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        fd, script = tempfile.mkstemp(prefix="jenkins", suffix=".sh", dir=tmp)
        with os.fdopen(fd, "w") as f:
            f.write(command.replace("\r\n", "\n"))
        if command.startswith("#!"):
            argv = [*command[2:command.find("\n") if "\n" in command else None].split(), script]
        else:
            argv = ["/bin/sh", "-xe", script]
        self.log(build, f"[{job.name}] $ {' '.join(argv)}\n")
        try:
            proc = subprocess.Popen(argv, cwd=ws, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            with self.state.lock:
                self._procs[(build.job, build.number)] = proc
                if build.abort_by is not None:
                    self._terminate(proc, env["JENKINS_NODE_COOKIE"])
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                self.log(build, line.decode("utf-8", "replace"))
            return proc.wait()
        finally:
            with self.state.lock:
                self._procs.pop((build.job, build.number), None)
            with contextlib.suppress(OSError):
                os.unlink(script)

    def abort(self, build: Build, user: str) -> None:
        """Executor.interrupt(ABORTED): the running step's processes get SIGTERM, SIGKILL after a grace."""
        with self.state.lock:
            if not build.building or build.abort_by is not None:
                return
            build.abort_by = user
            proc = self._procs.get((build.job, build.number))
            cookie = build.env.get("JENKINS_NODE_COOKIE", "")
        if proc is not None:
            self._terminate(proc, cookie)

    def _terminate(self, proc: subprocess.Popen[bytes], cookie: str) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
        self.kill_cookie(cookie, signal.SIGTERM)

        def hard_kill() -> None:
            # ProcessTree.killAll signals each process and gives each the soft-kill wait (5 s) to go:
            # the step's shell may be gone at once while a child (bgci) still cleans up.
            deadline = time.monotonic() + self.emu.kill_grace
            while time.monotonic() < deadline and (proc.poll() is None or _group_alive(proc.pid)):
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            self.kill_cookie(cookie, signal.SIGKILL)
        threading.Thread(target=hard_kill, daemon=True).start()

    @staticmethod
    def kill_cookie(cookie: str, sig: int) -> list[int]:
        """ProcessTree.killAll: every process whose environment still carries this build's cookie."""
        if not cookie:
            return []
        needle = f"JENKINS_NODE_COOKIE={cookie}".encode()
        killed = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), sig)
                    killed.append(int(entry.name))
            except OSError:
                continue
        return killed

    # ------------------------------------------------------------------------------ publishers
    def _junit(self, build: Build, ws: Path, junit: tuple[str, bool], result: str | None) -> str | None:
        """JUnitResultArchiver: reports must exist and be new; failures make the build UNSTABLE."""
        pattern, allow_empty = junit
        self.log(build, "Recording test results\n")
        files = sorted({p for pat in pattern.split(",") if pat.strip() for p in ws.glob(pat.strip()) if p.is_file()})
        fresh = [p for p in files if p.stat().st_mtime * 1000 >= build.timestamp - 3000]

        def fail(message: str) -> str:
            self.log(build, f"ERROR: Step \u2018{JUNIT_STEP}\u2019 failed: {message}\n")
            return worse(result, "FAILURE")
        if not files:
            return result if allow_empty else fail("No test report files were found. Configuration error?")
        if not fresh:
            age = int(time.time() - files[0].stat().st_mtime)
            return fail(f"Test reports were found but none of them are new. Did leafNodes run? \n"
                        f"For example, {files[0]} is {age} sec old\n")
        cases: list[dict[str, Any]] = []
        for f in fresh:
            try:
                root = ET.parse(f).getroot()
            except ET.ParseError as exc:
                return fail(f"Failed to read test report file {f}\n{exc}")
            for tc in root.iter("testcase"):
                status = ("FAILED" if tc.find("failure") is not None or tc.find("error") is not None
                          else "SKIPPED" if tc.find("skipped") is not None else "PASSED")
                cases.append({"className": tc.get("classname", ""), "name": tc.get("name", ""), "status": status,
                              "duration": float(tc.get("time") or 0)})
        if not cases and not allow_empty:
            return fail("None of the test reports contained any result")
        failed = sum(c["status"] == "FAILED" for c in cases)
        skipped = sum(c["status"] == "SKIPPED" for c in cases)
        with self.state.lock:
            build.actions.append({"_class": "hudson.tasks.junit.TestResultAction", "failCount": failed,
                                  "skipCount": skipped, "totalCount": len(cases), "urlName": "testReport"})
            build.test_report = {"_class": "hudson.tasks.junit.TestResult", "empty": not cases,
                                 "failCount": failed, "passCount": len(cases) - failed - skipped,
                                 "skipCount": skipped, "suites": [{"cases": cases}]}
        if failed and worse(result, "UNSTABLE") != result:
            self.log(build, f"Build step '{JUNIT_STEP}' changed build result to UNSTABLE\n")
            return "UNSTABLE"
        return result

    def _describe(self, build: Build, ds: Any, env: dict[str, str], result: str | None) -> None:
        """DescriptionSetterPublisher: the first console line the regexp finds; \\1.. in the description."""
        failed = result is not None and result != "SUCCESS" and bool(ds.regexp_for_failed or ds.description_for_failed)
        regexp = ds.regexp_for_failed if failed else ds.regexp
        template = ds.description_for_failed if failed else ds.description
        description = None
        if regexp:
            with self.state.lock:
                lines = build.console.decode("utf-8", "replace").splitlines()
            for line in lines:
                m = re.search(regexp, line)
                if m:
                    if template:
                        description = re.sub(r"\\(\d)", lambda g, m=m: m.group(int(g.group(1))) or "", template)
                    else:
                        description = m.group(1) if m.groups() else m.group(0)
                    break
        elif template:
            description = template
        if description is None:
            self.log(build, "[description-setter] Could not determine description.\n")
            return
        description = expand(description, env)
        self.log(build, f"[description-setter] Description set: {description}\n")
        with self.state.lock:
            build.description = description

    def _trigger(self, job: Item, build: Build, ws: Path, env: dict[str, str], result: str) -> None:
        """parameterized-trigger BuildTrigger: per config whose condition holds, schedule each project."""
        for cfg in job.config.triggers:
            if not TRIGGER_CONDITIONS.get(cfg.condition, TRIGGER_CONDITIONS["SUCCESS"])(result):
                continue
            params: dict[str, str] = {}
            if cfg.current_parameters:
                params.update(build.param_dict)
            if cfg.predefined is not None:
                params.update(parse_properties(expand(cfg.predefined, env)))
            missing = False
            for name in cfg.properties_files:
                path = ws / expand(name, env)
                if path.is_file():
                    params.update(parse_properties(expand(path.read_text(), env)))
                else:
                    self.log(build, f"Properties file {name} did not exist.\n")
                    missing = True
            if missing and cfg.fail_trigger_on_missing:
                self.log(build, "Could not trigger downstream project, as properties file "
                                f"{cfg.properties_files} did not exist.\n")
                continue
            for project in cfg.projects:
                target = self.emu.resolve_relative(expand(project, env), job)
                if target is None:
                    self.log(build, f"No such project \u2018{project}\u2019\n")
                    continue
                self.log(build, f"Triggering a new build of {target.full_name}\n")
                self.emu.schedule(target, params, [{
                    "_class": "hudson.model.Cause$UpstreamCause",
                    "shortDescription": f'Started by upstream project "{job.full_name}" build number {build.number}',
                    "upstreamBuild": build.number, "upstreamProject": job.full_name,
                    "upstreamUrl": "".join(f"job/{p}/" for p in job.full_name.split("/")),
                }])


def _group_alive(pgid: int) -> bool:
    """Does any process of this process group still run?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
