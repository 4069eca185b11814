"""The SFT stage: TRL's SFTTrainer on conversations (train.data.sft_data), assistant-only loss by default.

Assistant-only loss needs `{% generation %}…{% endgeneration %}` around the assistant turn in the chat
template. TRL swaps in a training version of the templates it knows (Qwen 2.5 and 3, Llama 3, Gemma, Phi 3,
…); for any other the stage stops before loading data into the trainer, saying to give `chat_template` (the same
template with the markers) or to turn assistant-only loss off. That choice is the user's: learning the prompt
too is a different objective, never a silent fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.errors import ConfigError
from train.config import SftConfig
from train.data import sft_data
from train.trainer import Prepared, lora_config, prepare, run_stage

STAGE = "sft"


def prepare_sft(config: SftConfig) -> Prepared:
    """The SFT stage's rows and TRL settings, checked before any model is loaded."""
    return prepare(STAGE, "trl.SFTConfig", config, sft_data(config),
                   lambda hardware: {"max_length": config.max_length,
                                     "assistant_only_loss": config.assistant_only_loss},
                   {"chat_template": _read_chat_template(config)})


def train_sft(config: SftConfig, prepared: Prepared | None = None) -> dict[str, Any]:
    """Train (or resume, or find done) the SFT stage; its record (stage.json)."""

    def make_trainer(model: Any, tokenizer: Any, dataset: Any, ready: Prepared) -> Any:
        from trl import SFTTrainer

        if ready.inputs["chat_template"] is not None:
            tokenizer.chat_template = ready.inputs["chat_template"]
        if config.assistant_only_loss:
            _check_generation_markers(tokenizer, config)
        trainer = SFTTrainer(model=model, args=ready.settings, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora_config(config))
        trainer.add_callback(_token_count(trainer))
        return trainer

    return run_stage(STAGE, config, prepared or prepare_sft(config), make_trainer,
                     {"chat_template": config.chat_template, "assistant_only_loss": config.assistant_only_loss})


def _token_count(trainer: Any) -> Any:
    """TRL's SFTTrainer keeps the count it logs as num_tokens in an attribute of its own, which no checkpoint holds:
    a resumed trainer counts on from the count logged at its checkpoint (the Trainer logs each checkpoint's step,
    train.trainer), found in the log history the checkpoint restores."""
    from transformers import TrainerCallback

    class TokenCount(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            logged = [entry["num_tokens"] for entry in state.log_history if "num_tokens" in entry]
            trainer._total_train_tokens = int(logged[-1]) if logged else 0

    return TokenCount()


def _read_chat_template(config: SftConfig) -> str | None:
    if config.chat_template is None:
        return None
    try:
        return Path(config.chat_template).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --chat-template {config.chat_template}: {exc}") from None


def _check_generation_markers(tokenizer: Any, config: SftConfig) -> None:
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
    )

    if has_generation_markers(tokenizer.chat_template):
        return
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        raise ConfigError(
            f"the chat template of {config.model} has no {{% generation %}} markers, which assistant-only loss needs, "
            "and TRL has no training version of it: give --chat-template FILE (the same template with {% generation "
            "%}…{% endgeneration %} around each assistant reply, end-of-turn token inside), or pass "
            "--no-assistant-only-loss to learn the prompts too") from None
