"""The light engine client (bgci.engine) against the real engine, the stdlib probes, and what promote imports.

`bgci promote` reads the engine through bgci.engine and probes over http.client, so its
process never imports requests, urllib3, charset_normalizer or docker-py.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from bgci.dockerhost import engine_errors
from bgci.engine import DockerPyReader, EngineAPIError, EngineClient, connect, encode_auth, uses_tls
from bgci.errors import DockerUnavailable, SchedulerError
from bgci.probe import check_health, get
from tests.support import BASE_IMAGE, free_port, unique_app_name

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("requests", "urllib3", "charset_normalizer", "docker")
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


# -- probes over http.client ---------------------------------------------------------------------------------
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
    # Proxy variables are never used: http.client does not read them.
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
