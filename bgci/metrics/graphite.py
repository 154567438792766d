"""Deploy events to Graphite: carbon's plaintext protocol, `<path> <value> <timestamp>` lines over TCP.

Each event is `bgci.<app>.deploys.<action> 1 <unix time>`. Sending is best effort:
a deploy never fails because Graphite is away; the caller logs the error.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

from bgci.metrics.events import DeployEvent

DEFAULT_TIMEOUT = 3.0


def metric_path(app: str, action: str) -> str:
    """A dot-separated Graphite path; dots and odd characters in names become '_' (a dot is a level)."""
    def part(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "_"

    return f"bgci.{part(app)}.deploys.{part(action)}"


def plaintext_lines(app: str, events: Iterable[DeployEvent]) -> bytes:
    return b"".join(f"{metric_path(app, e.action)} 1 {int(e.timestamp)}\n".encode() for e in events)


def send(address: str, app: str, events: Iterable[DeployEvent], timeout: float = DEFAULT_TIMEOUT) -> None:
    """Send the events to carbon at `host:port`; OSError when it cannot be reached."""
    data = plaintext_lines(app, events)
    if not data:
        return
    host, _, port = address.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
