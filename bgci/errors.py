"""bgci's exception tree.

Every error a user can cause or meet derives from :class:`BgciError`. Each class
has an ``exit_code`` (click's convention: 1 generic, 2 usage/config, 3+ one per
stage) and a message that fits on one line, names the input at fault and says
what to do. Messages never contain credentials: build them from names, never
from secret values.
"""

from __future__ import annotations


def first_line(value: object, limit: int = 300) -> str:
    """The first line of an error's (or any value's) text, at most `limit` characters: one-line messages."""
    lines = str(value).strip().splitlines()
    return lines[0][:limit] if lines else type(value).__name__


class BgciError(Exception):
    """Root of every error bgci raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, option: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # The library's name for the input at fault (sha, name, instances...): the CLI names its flag.
        self.option = option

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# -- configuration and input -------------------------------------------------------------------------
class ConfigError(BgciError):
    """bgci.toml is missing or invalid, or an option's value is not allowed."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        return "\n".join([self.message, *(f"  - {p}" for p in self.problems)])


# -- git ---------------------------------------------------------------------------------------------
class GitError(BgciError):
    """The project is not a git repository, or a revision does not resolve."""

    exit_code = 3


class DirtyWorkTree(GitError):
    """The work tree has uncommitted changes, so a sha would not name what is inside."""


# -- docker and images -------------------------------------------------------------------------------
class DockerUnavailable(BgciError):
    """The Docker daemon does not answer."""

    exit_code = 4


class ImageNotFound(BgciError):
    """An image (by reference, sha or digest) exists neither locally nor in the registry."""

    exit_code = 4


class BuildFailed(BgciError):
    """A full or delta build did not produce an image; carries the last log lines."""

    exit_code = 5

    def __init__(self, message: str, log_tail: list[str] | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.log_tail = log_tail or []

    def __str__(self) -> str:
        if not self.log_tail:
            return super().__str__()
        return "\n".join([super().__str__(), "last log lines:", *(f"  {line}" for line in self.log_tail)])


class RegistryError(BgciError):
    """A push or pull failed after its retries."""

    exit_code = 6


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (or asked for some)."""


# -- tests -------------------------------------------------------------------------------------------
class TestsFailed(BgciError):
    """The suite or the smoke checks failed; the JUnit report says which."""

    __test__ = False  # not a pytest test class
    exit_code = 7

    def __init__(self, message: str, suite_exit_code: int | None = None, report_file: str = "",
                 **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.report_file = report_file
        if suite_exit_code:  # the suite's own non-zero status passes through to the shell (and Jenkins)
            self.exit_code = suite_exit_code


class UntestedImage(BgciError):
    """Promote refused: the environment's image digest has no passing `bgci test` (the test gate)."""

    exit_code = 7


# -- schedulers and environments ---------------------------------------------------------------------
class SchedulerError(BgciError):
    """A scheduler (local Docker or Marathon) could not do what was asked."""

    exit_code = 8


class SchedulerUnavailable(SchedulerError):
    """No scheduler endpoint answered."""


class EnvironmentNotFound(SchedulerError):
    """No environment of that name exists."""


class EnvironmentExists(SchedulerError):
    """An environment of that name exists already."""


class EnvironmentFailed(SchedulerError):
    """An environment did not become ready; carries the instances' last messages."""

    def __init__(self, message: str, details: list[str] | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.details = details or []

    def __str__(self) -> str:
        if not self.details:
            return super().__str__()
        return "\n".join([super().__str__(), *(f"  {line}" for line in self.details)])


class MarathonAPIError(SchedulerError):
    """Marathon answered with an error status."""

    def __init__(self, message: str, status_code: int | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.status_code = status_code

    def is_client_error(self) -> bool:
        return self.status_code is not None and 400 <= self.status_code < 500

    def is_server_error(self) -> bool:
        return self.status_code is not None and self.status_code >= 500


class DeploymentInProgress(MarathonAPIError):
    """409: the app is locked by a running deployment."""

    def __init__(self, message: str, deployment_ids: list[str] | None = None, **kwargs: object) -> None:
        super().__init__(message, status_code=409, **kwargs)  # type: ignore[arg-type]
        self.deployment_ids = deployment_ids or []


# -- router ------------------------------------------------------------------------------------------
class RouterError(BgciError):
    """nginx could not be configured, reloaded or verified; the previous state was restored."""

    exit_code = 9


class NginxConfigInvalid(RouterError):
    """`nginx -t` refused the configuration."""


class LockHeld(RouterError):
    """Another promote or rollback holds the lock."""


class NginxNotRunning(RouterError):
    """The embedded nginx is not running (start it with `bgci router start`)."""


class UnsafeUpstream(RouterError, ValueError):
    """A scheduler reported a host, port or name that cannot safely go into the nginx config."""


class VerificationFailed(RouterError):
    """After the reload, nginx did not serve the name from the expected environment."""


class EnvironmentUnhealthy(RouterError):
    """An instance failed its health check, so the environment may not take (or keep) traffic."""


class AnalysisFailed(TestsFailed):
    """The traffic analysis of an environment failed (or had no data); carries the analysis and any rollback."""

    def __init__(self, message: str, analysis: object = None, rollback: object = None, switch: object = None,
                 **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.analysis = analysis
        self.rollback = rollback
        self.switch = switch  # the promote that was judged (and rolled back), when there was one


# -- jenkins -----------------------------------------------------------------------------------------
class JenkinsError(BgciError):
    """Jenkins refused or failed a request."""

    exit_code = 10


class JenkinsUnreachable(JenkinsError):
    """Jenkins did not answer: connection refused, DNS, TLS or a timeout."""


class JenkinsAuthError(JenkinsError):
    """Jenkins refused the credentials (401) or the user may not do this (403, or a missing crumb)."""

    def __init__(self, message: str, status_code: int, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.status_code = status_code


class JenkinsNotFound(JenkinsError):
    """A job, build or queue item does not exist."""


class WaitInterrupted(JenkinsError):
    """Ctrl-C or SIGTERM while waiting for a build: bgci stopped waiting, the build goes on in Jenkins."""

    exit_code = 130  # what a shell reports for a process ended by SIGINT


class JenkinsBuildFailed(JenkinsError):
    """A triggered build ended FAILURE, ABORTED or NOT_BUILT (UNSTABLE is TestsFailed, exit 7)."""


# -- metrics -----------------------------------------------------------------------------------------
class MetricsError(BgciError):
    """Prometheus (or another metrics system) could not be asked, or answered something unreadable."""

    exit_code = 11


class PrometheusError(MetricsError):
    """Prometheus answered with an error, or not at all."""

    def __init__(self, message: str, status_code: int | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.status_code = status_code
