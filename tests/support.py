"""Test helpers shared by every suite: real git repos of the sample app and a real registry.

Nothing here fakes a server: the registry is Debian's docker-registry (Docker
Distribution) on loopback, the repos are real git repositories.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import docker
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_APP = REPO_ROOT / "examples" / "web-app"
BASE_IMAGE = "bgci-base:bookworm"
REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_app_name(prefix: str = "bgcitest") -> str:
    """An app name no other test run on this daemon uses, so cleanup never touches others' images."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_sample_repo(directory: Path, app: str, registry: str = "", extra_toml: str = "") -> Path:
    """A fresh git repository holding a copy of the sample app, with `app` as its name."""
    repo = directory / "web-app"
    shutil.copytree(SAMPLE_APP, repo, ignore=shutil.ignore_patterns("local", "junit_output.xml", "REVISION"))
    config = repo / "bgci.toml"
    text = config.read_text().replace('app = "web-app"', f'app = "{app}"', 1)
    text = text.replace('url = ""', f'url = "{registry}"', 1)
    text = text.replace('BASE_IMAGE = "debian:bookworm-slim"', f'BASE_IMAGE = "{BASE_IMAGE}"', 1)
    config.write_text(text + extra_toml)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "ci@bgci.test")
    git(repo, "config", "user.name", "bgci tests")
    commit_all(repo, "sample app")
    return repo


class Registry:
    """Docker Distribution served on 127.0.0.1, optionally behind htpasswd auth; stoppable mid-test."""

    def __init__(self, workdir: Path, htpasswd: tuple[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        auth = ""
        if htpasswd:
            user, password = htpasswd
            hashed = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True,
                                    text=True).stdout.strip()
            (workdir / "htpasswd").write_text(hashed + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: bgci-test\n    path: {workdir / 'htpasswd'}\n"
        (workdir / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n{auth}"
        )

    def start(self) -> Registry:
        with open(self.workdir / "log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([REGISTRY_BINARY, "serve", str(self.workdir / "config.yml")],
                                            stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://{self.address}/v2/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start; see {self.workdir / 'log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def stored_bytes(self) -> int:
        """Bytes of blobs the registry holds: what pushes really sent."""
        blobs = self.workdir / "data" / "docker" / "registry" / "v2" / "blobs"
        return sum(f.stat().st_size for f in blobs.rglob("data") if f.is_file()) if blobs.exists() else 0


def image_tree(client: docker.DockerClient, image: str, path: str) -> dict[str, tuple[str, int, str]]:
    """{relative path: (type, mode, sha256 of content or link target)} of a directory in an image.

    Read through a created (never started) container and the archive API, like `docker cp`.
    """
    container = client.containers.create(image, entrypoint=["/bin/true"])
    try:
        stream, _ = container.get_archive(path)
        data = b"".join(stream)
    finally:
        container.remove(force=True)
    tree: dict[str, tuple[str, int, str]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            name = member.name.split("/", 1)[1] if "/" in member.name else "."
            if member.isfile():
                content = tar.extractfile(member).read()  # type: ignore[union-attr]
                tree[name] = ("file", member.mode, hashlib.sha256(content).hexdigest())
            elif member.issym():
                tree[name] = ("link", member.mode, member.linkname)
            elif member.isdir():
                tree[name] = ("dir", member.mode, "")
    return tree


def read_file_in_image(client: docker.DockerClient, image: str, path: str) -> str | None:
    """A file's text read through the archive API, or None when the image has no such file."""
    container = client.containers.create(image, entrypoint=["/bin/true"])
    try:
        stream, _ = container.get_archive(path)
        data = b"".join(stream)
    except docker.errors.NotFound:
        return None
    finally:
        container.remove(force=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.extractfile(tar.getmembers()[0]).read().decode()  # type: ignore[union-attr]


class EngineProxy:
    """A unix socket that forwards to the Docker engine until `cut()`: then, as when dockerd stops, every
    open connection is closed under its client and the socket file is gone (a new connect: ENOENT)."""

    def __init__(self, path: Path, engine: str = "/var/run/docker.sock") -> None:
        self.path, self.engine = path, engine
        self.address = f"unix://{path}"
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen(64)
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._listener.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # cut
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.engine)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
