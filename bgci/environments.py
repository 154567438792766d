"""Environments: the service the CLI (and the deployer) uses on top of one Scheduler.

It turns a sha or an image reference into an :class:`EnvironmentSpec` (name,
image by digest, who and when), refuses bad input before anything starts,
creates and waits, and cleans up what a failed create left behind. Scheduler
specifics stay in the backends; Docker stays behind the `resolve` callable.

Hooks: `on_ready(env)` runs after a create became ready (inside the failure
handling, so a hook that raises gets the environment removed like a failed
wait); `before_destroy(name)` runs before the instances go (it may refuse by
raising, e.g. for the live environment, or unroute a preview), `on_destroyed(name)`
after. The router registers and removes its preview hostnames there.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bgci.config import ENV_NAME_PATTERN, DeploySettings, Settings
from bgci.errors import (
    BgciError,
    ConfigError,
    DockerUnavailable,
    EnvironmentExists,
    EnvironmentFailed,
    EnvironmentNotFound,
)
from bgci.images import ImageRef, reference_for_sha
from bgci.schedulers.base import Environment, EnvironmentSpec, ProgressCallback, Scheduler
from bgci.state import user_name

Log = Callable[[str], None]
Resolve = Callable[[str], ImageRef]  # image reference -> the exact image (bgci.images.resolve_image)
ReadyHook = Callable[[Environment], None]
DestroyHook = Callable[[str], None]

SHORT_SHA = 12
MAX_NAME = 63  # a DNS label: environments get preview hostnames


# -- pure input rules --------------------------------------------------------------------------------
def default_name(app: str, sha: str) -> str:
    """`<app>-<sha[:12]>`, with the app name folded into a DNS label (no dots or underscores)."""
    prefix = re.sub(r"[^a-z0-9-]+", "-", app.lower()).strip("-")[: MAX_NAME - SHORT_SHA - 1].rstrip("-")
    return f"{prefix}-{sha[:SHORT_SHA]}" if prefix else sha[:SHORT_SHA]


def validate_name(name: str) -> str:
    if not re.match(ENV_NAME_PATTERN, name):
        raise ConfigError(f"environment name {name!r}: not valid", option="name",
                          hint="lower-case letters, digits and '-', at most 63, starting and ending alphanumeric")
    return name


def instance_limits() -> tuple[int, int]:
    """(min, max) instances: the limits bgci.toml's deploy.instances has, one source for both."""
    limits = next(f.metadata for f in dataclasses.fields(DeploySettings) if f.name == "instances")
    return int(limits["min"]), int(limits["max"])


def validate_instances(instances: int) -> int:
    low, high = instance_limits()
    if not low <= instances <= high:
        raise ConfigError(f"{instances} instances: allowed are {low} to {high}", option="instances")
    return instances


def validate_timeout(timeout: float) -> float:
    if not 0 < timeout <= 86400:
        raise ConfigError(f"timeout {timeout:g}: expected seconds above 0 (at most a day)", option="timeout")
    return timeout


def created_by(environ: Mapping[str, str]) -> str:
    """Who asks: the Jenkins user who started the build, else the login user (one rule, bgci.state.user_name)."""
    return user_name(environ)


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- the service -------------------------------------------------------------------------------------
@dataclass
class EnvironmentService:
    """Create, list, show, scale and destroy the environments of one app on one scheduler."""

    scheduler: Scheduler
    settings: Settings
    resolve: Resolve
    log: Log = lambda _message: None
    on_ready: list[ReadyHook] = field(default_factory=list)
    before_destroy: list[DestroyHook] = field(default_factory=list)
    on_destroyed: list[DestroyHook] = field(default_factory=list)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    now: Callable[[], datetime] = utc_now

    def spec_for(self, *, sha: str | None = None, image: str | None = None, name: str | None = None,
                 instances: int | None = None, env: Mapping[str, str] | None = None) -> EnvironmentSpec:
        """The spec for `sha` (the app's image of that commit) or `image`; every input checked first."""
        if name is not None:
            validate_name(name)
        count = validate_instances(self.settings.deploy.instances if instances is None else instances)
        ref = self._image(sha, image)
        deploy = self.settings.deploy
        return EnvironmentSpec(
            name=name or default_name(self.settings.app, ref.sha), app=self.settings.app, sha=ref.sha,
            image=ref.runnable, digest=ref.digest, instances=count, container_port=deploy.container_port,
            health_path=deploy.health_path, created_by=created_by(self.environ),
            created_at=self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), env=dict(env or {}),
        )

    def create(self, spec: EnvironmentSpec, *, timeout: float | None = None, keep_failed: bool = False,
               progress: ProgressCallback | None = None, on_ready: Sequence[ReadyHook] = ()) -> Environment:
        """Start spec.instances instances and wait until all are healthy; on failure remove them (unless kept).

        `on_ready` hooks run after self.on_ready, inside the failure handling.
        """
        timeout = validate_timeout(self.settings.deploy.ready_timeout if timeout is None else timeout)
        self._refuse_existing(spec.name)
        self.log(f"creating {spec.name}: {spec.instances} x {spec.app} {spec.sha[:SHORT_SHA]} "
                 f"({spec.digest[:19]}) on {self.scheduler.name}")
        try:
            self.scheduler.create(spec)
            environment = self.scheduler.wait_until_ready(spec.name, timeout, progress)
            for hook in [*self.on_ready, *on_ready]:
                hook(environment)
        except EnvironmentExists:
            raise  # taken by a create racing this one: nothing here is ours to remove
        except BaseException as exc:  # including Ctrl-C and a Jenkins abort (SIGTERM)
            self._after_failed_create(spec.name, exc, keep_failed)
            raise
        return environment

    def list(self) -> list[Environment]:
        return self.scheduler.list()

    def get(self, name: str) -> Environment:
        return self.scheduler.get(name)

    def scale(self, name: str, instances: int, *, timeout: float | None = None,
              progress: ProgressCallback | None = None) -> Environment:
        """Scale to `instances` and wait until all are healthy; a failed or interrupted scale-up goes back."""
        validate_instances(instances)
        timeout = validate_timeout(self.settings.deploy.ready_timeout if timeout is None else timeout)
        before = len(self.scheduler.get(name, health=False).instances)
        self.log(f"scaling {name}: {before} -> {instances} instances")
        try:
            self.scheduler.scale(name, instances)
            return self.scheduler.wait_until_ready(name, timeout, progress)
        except EnvironmentFailed as exc:
            if instances <= before:
                raise
            self.scheduler.scale(name, before)
            raise EnvironmentFailed(exc.message, exc.details,
                                    hint=f"scaled back to {before} instance(s)") from exc
        except KeyboardInterrupt:  # Ctrl-C or a Jenkins abort: a scale-up not yet ready is undone like a failed one
            if instances > before:
                self.log(f"interrupted: scaling {name} back to {before} instance(s)")
                self.scheduler.scale(name, before)
            raise

    def destroy(self, name: str) -> None:
        for hook in self.before_destroy:
            hook(name)
        self.scheduler.destroy(name)
        for hook in self.on_destroyed:
            hook(name)

    # -- helpers -------------------------------------------------------------------------------------
    def _image(self, sha: str | None, image: str | None) -> ImageRef:
        if not (sha or image):
            raise ConfigError("name a sha (the app's image of that commit) or an image reference", option="sha")
        ref = self.resolve(image or reference_for_sha(self.settings, sha or ""))
        if sha and ref.sha and ref.sha != sha:
            raise ConfigError(f"sha {sha}: image {ref.reference} was built from {ref.sha}", option="sha")
        if not (sha or ref.sha):
            raise ConfigError(f"image {image}: it has no revision label, so its sha is unknown", option="image",
                              hint="pass --sha SHA as well")
        return dataclasses.replace(ref, sha=ref.sha or sha or "")

    def _refuse_existing(self, name: str) -> None:
        try:
            existing = self.scheduler.get(name, health=False)
        except EnvironmentNotFound:
            return
        raise EnvironmentExists(
            f"environment {name} exists already (sha {existing.sha[:SHORT_SHA]}, created {existing.created_at} "
            f"by {existing.created_by})", hint=f"pass --name NAME or run `bgci env destroy {name}` first")

    def _after_failed_create(self, name: str, exc: BaseException, keep_failed: bool) -> None:
        """Remove what the failed create left (unless kept), and say which it was in the error."""
        if keep_failed:
            note = f"kept for inspection: remove it with `bgci env destroy {name}`"
        else:
            note = "its instances were removed; pass --keep-failed to keep them for inspection"
            try:
                self.destroy(name)
            except EnvironmentNotFound:
                pass
            except DockerUnavailable:  # the engine went away: the error in hand says so already
                note = f"it could not be removed without the engine: run `bgci env destroy {name}` once it answers"
            except BgciError as cleanup_error:
                note = f"removing it failed too ({cleanup_error}): run `bgci env destroy {name}`"
        if isinstance(exc, BgciError):
            exc.hint = "; ".join(filter(None, [exc.hint, note]))
        else:  # e.g. Ctrl-C: the traceback has no place for it
            self.log(f"{name}: {note}")
