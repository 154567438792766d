"""One health probe, used wherever bgci asks an instance "are you healthy now?".

Probes go straight to the instance (or to bgci's own nginx) over bgci.http11:
never through an HTTP proxy from the environment (it never reads http_proxy or
no_proxy, which Jenkins agents often set, though a proxy cannot reach loopback or
cluster-internal addresses), never with .netrc credentials, never retried (the
caller's poll loop is the retry), never following a redirect. It keeps `bgci
promote` free of the import cost of requests, and of http.client's (bgci.http11 says why).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bgci import http11
from bgci.netaddr import join_host_port

PROBE_TIMEOUT = (1.0, 2.0)  # connect, read: loopback and cluster networks answer in milliseconds
PROBE_THREADS = 16  # probes at once

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read whole."""

    status: int
    headers: http11.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def get(host: str, port: int, path: str, *, headers: dict[str, str] | None = None,
        timeout: tuple[float, float] = PROBE_TIMEOUT) -> Answer:
    """GET http://host:port/path on a new connection (Connection: close), redirects not followed.

    `timeout` is (connect, read) seconds. Raises OSError: refused, reset, timed out, or
    http11.ProtocolError for a malformed or missing answer.
    """
    connect_timeout, read_timeout = timeout
    address = host.strip("[]")
    sock = socket.create_connection((address, port), timeout=connect_timeout)
    sock.settimeout(read_timeout)
    response = http11.exchange(sock, "GET", path, host=join_host_port(address, port), headers=headers)
    try:
        return Answer(response.status, response.headers, response.read())
    finally:
        response.close()


def check_health(host: str, port: int, path: str, *, timeout: tuple[float, float] = PROBE_TIMEOUT) -> str:
    """'' when http://host:port/path answers 2xx now, else what is wrong (one short phrase:
    "ConnectionRefusedError", "TimeoutError", "RemoteDisconnected", "HTTP 503").

    A new connection each time (Connection: close): "healthy now" includes accepting one.
    """
    try:
        answer = get(host, port, path, timeout=timeout)
    except OSError as exc:
        return type(exc).__name__
    return "" if 200 <= answer.status < 300 else f"HTTP {answer.status}"


def probe_each(probe: Callable[[Item], Result], items: Sequence[Item], threads: int = PROBE_THREADS) -> list[Result]:
    """[probe(item) for item in items], up to `threads` at once; the first error is raised once all ended.

    Plain threads, not concurrent.futures: importing that (with logging and traceback) costs a new
    `bgci promote` ~8 ms before its switch, for a handful of short probes.
    """
    results: list[Result | None] = [None] * len(items)
    errors: list[BaseException] = []
    pending = iter(range(len(items)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = next(pending, None)
            if index is None or errors:
                return
            try:
                results[index] = probe(items[index])
            except BaseException as exc:  # raised in the caller's thread below
                errors.append(exc)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(min(threads, len(items)))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]  # every slot filled when no probe raised
