#!/usr/bin/env bash
# The README's test command: install rtdecode with the training and dev extras (CPU torch), then run the default suite.
# Slow and GPU tests are deselected by default; run them with: python -m pytest -m slow / -m gpu
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[train,dev]'
python -m pytest "$@"
