"""Metrics benchmark: what the request metrics path costs per request, and what --analyze adds to a promote.

Run from the repository root:  python benchmarks/metrics.py [--requests 20000] [--runs 5]

No containers: the instances are one extra nginx answering `/` with the environment's
sha on loopback ports (so the backends are not the bottleneck), behind bgci's embedded
nginx. Printed figures, not a test.

1. Access-log cost, same run, alternating: requests/s through bgci's nginx (ApacheBench,
   `ab -k -c 8`) with `[nginx] requests_log` off and on, and nginx's worker CPU time per
   request (from /proc) each way. Then the reader's side, on the log just written: CPU per
   line of bgci's exporter (RequestMetrics.observe) and, for comparison, of Debian's mtail
   3.0 reading the same file with an equivalent program (`--one_shot`).
2. --analyze overhead: Bgci.promote_analyzed against a real Prometheus (1 s scrapes) under
   light live load, window W and lag L; total time minus W and L is the gate's own cost
   (health check, switch, the state write, three PromQL queries).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
from prometheus_client import CollectorRegistry

from bgci.app import Bgci
from bgci.config import MetricsSettings, Settings
from bgci.errors import EnvironmentNotFound
from bgci.metrics.exporter import Exporter, RequestMetrics
from bgci.router import NginxRouter
from bgci.schedulers.base import Environment, Instance
from bgci.state import RouterState
from tests.metrics_support import Prometheus, wait_for
from tests.support import free_port

NGINX = "/usr/sbin/nginx"
SHAS = {"blue": "b1" * 20, "green": "9e" * 20}


class NginxBackends:
    """One nginx serving every instance: `/` answers the environment's sha, `/health` ok."""

    def __init__(self, root: Path, instances: int = 2) -> None:
        self.root, self.ports = root, {env: [free_port() for _ in range(instances)] for env in SHAS}
        (root / "logs").mkdir(parents=True)
        servers = "".join(
            f"server {{ listen 127.0.0.1:{port}; access_log off; location = /health {{ return 200 \"ok\\n\"; }}"
            f" location / {{ return 200 \"{SHAS[env]}\\n\"; }} }}\n"
            for env, ports in self.ports.items() for port in ports)
        (root / "nginx.conf").write_text(f'pid "{root}/nginx.pid"; error_log "{root}/logs/error.log"; '
                                         f"worker_processes 1; events {{ worker_connections 1024; }} "
                                         f"http {{ {servers} }}\n")
        subprocess.run([NGINX, "-p", f"{root}/", "-c", str(root / "nginx.conf")], check=True)

    def stop(self) -> None:
        subprocess.run([NGINX, "-p", f"{self.root}/", "-c", str(self.root / "nginx.conf"), "-s", "stop"], check=False)


class BackendScheduler:
    name = "loopback"

    def __init__(self, backends: NginxBackends) -> None:
        self.backends = backends

    def get(self, name: str) -> Environment:
        if name not in self.backends.ports:
            raise EnvironmentNotFound(f"no environment {name}")
        return Environment(name=name, app="web-app", sha=SHAS[name], image="i", digest="", wanted_instances=2,
                           created_at="", created_by="", scheduler=self.name,
                           instances=tuple(Instance(f"{name}.{i}", "127.0.0.1", p, "running", True)
                                           for i, p in enumerate(self.backends.ports[name])))

    def list(self) -> list[Environment]:
        return [self.get(name) for name in self.backends.ports]


def make_bgci(settings: Settings, scheduler: BackendScheduler) -> Bgci:
    bgci = Bgci(settings, environ={"USER": "bench"})
    bgci.scheduler = scheduler  # type: ignore[misc]
    return bgci


def settings_for(root: Path, requests_log: bool, metrics: MetricsSettings | None = None) -> Settings:
    base = Settings(app="web-app", project_dir=root)
    nginx = dataclasses.replace(base.nginx, listen=f"127.0.0.1:{free_port()}", dir="nginx", nginx_binary=NGINX,
                                state_file="state.json", requests_log=requests_log)
    return dataclasses.replace(base, nginx=nginx, metrics=metrics or MetricsSettings(targets_file=""))


def worker_cpu_seconds(router: NginxRouter) -> float:
    """utime + stime of the nginx master's children (the workers), from /proc."""
    master = int(router.layout.pid_file.read_text())
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def ab(router: NginxRouter, count: int) -> float:
    out = subprocess.run(["ab", "-q", "-k", "-c", "8", "-n", str(count), "-H", f"Host: {router.site.server_name}",
                          router.base_url + "/"], capture_output=True, text=True, check=True).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out)[1])  # type: ignore[index]
    assert failed == 0, out
    return float(re.search(r"Requests per second:\s+([0-9.]+)", out)[1])  # type: ignore[index]


def access_log_cost(root: Path, backends: NginxBackends, count: int, runs: int) -> Path:
    scheduler = BackendScheduler(backends)
    routers = {}
    for flag in (False, True):
        settings = settings_for(root / f"log-{flag}", flag)
        router = NginxRouter.from_settings(settings)
        router.start()
        make_bgci(settings, scheduler).promote("blue")
        routers[flag] = router
    rps: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    try:
        for flag in (False, True):
            ab(routers[flag], 2000)  # warm up
        for _ in range(runs):
            for flag in (False, True):
                before = worker_cpu_seconds(routers[flag])
                rps[flag].append(ab(routers[flag], count))
                cpu[flag].append((worker_cpu_seconds(routers[flag]) - before) / count * 1e6)
    finally:
        for router in routers.values():
            router.stop()
    off, on = statistics.median(rps[False]), statistics.median(rps[True])
    print(f"1. nginx, {count} requests x {runs} runs, ab -k -c 8, medians (2 CPUs, shared machine):")
    print(f"   requests_log off: {off:9.0f} req/s   worker CPU {statistics.median(cpu[False]):6.1f} us/request")
    print(f"   requests_log on:  {on:9.0f} req/s   worker CPU {statistics.median(cpu[True]):6.1f} us/request")
    print(f"   -> {100 * (on - off) / off:+.1f}% throughput, "
          f"{statistics.median(cpu[True]) - statistics.median(cpu[False]):+.1f} us CPU per request")
    log = routers[True].layout.requests_log
    time.sleep(1.5)  # nginx flushes its log buffer every second
    return log


def reader_cost(log: Path) -> None:
    lines = log.read_text().splitlines()
    metrics = RequestMetrics(CollectorRegistry(), "web-app")
    state = RouterState()
    started = time.process_time()
    for line in lines:
        metrics.observe(line, state)
    exporter_us = (time.process_time() - started) / len(lines) * 1e6
    print(f"   bgci exporter: {exporter_us:.1f} us CPU per line ({len(lines)} lines, one core: "
          f"{1e6 / exporter_us:,.0f} lines/s)")
    mtail = shutil.which("mtail")
    if not mtail:
        print("   mtail: not installed")
        return
    prog = log.parent / "bgci.mtail"
    prog.write_text(
        "counter bgci_requests_total by env, sha, role, status_class\n"
        "histogram bgci_request_duration_seconds buckets 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, "
        "0.5, 1.0, 2.5, 5.0, 10.0 by env, sha, role\n"
        '/"env":"(?P<env>[^"]*)","sha":"(?P<sha>[^"]*)","role":"(?P<role>[^"]*)".*"status":(?P<class>[0-9])'
        '[0-9][0-9],.*"request_time":(?P<time>[0-9.]+),/ {\n'
        "  bgci_requests_total[$env][$sha][$role][$class]++\n"
        "  bgci_request_duration_seconds[$env][$sha][$role] = float($time)\n"
        "}\n")
    result = subprocess.run(["/usr/bin/time", "-f", "%U %S", mtail, "--one_shot", "--one_shot_format=prometheus",
                             "--progs", str(prog), "--logs", str(log), "--logtostderr"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"   mtail: failed: {result.stderr.strip().splitlines()[-1:]}")
        return
    user, system = map(float, result.stderr.strip().splitlines()[-1].split())
    counted = sum(float(m) for m in re.findall(r"^bgci_requests_total\{.*\} (\S+)$", result.stdout, re.MULTILINE))
    print(f"   mtail --one_shot: {(user + system) / len(lines) * 1e6:.1f} us CPU per line including its start "
          f"({counted:.0f} of {len(lines)} lines counted)")


def analyze_overhead(root: Path, backends: NginxBackends, runs: int, window: float) -> None:
    scheduler = BackendScheduler(backends)
    exporter_address = f"127.0.0.1:{free_port()}"
    prometheus = Prometheus(root / "prometheus", [exporter_address]).start()
    lag = 3.0
    settings = settings_for(root / "analyze", True, MetricsSettings(prometheus_url=prometheus.url, lag=lag,
                                                                    targets_file="", max_error_ratio=0.01))
    router = NginxRouter.from_settings(settings)
    router.start()
    bgci = make_bgci(settings, scheduler)
    bgci.promote("blue")
    exporter = Exporter.from_settings(settings)
    exporter.start(exporter_address)
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        session.trust_env = False
        while not stop.is_set():
            session.get(router.base_url + "/", headers={"Host": router.site.server_name}, timeout=5)
            time.sleep(0.01)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    totals, queries = [], []
    try:
        wait_for(lambda: prometheus.query('up{job="bgci"} == 1'), 30, "no scrape")
        for run in range(runs):
            target = "green" if run % 2 == 0 else "blue"
            started = time.monotonic()
            outcome = bgci.promote_analyzed(target, bgci.criteria(window=window))
            totals.append(time.monotonic() - started)
            assert outcome.analysis.passed, outcome.analysis.describe()
            q0 = time.monotonic()
            bgci.analyze(target, bgci.criteria(window=window, role="live"))
            queries.append(time.monotonic() - q0)
    finally:
        stop.set()
        thread.join(timeout=10)
        exporter.stop()
        router.stop()
        prometheus.stop()
    overhead = [t - window - lag for t in totals]
    print(f"2. promote --analyze, window {window:g} s, lag {lag:g} s, {runs} runs (real Prometheus, 1 s scrapes):")
    print(f"   promote-to-verdict: median {statistics.median(totals):.2f} s (min {min(totals):.2f}, "
          f"max {max(totals):.2f})")
    print(f"   beyond window + lag: median {statistics.median(overhead):.3f} s "
          f"(of which the three PromQL queries: median {statistics.median(queries) * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bgci-bench-metrics-") as temp:
        root = Path(temp)
        backends = NginxBackends(root / "backends")
        try:
            log = access_log_cost(root, backends, args.requests, args.runs)
            reader_cost(log)
            analyze_overhead(root, backends, args.runs, args.window)
        finally:
            backends.stop()


if __name__ == "__main__":
    main()
