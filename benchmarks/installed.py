"""bgci as a Jenkins agent has it, for timing new processes: pip-installed (not editable) into a new venv.

An agent runs `bgci` from a venv where pip installed it: its bytecode compiled at install time and
no .pth file but the venv's own. This machine's interpreter is not like that: bgci is installed
editable there (a finder module imported at every start) and a sandbox `.pth` file imports certifi
at every Python start (~20-30 ms; the sandbox's, not bgci's). Timing that interpreter's console
script would charge bgci for both, so the benchmarks time this install and show the other beside it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "test-results", ".bgci",
                                    ".pytest_cache", ".ruff_cache")


@dataclass(frozen=True)
class Installed:
    python: Path
    bgci: Path

    def environ(self) -> dict[str, str]:
        """This environment without what would make Python ignore the install's bytecode."""
        return {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX", "PYTHONPATH")}


@contextmanager
def installed_bgci(tree: Path = REPO, python: Path | str = sys.executable) -> Iterator[Installed]:
    """bgci from `tree` (its working copy, uncommitted changes included) in a temporary venv of `python`."""
    with tempfile.TemporaryDirectory(prefix="bgci-venv-") as directory:
        source, venv = Path(directory) / "src", Path(directory) / "venv"
        shutil.copytree(tree, source, ignore=NOT_SOURCE)  # pip builds in place: keep build/ out of the repo
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(source)],
                       check=True, stdout=subprocess.DEVNULL)
        yield Installed(python=venv / "bin" / "python", bgci=venv / "bin" / "bgci")


def developer_script() -> Path | None:
    """The console script beside this interpreter (this machine's own install), if there is one."""
    beside = Path(sys.executable).with_name("bgci")
    return beside if beside.exists() else None


VENV_PYTHON_HELP = "the interpreter of the venv bgci is installed into: to time another Python (default: this one)"


def start_seconds(python: Path | str, runs: int = 11) -> float:
    """Median seconds for `python -c pass`: the interpreter's own start, site and .pth files included."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(python), "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
