#!/usr/bin/env python3
"""A small steady load through nginx for the demo: counts answers by environment, failures and retries.

    python3 scripts/load.py --url http://127.0.0.1:8080/?user=1 --host web-app.localhost --out load.json

Runs until SIGTERM or SIGINT (or --seconds), then writes a JSON summary to --out and prints it.
Each of --connections threads keeps one keep-alive connection, as a browser would; a request sent
on a connection the server had just closed is retried once on a new one (RFC 9110 9.2.2 allows it
for idempotent requests, and browsers do it), and counted as a retry, not a failure. Any other
transport error, and any answer outside 2xx/3xx, is a failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


class Load:
    def __init__(self, url: str, host: str, connections: int, header: str) -> None:
        parts = urlsplit(url)
        self.address, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host, self.header = host, header
        self.by_env: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.retries = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(connections)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.address, self.port, timeout=10)
        while not self.stopping.is_set():
            try:
                status, env = self._ask(connection)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()  # closed by a reload as the request went out: once more, anew
                connection = http.client.HTTPConnection(self.address, self.port, timeout=10)
                with self.lock:
                    self.retries += 1
                try:
                    status, env = self._ask(connection)
                except OSError as exc:
                    self._count(None, type(exc).__name__)
                    continue
            except OSError as exc:
                self._count(None, type(exc).__name__)
                connection.close()
                connection = http.client.HTTPConnection(self.address, self.port, timeout=10)
                continue
            self._count(env, "" if 200 <= status < 400 else f"HTTP {status}")
            time.sleep(0.005)
        connection.close()

    def _ask(self, connection: http.client.HTTPConnection) -> tuple[int, str]:
        connection.request("GET", self.path, headers={"Host": self.host})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader(self.header, "-")

    def _count(self, env: str | None, failure: str) -> None:
        with self.lock:
            if failure:
                self.failures[failure] += 1
            if env:
                self.by_env[env] += 1

    def summary(self) -> dict[str, object]:
        total = sum(self.by_env.values()) + sum(self.failures[f] for f in self.failures if not f.startswith("HTTP"))
        return {"requests": total, "failed": sum(self.failures.values()), "failures": dict(self.failures),
                "retries": self.retries, "by_env": dict(self.by_env)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--host", required=True, help="the Host header: the live name")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long at the latest")
    parser.add_argument("--header", default="X-Bgci-Environment")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    load = Load(args.url, args.host, args.connections, args.header)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    load.start()
    done.wait(args.seconds)
    load.stop()
    summary = load.summary()
    with open(args.out, "w") as out:
        json.dump(summary, out)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
