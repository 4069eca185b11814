"""SFT then GRPO of a random tiny Qwen2 on a tiny arithmetic split, evaluated before and after: both stages
train (their weights change), the run manifest names every stage's settings, data fingerprint, starting model
and final model, and reruns either find the work done or refuse other settings."""

import json
from types import SimpleNamespace

import polars as pl
import pytest
import yaml
from conftest import assert_one_line_error
from trainkit import (
    build_split,
    changed,
    invoke_train,
    read_jsonl,
    tiny_recipe,
    weights,
)

from train.data import fingerprint, grpo_data, sft_data
from train.recipe import read_recipe
from train.stage import INVOCATIONS, METRICS, STAGE_RECORD


@pytest.fixture(scope="module")
def trained(tmp_path_factory, random_model):
    root = tmp_path_factory.mktemp("train-run")
    split = build_split(root / "split")
    recipe = tiny_recipe(root, random_model, split, stages=["eval", "sft", "grpo", "eval"])
    result = invoke_train("run", recipe, "--json")
    assert result.exit_code == 0, result.output
    return root, recipe, json.loads(result.stdout)


def test_sft_then_grpo_change_the_weights(trained, random_model):
    root, _, _ = trained
    base, sft, grpo = weights(random_model), weights(root / "run" / "sft" / "final"), weights(root / "run" / "grpo" /
                                                                                               "final")
    assert len(changed(base, sft)) == len(base)  # every tensor of a full fine-tune moves
    assert changed(sft, grpo)


def test_the_run_manifest_names_settings_data_model_and_final_model(trained, random_model):
    root, recipe, manifest = trained
    assert manifest == json.loads((root / "run" / "run.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "done"
    assert [(s["name"], s["dir"]) for s in manifest["stages"]] == [("eval", "eval"), ("sft", "sft"), ("grpo", "grpo"),
                                                                   ("eval", "eval_2")]
    configs = {name: config for _, name, config in read_recipe(recipe).configs}
    before, sft, grpo, after = manifest["stages"]
    assert before["identity"]["model"]["name"] == str(random_model)
    assert after["identity"]["model"]["name"] == str(root / "run" / "grpo" / "final")
    for evaluation in (before, after):  # 4 held-out items x 2 samples, each a solve run of its own
        assert evaluation["sets"]["heldout"]["measured"] == 4 and evaluation["sets"]["heldout"]["pass_at_1"]
        assert sum(evaluation["sets"]["heldout"]["rollouts"].values()) == 8
    assert sft["identity"]["config"]["learning_rate"] == 1e-3 and grpo["identity"]["config"]["verifier"] == "numeric"
    assert sft["identity"]["data"] == {"fingerprint": fingerprint(sft_data(configs["sft"]).rows), "rows": 8}
    assert grpo["identity"]["data"] == {"fingerprint": fingerprint(grpo_data(configs["grpo"]).rows), "rows": 4}
    assert sft["identity"]["model"]["name"] == str(random_model) and sft["identity"]["model"]["fingerprint"]
    assert grpo["identity"]["model"]["name"] == str(root / "run" / "sft" / "final")
    assert (sft["status"], sft["final"], sft["steps"], grpo["steps"]) == ("done", "final", 6, 3)
    assert sft["data"]["template"].startswith("solve/step_by_step@") and sft["data"]["responses"] == {
        "column": "reference"}
    assert sft["trl_arguments"]["assistant_only_loss"] and sft["trl_arguments"]["use_cpu"]
    assert grpo["trl_arguments"]["use_vllm"] is False and grpo["trl_arguments"]["bf16"] is False
    assert grpo["verifier"] == "numeric@1" and grpo["reward_weights"] == [1.0, 0.5]
    for stage in manifest["stages"]:  # each stage directory holds the same record
        assert json.loads((root / "run" / stage["dir"] / STAGE_RECORD).read_text()) == {
            k: v for k, v in stage.items() if k not in ("name", "dir")}


def test_grpo_logs_reward_zero_std_groups_length_and_verdicts_per_step(trained):
    root, _, _ = trained
    steps = [row for row in read_jsonl(root / "run" / "grpo" / METRICS) if "reward" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]
    for row in steps:
        assert {"reward", "frac_reward_zero_std", "completions/mean_length", "verdicts/correct", "verdicts/wrong",
                "verdicts/no_answer"} <= row.keys()
        assert sum(row[f"verdicts/{s}"] for s in ("correct", "wrong", "no_answer", "error", "timeout")) == 1


def test_a_rerun_finds_the_run_done_and_another_recipe_is_refused(trained):
    root, recipe, manifest = trained
    again = invoke_train("run", recipe, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["stages"] == manifest["stages"]
    assert len(read_jsonl(root / "run" / "sft" / INVOCATIONS)) == 1  # not trained again
    changed_recipe = yaml.safe_load(recipe.read_text())
    changed_recipe["sft"]["learning_rate"] = 2e-3
    recipe.with_name("changed.yaml").write_text(yaml.safe_dump(changed_recipe))
    assert_one_line_error(invoke_train("run", recipe.with_name("changed.yaml")),
                          "holds a run of another recipe (sft.learning_rate: 0.001 then, 0.002 now)")
    stage = ["--model", changed_recipe["model"], "--data", changed_recipe["data"], "--out", root / "run" / "sft",
             "--max-steps", 6, "--batch-size", 4, "--no-gradient-checkpointing", "--learning-rate", 1e-3,
             "--chat-template", changed_recipe["sft"]["chat_template"]]
    assert invoke_train("sft", *stage).exit_code == 0  # the same stage, given as flags: done
    assert_one_line_error(invoke_train("sft", *stage, "--seed", 1), "was made with other settings "
                                                                    "(config.seed: 0 then, 1 now)")


def test_changed_data_is_refused(trained, tmp_path):
    root, recipe, _ = trained
    split = tmp_path / "split"
    build_split(split)
    frame = pl.read_parquet(split / "sft.parquet")
    frame.with_columns(pl.col("reference").str.replace("^5$", "five")).write_parquet(split / "sft.parquet")
    stage = ["--model", yaml.safe_load(recipe.read_text())["model"], "--data", split, "--out", root / "run" / "sft",
             "--max-steps", 6, "--batch-size", 4, "--no-gradient-checkpointing", "--learning-rate", 1e-3,
             "--chat-template", root / "chatml.jinja"]
    assert_one_line_error(invoke_train("sft", *stage), "data.fingerprint:")


def test_lora_trains_adapters_and_saves_the_merged_model(tmp_path, random_model):
    split = build_split(tmp_path / "split")
    result = invoke_train("sft", "--model", random_model, "--data", split, "--out", tmp_path / "lora", "--lora",
                          "--lora-r", 4, "--max-steps", 3, "--batch-size", 4, "--learning-rate", 1e-2,
                          "--no-gradient-checkpointing", "--chat-template", tiny_chat_template(tmp_path))
    assert result.exit_code == 0, result.output
    final = tmp_path / "lora" / "final"
    assert not (final / "adapter_config.json").exists()  # a plain model, for GRPO and `curate solve`
    moved = changed(weights(random_model), weights(final))
    assert moved and all("proj" in name for name in moved)  # the adapted linear layers, merged; embeddings untouched


def tiny_chat_template(root):
    from trainkit import write_chat_template

    return write_chat_template(root / "chatml.jinja")


def test_a_chat_template_without_generation_markers_is_refused_for_assistant_only_loss(tmp_path, random_model):
    split = build_split(tmp_path / "split")
    assert_one_line_error(invoke_train("sft", "--model", random_model, "--data", split, "--out", tmp_path / "o"),
                          "has no {% generation %} markers, which assistant-only loss needs, and TRL has no training "
                          "version of it: give --chat-template FILE")


def test_a_stage_killed_before_its_first_checkpoint_starts_its_metrics_again(tmp_path):
    """No checkpoint to resume from: training starts again at step 1, so the killed attempt's logged steps go
    (they were kept, and metrics.jsonl counted steps 1, 2, 3, 1, 2, 3). A folder holding only the stage's lock
    (killed before its first record) is the stage's own, not a stranger's folder to refuse."""
    from dataclasses import dataclass

    from train.stage import Stage

    @dataclass(frozen=True)
    class Settings:
        out: str
        learning_rate: float = 1e-3

    def attempt(loss: float) -> None:
        with Stage("sft", Settings(str(tmp_path / "sft")), {}, {}) as stage:
            stage.finished()
            assert stage.start({}) is None  # no checkpoint: from the start
            with (tmp_path / "sft" / METRICS).open("a", encoding="utf-8") as metrics:
                metrics.writelines(json.dumps({"step": step, "loss": loss}) + "\n" for step in (1, 2, 3))

    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / ".lock").touch()  # killed between taking the lock and writing stage.json: not refused
    attempt(1.0)
    attempt(0.5)
    assert [(row["step"], row["loss"]) for row in read_jsonl(tmp_path / "sft" / METRICS)] == [(1, 0.5), (2, 0.5),
                                                                                               (3, 0.5)]


def checkpoint(stage_dir, step: int, *files: str) -> None:
    folder = stage_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    for name in files:
        (folder / name).write_bytes(b"rng")


def test_a_checkpoint_needs_every_process_rng_state(tmp_path):
    """The Trainer's main process writes trainer_state.json without waiting for the other processes' RNG states: a
    kill in between left a checkpoint that looked whole to a two-process resume."""
    from train.stage import last_checkpoint

    checkpoint(tmp_path, 2, "rng_state_0.pth", "rng_state_1.pth")
    checkpoint(tmp_path, 4, "rng_state_0.pth")
    assert last_checkpoint(tmp_path, 2) == tmp_path / "checkpoint-2"
    assert not (tmp_path / "checkpoint-4").exists()
    checkpoint(tmp_path / "one", 3, "rng_state.pth")
    assert last_checkpoint(tmp_path / "one", 1) == tmp_path / "one" / "checkpoint-3"


def test_a_checkpoint_resumes_only_with_the_processes_that_trained_it(tmp_path, monkeypatch):
    """Each process adds its batch to every step and keeps its RNG state in the checkpoint: a launch with another
    number of processes is refused, naming both, before anything is written."""
    from dataclasses import dataclass

    from curate.errors import RunDirError
    from train.stage import Stage

    @dataclass(frozen=True)
    class Settings:
        out: str

    stage_dir = tmp_path / "grpo"
    with Stage("grpo", Settings(str(stage_dir)), {}, {}) as stage:
        stage.start({"processes": 1})
    checkpoint(stage_dir, 2, "rng_state.pth")
    record = (stage_dir / STAGE_RECORD).read_text()
    monkeypatch.setenv("WORLD_SIZE", "2")
    # One process plays the main one of two: the other would only wait at the barriers.
    monkeypatch.setattr("train.stage.distributed_state", lambda: SimpleNamespace(wait_for_everyone=lambda: None))
    monkeypatch.setattr("train.stage.main_process", lambda: True)
    with Stage("grpo", Settings(str(stage_dir)), {}, {}) as stage, \
            pytest.raises(RunDirError, match=r"checkpoints were trained by 1 process\(es\) and this launch has 2"):
        stage.start({"processes": 2})
    assert (stage_dir / STAGE_RECORD).read_text() == record and (stage_dir / "checkpoint-2").is_dir()
