"""Verification through nginx after a reload: does the name answer from the expected environment?

A reload is asynchronous: for about 100 ms the workers of the old configuration
accept connections beside the new ones. So a change counts as live only once nginx
answers right on new connections and no old worker accepts any more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bgci import probe
from bgci.errors import RouterError, VerificationFailed

if TYPE_CHECKING:
    from bgci.router.control import NginxControl


@dataclass(frozen=True)
class Expectation:
    """What a request for `host` must get once the change is live."""

    host: str
    env: str | None  # the env header nginx must add; None: no environment (a removed preview)
    sha: str = ""  # when set, the body must contain it
    answers: int = 1  # consecutive good answers needed (one per instance: round robin visits each)
    needs_2xx: bool = True  # False: the header alone proves which config nginx runs (checking a restore)


ANSWER_TIMEOUT = (2.0, 2.0)  # connect, read: our own nginx on this host


class Verifier:
    """Asks nginx at `base_url` for a host, reading the environment from the `env_header` it adds.

    Over bgci.probe.get: our own nginx, so never through a proxy from the environment.
    """

    def __init__(self, control: NginxControl, base_url: str, env_header: str, *, path: str = "/",
                 timeout: float = 10.0) -> None:
        self.control, self.base_url, self.env_header = control, base_url, env_header
        self.path, self.timeout = path, timeout
        address = urlsplit(base_url)
        self._host, self._port = address.hostname or "127.0.0.1", address.port or 80

    def verify(self, expect: Expectation, timeout: float | None = None, *, restoring: bool = False) -> None:
        """Ask nginx for `expect.host` (a new connection each time) until the reload is done and it answers right.

        Done means no worker of the old configuration accepts connections any more. If the master
        refused the reload, it keeps serving what it served: an error, unless `restoring` and that
        is the expected answer anyway.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        good = 0
        while True:
            verdict, last = self._check(expect)
            good = good + 1 if verdict else 0
            if good >= expect.answers:
                if self.control.settled():
                    return
                last = "the expected answer, but workers of the previous configuration still accept connections"
            problem = self.control.reload_problem()
            if problem:
                if restoring and verdict:
                    return
                raise RouterError(f"nginx did not load the new configuration: {problem}")
            if time.monotonic() > deadline:
                raise VerificationFailed(f"{expect.host} was not served by {expect.env or 'no environment'} "
                                         f"within {timeout:g} s (last answer: {last})")
            if not verdict or good >= expect.answers:  # asking again at once only while counting good answers
                time.sleep(0.005 if verdict else 0.01)

    def _check(self, expect: Expectation) -> tuple[bool, str]:
        try:
            answer = probe.get(self._host, self._port, self.path, headers={"Host": expect.host},
                               timeout=ANSWER_TIMEOUT)
        except OSError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        served_by = answer.headers.get(self.env_header)
        last = f"{answer.status} from {served_by or 'no environment'}"
        if served_by != expect.env:
            return False, last
        if expect.env is None or not expect.needs_2xx:
            return True, last
        if not 200 <= answer.status < 300:
            return False, last
        if expect.sha and expect.sha not in answer.text:
            # The right upstream answers with the wrong build: waiting will not change that.
            raise VerificationFailed(f"{expect.host} is served by {expect.env}, but it answers "
                                     f"{answer.text.strip()[:80]!r} instead of sha {expect.sha}")
        return True, last
