#!/usr/bin/env bash
# Every GPU benchmark in one unattended call (issue 15): Triton/flex block-sparse and VSA vs
# SDPA/flash at L = 16k..64k, the joint block pair fwd+bwd (eager vs compiled), one sampling step of
# the small preset, SP=1 vs SP=N when several GPUs are visible. Writes its table, with the device
# named, into the marked GPU section of docs/benchmarks.md. A few minutes on one H100/H200;
# "--quick" for about a minute. Without CUDA it says so and exits 0, changing nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh
fi
source .venv/bin/activate
exec python -m benchmarks.gpu_suite "$@"
