#!/usr/bin/env bash
# Every benchmark: it runs every benchmark under benchmarks/ on this
# machine (attention kernels, VSA, MMDiT blocks, solvers) and prints a table of ratios to the
# baselines measured in the same run; report.md, results.json and a chart go to outputs/benchmarks/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
exec python -m benchmarks.report "$@"
