"""The router: bgci's nginx files changed by transactions that cannot leave a half state.

Every change is one transaction (:meth:`NginxRouter.apply`): write the new file
next to the old one, ``nginx -t`` the whole config, rename it into place (atomic),
reload gracefully (SIGHUP: old workers finish their requests), verify through
nginx that the name answers as expected once no worker of the old configuration
accepts connections, and on any failure put the previous bytes back, reload
again and wait until nginx answers as before. In embedded mode the test runs before the rename,
on a staged copy of the whole config (same main file, same user includes). A
system nginx can only be tested on its real paths, so there the rename comes
first and a failed test restores the old file before anything reloads.

Keep-alive and reloads (tests/test_zero_downtime.py, benchmarks/switch.py): on a
graceful reload the old workers close their idle keep-alive connections at once,
and those with a request in flight right after answering it. Either way the next
request a client sends on such a connection gets no answer. Measured with 8
keep-alive connections: about 1-2 per reload with the sample app (answers in
~1 ms); every connection, once per reload, with a backend that takes ~40 ms.
`lingering_close always` and a shorter `worker_shutdown_timeout` change nothing
(they concern requests being read and long requests); only `keepalive_timeout 0`
avoids it, by giving up keep-alive. So clients retry an idempotent request once
on a new connection in exactly that case (RFC 9110 9.2.2), as browsers do. New
connections and requests in flight are never lost: the listening socket stays
open across the reload, old workers finish what they started, and
`proxy_next_upstream` moves a request off an instance that refuses it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bgci.errors import RouterError
from bgci.files import fsync_dir, write_atomic
from bgci.netaddr import listen_url
from bgci.router.control import NginxControl, NginxStatus, control_for, not_running
from bgci.router.site import (
    Layout,
    Site,
    Upstream,
    render_include,
    render_live,
    render_main,
    render_preview,
    served_by,
)
from bgci.router.verify import Expectation, Verifier

if TYPE_CHECKING:
    from bgci.config import Settings


@dataclass(frozen=True)
class Applied:
    """What a transaction did."""

    files: tuple[str, ...]
    reloaded: bool
    seconds: float


class NginxRouter:
    """Renders bgci's nginx files and changes them by validated, atomic, verified, reversible transactions."""

    def __init__(self, site: Site, layout: Layout, control: NginxControl, *, verify_path: str = "/",
                 verify_sha: bool = True, verify_timeout: float = 10.0) -> None:
        self.site, self.layout, self.control = site, layout, control
        self.verify_sha = verify_sha
        self.base_url = listen_url(site.listen)
        self.verifier = Verifier(control, self.base_url, site.env_header, path=verify_path,
                                 timeout=verify_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> NginxRouter:
        site = Site.from_settings(settings)
        layout = Layout(settings.path(settings.nginx.dir))
        n = settings.nginx
        return cls(site, layout, control_for(n, layout, site), verify_path=n.verify_path,
                   verify_sha=n.verify_sha, verify_timeout=n.verify_timeout)

    # layout
    def ensure_layout(self) -> None:
        """Create the directories and the files bgci owns that do not exist yet (never touches live.conf)."""
        for directory in (self.layout.root, self.layout.previews_dir, self.layout.user_dir,
                          self.layout.pid_file.parent, self.layout.error_log.parent, self.layout.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.layout.live_file.exists():
            write_atomic(self.layout.live_file, render_live(self.site, None))
        self._write_if_changed(self.layout.include_file,
                               render_include(self.site, self.layout.live_file, self.layout.previews_dir))
        if self.control.mode == "embedded":
            self._write_if_changed(self.layout.main_file,
                                   render_main(self.site, self.layout, self.layout.include_file))

    def _write_if_changed(self, path: Path, text: str) -> None:
        if _read(path) != text:
            write_atomic(path, text)

    def previews(self) -> list[str]:
        return sorted(p.stem for p in self.layout.previews_dir.glob("*.conf"))

    def live_env(self) -> str | None:
        """The environment live.conf routes to, None before the first promote."""
        return served_by(_read(self.layout.live_file))

    def _host_for(self, path: Path) -> str:
        return self.site.server_name if path == self.layout.live_file else self.site.preview_host(path.stem)

    # the changes
    def switch_live(self, upstream: Upstream, then: Callable[[], None] | None = None) -> Applied:
        """Route server_name to `upstream`; `then` runs once it is verified (a failure there undoes it too)."""
        expect = Expectation(self.site.server_name, upstream.env, self._sha(upstream), len(upstream.servers))
        return self.apply({self.layout.live_file: render_live(self.site, upstream)}, expect, then,
                          require_running=True)

    def add_preview(self, upstream: Upstream) -> Applied:
        """Serve the environment at `<env>.<preview_domain>` (replacing an older file for it)."""
        expect = Expectation(self.site.preview_host(upstream.env), upstream.env, self._sha(upstream),
                             len(upstream.servers))
        return self.apply({self.layout.preview_file(upstream.env): render_preview(self.site, upstream)}, expect)

    def _sha(self, upstream: Upstream) -> str:
        return upstream.sha if self.verify_sha else ""

    def remove_preview(self, env: str) -> Applied | None:
        """Stop serving `<env>.<preview_domain>`; None when it was not registered."""
        path = self.layout.preview_file(env)
        if not path.exists():
            return None
        return self.apply({path: None}, Expectation(self.site.preview_host(env), None))

    # the transaction
    def apply(self, changes: Mapping[Path, str | None], expect: Expectation,
              then: Callable[[], None] | None = None, *, require_running: bool = False) -> Applied:
        """The transaction: stage, test, rename, reload, verify, `then`; on any failure restore and reload.

        `changes` maps files of the layout to their new text (None: delete). When the embedded
        nginx is not running (and `require_running` is false), the files are tested and written
        but nothing reloads or verifies: nginx serves them once started.
        """
        started = time.monotonic()
        self.ensure_layout()
        running = self.control.is_running()
        if require_running and not running:
            raise not_running(self.layout)
        before = {path: _read(path) for path in changes}
        self._check_owned(changes)
        if self.control.tests_staged:
            self._test_staged(changes)
        self._commit(changes)
        reloaded = False
        try:
            if not self.control.tests_staged:
                self.control.test()
            if running:
                reloaded = True  # from here nginx may have loaded the new files: restoring must reload
                self.control.reload()
                self.verify(expect)
            if then is not None:
                then()
        except BaseException as exc:  # Ctrl-C or a Jenkins abort too: never leave a half-made switch
            self._restore(before, reloaded, exc)
            raise
        return Applied(files=tuple(str(p) for p in changes), reloaded=running,
                       seconds=time.monotonic() - started)

    def _check_owned(self, changes: Mapping[Path, str | None]) -> None:
        for path in changes:
            if path.parent not in (self.layout.root, self.layout.previews_dir):
                raise RouterError(f"{path} is not a file bgci owns")

    def _test_staged(self, changes: Mapping[Path, str | None]) -> None:
        """`nginx -t` on a copy of the whole config as it will be, before anything is renamed."""
        with tempfile.TemporaryDirectory(dir=self.layout.root, prefix=".stage-") as stage_dir:
            stage = Path(stage_dir)
            self._stage(stage, changes)
            self.control.test(stage / "nginx.conf")

    def _stage(self, stage: Path, changes: Mapping[Path, str | None]) -> None:
        """The new files and the unchanged ones side by side, under the same main file and user includes."""
        (stage / "previews").mkdir()
        for path, text in changes.items():
            if text is not None:
                (stage / path.relative_to(self.layout.root)).write_text(text, encoding="utf-8")
        current = [self.layout.live_file, *self.layout.previews_dir.glob("*.conf")]
        for path in current:
            if path not in changes:
                shutil.copyfile(path, stage / path.relative_to(self.layout.root))
        (stage / "bgci.conf").write_text(render_include(self.site, stage / "live.conf", stage / "previews"))
        (stage / "nginx.conf").write_text(render_main(self.site, self.layout, stage / "bgci.conf"))

    def _commit(self, changes: Mapping[Path, str | None]) -> None:
        for path, text in changes.items():
            if text is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                fsync_dir(path.parent)
            else:
                write_atomic(path, text)

    def _restore(self, before: Mapping[Path, str | None], reloaded: bool, cause: BaseException) -> None:
        """Put the previous bytes back and reload, so nginx serves exactly what it served before."""
        for path, text in before.items():
            if text is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                write_atomic(path, text)
        if reloaded:
            try:
                self.control.reload()
                # A reload is asynchronous: wait until nginx answers as before, so the caller sees the old state.
                for path, text in before.items():
                    self.verify(Expectation(self._host_for(path), served_by(text), needs_2xx=False), restoring=True)
            except RouterError as exc:
                raise RouterError(f"{cause}; the previous files are back but nginx does not serve them: {exc}",
                                  hint="check the error log and run `bgci router status`") from cause
        if isinstance(cause, RouterError) and not cause.hint:
            cause.hint = "the previous nginx configuration was restored"

    def verify(self, expect: Expectation, timeout: float | None = None, *, restoring: bool = False) -> None:
        """Wait until nginx serves `expect` (see :meth:`Verifier.verify`)."""
        self.verifier.verify(expect, timeout, restoring=restoring)

    # process
    def start(self) -> NginxStatus:
        self.ensure_layout()
        return self.control.start()

    def stop(self) -> NginxStatus:
        return self.control.stop()

    def status(self) -> NginxStatus:
        return self.control.status()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
