"""The Jenkinsfile and the shared library in jenkins/: valid Groovy, calling only real bgci commands.

Debian's groovy compiles each file as Jenkins' CPS compiler first does (tests/groovy/parse.groovy),
so a syntax error fails here rather than in a Jenkins build; and each `bgci '...'` step names a
command the CLI has, so the pipeline cannot drift from the CLI it drives.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from bgci.cli import cli
from tests.support import REPO_ROOT

PARSER = REPO_ROOT / "tests" / "groovy" / "parse.groovy"
GROOVY_FILES = [REPO_ROOT / "Jenkinsfile", *sorted((REPO_ROOT / "jenkins").rglob("*.groovy"))]


def groovy(*files: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    java = shutil.which("java")
    if java and not Path(env.get("JAVA_HOME", "/usr/lib/jvm/default-java"), "bin", "java").exists():
        env["JAVA_HOME"] = str(Path(java).resolve().parent.parent)  # groovy's launcher needs it
    return subprocess.run(["groovy", str(PARSER), *map(str, files)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_jenkinsfile_and_library_compile() -> None:
    result = groovy(*GROOVY_FILES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("parsed ") == len(GROOVY_FILES) >= 2


def test_a_syntax_error_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "Jenkinsfile"
    broken.write_text((REPO_ROOT / "Jenkinsfile").read_text().replace("stages {", "stages {{", 1))
    result = groovy(broken)
    assert result.returncode != 0 and "Jenkinsfile" in result.stderr


@pytest.mark.parametrize("arguments", sorted(set(re.findall(r"""\bbgci ['"]([^'"]+)['"]""",
                                                              (REPO_ROOT / "Jenkinsfile").read_text()))))
def test_every_pipeline_step_is_a_real_bgci_command(arguments: str) -> None:
    words = [w for w in arguments.split() if not w.startswith("-") and "$" not in w]
    result = CliRunner().invoke(cli, [*words[:2], "--help"])  # `env create`, `build auto`, `promote`, ...
    assert result.exit_code == 0, result.output
