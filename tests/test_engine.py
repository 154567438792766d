"""The light engine client (bgci.engine) against the real engine, the stdlib probes, and what promote and
`bgci test` import.

`bgci promote` reads the engine through bgci.engine and probes over bgci.http11, and `bgci test`
runs its container through bgci.engine, so neither process imports requests, urllib3,
charset_normalizer, docker-py or the stdlib's http.client (with email and ssl). Each call of a test
run is checked here, through the light client and through DockerPyEngine (docker-py, for TLS
engines): the same answers from both.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from bgci import labels, testing
from bgci.dockerhost import engine_errors
from bgci.engine import (
    DockerPyEngine,
    DockerPyReader,
    Engine,
    EngineAPIError,
    EngineClient,
    connect,
    encode_auth,
    uses_tls,
)
from bgci.errors import DockerUnavailable, ImageNotFound, SchedulerError
from bgci.probe import check_health, get
from tests.conftest import remove_app_images
from tests.support import BASE_IMAGE, free_port, unique_app_name

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("requests", "urllib3", "charset_normalizer", "docker",
         "http.client", "ssl", "email")  # the stdlib's HTTP client: email, and OpenSSL's start (bgci.http11)
PROMOTE_PATH = ("bgci.cli", "bgci.cli.router_cmds", "bgci.app", "bgci.deployer", "bgci.router",
                "bgci.schedulers.local", "bgci.gate", "bgci.probe", "bgci.engine", "bgci.state")


# -- the engine client -------------------------------------------------------------------------------------
@pytest.fixture
def labelled(docker_client: docker.DockerClient) -> Iterator[str]:
    """A label value on two created (never started) containers of our own."""
    value = unique_app_name("engine")
    made = [docker_client.containers.create(BASE_IMAGE, command="true", labels={"io.bgci.test": value})
            for _ in range(2)]
    try:
        yield value
    finally:
        for container in made:
            container.remove(force=True, v=True)


def test_containers_equal_docker_py_listing(docker_client: docker.DockerClient, labelled: str) -> None:
    filters = {"label": [f"io.bgci.test={labelled}"]}
    light = EngineClient().containers(all=True, filters=filters)
    assert len(light) == 2
    assert light == docker_client.api.containers(all=True, filters=filters)
    assert EngineClient().containers(all=True, filters={"label": f"io.bgci.test={labelled}"}) == light
    assert EngineClient().containers(all=False, filters=filters) == []  # created, not running
    assert DockerPyReader(docker_client).containers(all=True, filters=filters) == light


def test_inspect_image_equals_docker_py(docker_client: docker.DockerClient) -> None:
    attrs = EngineClient().inspect_image(BASE_IMAGE)
    assert attrs is not None and attrs["Id"] == docker_client.images.get(BASE_IMAGE).attrs["Id"]
    assert EngineClient().inspect_image(f"{unique_app_name()}:missing") is None
    assert DockerPyReader(docker_client).inspect_image(f"{unique_app_name()}:missing") is None


def test_a_dead_socket_is_docker_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DockerUnavailable, match=r"list containers: Docker daemon not answering at "
                                                r"unix://.*/nosock: .*No such file") as caught:
        EngineClient(f"unix://{tmp_path}/nosock").containers()
    assert caught.value.exit_code == 4 and "DOCKER_HOST" in caught.value.hint
    with pytest.raises(DockerUnavailable, match="refused"):
        EngineClient(f"tcp://127.0.0.1:{free_port()}").inspect_image(BASE_IMAGE)
    # connect() asks the engine first, as bgci.dockerhost.connect() does.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nosock")
    with pytest.raises(DockerUnavailable, match=r"^connect to the Docker engine: Docker daemon not answering"):
        connect()


def test_engine_refusals_become_the_stage_error() -> None:
    with pytest.raises(EngineAPIError, match="No such container") as caught:
        EngineClient().get_json("/containers/bgci-no-such-container/json", "inspect")
    assert caught.value.status_code == 404
    with pytest.raises(SchedulerError, match=r"^inspect x: the Docker engine said: No such container"), \
            engine_errors("inspect x", SchedulerError):
        EngineClient().get_json("/containers/bgci-no-such-container/json", "inspect")
    with pytest.raises(KeyError), engine_errors("anything"):  # not an engine error: as it is
        raise KeyError("x")


def test_tls_engines_are_left_to_docker_py() -> None:
    assert not uses_tls({})
    assert not uses_tls({"DOCKER_HOST": "unix:///run/docker.sock"})
    assert not uses_tls({"DOCKER_HOST": "tcp://10.0.0.1:2375"})
    assert uses_tls({"DOCKER_HOST": "tcp://10.0.0.1:2376", "DOCKER_TLS_VERIFY": "1"})
    assert uses_tls({"DOCKER_HOST": "tcp://10.0.0.1:2376", "DOCKER_CERT_PATH": "/certs"})
    assert uses_tls({"DOCKER_HOST": "ssh://me@host"})
    assert encode_auth({"username": "u", "password": "p"}) == "eyJ1c2VybmFtZSI6ICJ1IiwgInBhc3N3b3JkIjogInAifQ=="


# -- a test run's calls, through both clients --------------------------------------------------------------
@pytest.fixture(params=["light", "docker-py"])
def engine(request: pytest.FixtureRequest, docker_client: docker.DockerClient) -> Engine:
    return EngineClient() if request.param == "light" else DockerPyEngine(docker_client)


@pytest.fixture
def create(engine: Engine) -> Iterator[Callable[..., str]]:
    """Create a container of the base image through `engine`; every one is removed at the end."""
    made: list[str] = []

    def create_container(command: list[str], environment: dict[str, str] | None = None) -> str:
        made.append(engine.create_container(BASE_IMAGE, command, environment=environment or {},
                                            name=unique_app_name("engine"), labels={"io.bgci.test": "engine"}))
        return made[-1]

    yield create_container
    for container_id in made:
        engine.remove_container(container_id)


def test_create_container_equals_docker_py(docker_client: docker.DockerClient) -> None:
    # The light client's body gives the container docker-py's containers.create gives: same config,
    # same host config (the engine fills in the same defaults), so a test runs as it did.
    arguments = {"environment": {"A": "1", "B": "two words"}, "labels": {"io.bgci.test": "create"}}
    light_id = EngineClient().create_container(BASE_IMAGE, ["sh", "-c", "exit 0"], name=unique_app_name("light"),
                                               **arguments)
    heavy = docker_client.containers.create(BASE_IMAGE, command=["sh", "-c", "exit 0"], name=unique_app_name("heavy"),
                                            detach=True, **arguments)
    try:
        light = docker_client.api.inspect_container(light_id)
        assert {**light["Config"], "Hostname": ""} == {**heavy.attrs["Config"], "Hostname": ""}
        assert light["HostConfig"] == heavy.attrs["HostConfig"]
        assert light["Config"]["Env"][-2:] == ["A=1", "B=two words"]
    finally:
        docker_client.api.remove_container(light_id, force=True)
        heavy.remove(force=True)


def test_a_container_s_run(engine: Engine, create: Callable[..., str]) -> None:
    container_id = create(["sh", "-c", "echo out1; sleep 0.3; echo err1 >&2; sleep 0.3; echo out2; "
                                       "echo $GREETING > /tmp/report.xml"], {"GREETING": "hello"})
    # The engine stats a path of a created container (the image's files): a missing one is a 404.
    assert engine.archive_stat(container_id, "/tmp/report.xml") is None
    assert engine.archive_stat(container_id, "/etc")["name"] == "etc"  # type: ignore[index]
    engine.start_container(container_id)
    # Followed: stdout and stderr come in one stream, in the order written (the engine copies each
    # from its own pipe, so the sleeps keep the order definite), and the stream ends when the container does.
    assert b"".join(engine.logs(container_id, follow=True)) == b"out1\nerr1\nout2\n"
    assert engine.wait_container(container_id, timeout=30) == 0
    # The engine's own selection of a stream: frames of stream 2 only.
    assert b"".join(engine.logs(container_id, stderr=True, stdout=False)) == b"err1\n"
    stat = engine.archive_stat(container_id, "/tmp/report.xml")
    assert stat is not None and (stat["name"], stat["size"]) == ("report.xml", 6) and stat["mtime"]
    archive = engine.get_archive(container_id, "/tmp/report.xml")
    assert archive is not None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        assert member is not None and tar.extractfile(member).read() == b"hello\n"  # type: ignore[union-attr]
    assert engine.get_archive(container_id, "/tmp/nothing") is None


def test_a_long_line_and_a_big_output_are_read_whole(engine: Engine, create: Callable[..., str]) -> None:
    # The engine's log copier cuts a line longer than 16 KiB into several messages, each its own
    # frame; run_suite's reader joins them back into one line. 100,000 more lines: ~600 KB of frames.
    container_id = create(["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo; seq 1 100000"])
    engine.start_container(container_id)
    assert engine.wait_container(container_id, timeout=60) == 0
    chunks = list(engine.logs(container_id))
    before_newline = next(i for i, chunk in enumerate(chunks) if b"\n" in chunk)
    assert before_newline >= 2 and b"".join(chunks[:before_newline + 1]).index(b"\n") == 40000
    assert b"".join(chunks) == b"x" * 40000 + b"\n" + "".join(f"{n}\n" for n in range(1, 100001)).encode()
    # What run_suite streams: line by line, the long line whole, the last lines kept for the report.
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=testing.OUTPUT_TAIL_LINES)
    testing._stream_output(engine, container_id, lines.append, tail)
    assert lines == ["x" * 40000, *(str(n) for n in range(1, 100001))]
    assert list(tail) == [str(n) for n in range(99961, 100001)]


def test_a_wait_times_out_then_the_container_is_killed(engine: Engine, create: Callable[..., str]) -> None:
    container_id = create(["sleep", "60"])
    engine.start_container(container_id)
    # The engine sends the wait's headers at once and its body at the exit: the timeout ends the wait.
    started = time.monotonic()
    assert engine.wait_container(container_id, timeout=1) is None
    assert 1 <= time.monotonic() - started < 10
    engine.kill_container(container_id)
    assert engine.wait_container(container_id, timeout=30) == 137  # 128 + SIGKILL
    # Killing a container that is not running is a refusal (409), which run_suite takes as "it exited".
    with pytest.raises(EngineAPIError) as refused:
        engine.kill_container(container_id)
    assert refused.value.status_code == 409 and "is not running" in refused.value.explanation


def test_what_is_missing(engine: Engine) -> None:
    # Removing a container that is gone already: the engine's 404, which is no error here.
    assert engine.remove_container(unique_app_name("gone")) is False
    with pytest.raises(EngineAPIError) as no_container:
        engine.start_container(unique_app_name("gone"))
    assert no_container.value.status_code == 404
    # No such image: 404 "No such image", which the boundary words as docker-py's ImageNotFound.
    missing = f"{unique_app_name()}:missing"
    with pytest.raises(ImageNotFound, match=r"^create x: No such image") as caught, engine_errors("create x"):
        engine.create_container(missing, ["true"], environment={}, name=unique_app_name(), labels={})
    assert caught.value.exit_code == 4


def test_tag_image(engine: Engine, docker_client: docker.DockerClient) -> None:
    repository = unique_app_name("tagged")
    base_id = docker_client.images.get(BASE_IMAGE).id
    try:
        engine.tag_image(base_id, repository, "t1")
        assert engine.inspect_image(f"{repository}:t1")["Id"] == base_id  # type: ignore[index]
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.images.remove(f"{repository}:t1")


def test_a_dead_engine_is_no_timeout(tmp_path: Path) -> None:
    # A refused or missing socket is the engine not answering, never a wait that timed out.
    dead = EngineClient(f"unix://{tmp_path}/nosock")
    with pytest.raises(DockerUnavailable, match="No such file"):
        dead.wait_container("x", timeout=1)
    with pytest.raises(DockerUnavailable, match=r"^create container n: Docker daemon not answering"):
        dead.create_container(BASE_IMAGE, ["true"], environment={}, name="n", labels={})
    with pytest.raises(DockerUnavailable):
        list(dead.logs("x", follow=True))


# -- probes over bgci.http11 ----------------------------------------------------------------------------------
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ok": 200, "/sick": 503, "/moved": 302}.get(self.path, 404)
        self.send_response(status)
        self.send_header("X-Host", self.headers.get("Host", ""))
        self.send_header("X-Connection", self.headers.get("Connection", ""))
        if status == 302:
            self.send_header("Location", "/ok")
        self.end_headers()
        self.wfile.write(b"body " + self.path.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_check_health(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Proxy variables are never used: bgci.http11 does not read them.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    assert check_health("127.0.0.1", server, "/ok") == ""
    assert check_health("127.0.0.1", server, "/sick") == "HTTP 503"
    assert check_health("127.0.0.1", server, "/moved") == "HTTP 302"  # not followed
    assert check_health("127.0.0.1", free_port(), "/ok") == "ConnectionRefusedError"
    answer = get("127.0.0.1", server, "/ok", headers={"Host": "shop.example"})
    assert answer.status == 200 and answer.text == "body /ok"
    assert answer.headers["X-Host"] == "shop.example" and answer.headers["X-Connection"] == "close"


# -- what promote imports --------------------------------------------------------------------------------------
def test_the_promote_path_imports_neither_requests_nor_docker() -> None:
    code = (f"import sys\nfor name in {PROMOTE_PATH!r}:\n    __import__(name)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stdout.strip() == "[]"


def test_bgci_test_imports_neither_requests_nor_docker(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    # `bgci test` in a new process, as Jenkins runs it: find the image, run the suite, copy its report
    # out, record the pass (a tag); everything over the engine's socket. Then: what was imported.
    app, sha = unique_app_name("light"), "0123456789abcdef0123456789abcdef01234567"
    base = docker_client.containers.create(BASE_IMAGE, command="true")
    try:
        image = base.commit(app, sha, conf={"Labels": {labels.REVISION: sha}})
    finally:
        base.remove(force=True)
    suite = "echo '<testsuite name=\"t\"><testcase classname=\"t\" name=\"a\"/></testsuite>' > /tmp/j.xml; echo ran"
    config = tmp_path / "bgci.toml"
    config.write_text(f'app = "{app}"\n[test]\ncommand = {json.dumps(["sh", "-c", suite])}\n'
                      'junit_path = "/tmp/j.xml"\nextra_packages = []\n')
    code = ("import sys\nfrom bgci.console import main\nstatus = 0\n"  # what the console script runs
            "try:\n    main()\nexcept SystemExit as exc:\n    status = exc.code\n"
            f"print(status, sorted(m for m in {(*HEAVY, 'hashlib')!r} if m in sys.modules))\n")
    try:
        result = subprocess.run([sys.executable, "-c", code, "--config", str(config), "test", "--image", f"{app}:{sha}",
                                 "--junit-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.stdout.splitlines()[-1] == "0 []", result.stderr
        assert "ran" in result.stderr.splitlines()  # the suite's output, streamed
        assert docker_client.images.get(f"{app}:tested-{sha}").id == image.id  # the pass, recorded
    finally:
        remove_app_images(docker_client, app)
