"""What a command pays in imports before it does anything, by `python -X importtime`.

Used by switch.py (`bgci promote`) and test_overhead.py (`bgci test`). `--baseline REV` measures
the same command's modules in another revision too (a temporary git worktree), for a before/after.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The modules a command imports on its way to work (the CLI resolves the command lazily).
PROMOTE = ("bgci.cli", "bgci.cli.router_cmds", "bgci.app", "bgci.deployer", "bgci.schedulers.local",
           "bgci.state")
TEST = ("bgci.cli", "bgci.cli.test_cmds", "bgci.app", "bgci.testing", "bgci.images", "bgci.registry")


def import_seconds(modules: Sequence[str], tree: Path = REPO, runs: int = 7) -> float:
    """Median seconds to import `modules` (and what they import) in a fresh interpreter, from `tree`."""
    statement = "import importlib\n" + "".join(
        f"try:\n    importlib.import_module({name!r})\nexcept ImportError:\n    pass\n" for name in modules)
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-c", statement], env=env, check=True)  # warm the bytecode caches
    totals = []
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], env=env,
                                capture_output=True, text=True, check=True)
        totals.append(_top_level_microseconds(result.stderr) / 1e6)
    return statistics.median(totals)


def _top_level_microseconds(report: str) -> int:
    """Sum of the cumulative times of the imports at the top level of the tree importtime prints."""
    total = 0
    for line in report.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # one space of indent: a top-level import
            total += int(cumulative)
    return total


@contextmanager
def revision_tree(rev: str) -> Iterator[Path]:
    """A checkout of `rev` in a temporary git worktree."""
    with tempfile.TemporaryDirectory() as directory:
        tree = Path(directory) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


def report(label: str, modules: Sequence[str], baseline: str | None) -> None:
    now = import_seconds(modules)
    line = f"imports of `{label}`: {now * 1000:.0f} ms (python -X importtime, median of 7, this tree)"
    if baseline:
        with revision_tree(baseline) as tree:
            before = import_seconds(modules, tree)
        line += f"; {before * 1000:.0f} ms at {baseline} ({(before - now) * 1000:+.0f} ms saved)"
    print(line)
