"""Pushes against a real registry that stops answering, and one that wants credentials.

Docker Distribution (Debian's docker-registry) stands for the production registry;
stopping its process is what "the registry stopped answering" looked like to the original team.
"""

from __future__ import annotations

import threading
from pathlib import Path

import docker
import pytest

from bgci.config import Credentials
from bgci.errors import RegistryAuthError, RegistryError
from bgci.registry import login, push_image
from tests.support import BASE_IMAGE, Registry

pytestmark = pytest.mark.docker


@pytest.fixture
def small_image(docker_client: docker.DockerClient) -> str:
    """A one-file image, so pushes take well under a second when the registry answers."""
    image, _ = docker_client.images.build(fileobj=_dockerfile(f"FROM {BASE_IMAGE}\nRUN echo retry > /retry\n"),
                                          rm=True, forcerm=True)
    return image.id


def _dockerfile(text: str):  # type: ignore[no-untyped-def]
    import io

    return io.BytesIO(text.encode())


def tagged(client: docker.DockerClient, image_id: str, registry: Registry, name: str) -> str:
    repository = f"{registry.address}/{name}"
    client.images.get(image_id).tag(repository, "v1")
    return repository


def test_push_succeeds_when_the_registry_comes_back_within_the_retry_window(
        docker_client: docker.DockerClient, small_image: str, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    repository = tagged(docker_client, small_image, registry, "retry-ok")
    messages: list[str] = []
    # Down at first: the engine answers "connection refused", which bgci retries with backoff.
    restart = threading.Timer(2.0, registry.start)
    restart.start()
    try:
        digest = push_image(docker_client, repository, "v1", credentials=Credentials(), retry_seconds=30,
                            log=messages.append)
    finally:
        restart.join()
        registry.stop()
        docker_client.images.remove(f"{repository}:v1")
    assert digest.startswith("sha256:")
    assert any("retrying in" in m for m in messages)  # it really failed first, then retried


def test_push_fails_cleanly_when_the_registry_stays_down(docker_client: docker.DockerClient, small_image: str,
                                                        tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")  # never started
    repository = tagged(docker_client, small_image, registry, "retry-fail")
    try:
        with pytest.raises(RegistryError) as caught:
            push_image(docker_client, repository, "v1", credentials=Credentials(), retry_seconds=3,
                       log=lambda _: None)
    finally:
        docker_client.images.remove(f"{repository}:v1")
    message = str(caught.value)
    assert "gave up after 3s of retries" in message
    assert "connection refused" in message.lower()
    assert "\n" not in message  # one line


@pytest.fixture
def auth_registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "auth-registry", htpasswd=("ci", "correct-horse")).start()
    yield registry
    registry.stop()


def test_registry_with_htpasswd_accepts_the_right_credentials(docker_client: docker.DockerClient,
                                                              small_image: str, auth_registry: Registry) -> None:
    repository = tagged(docker_client, small_image, auth_registry, "auth-ok")
    credentials = Credentials(username="ci", password="correct-horse")
    try:
        login(docker_client, auth_registry.address, credentials)
        digest = push_image(docker_client, repository, "v1", credentials=credentials, retry_seconds=5,
                            log=lambda _: None)
    finally:
        docker_client.images.remove(f"{repository}:v1")
    assert digest.startswith("sha256:")


def test_registry_refusing_credentials_is_one_clear_error_without_the_secret(
        docker_client: docker.DockerClient, small_image: str, auth_registry: Registry) -> None:
    repository = tagged(docker_client, small_image, auth_registry, "auth-bad")
    wrong = Credentials(username="ci", password="wrong-battery-staple")
    try:
        with pytest.raises(RegistryAuthError) as at_login:
            login(docker_client, auth_registry.address, wrong)
        with pytest.raises(RegistryAuthError) as at_push:  # no credentials at all: refused, not retried
            push_image(docker_client, repository, "v1", credentials=Credentials(), retry_seconds=30,
                       log=lambda _: None)
    finally:
        docker_client.images.remove(f"{repository}:v1")
    for error in (at_login.value, at_push.value):
        assert "refused the credentials" in str(error)
        assert "wrong-battery-staple" not in str(error)
        assert "BGCI_REGISTRY_USERNAME" in str(error)  # says what to do
