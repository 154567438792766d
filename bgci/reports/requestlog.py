"""nginx's request log (Layout.requests_log): one JSON line per request bgci's live and preview servers proxy.

The format is templates/nginx/include-log-format.conf: `log_format ... escape=json`. nginx buffers each
worker's lines and flushes them within a second, so the file is in time order only
roughly: lines of different workers (and of the old workers a reload leaves behind)
can be out of order by a second or so. Reading a window therefore walks back from
the end of the file until a line is older than the window's start by `slack`
seconds, which bounds the read by the window, not by the size of the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SLACK = 10.0  # seconds of disorder tolerated between lines of the log
BLOCK = 1 << 16


@dataclass(frozen=True)
class LoggedRequest:
    """One line of the request log."""

    at: float  # $msec: epoch seconds when nginx logged it (the response was sent)
    app: str
    env: str  # the environment whose server answered ("" for none)
    sha: str
    role: str  # live or preview
    host: str
    method: str
    uri: str
    status: int  # what nginx sent the client
    request_time: float  # seconds, from the first byte read from the client to the last byte sent
    upstream_addr: str  # "" or "-" when nginx proxied nowhere
    upstream_status: str  # e.g. "200", "502, 200" (one per upstream tried), "" or "-"

    @property
    def upstream_answered(self) -> bool:
        """Did an instance send the status the client got (not nginx on its own, e.g. a 502 it made)?"""
        last = self.upstream_status.replace(":", ",").rsplit(",", 1)[-1].strip()
        return last.isdigit() and int(last) == self.status and self.status not in (502, 504)


def parse_line(line: str | bytes) -> LoggedRequest | None:
    """The request on one log line, or None when the line is not one (torn, foreign or malformed)."""
    try:
        data = json.loads(line)
        return LoggedRequest(
            at=float(data["msec"]), app=str(data["app"]), env=str(data["env"]), sha=str(data["sha"]),
            role=str(data["role"]), host=str(data.get("host", "")), method=str(data.get("method", "")),
            uri=str(data.get("uri", "")), status=int(data["status"]), request_time=float(data["request_time"]),
            upstream_addr=str(data.get("upstream_addr", "")), upstream_status=str(data.get("upstream_status", "")))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


@dataclass(frozen=True)
class LogWindow:
    """The requests of one app that nginx logged in [start, end)."""

    path: str
    start: float
    end: float
    requests: tuple[LoggedRequest, ...]  # in time order
    unreadable: int  # lines in the part read that were not requests
    covers_start: bool  # False: the log and its rotated .1 begin after `start`, older files exist: some is missing


def read_window(path: Path, start: float, end: float, *, app: str | None = None,
                slack: float = SLACK) -> LogWindow:
    """Every request (of `app`, when given) logged in [start, end), read back from the end of `path`.

    When `path` does not reach back far enough, its rotated predecessor `<path>.1` is read too.
    A missing file is an empty window, not an error: nginx logs nothing before its first request.
    """
    found: list[LoggedRequest] = []
    unreadable, covered, read = 0, False, []
    for candidate in (Path(path), Path(f"{path}.1")):
        try:
            handle = candidate.open("rb")
        except FileNotFoundError:
            continue
        read.append(candidate)
        with handle:
            for line in lines_backwards(handle):
                request = parse_line(line)
                if request is None:
                    unreadable += 1
                elif request.at < start - slack:
                    covered = True
                    break
                elif start <= request.at < end and (app is None or request.app == app):
                    found.append(request)
        if covered:
            break
    if not covered:  # read to the very beginning: complete, unless an older rotated file was left unread
        covered = not [p for p in Path(path).parent.glob(Path(path).name + ".*") if p not in read]
    found.sort(key=lambda r: r.at)
    return LogWindow(str(path), start, end, tuple(found), unreadable, covered)


def lines_backwards(handle: IO[bytes], block: int = BLOCK) -> Iterator[bytes]:
    """The non-empty lines of a file opened in binary mode, last first."""
    position = handle.seek(0, os.SEEK_END)
    rest = b""
    while position > 0:
        size = min(block, position)
        position -= size
        handle.seek(position)
        lines = (handle.read(size) + rest).split(b"\n")
        rest = lines[0]  # may continue in the block before
        yield from (line for line in reversed(lines[1:]) if line.strip())
    if rest.strip():
        yield rest
