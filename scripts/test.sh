#!/usr/bin/env bash
# Runs everything CI runs: set-up (idempotent), ruff, the import-layering contract, all tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh packages/attention -k triton`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
echo "== ruff"
ruff check .
ruff format --check .
echo "== import layering (import-linter)"
lint-imports
echo "== pytest"
if [ "$#" -eq 0 ]; then set -- packages tests; fi
python -m pytest "$@"
