"""Curricula inside `dereason-train grpo` on TRL 1.16.0, on a CPU: a random tiny Qwen2 trained a few steps on a
tiny arithmetic split whose items carry a level. DUMP draws the prompts (its state saved in each checkpoint and
restored on resume, exactly); the online filter keeps the groups in its band and logs what it kept; the filter's
band check and the joining of generation outputs, alone."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from conftest import assert_one_line_error
from trainkit import (
    Crash,
    build_split,
    changed,
    crash_at,
    invoke_train,
    read_jsonl,
    weights,
)

from train.curriculum.trl_sampler import STATE_FILE
from train.online_filter import groups_in_band, merged, parse_band
from train.stage import INVOCATIONS, METRICS

LEVELS = [1, 1, 1, 2, 2, 2, 3, 3]


@pytest.fixture(scope="module")
def leveled_split(tmp_path_factory):
    """The trainkit split, its RL side eight items of levels 1-3."""
    split = build_split(tmp_path_factory.mktemp("curriculum") / "split", rl=len(LEVELS))
    rl = pl.read_parquet(split / "rl.parquet")
    rl.with_columns(level=pl.Series(LEVELS)).write_parquet(split / "rl.parquet")
    return split


def grpo(model, split, out, *extra):
    return invoke_train("grpo", "--model", model, "--data", split, "--out", out, "--verifier", "numeric",
                        "--format-weight", "0.5", "--learning-rate", "1e-3", "--batch-size", "4",
                        "--num-generations", "2", "--max-completion-length", "8", "--no-gradient-checkpointing",
                        "--save-steps", "2", *extra)


CURRICULUM = ("--curriculum", "dump", "--curriculum-field", "level", "--max-steps", "4")


@pytest.fixture(scope="module")
def curriculum_run(tmp_path_factory, random_model, leveled_split):
    out = tmp_path_factory.mktemp("dump") / "grpo"
    result = grpo(random_model, leveled_split, out, *CURRICULUM)
    assert result.exit_code == 0, result.output
    return out


def test_the_curriculum_sampler_trains_and_its_state_is_updated_and_saved(curriculum_run, random_model):
    assert changed(weights(random_model), weights(curriculum_run / "final"))
    states = {step: json.loads((curriculum_run / f"checkpoint-{step}" / STATE_FILE).read_text()) for step in (2, 4)}
    for step, state in states.items():
        bandit = state["curriculum"]
        assert (bandit["bandit"], bandit["field"], bandit["arms"]) == ("dump", "level", ["1", "2", "3"])
        # Each step generates 2 prompts x 2 completions, and every completion's advantage reaches the bandit.
        assert sum(bandit["state"]["seen"].values()) == 4 * step
        assert len(state["drawn"]) >= step and all(0 <= i < len(LEVELS) for chunk in state["drawn"] for i in chunk)
    assert states[2]["curriculum"]["rng"] != states[4]["curriculum"]["rng"]
    logged = [row for row in read_jsonl(curriculum_run / METRICS) if "loss" in row]
    assert len(logged) == 4
    for row in logged:
        assert sum(row[f"curriculum/{level}"] for level in (1, 2, 3)) == pytest.approx(1.0)


def test_a_resumed_curriculum_stage_ends_as_an_uninterrupted_one(curriculum_run, random_model, leveled_split, tmp_path,
                                                                 monkeypatch):
    out = tmp_path / "grpo"
    with monkeypatch.context() as patch:
        crash_at(patch, "grpo")
        crashed = grpo(random_model, leveled_split, out, *CURRICULUM)
    assert isinstance(crashed.exception, Crash), crashed.output
    result = grpo(random_model, leveled_split, out, *CURRICULUM)
    assert result.exit_code == 0, result.output
    assert [i["resumed_from"] for i in read_jsonl(out / INVOCATIONS)] == [None, "checkpoint-2"]
    assert (out / "checkpoint-4" / STATE_FILE).read_text() == (curriculum_run / "checkpoint-4" / STATE_FILE).read_text()
    assert not changed(weights(out / "final"), weights(curriculum_run / "final"))


def test_a_curriculum_field_the_data_lacks_is_refused(random_model, leveled_split, tmp_path):
    assert_one_line_error(grpo(random_model, leveled_split, tmp_path / "out", "--curriculum", "sec",
                               "--curriculum-field", "stage"), "split 'rl' of")
    assert_one_line_error(grpo(random_model, leveled_split, tmp_path / "out", "--online-filter", "0.8,0.2"),
                          "online_filter: need 0 <= LOW <= HIGH <= 1, got '0.8,0.2'")


def test_train_grpo_with_the_online_filter_logs_the_kept_fraction(random_model, leveled_split, tmp_path, caplog,
                                                                  monkeypatch):
    """`--online-filter 0.2,0.8` as given. The random model never answers right, so the verifier is made to judge a
    completion right when its length is even: a group of two is then in the band about half the time."""
    import curate.rewards
    from curate.verify import Verdict, VerdictStatus

    monkeypatch.setattr(curate.rewards, "verdicts", lambda verifier, responses, *rest: [
        Verdict(VerdictStatus.CORRECT if len(r) % 2 == 0 else VerdictStatus.WRONG, "x") for r in responses])
    out = tmp_path / "filtered"
    result = grpo(random_model, leveled_split, out, "--online-filter", "0.2,0.8", "--online-filter-rounds", "8",
                  "--max-steps", "3")
    assert result.exit_code == 0, result.output
    logged = [row for row in read_jsonl(out / METRICS) if "loss" in row]
    assert len(logged) == 3
    for row in logged:
        kept, generated = row["online_filter/kept_fraction"], row["online_filter/generated_groups"]
        assert 0 < kept <= 1 and kept * generated >= 1  # at least the batch's groups were in the band
        assert row["online_filter/extra_rounds"] == generated - 1  # each extra round generates a batch's groups
    assert "kept groups " in caplog.text  # each step's log line says it


def test_a_group_out_of_the_band_is_refilled_and_the_step_trains_on_the_joined_batch(random_model, leveled_split,
                                                                                     tmp_path, monkeypatch):
    """The random model's accuracy is 0 everywhere, so the band check is told once that the first group is out:
    the step generates a second batch (its prompts drawn by the curriculum), takes one group of it, and trains on
    the group kept from each generation; the curriculum learns from both."""
    import train.online_filter

    checked = []

    def first_group_out_once(correct, size, low, high):
        checked.append(len(correct))
        keep = [True] * (len(correct) // size)
        keep[0] = len(checked) > 1
        return keep

    monkeypatch.setattr(train.online_filter, "groups_in_band", first_group_out_once)
    out = tmp_path / "refilled"
    result = grpo(random_model, leveled_split, out, "--online-filter", "0.0,1.0", "--max-steps", "2",
                  "--curriculum", "dump", "--curriculum-field", "level")
    assert result.exit_code == 0, result.output
    assert checked == [4, 4, 4]  # step 1: two generations of 2 groups x 2 completions; step 2: one
    first, second = [row for row in read_jsonl(out / METRICS) if "loss" in row]
    assert (first["online_filter/kept_fraction"], first["online_filter/generated_groups"],
            first["online_filter/extra_rounds"]) == (0.75, 2.0, 1.0)
    assert (second["online_filter/kept_fraction"], second["online_filter/extra_rounds"]) == (1.0, 0.0)
    state = json.loads((out / "checkpoint-2" / STATE_FILE).read_text())
    assert sum(state["curriculum"]["state"]["seen"].values()) == 12


def test_a_band_no_group_reaches_stops_training_with_one_line(random_model, leveled_split, tmp_path):
    """The random model answers none of these right: no group's accuracy reaches 0.5."""
    result = grpo(random_model, leveled_split, tmp_path / "out", "--online-filter", "0.5,1.0",
                  "--online-filter-rounds", "1", "--max-steps", "2")
    assert_one_line_error(result, "online filter, step 1: only 0 of 2 prompt groups had an accuracy in [0.5, 1.0] "
                                  "after 1 extra generation round(s) (4 groups generated)")


def test_the_filter_keeps_exactly_the_groups_in_the_band():
    # Groups of 4 verdicts: accuracies 0, 0.25, 0.5, 0.75, 1, then 2/3 (one undecided) and none decided.
    verdicts = [0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, None, None, None, None, None]
    assert groups_in_band(verdicts, 4, 0.25, 0.75) == [False, True, True, True, False, True, False]
    assert groups_in_band(verdicts, 4, 0.2, 0.8) == [False, True, True, True, False, True, False]
    assert groups_in_band(verdicts, 4, 0.3, 0.7) == [False, False, True, False, False, True, False]
    assert groups_in_band(verdicts, 4, 0.0, 1.0) == [True] * 6 + [False]
    assert parse_band("0.2,0.8") == (0.2, 0.8)


def test_kept_rows_of_two_generations_join_into_one_batch():
    first = {"prompt_ids": torch.tensor([[9, 1, 2], [3, 4, 5]]), "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
             "completion_ids": torch.tensor([[6, 9], [7, 8]]), "completion_mask": torch.tensor([[1, 0], [1, 1]]),
             "advantages": torch.tensor([0.5, -0.5]), "num_items_in_batch": torch.tensor(3)}
    second = {"prompt_ids": torch.tensor([[1, 2, 3, 4]]), "prompt_mask": torch.tensor([[1, 1, 1, 1]]),
              "completion_ids": torch.tensor([[5, 6, 7]]), "completion_mask": torch.tensor([[1, 1, 1]]),
              "advantages": torch.tensor([1.0]), "num_items_in_batch": torch.tensor(3)}
    joined = merged([(first, [1]), (second, [0])], pad_token_id=9)
    assert joined["prompt_ids"].tolist() == [[9, 3, 4, 5], [1, 2, 3, 4]]  # prompts padded on the left
    assert joined["prompt_mask"].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert joined["completion_ids"].tolist() == [[7, 8, 9], [5, 6, 7]]  # completions on the right
    assert joined["completion_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert joined["advantages"].tolist() == [-0.5, 1.0] and int(joined["num_items_in_batch"]) == 5
    assert np.isclose(float(joined["advantages"].sum()), 0.5)
