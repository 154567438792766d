"""Job definitions (data) -> Jenkins config.xml, through jenkins-job-builder's library, offline.

`render_jobs(settings)` is the one path from YAML to XML: `bgci jobs render` writes what it
returns and `bgci jobs push` pushes exactly the same bytes (JJB's `test` and `update` share
`_generate_xmljobs` the same way). It is pure: it reads the template files and bgci.toml's
`[jenkins]` section, never Jenkins, and gives byte-identical XML from run to run.

What is loaded, in this order (jenkins-job-builder 6.x):

1. bgci's built-in templates: every *.yaml in the repository's top-level `jobs/` directory,
   shipped inside the package as `bgci/jenkins/jobs` (a symlink in the source tree, copied as
   package data into a wheel), see :func:`builtin_jobs_dir`;
2. the app's own templates and macros: every *.yaml in `[jenkins] jobs_dir` (relative to
   bgci.toml; skipped when the directory does not exist);
3. one generated `project` named after the app, with the parameters of :func:`project_parameters`.
   It instantiates the job-group `bgci-jobs`, every job-group of the app, and every job-template
   of the app that none of the app's groups already lists.

Each job's description gets the line :func:`marker` so `push --delete-old` removes only the
jobs bgci manages for this app.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bgci.errors import ConfigError

if TYPE_CHECKING:
    from bgci.config import Settings

BUILTIN_GROUP = "bgci-jobs"
JJB_INI = Path(__file__).with_name("jjb.ini")


def builtin_jobs_dir() -> Path:
    """bgci's own job templates: `jobs/` at the top of the repository, package data when installed."""
    return Path(__file__).parent / "jobs"


def marker(app: str) -> str:
    """The line in a job's description that makes it bgci's, for this app only."""
    return f"Managed by bgci for app {app}; do not edit by hand"


def has_marker(description: str, app: str) -> bool:
    return any(line.strip() == marker(app) for line in description.splitlines())


@dataclass(frozen=True)
class RenderedJob:
    """One job's full name (`folder/sub/job`) and its config.xml as Jenkins will store it."""

    name: str
    xml: bytes

    @property
    def folder(self) -> str:
        """The folder path holding the job, '' at the top level."""
        return self.name.rpartition("/")[0]

    @property
    def base_name(self) -> str:
        return self.name.rpartition("/")[2]


# -- parameters --------------------------------------------------------------------------------------
def project_parameters(settings: Settings) -> dict[str, str]:
    """The `{name}` parameters every template sees, from bgci.toml; ConfigError lists what is wrong."""
    jenkins = settings.jenkins
    folder = jenkins.folder.strip("/")
    host, _, port = settings.nginx.listen.rpartition(":")
    preview_port = f":{port}" if host and port not in ("", "80") else ""
    promote_path = "".join(f"job/{part}/" for part in [*folder.split("/"), f"{settings.app}-promote"] if part)
    params = {
        **jenkins.params,
        "app": settings.app,
        "jenkins-folder": folder,
        "folder-prefix": f"{folder}/" if folder else "",
        "git-url": jenkins.git_url,
        "branch": jenkins.branch,
        "git-credentials-id": jenkins.git_credentials_id,
        "build-label": jenkins.build_label,
        "router-label": jenkins.router_label,
        "registry-credentials-id": jenkins.registry_credentials_id,
        "full-schedule": jenkins.full_schedule,
        "poll-schedule": jenkins.poll_schedule,
        "jenkinsfile": jenkins.jenkinsfile,
        "preview-domain": settings.nginx.preview_domain,
        "preview-port": preview_port,
        "promote-path": promote_path,
        "router-dir": jenkins.router_dir,
    }
    problems = []
    if not jenkins.git_url:
        problems.append("jenkins.git_url: required to render jobs (the URL Jenkins clones the app from)")
    for name, value in params.items():
        if "{" in value or "}" in value:
            problems.append(f"jenkins: {name} = {value!r} may not contain {{ or }} (template syntax)")
    if problems:
        raise ConfigError(f"{settings.config_file}: {len(problems)} problem(s) in [jenkins]", problems=problems)
    return params


# -- rendering ---------------------------------------------------------------------------------------
def render_jobs(settings: Settings) -> list[RenderedJob]:
    """Expand the templates for this app and generate each job's XML, sorted by name."""
    app_dir = settings.path(settings.jenkins.jobs_dir) if settings.jenkins.jobs_dir else None
    return render_definitions(
        project_parameters(settings),
        [builtin_jobs_dir(), *([app_dir] if app_dir and app_dir.is_dir() else [])],
    )


def render_definitions(params: Mapping[str, str], directories: list[Path]) -> list[RenderedJob]:
    """The JJB library part: load the directories, add the app's project, generate XML.

    The first directory is bgci's (its group `bgci-jobs` is always instantiated); templates and
    groups of the later ones are the app's own.
    """
    # Imported here: jenkins_jobs pulls in pkg_resources, which commands other than `jobs` never need.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from jenkins_jobs.config import JJBConfig
        from jenkins_jobs.errors import JenkinsJobsException
        from jenkins_jobs.loader import load_files
        from jenkins_jobs.registry import ModuleRegistry
        from jenkins_jobs.roots import Roots
        from jenkins_jobs.xml_config import XmlJobGenerator

    app = params["app"]
    try:
        with _quiet_jjb():
            config = JJBConfig(str(JJB_INI))  # our own ini: never ~/.config/jenkins_jobs or /etc
            config.validate()
            roots = Roots(config)
            load_files(config, roots, directories)
            project = _project(params, roots, app_paths=directories[1:])
            load_files(config, roots, [io.StringIO(yaml.safe_dump([{"project": project}], sort_keys=True))])
            registry = ModuleRegistry(config, plugins_list=[])  # no plugin versions: the current XML forms
            registry.set_macros(roots.macros)
            jobs = roots.generate_jobs()
            for job in jobs:
                job.data["description"] = _with_marker(job.data.get("description"), app)
            registry.amend_job_dicts(jobs)
            xml_jobs = XmlJobGenerator(registry).generateXML(jobs)
            rendered = [RenderedJob(str(job.name), job.output()) for job in xml_jobs]
    except JenkinsJobsException as exc:
        raise ConfigError(f"job definitions: {_jjb_message(exc)}",
                          hint="see jobs/README.md for the template parameters") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"job definitions: {_yaml_message(exc)}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        where = ", ".join(str(d) for d in directories)
        raise ConfigError(f"job definitions in {where}: jenkins-job-builder failed: "
                          f"{type(exc).__name__}: {_one_line(str(exc))}") from None
    return sorted(rendered, key=lambda job: job.name)


def _project(params: Mapping[str, str], roots: Any, app_paths: list[Path]) -> dict[str, Any]:
    """The generated project: bgci's group, then the app's groups and ungrouped templates."""
    def is_app(item: Any) -> bool:
        path = getattr(getattr(item, "pos", None), "path", None)
        return path is not None and any(Path(str(path)).resolve().is_relative_to(p.resolve()) for p in app_paths)

    groups = sorted(str(name) for name, group in roots.job_groups.items() if is_app(group))
    grouped = {str(spec.name) for name in groups for spec in roots.job_groups[name].specs}
    templates = sorted(str(name) for name, template in roots.job_templates.items()
                       if is_app(template) and str(name) not in grouped)
    return {"name": params["app"], **params, "jobs": [BUILTIN_GROUP, *groups, *templates]}


def _with_marker(description: Any, app: str) -> str:
    text = str(description or "").rstrip("\n")
    if has_marker(text, app):
        return text
    return f"{text}\n\n{marker(app)}" if text else marker(app)


class _quiet_jjb:
    """JJB logs progress and deprecations at INFO/WARNING; bgci reports through its own errors."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("jenkins_jobs")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self.warnings.__exit__(*exc)
        self.logger.setLevel(self.level)


def _jjb_message(exc: Any) -> str:
    """`file:line: message` from the innermost position JJB knows, on one line.

    JJB's context entries say where it was ("In job template ...", "While expanding ..."); one
    that says something else (a duplicate's "Duplicate job: 'x'") is the real news and leads.
    """
    def where(pos: Any) -> str:
        if pos is None or not pos.path:
            return ""
        path = "<bgci.toml [jenkins]>" if str(pos.path).startswith("<") else pos.path
        return f"{path}:{pos.line + 1}"

    located = [c for c in exc.ctx if where(c.pos)]
    news = [c for c in located if not str(c.message).startswith(("In ", "Defined here", "While "))]
    message = _one_line(exc.message)
    if news:
        also = f" ({message} at {where(exc.pos)})" if where(exc.pos) else f" ({message})"
        return f"{where(news[0].pos)}: {_one_line(news[0].message)}{also}"
    innermost = where(exc.pos) or (where(located[-1].pos) if located else "")
    return f"{innermost}: {message}" if innermost else message


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return _one_line(problem)
    return f"{mark.name}:{mark.line + 1}: not valid YAML: {_one_line(problem)}"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())
