"""Pairwise difficulty, its pure parts: the schedule of comparisons, the A/B parser, the Bradley-Terry fit."""

import math
import re
from collections import Counter

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from curate.errors import ConfigError, DataError
from curate.parse import Status
from curate.parse_choice import LetterChoiceParser, choice_probabilities, parse_choice
from curate.stats import bradley_terry
from curate.stats.bradley_terry import fit_bradley_terry
from curate.tasks.schedule import pair_schedule, schedule_size

PARSER = LetterChoiceParser()


def ids(n):
    return pl.Series([f"item-{i:03d}" for i in range(n)])


def opponents(schedule):
    met = Counter()
    for a, b in set(map(frozenset, schedule.select("a_id", "b_id").rows())):
        met[a] += 1
        met[b] += 1
    return met


@pytest.mark.parametrize(("n", "k"), [(2, 1), (10, 3), (11, 4), (31, 6), (40, 39), (41, 40)])
def test_the_schedule_is_balanced_both_ways_without_self_pairs_or_repeats(n, k):
    schedule = pair_schedule(ids(n), k, seed=7)
    assert schedule.height == schedule_size(n, k) == k * (n - n % 2)
    assert schedule["id"].is_unique().all() and (schedule["a_id"] != schedule["b_id"]).all()
    ordered = set(schedule.select("a_id", "b_id").rows())
    assert all((b, a) in ordered for a, b in ordered)  # every pair in both orders
    met = opponents(schedule)
    assert len(met) == n
    assert set(met.values()) == {k} if n % 2 == 0 else set(met.values()) <= {k, k - 1}
    shown = Counter(schedule["a_id"].to_list() + schedule["b_id"].to_list())
    assert set(shown.values()) <= {2 * k, 2 * k - 2}  # each item in about 2K prompts, as often first as second
    assert Counter(schedule["a_id"].to_list()) == Counter(schedule["b_id"].to_list())


def test_the_schedule_is_seeded_and_ignores_the_input_order():
    first = pair_schedule(ids(30), 4, seed=1)
    assert first.equals(pair_schedule(ids(30).reverse(), 4, seed=1))
    assert not first.equals(pair_schedule(ids(30), 4, seed=2))


def test_a_larger_schedule_keeps_every_comparison_of_a_smaller_one():
    small, large = pair_schedule(ids(25), 3, seed=5), pair_schedule(ids(25), 6, seed=5)
    assert set(small["id"]) < set(large["id"])


def test_a_schedule_needs_more_items_than_comparisons_per_item():
    with pytest.raises(ConfigError, match=r"--comparisons 4: .* between 1 and the number of items − 1 \(3 for these 4"):
        pair_schedule(ids(4), 4, seed=0)
    with pytest.raises(ConfigError, match="--comparisons 1"):
        pair_schedule(ids(1), 1, seed=0)


def test_spacing_variants_of_a_letter_are_summed_not_overwritten():
    alternatives = ((" A", math.log(0.5)), ("A", math.log(0.2)), (" B", math.log(0.2)), ("The", math.log(0.1)))
    p_a, mass = choice_probabilities(alternatives)
    assert p_a == pytest.approx(0.7 / 0.9) and mass == pytest.approx(0.9)
    parsed = parse_choice(PARSER, " A", "length", alternatives=alternatives)
    assert (parsed.status, parsed.choice, parsed.method) == (Status.OK, "A", "logprobs")
    assert parsed.p_a == pytest.approx(0.7 / 0.9)


def test_the_decoded_letter_decides_when_the_letters_hold_little_probability():
    alternatives = ((" To", math.log(0.8)), (" B", math.log(0.15)), (" A", math.log(0.05)))
    decoded = parse_choice(PARSER, "B", "stop", alternatives=alternatives)
    assert (decoded.status, decoded.choice, decoded.method) == (Status.OK, "B", "decoded")
    assert decoded.mass == pytest.approx(0.2) and decoded.p_a == pytest.approx(0.25)
    prose = parse_choice(PARSER, " To compare", "length", alternatives=alternatives)
    assert prose.status == Status.TRUNCATED and prose.choice is None and "A and B held 20%" in prose.detail
    constrained = parse_choice(PARSER, " B", "length", alternatives=alternatives, constrained=True)
    assert (constrained.status, constrained.choice, constrained.method) == (Status.OK, "B", "constrained")


@pytest.mark.parametrize(("text", "finish", "status", "choice"), [
    ("A", "stop", Status.OK, "A"), ("  B\n", "stop", Status.OK, "B"), ("Problem B", "stop", Status.UNPARSEABLE, None),
    ("", "stop", Status.UNPARSEABLE, None), ("<think>hmm", "stop", Status.UNPARSEABLE, None),
    ("<think>A or B?</think>B", "stop", Status.OK, "B"), ("A", "length", Status.TRUNCATED, None)])
def test_a_decoded_answer_is_the_letter_alone(text, finish, status, choice):
    parsed = parse_choice(PARSER, text, finish)
    assert (parsed.status, parsed.choice) == (status, choice)


def test_a_sampled_answer_is_the_letter_drawn_and_errors_stay_errors():
    alternatives = ((" A", math.log(0.9)), (" B", math.log(0.1)))
    drawn = parse_choice(PARSER, " B", "length", alternatives=alternatives, sampled=True)
    assert (drawn.choice, drawn.method, drawn.p_a) == ("B", "decoded", pytest.approx(0.9))
    error = parse_choice(PARSER, "", "", error="HTTP 500", alternatives=alternatives)
    assert (error.status, error.choice, error.detail) == (Status.ERROR, None, "HTTP 500")


def simulated(n, k, *, bias=0.0, spread=1.5, soft=False, seed=0):
    """A judge with a known order: P(A harder) = σ(t_a − t_b + bias), answered by a draw (or, soft, as that P)."""
    rng = np.random.default_rng(seed)
    truth = dict(zip(ids(n), rng.normal(0, spread, n), strict=True))
    schedule = pair_schedule(ids(n), k, seed=seed)
    p = 1 / (1 + np.exp(-(schedule["a_id"].replace_strict(truth) - schedule["b_id"].replace_strict(truth) + bias)))
    outcome = p if soft else (rng.random(schedule.height) < p.to_numpy()).astype(float)
    return schedule.with_columns(outcome=pl.Series(outcome, dtype=pl.Float64)), truth


def test_the_fit_recovers_a_known_order_and_the_judges_position_bias():
    comparisons, truth = simulated(120, 8, bias=0.6, seed=3)
    fit = fit_bradley_terry(comparisons)
    items = fit.items.with_columns(truth=pl.col("item_id").replace_strict(truth))
    assert spearmanr(items["strength"], items["truth"]).statistic > 0.9
    bias = fit.detail["position_bias"]
    assert bias["low"] < 0.6 < bias["high"] and bias["low"] > 0
    assert fit.detail["mean_p_first"] > 0.55 and fit.detail["converged"] and fit.detail["components"] == 1
    assert abs(items["strength"].sum()) < 1e-6  # read against the average item
    centred = items["truth"] - items["truth"].mean()
    covered = ((items["strength_low"] <= centred) & (centred <= items["strength_high"])).mean()
    assert 0.88 <= covered <= 1.0  # 95% intervals


def test_soft_outcomes_recover_more_than_the_letters_they_round_to():
    soft, truth = simulated(80, 4, bias=0.3, soft=True, seed=11)
    hard = soft.with_columns((pl.col("outcome") > 0.5).cast(pl.Float64))

    def rho(comparisons):
        items = fit_bradley_terry(comparisons).items
        return spearmanr(items["strength"], items["item_id"].replace_strict(truth)).statistic

    assert rho(soft) > 0.97 and rho(soft) - rho(hard) > 0.04  # 0.986 against 0.922


def test_an_item_the_judge_always_calls_harder_is_finite_and_flagged():
    comparisons, _ = simulated(20, 4, seed=2)
    top = comparisons.filter((pl.col("a_id") == "item-000") | (pl.col("b_id") == "item-000")).with_columns(
        outcome=(pl.col("a_id") == "item-000").cast(pl.Float64))
    others = comparisons.filter((pl.col("a_id") != "item-000") & (pl.col("b_id") != "item-000"))
    fit = fit_bradley_terry(pl.concat([top, others]))
    row = fit.items.filter(pl.col("item_id") == "item-000").row(0, named=True)
    assert row["bt_status"] == "always_harder" and math.isfinite(row["strength"])
    assert row["strength"] == fit.items["strength"].max() and row["judged_harder"] == row["n_compared"] == 8
    assert any("always harder" in note and "prior" in note for note in fit.detail["notes"])


def test_disconnected_groups_and_an_empty_fit_are_said():
    comparisons = pl.DataFrame({"a_id": ["a", "b", "c", "d"], "b_id": ["b", "a", "d", "c"],
                                "outcome": [0.8, 0.3, 0.6, 0.5]})
    fit = fit_bradley_terry(comparisons)
    assert fit.detail["components"] == 2 and any("2 groups" in note for note in fit.detail["notes"])
    empty = fit_bradley_terry(comparisons.clear())
    assert empty.items.height == 0 and empty.detail["position_bias"] is None
    assert empty.detail["notes"] == ["no comparison to fit: every item is unscored"]


@pytest.mark.parametrize(("frame", "message"), [
    (pl.DataFrame({"a_id": ["a"], "b_id": ["b"]}), r"lack column\(s\) \['outcome'\]"),
    (pl.DataFrame({"a_id": ["a"], "b_id": ["b"], "outcome": [1.5]}), "outside 0..1"),
    (pl.DataFrame({"a_id": ["a"], "b_id": ["a"], "outcome": [1.0]}), "compare an item with itself"),
    (pl.DataFrame({"a_id": ["a"], "b_id": [None], "outcome": [1.0]}), "have no b_id")])
def test_bad_comparisons_are_refused(frame, message):
    with pytest.raises(DataError, match=message):
        fit_bradley_terry(frame)


def test_a_fit_that_stops_short_of_the_optimum_says_so(monkeypatch):
    monkeypatch.setattr(bradley_terry, "GRADIENT_TOLERANCE", 0.0)  # no fit can reach it
    fit = fit_bradley_terry(simulated(20, 4, seed=4)[0])
    assert fit.detail["converged"] is False
    assert any(re.match(r"the fit did not converge: after \d+ iterations a gradient component is \d\.\de-\d+, "
                        r"above 0 \(", note) for note in fit.detail["notes"])
