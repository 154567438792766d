#!/usr/bin/env bash
# The test command: set the machine up (idempotent), lint, then run every test against the real parts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "== ruff"
ruff check bgci tests benchmarks
echo "== pytest"
exec python3 -m pytest -p no:cacheprovider -q --durations=15 "$@"
