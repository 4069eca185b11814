#!/usr/bin/env bash
# Install, then score the bundled sample of 200 MATH problems with the bundled tiny judge, offline.
# Extra arguments go to `curate score` (e.g. --model PATH to use a real judge).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/curate score bundled:math-sample --out runs/quickstart "$@"
