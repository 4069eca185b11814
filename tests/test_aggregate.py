import polars as pl
import pytest

from curate.stats.aggregate import per_item, summary

COLUMNS = ["item_id", "sample_idx", "status", "score", "prompt_tokens", "completion_tokens", "score_method",
           "expected_score", "score_entropy", "score_mass"]
ROWS = [
    ("a", 0, "ok", 2, 10, 1, "logprobs", 2.2, 0.5, 0.9), ("a", 1, "ok", 4, 10, 1, "logprobs", 3.8, 0.3, 0.8),
    ("a", 2, "ok", 4, 10, 1, "decoded", None, None, None),
    ("b", 0, "ok", 5, 12, 1, "decoded", None, None, None), ("b", 1, "unparseable", None, 12, 3, "", None, None, None),
    ("b", 2, "ok", 1, 12, 1, "decoded", None, None, None),
    ("c", 0, "truncated", None, 8, 9, "", None, None, None), ("c", 1, "error", None, 8, 0, "", None, None, None),
    ("c", 2, "unparseable", None, 8, 2, "", 1.4, 1.2, 0.2),  # logprobs with too little mass: not a score
]


def frame(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


@pytest.fixture
def judgments() -> pl.DataFrame:
    return frame(ROWS)


def test_per_item_statistics_use_ok_judgments_only(judgments):
    frame = per_item(judgments)
    a, b, c = frame.rows(named=True)
    assert (a["n_ok"], a["n_failed"], a["score_mean"], a["score_median"], a["score_mode"]) == (3, 0, 10 / 3, 4.0, 4)
    assert a["score_std"] == pytest.approx(((2 - 10 / 3) ** 2 + 2 * (4 - 10 / 3) ** 2) ** 0.5 / 3 ** 0.5)
    # a tie between 1 and 5 goes to the lower score
    assert (b["n_ok"], b["n_unparseable"], b["score_mean"], b["score_mode"], b["score_min"], b["score_max"]) == \
        (2, 1, 3.0, 1, 1, 5)
    assert c["item_status"] == "unscored" and (a["item_status"], b["item_status"]) == ("scored", "scored")
    assert (c["n_truncated"], c["n_error"], c["n_unparseable"], c["n_failed"]) == (1, 1, 1, 3)
    assert c["score_mean"] is None and c["score_mode"] is None and c["score_std"] is None
    assert (a["n_logprobs"], a["expected_mean"], a["entropy_mean"]) == (2, pytest.approx(3.0), pytest.approx(0.4))
    assert (b["n_logprobs"], b["expected_mean"]) == (0, None)
    assert (c["n_logprobs"], c["expected_mean"], c["entropy_mean"]) == (0, None, None)


def test_single_sample_has_zero_spread():
    assert per_item(frame([("a", 0, "ok", 3, 1, 1, "decoded", None, None, None)]))["score_std"].to_list() == [0.0]


def test_summary_counts_add_up(judgments):
    result = summary(judgments, per_item(judgments))
    assert result["status_counts"] == {"ok": 5, "unparseable": 2, "truncated": 1, "error": 1}
    assert sum(result["status_counts"].values()) == result["judgments"] == 9
    assert result["failed"] == 4 and result["failure_fraction"] == pytest.approx(4 / 9)
    assert result["score_histogram"] == {"1": 1, "2": 1, "3": 0, "4": 2, "5": 1}
    assert result["score_methods"] == {"logprobs": 2, "constrained": 0, "decoded": 3}
    assert (result["items"], result["items_scored"], result["items_unscored"]) == (3, 2, 1)
    assert result["mean_item_score"] == pytest.approx((10 / 3 + 3.0) / 2)
    assert (result["prompt_tokens"], result["completion_tokens"]) == (90, 19)


def test_sampled_judgments_keep_their_distribution_in_the_item_statistics():
    """A sampled logprob judgment is scored by the digit it drew (method "decoded"), yet its distribution still
    counts toward the expected score: `with_distribution` selects by the mass on score tokens, not by method."""
    rows = [("s", 0, "ok", 2, 10, 1, "decoded", 2.6, 0.9, 0.95), ("s", 1, "ok", 3, 10, 1, "decoded", 2.8, 0.8, 0.9)]
    item = per_item(frame(rows)).row(0, named=True)
    assert (item["n_logprobs"], item["expected_mean"], item["score_mean"]) == (2, pytest.approx(2.7), 2.5)


def test_constrained_judgments_count_their_distribution_whatever_mass_the_scores_held():
    """A constrained answer is that distribution's argmax or draw, so its expected score is the judgment's own
    reading, at 3% mass as at 90%; an unconstrained one at 3% would not count (the row of item c above)."""
    rows = [("k", 0, "ok", 2, 10, 1, "constrained", 2.4, 1.1, 0.03), ("k", 1, "ok", 4, 10, 1, "constrained", None,
                                                                      None, None),
            ("k", 2, "ok", 3, 10, 1, "decoded", 3.5, 1.0, 0.03)]
    item = per_item(frame(rows)).row(0, named=True)
    assert (item["n_logprobs"], item["expected_mean"]) == (1, pytest.approx(2.4))
