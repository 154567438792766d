"""Controlling nginx: bgci's embedded process or a system nginx, tested, reloaded and watched.

The embedded nginx (``nginx -p <dir>``) is bgci's own: it is started, stopped and
signalled directly, and after a reload its old workers are watched in /proc until
none accepts connections. A system nginx is the user's: bgci only runs the
configured test and reload commands.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bgci.errors import NginxConfigInvalid, NginxNotRunning, RouterError
from bgci.netaddr import listen_address

if TYPE_CHECKING:
    from bgci.config import NginxSettings
    from bgci.router.site import Layout, Site

SYSTEM_SETTLE = 0.25  # seconds a system nginx's answers must stay right after a reload (see SystemNginx.settled)


@dataclass(frozen=True)
class NginxStatus:
    """Whether nginx runs, where it listens and which config it serves."""

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
            raise not_running(self.layout)
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


def not_running(layout: Layout) -> NginxNotRunning:
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


def control_for(settings: NginxSettings, layout: Layout, site: Site) -> NginxControl:
    """The embedded nginx or the system one, as `nginx.mode` says."""
    if settings.mode == "embedded":
        return EmbeddedNginx(settings.nginx_binary, layout, site)
    test_command = settings.test_command or [settings.nginx_binary, "-t", "-q"]
    reload_command = settings.reload_command or [settings.nginx_binary, "-s", "reload"]
    return SystemNginx(test_command, reload_command, layout, site)
