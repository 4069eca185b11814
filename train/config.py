"""Stage settings: frozen dataclasses that validate themselves, declared once for the flags and the recipes.

Each field's help text is the help of its flag (`dereason-train sft --learning-rate`, built from the fields by
curate.cli.flags) and the meaning of the same key in a YAML recipe (`learning_rate: 1e-5`).
`curate.settings.from_flat(cls, mapping, where)` builds a config from such a flat mapping, naming the key and
where it came from when a value is wrong; `asdict(config)` gives it back, which is what a stage records. A run
recipe puts several stages' settings in one file (train.recipe).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from curate.config import DEFAULT_RESPONSE_TEMPLATE
from curate.errors import ConfigError
from curate.settings import check, described

DEVICES, DTYPES = ("auto", "cpu", "cuda"), ("auto", "float32", "bfloat16", "float16")
VLLM_MODES = ("auto", "on", "off")
ALL_STAGES = "stages"  # the split that is every stage of `curate split --stages` together
CURRICULA = ("none", "sec", "dump")  # train.curriculum.BANDITS, and none
# Settings that change how often a stage writes, not what it learns: a resumed stage may change them.
CADENCE = ("save_steps", "save_total_limit", "logging_steps")


def world_size() -> int:
    """The processes training together: `accelerate launch` sets WORLD_SIZE; one otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """What every training stage takes: the model, the data, where it writes, and the optimiser."""

    model: str = described("Model to start from: a local folder, a Hub id or bundled:NAME (curate's names).")
    data: str = described(
        "Training data: a split directory (`curate split`), or a TRL export (`curate export --format trl`): its "
        "folder or one of its .parquet/.jsonl files.")
    split: str = described("Which split of the data to train on: sft, rl, an arm's (random_sft, random_rl, …), "
                           "a stage of the RL curriculum (stage_1, …), or stages: every stage's items together, each "
                           "with its stage column (a curriculum's categories); a file's name without its suffix.")
    out: str = described("Stage directory: checkpoints, the final model (final/), stage.json, invocations.jsonl and "
                         "metrics.jsonl. Rerun the same command to resume from its last checkpoint.")
    template: str = described(
        "Response template (curate's `kind: response`) that renders each item of a split directory into its prompt: "
        "the one `curate solve` evaluates with, so training and evaluation ask alike. Not used for an export, whose "
        "prompts are as written.", default=DEFAULT_RESPONSE_TEMPLATE)
    template_dir: str | None = described("Extra directory searched for templates before the bundled ones.",
                                         default=None)
    learning_rate: float = described("Peak learning rate (AdamW).")
    epochs: float = described("Passes over the data (max_steps, when set, wins).", default=1.0)
    max_steps: int | None = described("Stop after this many optimiser steps.", default=None)
    batch_size: int = described("Sequences per device per step (GRPO: completions, a multiple of num_generations).",
                                default=8)
    gradient_accumulation_steps: int = described("Steps whose gradients add up before each optimiser step.",
                                                 default=1)
    warmup: float = described("Steps over which the learning rate rises from 0: a fraction of all steps (< 1) or a "
                              "number of steps.", default=0.0)
    lr_scheduler: str = described("Learning-rate schedule (transformers' names: linear, cosine, constant, …).",
                                  default="linear")
    weight_decay: float = described("AdamW weight decay.", default=0.0)
    max_grad_norm: float = described("Gradient clipping norm.", default=1.0)
    seed: int = described("Seed of the data order, the initialisation of new weights and sampling.", default=0)
    save_steps: int = described("Write a checkpoint every this many steps (a rerun resumes from the last one).",
                                default=100)
    save_total_limit: int = described("Checkpoints kept (the oldest are deleted).", default=2)
    logging_steps: int = described("Log (and append to metrics.jsonl) every this many steps; each checkpoint's step "
                                   "and the last step are logged too.", default=1)
    device: str = described("auto (CUDA when there is one), cpu or cuda.", default="auto")
    dtype: str = described("Weights' dtype: auto (float32 weights, computed under bfloat16 autocast on a GPU that has "
                           "it), float32, bfloat16 or float16 (half-precision weights: without DeepSpeed or FSDP "
                           "keeping float32 master weights, small learning rates may not move them).", default="auto")
    gradient_checkpointing: bool = described("Recompute activations in the backward pass: less memory, about a "
                                             "fifth more time (TRL's default: on).", default=True)
    trust_remote_code: bool = described("Allow model repos to run their own code (off unless you trust them).",
                                        default=False)
    lora: bool = described("Train LoRA adapters (peft) instead of every weight; the final model has them merged.",
                           default=False)
    lora_r: int = described("LoRA rank.", default=16)
    lora_alpha: int = described("LoRA scaling numerator (alpha / r scales the update).", default=32)
    lora_dropout: float = described("Dropout on the LoRA branch.", default=0.05)
    lora_target_modules: str = described("Modules that get adapters: all-linear, or comma-separated names "
                                         "(q_proj,v_proj).", default="all-linear")
    trainer_args: dict[str, Any] = described(
        "Further TRL SFTConfig/GRPOConfig arguments, passed as they are (e.g. {lr_scheduler_kwargs: {min_lr: 0}}); "
        "the settings above are refused here.", default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model", "data", "split", "out", "template"):
            check(bool(getattr(self, name)), f"{name} is empty")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        check(self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        for name in ("batch_size", "gradient_accumulation_steps", "save_steps", "save_total_limit", "logging_steps",
                     "lora_r", "lora_alpha"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        check(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        check(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        check(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        ours = {f.name for f in fields(self)} | set(TRL_NAMES.values())
        if taken := sorted(set(self.trainer_args) & ours):
            raise ConfigError(f"trainer_args sets {taken}, which are settings of their own: set them directly")


# Our setting → TRL's argument, where the names differ; trainer_args may not set these either.
TRL_NAMES = {"epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
             "lr_scheduler": "lr_scheduler_type", "out": "output_dir", "warmup": "warmup_steps"}


@dataclass(frozen=True, kw_only=True)
class SftConfig(StageConfig):
    """Supervised fine-tuning (TRL SFTTrainer) on conversations: the prompt, then the response to learn."""

    split: str = described(StageConfig.__dataclass_fields__["split"].metadata["help"], default="sft")
    learning_rate: float = described("Peak learning rate (AdamW).", default=1e-5)
    responses: str | None = described(
        "A `curate respond` run over the split's items: each item's kept response is the assistant turn. Without "
        "it, the assistant turn is the split's column response_field.", default=None)
    response_field: str = described("Column of the split that holds the assistant turn when no respond run is "
                                    "given (reference: train on the reference solutions).", default="reference")
    skip_unanswered: bool = described("Leave out items without a target (no kept response in the respond run, or "
                                      "an empty response_field) instead of refusing; they are listed in the stage "
                                      "directory's unanswered.jsonl and counted in stage.json.", default=False)
    max_length: int = described("Longest conversation in tokens; longer ones are truncated.", default=2048)
    assistant_only_loss: bool = described(
        "Learn only the assistant turn (the prompt is context, not a target). Needs {% generation %} markers in the "
        "chat template: TRL supplies them for the templates it knows (Qwen, Llama 3, …); for another, give "
        "chat_template.", default=True)
    chat_template: str | None = described(
        "A Jinja file whose chat template replaces the model's (kept in the final model): for assistant-only loss, "
        "the model's template with {% generation %}…{% endgeneration %} around each assistant reply, its "
        "end-of-turn token inside.", default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}")
        check(bool(self.response_field), "response_field is empty")


@dataclass(frozen=True, kw_only=True)
class GrpoConfig(StageConfig):
    """GRPO (TRL GRPOTrainer) on prompts with references: rewards are curate's verifiers (curate.rewards)."""

    split: str = described(StageConfig.__dataclass_fields__["split"].metadata["help"], default="rl")
    learning_rate: float = described("Peak learning rate (AdamW).", default=1e-6)
    verifier: str = described("curate verifier whose verdict is the reward (1 correct, 0 wrong or no answer): "
                              "math, gsm8k, numeric, choice, exact or model (a judge model decides equivalence); "
                              "items with options are checked by choice.", default="math")
    verifier_settings: dict[str, Any] = described(
        "Settings of the verifier (math: timeout_s; numeric: rel_tol, abs_tol; model: its judge's run settings, "
        "verify_model and optionally verify_backend, verify_base_url, device, ...).", default_factory=dict)
    format_weight: float = described(
        "Weight of the format reward (1 when the verifier finds a final answer in its format, right or wrong); "
        "0 turns it off.", default=0.0)
    num_generations: int = described("Completions sampled per prompt (a group).", default=8)
    max_completion_length: int = described("Most tokens a completion may have.", default=512)
    temperature: float = described("Sampling temperature of the completions.", default=1.0)
    top_p: float = described("Nucleus sampling mass of the completions.", default=1.0)
    beta: float = described("KL coefficient against the starting model (0: no reference model is loaded).",
                            default=0.0)
    epsilon: float = described("Clipping range of the policy ratio.", default=0.2)
    loss_type: str = described("TRL's loss aggregation: dapo, grpo, dr_grpo, bnpo, …", default="dapo")
    scale_rewards: str = described("Advantage scaling: group, batch or none.", default="group")
    mask_truncated_completions: bool = described("Leave completions cut at max_completion_length out of the loss.",
                                                 default=False)
    vllm: str = described("Generate with vLLM colocated on the GPU: auto (when on a GPU and vllm is installed), on, "
                          "off. Never on CPU.", default="auto")
    vllm_gpu_memory_utilization: float = described("Share of GPU memory vLLM may take beside training.",
                                                   default=0.3)
    curriculum: str = described(
        "Which prompts each generation batch trains on: none (TRL's shuffled order), sec (SEC, arXiv 2505.14970) or "
        "dump (DUMP, arXiv 2504.09710): a bandit over the categories of curriculum_field that favours the "
        "categories whose advantages are largest (train.curriculum); its state is saved with each checkpoint.",
        default="none")
    curriculum_field: str = described("Column of the data whose values are the curriculum's categories: a "
                                      "difficulty level, a stage, a domain.", default="level")
    curriculum_settings: dict[str, Any] = described(
        "Settings of the curriculum's bandit (sec: alpha 0.5, temperature 1.0; dump: window 300, temperature 0.1, "
        "the papers' values).", default_factory=dict)
    online_filter: str | None = described(
        "LOW,HIGH: keep only the prompt groups whose accuracy (the verifier's verdicts over the group) lies in "
        "[LOW, HIGH], and generate more groups until the batch is full (train.online_filter); e.g. 0.2,0.8, "
        "PRIME's band. One process only.", default=None, unset="off")
    online_filter_rounds: int = described("With online_filter: the most extra generation batches per step before "
                                          "training stops for want of groups in the band.", default=4)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_generations >= 2, f"num_generations must be >= 2 (a group compares completions), got "
                                         f"{self.num_generations}")
        processes = world_size()
        check(self.batch_size * processes * self.gradient_accumulation_steps % self.num_generations == 0,
              f"batch_size x processes x gradient_accumulation_steps ({self.batch_size} x {processes} x "
              f"{self.gradient_accumulation_steps}) must be a multiple of num_generations ({self.num_generations}): "
              "each prompt's group of completions trains together")
        check(self.max_completion_length >= 1, f"max_completion_length must be >= 1, got "
                                               f"{self.max_completion_length}")
        check(self.format_weight >= 0, f"format_weight must be >= 0, got {self.format_weight}")
        check(self.vllm in VLLM_MODES, f"vllm must be one of {', '.join(VLLM_MODES)}, got {self.vllm!r}")
        check(0 < self.vllm_gpu_memory_utilization < 1, "vllm_gpu_memory_utilization must be in (0, 1), got "
                                                        f"{self.vllm_gpu_memory_utilization}")
        check(self.curriculum != "none" or not self.curriculum_settings,
              "curriculum_settings are given but curriculum is none: choose sec or dump")
        check(self.curriculum in CURRICULA, f"curriculum must be one of {', '.join(CURRICULA)}, got "
                                            f"{self.curriculum!r}")
        if self.curriculum != "none":
            from train.curriculum import make_bandit

            check(bool(self.curriculum_field), "curriculum_field is empty")
            make_bandit(self.curriculum, self.curriculum_settings)
        check(self.online_filter_rounds >= 0, f"online_filter_rounds must be >= 0, got {self.online_filter_rounds}")
        if self.online_filter is not None:
            from train.online_filter import parse_band

            parse_band(self.online_filter)
            check(processes == 1, f"online_filter runs on one process; this job has {processes}")


def identity(config: Any) -> dict[str, Any]:
    """What a stage's result depends on: every setting but how often it writes (CADENCE)."""
    return {key: value for key, value in asdict(config).items() if key not in CADENCE}


FINAL = "final"  # a stage's final model, in its stage directory
