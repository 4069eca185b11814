"""The GRPO stage: TRL's GRPOTrainer on prompts with references (train.data.grpo_data), rewarded by curate's
verifiers (curate.rewards), usually from the SFT stage's final model.

Generation: vLLM colocated with training (`use_vllm`, `vllm_mode="colocate"`) when on a GPU and vllm is
installed (setting `vllm`: auto), else transformers' generate; never vLLM on CPU, where it does not run.
Per step TRL logs the mean reward (`reward`), the fraction of groups whose rewards do not vary
(`frac_reward_zero_std`: no learning signal from them) and the completion lengths (`completions/mean_length`,
`completions/clipped_ratio`); the rewards add the verdict counts (`verdicts/correct`, …). All reach
metrics.jsonl in the stage directory.

Curricula inside RL (train.grpo_trainer): with `curriculum` sec or dump a bandit over `curriculum_field` draws each
generation batch's prompts (train.curriculum) and logs each category's probability (`curriculum/<category>`);
with `online_filter` LOW,HIGH only the groups whose accuracy lies in the band train, refilled up to
`online_filter_rounds` times (train.online_filter, which logs `online_filter/kept_fraction`, …).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from curate.errors import ConfigError
from curate.rewards import named_verifier, trl_rewards
from train.config import GrpoConfig
from train.curriculum import CategoryCurriculum, make_curriculum
from train.data import grpo_data
from train.model import Hardware
from train.online_filter import OnlineFilter, parse_band
from train.trainer import Prepared, lora_config, prepare, run_stage

STAGE = "grpo"


def use_vllm(config: GrpoConfig, hardware: Hardware) -> bool:
    installed = importlib.util.find_spec("vllm") is not None
    if config.vllm == "on" and hardware.device != "cuda":
        raise ConfigError("--vllm on needs a GPU (vLLM does not run on CPU); use --vllm auto or off")
    if config.vllm == "on" and not installed:
        raise ConfigError("--vllm on needs vllm: pip install 'dereason[vllm]', or use --vllm auto or off")
    return config.vllm != "off" and hardware.device == "cuda" and installed


def prepare_grpo(config: GrpoConfig) -> Prepared:
    """The GRPO stage's rows, reward functions and TRL settings, checked before any model is loaded."""
    reward_functions, weights = trl_rewards(config.verifier, config.verifier_settings, config.format_weight)

    def own_arguments(hardware: Hardware) -> dict[str, Any]:
        vllm = use_vllm(config, hardware)
        return {"num_generations": config.num_generations, "max_completion_length": config.max_completion_length,
                "temperature": config.temperature, "top_p": config.top_p, "beta": config.beta,
                "epsilon": config.epsilon, "loss_type": config.loss_type, "scale_rewards": config.scale_rewards,
                "mask_truncated_completions": config.mask_truncated_completions, "reward_weights": weights,
                "use_vllm": vllm, **({"vllm_mode": "colocate",
                                      "vllm_gpu_memory_utilization": config.vllm_gpu_memory_utilization} if vllm else {})}

    return prepare(STAGE, "trl.GRPOConfig", config, grpo_data(config), own_arguments, {"rewards": reward_functions})


def curriculum(config: GrpoConfig, dataset: Any) -> CategoryCurriculum | None:
    if config.curriculum == "none":
        return None
    return make_curriculum(config.curriculum, dataset[config.curriculum_field], config.seed,
                           config.curriculum_settings, config.curriculum_field)


def online_filter(config: GrpoConfig) -> OnlineFilter | None:
    if config.online_filter is None:
        return None
    return OnlineFilter(*parse_band(config.online_filter), config.online_filter_rounds, config.seed)


def train_grpo(config: GrpoConfig, prepared: Prepared | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train (or resume, or find done) the GRPO stage; its record (stage.json). `callbacks`: further
    TrainerCallbacks (train.staged's plateau rule)."""
    prepared = prepared or prepare_grpo(config)
    verifier = named_verifier(config.verifier, config.verifier_settings)

    def make_trainer(model: Any, tokenizer: Any, dataset: Any, ready: Prepared) -> Any:
        from train.grpo_trainer import CurriculumGrpoTrainer

        return CurriculumGrpoTrainer(model=model, reward_funcs=ready.inputs["rewards"], args=ready.settings,
                                     train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=lora_config(config), curriculum=curriculum(config, dataset),
                                     online_filter=online_filter(config), callbacks=list(callbacks))

    return run_stage(STAGE, config, prepared, make_trainer,
                     {"verifier": f"{verifier.name}@{verifier.version}",
                      "rewards": [f.__name__ for f in prepared.inputs["rewards"]],
                      "reward_weights": prepared.arguments["reward_weights"]})
