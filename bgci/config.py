"""bgci.toml: the app's settings, validated once on load.

Each section is a frozen dataclass; its fields, their type hints and their
``field(metadata=...)`` limits are the schema. :func:`load_settings` reads the
file, applies environment overrides and reports every problem at once, each
naming the file, the key and what is allowed. Secrets are never read from the
file or argv: only from environment variables (or files they point at).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgci.errors import ConfigError
from bgci.schema import limits, read_dataclass

CONFIG_FILE_NAME = "bgci.toml"
APP_NAME_PATTERN = r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$"  # a Docker repository path component
ENV_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # also a DNS label, for preview hostnames
# What Docker accepts before `/<app>` in a repository name: a host (with an optional port) and path
# components; a scheme ("http://") or a trailing slash would make every image name invalid.
REGISTRY_PATTERN = (r"^$|^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                    r"(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


# -- sections ----------------------------------------------------------------------------------------
# Settings are read once per process and never compared, so eq=False: no generated __eq__ and
# __hash__ (a hash of fields holding lists and dicts would raise anyway), which spares every new
# process (a `bgci promote` among them) compiling 22 methods it never calls.
@dataclass(frozen=True, eq=False)
class RegistrySettings:
    """[registry]: where images are pushed and pulled, and how long to retry."""

    url: str = limits(default="", pattern=REGISTRY_PATTERN,
                       help="host[:port][/path] with no scheme, e.g. registry.example.com:5000/team; "
                            "empty keeps images local")
    retry_seconds: float = limits(default=60.0, min=0, max=3600)


@dataclass(frozen=True, eq=False)
class BuildSettings:
    """[build]: the Dockerfile, its context, and what a delta build reinstalls when."""

    dockerfile: str = "Dockerfile"
    context: str = "."
    infrastructure_paths: list[str] = field(default_factory=lambda: ["Dockerfile"])
    dependency_paths: list[str] = field(default_factory=list)
    install_command: str = ""
    app_dir: str = limits(default="/app", pattern=r"^/.+", help="an absolute path")
    dependency_dir: str = limits(default="/app/local", pattern=r"^/.+", help="an absolute path")
    revision_file: str = limits(default="REVISION", pattern=r"^[^/]+$", help="a file name")
    max_age_hours: float = limits(default=24.0, min=0)
    layer_budget: int = limits(default=100, min=2, max=127)
    args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class TestSettings:
    """[test]: the suite's command, environment, JUnit path and limits."""

    __test__ = False  # not a pytest test class

    command: list[str] = field(
        default_factory=lambda: [
            "carton", "exec", "--", "prove", "-lvr", "--timer",
            "--harness", "TAP::Harness::JUnit", "--merge", "t/",
        ]
    )
    env: dict[str, str] = field(default_factory=lambda: {"WEB_APP_ENV": "jenkins"})
    junit_path: str = limits(default="/app/junit_output.xml", pattern=r"^/.+", help="an absolute path")
    timeout: float = limits(default=600.0, min=1, max=86400)
    extra_packages: list[str] = field(default_factory=list)
    results_dir: str = "test-results"


@dataclass(frozen=True, eq=False)
class SmokeCheck:
    """One [[smoke]] check: a path, the status and text it must answer with."""

    name: str
    path: str = limits(default="/", pattern=r"^/", help="a path starting with /")
    method: str = limits(default="GET", choices=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
    status: int = limits(default=200, min=100, max=599)
    body_contains: str = ""
    body_regex: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = limits(default=5.0, min=0.01, max=600)


@dataclass(frozen=True, eq=False)
class MarathonSettings:
    """[marathon]: the cluster's URLs and each task's resources."""

    urls: list[str] = field(default_factory=list)
    cpus: float = limits(default=0.25, min=0.01)
    mem: float = limits(default=128.0, min=8)
    constraints: list[list[str]] = field(default_factory=list)
    minimum_health_capacity: float = limits(default=1.0, min=0, max=1)
    maximum_over_capacity: float = limits(default=1.0, min=0, max=1)
    request_timeout: float = limits(default=10.0, min=0.1, max=600)
    # `bgci env logs` reads task sandboxes from each task's Mesos agent: http://<task host>:<agent_port>
    agent_port: int = limits(default=5051, min=1, max=65535)


@dataclass(frozen=True, eq=False)
class DeploySettings:
    """[deploy]: the scheduler, instances, health checks and logging of environments."""

    scheduler: str = limits(default="local", choices=["local", "marathon"])
    instances: int = limits(default=2, min=1, max=100)
    container_port: int = limits(default=8000, min=1, max=65535)
    health_path: str = limits(default="/health", pattern=r"^/", help="a path starting with /")
    ready_timeout: float = limits(default=60.0, min=1, max=3600)
    bind_address: str = "127.0.0.1"
    # Promote only images whose digest passed `bgci test` (recorded as <app>:tested-<sha>).
    require_tested: bool = True
    # Docker's log driver and its options for every instance (local: HostConfig.LogConfig; Marathon: the
    # container's log-driver/log-opt parameters); "" keeps the engine's default (json-file, usually).
    log_driver: str = limits(default="", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./:-]*$|^$", help="a Docker log driver "
                              "name such as json-file, local, journald, syslog, fluentd")
    log_options: dict[str, str] = field(default_factory=dict)
    marathon: MarathonSettings = field(default_factory=MarathonSettings)


@dataclass(frozen=True, eq=False)
class NginxSettings:
    """[nginx]: the router: embedded or system nginx, names, files and verification."""

    mode: str = limits(default="embedded", choices=["embedded", "system"])
    dir: str = ".bgci/nginx"
    listen: str = "127.0.0.1:8080"
    server_name: str = limits(default="", help="the live hostname; empty means <app>.localhost")
    preview_domain: str = "preview.localhost"
    nginx_binary: str = "nginx"
    test_command: list[str] = field(default_factory=list)
    reload_command: list[str] = field(default_factory=list)
    env_header: str = limits(default="X-Bgci-Environment", pattern=r"^[A-Za-z0-9-]+$", help="a header name")
    state_file: str = ".bgci/state.json"
    verify_timeout: float = limits(default=10.0, min=0.1, max=600)
    # What promote asks nginx for to prove the switch: the env header, and (verify_sha) the sha in the body.
    verify_path: str = limits(default="/", pattern=r"^/[^\s]*$", help="a path starting with /")
    verify_sha: bool = True
    # One JSON line per proxied request in <dir>/logs/requests.log: what bgci's request metrics read.
    requests_log: bool = True


@dataclass(frozen=True, eq=False)
class JenkinsSettings:
    """The app's Jenkins jobs (`bgci jobs`); user and API token come from the environment only."""

    url: str = limits(default="", pattern=r"^(https?://\S+)?$", help="an http(s):// URL")
    folder: str = limits(default="", pattern=r"^([^/\s]+(/[^/\s]+)*)?$", help="a folder path like ci/web")
    jobs_dir: str = "jobs"  # the app's own job templates and macros, relative to bgci.toml
    git_url: str = ""
    branch: str = limits(default="main", pattern=r"^\S+$", help="a branch name")
    git_credentials_id: str = ""
    build_label: str = limits(default="docker", pattern=r"\S", help="a label expression")
    router_label: str = limits(default="router", pattern=r"\S", help="a label expression")
    registry_credentials_id: str = limits(default="bgci-registry", pattern=r"^\S+$", help="a credentials id")
    full_schedule: str = "H H(2-5) * * *"
    poll_schedule: str = "H/5 * * * *"  # "" = only the git plugin's push notifications
    jenkinsfile: str = "Jenkinsfile"
    # The router agent's one directory for nginx files and the state file: jobs that touch the router
    # export it as BGCI_ROUTER_DIR, so every job, whatever its workspace, acts on the same state.
    router_dir: str = limits(default="", pattern=r"^(/[A-Za-z0-9._/-]*)?$", help="an absolute path")
    params: dict[str, str] = field(default_factory=dict)  # extra template parameters for the app's own jobs
    timeout: float = limits(default=30.0, min=1, max=600)


@dataclass(frozen=True, eq=False)
class MetricsSettings:
    """Prometheus, the file_sd targets, the deploy events and the analysis gate (`bgci analyze`, --analyze)."""

    prometheus_url: str = limits(default="", pattern=r"^(https?://\S+)?$", help="an http(s):// URL")
    graphite: str = limits(default="", pattern=r"^(\S+:[0-9]{1,5})?$", help="host:port of carbon's line receiver")
    exporter_listen: str = "127.0.0.1:9469"
    targets_file: str = ".bgci/targets.json"  # Prometheus file_sd; "" keeps none
    events_file: str = ".bgci/events.jsonl"  # create, destroy, promote, rollback, auto-rollback
    # Seconds from a request to Prometheus having it: nginx's log flush (1 s), the exporter, a scrape.
    lag: float = limits(default=20.0, min=0, max=600)
    window: float = limits(default=60.0, min=1, max=86400)
    max_error_ratio: float = limits(default=0.01, min=0, max=1)
    max_p95_ms: float = limits(default=0.0, min=0, help="0 means no latency limit")
    min_requests: int = limits(default=1, min=1)
    status_window: float = limits(default=60.0, min=1, max=86400)
    query_timeout: float = limits(default=10.0, min=0.1, max=600)


@dataclass(frozen=True, eq=False)
class Credentials:
    """A username/password or token pair; never printed (repr hides the secret)."""

    username: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def __bool__(self) -> bool:
        return bool(self.username or self.token)


@dataclass(frozen=True, eq=False)
class Settings:
    """Everything bgci knows about one app, built once and passed down."""

    app: str = limits(pattern=APP_NAME_PATTERN, help="lower-case letters, digits and . _ -")
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    build: BuildSettings = field(default_factory=BuildSettings)
    test: TestSettings = field(default_factory=TestSettings)
    smoke: list[SmokeCheck] = field(default_factory=list)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    nginx: NginxSettings = field(default_factory=NginxSettings)
    jenkins: JenkinsSettings = field(default_factory=JenkinsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # Not from the file: where it was found, and secrets from the environment.
    project_dir: Path = field(default=Path("."), metadata={"internal": True})
    config_file: Path = field(default=Path(CONFIG_FILE_NAME), metadata={"internal": True})
    registry_credentials: Credentials = field(default_factory=Credentials, metadata={"internal": True})
    marathon_credentials: Credentials = field(default_factory=Credentials, metadata={"internal": True})
    jenkins_credentials: Credentials = field(default_factory=Credentials, metadata={"internal": True})

    def __post_init__(self) -> None:
        if not self.nginx.server_name and isinstance(self.app, str):
            # Each app its own live name by default, never one shared name for every app on the router.
            host = re.sub(r"[^a-z0-9-]+", "-", self.app.lower()).strip("-") or "app"
            object.__setattr__(self, "nginx", dataclasses.replace(self.nginx, server_name=f"{host}.localhost"))

    def path(self, relative: str) -> Path:
        """A path from the config, resolved against the directory holding bgci.toml."""
        return (self.project_dir / relative).resolve()

    @property
    def image_repository(self) -> str:
        """`<registry>/<app>`, or just `<app>` when images stay local."""
        return f"{self.registry.url}/{self.app}" if self.registry.url else self.app

    @property
    def from_scratch_repository(self) -> str:
        return f"{self.image_repository}-from-scratch"


# -- loading -----------------------------------------------------------------------------------------
def find_config(start: Path | None = None) -> Path:
    """bgci.toml in `start` (default: the current directory) or one of its parents."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_FILE_NAME} in {here} or its parents",
        hint="run bgci from the app's directory or pass --config PATH",
    )


def load_settings(config_file: Path | None = None, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment, and validate; raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    path = Path(config_file) if config_file else find_config()
    if not path.is_file():
        raise ConfigError(f"{path}: no such file", hint=f"create {CONFIG_FILE_NAME} or pass --config PATH")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc

    raw = _apply_environment(raw, environ)
    problems: list[str] = []
    values = read_dataclass(Settings, raw, "", path, problems)
    problems = [_name_source(problem, environ) for problem in problems]
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems=[f"{path.name}: {p}" for p in problems])
    return dataclasses.replace(
        values,
        project_dir=path.parent.resolve(),
        config_file=path.resolve(),
        registry_credentials=_credentials(environ, "BGCI_REGISTRY"),
        marathon_credentials=_credentials(environ, "BGCI_MARATHON"),
        jenkins_credentials=_jenkins_credentials(environ),
    )


# Non-secret overrides: variable -> (section, key) of bgci.toml
OVERRIDES = {
    "BGCI_REGISTRY": ("registry", "url"),
    "BGCI_SCHEDULER": ("deploy", "scheduler"),
    "BGCI_JENKINS_URL": ("jenkins", "url"),
    "BGCI_PROMETHEUS_URL": ("metrics", "prometheus_url"),
    "BGCI_GRAPHITE": ("metrics", "graphite"),
}


def _name_source(problem: str, environ: typing.Mapping[str, str]) -> str:
    """'registry.url (from BGCI_REGISTRY): ...' when the environment set the value at fault."""
    for variable, (section, key) in OVERRIDES.items():
        prefix = f"{section}.{key}:"
        if environ.get(variable) and problem.startswith(prefix):
            return f"{section}.{key} (from {variable}):{problem[len(prefix):]}"
    return problem


def _apply_environment(raw: dict[str, Any], environ: typing.Mapping[str, str]) -> dict[str, Any]:
    """Non-secret overrides: the environment wins over the file."""
    raw = dict(raw)
    for variable, (section, key) in OVERRIDES.items():
        if environ.get(variable):
            raw[section] = {**raw.get(section, {}), key: environ[variable]}
    if environ.get("BGCI_ROUTER_DIR"):
        # One router state for every job on the router agent, whatever its workspace (README: Jenkins).
        router = environ["BGCI_ROUTER_DIR"].rstrip("/")
        if not router.startswith("/"):
            raise ConfigError(f"BGCI_ROUTER_DIR {router!r}: must be an absolute path",
                              hint="e.g. /var/lib/bgci/<app>, the same on every job of the router agent")
        raw["nginx"] = {**raw.get("nginx", {}), "dir": f"{router}/nginx", "state_file": f"{router}/state.json"}
        # The deploy events and the scrape targets describe the same router's environments.
        metrics = raw.get("metrics", {})
        raw["metrics"] = {**metrics, "events_file": f"{router}/events.jsonl",
                          **({"targets_file": f"{router}/targets.json"} if metrics.get("targets_file", True) else {})}
    if environ.get("BGCI_MARATHON_URLS"):
        deploy = dict(raw.get("deploy", {}))
        urls = [u.strip() for u in environ["BGCI_MARATHON_URLS"].split(",") if u.strip()]
        deploy["marathon"] = {**deploy.get("marathon", {}), "urls": urls}
        raw["deploy"] = deploy
    return raw


def _secret(environ: typing.Mapping[str, str], name: str) -> str:
    """NAME from the environment, or the content of the file NAME_FILE points at."""
    if environ.get(name):
        return environ[name]
    file_name = environ.get(f"{name}_FILE")
    if not file_name:
        return ""
    try:
        return Path(file_name).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from None


def _credentials(environ: typing.Mapping[str, str], prefix: str) -> Credentials:
    return Credentials(
        username=environ.get(f"{prefix}_USERNAME", ""),
        password=_secret(environ, f"{prefix}_PASSWORD"),
        token=_secret(environ, f"{prefix}_TOKEN"),
    )


def _jenkins_credentials(environ: typing.Mapping[str, str]) -> Credentials:
    """Jenkins user and API token: bgci's names first, then those Jenkins' own CLI reads."""
    username = next((environ[n] for n in ("BGCI_JENKINS_USER", "BGCI_JENKINS_USERNAME", "JENKINS_USER_ID",
                                          "JENKINS_USER") if environ.get(n)), "")
    token = next((t for t in (_secret(environ, n) for n in ("BGCI_JENKINS_TOKEN", "BGCI_JENKINS_PASSWORD",
                                                            "JENKINS_API_TOKEN")) if t), "")
    return Credentials(username=username, password=token, token=token)
