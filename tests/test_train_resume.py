"""Resume after a kill: a SIGKILL during SFT, then the same `dereason-train run` command, resumes SFT from its last
complete checkpoint; a crash during GRPO (right after a checkpoint, in this process: a second subprocess would
cost its imports again) resumes GRPO the same way. Each stage ends with the weights of a run never interrupted, and
records what that run records: the same closing metrics in stage.json and run.json, the same metrics.jsonl."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainkit import (
    Crash,
    build_split,
    changed,
    crash_at,
    invoke_train,
    read_jsonl,
    tiny_recipe,
    weights,
)

from train.stage import INVOCATIONS, METRICS, TRAINED_SECONDS, read_record

REPO = Path(__file__).resolve().parent.parent
LONGER = {"sft": {"max_steps": 12, "save_steps": 3}, "grpo": {"max_steps": 6, "save_steps": 2}}
# The seconds a run took (GRPO logs each step's as step_time), which no two runs share; seconds_add_up checks
# the closing ones.
SECONDS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "step_time"}


def kill_after_a_checkpoint(recipe: Path, stage_dir: Path, limit_seconds: float = 120) -> str:
    """Start `dereason-train run RECIPE`, SIGKILL it once the stage has written a whole checkpoint; the name of
    the newest whole checkpoint after the kill."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = recipe.with_name("killed.log")
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "train.cli", "run", str(recipe)], env=environment,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + limit_seconds
        while not list(stage_dir.glob("checkpoint-*/trainer_state.json")) and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        status = process.wait()
    said = log.read_text()[-2000:]
    assert status == -signal.SIGKILL, f"the command ended (status {status}) before it could be killed:\n{said}"
    whole = [p.parent.name for p in stage_dir.glob("checkpoint-*/trainer_state.json")]
    assert whole, f"no checkpoint of {stage_dir} in {limit_seconds:g} s:\n{said}"
    return max(whole, key=lambda name: int(name.split("-")[1]))


def test_a_killed_run_resumes_each_stage_from_its_last_checkpoint(tmp_path, random_model, monkeypatch):
    split = build_split(tmp_path / "split")
    recipe = tiny_recipe(tmp_path, random_model, split, **LONGER)
    run = tmp_path / "run"

    sft_checkpoint = kill_after_a_checkpoint(recipe, run / "sft")
    assert read_record(run / "sft")["status"] == "training" and not (run / "sft" / "final").exists()
    with monkeypatch.context() as patch:
        crash_at(patch, "grpo")
        crashed = invoke_train("run", recipe)  # the same command: SFT resumes, then GRPO starts and stops
    assert isinstance(crashed.exception, Crash), crashed.output
    assert read_record(run / "sft")["status"] == "done" and read_record(run / "grpo")["status"] == "training"
    result = invoke_train("run", recipe)  # and again: GRPO resumes
    assert result.exit_code == 0, result.output

    for stage, checkpoint, steps in (("sft", sft_checkpoint, 12), ("grpo", "checkpoint-2", 6)):
        invocations = read_jsonl(run / stage / INVOCATIONS)
        assert [i["resumed_from"] for i in invocations] == [None, checkpoint], stage
        assert 0 < int(checkpoint.split("-")[1]) < steps
        logged = [row["step"] for row in read_jsonl(run / stage / METRICS) if "loss" in row]
        assert logged == list(range(1, steps + 1)), stage  # each step logged once: none lost, none twice
        assert read_record(run / stage)["steps"] == steps

    uninterrupted = invoke_train("run", recipe, "--out", tmp_path / "straight")
    assert uninterrupted.exit_code == 0, uninterrupted.output
    for stage in ("sft", "grpo"):
        assert not changed(weights(run / stage / "final"), weights(tmp_path / "straight" / stage / "final")), stage
    # Exactly equal: the same float operations in the same order (the weights are equal to the bit), and the closing
    # mean loss is computed from the same logged losses in both runs.
    assert recorded(run) == recorded(tmp_path / "straight")
    seconds_add_up(run)


def test_a_run_stopped_again_and_again_records_what_an_uninterrupted_one_does(tmp_path, random_model, monkeypatch):
    """Issue 19 (5): a resumed stage's train_loss was the mean over its last invocation's steps only, and SFT's
    num_tokens counted again from 0. Here SFT stops twice after a checkpoint, GRPO after a checkpoint, then after
    its last step, then as it is recorded as done (the two reruns after those resume from the last step's
    checkpoint, from which the Trainer trained a step more), with a log every 3 steps and a checkpoint every 2: the
    losses of the steps between a log and a checkpoint are not lost with the kill."""
    split = build_split(tmp_path / "split")
    cadence = {"save_steps": 2, "logging_steps": 3}
    recipe = tiny_recipe(tmp_path, random_model, split, sft={"max_steps": 7, **cadence},
                         grpo={"max_steps": 5, **cadence})
    run = tmp_path / "run"
    for stage, event in (("sft", "on_save"), ("sft", "on_save"), ("grpo", "on_save"), ("grpo", "on_train_end"),
                         ("grpo", "done")):
        with monkeypatch.context() as patch:
            crash_at(patch, stage, event)
            crashed = invoke_train("run", recipe)
        assert isinstance(crashed.exception, Crash), crashed.output
    result = invoke_train("run", recipe)
    assert result.exit_code == 0, result.output
    assert [i["resumed_from"] for i in read_jsonl(run / "sft" / INVOCATIONS)] == [None, "checkpoint-2", "checkpoint-4"]
    assert [i["resumed_from"] for i in read_jsonl(run / "grpo" / INVOCATIONS)] == [None, "checkpoint-2", "checkpoint-5",
                                                                                 "checkpoint-5"]

    uninterrupted = invoke_train("run", recipe, "--out", tmp_path / "straight")
    assert uninterrupted.exit_code == 0, uninterrupted.output
    for stage in ("sft", "grpo"):
        assert not changed(weights(run / stage / "final"), weights(tmp_path / "straight" / stage / "final")), stage
    assert recorded(run) == recorded(tmp_path / "straight")
    assert [row["step"] for row in read_jsonl(run / "sft" / METRICS)] == [2, 3, 4, 6, 7, 7]  # 7: the closing line
    seconds_add_up(run)
    # GRPO's last two invocations trained no step: its seconds are those of the invocations before them (recorded
    # to 4 decimals, as transformers records them).
    earlier = json.loads((run / "grpo" / "checkpoint-5" / TRAINED_SECONDS).read_text(encoding="utf-8"))["seconds"]
    assert 0 < round(earlier, 4) <= read_record(run / "grpo")["metrics"]["train_runtime"]


def recorded(run: Path) -> dict:
    """What a run records, but its seconds: each stage's closing metrics (stage.json), its metrics.jsonl, and the
    stage metrics of run.json."""
    manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))

    def timeless(metrics: dict) -> dict:
        return {key: value for key, value in metrics.items() if key not in SECONDS}

    return {"run.json": [timeless(stage["metrics"]) for stage in manifest["stages"]],
            **{f"{stage}/stage.json": timeless(read_record(run / stage)["metrics"]) for stage in ("sft", "grpo")},
            **{f"{stage}/{METRICS}": [timeless(row) for row in read_jsonl(run / stage / METRICS)]
               for stage in ("sft", "grpo")}}


def seconds_add_up(run: Path) -> None:
    """The rates are the stage's steps and sequences over its seconds (those of every invocation)."""
    for stage in ("sft", "grpo"):
        record = read_record(run / stage)
        metrics, arguments = record["metrics"], record["trl_arguments"]
        sequences = arguments["per_device_train_batch_size"] * arguments["gradient_accumulation_steps"]
        # Within the rounding of the recorded figures (seconds to 4 decimals, rates to 3).
        expected = {"train_steps_per_second": record["steps"] / metrics["train_runtime"],
                    "train_samples_per_second": record["steps"] * sequences / metrics["train_runtime"]}
        assert {key: metrics[key] for key in expected} == pytest.approx(expected, rel=1e-3, abs=1e-3), stage


def test_grpo_draws_each_epochs_prompt_order_again_on_resume():
    """TRL's sampler seeded its generator once and drew each epoch's order from it, so a GRPO stage resumed in its
    second epoch or later went through the first epoch's order again. Each epoch's order is now the same whether the
    run was stopped or not, and the one TRL draws in an uninterrupted run."""
    from types import SimpleNamespace

    from trl.trainer.utils import RepeatSampler

    from train.grpo_trainer import CurriculumGrpoTrainer

    def sampler():  # what the trainer hands its DataLoader, without the model a whole trainer needs
        trainer = object.__new__(CurriculumGrpoTrainer)
        trainer.curriculum, trainer.train_dataset, trainer.shuffle_dataset = None, range(6), True
        trainer.num_generations, trainer.num_iterations = 2, 1
        trainer.args = SimpleNamespace(generation_batch_size=4, steps_per_generation=1, seed=3)
        return trainer._get_train_sampler()

    trl_own = RepeatSampler(range(6), mini_repeat_count=2, batch_size=2, repeat_count=1, seed=3)
    uninterrupted = [list(trl_own) for _ in range(3)]
    straight = sampler()
    for epoch in range(3):
        straight.set_epoch(epoch)
        assert list(straight) == uninterrupted[epoch]
    resumed = sampler()  # a new trainer, resuming in the third epoch
    resumed.set_epoch(2)
    assert list(resumed) == uninterrupted[2] != uninterrupted[0]
