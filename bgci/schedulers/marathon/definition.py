"""What bgci sends to Marathon: pure request bodies, so tests validate them against Marathon's schema.

An environment is one Marathon app, `/<app>/<env>`, with N tasks; all of
bgci's metadata rides in the app's labels. :class:`MarathonOptions` holds what
the body needs beyond the EnvironmentSpec (resources, placement, health timing);
:func:`check_pullable` refuses an image the cluster's agents could not pull.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bgci.config import Settings
from bgci.errors import ConfigError
from bgci.schedulers.base import EnvironmentSpec

PORT_NAME = "http"
_IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{12,64}")  # what `docker images -q` and image.id show


@dataclass(frozen=True)
class MarathonOptions:
    """Everything of an app body that is not in the EnvironmentSpec: resources, placement, health timing."""

    cpus: float = 0.25
    mem: float = 128.0
    constraints: tuple[tuple[str, ...], ...] = ()
    minimum_health_capacity: float = 1.0
    maximum_over_capacity: float = 1.0
    health_protocol: str = "MESOS_HTTP"  # or HTTP (checked by Marathon itself, deprecated since 1.4)
    grace_period_seconds: int = 30
    interval_seconds: int = 2
    timeout_seconds: int = 1
    max_consecutive_failures: int = 3
    log_driver: str = ""  # Docker's --log-driver for every task; "" keeps the agent's default
    log_options: tuple[tuple[str, str], ...] = ()  # --log-opt key=value, in order

    @classmethod
    def from_settings(cls, settings: Settings) -> MarathonOptions:
        m = settings.deploy.marathon
        return cls(cpus=m.cpus, mem=m.mem, constraints=tuple(tuple(c) for c in m.constraints),
                   minimum_health_capacity=m.minimum_health_capacity, maximum_over_capacity=m.maximum_over_capacity,
                   log_driver=settings.deploy.log_driver, log_options=tuple(settings.deploy.log_options.items()))


def app_group(app: str) -> str:
    """The app name as one Marathon id segment: `_` is allowed in bgci app names, not in Marathon ids."""
    return re.sub(r"[^a-z0-9.-]+", "-", app.lower()).strip("-.") or "app"


def marathon_app_id(app: str, env: str) -> str:
    return f"/{app_group(app)}/{env}"


def health_check(path: str, options: MarathonOptions) -> dict[str, Any]:
    check: dict[str, Any] = {
        "protocol": options.health_protocol, "path": path, "portIndex": 0,
        "gracePeriodSeconds": options.grace_period_seconds, "intervalSeconds": options.interval_seconds,
        "timeoutSeconds": options.timeout_seconds, "maxConsecutiveFailures": options.max_consecutive_failures,
    }
    if options.health_protocol.startswith("MESOS_"):
        check["delaySeconds"] = 1  # Mesos waits 15 s before the first check by default: ready takes seconds
    return check


def docker_parameters(options: MarathonOptions) -> list[dict[str, str]]:
    """container.docker.parameters: what Mesos passes to `docker run` as --log-driver and --log-opt."""
    parameters = [{"key": "log-driver", "value": options.log_driver}] if options.log_driver else []
    return parameters + [{"key": "log-opt", "value": f"{key}={value}"} for key, value in options.log_options]


def app_definition(app_id: str, spec: EnvironmentSpec, options: MarathonOptions) -> dict[str, Any]:
    """The POST /v2/apps body, Marathon 1.5+ form; pure, so tests validate it against Marathon's schema."""
    body: dict[str, Any] = {
        "id": app_id,
        "instances": spec.instances,
        "cpus": options.cpus,
        "mem": options.mem,
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "DOCKER",
            "docker": {"image": spec.image, "forcePullImage": False},
            "portMappings": [{"containerPort": spec.container_port, "hostPort": 0, "protocol": "tcp",
                              "name": PORT_NAME}],
        },
        "healthChecks": [health_check(spec.health_path, options)],
        "labels": spec.labels(),
        "env": dict(spec.env),
        "upgradeStrategy": {"minimumHealthCapacity": options.minimum_health_capacity,
                            "maximumOverCapacity": options.maximum_over_capacity},
    }
    if options.constraints:
        body["constraints"] = [list(c) for c in options.constraints]
    if parameters := docker_parameters(options):
        body["container"]["docker"]["parameters"] = parameters
    return body


def check_pullable(image: str) -> None:
    """Refuse an image a Mesos agent cannot pull: agents pull by reference, on hosts other than the builder's.

    A local image id (`sha256:<hex>`, what bgci names when no registry holds the
    image) exists only in the engine that built it. A reference without a
    registry host (`web:1`, `shop@sha256:...`) sends agents to Docker Hub, where
    bgci never pushes; a Hub image passes when its host is named (docker.io/...).
    """
    hint = "set registry.url (or BGCI_REGISTRY) and push the image: `bgci build auto` pushes it to the registry"
    if _IMAGE_ID.fullmatch(image):
        raise ConfigError(f"image {image}: Marathon agents cannot pull a local image id", hint=hint)
    host, slash, _ = image.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        raise ConfigError(f"image {image}: Marathon agents cannot pull an image whose name has no registry host",
                          hint=hint + "; a Docker Hub image needs its host: docker.io/library/<name>")
