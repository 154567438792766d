"""`bgci promote|rollback --report FILE.html` under load, with real nginx and the sample app; the page in Chromium.

A load generator (a few threads, a new connection per request, each request
marked `/?load`) asks nginx for the live name while `bgci promote --report` runs
as a real subprocess. The page's counts must be the generator's answers in the
window, give or take the requests finishing within EDGE of the window's ends,
plus bgci's own verification requests (read from nginx's log: the only other
requests to the live name). Then headless Chromium (Debian's `chromium`) renders
the page to a PNG, read back with the stdlib (zlib): both environments' colours
must be on screen.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import docker
import pytest

from bgci.reports.charts import colours_for
from tests.conftest import SampleBuild
from tests.test_promote import BlueGreen, bgci, error_line, start_blue_green, stop_blue_green

LOAD_URI = "/?load"
THREADS = 3
PAUSE = 0.01  # between requests of one thread: a steady load that leaves the shared CPUs to nginx and the app
EDGE = 0.5  # seconds: a request finishing this close to the window's ends may fall on either side


@dataclass
class Answer:
    sent: float  # wall clock, like nginx's $msec
    done: float
    env: str
    status: int


@dataclass
class LoadGenerator:
    """THREADS threads asking nginx for the live name (GET /?load, a new connection each) until stopped."""

    bg: BlueGreen
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> LoadGenerator:
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self) -> None:
        while not self.stopping.is_set():
            sent = time.time()
            try:
                status, env = get(self.bg, LOAD_URI)
            except OSError as exc:
                with self.lock:
                    self.failures.append(repr(exc))
                continue
            with self.lock:
                self.answers.append(Answer(sent, time.time(), env, status))
                if status != 200:
                    self.failures.append(f"HTTP {status} from {env}")
            time.sleep(PAUSE)

    def count(self, start: float, end: float) -> Counter[str]:
        """Answers by environment that finished in [start, end)."""
        with self.lock:
            return Counter(a.env for a in self.answers if start <= a.done < end)


def get(bg: BlueGreen, uri: str) -> tuple[int, str]:
    host, port = bg.router.base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", uri, headers={"Host": bg.settings.nginx.server_name})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader(bg.settings.nginx.env_header) or ""
    finally:
        connection.close()


@dataclass
class Page:
    """What the report page says, read from its HTML."""

    html: str
    window: tuple[float, float]
    figures: dict[str, str]
    env_requests: dict[str, int]  # the environments table
    env_phases: dict[str, list[int]]  # before, during, after
    series: list[str]  # the rps chart's series, in order

    @classmethod
    def read(cls, path: Path) -> Page:
        html = path.read_text()
        body = re.search(r'<body data-window-start="([\d.]+)" data-window-end="([\d.]+)"', html)
        assert body, html[:500]
        figures = dict(re.findall(r'data-figure="([\w-]+)">([^<]*)<', html))
        rows = re.findall(r'<tr data-env="([^"]*)" data-requests="(\d+)">(.*?)</tr>', html, re.DOTALL)
        phases = {env: [int(n) for n in re.findall(r'<td class="n">(\d+)</td>', row)[:3]] for env, _, row in rows}
        return cls(html, (float(body[1]), float(body[2])), figures, {env: int(n) for env, n, _ in rows}, phases,
                   re.findall(r'<g class="series" data-env="([^"]+)"', html))


def other_requests(bg: BlueGreen, start: float, end: float) -> Counter[str]:
    """Requests to the live name in [start, end) that the load generator did not send: bgci's verifications."""
    counts: Counter[str] = Counter()
    for line in bg.router.layout.requests_log.read_text().splitlines():
        entry = json.loads(line)
        if entry["role"] == "live" and start <= entry["msec"] < end and entry["uri"] != LOAD_URI:
            assert entry["method"] == "GET" and entry["uri"] == "/", entry
            counts[entry["env"]] += 1
    return counts


@dataclass
class Switched:
    report: Path
    page: Page
    load: LoadGenerator
    result: subprocess.CompletedProcess[str]


def switch_with_report(bg: BlueGreen, report: Path, *args: str, before: float, after: float,
                       during_load: tuple[str, ...] = ()) -> Switched:
    """Run `bgci <args> --report` under load that starts `before` + 1 s earlier; `during_load` are extra
    URIs asked once each 1 s before the command starts."""
    with LoadGenerator(bg) as load:
        time.sleep(before + 1 - (1 if during_load else 0))
        if during_load:
            time.sleep(1)
            for uri in during_load:
                get(bg, uri)
        result = bgci(bg, *args, "--report", str(report), "--report-before", f"{before:g}",
                      "--report-after", f"{after:g}")
    assert result.returncode == 0, result.stderr
    assert load.failures == []
    return Switched(report, Page.read(report), load, result)


@pytest.fixture(scope="module")
def bg(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, sample_build: SampleBuild,
       sample_build_b: SampleBuild, tested_builds: tuple[SampleBuild, SampleBuild]) -> Iterator[BlueGreen]:
    setup = start_blue_green(tmp_path_factory.mktemp("switch-report"), docker_client, sample_build, sample_build_b)
    yield setup
    stop_blue_green(setup.router, setup.service.scheduler, [setup.blue, setup.green])


@pytest.fixture(scope="module")
def promoted(bg: BlueGreen, tmp_path_factory: pytest.TempPathFactory) -> Switched:
    """blue live, then `bgci promote green --report` under load: 3 s before the switch, 3 s after."""
    bg.deployer.promote(bg.blue)
    return switch_with_report(bg, tmp_path_factory.mktemp("report") / "promote.html", "promote", bg.green,
                              before=3, after=3)


@pytest.mark.docker
def test_promote_report_counts_the_requests_of_both_environments(bg: BlueGreen, promoted: Switched) -> None:
    page, load = promoted.page, promoted.load
    start, end = page.window
    assert end - start == pytest.approx(6, abs=1.0)  # 3 s + the switch + 3 s
    # The command said it waits for the traffic after the switch, and what it wrote.
    assert "switch report: collecting traffic" in promoted.result.stderr
    assert f"switch report: {promoted.report}:" in promoted.result.stderr

    assert page.figures["failed"] == "0" and page.figures["failed-app"] == page.figures["failed-nginx"] == "0"
    assert page.series == [bg.blue, bg.green]  # the environment left behind first
    assert page.env_phases[bg.blue][0] > 0 and page.env_phases[bg.green][2] > 0  # before: blue; after: green
    assert page.env_phases[bg.blue][2] == 0 and page.env_phases[bg.green][0] == 0
    # The page's counts are the generator's answers in the window (± the edges) plus bgci's verifications.
    others = other_requests(bg, start, end)
    inner, outer = load.count(start + EDGE, end - EDGE), load.count(start - EDGE, end + EDGE)
    total = int(page.figures["requests"])
    assert sum(inner.values()) <= total - sum(others.values()) <= sum(outer.values())
    for env in (bg.blue, bg.green):
        assert inner[env] <= page.env_requests[env] - others[env] <= outer[env], (env, inner, outer, others)
    assert sum(page.env_requests.values()) == total and sum(inner.values()) > 6 * THREADS
    assert 'data-figure="verdict">no analysis run<' in page.html


@pytest.mark.docker
def test_rollback_report_shows_the_way_back_and_counts_failed_requests(bg: BlueGreen, promoted: Switched,
                                                                      tmp_path: Path) -> None:
    missing = ("/missing-1", "/missing-2", "/missing-3")  # the app answers 404: failed requests
    rolled = switch_with_report(bg, tmp_path / "rollback.html", "rollback", before=4, after=2, during_load=missing)
    page = rolled.page
    assert "<h1>" in page.html and f"rollback to <span class=\"env\">{bg.blue}</span>" in page.html
    assert page.series == [bg.green, bg.blue]  # green is left behind now
    assert page.env_phases[bg.green][0] > 0 and page.env_phases[bg.blue][2] > 0
    assert (page.figures["failed"], page.figures["failed-app"], page.figures["failed-nginx"]) == ("3", "3", "0")
    assert page.html.count('<rect class="failed"') >= 1
    assert all(f"GET {uri}" in page.html for uri in missing)


# -- the page in a browser ----------------------------------------------------------------------------
def chromium() -> str:
    """Debian's chromium (scripts/setup.sh installs it); missing, the test skips, or fails under CI=true."""
    binary = shutil.which("chromium")
    if binary is None:
        message = "chromium not found: apt-get install --no-install-recommends chromium (scripts/setup.sh does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def headless(*args: str) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: Chromium refuses to run as root with its sandbox.
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-dev-shm-usage", *args], capture_output=True, text=True, timeout=120)


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG, with the stdlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunk = data[position + 8:position + 8 + length]
        header, idat = (chunk, idat) if kind == b"IHDR" else (header, idat + chunk if kind == b"IDAT" else idat)
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    size = 3 if colour == 2 else 4
    raw, stride, rows, previous = zlib.decompress(idat), width * size, [], bytes(width * size)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - size] if i >= size else 0
            b, c = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = bytes(line)
    return width, height, [bytes(r[i] for i in range(len(r)) if i % size < 3) for r in rows]


class TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.docker
def test_the_report_renders_in_headless_chromium(bg: BlueGreen, promoted: Switched) -> None:
    screenshot = promoted.report.with_suffix(".png")
    shot = headless(f"--screenshot={screenshot}", "--window-size=1200,900", promoted.report.as_uri())
    assert screenshot.is_file(), shot.stderr
    width, height, rows = read_png(screenshot)
    assert (width, height) == (1200, 900)
    pixels = Counter(row[i:i + 3] for row in rows for i in range(0, len(row), 3))
    not_white = sum(n for rgb, n in pixels.items() if min(rgb) < 240)
    assert not_white > width * height // 50, "the page rendered (almost) blank"
    # Both environments' lines are on screen, in their colours (a line's pixels match exactly).
    for env, colour in colours_for([bg.blue, bg.green]).items():
        rgb = bytes.fromhex(colour[1:])
        assert pixels[rgb] > 100, f"{env}'s colour {colour} is not on the screenshot"

    dom = headless("--dump-dom", promoted.report.as_uri())
    assert dom.returncode == 0, dom.stderr
    parser = TextOf()
    parser.feed(dom.stdout)
    text = " ".join(parser.text)
    assert bg.blue in text and bg.green in text and "Failed requests" in text
    assert re.findall(r'<g class="series" data-env="([^"]+)"', dom.stdout) == [bg.blue, bg.green]


@pytest.mark.docker
def test_a_report_that_cannot_be_written_is_an_error_after_the_switch(bg: BlueGreen, promoted: Switched) -> None:
    target = bg.green if bg.live()[1] == bg.blue else bg.blue
    result = bgci(bg, "promote", target, "--report", "/proc/bgci/switch.html", "--report-before", "0",
                  "--report-after", "0")
    assert result.returncode == 1
    assert error_line(result).startswith("Error: --report: cannot write the switch report to /proc/bgci/switch.html")
    assert f"the promote itself succeeded; {target} is live" in result.stderr
    assert bg.live()[1] == target
