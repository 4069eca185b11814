"""`dereason-train arms`: the table's statistics on frames whose answer is known, an arm that fails as a row of the
table, the arms recipe's mistakes (tiny-cpu, which runs the arms end to end, is tests/test_tinycpu.py)."""

import json

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import assert_one_line_error
from trainkit import (
    build_split,
    invoke_train,
    read_jsonl,
    write_chat_template,
    write_heldout,
)

from curate.errors import ConfigError
from train.arms import plan_arms
from train.armtable import markdown, paired_difference, table


def per_item(rates, ids=None, status=None):
    ids = ids or [f"q{i}" for i in range(len(rates))]
    return pl.DataFrame({"item_id": ids, "pass_rate": rates,
                         "pass_status": status or ["measured"] * len(rates)})


def test_a_constant_shift_is_exact_when_paired_though_the_pass_rates_overlap():
    """Every item gains 0.25: the paired difference is 0.25 with a zero-width interval, while the two pass@1s
    (items from 0 to 0.75) have intervals that overlap."""
    baseline = np.linspace(0, 0.75, 40)
    found = paired_difference(per_item(baseline + 0.25), per_item(baseline), seed=0)
    assert found["paired_items"] == 40
    assert found["difference"]["value"] == pytest.approx(0.25)
    assert found["difference"]["low"] == pytest.approx(0.25) and found["difference"]["high"] == pytest.approx(0.25)


def test_the_paired_interval_is_the_bootstrap_of_the_mean_difference():
    """Half the items gain 1 and half nothing: the mean is 0.5 and the 95% interval 0.5 ± 1.96·√(0.25/n)."""
    n = 400
    baseline = np.zeros(n)
    arm = np.where(np.arange(n) % 2 == 0, 1.0, 0.0)
    found = paired_difference(per_item(arm), per_item(baseline), seed=1)["difference"]
    half_width = 1.96 * np.sqrt(0.25 / n)
    assert found["value"] == pytest.approx(0.5)
    assert found["low"] == pytest.approx(0.5 - half_width, abs=0.01)
    assert found["high"] == pytest.approx(0.5 + half_width, abs=0.01)


def test_only_items_both_arms_measured_are_paired():
    arm = per_item([1.0, 1.0, 0.5, 0.0], ["a", "b", "c", "d"], ["measured", "measured", "measured",
                                                             "no_countable_attempt"])
    baseline = per_item([0.0, 0.5, 0.5], ["a", "b", "d"])
    found = paired_difference(arm, baseline)
    assert found["paired_items"] == 2  # c: not in the baseline; d: the arm has no countable attempt
    assert found["difference"]["value"] == pytest.approx(0.75)
    assert found["difference"]["low"] is None and "bootstrap needs 10" in found["notes"][0]
    nothing = paired_difference(arm, per_item([0.5], ["z"]))
    assert nothing["difference"] is None and nothing["paired_items"] == 0


def test_a_failed_arm_is_a_row_and_a_failed_baseline_leaves_no_difference():
    done = {"status": "done", "stages": [], "sets": {"test": {"pass_at_1": {"value": 0.5, "low": 0.4, "high": 0.6},
                                                              "measured": 12, "per_item": per_item([0.5] * 12)}}}
    failed = {"status": "failed", "error": "DataError: no split 'x'", "stages": []}
    result = table({"difficulty": done, "random": failed}, baseline="random")
    difficulty, random = result["rows"]
    assert random == {"arm": "random", "status": "failed", "error": "DataError: no split 'x'", "stages": [],
                      "reward": None, "sets": {}}
    assert difficulty["sets"]["test"]["difference"] is None
    assert "baseline arm 'random' has no result on test" in difficulty["sets"]["test"]["notes"][0]
    failed["error"] = "ValueError: expected a | b"
    row = markdown(table({"difficulty": done, "random": failed}, baseline="random")).splitlines()[3]
    assert row.endswith(r"**failed**: ValueError: expected a \| b |  |") and row.count(" | ") == 3


def test_the_tables_intervals_use_the_tables_seed_and_resamples_and_keep_every_reason():
    """pass@1 is taken from the per-item frame with the table's settings (the eval stage's own interval used
    another seed and 1,000 resamples whatever the table said), and its reasons reach the row."""
    arm = {"status": "done", "stages": [], "sets": {"test": {"per_item": per_item(list(np.linspace(0, 1, 30)))}}}
    unresampled = table({"random": arm}, baseline="random", n_resamples=0)["rows"][0]["sets"]["test"]
    assert unresampled["pass_at_1"]["value"] == pytest.approx(0.5) and unresampled["pass_at_1"]["low"] is None
    assert unresampled["measured"] == 30 and unresampled["notes"]
    low = [table({"random": arm}, baseline="random", seed=seed)["rows"][0]["sets"]["test"]["pass_at_1"]["low"]
           for seed in (0, 1)]
    assert low[0] != low[1]


def test_the_notes_name_a_tau_per_domain(tmp_path):
    """`curate split --per-domain` stores τ per domain: the table's notes list them (they raised a TypeError after
    every arm had trained, so no table was ever written)."""
    from train.arms import table_notes

    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "manifest.json").write_text(json.dumps(
        {"score": "mean", "tau": {"algebra": 3.0, "geometry": None}, "tau_method": "quantile", "seed": 0}))
    plan = plan_arms({"model": "m", "data": str(tmp_path / "split"), "out": str(tmp_path / "arms"), "max_steps": 2,
                      "eval": {"heldout": ["test.jsonl"]}}, "recipe r.yaml")
    notes = table_notes(plan, {"rows": []})
    assert any("τ = algebra 3, geometry none (quantile)" in note for note in notes), notes


def test_only_the_main_process_makes_the_table(tmp_path, monkeypatch):
    """Under `accelerate launch` the other processes' eval stages return no results: they make no table (they
    raised KeyError: 'sets')."""
    from train import arms, run

    monkeypatch.setattr(arms, "main_process", lambda: False)
    monkeypatch.setattr(run, "run_recipe", lambda recipe: {"stages": [{"name": "eval", "dir": "eval"}]})
    plan = plan_arms({"model": "m", "data": str(tmp_path / "split"), "out": str(tmp_path / "arms"), "max_steps": 2,
                      "eval": {"heldout": ["test.jsonl"]}, "arms": {"arms": ["random"], "base": False}},
                     "recipe r.yaml")
    manifest = arms.run_arms(plan)
    assert manifest["arms"]["random"]["status"] == "done" and "table" not in manifest
    assert not (tmp_path / "arms" / "table.json").exists()


def test_an_arm_that_succeeds_on_a_rerun_loses_its_old_traceback(tmp_path, monkeypatch):
    from train import arms, run

    outcomes = iter([RuntimeError("out of memory"), {"stages": []}])

    def run_recipe(recipe):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(run, "run_recipe", run_recipe)
    monkeypatch.setattr(arms, "arms_table", lambda plan, results: {})
    plan = plan_arms({"model": "m", "data": str(tmp_path / "split"), "out": str(tmp_path / "arms"), "max_steps": 2,
                      "eval": {"heldout": ["test.jsonl"]}, "arms": {"arms": ["random"], "base": False}},
                     "recipe r.yaml")
    assert arms.run_arms(plan)["arms"]["random"]["status"] == "failed"
    assert "out of memory" in (tmp_path / "arms" / "random" / "error.log").read_text()
    assert arms.run_arms(plan)["arms"]["random"]["status"] == "done"
    assert not (tmp_path / "arms" / "random" / "error.log").exists()


def test_an_arm_whose_evaluation_was_deleted_is_a_failed_row(tmp_path):
    from train.arms import arms_table

    plan = plan_arms({"model": "m", "data": str(tmp_path / "split"), "out": str(tmp_path / "arms"), "max_steps": 2,
                      "eval": {"heldout": ["test.jsonl"]}, "arms": {"arms": ["random"], "base": False}},
                     "recipe r.yaml")
    (tmp_path / "arms").mkdir()
    gone = {"status": "done", "run": {"stages": [{"name": "eval", "dir": "eval", "sets": {"test": {
        "solve_run": str(tmp_path / "arms" / "random" / "eval" / "test")}}}]}}
    (row,) = arms_table(plan, {"random": gone})["rows"]
    assert row["status"] == "failed" and row["error"].startswith("its evaluation cannot be read: ")
    assert "**failed**: its evaluation cannot be read" in (tmp_path / "arms" / "table.md").read_text()


@pytest.mark.parametrize(("change", "expected"), [
    ({"stages": ["sft"]}, "an arms recipe sets no stages"),
    ({"sft": {"learning_rate": 1e-3}}, "set max_steps for sft"),
    ({"max_steps": 5, "sft": {"max_steps": None}}, "set max_steps for sft"),  # the section's null wins over 5
    ({"grpo": {"max_steps": 2, "split": "rl"}}, "section 'grpo' sets split, which each arm chooses itself"),
    ({"arms": {"arms": ["difficulty", "curriculum"]}}, "unknown arm(s) ['curriculum']"),
    ({"arms": {"arms": ["difficulty"], "baseline": "random"}}, "baseline 'random' must be one of the arms"),
    ({"eval": None}, "an eval section with heldout sets is needed"),
])
def test_arms_recipe_mistakes_are_refused_naming_them(tmp_path, change, expected):
    values = {"model": "m", "data": str(tmp_path / "split"), "out": str(tmp_path / "arms"),
              "sft": {"max_steps": 2}, "grpo": {"max_steps": 2}, "eval": {"heldout": ["test.jsonl"]}, **change}
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        plan_arms({k: v for k, v in values.items() if v is not None}, "recipe r.yaml")


def test_each_arm_trains_its_own_splits_and_the_stages_it_has(tmp_path):
    values = {"model": "m", "data": str(tmp_path / "split"), "sft": {"max_steps": 3}, "grpo": {"max_steps": 2},
              "eval": {"heldout": ["test.jsonl"]}}
    plan = plan_arms(values, "recipe r.yaml", str(tmp_path / "arms"))
    stages = {arm: [(name, getattr(config, "split", None)) for _, name, config in recipe.configs]
              for arm, recipe in plan.recipes.items()}
    assert stages == {"base": [("eval", None)],
                      "difficulty": [("sft", "sft"), ("grpo", "rl"), ("eval", None)],
                      "random": [("sft", "random_sft"), ("grpo", "random_rl"), ("eval", None)],
                      "reversed": [("sft", "reversed_sft"), ("grpo", "reversed_rl"), ("eval", None)],
                      "sft_all": [("sft", "sft_all_sft"), ("eval", None)],
                      "rl_all": [("grpo", "rl_all_rl"), ("eval", None)]}
    assert plan.recipes["rl_all"].configs[0][2].model == "m"  # GRPO alone starts from the base model
    assert plan.recipes["difficulty"].configs[-1][2].model == str(tmp_path / "arms" / "difficulty" / "grpo" / "final")


def test_sequences_per_step_count_every_process(tmp_path, monkeypatch):
    """batch_size is per device: under `accelerate launch` with 4 processes a step takes 4 times as many."""
    from train.arms import _stages

    monkeypatch.setenv("WORLD_SIZE", "4")
    values = {"model": "m", "data": str(tmp_path / "split"), "max_steps": 2, "gradient_accumulation_steps": 3,
              "sft": {"batch_size": 2}, "grpo": {"batch_size": 8, "num_generations": 8},
              "eval": {"heldout": ["test.jsonl"]},
              "arms": {"arms": ["difficulty"], "baseline": "difficulty", "base": False}}
    (recipe,) = plan_arms(values, "recipe r.yaml", str(tmp_path / "arms")).recipes.values()
    assert [(stage["stage"], stage.get("per_step")) for stage in _stages(recipe, None)] == [
        ("sft", 2 * 3 * 4), ("grpo", 8 * 3 * 4), ("eval", None)]


def test_an_arm_that_fails_is_a_row_and_the_others_still_run(tmp_path, random_model):
    """The split has no reversed arm: that arm fails while preparing, its row says why, the random arm trains and
    is evaluated, the command prints the table and exits 3. The same command again trains nothing that is done and
    tries the failed arm again; a rerun with other settings is refused."""
    recipe = {"model": str(random_model), "data": str(build_split(tmp_path / "split")), "out": str(tmp_path / "arms"),
              "verifier": "numeric", "gradient_checkpointing": False, "batch_size": 4, "device": "cpu",
              "arms": {"arms": ["random", "reversed"], "base": False},
              "sft": {"learning_rate": 1e-3, "max_steps": 2, "chat_template": str(write_chat_template(
                  tmp_path / "chatml.jinja"))},
              "grpo": {"learning_rate": 1e-3, "max_steps": 1, "num_generations": 4, "max_completion_length": 4},
              "eval": {"heldout": [str(write_heldout(tmp_path / "heldout.jsonl", 12))], "samples": 1,
                       "max_tokens": 4}}
    path = tmp_path / "arms.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = invoke_train("arms", path)
    assert result.exit_code == 3, result.output
    assert "1 arm(s) failed (reversed)" in result.stderr
    assert "| random | sft 2×4 on random_sft (6 rows) → grpo 1×4 on random_rl (6 rows) | " in result.stdout
    assert "| reversed | sft 2×4 on reversed_sft (? rows) → grpo 1×4 on reversed_rl (? rows) | **failed**: split " \
           "directory" in result.stdout
    assert "has no split 'reversed_sft'" in (tmp_path / "arms" / "reversed" / "error.log").read_text()
    rows = json.loads((tmp_path / "arms" / "table.json").read_text())["rows"]
    assert [(row["arm"], row["status"]) for row in rows] == [("random", "done"), ("reversed", "failed")]
    assert rows[0]["sets"]["heldout"]["pass_at_1"]["value"] is not None
    assert (tmp_path / "arms" / "table.png").stat().st_size > 0
    again = invoke_train("arms", path)
    assert again.exit_code == 3 and json.loads((tmp_path / "arms" / "table.json").read_text())["rows"] == rows
    for stage in ("sft", "grpo", "eval"):
        assert len(read_jsonl(tmp_path / "arms" / "random" / stage / "invocations.jsonl")) == (2 if stage == "eval"
                                                                                              else 1)
    recipe["grpo"]["learning_rate"] = 2e-3
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert_one_line_error(invoke_train("arms", path),
                          "holds arms of other settings (recipes.random.grpo.learning_rate: 0.001 then, 0.002 now; ")
