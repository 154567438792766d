"""The `bgci` console script and `python -m bgci`: the CLI, imported with the cycle collector paused.

Importing the CLI and one command's module makes some 100,000 objects and no garbage, yet
CPython's cycle collector walks them again and again while they are made. Pausing it for
those imports, then freezing what they made (gc.freeze: later collections, the one at exit
included, pass over those objects), saves about a tenth of the instructions a new `bgci test`
or `bgci promote` process spends before it does anything (benchmarks/importcost.py).
"""

from __future__ import annotations

import gc
import sys


def main() -> None:
    """Run `bgci` with sys.argv; exits with the command's status."""
    gc.disable()
    try:
        from bgci import cli

        cli.import_command(sys.argv[1:])
        gc.freeze()
    finally:
        gc.enable()
    cli.main()
