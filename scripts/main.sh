#!/usr/bin/env bash
# The main job: the CPU quickstart. Trains the tiny joint model on the procedural audio-visual world
# (at most 10 minutes on 2 cores, set-up included), then generates held-out prompts as mp4s with sound,
# a montage, loss curves and a metrics report in outputs/quickstart/. Rerunning resumes.
# Flags are passed to `skyreels-v4 quickstart` (e.g. --preset evidence). Benchmarks: scripts/benchmarks.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
bash scripts/setup.sh
source .venv/bin/activate
if [ "$#" -gt 0 ]; then
    exec skyreels-v4 quickstart --out outputs/quickstart "$@"
fi
# The plain main job stays within 10 minutes however long the set-up took (a cold package cache, a slow
# registry): training gets the quick preset's 6 minutes, or less when set-up left less than that plus
# 100 s for caching, export and generation (72 s measured on a 2-core CPU).
setup_seconds=$(($(date +%s) - started))
minutes=$(python -c "print(f'{max(1.0, min(6.0, (600 - 100 - $setup_seconds) / 60)):.2f}')")
exec skyreels-v4 quickstart --out outputs/quickstart --minutes "$minutes"
