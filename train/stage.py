"""A stage directory: what a training stage writes, how a rerun resumes it, and what it records.

    STAGE_DIR/
      stage.json          what the stage is (settings, data fingerprint, model) and where it stands: status
                          training or done, the final model, steps and the closing metrics (train.trainer)
      invocations.jsonl   one line per command that ran it: start time, versions, the checkpoint it resumed from
      metrics.jsonl       one line per logging step: TRL's logs (loss; GRPO's reward, frac_reward_zero_std,
                          completions/mean_length, …) and the verdict counts of curate.rewards; then the closing
                          metrics, at the last step
      checkpoint-N/       the Trainer's checkpoints (weights, optimiser, scheduler, RNG and data position), and
                          training_seconds.json: the seconds of training up to that step, over every invocation
      final/              the trained model and tokenizer (LoRA adapters merged), renamed into place whole
      adapter/            with LoRA: the adapters alone (a few MB, loadable over the starting model with peft)
      unanswered.jsonl    SFT with skip_unanswered: the items left out for want of a kept response, with the reason

Resume: rerunning the same command finds the last complete checkpoint (the Trainer writes trainer_state.json
last, so a checkpoint without a readable one was cut by a kill and is deleted) and hands it to
`Trainer.train(resume_from_checkpoint=…)`, which restores the optimiser, scheduler, RNG and position in the
data. metrics.jsonl keeps the lines up to that checkpoint's step. A rerun whose settings (other than how often it
saves and logs), data or starting model differ is refused, naming what changed. A stage that is done is not
trained again. One process at a time holds a stage directory (an OS lock the kernel releases when the process
dies); under `accelerate launch` the processes of one job share it, and only the main one writes records.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from curate.errors import ConfigError, RunDirError
from curate.files import append_jsonl, write_atomic
from curate.outdir import is_run_dir
from train.config import FINAL, identity, world_size
from train.model import distributed_state, main_process

log = logging.getLogger(__name__)
STAGE_RECORD, INVOCATIONS, METRICS, LOCK = "stage.json", "invocations.jsonl", "metrics.jsonl", ".lock"
TRAINED_SECONDS = "training_seconds.json"
CLOSING = "train_loss"  # of metrics.jsonl's lines, only the closing one has it
TRAINING, DONE = "training", "done"
ADAPTER = "adapter"  # with LoRA: the adapters alone (final/ has them merged)
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
PACKAGES = ("dereason", "trl", "transformers", "torch", "peft", "accelerate", "datasets")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def read_record(stage_dir: str | Path) -> dict[str, Any] | None:
    path = Path(stage_dir) / STAGE_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    old, new = _flat(stored), _flat(wanted)
    return [f"{key}: {old.get(key)!r} then, {new.get(key)!r} now" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)]


def last_checkpoint(stage_dir: Path, processes: int) -> Path | None:
    """The newest checkpoint that was written whole by `processes` processes; newer ones a kill cut short are
    deleted. The main process writes trainer_state.json last of its files, but the Trainer does not wait for the
    others' RNG states (rng_state_R.pth, one a process) before it: a checkpoint needs each of them too."""
    numbered = sorted(((int(m[1]), p) for p in stage_dir.glob("checkpoint-*")
                       if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name))), reverse=True)
    rng_states = ["rng_state.pth"] if processes == 1 else [f"rng_state_{rank}.pth" for rank in range(processes)]
    for _, checkpoint in numbered:
        if (missing := _missing_from(checkpoint, rng_states)) is None:
            return checkpoint
        log.warning("deleting %s: it was cut short (no %s)", checkpoint, missing)
        shutil.rmtree(checkpoint)
    return None


def _missing_from(checkpoint: Path, rng_states: list[str]) -> str | None:
    """What a checkpoint cut short lacks; None when it is whole."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "readable trainer_state.json"
    missing = [name for name in rng_states if not (checkpoint / name).is_file()]
    return ", ".join(missing) or None


def write_trained_seconds(stage_dir: Path, step: int, seconds: float) -> None:
    """Before the Trainer writes checkpoint-`step` (its trainer_state.json last), so a whole checkpoint has them."""
    checkpoint = stage_dir / f"checkpoint-{step}"
    checkpoint.mkdir(exist_ok=True)
    write_atomic(checkpoint / TRAINED_SECONDS, json.dumps({"seconds": seconds}))


def trained_seconds(checkpoint: Path | None) -> float:
    """The seconds of training up to `checkpoint`, over every invocation (0 without one)."""
    if checkpoint is None:
        return 0.0
    path = checkpoint / TRAINED_SECONDS
    if not path.is_file():  # a checkpoint written before dereason counted them
        log.warning("%s has no %s: train_runtime leaves out the seconds before it", checkpoint, TRAINED_SECONDS)
        return 0.0
    return json.loads(path.read_text(encoding="utf-8"))["seconds"]


class Stage:
    """An open stage directory, locked; `start` records the stage, `finish` its final model."""

    def __init__(self, name: str, config: Any, data: dict[str, Any], model: dict[str, str]):
        self.name, self.config, self.dir = name, config, Path(config.out)
        self.identity = {"stage": name, "config": identity(config), "data": data, "model": model}
        self._lock: Any = None

    def __enter__(self) -> Stage:
        self.main = main_process()
        if is_run_dir(self.dir):
            raise ConfigError(f"--out {self.dir} is a curate run directory; give a stage directory of its own")
        # Its own lock alone: a kill between taking the lock and the first record.
        if (self.dir.is_dir() and any(p.name != LOCK for p in self.dir.iterdir())
                and not (self.dir / STAGE_RECORD).is_file()):
            raise ConfigError(f"--out {self.dir} exists and is not a stage directory (no {STAGE_RECORD}); choose a new "
                              "or empty folder")
        # Every process of a launch has looked at the directory before the main one writes to it: a process that
        # looked later saw the main one's stage.json being written (a temporary file) and refused the directory
        # alone, then met the other processes' barriers out of step and hung.
        distributed_state().wait_for_everyone()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.main:  # the processes of one `accelerate launch` share the directory; the main one holds it
            return self
        self._lock = open(self.dir / LOCK, "a")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RunDirError(f"stage directory {self.dir} is in use by another process; wait for it to finish or "
                              "stop it") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()

    @property
    def record(self) -> dict[str, Any] | None:
        return read_record(self.dir)

    def finished(self) -> dict[str, Any] | None:
        """The record of this stage when it is done; None when it is new or stopped early. A stage directory
        that holds another stage (other settings, data or model) is refused, naming what differs."""
        stored = self.record
        if stored is not None and (changed := differences(stored["identity"], self.identity)):
            raise RunDirError(f"stage directory {self.dir} was made with other settings ({'; '.join(changed)}); "
                              "rerun with the same settings to resume it, or choose another --out")
        return stored if stored is not None and stored["status"] == DONE else None

    def start(self, details: dict[str, Any]) -> Path | None:
        """Record the stage and this invocation (`details`: what it resolved, such as the device); return the
        checkpoint to resume from. The main process writes and deletes cut checkpoints; the others then read."""
        processes = world_size()
        if self.main:
            self._refuse_other_processes(processes)
            checkpoint = last_checkpoint(self.dir, processes)
            self._write({"identity": self.identity, "status": TRAINING, **details})
            # Without a checkpoint training starts again at step 1: the killed attempt's logs go too.
            self._keep_metrics_until(int(_CHECKPOINT.fullmatch(checkpoint.name)[1]) if checkpoint else 0)
            if checkpoint is not None:
                log.warning("%s: resuming from %s", self.name, checkpoint)
            append_jsonl(self.dir / INVOCATIONS, {"started_at": time.time(), "versions": versions(),
                                                  "resumed_from": checkpoint.name if checkpoint else None,
                                                  "config": asdict(self.config), **details})
        distributed_state().wait_for_everyone()
        return checkpoint if self.main else last_checkpoint(self.dir, processes)

    def _refuse_other_processes(self, processes: int) -> None:
        """Checkpoints go on with as many processes as trained them: each process's batch adds to every step's, and
        each has its RNG state in a checkpoint. Refused before any checkpoint is looked at (one that lacks this
        launch's RNG states would be deleted as cut short). A stage recorded before the count was is not checked."""
        trained_by = (self.record or {}).get("processes")
        checkpoints = sorted(p.name for p in self.dir.glob("checkpoint-*") if _CHECKPOINT.fullmatch(p.name))
        if checkpoints and trained_by is not None and trained_by != processes:
            raise RunDirError(f"{self.dir}'s checkpoints were trained by {trained_by} process(es) and this launch "
                              f"has {processes}: its steps would take another number of sequences; relaunch with "
                              f"{trained_by} (accelerate launch --num_processes), or choose another --out")

    def _keep_metrics_until(self, step: int) -> None:
        """Logs written after the checkpoint were lost with the kill's progress, and will be written again; so will
        the closing line of a kill after the last checkpoint, before the stage was recorded as done."""
        path = self.dir / METRICS
        if path.is_file():
            lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip() and (row := json.loads(line))["step"] <= step and CLOSING not in row]
            write_atomic(path, "".join(line + "\n" for line in lines))

    def finish(self, trainer: Any, merge_adapters: bool, metrics: dict[str, Any],
               details: dict[str, Any]) -> dict[str, Any]:
        """Save the final model whole (a staging folder renamed into place), append the closing `metrics` to
        metrics.jsonl and record the stage as done."""
        final, staging = self.dir / FINAL, self.dir / f".{FINAL}.tmp"
        if trainer.accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        if merge_adapters:
            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            if trainer.accelerator.is_main_process:
                self._save_whole(unwrapped, ADAPTER)
            model = unwrapped.merge_and_unload()
            if trainer.accelerator.is_main_process:
                model.save_pretrained(staging)
                trainer.processing_class.save_pretrained(staging)
        else:
            trainer.save_model(str(staging))
        trainer.accelerator.wait_for_everyone()
        record = None
        if trainer.accelerator.is_main_process:
            if final.exists():  # a kill between this rename and the record's update: the new one replaces it
                shutil.rmtree(final)
            os.rename(staging, final)
            append_jsonl(self.dir / METRICS, {"step": trainer.state.global_step, **metrics})
            record = self.done({**details, "final": FINAL, "steps": trainer.state.global_step, "metrics": metrics})
        # The next stage starts from final/, and every process first names it by its files' fingerprint: one that went
        # on while the main process was renaming it into place would name an empty folder, be refused the next
        # stage's directory as made with other settings, and meet the other processes' barriers out of step.
        trainer.accelerator.wait_for_everyone()
        return record if record is not None else self.record or {}

    def _save_whole(self, model: Any, name: str) -> None:
        """`model.save_pretrained` into the stage's folder `name`, written beside it and renamed into place."""
        staging = self.dir / f".{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        shutil.rmtree(self.dir / name, ignore_errors=True)
        os.rename(staging, self.dir / name)

    def done(self, details: dict[str, Any]) -> dict[str, Any]:
        """Record the stage as done, with what it produced (`details`); the record."""
        record = {"identity": self.identity, "status": DONE, **details}
        if self.main:
            self._write(record)
        return record

    def _write(self, record: dict[str, Any]) -> None:
        write_atomic(self.dir / STAGE_RECORD, json.dumps(record, indent=2, sort_keys=True, default=str))
