"""A Jenkins emulator that serves python-jenkins' REST calls and really runs freestyle jobs.

Test support for bgci's Jenkins side: never imported by the ``bgci`` package. Split as the other
emulators are: ``model`` (pure state: configs, items, builds, queue), ``routes`` (the HTTP filter
chain and route table) and ``runner`` (the one part that runs git and ``sh`` on this machine).

Usage::

    with JenkinsEmulator(tmp_path, users={"admin": "api-token"}) as jenkins:
        server = jenkins_client.Jenkins(jenkins.url, "admin", password="api-token")
        server.create_job("app", config_xml)
        queue_id = server.build_job("app", {"BRANCH": "main"})

What is emulated, and where Jenkins' behaviour was reproduced from, is listed in ``DECISIONS``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.emulators.http import AbortableServer

from .model import Build, Item, JenkinsState, QueueItem
from .routes import RequestHandler, Routes
from .runner import BuildRunner

__all__ = ["DECISIONS", "JenkinsEmulator"]

Credential = str | tuple[str, str] | tuple[str, str, bool] | Mapping[str, Any]


class JenkinsEmulator:
    """One Jenkins controller with a built-in node of ``executors`` executors, rooted at ``root``.

    users: user -> API token (API-token requests need no crumb, as in Jenkins >= 2.96).
    passwords: user -> password (password requests need the crumb, bound to the session cookie).
    credentials: id -> secret text (str), or (username, password[, username_is_secret]).
    quiet_period: seconds a new queue item waits (Jenkins' default is 5; tests want 0).
    kill_grace: seconds between SIGTERM and SIGKILL when a build is stopped (Jenkins: 5).
    """

    def __init__(self, root: Path | str, *, users: Mapping[str, str] | None = None,
                 passwords: Mapping[str, str] | None = None, credentials: Mapping[str, Credential] | None = None,
                 anonymous_read: bool = False, executors: int = 2, quiet_period: float = 0,
                 kill_grace: float = 5.0, version: str = "2.462.3", host: str = "127.0.0.1"):
        self.root = Path(root)
        self.users = dict(users if users is not None else {"admin": "admin-api-token"})
        self.passwords = dict(passwords or {})
        self.credentials = {k: _credential(v) for k, v in (credentials or {}).items()}
        self.anonymous_read = anonymous_read
        self.kill_grace = kill_grace
        self.version = version
        self.host = host
        self.url = ""
        self.state = JenkinsState(executors, quiet_period)  # type: ignore[arg-type]
        self.runner = BuildRunner(self)
        self.routes = Routes(self)
        self._server: AbortableServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.queue_paused = threading.Event()  # set: Queue.maintain waits (a test reads the queue before it runs)

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> JenkinsEmulator:
        self.root.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        handler = type("JenkinsHandler", (RequestHandler,), {"routes": self.routes})
        self._server = AbortableServer((self.host, 0), handler)
        self.url = f"http://{self.host}:{self._server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                             name="jenkins-emu-http", daemon=True),
            threading.Thread(target=self._schedule_loop, name="jenkins-emu-queue", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop serving; running builds are aborted (their processes killed) and waited for."""
        self._stopping.set()
        with self.state.lock:
            self.state.changed.notify_all()
            running = [b for it in self.state.all_items() for b in it.running()]
        grace, self.kill_grace = self.kill_grace, min(self.kill_grace, 1.0)
        for b in running:
            self.runner.abort(b, "SYSTEM")
        deadline = time.monotonic() + 10
        with self.state.lock:
            while any(b.building for b in running) and time.monotonic() < deadline:
                self.state.changed.wait(0.1)
        self.kill_grace = grace
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.abort_connections()
            self._server = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    def __enter__(self) -> JenkinsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _schedule_loop(self) -> None:
        """Queue.maintain, whenever the queue or a build changes (and every 50 ms for quiet periods)."""
        while not self._stopping.is_set():
            if self.queue_paused.is_set():
                self._stopping.wait(0.01)
                continue
            with self.state.lock:
                started = self.state.dispatch(time.monotonic())
                if not started:
                    self.state.changed.wait(0.05)
            for build in started:
                threading.Thread(target=self.runner.run, args=(build,), daemon=True,
                                 name=f"jenkins-emu-{build.job}#{build.number}").start()

    # ---------------------------------------------------------------------------- operations
    def workspace(self, full_name: str) -> Path:
        """${JENKINS_HOME}/workspace/${ITEM_FULL_NAME}, the default workspace of the built-in node."""
        return self.root / "workspace" / full_name

    def schedule(self, job: Item, raw: Mapping[str, str] | None, causes: list[dict[str, Any]],
                 delay: float | None = None) -> tuple[QueueItem, bool]:
        """Queue a build; parameters the job does not define are dropped (SECURITY-170), missing ones defaulted."""
        params = [(p.name, p.value((raw or {}).get(p.name)), p.value_class) for p in job.config.params]
        with self.state.lock:
            return self.state.schedule(job, params, causes, delay)

    def resolve_relative(self, name: str, context: Item | None) -> Item | None:
        """Jenkins.getItem(name, context): absolute with a leading '/', else beside context, else from root."""
        name = name.strip()
        with self.state.lock:
            if name.startswith("/"):
                return self.state.get(name.strip("/"))
            if context is not None and context.parent_name:
                parts = context.parent_name.split("/")
                for part in name.split("/"):
                    if part == "..":
                        parts = parts[:-1]
                    elif part not in ("", "."):
                        parts.append(part)
                found = self.state.get("/".join(parts))
                if found is not None:
                    return found
            return self.state.get(name)

    # ------------------------------------------------------------------------- test helpers
    def build_record(self, job: str, number: int) -> Build | None:
        with self.state.lock:
            item = self.state.get(job)
            return item.builds.get(number) if item else None

    def wait_for_build(self, job: str, number: int, timeout: float = 30) -> Build:
        """Block until that build exists and has finished; its record (result, console, ...)."""
        deadline = time.monotonic() + timeout
        with self.state.lock:
            while True:
                build = self.build_record(job, number)
                if build is not None and not build.building:
                    return build
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{job} #{number} did not finish within {timeout}s")
                self.state.changed.wait(0.1)


def _credential(value: Credential) -> str | tuple[str, str, bool]:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return (value["username"], value["password"], bool(value.get("username_secret", False)))
    if len(value) == 2:
        return (value[0], value[1], False)
    return (value[0], value[1], bool(value[2]))  # type: ignore[misc]


DECISIONS = """
What the emulator reproduces, and from where (jenkinsci/jenkins core source unless named):

* Auth (SecurityRealm/BasicHeaderProcessor): wrong user/token/password -> 401 with WWW-Authenticate
  Basic realm="Jenkins", never a fallback to anonymous. No credentials and anonymous_read=False -> 403
  "Authentication required" (HudsonAuthenticationEntryPoint), X-Jenkins still sent.
* CSRF (CrumbFilter, DefaultCrumbIssuer): a crumb is a digest of user name + session id; the crumb issuer
  creates the session (Set-Cookie JSESSIONID.<node>). A POST without the crumb of that user and that session
  -> 403 "No valid crumb was included in the request". API-token requests skip the check (ApiCrumbExclusion);
  passwords do not.
* createItem (ItemGroupMixIn.createTopLevelItem): no Content-Type -> 400; name exists -> 400 with
  X-Error "A job already exists with the name \u2018x\u2019" (Jetty sends '?' for the quotes, as real Jenkins does);
  bad names -> 400 (checkGoodName); XML -> 200; ?mode=<Folder or FreeStyleProject class> -> 302 to
  .../configure (python-jenkins' create_folder). Malformed XML -> 500 "Failed to persist config.xml"
  (XMLUtils.safeTransform's exception is not a Failure: Jenkins answers 500, not 400).
  POST config.xml: malformed -> 500 "Failed to process config.xml"; another item type -> 500 "Expecting ...".
* GET config.xml is re-declared as XML 1.1 (XmlFile); the body is what was posted.
* build (ParameterizedJobMixIn): disabled -> 409 "x is not buildable"; buildWithParameters on a job without
  parameters -> 400 "x is not parameterized"; /build on a parameterized job needs the form's json (else 400).
  201 + Location <url>/queue/item/N/. Queue.schedule2: an item of the same job with the same parameters still
  in the queue absorbs a new request (buildWithParameters then answers 303 to it, /build 201).
* Queue: why = "In the quiet period. Expires in 4.9 sec", "Build #N is already in progress (ETA: ...)"
  (BlockedBecauseOfBuildInProgress) when concurrentBuild is false, "Waiting for next available executor".
  LeftItem has executable {number, url}; cancelItem -> 204, 404 once left. Left items are kept forever
  (Jenkins forgets them after 5 minutes).
* Concurrent builds of one job use workspace, workspace@2, ... (WorkspaceList); the script file lives in
  <workspace>@tmp (CommandInterpreter), run as "/bin/sh -xe <file>" (Shell) in its own session.
* Stop (Executor.interrupt + ProcessTree.killAll): SIGTERM to the step's process group and to every process
  whose environment has the build's JENKINS_NODE_COOKIE, SIGKILL after kill_grace (SoftKillWaitSeconds=5).
  When the builders end, left-over processes with the cookie get SIGTERM too (the "run-away process" kill);
  overriding JENKINS_NODE_COOKIE escapes it, as in Jenkins.
* Plugins, from their documented behaviour (no source here): git (fetch into refs/remotes/origin/*, detached
  checkout, GIT_COMMIT, GIT_BRANCH=origin/<b>, GIT_URL, GIT_PREVIOUS_COMMIT, BuildData action; branch specs
  expand build parameters), credentials-binding (secret text, username/password; secrets masked "****",
  usernames only when marked secret), junit (reports older than the build start - 3 s are "not new";
  none -> FAILURE unless allowEmptyResults; failures -> UNSTABLE), description-setter (first console line
  the regexp finds, \\1 in the description, "...ForFailed" variants for non-SUCCESS), parameterized-trigger
  (conditions, CurrentBuildParameters, PredefinedBuildParameters expanded with the build env,
  FileBuildParameters, projects relative to the upstream's folder; UpstreamCause).
* Publishers run in Jenkins' order: recorders (JUnit, description setter) before notifiers (trigger).
* Not emulated: pipelines, other builders/publishers/SCMs (accepted and stored, the console says
  "WARNING: the Jenkins emulator does not run ..."), timer/SCM triggers (stored, never fired), views,
  nodes, artifacts, permissions finer than "anonymous vs. logged in" (logged-in users may do anything).
"""
