"""Staged RL with re-estimation (train.staged), on a CPU: a random tiny Qwen2 trained over two curriculum stages of
the trainkit split. Each stage's re-estimation is a stored `curate solve` run whose answers are scripted (an item's
pass rate is known), so the band's drops and the easiest-first order are known; the stages train in order, each from
the previous one's final model; a crash in the second stage resumes without training the first again or measuring
anything again."""

import json

import polars as pl
import pytest
import yaml
from conftest import assert_one_line_error
from fakes import ScriptedBackend
from trainkit import (
    Crash,
    build_split,
    changed,
    crash_at,
    invoke_train,
    read_jsonl,
    weights,
)

from train.stage import INVOCATIONS
from train.staged import plateaued, reestimated

# item → how many of its 4 re-estimation answers are right: its pass rate is that over 4.
RIGHT = {"rl-100": 4, "rl-101": 0, "rl-102": 2, "rl-103": 3, "rl-104": 1, "rl-105": 3, "rl-106": 4, "rl-107": 2}
KEPT = {"stage_1": ["rl-103", "rl-102"], "stage_2": ["rl-105", "rl-107", "rl-104"]}  # in [0.2, 0.8], easiest first


@pytest.fixture(scope="module")
def staged_split(tmp_path_factory):
    """The trainkit split with its 8 RL items in two stages of 4, as `curate split --stages 2` writes them."""
    split = build_split(tmp_path_factory.mktemp("staged") / "split", rl=8)
    rl = pl.read_parquet(split / "rl.parquet")
    (split / "stages").mkdir()
    for stage in (1, 2):
        rl[4 * (stage - 1):4 * stage].with_columns(stage=pl.lit(stage)).write_parquet(
            split / "stages" / f"stage_{stage}.parquet")
    manifest = json.loads((split / "manifest.json").read_text())
    (split / "manifest.json").write_text(json.dumps({**manifest, "stages": {"1": 4, "2": 4}}))
    return split


def scripted_solves(monkeypatch) -> list[ScriptedBackend]:
    """Every `curate solve` answers as RIGHT says: `\\boxed{reference}` for an item's first RIGHT[item] samples."""
    import curate.engine

    real, backends = curate.engine.solve, []

    def answer(item_id, index):
        number = int(item_id.split("-")[1])
        return (f"\\boxed{{{2 * number + 3 if index < RIGHT[item_id] else 0}}}", "stop")

    def solve(config, progress=None, backend=None):
        backends.append(ScriptedBackend(answer))
        return real(config, progress, backends[-1])

    monkeypatch.setattr(curate.engine, "solve", solve)
    return backends


def staged_recipe(root, model, split, **staged):
    recipe = {"model": str(model), "data": str(split), "out": str(root / "run"), "stages": ["staged"],
              "gradient_checkpointing": False, "verifier": "numeric", "batch_size": 4, "save_steps": 1,
              "staged": {"learning_rate": 1e-3, "max_steps": 2, "num_generations": 2, "max_completion_length": 8,
                         "format_weight": 0.5, "reestimate_samples": 4, "reestimate_settings": {"batch_size": 8},
                         **staged}}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory, random_model, staged_split):
    root = tmp_path_factory.mktemp("staged-run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        backends = scripted_solves(monkeypatch)
        result = invoke_train("run", staged_recipe(root, random_model, staged_split), "--json")
    assert result.exit_code == 0, result.output
    return root / "run" / "staged", json.loads(result.stdout), backends


def test_each_stage_is_measured_again_by_a_stored_solve_run_and_the_band_drops_items(staged_run, random_model):
    staged, manifest, backends = staged_run
    assert len(backends) == 2  # one solve run per re-estimation
    record = manifest["stages"][0]
    assert [(s["stage"], s["status"]) for s in record["stages"]] == [("stage_1", "trained"), ("stage_2", "trained")]
    for stage, kept in KEPT.items():
        solve_run = staged / stage / "reestimate" / stage
        assert (solve_run / "manifest.json").is_file()  # the stored run, to audit the curriculum by
        assert {item_id for item_id, _ in backends[int(stage[-1]) - 1].requested} == {
            f"rl-{100 + i}" for i in range(4 * (int(stage[-1]) - 1), 4 * int(stage[-1]))}
        assert pl.read_parquet(staged / stage / "kept" / "rl.parquet")["item_id"].to_list() == kept
        counts = json.loads((staged / stage / "kept" / "manifest.json").read_text())["reestimate"]
        assert counts == {"items": 4, "unmeasured": 0, "kept": len(kept), "below_band": int(stage == "stage_1"),
                          "above_band": 1}
    grpo = [json.loads((staged / stage / "grpo" / "stage.json").read_text()) for stage in KEPT]
    assert grpo[0]["identity"]["data"]["rows"] == 2 and grpo[1]["identity"]["data"]["rows"] == 3
    assert not grpo[0]["trl_arguments"]["shuffle_dataset"]  # easiest first, as kept


def test_the_stages_train_in_order_each_from_the_previous_final_model(staged_run, random_model):
    staged, manifest, _ = staged_run
    first, second = (json.loads((staged / stage / "grpo" / "stage.json").read_text()) for stage in KEPT)
    assert first["identity"]["model"]["name"] == str(random_model)
    assert second["identity"]["model"]["name"] == str(staged / "stage_1" / "grpo" / "final")
    measured_with = [json.loads((staged / stage / "reestimate" / "stage.json").read_text())["identity"]["model"]["name"]
                     for stage in KEPT]
    assert measured_with == [str(random_model), str(staged / "stage_1" / "grpo" / "final")]
    assert read_jsonl(staged / "stage_1" / "grpo" / INVOCATIONS)[0]["started_at"] < read_jsonl(
        staged / "stage_2" / "grpo" / INVOCATIONS)[0]["started_at"]
    assert changed(weights(staged / "stage_1" / "grpo" / "final"), weights(staged / "stage_2" / "grpo" / "final"))
    assert not changed(weights(staged / "final"), weights(staged / "stage_2" / "grpo" / "final"))
    assert manifest["stages"][0]["steps"] == 4 and manifest["stages"][0]["final"] == "final"


def test_a_crash_in_the_second_stage_resumes_without_redoing_the_first_or_any_measurement(
        tmp_path, random_model, staged_split, monkeypatch):
    recipe = staged_recipe(tmp_path, random_model, staged_split)
    backends = scripted_solves(monkeypatch)
    crash_at(monkeypatch, "grpo", under="stage_2")
    crashed = invoke_train("run", recipe)
    assert isinstance(crashed.exception, Crash), crashed.output
    assert len(backends) == 2
    monkeypatch.undo()
    backends = scripted_solves(monkeypatch)
    result = invoke_train("run", recipe, columns=300)
    assert result.exit_code == 0, result.output
    assert backends == []  # neither re-estimation ran again
    assert ("staged stage_1: kept 2 of 4 items (1 below the band, 1 above, 0 unmeasured); trained 2 steps (ended by "
            "max_steps)") in result.stdout
    staged = tmp_path / "run" / "staged"
    assert len(read_jsonl(staged / "stage_1" / "grpo" / INVOCATIONS)) == 1
    assert [row["resumed_from"] for row in read_jsonl(staged / "stage_2" / "grpo" / INVOCATIONS)] == [
        None, "checkpoint-1"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["stages"][0]["steps"] == 4


def test_a_band_no_item_reaches_skips_every_stage_and_says_so(tmp_path, random_model, staged_split, monkeypatch):
    scripted_solves(monkeypatch)
    result = invoke_train("run", staged_recipe(tmp_path, random_model, staged_split, reestimate_band="0.9,0.95"))
    assert_one_line_error(result, "staged: no stage of")
    counts = json.loads((tmp_path / "run" / "staged" / "stage_2" / "kept" / "manifest.json").read_text())
    assert counts["reestimate"]["kept"] == 0


def test_items_without_a_countable_answer_are_dropped_and_counted_apart():
    items = pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"]})
    per_item = pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "pass_rate": [0.5, None, 0.9, 0.5, 0.6],
                             "pass_status": ["measured", "no_countable_attempt", "measured", "measured", "measured"]})
    kept, counts = reestimated(items, per_item, 0.2, 0.8)
    assert kept["item_id"].to_list() == ["e", "a", "d"]  # easiest first, ties in the stage's order
    assert counts == {"items": 5, "unmeasured": 1, "below_band": 0, "above_band": 1, "kept": 3}


def test_the_reward_plateaus_when_its_rolling_mean_stops_rising():
    assert not plateaued([0.1, 0.2, 0.3], 2)  # fewer than 2W logs
    assert not plateaued([0.1, 0.2, 0.3, 0.4, 0.5], 2)  # still rising
    assert plateaued([0.1, 0.5, 0.5, 0.4, 0.4, 0.3], 2)  # best mean 0.5 (logs 2-3); the last two means are lower
    assert not plateaued([0.1, 0.5, 0.5, 0.4, 0.4, 0.7], 2)  # the last mean, 0.55, rose above it


def test_a_stage_whose_reward_plateaus_ends_before_its_max_steps(tmp_path, random_model, staged_split, monkeypatch):
    """With W = 1 a stage ends at the first logged reward no higher than the best before it (the format reward
    varies from step to step); each stage's metrics.jsonl shows the rule held there and not before."""
    scripted_solves(monkeypatch)
    result = invoke_train("run", staged_recipe(tmp_path, random_model, staged_split, max_steps=4, plateau_window=1),
                          "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["stages"][0]
    assert [s["ended_by"] for s in record["stages"]] == ["plateau", "plateau"]
    for stage in record["stages"]:
        rewards = [row["reward"] for row in read_jsonl(tmp_path / "run" / "staged" / stage["stage"] / "grpo" /
                                                       "metrics.jsonl") if "reward" in row]
        assert len(rewards) == stage["steps"] < 4
        assert plateaued(rewards, 1) and not any(plateaued(rewards[:i], 1) for i in range(len(rewards)))


def test_split_stages_reads_every_stage_together_and_needs_some(staged_split, tmp_path):
    from curate.errors import DataError
    from train.config import GrpoConfig
    from train.data import grpo_data

    def rows(split_dir):
        config = GrpoConfig(model="m", data=str(split_dir), split="stages", out=str(tmp_path / "g"),
                            template="solve/step_by_step", curriculum="sec", curriculum_field="stage")
        return grpo_data(config).rows

    assert rows(staged_split)["stage"].to_list() == [1] * 4 + [2] * 4
    with pytest.raises(DataError, match="has no stages; write them with `curate split --stages k`"):
        rows(build_split(tmp_path / "plain"))
