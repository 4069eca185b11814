import krippendorff
import numpy as np
import polars as pl
import pytest

from curate.data.choices import CHOICE
from curate.runs import item_differences
from curate.stats.compare import compare_runs

SCHEMA = {"item_id": pl.String, "score_mean": pl.Float64, "score_median": pl.Float64, "expected_mean": pl.Float64,
          "n_logprobs": pl.Int64, "item_status": pl.String}


def run(scores: dict) -> pl.DataFrame:
    """A per-item frame; a None score is an unscored item."""
    rows = [(item, s, s, None, 0, "scored" if s is not None else "unscored") for item, s in scores.items()]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


# a..f in both runs; g only scored in A, h only in B; i unscored in B, j unscored in A
RUN_A = run({"a": 1.0, "b": 2.0, "c": 2.4, "d": 3.0, "e": 4.5, "f": 5.0, "g": 3.0, "i": 2.0, "j": None})
RUN_B = run({"a": 1.0, "b": 3.0, "c": 2.0, "d": 3.0, "e": 4.0, "f": 4.5, "h": 2.0, "i": None, "j": 1.0})
# rounded A: 1 2 2 3 5 5; rounded B: 1 3 2 3 4 5


def test_counts_shift_matrix_and_mean_shift():
    result = compare_runs(RUN_A, RUN_B, n_resamples=0)
    assert (result["n_common"], result["n_only_a"], result["n_only_b"]) == (6, 2, 2)
    assert result["shift_matrix"] == [[1, 0, 0, 0, 0],
                                      [0, 1, 1, 0, 0],
                                      [0, 0, 1, 0, 0],
                                      [0, 0, 0, 0, 0],
                                      [0, 0, 0, 1, 1]]
    assert result["mean_shift"] == pytest.approx((0 + 1 - 0.4 + 0 - 0.5 - 0.5) / 6)


def test_churn_uses_unrounded_scores():
    churn = {c["tau"]: c for c in compare_runs(RUN_A, RUN_B, n_resamples=0)["churn"]}
    assert churn[1] == {"tau": 1, "sft_to_rl": 0, "rl_to_sft": 0, "changed": 0, "fraction": 0.0}
    # b: 2.0 → 3.0 leaves SFT; c: 2.4 (RL, though it rounds to 2) → 2.0 joins SFT
    assert churn[2] == {"tau": 2, "sft_to_rl": 1, "rl_to_sft": 1, "changed": 2, "fraction": pytest.approx(1 / 3)}
    assert churn[3]["changed"] == 0
    # e: 4.5 → 4.0 joins SFT; f: 5.0 → 4.5 stays RL
    assert churn[4] == {"tau": 4, "sft_to_rl": 0, "rl_to_sft": 1, "changed": 1, "fraction": pytest.approx(1 / 6)}
    assert [c["tau"] for c in compare_runs(RUN_A, RUN_B, taus=(2.5,), n_resamples=0)["churn"]] == [2.5]


def test_kappa_hand_computed_and_alpha_as_krippendorff():
    result = compare_runs(RUN_A, RUN_B, n_resamples=0)
    # w = (i-j)²: Σw·O = 2 (b: 2→3, e: 5→4); Σw·E = 144 / 6 = 24 → κ = 1 - 2/24
    assert result["qwk"]["value"] == pytest.approx(11 / 12)
    expected = krippendorff.alpha(reliability_data=[[1, 2, 2, 3, 5, 5], [1, 3, 2, 3, 4, 5]],
                                  level_of_measurement="ordinal")
    assert result["alpha"]["value"] == pytest.approx(expected)
    assert 0.5 < result["alpha"]["value"] < 1


def test_identical_runs_agree_perfectly():
    scores = {f"x{i:02d}": float(1 + i % 5) for i in range(20)}
    result = compare_runs(run(scores), run(scores), n_resamples=100)
    assert result["alpha"] == {"value": pytest.approx(1.0), "low": pytest.approx(1.0), "high": pytest.approx(1.0)}
    assert result["qwk"]["value"] == pytest.approx(1.0)
    assert result["shift_matrix"] == (4 * np.eye(5, dtype=int)).tolist()
    assert result["mean_shift"] == 0.0 and all(c["changed"] == 0 for c in result["churn"])
    assert result["notes"] == []


def test_constant_runs_and_too_few_items_give_none():
    constant = compare_runs(run({"a": 3.0, "b": 3.0, "c": 3.2}), run({"a": 3.0, "b": 2.9, "c": 3.0}),
                            n_resamples=0)
    assert constant["alpha"] is None and constant["qwk"] is None
    assert any("no variation" in note for note in constant["notes"])
    assert constant["shift_matrix"][2][2] == 3
    few = compare_runs(run({"a": 1.0, "b": 5.0}), run({"a": 2.0, "b": 5.0}), n_resamples=0)
    assert few["alpha"] is None and any("2 items scored in both runs" in n for n in few["notes"])


def test_no_common_items():
    result = compare_runs(run({"a": 1.0}), run({"b": 2.0}))
    assert (result["n_common"], result["n_only_a"], result["n_only_b"]) == (0, 1, 1)
    assert result["mean_shift"] is None and result["shift_matrix"] == [[0] * 5] * 5
    assert all(c["fraction"] is None and c["changed"] == 0 for c in result["churn"])


def test_intervals_are_seeded():
    rng = np.random.default_rng(0)
    a = {f"x{i:02d}": float(rng.integers(1, 6)) for i in range(40)}
    b = {k: float(np.clip(v + rng.integers(-1, 2), 1, 5)) for k, v in a.items()}
    first = compare_runs(run(a), run(b), n_resamples=150, seed=4)
    assert first == compare_runs(run(a), run(b), n_resamples=150, seed=4)
    for name in ("alpha", "qwk"):
        assert first[name]["low"] <= first[name]["value"] <= first[name]["high"]


def test_expected_score_compares_logprob_items_only():
    a = run({"a": 2.0, "b": 3.0}).with_columns(expected_mean=pl.Series([2.2, None]),
                                               n_logprobs=pl.Series([1, 0]))
    result = compare_runs(a, a, score="expected", n_resamples=0)
    assert result["n_common"] == 1 and result["score"] == "expected"


def items(rows) -> pl.DataFrame:
    """An items frame: (id, question, reference, choices)."""
    return pl.DataFrame(rows, schema={"id": pl.String, "question": pl.String, "reference": pl.String,
                                      "choices": pl.List(CHOICE)}, orient="row")


def test_item_differences_compare_question_reference_and_choices_of_shared_ids():
    options = [{"label": "A", "text": "dry palms"}, {"label": "B", "text": "wet palms"}]
    a = items([("0", "Which?", "A", options), ("1", "What is 2+2?", "4", None), ("2", "Solve x", "1", None),
               ("3", "Only in A", None, None)])
    b = items([("0", "Which?", "A", options[::-1]), ("1", "What is 2+2?", "4", None), ("2", "Solve x", "2", None),
               ("4", "Only in B", None, None)])
    assert item_differences(a, b).select("id", "same").rows() == [("0", False), ("1", True), ("2", False)]
    assert item_differences(a, b.with_columns(question=pl.lit("Other")))["question_b"].to_list() == ["Other"] * 3
    assert item_differences(a, a)["same"].all()
