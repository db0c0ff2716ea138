#!/usr/bin/env bash
# One-command development set-up on a fresh CPU machine: a virtual environment in .venv with
# every package installed editable, torch pinned to the CPU wheel, and the test tools.
# Idempotent: running it again only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# System tools the audio tests and recipes use (espeak-ng makes real speech to evaluate on).
if ! command -v espeak-ng >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
    || echo "setup: could not install espeak-ng; tests that need it will skip" >&2
fi
# Skip pip when nothing it reads has changed since the last successful install.
stamp=.venv/.setup-stamp
digest=$(cat requirements/dev.txt packages/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements/dev.txt
  # PySceneDetect without its GUI OpenCV dependency (see requirements/dev.txt).
  .venv/bin/python -m pip install --quiet --no-deps "scenedetect>=0.6.4"
  echo "$digest" > "$stamp"
fi
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
