"""The model a stage starts from, loaded the way curate's transformers backend finds it, and the hardware it
trains on.

`bundled:NAME` models are curate's (a packaged GGUF file is dequantised while loading and rebuilt as a plain
model, because transformers will not save a model that came from GGUF). On CPU, TRL needs `use_cpu=True` and
bf16 off (it would otherwise resolve bf16 to on and refuse). On a GPU the weights are float32 by default and
computed under bfloat16 autocast where the GPU has it (TRL's bf16=True), so the optimiser updates full-precision
weights; `dtype: bfloat16` loads bfloat16 weights instead (half the memory, but unless DeepSpeed or FSDP keeps
float32 master weights, a small learning rate may not move them).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from curate.backends.models import load_causal_lm, model_fingerprint
from curate.errors import BackendError, ConfigError
from train.config import StageConfig

log = logging.getLogger(__name__)


class Hardware(NamedTuple):
    device: str  # "cpu" or "cuda"
    dtype: str  # the weights' dtype: float32, bfloat16 or float16
    autocast: str | None  # mixed precision over float32 weights: "bfloat16" or "float16"; None for none

    def trainer_args(self) -> dict[str, Any]:
        """The TrainingArguments that say where and in what precision to train."""
        if self.device == "cpu":
            return {"use_cpu": True, "bf16": False, "fp16": False}
        half = self.autocast or self.dtype
        return {"bf16": half == "bfloat16", "fp16": half == "float16"}


def distributed_state() -> Any:
    """accelerate's PartialState of this job's processes, made as the Trainer makes it. On a machine without CUDA
    the processes of a launch are CPU processes joined through gloo only when the state is made with cpu=True;
    made without it, as accelerate's default does, every process saw itself alone and wrote as the main one (two
    `arms` processes took the same lock) until the first Trainer made the state again."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def main_process() -> bool:
    """Whether this is the process that writes (the only one, or rank 0 of an `accelerate launch`)."""
    return distributed_state().is_main_process


def hardware(config: StageConfig) -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise ConfigError("device cuda: CUDA is not available on this machine; use --device cpu or auto")
    device = "cuda" if config.device == "cuda" or (config.device == "auto" and cuda) else "cpu"
    if device == "cpu" and config.dtype not in ("auto", "float32"):
        raise ConfigError(f"dtype {config.dtype} on CPU: TRL trains in float32 there; use --dtype auto or float32")
    if config.dtype != "auto":
        return Hardware(device, config.dtype, None)
    # float32 weights, so the optimiser's small steps (GRPO's 1e-6) are not lost to bfloat16's rounding, under
    # bfloat16 autocast where the GPU has it
    half = "bfloat16" if device == "cuda" and torch.cuda.is_bf16_supported() else None
    return Hardware(device, "float32", half)


def load_model(config: StageConfig, hardware: Hardware) -> tuple[Any, Any]:
    """The model and tokenizer of `config.model` (a packaged GGUF model rebuilt as one transformers saves);
    BackendError (one line) when they cannot be loaded."""
    import torch

    model, tokenizer = load_causal_lm(config.model, getattr(torch, hardware.dtype), config.trust_remote_code,
                                      plain=True)
    if tokenizer.chat_template is None and getattr(config, "chat_template", None) is None:
        raise BackendError(f"model {config.model!r} has no chat template: train a chat/instruct model, or give "
                           "one with --chat-template")
    log.info("loaded %s (%s, %s)", config.model, hardware.device, hardware.dtype)
    return model, tokenizer


def model_identity(config: StageConfig) -> dict[str, str]:
    """The model as a stage records it: its name and, for a local folder, a fingerprint of its files."""
    return {"name": config.model, "fingerprint": model_fingerprint(config.model)}
