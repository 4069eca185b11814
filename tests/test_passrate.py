import time

import numpy as np
import polars as pl
import pytest
from scipy.stats import binomtest

from curate.errors import ConfigError, DataError
from curate.stats.passrate import (
    PER_ITEM_SCHEMA,
    pass_rates,
    summarize,
    wilson_interval,
)


def rollouts(verdicts: dict[str, list[str]]) -> pl.DataFrame:
    rows = [(item, k, v) for item, vs in verdicts.items() for k, v in enumerate(vs)]
    return pl.DataFrame(rows, schema={"item_id": pl.String, "sample_idx": pl.Int64, "verdict": pl.String},
                        orient="row")


def test_machine_failures_are_counted_but_not_attempts():
    per_item = pass_rates(rollouts({"q": ["correct", "wrong", "no_answer", "error", "timeout", "correct"]}))
    row = per_item.row(0, named=True)
    assert (row["n_rollouts"], row["attempts"], row["n_correct"], row["n_wrong"], row["n_no_answer"],
            row["n_error"], row["n_timeout"]) == (6, 4, 2, 1, 1, 1, 1)
    assert row["pass_rate"] == 0.5 and row["pass_status"] == "measured"  # 2 of 4, not 2 of 6
    assert dict(per_item.schema) == PER_ITEM_SCHEMA


def test_an_item_with_only_machine_failures_is_unmeasured_not_zero():
    per_item = pass_rates(rollouts({"broken": ["error", "timeout", "error"], "fine": ["wrong", "wrong"]}))
    broken, fine = per_item.rows(named=True)
    assert broken["item_id"] == "broken" and broken["pass_status"] == "no_countable_attempt"
    assert broken["attempts"] == 0 and broken["pass_rate"] is None
    assert broken["pass_low"] is None and broken["pass_high"] is None
    assert fine["pass_rate"] == 0.0 and fine["pass_status"] == "measured" and fine["pass_low"] == 0.0


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (0, 8), (8, 8), (3, 8), (1, 3), (17, 40)])
@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_wilson_bounds_equal_scipys(k, n, confidence):
    expected = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(np.array([k]), np.array([n]), confidence)
    assert low[0] == pytest.approx(expected.low, abs=1e-12) and high[0] == pytest.approx(expected.high, abs=1e-12)


def test_wilson_bounds_are_exactly_zero_and_one_at_the_ends():
    n = np.arange(1, 201)  # the formula alone lands a few ulps off for about half of these
    assert (wilson_interval(n, n)[1] == 1.0).all() and (wilson_interval(0 * n, n)[0] == 0.0).all()


def test_wilson_bounds_of_no_trials_are_nan():
    low, high = wilson_interval(np.array([0, 2]), np.array([0, 4]))
    assert np.isnan(low[0]) and np.isnan(high[0]) and 0 < low[1] < 0.5 < high[1] < 1


def test_wilson_interval_of_a_run():
    # 0 of 10: the upper bound is z²/(n + z²) = 3.8415/13.8415, not 0 as a plain proportion would say.
    per_item = pass_rates(rollouts({"none": ["wrong"] * 10, "all": ["correct"] * 10}))
    assert per_item.filter(pl.col("item_id") == "none")["pass_high"][0] == pytest.approx(0.27753, abs=1e-5)
    assert per_item.filter(pl.col("item_id") == "all")["pass_low"][0] == pytest.approx(1 - 0.27753, abs=1e-5)
    assert per_item.filter(pl.col("item_id") == "all")["pass_high"][0] == 1.0


def test_ten_thousand_items_take_well_under_a_second():
    rng = np.random.default_rng(0)
    n_items, k = 10_000, 4
    frame = pl.DataFrame({"item_id": np.repeat([f"i{i}" for i in range(n_items)], k),
                          "sample_idx": np.tile(np.arange(k), n_items),
                          "verdict": rng.choice(["correct", "wrong", "error"], n_items * k)})
    start = time.perf_counter()
    per_item = pass_rates(frame)
    elapsed = time.perf_counter() - start
    assert per_item.height == n_items
    assert elapsed < 2.0, f"{elapsed:.2f} s: the Wilson bounds must be vectorised (binomtest per item takes ~6 s)"


def test_rows_in_any_order_and_integer_ids_give_the_same_frame():
    frame = rollouts({"1": ["correct", "wrong"], "2": ["wrong", "timeout"]})
    shuffled = frame.reverse().with_columns(pl.col("item_id").cast(pl.Int64))
    assert pass_rates(shuffled).equals(pass_rates(frame))


@pytest.mark.parametrize(("frame", "message"), [
    (rollouts({"q": ["correct", "right"]}), r"1 row\(s\) have a verdict outside .*'right'"),
    (rollouts({"q": ["correct"]}).vstack(rollouts({"q": ["wrong"]})), r"1 \(item_id, sample_idx\) pair.*\('q', 0\)"),
    (rollouts({"q": ["correct"]}).drop("sample_idx"), r"lack column\(s\) \['sample_idx'\]"),
    (rollouts({"q": ["correct"]}).with_columns(pl.lit(None, pl.String).alias("verdict")), "1 row.*no verdict"),
])
def test_bad_rollouts_are_one_data_error(frame, message):
    with pytest.raises(DataError, match=message):
        pass_rates(frame)


def test_confidence_must_be_inside_zero_one():
    with pytest.raises(ConfigError, match="confidence"):
        pass_rates(rollouts({"q": ["correct"]}), confidence=95)


def test_summary_counts():
    per_item = pass_rates(rollouts({"all": ["correct", "correct"], "some": ["correct", "no_answer"],
                                    "none": ["wrong", "error"], "unmeasured": ["timeout"]}))
    summary = summarize(per_item)
    assert {k: summary[k] for k in ("items", "measured", "no_countable_attempt", "solved_all", "solved_some",
                                    "solved_none")} == {"items": 4, "measured": 3, "no_countable_attempt": 1,
                                                        "solved_all": 1, "solved_some": 1, "solved_none": 1}
    assert summary["rollouts"] == {"correct": 3, "wrong": 1, "no_answer": 1, "truncated": 0, "error": 1, "timeout": 1}
    assert summary["mean_pass_rate"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert summarize(pass_rates(rollouts({"x": ["error"]})))["mean_pass_rate"] is None


def test_a_truncated_rollout_is_an_attempt_that_failed():
    item = pass_rates(rollouts({"t": ["correct", "truncated", "error"]})).row(0, named=True)
    assert (item["attempts"], item["pass_rate"], item["n_truncated"], item["n_error"]) == (2, 0.5, 1, 1)
