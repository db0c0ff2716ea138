#!/usr/bin/env bash
# The main job: the CPU quickstart. Trains the tiny joint model on the procedural audio-visual world
# (about 10 minutes on 2 cores), then generates held-out prompts as mp4s with sound, a montage, loss
# curves and a metrics report in outputs/quickstart/. Rerunning resumes. Benchmarks: scripts/benchmarks.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
exec skyreels-v4 quickstart --out outputs/quickstart "$@"
