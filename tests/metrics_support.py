"""Real metrics servers for tests: Debian's Prometheus and Graphite's carbon-cache, on loopback, in temp dirs.

Like tests/support.Registry: each is our own process with a config the test writes,
stopped by the test; nothing of the machine's own services is used or touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.support import free_port

PROMETHEUS_BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"
CARBON_BINARY = shutil.which("carbon-cache") or "/usr/bin/carbon-cache"
WHISPER_FETCH = shutil.which("whisper-fetch") or "/usr/bin/whisper-fetch"
SCRAPE_INTERVAL = 1.0


class Prometheus:
    """Prometheus 2.x scraping `static` targets (job bgci) and a file_sd targets file (job apps) every second."""

    def __init__(self, workdir: Path, static: list[str], file_sd: Path | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL:g}s", "scrape_timeout": f"{SCRAPE_INTERVAL:g}s"},
            "scrape_configs": [{"job_name": "bgci", "static_configs": [{"targets": static}]}],
        }
        if file_sd is not None:
            config["scrape_configs"].append({"job_name": "apps", "file_sd_configs": [
                {"files": [str(file_sd)], "refresh_interval": "1s"}]})
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML

    def start(self) -> Prometheus:
        with open(self.workdir / "log", "ab") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS_BINARY, f"--config.file={self.workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200, 30,
                 f"Prometheus did not start; see {self.workdir / 'log'}")
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def values(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


class Carbon:
    """carbon-cache in the foreground (--debug) with its own config, line receiver on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        storage = workdir / "storage"
        (workdir / "storage-schemas.conf").write_text("[everything]\npattern = .*\nretentions = 1s:1d\n")
        settings = {
            "STORAGE_DIR": storage, "LOCAL_DATA_DIR": storage / "whisper", "WHITELISTS_DIR": storage / "lists",
            "CONF_DIR": workdir, "LOG_DIR": workdir / "log", "PID_DIR": workdir, "ENABLE_LOGROTATION": "False",
            "USER": "", "MAX_CACHE_SIZE": "inf", "MAX_UPDATES_PER_SECOND": "inf", "MAX_CREATES_PER_MINUTE": "inf",
            "LINE_RECEIVER_INTERFACE": "127.0.0.1", "LINE_RECEIVER_PORT": self.port, "ENABLE_UDP_LISTENER": "False",
            "PICKLE_RECEIVER_INTERFACE": "127.0.0.1", "PICKLE_RECEIVER_PORT": free_port(),
            "CACHE_QUERY_INTERFACE": "127.0.0.1", "CACHE_QUERY_PORT": free_port(), "ENABLE_TAGS": "False",
        }
        (workdir / "carbon.conf").write_text("[cache]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        self.whisper_dir = storage / "whisper"

    def start(self) -> Carbon:
        import socket

        with open(self.workdir / "out.log", "ab") as log:
            self.process = subprocess.Popen(
                [CARBON_BINARY, f"--config={self.workdir / 'carbon.conf'}", f"--pidfile={self.workdir / 'c.pid'}",
                 "--debug", "start"], stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_for(answers, 30, f"carbon-cache did not start; see {self.workdir / 'out.log'}")
        return self

    def points(self, metric: str, since: float) -> list[tuple[int, float]]:
        """(time, value) of the whisper file of `metric` since `since`, read with whisper-fetch; [] if none yet."""
        path = self.whisper_dir / (metric.replace(".", "/") + ".wsp")
        if not path.exists():
            return []
        out = subprocess.run([WHISPER_FETCH, f"--from={int(since) - 1}", str(path)], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        return [(int(t), float(v)) for t, v in (line.split() for line in out.splitlines()) if v != "None"]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


def wait_for(condition: Callable[[], Any], timeout: float, message: str, interval: float = 0.1) -> Any:
    """Poll `condition` until it returns something true (exceptions count as not yet); a hang guard only."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except (OSError, requests.RequestException, AssertionError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{message} (last: {last!r})")
