"""What a command pays in imports before it does anything, by `python -X importtime`.

Used by switch.py (`bgci promote`) and test_overhead.py (`bgci test`), with the interpreter of
the venv they install bgci into (benchmarks/installed.py). `--baseline REV` measures the same
command's modules in another revision too (a temporary git worktree), for a before/after.
Bytecode is cached (a first, untimed run writes it), as pip compiles an installed package's:
compiling bgci's sources is not what a user's command pays.

Seconds vary with the machine's load; instructions do not. With valgrind installed it also
counts the instructions of a process that imports the command's modules and exits (callgrind),
plain and as the console script imports them (bgci.console: cycle collector paused, then what
was imported frozen), beside `python -c pass`.
"""

from __future__ import annotations

import os
import shutil
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
           "bgci.state", "bgci.engine", "bgci.gate")
TEST = ("bgci.cli", "bgci.cli.test_cmds", "bgci.app", "bgci.testing", "bgci.images", "bgci.gate", "bgci.engine")
HEAVY = ("docker", "requests", "urllib3", "jinja2", "http.client", "ssl")  # reported when imported
AS_THE_CONSOLE_DOES = "import gc\ngc.disable()\n{imports}gc.freeze()\ngc.enable()\n"  # bgci.console's main


def import_seconds(modules: Sequence[str], tree: Path = REPO, python: Path | str = sys.executable,
                   runs: int = 7) -> tuple[float, list[str]]:
    """(median seconds to import `modules` and what they import, in a fresh `python`, from `tree`;
    which of HEAVY they imported)."""
    statement = _import_statement(modules)
    heavy = statement + f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    with tempfile.TemporaryDirectory(prefix="bgci-pycache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=cache)
        # Untimed: writes the bytecode, and says which heavy packages the modules pull in.
        # cwd: `python -c` puts it first on sys.path, where it would shadow `tree`.
        loaded = subprocess.run([str(python), "-c", heavy], env=env, cwd=cache, check=True, capture_output=True,
                                text=True).stdout.split()
        totals = []
        for _ in range(runs):
            result = subprocess.run([str(python), "-X", "importtime", "-c", statement], env=env, cwd=cache,
                                    capture_output=True, text=True, check=True)
            totals.append(_top_level_microseconds(result.stderr) / 1e6)
    return statistics.median(totals), loaded


def import_instructions(modules: Sequence[str], tree: Path = REPO, python: Path | str = sys.executable
                        ) -> tuple[int, int, int] | None:
    """Instructions (valgrind callgrind) of a process that imports `modules` and exits: (plain, as
    bgci.console imports them, `python -c pass`); None without valgrind."""
    if not shutil.which("valgrind"):
        return None
    imports = _import_statement(modules)
    counts = []
    with tempfile.TemporaryDirectory(prefix="bgci-callgrind-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=cache)
        for statement in (imports, AS_THE_CONSOLE_DOES.format(imports=imports), "pass"):
            subprocess.run([str(python), "-c", statement], env=env, cwd=cache, check=True)  # writes the bytecode
            out = Path(cache, "callgrind.out")
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(python), "-c",
                            statement], env=env, cwd=cache, check=True, capture_output=True)
            counts.append(_callgrind_total(out.read_text()))
    return counts[0], counts[1], counts[2]


def _callgrind_total(profile: str) -> int:
    return next(int(line.split()[1]) for line in profile.splitlines() if line.startswith(("summary:", "totals:")))


def _import_statement(modules: Sequence[str]) -> str:
    return "import importlib, sys\n" + "".join(
        f"try:\n    importlib.import_module({name!r})\nexcept ImportError:\n    pass\n" for name in modules)


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


def report(label: str, modules: Sequence[str], baseline: str | None, python: Path | str = sys.executable) -> None:
    now, loaded = import_seconds(modules, python=python)
    line = (f"imports of `{label}`: {now * 1000:.0f} ms (python -X importtime, median of 7, this tree; "
            f"{', '.join(loaded) or 'none'} of {', '.join(HEAVY)})")
    if baseline:
        with revision_tree(baseline) as tree:
            before, loaded_before = import_seconds(modules, tree, python=python)
        line += (f"; {before * 1000:.0f} ms at {baseline} ({(before - now) * 1000:+.0f} ms saved; "
                 f"{', '.join(loaded_before) or 'none'} of them)")
    print(line)
    counts = import_instructions(modules, python=python)
    if counts:
        plain, console, bare = (count / 1e6 for count in counts)
        line = (f"instructions of a process importing `{label}`'s modules (callgrind): {plain:.0f} M plain, "
                f"{console:.0f} M as the console script imports them ({(console - plain) / (plain - bare):+.0%} "
                f"of what imports add to `python -c pass`, {bare:.0f} M)")
        if baseline:
            with revision_tree(baseline) as tree:
                before = import_instructions(modules, tree, python=python)
            line += f"; {before[0] / 1e6:.0f} M plain at {baseline}" if before else ""
        print(line)


def main() -> None:
    """`python benchmarks/importcost.py [--baseline REV] [--python PATH]`: both commands' import cost."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", metavar="REV", help="also measure at this git revision")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure with (a venv's)")
    args = parser.parse_args()
    report("bgci promote", PROMOTE, args.baseline, args.python)
    report("bgci test", TEST, args.baseline, args.python)


if __name__ == "__main__":
    main()
