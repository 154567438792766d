"""The environment service over a fake Scheduler: naming, input checks, cleanup of failed creates, hooks.

The fake keeps environments in a dict and does what the Scheduler protocol says;
the real backends are tested against Docker (test_env_local.py) and Marathon.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bgci import environments, state
from bgci.config import ENV_NAME_PATTERN, Settings
from bgci.environments import EnvironmentService
from bgci.errors import (
    ConfigError,
    EnvironmentExists,
    EnvironmentFailed,
    EnvironmentNotFound,
    ImageNotFound,
    SchedulerError,
)
from bgci.images import ImageRef
from bgci.schedulers.base import Environment, EnvironmentSpec, Instance, LogLine, ProgressCallback, Scheduler
from bgci.state import Actor

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "f" * 40
IMAGE_ID = "sha256:" + "a" * 64
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


class FakeScheduler:
    """In-memory environments; `fail_wait` makes the next waits raise it."""

    name = "fake"

    def __init__(self) -> None:
        self.specs: dict[str, EnvironmentSpec] = {}
        self.counts: dict[str, int] = {}
        self.fail_wait: BaseException | None = None
        self.fail_destroy: BaseException | None = None
        self.calls: list[tuple[object, ...]] = []

    def create(self, spec: EnvironmentSpec) -> Environment:
        self.calls.append(("create", spec.name))
        if spec.name in self.specs:
            raise EnvironmentExists(spec.name)
        self.specs[spec.name], self.counts[spec.name] = spec, spec.instances
        return self.get(spec.name)

    def wait_until_ready(self, name: str, timeout: float, progress: ProgressCallback | None = None) -> Environment:
        self.calls.append(("wait", name, timeout))
        if self.fail_wait:
            raise self.fail_wait
        if progress:
            progress(self.counts[name], self.counts[name])
        return self.get(name)

    def get(self, name: str, *, health: bool = True) -> Environment:
        if name not in self.specs:
            raise EnvironmentNotFound(name)
        spec, count = self.specs[name], self.counts[name]
        instances = tuple(Instance(f"{name}.{i}", "127.0.0.1", 30000 + i, "running", True) for i in range(count))
        return Environment(name, spec.app, spec.sha, spec.image, spec.digest, count, spec.created_at,
                           spec.created_by, self.name, instances)

    def list(self, *, health: bool = True) -> list[Environment]:
        return [self.get(n) for n in self.specs]

    def scale(self, name: str, instances: int) -> Environment:
        self.calls.append(("scale", name, instances))
        self.counts[name] = instances
        return self.get(name)

    def destroy(self, name: str) -> None:
        self.calls.append(("destroy", name))
        if self.fail_destroy:
            raise self.fail_destroy
        if name not in self.specs:
            raise EnvironmentNotFound(name)
        del self.specs[name], self.counts[name]

    def logs(self, name: str, since: datetime | None = None, tail: int | None = None,
             follow: bool = False) -> Iterator[LogLine]:
        return iter(())


@pytest.fixture
def scheduler() -> FakeScheduler:
    return FakeScheduler()


@pytest.fixture
def resolved() -> list[str]:
    return []


@pytest.fixture
def service(scheduler: FakeScheduler, resolved: list[str]) -> EnvironmentService:
    images = {
        f"web-app:{SHA}": ImageRef(f"web-app:{SHA}", IMAGE_ID, "", SHA),
        "registry.test/web-app@sha256:" + "b" * 64: ImageRef("registry.test/web-app@sha256:" + "b" * 64, IMAGE_ID,
                                                          "registry.test/web-app@sha256:" + "b" * 64, SHA),
        "unlabelled:1": ImageRef("unlabelled:1", IMAGE_ID, "", ""),
    }

    def resolve(reference: str) -> ImageRef:
        resolved.append(reference)
        if reference not in images:
            raise ImageNotFound(f"image {reference} not found")
        return images[reference]

    return EnvironmentService(scheduler, Settings(app="web-app"), resolve=resolve,
                              environ={"BUILD_USER_ID": "jenkins-alice", "BUILD_USER": "Alice", "USER": "jenkins"},
                              now=lambda: NOW)


# -- names and input rules ---------------------------------------------------------------------------
def test_default_name_is_app_and_short_sha_and_a_dns_label() -> None:
    # The naming rule, `<app>-<short sha>`, for the usual app name.
    assert environments.default_name("web-app", SHA) == "web-app-0123456789ab"
    # App names may hold '.' and '_' and be long; environment names must stay DNS labels (preview hostnames).
    folded = environments.default_name("my_shop.web" + "x" * 80, SHA)
    assert folded.startswith("my-shop-web") and folded.endswith("-0123456789ab")
    assert re.match(ENV_NAME_PATTERN, folded) and len(folded) <= 63


@pytest.mark.parametrize("name", ["Web-App", "web_app", "-web", "web-", "a" * 64, "web.app", ""])
def test_invalid_names_are_refused_as_usage_errors(name: str) -> None:
    # A name that could not be a DNS label is refused before anything starts, with exit code 2.
    with pytest.raises(ConfigError) as caught:
        environments.validate_name(name)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("count", [0, -1, 101, 10**6])
def test_instance_counts_outside_the_config_limits_are_refused(count: int) -> None:
    # Same limits as bgci.toml's deploy.instances (1..100): no environment of 0 or a million containers.
    # The library names the input (the CLI adds its flag), so Python callers are not told about flags.
    with pytest.raises(ConfigError, match=rf"^{count} instances: allowed are 1 to 100") as caught:
        environments.validate_instances(count)
    assert caught.value.option == "instances"


@pytest.mark.parametrize("timeout", [0, -5, 10**6])
def test_absurd_timeouts_are_refused(timeout: float) -> None:
    with pytest.raises(ConfigError, match=r"^timeout ") as caught:
        environments.validate_timeout(timeout)
    assert caught.value.option == "timeout"


def test_created_by_prefers_the_jenkins_build_user(monkeypatch: pytest.MonkeyPatch) -> None:
    # Jenkins (build-user-vars plugin) names the human who started the build by login id (BUILD_USER_ID;
    # BUILD_USER is the display name); USER is the agent's account. The state file records the same user.
    environ = {"BUILD_USER_ID": "alice", "BUILD_USER": "Alice Smith", "USER": "jenkins"}
    assert environments.created_by(environ) == "alice"
    assert Actor.from_environment(environ).who.startswith("alice@")
    assert environments.created_by({"USER": "bob"}) == "bob"

    def no_user() -> str:
        raise KeyError("uid 1234 not in passwd")  # what getpass does for an arbitrary container uid

    monkeypatch.setattr(state.getpass, "getuser", no_user)
    assert environments.created_by({}) == "unknown"


# -- spec_for ----------------------------------------------------------------------------------------
def test_spec_for_a_sha_names_the_image_digest_and_who_and_when(service: EnvironmentService,
                                                                resolved: list[str]) -> None:
    spec = service.spec_for(sha=SHA, env={"WEB_APP_ENV": "preview"})
    # --sha runs the app's image of that commit: <app>:<sha>.
    assert resolved == [f"web-app:{SHA}"]
    # Everything the scheduler stores as labels: sha, image by id (never pushed), who and when in UTC.
    assert (spec.name, spec.sha, spec.image, spec.digest) == ("web-app-0123456789ab", SHA, IMAGE_ID, IMAGE_ID)
    assert (spec.created_by, spec.created_at) == ("jenkins-alice", "2024-05-06T07:08:09Z")
    # Deploy settings fill what the command line did not say.
    assert (spec.instances, spec.container_port, spec.health_path) == (2, 8000, "/health")
    assert spec.env == {"WEB_APP_ENV": "preview"}


def test_spec_for_a_pushed_image_runs_it_by_registry_digest(service: EnvironmentService) -> None:
    reference = "registry.test/web-app@sha256:" + "b" * 64
    spec = service.spec_for(image=reference, name="preview-1", instances=3)
    # A pushed image runs by repo@digest (what Marathon agents can pull); the sha comes from its label.
    assert (spec.image, spec.digest, spec.sha) == (reference, "sha256:" + "b" * 64, SHA)
    assert (spec.name, spec.instances) == ("preview-1", 3)


def test_spec_for_refuses_wrong_or_missing_shas(service: EnvironmentService, resolved: list[str]) -> None:
    # A malformed sha is a usage error, found before any image lookup.
    with pytest.raises(ConfigError, match="40-character"):
        service.spec_for(sha="abc123")
    assert resolved == []
    # A well-formed sha nobody built: the image lookup's error reaches the user.
    with pytest.raises(ImageNotFound):
        service.spec_for(sha=OTHER_SHA)
    # --sha and --image that disagree: the image's revision label wins the argument, with an error.
    with pytest.raises(ConfigError, match=f"built from {SHA}"):
        service.spec_for(sha=OTHER_SHA, image=f"web-app:{SHA}")
    # An image without a revision label has no sha to name the environment by, unless told.
    with pytest.raises(ConfigError, match="no revision label"):
        service.spec_for(image="unlabelled:1")
    assert service.spec_for(image="unlabelled:1", sha=OTHER_SHA).sha == OTHER_SHA
    with pytest.raises(ConfigError, match="name a sha") as caught:
        service.spec_for()
    assert caught.value.option == "sha"


def test_spec_for_checks_name_and_count_before_looking_up_the_image(service: EnvironmentService,
                                                                    resolved: list[str]) -> None:
    # Bad input must not cost a registry pull: nothing is resolved.
    with pytest.raises(ConfigError):
        service.spec_for(sha=SHA, instances=0)
    with pytest.raises(ConfigError):
        service.spec_for(sha=SHA, name="Not_A_Label")
    assert resolved == []


# -- create --------------------------------------------------------------------------------------------
def test_create_waits_reports_progress_and_runs_ready_hooks(service: EnvironmentService,
                                                            scheduler: FakeScheduler) -> None:
    progress: list[tuple[int, int]] = []
    hooked: list[str] = []
    service.on_ready.append(lambda env: hooked.append(env.name))
    environment = service.create(service.spec_for(sha=SHA, instances=3),
                                 progress=lambda healthy, wanted: progress.append((healthy, wanted)))
    # Create, then wait with deploy.ready_timeout (60 s by default), and nothing else.
    assert scheduler.calls == [("create", "web-app-0123456789ab"), ("wait", "web-app-0123456789ab", 60.0)]
    assert environment.is_ready and progress == [(3, 3)]
    # The router's hook sees the ready environment (it registers the preview hostname there).
    assert hooked == ["web-app-0123456789ab"]


def test_create_refuses_an_existing_name_and_leaves_it_alone(service: EnvironmentService,
                                                             scheduler: FakeScheduler) -> None:
    service.create(service.spec_for(sha=SHA))
    scheduler.calls.clear()
    with pytest.raises(EnvironmentExists, match="exists already") as caught:
        service.create(service.spec_for(sha=SHA))
    # Refused before asking the scheduler to create anything; the existing environment is untouched.
    assert scheduler.calls == []
    assert "web-app-0123456789ab" in scheduler.specs
    assert caught.value.exit_code == 8


def test_failed_create_is_removed_and_the_error_says_so(service: EnvironmentService,
                                                        scheduler: FakeScheduler) -> None:
    destroyed: list[str] = []
    service.on_destroyed.append(destroyed.append)
    scheduler.fail_wait = EnvironmentFailed("environment web-app-0123456789ab failed: .1 exited",
                                            ["web-app-0123456789ab.1: exited with code 1"])
    with pytest.raises(EnvironmentFailed) as caught:
        service.create(service.spec_for(sha=SHA))
    # Nothing is left behind, hooks included, and the message tells how to keep it next time.
    assert scheduler.specs == {} and destroyed == ["web-app-0123456789ab"]
    assert "were removed; pass --keep-failed" in str(caught.value)
    # The reason (the instances' details) survives the cleanup.
    assert "exited with code 1" in str(caught.value)


def test_keep_failed_keeps_the_instances_and_says_how_to_remove_them(service: EnvironmentService,
                                                                     scheduler: FakeScheduler) -> None:
    scheduler.fail_wait = EnvironmentFailed("not ready after 1s")
    with pytest.raises(EnvironmentFailed, match="bgci env destroy web-app-0123456789ab"):
        service.create(service.spec_for(sha=SHA), timeout=1, keep_failed=True)
    assert ("destroy", "web-app-0123456789ab") not in scheduler.calls
    assert "web-app-0123456789ab" in scheduler.specs


def test_a_failing_ready_hook_and_an_interrupt_also_clean_up(service: EnvironmentService,
                                                             scheduler: FakeScheduler) -> None:
    def broken_hook(_env: Environment) -> None:
        raise SchedulerError("preview hostname could not be registered")

    service.on_ready.append(broken_hook)
    with pytest.raises(SchedulerError, match="were removed"):
        service.create(service.spec_for(sha=SHA))
    assert scheduler.specs == {}
    # Ctrl-C (or Jenkins aborting the build) during the wait must not leave containers running.
    service.on_ready.clear()
    scheduler.fail_wait = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        service.create(service.spec_for(sha=SHA))
    assert scheduler.specs == {}


def test_cleanup_that_fails_too_is_reported(service: EnvironmentService, scheduler: FakeScheduler) -> None:
    scheduler.fail_wait = EnvironmentFailed("environment failed")
    scheduler.fail_destroy = SchedulerError("Docker engine not answering")
    with pytest.raises(EnvironmentFailed) as caught:
        service.create(service.spec_for(sha=SHA))
    # The user learns that something may be left, and what to run.
    assert "removing it failed too" in str(caught.value)
    assert "bgci env destroy web-app-0123456789ab" in str(caught.value)


# -- scale, destroy, the protocol ----------------------------------------------------------------------
def test_a_failed_scale_up_goes_back_to_the_old_count(service: EnvironmentService,
                                                      scheduler: FakeScheduler) -> None:
    service.create(service.spec_for(sha=SHA, instances=2))
    scheduler.fail_wait = EnvironmentFailed("environment failed: .3 exited")
    with pytest.raises(EnvironmentFailed, match=r"scaled back to 2 instance"):
        service.scale("web-app-0123456789ab", 4, timeout=5)
    # The new instances are removed again; the two that served before stay.
    assert scheduler.calls[-2:] == [("wait", "web-app-0123456789ab", 5), ("scale", "web-app-0123456789ab", 2)]
    assert scheduler.counts["web-app-0123456789ab"] == 2
    # A failed scale down is only reported: going back up would not repair anything.
    with pytest.raises(EnvironmentFailed) as caught:
        service.scale("web-app-0123456789ab", 1)
    assert caught.value.hint is None and scheduler.counts["web-app-0123456789ab"] == 1


def test_an_interrupted_scale_up_goes_back_and_an_interrupted_scale_down_stays(service: EnvironmentService,
                                                                               scheduler: FakeScheduler) -> None:
    # Ctrl-C or a Jenkins abort (SIGTERM, raised as KeyboardInterrupt) while the new instances are not
    # ready: undone like a failed scale-up, and the interrupt goes on to the CLI ("Aborted.").
    service.create(service.spec_for(sha=SHA, instances=2))
    scheduler.fail_wait = KeyboardInterrupt("signal 15")
    with pytest.raises(KeyboardInterrupt):
        service.scale("web-app-0123456789ab", 4, timeout=5)
    assert scheduler.calls[-2:] == [("wait", "web-app-0123456789ab", 5), ("scale", "web-app-0123456789ab", 2)]
    # A scale down has nothing to undo: the instances it stopped are gone either way.
    with pytest.raises(KeyboardInterrupt):
        service.scale("web-app-0123456789ab", 1, timeout=5)
    assert scheduler.calls[-1] == ("wait", "web-app-0123456789ab", 5) and scheduler.counts["web-app-0123456789ab"] == 1


def test_destroy_hooks_run_around_the_scheduler_and_may_refuse(service: EnvironmentService,
                                                                scheduler: FakeScheduler) -> None:
    service.create(service.spec_for(sha=SHA))
    order: list[str] = []

    def refuse_live(name: str) -> None:
        raise SchedulerError(f"environment {name} is live")

    # The router unroutes a preview before its instances go, and cleans up after.
    service.before_destroy.append(lambda name: order.append(f"unroute {name}"))
    service.on_destroyed.append(lambda name: order.append(f"forget {name}"))
    service.before_destroy.append(refuse_live)
    # A before-hook that raises keeps the environment: e.g. the deployer refusing to destroy the live one.
    with pytest.raises(SchedulerError, match="is live"):
        service.destroy("web-app-0123456789ab")
    assert "web-app-0123456789ab" in scheduler.specs and order == ["unroute web-app-0123456789ab"]
    service.before_destroy.remove(refuse_live)
    order.clear()
    service.destroy("web-app-0123456789ab")
    assert order == ["unroute web-app-0123456789ab", "forget web-app-0123456789ab"]
    assert scheduler.calls[-1] == ("destroy", "web-app-0123456789ab")


def test_scale_and_destroy_check_their_input(service: EnvironmentService, scheduler: FakeScheduler) -> None:
    service.create(service.spec_for(sha=SHA))
    with pytest.raises(ConfigError):
        service.scale("web-app-0123456789ab", 0)
    with pytest.raises(EnvironmentNotFound):
        service.scale("nope", 3)
    with pytest.raises(EnvironmentNotFound):
        service.destroy("nope")
    service.destroy("web-app-0123456789ab")
    assert service.list() == []


def test_the_fake_keeps_to_the_scheduler_protocol() -> None:
    # If base.Scheduler grows a method, the fake (and every backend) must follow, or these tests prove nothing.
    assert isinstance(FakeScheduler(), Scheduler)
