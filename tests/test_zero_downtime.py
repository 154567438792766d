"""No failed request while the live name switches: 20 alternating promotes and rollbacks under load.

A load generator (8 threads) asks nginx for the live name during the switches
between two real environments of the sample app, twice: with a new connection
per request, and with keep-alive connections.

Failed = a non-2xx answer or a transport error. With keep-alive, a graceful
reload makes the old workers close their idle connections, and a request sent on
one at that instant gets no answer. Clients may retry an idempotent request once
on a new connection in exactly that case (RFC 9110 9.2.2, as browsers do): the
load generator does so, counts those retries and reports them; any other error,
or a failed retry, is a failure.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import pytest

from tests.conftest import SampleBuild
from tests.test_promote import BlueGreen, start_blue_green, stop_blue_green

SWITCHES = 20
CONNECTIONS = 8
PAUSE = 0.25  # seconds of load on each environment between switches
# A guard, not a target: the new environment must answer eventually. How soon (the target is within
# 0.5 s of `bgci promote` starting) is measured by benchmarks/switch.py, not asserted on a shared machine.
SERVES_WITHIN = 10.0
NO_ANSWER = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass
class Answer:
    sent: float
    done: float
    env: str


@dataclass
class Load:
    """What the load generator saw."""

    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_env(self) -> Counter[str]:
        return Counter(a.env for a in self.answers)


class LoadGenerator:
    """CONNECTIONS threads sending GET / for the live name through nginx until stopped."""

    def __init__(self, bg: BlueGreen, keep_alive: bool) -> None:
        self.bg, self.keep_alive = bg, keep_alive
        self.address, port = bg.router.base_url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.load = Load()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CONNECTIONS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self.load

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.address, self.port, timeout=10)

    def _run(self) -> None:
        connection, used = self._connect(), False
        while not self.stopping.is_set():
            if not self.keep_alive:
                connection, used = self._connect(), False
            sent = time.monotonic()
            try:
                status, env, body = self._get(connection)
            except NO_ANSWER as exc:
                if not used:  # a new connection got no answer: a real failure, never retried
                    self._fail(f"no answer on a new connection: {exc!r}")
                    connection = self._connect()
                    continue
                # The reused connection was closed by the reload: retry once, on a new connection.
                with self.load.lock:
                    self.load.retries += 1
                connection.close()
                connection, used = self._connect(), False
                try:
                    status, env, body = self._get(connection)
                except OSError as retry_exc:
                    self._fail(f"retry failed: {retry_exc!r}")
                    connection = self._connect()
                    continue
            except OSError as exc:
                self._fail(f"transport error: {exc!r}")
                connection, used = self._connect(), False
                continue
            used = True
            self._check(sent, status, env, body)
            if not self.keep_alive:
                connection.close()
        connection.close()

    def _get(self, connection: http.client.HTTPConnection) -> tuple[int, str | None, str]:
        connection.request("GET", "/", headers={"Host": self.bg.settings.nginx.server_name})
        response = connection.getresponse()
        body = response.read().decode().strip()
        return response.status, response.getheader(self.bg.settings.nginx.env_header), body

    def _check(self, sent: float, status: int, env: str | None, body: str) -> None:
        if not 200 <= status < 300:
            self._fail(f"HTTP {status} from {env}: {body[:80]}")
        elif env not in self.bg.shas or self.bg.shas[env] != body:
            self._fail(f"answer from outside the two environments: {env} {body[:80]}")
        else:
            with self.load.lock:
                self.load.answers.append(Answer(sent, time.monotonic(), env))

    def _fail(self, reason: str) -> None:
        with self.load.lock:
            self.load.failures.append(reason)


@dataclass
class SwitchTiming:
    started: float  # promote/rollback called
    reloaded: float  # nginx signalled: the switch itself
    returned: float  # promote/rollback returned (verified)
    to: str


@pytest.fixture(scope="module")
def bg(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, sample_build: SampleBuild,
       sample_build_b: SampleBuild) -> Iterator[BlueGreen]:
    setup = start_blue_green(tmp_path_factory.mktemp("zero-downtime"), docker_client, sample_build, sample_build_b)
    yield setup
    stop_blue_green(setup.router, setup.service.scheduler, [setup.blue, setup.green])


def switch_under_load(bg: BlueGreen, load: Load) -> list[SwitchTiming]:
    """SWITCHES alternating promotes (to green) and rollbacks (to blue), PAUSE seconds apart."""
    timings = []
    time.sleep(PAUSE)
    for i in range(SWITCHES):
        started = time.monotonic()
        result = bg.deployer.promote(bg.green) if i % 2 == 0 else bg.deployer.rollback()
        timings.append(SwitchTiming(started, bg.router.control.reloaded_at, time.monotonic(), result.live))
        time.sleep(PAUSE)
    return timings


def first_answer_after(load: Load, since: float, env: str) -> float:
    """Seconds from `since` to the first answer from `env` to a request sent after it."""
    done = [a.done for a in load.answers if a.env == env and a.sent >= since]
    return min(done) - since if done else float("inf")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("keep_alive", [False, True], ids=["new-connection-per-request", "keep-alive"])
def test_no_failed_request_during_20_switches(bg: BlueGreen, keep_alive: bool,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bg.deployer.promote(bg.blue)
    with LoadGenerator(bg, keep_alive) as load:
        timings = switch_under_load(bg, load)

    # From nginx's reload (the switch) and, for the record, from the promote/rollback call (which
    # also asks the scheduler and probes every instance first).
    latencies = [first_answer_after(load, t.reloaded, t.to) for t in timings]
    from_call = [first_answer_after(load, t.started, t.to) for t in timings]
    # Answers to requests sent after a switch returned: must all come from the new environment.
    stale = sum(1 for t, nxt in zip(timings, [*timings[1:], None], strict=True) for a in load.answers
                if a.sent >= t.returned and (nxt is None or a.done < nxt.started) and a.env != t.to)
    with capsys.disabled():
        print(f"\n[zero-downtime {'keep-alive' if keep_alive else 'new connection per request'}] "
              f"requests={len(load.answers) + len(load.failures)} failed={len(load.failures)} "
              f"retries={load.retries} by_env={dict(load.by_env())} stale_after_return={stale} "
              f"reload→first-new-answer median={statistics.median(latencies) * 1000:.0f}ms "
              f"max={max(latencies) * 1000:.0f}ms; call→first-new-answer median="
              f"{statistics.median(from_call) * 1000:.0f}ms max={max(from_call) * 1000:.0f}ms; "
              f"promote/rollback call median="
              f"{statistics.median(t.returned - t.started for t in timings) * 1000:.0f}ms "
              f"max={max(t.returned - t.started for t in timings) * 1000:.0f}ms")

    # Zero failed requests: no non-2xx, no transport error (after at most one retry on a reused connection).
    assert load.failures == []
    # Every answer came from one of the two environments (checked per answer in _check), and both served.
    assert set(load.by_env()) == {bg.blue, bg.green}
    # The load really ran through every switch: at least a few requests per pause per connection.
    assert len(load.answers) > SWITCHES * CONNECTIONS
    # After each switch the new environment answers (how soon: benchmarks/switch.py).
    assert max(latencies) <= SERVES_WITHIN, latencies
    # Once promote/rollback returned, no new request reached the old environment.
    assert stale == 0
    if not keep_alive:
        # A new connection per request never meets a closed idle connection, so never retries.
        assert load.retries == 0
    else:
        # Each reload can close each idle connection at most once.
        assert load.retries <= SWITCHES * CONNECTIONS
    assert bg.live()[1] == bg.blue  # 20 switches, even: back on blue
