"""One place that connects to the Docker engine and turns 'not answering' into a clear error."""

from __future__ import annotations

import os

import docker
import requests
from docker.errors import DockerException

from bgci.errors import DockerUnavailable

DEFAULT_TIMEOUT = 300  # seconds; a commit or a push of a big layer can take a while


def connect(timeout: int = DEFAULT_TIMEOUT) -> docker.DockerClient:
    """A client for DOCKER_HOST (default: the local socket), checked with a ping."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(version="auto", timeout=timeout)
        client.ping()
    except (DockerException, requests.exceptions.RequestException) as exc:
        raise DockerUnavailable(
            f"Docker daemon not answering at {where}: {_first_line(exc)}",
            hint="start dockerd (scripts/setup.sh does) or set DOCKER_HOST",
        ) from None
    return client


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
