"""`bgci env logs` without a daemon: --since, the engine's timestamps, the merges and the sandbox reader."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from bgci.errors import ConfigError
from bgci.logs import TimeOrderedBuffer, format_line, merge_by_time, parse_engine_line, parse_since
from bgci.schedulers.base import EnvironmentSpec, LogLine
from bgci.schedulers.marathon.definition import MarathonOptions, app_definition
from bgci.schedulers.marathon.sandbox import SandboxFile, sandbox_directory
from tests.emulators.marathon import DEFAULT_SCHEMA_PATH

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_since_takes_durations_and_iso_times() -> None:
    assert parse_since("10m", NOW) == at(-600)
    assert parse_since("30s", NOW) == at(-30)
    assert parse_since("2h", NOW) == at(-7200)
    assert parse_since("1h30m", NOW) == at(-5400)
    assert parse_since("1.5s", NOW) == at(-1.5)
    assert parse_since("2024-05-01T11:00:00Z") == at(-3600)
    assert parse_since("2024-05-01T13:00:00+02:00") == at(-3600)
    # No offset: local time, as `docker logs --since` reads it.
    assert parse_since("2024-05-01T11:00:00") == datetime(2024, 5, 1, 11, 0).astimezone().astimezone(UTC)
    for bad in ("yesterday", "10", "10x", "m", ""):
        with pytest.raises(ConfigError, match="neither a duration") as caught:
            parse_since(bad, NOW)
        assert caught.value.option == "since"  # the CLI names --since


def test_engine_lines_keep_their_timestamp_and_text() -> None:
    # What the engine writes with timestamps=true: RFC 3339 with nanoseconds, trailing zeros trimmed.
    line = parse_engine_line("web.1", "2024-05-01T12:00:00.123456789Z GET / 200")
    assert line == LogLine("web.1", NOW.replace(microsecond=123456), "GET / 200")
    assert parse_engine_line("web.1", "2024-05-01T12:00:00Z x").time == NOW
    assert parse_engine_line("web.1", "2024-05-01T12:00:00.5Z  two spaces").text == " two spaces"
    assert parse_engine_line("web.1", "no stamp here") == LogLine("web.1", None, "no stamp here")
    assert format_line(LogLine("web.1", None, "hello"), 6) == "web.1  | hello"


def test_merge_is_by_time_and_keeps_each_instance_in_order() -> None:
    one = [LogLine("a.1", at(0), "a0"), LogLine("a.1", at(2), "a2"), LogLine("a.1", at(2), "a2b")]
    two = [LogLine("a.2", at(1), "b1"), LogLine("a.2", at(2), "b2"), LogLine("a.2", at(3), "b3")]
    # Ties (same time) keep instance order; each instance's own lines never swap.
    assert [line.text for line in merge_by_time([one, two])] == ["a0", "b1", "a2", "a2b", "b2", "b3"]


def test_following_releases_a_line_once_every_live_stream_passed_it_or_after_the_window() -> None:
    now = [0.0]
    buffer = TimeOrderedBuffer(["a", "b"], window=0.3, clock=lambda: now[0])
    buffer.add("a", LogLine("a", at(2), "a2"))
    assert buffer.ready() == []  # b said nothing yet: it might still have an earlier line
    buffer.add("b", LogLine("b", at(1), "b1"))
    # b reached 1, a reached 2: b1 is safe, a2 must wait for b to pass 2.
    assert [line.text for line in buffer.ready()] == ["b1"]
    assert buffer.next_due() == pytest.approx(0.3)
    now[0] = 0.31  # b stays silent: the window lets a2 go
    assert [line.text for line in buffer.ready()] == ["a2"]
    # A stream that ended holds nobody back.
    buffer.add("a", LogLine("a", at(5), "a5"))
    buffer.end("b")
    assert [line.text for line in buffer.ready()] == ["a5"] and len(buffer) == 0


# -- Marathon: the body and the sandbox reader --------------------------------------------------------------
def spec() -> EnvironmentSpec:
    return EnvironmentSpec(name="shop-abc", app="shop", sha="a" * 40, image="registry.test/shop@sha256:" + "b" * 64,
                           digest="sha256:" + "b" * 64, instances=2, container_port=8000, health_path="/health",
                           created_by="ci", created_at="2024-05-01T12:00:00Z")


def test_log_driver_and_options_become_docker_parameters_that_marathon_accepts(marathon_reference: Path) -> None:
    options = MarathonOptions(log_driver="fluentd", log_options=(("fluentd-address", "127.0.0.1:24224"),
                                                                 ("tag", "shop.{{.Name}}")))
    body = app_definition("/shop/shop-abc", spec(), options)
    # Mesos passes each parameter to `docker run` as --key value: --log-driver fluentd --log-opt k=v.
    assert body["container"]["docker"]["parameters"] == [
        {"key": "log-driver", "value": "fluentd"}, {"key": "log-opt", "value": "fluentd-address=127.0.0.1:24224"},
        {"key": "log-opt", "value": "tag=shop.{{.Name}}"}]
    validator = jsonschema.Draft4Validator(json.loads(DEFAULT_SCHEMA_PATH.read_text()))
    assert [e.message for e in validator.iter_errors(body)] == []
    # Unset: no parameters at all (the agent's default driver).
    assert "parameters" not in app_definition("/shop/shop-abc", spec(), MarathonOptions())["container"]["docker"]


class FileAgent:
    """/files/read over one in-memory file, as Mesos answers it (offset -1: the size; 16-page cap)."""

    def __init__(self, content: bytes, cap: int = 65536) -> None:
        self.content, self.cap, self.calls = content, cap, []

    def read(self, path: str, offset: int, length: int | None = None) -> tuple[bytes, int] | None:
        self.calls.append((offset, length))
        size = len(self.content)
        offset = size if offset == -1 else offset
        length = min(size - offset if length is None else length, self.cap)
        return (b"", size) if offset >= size else (self.content[offset:offset + length], offset)


@pytest.mark.parametrize(("content", "count", "expected"), [
    (b"a\nb\nc\n", 2, ["b", "c"]),
    (b"a\nb\nc\n", 5, ["a", "b", "c"]),
    (b"a\nb\nc", 2, ["b"]),  # "c" is not ended yet: it comes when its newline does
    (b"a\nb\nc\n", 0, []),
    (b"", 3, []),
])
def test_sandbox_tail_counts_lines_back_from_the_size(content: bytes, count: int, expected: list[str]) -> None:
    sandbox_file = SandboxFile("t1", FileAgent(content), "/sandbox/stdout")  # type: ignore[arg-type]
    sandbox_file.seek_tail(count)
    assert [line.text for line in sandbox_file.read_new()] == expected


def test_sandbox_reads_in_chunks_and_follows_growth() -> None:
    agent = FileAgent(b"".join(b"line %d\n" % i for i in range(1000)), cap=100)  # many capped reads
    sandbox_file = SandboxFile("t1", agent, "/sandbox/stdout")  # type: ignore[arg-type]
    sandbox_file.seek_tail(3)
    assert [line.text for line in sandbox_file.read_new()] == ["line 997", "line 998", "line 999"]
    agent.content += b"line 1000\nhalf"
    assert [line.text for line in sandbox_file.read_new()] == ["line 1000"]
    agent.content += b" done\n"
    assert [line.text for line in sandbox_file.read_new()] == ["half done"]


def test_the_sandbox_is_the_executor_directory_of_the_task() -> None:
    state = {"frameworks": [{"id": "fw", "executors": [
        {"id": "other", "directory": "/x/other", "tasks": [{"id": "other"}]},
        {"id": "default-executor", "directory": "/x/pod", "tasks": [{"id": "shop_a.instance-2"}]},
        {"id": "shop_a.instance-1", "directory": "/x/one", "tasks": []}],
        "completed_executors": [{"id": "gone", "directory": "/x/gone", "completed_tasks": [{"id": "gone"}]}]}]}
    assert sandbox_directory(state, "shop_a.instance-1", "state") == "/x/one"  # executor id = task id
    assert sandbox_directory(state, "shop_a.instance-2", "state") == "/x/pod"  # an executor running it
    assert sandbox_directory(state, "gone", "state") == "/x/gone"
    assert sandbox_directory(state, "unknown", "state") is None
