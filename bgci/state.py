"""Who is live, who was live before, and the lock that keeps switches one at a time.

The state file is JSON, replaced atomically (temp file, fsync, rename), so a
crash leaves the old state or the new one, never half of each. The lock is an
flock on a file beside the nginx config; its holder writes who it is into it, so
a second promote can say who is in the way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bgci.errors import LockHeld, RouterError
from bgci.files import write_atomic

HISTORY_LENGTH = 50


@dataclass(frozen=True)
class Actor:
    """Who asks for a switch: a user on a host, and the Jenkins build when there is one."""

    who: str
    build_url: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Actor:
        environ = os.environ if environ is None else environ
        return cls(who=f"{user_name(environ)}@{socket.gethostname()}", build_url=environ.get("BUILD_URL", ""))


def user_name(environ: Mapping[str, str]) -> str:
    """Who asks: the Jenkins user who started the build (BUILD_USER_ID, the build-user-vars plugin's
    login id; stable, unlike BUILD_USER, the display name), else the login user."""
    for variable in ("BUILD_USER_ID", "USER", "LOGNAME"):
        if environ.get(variable):
            return environ[variable]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. a container with an arbitrary uid
        return "unknown"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Switch:
    """One change of the live environment."""

    env: str
    sha: str
    action: str  # promote | rollback | auto-rollback (a failed analysis undid a promote)
    at: str  # ISO 8601, UTC
    by: str
    build_url: str = ""
    reason: str = ""  # why, for an auto-rollback; left out of the file when empty (older bgci reads it)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.reason:
            del data["reason"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Switch:
        """Known fields only: a file written by a newer bgci still reads."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RouterState:
    """The state file: the live and previous switches and the recent history."""

    live: Switch | None = None
    previous: Switch | None = None
    history: tuple[Switch, ...] = field(default=())  # newest last

    def after(self, switch: Switch) -> RouterState:
        """The state once `switch` is live: the old live becomes previous (unless it is the same env)."""
        same = self.live is not None and self.live.env == switch.env
        return RouterState(live=switch, previous=self.previous if same else self.live,
                           history=(*self.history, switch)[-HISTORY_LENGTH:])

    def to_dict(self) -> dict[str, Any]:
        return {"live": _dict(self.live), "previous": _dict(self.previous),
                "history": [s.to_dict() for s in self.history]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterState:
        def switch(value: Any) -> Switch | None:
            return Switch.from_dict(value) if value else None

        return cls(live=switch(data.get("live")), previous=switch(data.get("previous")),
                   history=tuple(Switch.from_dict(s) for s in data.get("history", [])))


def _dict(switch: Switch | None) -> dict[str, Any] | None:
    return switch.to_dict() if switch else None


def load_state(path: Path) -> RouterState:
    """The state file, or an empty state before the first promote."""
    try:
        return RouterState.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return RouterState()
    except (ValueError, TypeError) as exc:
        raise RouterError(f"{path}: not a bgci state file: {exc}",
                          hint="fix or remove it; nginx's live.conf still says what is live") from None


def save_state(path: Path, state: RouterState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n")


# -- the lock ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Holder:
    """Who holds the switch lock, since when (what a waiting promote reports)."""

    pid: int
    who: str
    since: str
    build_url: str = ""
    action: str = ""

    def describe(self) -> str:
        build = f", {self.build_url}" if self.build_url else ""
        return f"{self.action or 'a switch'} by {self.who} (pid {self.pid}, since {self.since}{build})"


class SwitchLock:
    """An exclusive flock: one promote, rollback or config change at a time per nginx directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def hold(self, actor: Actor, action: str, wait: float = 0.0) -> Iterator[Holder]:
        """Take the lock, waiting up to `wait` seconds; LockHeld naming the holder otherwise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd, wait)
            holder = Holder(pid=os.getpid(), who=actor.who, since=utc_now(), build_url=actor.build_url,
                            action=action)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
            try:
                yield holder
            finally:
                os.ftruncate(fd, 0)  # released: no stale holder for the next reader
        finally:
            os.close(fd)  # closing releases the flock

    def _acquire(self, fd: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                holder = self.holder()
                raise LockHeld(f"{self.path} is held by {holder.describe() if holder else 'another process'}",
                               hint="wait for it, or pass --wait-lock SECONDS")
            time.sleep(0.05)

    def holder(self) -> Holder | None:
        """Who holds the lock now, from what it wrote into the file (None if nobody says)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "null")
            return Holder(**data) if data else None
        except (OSError, ValueError, TypeError):
            return None
