"""bgci test | smoke: run the suite in the production image; black-box check a URL or an environment."""

from __future__ import annotations

from pathlib import Path

import click

from bgci import images
from bgci.cli.common import AppContext, emit, json_option, pass_app, scheduler_option

junit_dir_option = click.option(
    "--junit-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the JUnit XML (default: [test] results_dir, test-results/ next to bgci.toml).")


@click.command()
@click.option("--sha", metavar="SHA", help="Test the image of this commit, <repo>:<sha> (default: HEAD's).")
@click.option("--image", "reference", metavar="REF", help="Test this image reference instead.")
@junit_dir_option
@click.option("--timeout", type=click.FloatRange(min=1), metavar="S",
              help="Kill the suite after S seconds (default: [test] timeout).")
@json_option
@pass_app
def test(app: AppContext, sha: str | None, reference: str | None, junit_dir: Path | None, timeout: float | None,
         as_json: bool) -> None:
    """Run the test suite inside the production image and write unit-<sha>.xml for Jenkins.

    With [test] extra_packages the suite runs in a test image: the production image plus those packages.
    Exits with the suite's exit code (7 if bgci had to write the report itself: no or broken XML, timeout).
    A pass is recorded against the image digest (<app>:tested-<sha>, pushed when there is a registry),
    which `bgci promote` checks.
    """
    if sha and reference:
        raise click.UsageError("--sha and --image exclude each other")
    settings = app.settings
    if not reference:
        reference = images.reference_for_sha(settings, sha or _head_sha(app))
    # An aborted Jenkins build (SIGTERM) still removes the test container.
    report = app.bgci().test(reference, results_dir=junit_dir, timeout=timeout)
    emit(report, as_json, report.describe())
    report.raise_for_status()


@click.command()
@click.option("--url", metavar="URL", help="Check this base URL, http(s)://host[:port].")
@click.option("--env", "env_name", metavar="ENV", help="Check every instance of environment ENV.")
@click.option("--preview/--no-preview", default=None,
              help="With --env: also check through the router, Host <env>.<preview_domain> "
                   "(default: when the environment has a preview and nginx runs).")
@click.option("--host-header", metavar="HOST", help="With --url: send this Host header.")
@click.option("--name", metavar="NAME",
              help="Report name: smoke-NAME.xml (default: the environment's sha, or the URL's host-port).")
@junit_dir_option
@scheduler_option
@json_option
@pass_app
def smoke(app: AppContext, url: str | None, env_name: str | None, preview: bool | None, host_header: str | None,
          name: str | None, junit_dir: Path | None, scheduler: str | None, as_json: bool) -> None:
    """Run the [[smoke]] checks of bgci.toml against a URL or a running environment.

    Writes one JUnit test case per check and target; exits 7 if any check fails.
    """
    from bgci import smoke as checks

    if bool(url) == bool(env_name):
        raise click.UsageError("give exactly one of --url and --env")
    if host_header and env_name:
        raise click.UsageError("--host-header goes with --url (an environment's preview target sets its own)")
    settings = app.settings
    checks.validate_checks(settings.smoke)
    properties: dict[str, str] = {"bgci.app": settings.app}
    if url:
        targets = [checks.target_for_url(url, host_header)]
        name = name or targets[0].base_url.split("://", 1)[1]
        properties["bgci.url"] = url
    else:
        environment, targets = app.bgci(scheduler).smoke_targets(env_name or "", preview)
        name = name or environment.sha or environment.name
        properties.update({"bgci.env": environment.name, "bgci.sha": environment.sha,
                           "bgci.digest": environment.digest})
    report = checks.run_smoke(settings.smoke, targets, results_dir=app.bgci().results_dir(junit_dir), name=name,
                              properties=properties, log=app.log)
    emit(report, as_json, report.describe())
    report.raise_for_status()


def _head_sha(app: AppContext) -> str:
    from bgci import gitplan

    return gitplan.resolve_sha(gitplan.open_repo(app.settings.project_dir), "HEAD")
