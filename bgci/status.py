"""What `bgci status` reports: live, previous, nginx, and every environment with its instances probed now.

Records only; :meth:`bgci.deployer.Deployer.status` fills them. Apart from the deployer so that a
`bgci promote` does not define them (each dataclass costs a new process about a millisecond).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bgci.router import NginxStatus
    from bgci.state import Switch


@dataclass(frozen=True)
class Traffic:
    """An environment's recent traffic from Prometheus (bgci.metrics.analysis.traffic_by_env reads it)."""

    rps: float
    error_ratio: float | None
    p95_ms: float | None
    window: float

    def describe(self) -> str:
        ratio = "-" if self.error_ratio is None else f"{self.error_ratio:.4f}"
        p95 = "-" if self.p95_ms is None else f"{self.p95_ms:.1f} ms"
        return f"{self.rps:.2f} req/s, error ratio {ratio}, p95 {p95} (last {self.window:g} s)"


@dataclass(frozen=True)
class InstanceStatus:
    """One instance as `bgci status` shows it: probed now."""

    id: str
    address: str
    state: str
    healthy: bool


@dataclass(frozen=True)
class EnvironmentStatus:
    """One environment as `bgci status` shows it: its roles, instances and traffic."""

    name: str
    sha: str
    created_at: str
    roles: tuple[str, ...]  # live, previous, preview
    preview_host: str
    instances: tuple[InstanceStatus, ...]
    traffic: Traffic | None = None  # recent requests from Prometheus, when configured (bgci.metrics)

    @property
    def healthy(self) -> bool:
        return bool(self.instances) and all(i.healthy for i in self.instances)


@dataclass(frozen=True)
class Status:
    """What `bgci status` reports: live, previous, nginx and every environment."""

    app: str
    server_name: str
    live: Switch | None
    previous: Switch | None
    nginx: NginxStatus
    environments: tuple[EnvironmentStatus, ...]
    missing: tuple[str, ...] = field(default=())  # live/previous environments the scheduler no longer has
    metrics_note: str = ""  # why there are no traffic figures

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        for env, status in zip(data["environments"], self.environments, strict=True):
            env["healthy"] = status.healthy
        return data
