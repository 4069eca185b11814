"""Training across processes: `accelerate launch --multi_gpu --num_processes 2` on a machine with no GPU visible
runs two CPU processes joined through gloo (accelerate hands them to torchrun; `--cpu --num_processes 2` starts one
process, because accelerate's launcher for --cpu runs the script once unless given an MPI hostfile). A tiny
SFT → GRPO → eval recipe trains with both; a launch killed whole (the launcher and every process it started, SIGKILL)
after a GRPO checkpoint resumes from it with the same command, trains no finished stage again and ends with the
weights of the run never stopped; `arms` writes one table, from the main process, and every process passes the same
barriers. Each launch runs under a time limit, so a process left waiting at a barrier fails the test instead of
blocking the suite."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from trainkit import (
    build_split,
    changed,
    read_jsonl,
    tiny_recipe,
    weights,
    write_chat_template,
    write_heldout,
)

from train.stage import INVOCATIONS, METRICS, read_record

REPO = Path(__file__).resolve().parent.parent
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
          "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
LIMIT_SECONDS = 240
SFT_STEPS, GRPO_STEPS, BATCH = 6, 8, 4


def environment(**extra: str) -> dict[str, str]:
    # No GPU visible: the two processes are CPU processes even on a machine that has one.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "", **extra}


def launch(*arguments, entry=("-m", "train.cli"), **extra: str) -> subprocess.CompletedProcess:
    """`accelerate launch` of two processes running `dereason-train ARGUMENTS`; it must succeed within the limit (past
    it, every process of the launch is killed and the test fails)."""
    command = [*LAUNCH, *entry, *map(str, arguments)]
    with subprocess.Popen(command, env=environment(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as launcher:
        try:
            stdout, stderr = launcher.communicate(timeout=LIMIT_SECONDS)
        except subprocess.TimeoutExpired:
            kill_launch(launcher)
            stdout, stderr = launcher.communicate()
            pytest.fail(f"the launch ran past {LIMIT_SECONDS} s:\n{stdout[-3000:]}{stderr[-5000:]}")
    assert launcher.returncode == 0, stdout[-3000:] + stderr[-5000:]
    return subprocess.CompletedProcess(command, launcher.returncode, stdout, stderr)


def kill_launch(launcher: subprocess.Popen) -> int:
    """SIGKILL the launcher and every process it started (torchrun starts each in a session of its own, out of the
    launcher's process group); the launcher's exit status."""
    import psutil

    if launcher.poll() is not None:  # it ended on its own, and its processes with it
        return launcher.returncode
    processes = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]
    for process in processes:
        process.send_signal(signal.SIGKILL)
    status = launcher.wait()
    psutil.wait_procs(processes[1:], timeout=30)
    return status


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, random_model):
    root = tmp_path_factory.mktemp("multiprocess")
    return tiny_recipe(root, random_model, build_split(root / "split"), stages=["sft", "grpo", "eval"],
                       sft={"max_steps": SFT_STEPS}, grpo={"max_steps": GRPO_STEPS, "save_steps": 2})


@pytest.fixture(scope="module")
def straight(recipe):
    """The recipe run once, never stopped."""
    out = recipe.parent / "straight"
    return out, launch("run", recipe, "--out", out)


def test_a_recipe_trains_sft_then_grpo_and_evaluates_in_two_processes(straight, random_model):
    out, result = straight
    base, sft, grpo = (weights(path) for path in (random_model, out / "sft" / "final", out / "grpo" / "final"))
    assert len(changed(base, sft)) == len(base) and changed(sft, grpo)
    # Both processes took each step: 4 sequences each, so 8 per step (one process: 4), and the 8 SFT rows are
    # gone through once per step.
    sft_record, grpo_record = read_record(out / "sft"), read_record(out / "grpo")
    assert sft_record["steps"] == SFT_STEPS and sft_record["metrics"]["epoch"] == SFT_STEPS * BATCH * 2 / 8
    assert grpo_record["steps"] == GRPO_STEPS
    assert grpo_record["metrics"]["epoch"] == GRPO_STEPS * BATCH * 2 / (4 * 4)  # 4 items x 4 completions
    assert sft_record["trl_arguments"]["per_device_train_batch_size"] == BATCH
    assert sft_record["processes"] == grpo_record["processes"] == 2
    # The main process alone writes the records: one invocation each, each step logged once.
    for stage, steps in (("sft", SFT_STEPS), ("grpo", GRPO_STEPS)):
        assert len(read_jsonl(out / stage / INVOCATIONS)) == 1
        assert [row["step"] for row in read_jsonl(out / stage / METRICS) if "loss" in row] == list(range(1, steps + 1))
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "done" and [stage["name"] for stage in manifest["stages"]] == ["sft", "grpo", "eval"]
    assert manifest["stages"][-1]["sets"]["heldout"]["measured"] == 4
    assert result.stdout.count("run manifest:") == 1  # one process reports


def kill_launch_after(command: list[str], checkpoint_glob: str, out: Path) -> str:
    """Start the launch in a session of its own, SIGKILL the launcher and every process it started once a checkpoint
    under `out` matching `checkpoint_glob` is whole (its trainer state and both processes' RNG states); the newest
    whole checkpoint after the kill."""
    log = out.with_name(out.name + "-killed.log")
    with log.open("w") as stderr:
        launcher = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=stderr,
                                    start_new_session=True)
        deadline = time.monotonic() + LIMIT_SECONDS
        while (not whole_checkpoints(out, checkpoint_glob) and launcher.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.005)
        status = kill_launch(launcher)
    said = log.read_text()[-3000:]
    assert status == -signal.SIGKILL, f"the launch ended (status {status}) before it could be killed:\n{said}"
    whole = whole_checkpoints(out, checkpoint_glob)
    assert whole, f"no checkpoint {checkpoint_glob} under {out} in {LIMIT_SECONDS} s:\n{said}"
    return max(whole, key=lambda name: int(name.split("-")[1]))


def whole_checkpoints(out: Path, pattern: str) -> list[str]:
    """The checkpoints whose trainer state reads whole (the Trainer writes it last; the kill may cut it) and that
    hold both processes' RNG states."""
    def whole(checkpoint: Path) -> bool:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return all((checkpoint / f"rng_state_{rank}.pth").is_file() for rank in (0, 1))

    return [checkpoint.name for checkpoint in out.glob(pattern) if whole(checkpoint)]


def test_a_launch_killed_whole_resumes_from_its_checkpoint_and_ends_as_the_straight_run(recipe, straight):
    out = recipe.parent / "killed"
    command = [*LAUNCH, "-m", "train.cli", "run", str(recipe), "--out", str(out)]
    checkpoint = kill_launch_after(command, "grpo/checkpoint-*", out)
    assert read_record(out / "sft")["status"] == "done" and read_record(out / "grpo")["status"] == "training"
    launch("run", recipe, "--out", out)  # the same command

    assert [i["resumed_from"] for i in read_jsonl(out / "sft" / INVOCATIONS)] == [None]  # SFT was not trained again
    assert [i["resumed_from"] for i in read_jsonl(out / "grpo" / INVOCATIONS)] == [None, checkpoint]
    assert 0 < int(checkpoint.split("-")[1]) < GRPO_STEPS
    assert read_record(out / "grpo")["steps"] == GRPO_STEPS
    logged = [row["step"] for row in read_jsonl(out / "grpo" / METRICS) if "loss" in row]
    assert logged == list(range(1, GRPO_STEPS + 1))  # none lost, none twice
    # Every GRPO checkpoint of two processes is at or past the end of the first epoch (two steps of the 4 items x 4
    # completions): before train.grpo_trainer.EpochOrderedSampler, the resumed stage drew the first epoch's prompt
    # order again and ended with other weights.
    straight_out, _ = straight
    for stage in ("sft", "grpo"):
        assert not changed(weights(out / stage / "final"), weights(straight_out / stage / "final")), stage
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "done"


def test_arms_writes_one_table_and_every_process_passes_the_same_barriers(tmp_path, random_model):
    """The base arm is an eval stage alone: before the fix to train.model.distributed_state, both processes took
    themselves for the main one there and the second was refused the arms directory's lock."""
    recipe = {"model": str(random_model), "data": str(build_split(tmp_path / "split")), "out": str(tmp_path / "arms"),
              "verifier": "numeric", "gradient_checkpointing": False, "batch_size": BATCH, "device": "cpu",
              "arms": {"arms": ["random"], "base": True, "resamples": 10},
              "sft": {"learning_rate": 1e-3, "max_steps": 2, "chat_template": str(write_chat_template(
                  tmp_path / "chatml.jinja"))},
              "grpo": {"learning_rate": 1e-3, "max_steps": 1, "num_generations": 4, "max_completion_length": 4},
              "eval": {"heldout": [str(write_heldout(tmp_path / "heldout.jsonl"))], "samples": 1, "max_tokens": 4}}
    path = tmp_path / "arms.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    records = tmp_path / "records"
    records.mkdir()
    result = launch("arms", path, entry=(str(REPO / "tests" / "multiprocess_driver.py"),),
                    MULTIPROCESS_RECORD=str(records))

    ranks = sorted((json.loads(p.read_text()) for p in records.glob("rank-*.json")), key=lambda r: r["rank"])
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    assert [r["tables"] for r in ranks] == [1, 0]  # the main process made the one table
    assert ranks[0]["barriers"] == ranks[1]["barriers"] > 0
    assert result.stdout.count("| random | sft 2×8 on random_sft (6 rows) → grpo 1×8 on random_rl (6 rows) |") == 1
    rows = json.loads((tmp_path / "arms" / "table.json").read_text(encoding="utf-8"))["rows"]
    assert [(row["arm"], row["status"]) for row in rows] == [("base", "done"), ("random", "done")]
    manifest = json.loads((tmp_path / "arms" / "arms.json").read_text(encoding="utf-8"))
    assert {arm: entry["status"] for arm, entry in manifest["arms"].items()} == {"base": "done", "random": "done"}
    for stage in ("sft", "grpo", "eval"):
        assert len(read_jsonl(tmp_path / "arms" / "random" / stage / INVOCATIONS)) == 1



class MainOfTwo:
    """accelerate's PartialState as the main process of two sees it, recording what `look` returns at each barrier."""

    look = staticmethod(lambda: None)
    seen: ClassVar[list] = []

    def __init__(self, cpu=False):
        pass

    is_main_process = True

    def wait_for_everyone(self):
        self.seen.append(self.look())


def eval_stage(tmp_path, monkeypatch, look):
    """A stage (an eval stage's settings) opened as the main process of two, whose barriers record `look()`."""
    import accelerate

    from train.eval import EvalConfig
    from train.stage import Stage

    monkeypatch.setattr(MainOfTwo, "look", staticmethod(look))
    monkeypatch.setattr(MainOfTwo, "seen", [])
    monkeypatch.setattr(accelerate, "PartialState", MainOfTwo)
    config = EvalConfig(model="m", heldout=[str(tmp_path / "test.jsonl")], out=str(tmp_path / "stage"),
                        verifier="numeric")
    return Stage("eval", config, {}, {"name": "m"})


def test_every_process_looks_at_a_stage_directory_before_the_main_one_writes_to_it(tmp_path, monkeypatch):
    """A two-process `arms` hung now and then: the second process looked at the base arm's eval directory while the
    main one was writing its stage.json (a temporary file beside it), refused the directory as not a stage directory,
    went on to the next arm alone and met the main process's barriers out of step. Now the first barrier comes before
    the main process writes anything."""
    stage_dir = tmp_path / "stage"
    with eval_stage(tmp_path, monkeypatch, lambda: sorted(p.name for p in stage_dir.iterdir())
                    if stage_dir.exists() else None) as stage:
        stage.start({})
    assert MainOfTwo.seen[0] is None and "stage.json" in MainOfTwo.seen[-1]


def test_no_process_leaves_a_stage_before_its_final_model_and_record_are_in_place(tmp_path, monkeypatch):
    """Every process names the next stage's starting model (this one's final/) by its files' fingerprint: the other
    processes left as soon as the model was saved, while the main one was still renaming final/ into place."""
    from types import SimpleNamespace

    from train.stage import read_record

    stage_dir = tmp_path / "stage"

    def save_model(path):
        Path(path).mkdir(parents=True)
        (Path(path) / "model.safetensors").write_bytes(b"weights")

    with eval_stage(tmp_path, monkeypatch, lambda: ((stage_dir / "final").is_dir(),
                                                    (read_record(stage_dir) or {}).get("status"))) as stage:
        stage.start({})
        trainer = SimpleNamespace(accelerator=MainOfTwo(), state=SimpleNamespace(global_step=3), save_model=save_model)
        record = stage.finish(trainer, False, {"train_loss": 1.0}, {})
    assert record["status"] == "done" and MainOfTwo.seen[-1] == (True, "done")
