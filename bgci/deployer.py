"""Promote, roll back, report and prune: the scheduler, the nginx router, the state file and the lock.

The deployer decides; its collaborators act. It never switches the live name to
an environment unless every instance answers its health check at that moment,
so the live name never has zero healthy instances because of bgci. Promote and
rollback hold an exclusive lock, and the state file changes only after nginx
proved the switch (a failure writing it undoes the switch too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bgci.errors import ConfigError, EnvironmentNotFound, EnvironmentUnhealthy, RouterError, UnsafeUpstream
from bgci.probe import PROBE_TIMEOUT, check_health, probe_each
from bgci.router import Applied, NginxRouter, Upstream, upstream_for, validate_address
from bgci.schedulers.base import Environment, Instance, Scheduler
from bgci.state import Actor, RouterState, Switch, SwitchLock, load_state, save_state, utc_now

if TYPE_CHECKING:
    from bgci.status import EnvironmentStatus, Status

PREVIEW_LOCK_WAIT = 60.0  # env create/destroy wait for a running promote rather than fail


@dataclass(frozen=True)
class SwitchResult:
    """What promote or rollback did."""

    action: str
    live: str
    sha: str
    previous: str | None
    servers: tuple[str, ...]
    seconds: float
    # Wall clock (epoch seconds, like nginx's $msec): the switch began (lock held) and was verified.
    started_at: float = 0.0
    verified_at: float = 0.0


class Deployer:
    """Switches the live name between environments of one app, safely and one at a time."""

    def __init__(self, scheduler: Scheduler, router: NginxRouter, *, state_file: Path, lock: SwitchLock,
                 actor: Actor, health_path: str = "/health", clock: Callable[[], float] = time.monotonic) -> None:
        self.scheduler, self.router = scheduler, router
        self.state_file, self.lock, self.actor = state_file, lock, actor
        self.health_path = health_path
        self.clock = clock

    # -- switching ---------------------------------------------------------------------------------------
    def promote(self, name: str, wait_lock: float = 0.0, *, check: Callable[[Environment], None] | None = None,
                reason: str = "") -> SwitchResult:
        """Make `name` live: healthy now, rendered, tested, renamed, reloaded, verified; else nothing changes.

        `check(env)` runs under the lock before anything changes (the test gate) and may refuse by
        raising; `reason` goes into the state history with the switch.
        """
        with self.lock.hold(self.actor, f"promote {name}", wait_lock):
            env = self.scheduler.get(name, health=False)  # _switch probes every instance itself
            if check is not None:
                check(env)
            return self._switch(env, "promote", reason)

    def rollback(self, wait_lock: float = 0.0, *, reason: str = "", expect_live: Switch | None = None) -> SwitchResult:
        """Make the previous environment live again, if it still runs and is healthy.

        With a `reason` it is an automatic rollback (action "auto-rollback", the reason in the history);
        with `expect_live` it happens only if that switch is still the live one (nobody switched since).
        """
        action = "auto-rollback" if reason else "rollback"
        with self.lock.hold(self.actor, action, wait_lock):
            state = self.state()
            if expect_live is not None and state.live != expect_live:
                now = f"{state.live.env} ({state.live.action} at {state.live.at})" if state.live else "nothing"
                raise RouterError(f"not rolled back: live changed since {expect_live.env} was promoted "
                                  f"at {expect_live.at}; it is now {now}")
            if state.previous is None:
                raise RouterError("nothing to roll back to: no previous environment was live")
            try:
                env = self.scheduler.get(state.previous.env, health=False)
            except EnvironmentNotFound:
                raise RouterError(f"cannot roll back: the previous environment {state.previous.env} no longer runs",
                                  hint="promote another environment instead") from None
            return self._switch(env, action, reason)

    def _switch(self, env: Environment, action: str, reason: str = "") -> SwitchResult:
        started, started_at = self.clock(), time.time()
        upstream = self.check_healthy(env)
        state = self.state()
        switch = Switch(env=env.name, sha=env.sha, action=action, at=utc_now(), by=self.actor.who,
                        build_url=self.actor.build_url, reason=reason)
        new_state = state.after(switch)
        # Written only once nginx proved the switch; if writing fails, the router undoes the switch.
        self.router.switch_live(upstream, then=lambda: save_state(self.state_file, new_state))
        return SwitchResult(action=action, live=env.name, sha=env.sha,
                            previous=new_state.previous.env if new_state.previous else None,
                            servers=upstream.servers, seconds=self.clock() - started,
                            started_at=started_at, verified_at=time.time())

    def check_healthy(self, env: Environment) -> Upstream:
        """The environment's upstream if every instance is healthy now (probed here); else EnvironmentUnhealthy.

        The scheduler's own health flag may be old (Marathon's checks run on their own interval),
        so each instance is asked again, right before the switch.
        """
        if not env.instances:
            raise EnvironmentUnhealthy(f"environment {env.name} has no instances")
        problems = self._probe_all(env, self._probe)
        failing = [f"{i.id} ({i.address}): {p}" for i, p in zip(env.instances, problems, strict=True) if p]
        if failing:
            raise EnvironmentUnhealthy(f"environment {env.name}: {len(failing)} of {len(env.instances)} instances "
                                       f"fail {self.health_path}: {'; '.join(failing)}",
                                       hint="nothing was changed; fix or recreate the environment")
        return upstream_for(env)

    def _probe_all(self, env: Environment, probe: Callable[[Instance], str]) -> list[str]:
        return probe_each(probe, env.instances)

    def _probe(self, instance: Instance) -> str:
        """'' if the instance answers its health path with 2xx now, else what is wrong.

        An address that could not go into the nginx config raises UnsafeUpstream before any connection.
        """
        if not instance.host or not instance.port:
            return f"no address ({instance.state})"
        validate_address(instance.host, instance.port)
        # Straight to the instance, never via a proxy (bgci.probe).
        problem = check_health(instance.host, instance.port, self.health_path, timeout=PROBE_TIMEOUT)
        return f"{problem} ({instance.state})" if problem and not problem.startswith("HTTP") else problem

    def _probe_for_status(self, instance: Instance) -> str:
        try:
            return self._probe(instance)
        except UnsafeUpstream:
            return "unsafe address"

    # -- previews ----------------------------------------------------------------------------------------
    def register_preview(self, env: Environment, wait_lock: float = PREVIEW_LOCK_WAIT) -> Applied:
        """Serve `env` at `<name>.<preview_domain>` (env create's on_ready hook: it is ready now)."""
        with self.lock.hold(self.actor, f"preview {env.name}", wait_lock):
            return self.router.add_preview(self.check_healthy(env))

    def unregister_preview(self, name: str, wait_lock: float = PREVIEW_LOCK_WAIT) -> Applied | None:
        """Stop serving `<name>.<preview_domain>` (env destroy, before the instances go)."""
        with self.lock.hold(self.actor, f"unpreview {name}", wait_lock):
            return self.router.remove_preview(name)

    def check_destroyable(self, name: str) -> None:
        """Refuse to destroy the live environment: the live name would be left with no instance."""
        live = self.state().live
        if live is not None and live.env == name:
            raise RouterError(f"environment {name} is live: destroying it would leave "
                              f"{self.router.site.server_name} with no instance",
                              hint="promote another environment first")

    def destroy(self, name: str, wait_lock: float = PREVIEW_LOCK_WAIT) -> None:
        """Unroute and destroy one environment (never the live one), under the lock."""
        with self.lock.hold(self.actor, f"destroy {name}", wait_lock):
            self._destroy(name)

    def _destroy(self, name: str) -> None:
        self.check_destroyable(name)
        self.router.remove_preview(name)
        self.scheduler.destroy(name)

    def prune(self, keep: int, wait_lock: float = PREVIEW_LOCK_WAIT) -> list[str]:
        """Destroy every environment that is neither live, previous nor among the newest `keep`."""
        if keep < 0:
            raise ConfigError(f"prune keep={keep}: must be 0 or more", option="keep")
        with self.lock.hold(self.actor, f"prune --keep {keep}", wait_lock):
            doomed = prunable(self.scheduler.list(health=False), self.state(), keep)
            for name in doomed:
                self._destroy(name)
            return doomed

    # -- reporting ---------------------------------------------------------------------------------------
    def state(self) -> RouterState:
        return load_state(self.state_file)

    def status(self) -> Status:
        """Live, previous and preview environments with their instances, each probed now."""
        from bgci.status import Status

        state = self.state()
        environments = self.scheduler.list(health=False)  # probed below, each instance once
        previews = set(self.router.previews())
        by_name = {e.name: e for e in environments}
        rows = tuple(self._env_status(e, state, previews) for e in environments)
        missing = tuple(s.env for s in (state.live, state.previous) if s is not None and s.env not in by_name)
        return Status(app=self.router.site.app, server_name=self.router.site.server_name, live=state.live,
                      previous=state.previous, nginx=self.router.status(), environments=rows, missing=missing)

    def _env_status(self, env: Environment, state: RouterState, previews: set[str]) -> EnvironmentStatus:
        roles = tuple(role for role, switch in (("live", state.live), ("previous", state.previous))
                      if switch is not None and switch.env == env.name)
        if env.name in previews:
            roles += ("preview",)
        from bgci.status import EnvironmentStatus, InstanceStatus

        problems = self._probe_all(env, self._probe_for_status) if env.instances else []
        instances = tuple(InstanceStatus(id=i.id, address=i.address, state=i.state, healthy=not problem)
                          for i, problem in zip(env.instances, problems, strict=True))
        host = self.router.site.preview_host(env.name) if env.name in previews else ""
        return EnvironmentStatus(name=env.name, sha=env.sha, created_at=env.created_at, roles=roles,
                                 preview_host=host, instances=instances)


def prunable(environments: list[Environment], state: RouterState, keep: int) -> list[str]:
    """Names to destroy: not live, not previous, not among the `keep` newest (by creation time)."""
    protected = {s.env for s in (state.live, state.previous) if s is not None}
    newest = sorted(environments, key=lambda e: (e.created_at, e.name), reverse=True)
    protected |= {e.name for e in newest[:keep]}
    return [e.name for e in sorted(environments, key=lambda e: (e.created_at, e.name)) if e.name not in protected]
