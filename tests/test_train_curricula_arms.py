"""`dereason-train tiny-cpu --recipe train/recipes/tiny-cpu-curricula.yaml`, shrunk to one seed and a few steps: every
curriculum arm (uniform, online filter, staged with re-estimation, SEC, DUMP) trains GRPO on the split's stages with
the same budget, and the table across seeds has each arm's reward and held-out pass@1. The solver is pre-trained too
briefly to answer anything, so the bands are opened to [0, 1]: what runs is the machinery, not the comparison."""

import json

import polars as pl
import pytest
from trainkit import shrunk_tiny_cpu

from train.arms import PLANS
from train.tinycpu import RECIPE

CURRICULA = RECIPE.with_name("tiny-cpu-curricula.yaml")
SMALLER = {"task": {"items": 60, "heldout": 20, "pretrain_items": 500, "probe_items": 50, "solver_steps": 25,
                    "judge_steps": 25},
           "arms": {"base": False, "settings": {"online_filter": {"online_filter": "0.0,1.0"},
                                                "staged": {"reestimate_band": "0.0,1.0"}}},
           "grpo": {"max_steps": 5, "batch_size": 8, "max_completion_length": 16},
           "staged": {"max_steps": 1, "reestimate_samples": 2},
           "eval": {"samples": 1, "max_tokens": 16}}


@pytest.fixture(scope="module")
def curricula(tmp_path_factory):
    return shrunk_tiny_cpu(tmp_path_factory.mktemp("tiny-cpu-curricula"), CURRICULA, SMALLER)


def test_every_curriculum_arm_trains_grpo_on_the_stages_with_the_same_budget(curricula):
    out, _ = curricula
    arms = out / "seed-0" / "arms"
    manifest = json.loads((arms / "arms.json").read_text(encoding="utf-8"))
    assert [row["arm"] for row in manifest["table"]["rows"]] == ["uniform", "online_filter", "staged", "sec", "dump"]
    assert all(arm["status"] == "done" for arm in manifest["arms"].values())
    budgets = {row["arm"]: row["stages"][0] for row in manifest["table"]["rows"]}
    assert {(b["steps"], b["per_step"], b["rows"]) for b in budgets.values()} == {(5, 8, 60)}
    grpo = {arm: json.loads((arms / arm / "grpo" / "stage.json").read_text())["identity"]["config"]
            for arm in ("uniform", "online_filter", "sec", "dump")}
    assert [grpo[arm]["curriculum"] for arm in grpo] == ["none", "none", "sec", "dump"]
    assert grpo["online_filter"]["online_filter"] == "0.0,1.0" and grpo["uniform"]["online_filter"] is None
    assert {grpo[arm]["split"] for arm in grpo} == {"stages"} and grpo["sec"]["curriculum_field"] == "stage"
    staged = arms / "staged" / "staged"
    for stage in range(1, 6):  # one stored solve run per re-estimation, each stage trained in turn
        assert (staged / f"stage_{stage}" / "reestimate" / f"stage_{stage}" / "manifest.json").is_file()
        assert pl.read_parquet(staged / f"stage_{stage}" / "kept" / "rl.parquet").height == 12
    assert PLANS["online_filter"][0][2] == {"online_filter": "0.2,0.8"}  # the shipped arm's band, opened here


def test_the_table_across_seeds_has_each_arms_reward_and_heldout_pass_at_1(curricula):
    out, result = curricula
    report = json.loads((out / "tiny-cpu.json").read_text(encoding="utf-8"))
    rows = {row["arm"]: row for row in report["across_seeds"]["rows"]}
    assert list(rows) == ["uniform", "online_filter", "staged", "sec", "dump"]
    for row in rows.values():
        assert row["reward"]["value"] is not None and row["per_seed_reward"].keys() == {"0"}
        assert row["sets"]["heldout"]["pass_at_1"]["value"] is not None
    assert "GRPO reward, mean over steps, mean of 1 seeds [95% CI]" in result.stdout
    assert "| staged | staged 5×8 on stages (60 rows) |" in result.stdout
