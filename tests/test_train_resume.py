"""Resume after a kill: a SIGKILL during SFT, then the same `dereason-train run` command, resumes SFT from its last
complete checkpoint; a crash during GRPO (right after a checkpoint, in this process: a second subprocess would
cost its imports again) resumes GRPO the same way. Each stage ends with the weights of a run never interrupted."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainkit import (
    build_split,
    changed,
    invoke_train,
    read_jsonl,
    tiny_recipe,
    weights,
)

import train.trainer
from train.stage import INVOCATIONS, METRICS, read_record

REPO = Path(__file__).resolve().parent.parent
LONGER = {"sft": {"max_steps": 12, "save_steps": 3}, "grpo": {"max_steps": 6, "save_steps": 2}}


class Crash(Exception):
    """What the process sees of a kill right after a checkpoint: training stops there."""


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


def crash_after_first_checkpoint(monkeypatch, stage: str) -> None:
    original = train.trainer.metrics_callback

    def with_crash(name, stage_dir):
        callback = original(name, stage_dir)
        if name == stage:
            def on_save(*args, **kwargs):
                raise Crash(f"{stage} stopped after a checkpoint")
            callback.on_save = on_save
        return callback

    monkeypatch.setattr(train.trainer, "metrics_callback", with_crash)


def test_a_killed_run_resumes_each_stage_from_its_last_checkpoint(tmp_path, random_model, monkeypatch):
    split = build_split(tmp_path / "split")
    recipe = tiny_recipe(tmp_path, random_model, split, **LONGER)
    run = tmp_path / "run"

    sft_checkpoint = kill_after_a_checkpoint(recipe, run / "sft")
    assert read_record(run / "sft")["status"] == "training" and not (run / "sft" / "final").exists()
    with monkeypatch.context() as patch:
        crash_after_first_checkpoint(patch, "grpo")
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
