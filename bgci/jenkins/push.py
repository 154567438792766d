"""Pushing rendered jobs: JJB's `update` over `render_jobs`' bytes, as a mixin of the client.

`push` reads each job's config.xml, compares it with ours after normalising both (see
:func:`normalise`), and only creates or reconfigures what differs; `delete_old` removes jobs
carrying this app's marker that are no longer rendered. It uses only the client's transport
(`call`, `server`, `url`, `get_config`, `list_jobs`) and never imports the client.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bgci.errors import JenkinsError
from bgci.jenkins.jobs import RenderedJob, has_marker

if TYPE_CHECKING:
    import jenkins

T = TypeVar("T")
FOLDER_CLASS = "com.cloudbees.hudson.plugins.folder.Folder"
FOLDER_XML = (
    "<?xml version='1.1' encoding='UTF-8'?>\n"
    f'<{FOLDER_CLASS} plugin="cloudbees-folder">\n'
    "  <description>Created by bgci for its jobs</description>\n"
    "  <properties/>\n"
    f"</{FOLDER_CLASS}>\n"
)


@dataclass(frozen=True)
class PushResult:
    """What a push did (or, with dry_run, would do), by full job name."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # folders created for the jobs
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted or self.folders)


# -- normalising config.xml --------------------------------------------------------------------------
def normalise(xml: str | bytes) -> bytes:
    """config.xml in a form where only meaningful differences remain.

    Dropped: the XML declaration (Jenkins writes version 1.1, JJB 1.0), indentation and
    surrounding whitespace of text, and `plugin="name@version"` attributes (Jenkins adds the
    installed version). Attribute order is canonical (C14N).
    """
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise JenkinsError(f"config.xml is not well-formed XML: {exc}") from None
    for element in root.iter():
        element.attrib.pop("plugin", None)
    return ET.canonicalize(ET.tostring(root, encoding="unicode"), strip_text=True).encode("utf-8")


def description_of(xml: str | bytes) -> str:
    """The job description in a config.xml ('' when none or unreadable)."""
    try:
        root = ET.fromstring(xml.encode("utf-8") if isinstance(xml, str) else xml)
    except ET.ParseError:
        return ""
    element = root.find("description")
    return element.text or "" if element is not None else ""


# -- the mixin ---------------------------------------------------------------------------------------
class PushMixin:
    """Job push for :class:`~bgci.jenkins.client.JenkinsClient`; the transport comes from the client."""

    # Provided by the client (declared here for type checkers only; no runtime import of it).
    url: str
    server: jenkins.Jenkins

    if TYPE_CHECKING:
        def call(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...
        def get_config(self, name: str) -> str | None: ...
        def list_jobs(self) -> list[dict[str, Any]]: ...

    def push(self, jobs: Iterable[RenderedJob], *, app: str, dry_run: bool = False, delete_old: bool = False,
             on_change: Callable[[str, str], None] | None = None) -> PushResult:
        """Create or reconfigure only the jobs whose normalised config differs; optionally delete old ones.

        Jobs are pushed in name order, folders first. Reading happens before any change; when a
        change fails, the error's message ends with what was already done (each job is its own
        request, as with JJB: Jenkins has no transaction over several jobs; a rerun continues).
        """
        report = on_change or (lambda action, name: None)
        jobs = sorted(jobs, key=lambda job: job.name)
        created: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        plan: list[tuple[str, RenderedJob]] = []
        for job in jobs:  # prepare: read everything first
            current = self.get_config(job.name)
            if current is None:
                plan.append(("create", job))
            elif normalise(current) != normalise(job.xml):
                plan.append(("update", job))
            else:
                unchanged.append(job.name)
        folders = self._missing_folders({job.folder for action, job in plan if action == "create" and job.folder})
        old = self._old_managed_jobs(app, keep={job.name for job in jobs}) if delete_old else []
        done: list[str] = []
        try:
            for folder in folders:
                report("create folder", folder)
                if not dry_run:
                    self.call(f"create folder {folder}", self.server.create_job, folder, FOLDER_XML)
                done.append(f"folder {folder}")
            for action, job in plan:
                report(action, job.name)
                if action == "create":
                    if not dry_run:
                        self.call(f"create {job.name}", self.server.create_job, job.name, job.xml.decode("utf-8"))
                    created.append(job.name)
                else:
                    if not dry_run:
                        self.call(f"update {job.name}", self.server.reconfig_job, job.name, job.xml.decode("utf-8"))
                    updated.append(job.name)
                done.append(job.name)
            for name in old:
                report("delete", name)
                if not dry_run:
                    self.call(f"delete {name}", self.server.delete_job, name)
                done.append(f"deleted {name}")
        except JenkinsError as exc:  # same class (auth, unreachable, ...), saying what is done already
            exc.message = f"{exc.message}; already pushed: {', '.join(done) or 'nothing'}"
            exc.args = (exc.message,)
            raise
        return PushResult(created, updated, unchanged, old, folders, dry_run)

    def _missing_folders(self, folders: set[str]) -> list[str]:
        """Every folder (and parent folder) of these paths that does not exist yet, parents first."""
        wanted = sorted({"/".join(f.split("/")[:i]) for f in folders for i in range(1, f.count("/") + 2)},
                        key=lambda f: (f.count("/"), f))
        missing = []
        for folder in wanted:
            config = None if any(folder.startswith(m + "/") for m in missing) else self.get_config(folder)
            if config is None:
                missing.append(folder)
            elif ET.fromstring(config.encode("utf-8")).tag != FOLDER_CLASS:
                raise JenkinsError(f"{folder} on {self.url} is a job, not a folder",
                                   hint="choose another [jenkins] folder")
        return missing

    def _old_managed_jobs(self, app: str, keep: set[str]) -> list[str]:
        """Jobs carrying this app's marker that are not rendered any more (never folders)."""
        old = []
        for item in self.list_jobs():
            name = item.get("fullname") or item.get("name", "")
            if name in keep or "jobs" in item or item.get("_class", "").endswith("Folder"):
                continue
            config = self.get_config(name)
            if config is not None and has_marker(description_of(config), app):
                old.append(name)
        return sorted(old)
