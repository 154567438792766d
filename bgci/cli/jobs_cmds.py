"""bgci jobs render | push | trigger: the app's Jenkins jobs, from bgci's templates and bgci.toml [jenkins].

`render` and `push` share one path (bgci.jenkins.jobs.render_jobs): what `render` writes is
byte for byte what `push` sends. The Jenkins user and API token come from the environment only:
BGCI_JENKINS_USER and BGCI_JENKINS_TOKEN (or Jenkins' own JENKINS_USER_ID / JENKINS_API_TOKEN;
BGCI_JENKINS_TOKEN_FILE reads the token from a file).
"""

from __future__ import annotations

from pathlib import Path

import click

from bgci.cli.common import AppContext, emit, json_option, parse_key_values, pass_app, terminate_as_interrupt
from bgci.errors import TestsFailed

url_option = click.option("--url", metavar="URL", help="Jenkins URL (default: [jenkins] url, or BGCI_JENKINS_URL).")


@click.group()
def jobs() -> None:
    """The app's Jenkins jobs: render them to config.xml, push them, trigger builds.

    Jobs: <app>-full (nightly `bgci build full --no-cache`), <app>-build (on push: `bgci build
    auto`, then <app>-test), <app>-test (tests, environment, smoke checks, a promote link),
    <app>-promote, <app>-rollback (on the router agent, one at a time) and <app>-pipeline
    (the Jenkinsfile). Credentials: BGCI_JENKINS_USER and BGCI_JENKINS_TOKEN.
    """


@jobs.command()
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write DIR/<job full name>/config.xml per job (folders become directories).")
@click.option("--xml", "show_xml", is_flag=True, help="Print every job's config.xml instead of its name.")
@json_option
@pass_app
def render(app: AppContext, output: Path | None, show_xml: bool, as_json: bool) -> None:
    """Render the jobs offline (no Jenkins needed): list, print or write them.

    Exactly what `bgci jobs push` would send; the same bytes on every run.
    """
    from bgci.jenkins.jobs import render_jobs

    rendered = render_jobs(app.settings)
    if output is not None:
        for job in rendered:
            target = output / job.name / "config.xml"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(job.xml)
        app.log(f"wrote {len(rendered)} job(s) to {output}")
    if show_xml and not as_json:
        for job in rendered:
            click.echo(f"<!-- {job.name}/config.xml -->")
            click.echo(job.xml.decode("utf-8"), nl=False)
        return
    emit([job.name for job in rendered], as_json, "\n".join(job.name for job in rendered))


@jobs.command()
@url_option
@click.option("--dry-run", is_flag=True, help="Compare with Jenkins and say what would change; change nothing.")
@click.option("--delete-old", is_flag=True,
              help="Also delete jobs marked as bgci's for this app that are no longer rendered "
                   "(hand-made jobs and other apps' jobs are never touched).")
@json_option
@pass_app
def push(app: AppContext, url: str | None, dry_run: bool, delete_old: bool, as_json: bool) -> None:
    """Create or update the jobs on Jenkins, only those that differ.

    Configurations are compared after normalising whitespace and plugin versions, so a job
    whose config.xml is already ours is not rewritten. Folders are created as needed.
    """
    from bgci.jenkins.client import JenkinsClient
    from bgci.jenkins.jobs import render_jobs

    rendered = render_jobs(app.settings)
    client = JenkinsClient.from_settings(app.settings, url)
    prefix = "would " if dry_run else ""
    result = client.push(rendered, app=app.settings.app, dry_run=dry_run, delete_old=delete_old,
                         on_change=lambda action, name: app.log(f"{prefix}{action} {name}"))
    summary = (f"{'dry run: ' if dry_run else ''}{len(result.created)} created, {len(result.updated)} updated, "
               f"{len(result.unchanged)} unchanged, {len(result.deleted)} deleted on {client.url}")
    emit(result, as_json, summary)


@jobs.command()
@click.argument("job")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Build parameter; repeatable.")
@click.option("--wait", is_flag=True, help="Wait for the result: exit 0 SUCCESS, 7 UNSTABLE, 10 otherwise.")
@click.option("--follow", is_flag=True, help="Stream the console while waiting (implies --wait).")
@click.option("--timeout", type=click.FloatRange(min=1), metavar="S", help="Give up waiting after S seconds.")
@url_option
@json_option
@pass_app
def trigger(app: AppContext, job: str, params: tuple[str, ...], wait: bool, follow: bool, timeout: float | None,
            url: str | None, as_json: bool) -> None:
    """Start a build of JOB and print its number and URL.

    JOB is relative to [jenkins] folder (`web-app-test`), or a full name starting with /
    (`/other/job`). Ctrl-C or SIGTERM while waiting stops waiting only (exit 130): the build
    keeps running in Jenkins (stop it there).
    """
    from bgci.errors import JenkinsBuildFailed, WaitInterrupted
    from bgci.jenkins.builds import BuildRef
    from bgci.jenkins.client import JenkinsClient

    parameters = parse_key_values(params, "--param")
    full_name = _full_name(app, job)
    client = JenkinsClient.from_settings(app.settings, url)
    started: list[BuildRef] = []

    def on_started(build: BuildRef) -> None:
        started.append(build)
        app.log(f"started {build.job} #{build.number}: {build.url}")

    try:
        with terminate_as_interrupt():
            result = client.trigger(full_name, parameters, wait=wait or follow, follow=follow,
                                    on_line=lambda line: click.echo(line), on_started=on_started, timeout=timeout)
    except KeyboardInterrupt:
        # Not re-raised: click would turn it into Abort (exit 1) and say nothing about the build.
        where = f"{started[0].job} #{started[0].number} keeps running in Jenkins: {started[0].url}" if started \
            else f"{full_name} may still start in Jenkins (it was queued)"
        raise WaitInterrupted(f"stopped waiting; {where}") from None
    text = f"{result.job} #{result.number}" + (f" {result.result}" if result.result else "") + f" {result.url}"
    emit(result, as_json, text)
    if result.result is None or result.result == "SUCCESS":
        return
    if result.result == "UNSTABLE":
        raise TestsFailed(f"{result.job} #{result.number} is UNSTABLE (tests failed): {result.url}")
    raise JenkinsBuildFailed(f"{result.job} #{result.number} ended {result.result}: {result.url}")


def _full_name(app: AppContext, job: str) -> str:
    if job.startswith("/"):
        return job.strip("/")
    folder = app.settings.jenkins.folder.strip("/")
    return f"{folder}/{job}" if folder else job
