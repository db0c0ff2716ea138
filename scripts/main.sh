#!/usr/bin/env bash
# The main job. Until the composed model exists it runs the attention kernel benchmarks on this
# machine and prints a readable table of ratios against SDPA measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
exec python -m benchmarks.report "$@"
