"""The nginx router: render the config (pure), then change it the safe way (I/O at the edge).

Layout, under ``[nginx] dir`` (all owned by bgci)::

    bgci.conf            include this from the http {} block of a system nginx
    live.conf            upstream + server block of ``server_name``: the live environment
    previews/<env>.conf  upstream + server block of ``<env>.<preview_domain>``
    conf.d/*.conf        yours: extra http-level directives (embedded mode includes them)
    nginx.conf, run/, logs/, tmp/   the embedded nginx (``bgci router start``)

Every change is one transaction (:meth:`NginxRouter.apply`): write the new file
next to the old one, ``nginx -t`` the whole config, rename it into place (atomic),
reload gracefully (SIGHUP: old workers finish their requests), verify through
nginx that the name answers as expected once no worker of the old configuration
accepts connections, and on any failure put the previous bytes back, reload
again and wait until nginx answers as before. In embedded mode the test runs before the rename,
on a staged copy of the whole config (same main file, same user includes). A
system nginx can only be tested on its real paths, so there the rename comes
first and a failed test restores the old file before anything reloads.

Nothing a scheduler reports reaches the config text unchecked: hosts must be IP
addresses or DNS names, ports integers, environment names DNS labels.

Keep-alive and reloads (tests/test_zero_downtime.py, benchmarks/switch.py): on a
graceful reload the old workers close their idle keep-alive connections at once,
and those with a request in flight right after answering it. Either way the next
request a client sends on such a connection gets no answer. Measured with 8
keep-alive connections: about 1-2 per reload with the sample app (answers in
~1 ms); every connection, once per reload, with a backend that takes ~40 ms.
`lingering_close always` and a shorter `worker_shutdown_timeout` change nothing
(they concern requests being read and long requests); only `keepalive_timeout 0`
avoids it, by giving up keep-alive. So clients retry an idempotent request once
on a new connection in exactly that case (RFC 9110 9.2.2), as browsers do. New
connections and requests in flight are never lost: the listening socket stays
open across the reload, old workers finish what they started, and
`proxy_next_upstream` moves a request off an instance that refuses it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import requests

from bgci.config import ENV_NAME_PATTERN
from bgci.errors import (
    ConfigError,
    NginxConfigInvalid,
    NginxNotRunning,
    RouterError,
    UnsafeUpstream,
    VerificationFailed,
)
from bgci.probe import direct_session

if TYPE_CHECKING:
    from bgci.config import NginxSettings, Settings
    from bgci.schedulers.base import Environment

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)
LISTEN = re.compile(r"^(?:(?P<host>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]|\*|localhost):)?(?P<port>\d{1,5})$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@=,-]*$")  # no quotes, spaces, ; { } $ or newlines in include paths
# A name spelling an nginx directive is refused too: no real scheduler reports one, and
# refusing it keeps the rule simple to state.
DIRECTIVE_WORDS = {"include", "server", "upstream", "location", "return"}
SYSTEM_SETTLE = 0.25  # seconds a system nginx's answers must stay right after a reload (see SystemNginx.settled)

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("bgci", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,  # nginx config, not HTML: every value is validated instead
)


# -- validated inputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    """The nginx settings that reach the config text, each checked once."""

    app: str
    listen: str
    server_name: str
    preview_domain: str
    env_header: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Site:
        n = settings.nginx
        listen_address(n.listen)
        for key, value in (("server_name", n.server_name), ("preview_domain", n.preview_domain)):
            if not HOSTNAME.match(value) or len(value) > 253:
                raise ConfigError(f"nginx.{key}: {value!r} is not a host name")
        return cls(app=settings.app, listen=n.listen, server_name=n.server_name.lower(),
                   preview_domain=n.preview_domain.lower(), env_header=n.env_header)

    def preview_host(self, env: str) -> str:
        return f"{env}.{self.preview_domain}"

    def upstream_name(self, env: str | None) -> str:
        """A name unique per app in a shared nginx: live, or one per preview."""
        app = re.sub(r"[^a-z0-9]", "_", self.app)
        return f"bgci_{app}_live" if env is None else f"bgci_{app}_preview_{env.replace('-', '_')}"


@dataclass(frozen=True)
class Upstream:
    """An environment as nginx sees it: its name, sha and validated `host:port` servers."""

    env: str
    sha: str
    servers: tuple[str, ...]


def listen_address(listen: str) -> tuple[str, int]:
    """(host to connect to, port) for a `listen` value; ConfigError if it is not a plain address."""
    match = LISTEN.match(listen)
    port = int(match["port"]) if match else 0
    if not match or not 1 <= port <= 65535:
        raise ConfigError(f"nginx.listen: {listen!r} is not ADDRESS:PORT or PORT")
    host = match["host"] or "127.0.0.1"
    if host in ("*", "0.0.0.0"):
        host = "127.0.0.1"  # listening everywhere: reach it on loopback
    elif host == "[::]":
        host = "[::1]"
    elif not host.startswith("[") and host != "localhost":
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"nginx.listen: {listen!r} has an invalid address") from None
    return host, port


def validate_address(host: object, port: object) -> str:
    """`host:port` safe to write into an upstream block, or UnsafeUpstream naming what is wrong."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UnsafeUpstream(f"scheduler reported port {port!r}: not an integer in 1-65535")
    if not isinstance(host, str) or not host:
        raise UnsafeUpstream(f"scheduler reported host {host!r}: not a host name or IP address")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    labels = host.lower().split(".")
    if not HOSTNAME.match(host) or len(host) > 253 or DIRECTIVE_WORDS.intersection(labels):
        raise UnsafeUpstream(f"scheduler reported host {host!r}: not a host name or IP address",
                             hint="refused so that nothing but an address can reach the nginx config")
    return f"{host.lower()}:{port}"


def validate_env_name(name: str) -> str:
    if not re.match(ENV_NAME_PATTERN, name or ""):
        raise UnsafeUpstream(f"environment name {name!r} is not a DNS label (a-z, 0-9, -)")
    return name


def upstream_for(env: Environment) -> Upstream:
    """The environment's instances as an upstream; every address validated, at least one instance."""
    validate_env_name(env.name)
    servers = tuple(validate_address(i.host, i.port) for i in env.instances)
    if not servers:
        raise RouterError(f"environment {env.name} has no instances")
    return Upstream(env=env.name, sha=env.sha, servers=servers)


# -- pure rendering ---------------------------------------------------------------------------------
def render_live(site: Site, upstream: Upstream | None) -> str:
    """live.conf: the live upstream behind server_name, or a 503 until the first promote."""
    return _templates.get_template("nginx-live.j2").render(
        site=site, upstream=upstream, upstream_name=site.upstream_name(None))


def render_preview(site: Site, upstream: Upstream) -> str:
    """previews/<env>.conf: the environment behind `<env>.<preview_domain>`."""
    return _templates.get_template("nginx-preview.j2").render(
        site=site, upstream=upstream, upstream_name=site.upstream_name(upstream.env))


def render_include(site: Site, live_file: Path, previews_dir: Path) -> str:
    """bgci.conf: what the user's http {} block includes."""
    return _templates.get_template("nginx-include.j2").render(
        site=site, live_file=_safe_path(live_file), previews_dir=_safe_path(previews_dir))


def render_main(site: Site, layout: Layout, include_file: Path) -> str:
    """nginx.conf of the embedded nginx: every path inside the prefix, nothing root-owned."""
    for path in (layout.root, include_file):
        _safe_path(path)
    return _templates.get_template("nginx-main.j2").render(site=site, layout=layout, include_file=include_file)


def served_by(text: str | None) -> str | None:
    """The environment a rendered live or preview file routes to (its marker line), or None."""
    match = re.search(r"^# served by: (\S+) ", text or "", re.MULTILINE)
    return match[1] if match else None


def _safe_path(path: Path) -> Path:
    if not SAFE_PATH.match(str(path)):
        raise ConfigError(f"nginx.dir: {str(path)!r} has characters nginx would misread",
                          hint="use letters, digits and . _ - / only")
    return path


# -- files ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where bgci's nginx files live."""

    root: Path

    @property
    def include_file(self) -> Path:
        return self.root / "bgci.conf"

    @property
    def live_file(self) -> Path:
        return self.root / "live.conf"

    @property
    def previews_dir(self) -> Path:
        return self.root / "previews"

    @property
    def user_dir(self) -> Path:
        return self.root / "conf.d"

    @property
    def main_file(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.root / "logs" / "access.log"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def lock_file(self) -> Path:
        return self.root / "bgci.lock"

    def preview_file(self, env: str) -> Path:
        return self.previews_dir / f"{validate_env_name(env)}.conf"


def write_atomic(path: Path, text: str) -> None:
    """Write a sibling temp file, fsync it, rename it over `path`: readers see old or new, never half."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


# -- controlling nginx ------------------------------------------------------------------------------
@dataclass(frozen=True)
class NginxStatus:
    mode: str
    running: bool
    pid: int | None
    listen: str
    config: str
    detail: str = ""


def _run(command: list[str], what: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise RouterError(f"{what}: {command[0]} not found", hint="install nginx or set nginx.nginx_binary") from None
    except subprocess.TimeoutExpired:
        raise RouterError(f"{what}: {' '.join(command)} did not finish within {timeout:.0f} s") from None


def _problem(result: subprocess.CompletedProcess[str]) -> str:
    """The lines of nginx's output that say what is wrong."""
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    bad = [line for line in lines if "[emerg]" in line or "[alert]" in line or "failed" in line]
    return "; ".join(bad or lines[-3:]) or f"exit status {result.returncode}"


class EmbeddedNginx:
    """bgci's own nginx process: `nginx -p <dir> -c nginx.conf`, its pid file inside the prefix."""

    mode = "embedded"
    tests_staged = True

    def __init__(self, binary: str, layout: Layout, site: Site) -> None:
        self.binary, self.layout, self.site = binary, layout, site
        self._log_offset, self._master, self._old_workers = 0, 0, set[int]()
        self.reloaded_at = 0.0  # time.monotonic() of the last reload signal

    def _command(self, main_file: Path, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.layout.root}/", "-e", str(self.layout.error_log),
                "-c", str(main_file), *extra]

    def test(self, main_file: Path | None = None) -> None:
        result = _run(self._command(main_file or self.layout.main_file, "-t", "-q"), "nginx -t")
        if result.returncode != 0:
            raise NginxConfigInvalid(f"nginx -t refused the configuration: {_problem(result)}")

    def pid(self) -> int | None:
        """The master's pid if it runs (a stale pid file, or another program's pid, counts as not running)."""
        try:
            pid = int(self.layout.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"nginx" in cmdline and f"{self.layout.root}/".encode() in cmdline else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def reload(self) -> None:
        """SIGHUP to the master (what `nginx -s reload` sends, minus the config parse we just did)."""
        pid = self.pid()
        if pid is None:
            raise _not_running(self.layout)
        self._log_offset = _size(self.layout.error_log)
        self._master, self._old_workers = pid, _children(pid)
        self.reloaded_at = time.monotonic()
        os.kill(pid, signal.SIGHUP)

    def settled(self) -> bool:
        """Whether no worker from before the last reload accepts connections any more.

        The master starts the new workers, waits about 100 ms, and only then tells the old ones
        to stop; until then both accept. A stopping worker closes its listening sockets and
        retitles itself `... is shutting down`, which /proc shows.
        """
        return not any(_accepting_worker(pid, self._master) for pid in self._old_workers)

    def reload_problem(self) -> str:
        """The master's complaint since the last reload, if it refused the new config (it keeps the old one)."""
        try:
            with open(self.layout.error_log, encoding="utf-8", errors="replace") as log:
                log.seek(self._log_offset)
                lines = log.read().splitlines()
        except OSError:
            return ""
        return "; ".join(line for line in lines if "[emerg]" in line or "[alert]" in line)

    def start(self, timeout: float = 10) -> NginxStatus:
        if self.is_running():
            return self.status()
        self.test()
        result = _run(self._command(self.layout.main_file), "nginx start")  # daemonizes: returns once started
        if result.returncode != 0:
            raise RouterError(f"nginx did not start: {_problem(result)}", hint=f"see {self.layout.error_log}")
        _wait_for(lambda: self.is_running(), timeout, f"nginx did not write {self.layout.pid_file}")
        return self.status()

    def stop(self, timeout: float = 30) -> NginxStatus:
        """Graceful stop (SIGQUIT: finish requests, then exit); SIGTERM if that takes too long."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)
            if not _poll(lambda: not _alive(pid), timeout):
                os.kill(pid, signal.SIGTERM)
                _wait_for(lambda: not _alive(pid), 5, f"nginx {pid} did not stop")
        return self.status()

    def status(self) -> NginxStatus:
        pid = self.pid()
        return NginxStatus(mode=self.mode, running=pid is not None, pid=pid, listen=self.site.listen,
                           config=str(self.layout.main_file))


class SystemNginx:
    """A system nginx that includes bgci.conf; bgci tests and reloads it with the configured commands."""

    mode = "system"
    tests_staged = False  # its main config is the user's: only the real paths can be tested

    def __init__(self, test_command: list[str], reload_command: list[str], layout: Layout, site: Site) -> None:
        self.test_command, self.reload_command = test_command, reload_command
        self.layout, self.site = layout, site
        self.reloaded_at = 0.0  # time.monotonic() when the last reload command started

    def test(self, main_file: Path | None = None) -> None:
        result = _run(self.test_command, "nginx test")
        if result.returncode != 0:
            raise NginxConfigInvalid(f"{' '.join(self.test_command)} refused the configuration: {_problem(result)}")

    def is_running(self) -> bool:
        return True  # not ours to know: the reload command fails if it is not

    def reload(self) -> None:
        self.reloaded_at = time.monotonic()
        result = _run(self.reload_command, "nginx reload")
        if result.returncode != 0:
            raise RouterError(f"{' '.join(self.reload_command)} failed: {_problem(result)}")

    def settled(self) -> bool:
        """Its workers are not ours to see: give the old ones the time nginx gives them (100 ms), twice over."""
        return time.monotonic() - self.reloaded_at >= SYSTEM_SETTLE

    def reload_problem(self) -> str:
        return ""  # the reload command's exit status is all a system nginx tells us

    def start(self, timeout: float = 10) -> NginxStatus:
        raise RouterError("nginx.mode is system: bgci does not start it",
                          hint=f"include {self.layout.include_file} in its http block and start it yourself")

    stop = start

    def status(self) -> NginxStatus:
        """Running means: something accepts connections on nginx.listen (its pid is not ours to know)."""
        return NginxStatus(mode=self.mode, running=_accepts(*listen_address(self.site.listen)), pid=None,
                           listen=self.site.listen, config=str(self.layout.include_file),
                           detail=f"include {self.layout.include_file} from the http block of your nginx.conf")


NginxControl = EmbeddedNginx | SystemNginx


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host.strip("[]"), port), timeout=1).close()
    except OSError:
        return False
    return True


def _not_running(layout: Layout) -> NginxNotRunning:
    return NginxNotRunning(f"the embedded nginx is not running (no live pid in {layout.pid_file})",
                           hint="start it with: bgci router start")


def _children(pid: int) -> set[int]:
    """The child processes of `pid` (nginx's workers)."""
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan every process's parent
        return {int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _parent(stat) == pid}


def _parent(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(") ", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _accepting_worker(pid: int, master: int) -> bool:
    """Still a running worker of `master` that has not begun its graceful shutdown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and int(fields[1]) == master and b"shutting down" not in title


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child) still answers kill 0.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return True


def _poll(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _wait_for(condition: Callable[[], bool], timeout: float, message: str) -> None:
    if not _poll(condition, timeout):
        raise RouterError(message)


# -- verification -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expectation:
    """What a request for `host` must get once the change is live."""

    host: str
    env: str | None  # the env header nginx must add; None: no environment (a removed preview)
    sha: str = ""  # when set, the body must contain it
    answers: int = 1  # consecutive good answers needed (one per instance: round robin visits each)
    needs_2xx: bool = True  # False: the header alone proves which config nginx runs (checking a restore)


@dataclass(frozen=True)
class Applied:
    """What a transaction did."""

    files: tuple[str, ...]
    reloaded: bool
    seconds: float


# -- the router -------------------------------------------------------------------------------------
class NginxRouter:
    """Renders bgci's nginx files and changes them by validated, atomic, verified, reversible transactions."""

    def __init__(self, site: Site, layout: Layout, control: NginxControl, *, verify_path: str = "/",
                 verify_sha: bool = True, verify_timeout: float = 10.0,
                 session: requests.Session | None = None) -> None:
        self.site, self.layout, self.control = site, layout, control
        self.verify_path, self.verify_sha, self.verify_timeout = verify_path, verify_sha, verify_timeout
        self.session = session or direct_session()  # verification goes to our own nginx: never via a proxy
        host, port = listen_address(site.listen)
        self.base_url = f"http://{host}:{port}"

    @classmethod
    def from_settings(cls, settings: Settings, session: requests.Session | None = None) -> NginxRouter:
        site = Site.from_settings(settings)
        layout = Layout(settings.path(settings.nginx.dir))
        n = settings.nginx
        return cls(site, layout, _control(n, layout, site), verify_path=n.verify_path, verify_sha=n.verify_sha,
                   verify_timeout=n.verify_timeout, session=session)

    # layout
    def ensure_layout(self) -> None:
        """Create the directories and the files bgci owns that do not exist yet (never touches live.conf)."""
        for directory in (self.layout.root, self.layout.previews_dir, self.layout.user_dir,
                          self.layout.pid_file.parent, self.layout.error_log.parent, self.layout.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.layout.live_file.exists():
            write_atomic(self.layout.live_file, render_live(self.site, None))
        self._write_if_changed(self.layout.include_file,
                               render_include(self.site, self.layout.live_file, self.layout.previews_dir))
        if self.control.mode == "embedded":
            self._write_if_changed(self.layout.main_file,
                                   render_main(self.site, self.layout, self.layout.include_file))

    def _write_if_changed(self, path: Path, text: str) -> None:
        if _read(path) != text:
            write_atomic(path, text)

    def previews(self) -> list[str]:
        return sorted(p.stem for p in self.layout.previews_dir.glob("*.conf"))

    def live_env(self) -> str | None:
        """The environment live.conf routes to, None before the first promote."""
        return served_by(_read(self.layout.live_file))

    def _host_for(self, path: Path) -> str:
        return self.site.server_name if path == self.layout.live_file else self.site.preview_host(path.stem)

    # the changes
    def switch_live(self, upstream: Upstream, then: Callable[[], None] | None = None) -> Applied:
        """Route server_name to `upstream`; `then` runs once it is verified (a failure there undoes it too)."""
        expect = Expectation(self.site.server_name, upstream.env, self._sha(upstream), len(upstream.servers))
        return self.apply({self.layout.live_file: render_live(self.site, upstream)}, expect, then,
                          require_running=True)

    def add_preview(self, upstream: Upstream) -> Applied:
        """Serve the environment at `<env>.<preview_domain>` (replacing an older file for it)."""
        expect = Expectation(self.site.preview_host(upstream.env), upstream.env, self._sha(upstream),
                             len(upstream.servers))
        return self.apply({self.layout.preview_file(upstream.env): render_preview(self.site, upstream)}, expect)

    def _sha(self, upstream: Upstream) -> str:
        return upstream.sha if self.verify_sha else ""

    def remove_preview(self, env: str) -> Applied | None:
        """Stop serving `<env>.<preview_domain>`; None when it was not registered."""
        path = self.layout.preview_file(env)
        if not path.exists():
            return None
        return self.apply({path: None}, Expectation(self.site.preview_host(env), None))

    def apply(self, changes: Mapping[Path, str | None], expect: Expectation,
              then: Callable[[], None] | None = None, *, require_running: bool = False) -> Applied:
        """The transaction: stage, test, rename, reload, verify, `then`; on any failure restore and reload.

        `changes` maps files of the layout to their new text (None: delete). When the embedded
        nginx is not running (and `require_running` is false), the files are tested and written
        but nothing reloads or verifies: nginx serves them once started.
        """
        started = time.monotonic()
        self.ensure_layout()
        running = self.control.is_running()
        if require_running and not running:
            raise _not_running(self.layout)
        before = {path: _read(path) for path in changes}
        with tempfile.TemporaryDirectory(dir=self.layout.root, prefix=".stage-") as stage_dir:
            staged = self._stage(Path(stage_dir), changes)
            if self.control.tests_staged:
                self.control.test(Path(stage_dir) / "nginx.conf")
            self._commit(staged)
            reloaded = False
            try:
                if not self.control.tests_staged:
                    self.control.test()
                if running:
                    reloaded = True  # from here nginx may have loaded the new files: restoring must reload
                    self.control.reload()
                    self.verify(expect)
                if then is not None:
                    then()
            except BaseException as exc:  # Ctrl-C or a Jenkins abort too: never leave a half-made switch
                self._restore(before, reloaded, exc)
                raise
        return Applied(files=tuple(str(p) for p in changes), reloaded=running,
                       seconds=time.monotonic() - started)

    def _stage(self, stage: Path, changes: Mapping[Path, str | None]) -> dict[Path, Path | None]:
        """New versions as temp files in `stage`; in embedded mode also a full copy of the config to test."""
        (stage / "previews").mkdir()
        staged: dict[Path, Path | None] = {}
        for path, text in changes.items():
            if path.parent not in (self.layout.root, self.layout.previews_dir):
                raise RouterError(f"{path} is not a file bgci owns")
            staged[path] = None
            if text is not None:
                staged[path] = stage / path.relative_to(self.layout.root)
                staged[path].write_text(text, encoding="utf-8")
        if self.control.tests_staged:
            self._stage_rest(stage, changes)
        return staged

    def _stage_rest(self, stage: Path, changes: Mapping[Path, str | None]) -> None:
        """The unchanged files beside the new ones, so `nginx -t` sees the whole config as it will be."""
        current = [self.layout.live_file, *self.layout.previews_dir.glob("*.conf")]
        for path in current:
            if path not in changes:
                shutil.copyfile(path, stage / path.relative_to(self.layout.root))
        (stage / "bgci.conf").write_text(render_include(self.site, stage / "live.conf", stage / "previews"))
        (stage / "nginx.conf").write_text(render_main(self.site, self.layout, stage / "bgci.conf"))

    def _commit(self, staged: Mapping[Path, Path | None]) -> None:
        for path, temp in staged.items():
            if temp is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                with open(temp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.chmod(temp, 0o644)
                os.replace(temp, path)  # same filesystem: atomic
            _fsync_dir(path.parent)

    def _restore(self, before: Mapping[Path, str | None], reloaded: bool, cause: BaseException) -> None:
        """Put the previous bytes back and reload, so nginx serves exactly what it served before."""
        for path, text in before.items():
            if text is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                write_atomic(path, text)
        if reloaded:
            try:
                self.control.reload()
                # A reload is asynchronous: wait until nginx answers as before, so the caller sees the old state.
                for path, text in before.items():
                    self.verify(Expectation(self._host_for(path), served_by(text), needs_2xx=False), restoring=True)
            except RouterError as exc:
                raise RouterError(f"{cause}; the previous files are back but nginx does not serve them: {exc}",
                                  hint="check the error log and run `bgci router status`") from cause
        if isinstance(cause, RouterError) and not cause.hint:
            cause.hint = "the previous nginx configuration was restored"

    # verification
    def verify(self, expect: Expectation, timeout: float | None = None, *, restoring: bool = False) -> None:
        """Ask nginx for `expect.host` (a new connection each time) until the reload is done and it answers right.

        Done means no worker of the old configuration accepts connections any more. If the master
        refused the reload, it keeps serving what it served: an error, unless `restoring` and that
        is the expected answer anyway.
        """
        timeout = self.verify_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        good = 0
        while True:
            verdict, last = self._check(expect)
            good = good + 1 if verdict else 0
            if good >= expect.answers:
                if self.control.settled():
                    return
                last = "the expected answer, but workers of the previous configuration still accept connections"
            problem = self.control.reload_problem()
            if problem:
                if restoring and verdict:
                    return
                raise RouterError(f"nginx did not load the new configuration: {problem}")
            if time.monotonic() > deadline:
                raise VerificationFailed(f"{expect.host} was not served by {expect.env or 'no environment'} "
                                         f"within {timeout:g} s (last answer: {last})")
            if not verdict or good >= expect.answers:  # asking again at once only while counting good answers
                time.sleep(0.005 if verdict else 0.01)

    def _check(self, expect: Expectation) -> tuple[bool, str]:
        try:
            response = self.session.get(self.base_url + self.verify_path, timeout=2, allow_redirects=False,
                                        headers={"Host": expect.host, "Connection": "close"})
        except requests.RequestException as exc:
            return False, f"{type(exc).__name__}: {exc}"
        served_by = response.headers.get(self.site.env_header)
        last = f"{response.status_code} from {served_by or 'no environment'}"
        if served_by != expect.env:
            return False, last
        if expect.env is None or not expect.needs_2xx:
            return True, last
        if not 200 <= response.status_code < 300:
            return False, last
        if expect.sha and expect.sha not in response.text:
            # The right upstream answers with the wrong build: waiting will not change that.
            raise VerificationFailed(f"{expect.host} is served by {expect.env}, but it answers "
                                     f"{response.text.strip()[:80]!r} instead of sha {expect.sha}")
        return True, last

    # process
    def start(self) -> NginxStatus:
        self.ensure_layout()
        return self.control.start()

    def stop(self) -> NginxStatus:
        return self.control.stop()

    def status(self) -> NginxStatus:
        return self.control.status()


def _control(settings: NginxSettings, layout: Layout, site: Site) -> NginxControl:
    if settings.mode == "embedded":
        return EmbeddedNginx(settings.nginx_binary, layout, site)
    test_command = settings.test_command or [settings.nginx_binary, "-t", "-q"]
    reload_command = settings.reload_command or [settings.nginx_binary, "-s", "reload"]
    return SystemNginx(test_command, reload_command, layout, site)

