"""How a training stage drives TRL: its arguments, its checked settings (`prepare`), and `run_stage`, which trains
in a stage directory (train.stage) and resumes there.

TrainingArguments every stage shares come from the stage's config (learning rate, steps, batch, schedule,
checkpoint cadence, the hardware's precision flags; report_to none), then the stage's own (SFT: max_length,
assistant_only_loss; GRPO: generation and loss settings, reward weights, vLLM), then the config's
trainer_args as given. Each log is appended to metrics.jsonl and logged as one line in place of transformers'
progress bar, so that the command's stdout stays its own.

A resumed stage records what an uninterrupted one does. The step of each checkpoint and the last step are always
logged, so a checkpoint's log history (in its trainer_state.json, which the Trainer restores) holds every step's
loss up to it. The closing metrics are the stage's, not the last invocation's: `train_loss` is the mean of every
step's loss (each log's loss weighted by the steps it covers), `total_flos` and `epoch` come from the trainer
state, and `train_runtime` is the seconds of training summed over the invocations (each counted up to the
checkpoint the next one resumed from; the steps a kill undid are not counted), with `train_steps_per_second` and
`train_samples_per_second` (sequences per optimiser step × steps) over those seconds.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from curate.errors import ConfigError
from curate.export.exporters import UNANSWERED
from curate.files import append_jsonl, write_atomic
from train.config import CADENCE, FINAL, TRL_NAMES, StageConfig, world_size
from train.data import StageData
from train.model import Hardware
from train.stage import CLOSING, METRICS, Stage, trained_seconds, write_trained_seconds

log = logging.getLogger(__name__)
TrainerFactory = Callable[[Any, Any, Any, "Prepared"], Any]


def trainer_arguments(config: StageConfig, hardware: Hardware, own: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments every stage shares, then the stage's `own`, then `config.trainer_args` as given."""
    warmup = config.warmup if config.warmup < 1 else int(config.warmup)
    return {"output_dir": config.out, "learning_rate": config.learning_rate, TRL_NAMES["epochs"]: config.epochs,
            "max_steps": config.max_steps or -1, TRL_NAMES["batch_size"]: config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps, TRL_NAMES["warmup"]: warmup,
            TRL_NAMES["lr_scheduler"]: config.lr_scheduler, "weight_decay": config.weight_decay,
            "max_grad_norm": config.max_grad_norm, "seed": config.seed, "save_strategy": "steps",
            **{name: getattr(config, name) for name in CADENCE}, "report_to": "none",
            "gradient_checkpointing": config.gradient_checkpointing, **hardware.trainer_args(), **own,
            **config.trainer_args}


def trl_settings(cls: type, arguments: dict[str, Any], stage: str) -> Any:
    """TRL's config object; TRL's own refusals (a value out of range, an unknown argument) become one line."""
    try:
        return cls(**arguments)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"TRL refused the {stage} settings: {' '.join(str(exc).split())}") from None


def lora_config(config: StageConfig) -> Any:
    if not config.lora:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise ConfigError("--lora needs peft: pip install 'dereason[train]'") from None
    targets = config.lora_target_modules
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                      task_type="CAUSAL_LM")


# The few numbers of a log that say how a stage is going, in the order they are shown.
SHOWN = {"loss": "loss", "reward": "reward", "frac_reward_zero_std": "zero-std groups",
         "completions/mean_length": "length", "verdicts/correct": "correct",
         "online_filter/kept_fraction": "kept groups", "learning_rate": "lr",
         "train_loss": "mean loss", "train_runtime": "seconds"}


def shown(logs: dict[str, Any]) -> str:
    return ", ".join(f"{label} {logs[key]:.4g}" for key, label in SHOWN.items()
                     if isinstance(logs.get(key), int | float)) or json.dumps(logs)


class TrainingDone(Exception):
    """Raised as a stage resumes from the checkpoint of its last step: the Trainer would train one step more."""


def stage_callback(name: str, stage_dir: Path, earlier_seconds: float) -> Any:
    """A TrainerCallback that appends each log (with its step) to metrics.jsonl and logs one line about it, logs
    the step of each checkpoint and the last step, writes each checkpoint's seconds of training (`earlier_seconds`
    before this invocation's) and stops a resumed stage that has no step left (TrainingDone)."""
    from transformers import TrainerCallback

    class StageCallback(TrainerCallback):
        started: float | None = None

        def seconds(self) -> float:
            return earlier_seconds + (time.monotonic() - self.started if self.started is not None else 0.0)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= state.max_steps:
                raise TrainingDone
            self.started = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if control.should_save or state.global_step >= state.max_steps:
                control.should_log = True
            if control.should_save and state.is_world_process_zero:
                write_trained_seconds(stage_dir, state.global_step, self.seconds())

        on_epoch_end = on_step_end

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            # The Trainer's closing log is its invocation's; the stage's closing metrics replace it.
            if not (state.is_world_process_zero and logs) or CLOSING in logs:
                return
            append_jsonl(stage_dir / METRICS, {"step": state.global_step, **logs})
            log.info("%s step %d/%d: %s", name, state.global_step, state.max_steps, shown(logs))

    return StageCallback()


def closing_metrics(trainer: Any, seconds: float) -> dict[str, Any]:
    """The stage's closing metrics from its trainer state, whatever invocations it took (see the module's doc)."""
    state, args = trainer.state, trainer.args
    losses, logged = 0.0, 0
    for entry in state.log_history:
        if "loss" in entry:
            losses += entry["loss"] * (entry["step"] - logged)
            logged = entry["step"]
    sequences = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    rates = {"train_steps_per_second": round(state.global_step / seconds, 3),
             "train_samples_per_second": round(state.global_step * sequences / seconds, 3)} if seconds else {}
    return {"train_loss": losses / state.global_step, "total_flos": state.total_flos, "epoch": state.epoch,
            "train_runtime": round(seconds, 4), **rates}


class Prepared(NamedTuple):
    """What a training stage needs before its model is loaded, all checked: its rows, hardware, TRL arguments
    and TRL config object, and the stage's own trainer inputs (GRPO's reward functions)."""

    data: StageData
    hardware: Hardware
    arguments: dict[str, Any]
    settings: Any
    inputs: dict[str, Any]


def prepare(name: str, settings_class: str, config: StageConfig, data: StageData,
            own_arguments: Callable[[Hardware], dict[str, Any]], inputs: dict[str, Any] | None = None) -> Prepared:
    """A stage's Prepared: its trainer's settings (`settings_class`, a dotted name such as trl.SFTConfig, imported
    only now) built from the shared arguments, then `own_arguments(hardware)`, then the config's trainer_args, so that
    the library's own refusals come before anything trains."""
    from train.model import hardware

    module, _, cls = settings_class.rpartition(".")
    where = hardware(config)
    arguments = trainer_arguments(config, where, own_arguments(where))
    return Prepared(data, where, arguments, trl_settings(getattr(importlib.import_module(module), cls), arguments, name),
                    inputs or {})


def run_stage(name: str, config: StageConfig, prepared: Prepared, make_trainer: TrainerFactory,
              details: dict[str, Any]) -> dict[str, Any]:
    """Train one stage in its directory, resuming from its last checkpoint; its record (stage.json) once done.
    `make_trainer(model, tokenizer, dataset, prepared)` builds the stage's TRL trainer; `details` are what the
    stage resolved (recorded, not part of its identity)."""
    from train.model import load_model, model_identity

    data = prepared.data
    identity_of_data = {"fingerprint": data.record["fingerprint"], "rows": data.record["rows"]}
    with Stage(name, config, identity_of_data, model_identity(config)) as stage:
        if (done := stage.finished()) is not None:
            log.warning("%s: already trained in %s (final model: %s)", name, stage.dir, stage.dir / FINAL)
            return done
        details = {"hardware": prepared.hardware._asdict(), "processes": world_size(), "data": data.record,
                   **details, "trl_arguments": prepared.arguments}
        checkpoint = stage.start(details)
        if stage.main and data.left_out is not None and data.left_out.height:
            write_atomic(stage.dir / UNANSWERED, data.left_out.write_ndjson())
        model, tokenizer = load_model(config, prepared.hardware)
        trainer = make_trainer(model, tokenizer, data.dataset(), prepared)
        callback = stage_callback(name, stage.dir, trained_seconds(checkpoint))
        _replace_printing(trainer, callback)
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except TrainingDone:  # a kill after the last checkpoint, before the stage was recorded as done
            if stage.main:
                log.warning("%s: %s is the last step's; nothing is left to train", name, checkpoint)
        metrics = closing_metrics(trainer, callback.seconds())
        if stage.main:
            log.info("%s step %d/%d: %s", name, trainer.state.global_step, trainer.state.max_steps, shown(metrics))
        return stage.finish(trainer, config.lora, metrics, details)


def _replace_printing(trainer: Any, callback: Any) -> None:
    """The stage's own log line instead of transformers' progress bar or printed dicts (stdout stays the CLI's)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(callback)
