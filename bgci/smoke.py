"""Black-box checks of a running app: the `[[smoke]]` checks of bgci.toml times a list of targets.

A target is a base URL, optionally with the Host header to send: a URL given on
the command line, or each instance of an environment (``http://host:port``) plus
its preview route through the router (``http://<nginx.listen>`` with Host
``<env>.<nginx.preview_domain>``; there, the router's environment header
``nginx.env_header`` must name the environment). The preview target is included by default
when the router's directory (``nginx.dir``) exists, i.e. once `bgci router`
has set it up; ``--preview/--no-preview`` decides otherwise.

Every check runs once per target, with no retries: a smoke check reports what a
user would meet. Connection errors and timeouts are failures whose reason goes
into the report. Requests go straight to the target (proxy variables are
ignored: a proxy in between would be what gets tested), redirects are not
followed (a check may expect a 301), and a check's timeout bounds the
connection, each read and the whole answer (the body is read until then).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import junit_xml
import requests
import urllib3

from bgci import __version__, junit
from bgci.config import NginxSettings, Settings, SmokeCheck
from bgci.errors import ConfigError, TestsFailed
from bgci.netaddr import join_host_port, listen_url
from bgci.schedulers.base import Environment

Log = Callable[[str], None]
BODY_EXCERPT = 200
MAX_BODY = 1024 * 1024  # what the body checks look at


@dataclass(frozen=True)
class Target:
    """Where to send the checks: a base URL and, for routed hostnames, the Host header."""

    name: str  # short and stable: "url", "<env>.instance-1", "<env>.preview"
    base_url: str  # scheme://host:port, no path
    host_header: str | None = None
    # Response headers every answer must carry: through the router, the environment header proves
    # that the preview hostname reached this environment and not another one.
    expect_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    check: str
    target: str
    method: str
    url: str
    status: int | None  # None: no answer
    seconds: float
    reason: str = ""  # why it failed; "" when it passed

    @property
    def passed(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class SmokeReport:
    name: str
    results: tuple[CheckResult, ...]
    junit_file: Path

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def passed(self) -> bool:
        return not self.failed

    def raise_for_status(self) -> None:
        if self.passed:
            return
        shown = "; ".join(f"{r.target} {r.check}: {r.reason}" for r in self.failed[:3])
        more = f" (and {len(self.failed) - 3} more)" if len(self.failed) > 3 else ""
        raise TestsFailed(f"{len(self.failed)} of {len(self.results)} smoke checks failed: {shown}{more}",
                          report_file=str(self.junit_file))

    def describe(self) -> str:
        lines = [f"{'ok  ' if r.passed else 'FAIL'} {r.target} {r.check}: {r.method} {r.url} -> "
                 f"{r.status if r.status is not None else 'no answer'} in {r.seconds:.3f} s"
                 + (f" ({r.reason})" if r.reason else "") for r in self.results]
        verdict = "passed" if self.passed else "FAILED"
        lines.append(f"{verdict}: {len(self.results) - len(self.failed)}/{len(self.results)} checks; "
                     f"report {self.junit_file}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "junit_file": str(self.junit_file),
                "results": [{**asdict(r), "passed": r.passed} for r in self.results]}


# -- targets -----------------------------------------------------------------------------------------
def target_for_url(url: str, host_header: str | None = None) -> Target:
    """A target from `http(s)://host[:port]`; anything else is a usage error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
        raise ConfigError(f"smoke URL {url!r}: expected http(s)://host[:port] with no path",
                          hint="the checks' paths come from [[smoke]] in bgci.toml")
    return Target(name="url", base_url=f"{parts.scheme}://{parts.netloc}", host_header=host_header)


def targets_for_environment(environment: Environment, nginx: NginxSettings, preview: bool) -> list[Target]:
    """One target per instance (sorted by address, so names are stable) and, if asked, the preview route."""
    instances = sorted(environment.instances, key=lambda i: (i.host, i.port))
    targets = [Target(name=f"{environment.name}.instance-{n}", base_url=f"http://{join_host_port(i.host, i.port)}")
               for n, i in enumerate(instances, start=1)]
    if preview:
        targets.append(Target(name=f"{environment.name}.preview", base_url=listen_url(nginx.listen),
                              host_header=f"{environment.name}.{nginx.preview_domain}",
                              expect_headers={nginx.env_header: environment.name}))
    return targets


def preview_by_default(settings: Settings, env_name: str) -> bool:
    """Check the preview hostname too when it is routed now: registered for `env_name`, and nginx running."""
    from bgci.router import NginxRouter

    router = NginxRouter.from_settings(settings)
    return env_name in router.previews() and router.control.is_running()


# -- checks ------------------------------------------------------------------------------------------
def validate_checks(checks: Sequence[SmokeCheck]) -> None:
    """Refuse an empty list or a regex that does not compile, before anything is sent."""
    if not checks:
        raise ConfigError("no smoke checks: bgci.toml has no [[smoke]] tables",
                          hint="add [[smoke]] with name, path and status")
    problems = []
    for check in checks:
        try:
            re.compile(check.body_regex)
        except re.error as exc:
            problems.append(f"smoke {check.name!r}: body_regex {check.body_regex!r}: {exc}")
    if problems:
        raise ConfigError("invalid smoke checks", problems=problems)


def run_smoke(checks: Sequence[SmokeCheck], targets: Sequence[Target], *, results_dir: Path, name: str,
              properties: dict[str, str], log: Log, session: requests.Session | None = None) -> SmokeReport:
    """Every check against every target; write the JUnit file `smoke-<name>.xml`; never raise on a failure."""
    validate_checks(checks)
    session = session or new_session()
    log(f"smoke: {len(checks)} checks x {len(targets)} targets ({', '.join(t.base_url for t in targets)})")
    results = [run_check(session, check, target) for target in targets for check in checks]
    if not targets:
        results = [CheckResult(check="targets", target="none", method="-", url="-", status=None, seconds=0.0,
                               reason="nothing to check: the environment has no instances")]
    data = junit.render(_suites(results), f"smoke {name}", {"bgci.kind": "smoke", **properties})
    path = junit.write(junit.report_path(results_dir, "smoke", name), data)
    return SmokeReport(name=name, results=tuple(results), junit_file=path)


def new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # straight to the target: no proxy from the environment, no .netrc
    session.headers["User-Agent"] = f"bgci-smoke/{__version__}"
    return session


def run_check(session: requests.Session, check: SmokeCheck, target: Target) -> CheckResult:
    url = target.base_url.rstrip("/") + check.path
    headers = dict(check.headers)
    if target.host_header:  # the route is chosen by Host: the target's wins over the check's
        headers = {k: v for k, v in headers.items() if k.lower() != "host"} | {"Host": target.host_header}
    started = time.monotonic()
    status = None
    try:
        with session.request(check.method, url, headers=headers, timeout=check.timeout, allow_redirects=False,
                             stream=True) as response:
            status = response.status_code
            body = _read_body(response, started + check.timeout)
        reason = "; ".join(filter(None, [verdict(check, status, body, time.monotonic() - started),
                                         _header_problems(target.expect_headers, response.headers)]))
    except (requests.Timeout, urllib3.exceptions.TimeoutError):  # the latter from reading the body
        reason = f"no answer within the {check.timeout:g} s timeout"
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        reason = f"request failed: {_exception_reason(exc)}"
    return CheckResult(check=check.name, target=target.name, method=check.method, url=url, status=status,
                       seconds=time.monotonic() - started, reason=reason)


def verdict(check: SmokeCheck, status: int, body: str, seconds: float) -> str:
    """Why an answer fails `check` ("; "-joined), or "" when it passes."""
    problems = []
    if status != check.status:
        problems.append(f"status {status}, expected {check.status}")
    if check.body_contains and check.body_contains not in body:
        problems.append(f"body does not contain {check.body_contains!r}: {_excerpt(body)}")
    if check.body_regex and not re.search(check.body_regex, body):
        problems.append(f"body does not match /{check.body_regex}/: {_excerpt(body)}")
    if seconds > check.timeout:  # requests' timeout is per read; a trickling answer is caught here
        problems.append(f"answered after {seconds:.2f} s, past the {check.timeout:g} s timeout")
    return "; ".join(problems)


# -- helpers -----------------------------------------------------------------------------------------
def _header_problems(expected: dict[str, str], headers: Mapping[str, str]) -> str:
    return "; ".join(f"response header {key}: {headers.get(key)!r}, expected {value!r}"
                     for key, value in expected.items() if headers.get(key) != value)


def _suites(results: Sequence[CheckResult]) -> list[junit_xml.TestSuite]:
    """One suite per target, one case per check: classname `smoke.<target>`, name the check's."""
    by_target: dict[str, list[junit_xml.TestCase]] = {}
    for r in results:
        answer = f"{r.status}" if r.status is not None else "no answer"
        output = f"{r.method} {r.url} -> {answer} in {r.seconds:.3f} s"
        by_target.setdefault(r.target, []).append(
            junit.case(r.check, f"smoke.{r.target}", r.seconds, failure=r.reason, output=output))
    return [junit_xml.TestSuite(f"smoke.{target}", cases) for target, cases in by_target.items()]


def _read_body(response: requests.Response, deadline: float) -> str:
    """The body (its first MAX_BODY bytes), read until the deadline at most."""
    # read1 returns what has arrived instead of waiting for a full chunk (urllib3 >= 2.1), so the
    # deadline is checked as the body trickles in.
    read = getattr(response.raw, "read1", response.raw.read)
    chunks, size = [], 0
    while size < MAX_BODY and time.monotonic() <= deadline:
        chunk = read(16384, decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)[:MAX_BODY]
    try:
        return data.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def _exception_reason(exc: Exception) -> str:
    """The useful part of a requests error ("[Errno 111] Connection refused"), without object addresses."""
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if found:
        return found.group(0).strip()
    return re.sub(r" at 0x[0-9a-f]+", "", text)[:300]


def _excerpt(body: str) -> str:
    shown = body[:BODY_EXCERPT]
    return repr(shown) + ("..." if len(body) > BODY_EXCERPT else "")
