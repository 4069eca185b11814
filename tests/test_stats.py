import math

import numpy as np
import polars as pl
import pytest

from curate.stats.aggregate import per_item
from curate.stats.consistency import identical_samples, self_consistency
from curate.stats.metrics import (
    SCORE_COLUMNS,
    all_notes,
    bootstrap_interval,
    failure_rates,
    item_field,
    item_scores,
    pass_rate_agreement,
    reference_agreement,
    round_score,
    score_distribution,
    spearman,
)

JUDGMENT_COLUMNS = ["item_id", "sample_idx", "status", "score", "score_method", "expected_score", "score_entropy",
                    "prompt_tokens", "completion_tokens", "raw_text", "score_probs", "score_mass"]
PER_ITEM_SCHEMA = {"item_id": pl.String, "score_mean": pl.Float64, "score_median": pl.Float64,
                   "expected_mean": pl.Float64, "n_logprobs": pl.Int64, "item_status": pl.String}


def judgments(rows) -> pl.DataFrame:
    """rows of (item_id, sample_idx, status, score[, method, expected, entropy]); every sample wrote its own text,
    and a logprob-scored one had most of its first token's probability on score tokens."""
    padded = [(*r, *(("decoded" if r[2] == "ok" else "", None, None)[len(r) - 4:])) for r in rows]
    full = [(*r, 10, 1, f"sample {r[1]}: {r[3]}", None, 0.9 if r[4] == "logprobs" else None) for r in padded]
    return pl.DataFrame(full, schema=JUDGMENT_COLUMNS, orient="row",
                        schema_overrides={"score_probs": pl.String, "score_mass": pl.Float64})


def per_item_frame(rows) -> pl.DataFrame:
    """rows of (item_id, score_mean, score_median, expected_mean, n_logprobs, item_status)."""
    return pl.DataFrame(rows, schema=PER_ITEM_SCHEMA, orient="row")


def judgments_from_matrix(matrix) -> pl.DataFrame:
    """Coders × units (None = no ok score) → judgments with sample_idx as coder, units as items."""
    rows = [(f"u{unit:02d}", coder, "ok" if value is not None else "unparseable", value)
            for coder, values in enumerate(matrix) for unit, value in enumerate(values)]
    return judgments(rows)


# --- rounding and item scores -------------------------------------------------------------------

def test_round_score_is_half_up_and_clipped():
    assert round_score([0.2, 1.49, 1.5, 2.5, 3.5, 4.5, 5.7, 3.0]).tolist() == [1, 1, 2, 3, 4, 5, 5, 3]
    assert round_score(pl.Series([2.5, 3.4999])).tolist() == [3, 3]
    with pytest.raises(ValueError, match="finite"):
        round_score([1.0, None])


def test_item_scores_picks_the_column_and_scored_items():
    frame = per_item_frame([("a", 2.5, 2.0, 2.7, 2, "scored"), ("b", 4.0, 4.0, None, 0, "scored"),
                            ("c", None, None, None, 0, "unscored")])
    assert item_scores(frame).rows() == [("a", 2.5), ("b", 4.0)]
    assert item_scores(frame, "median").rows() == [("a", 2.0), ("b", 4.0)]
    assert item_scores(frame, "expected").rows() == [("a", 2.7)]
    assert item_scores(frame)["score"].dtype == pl.Float64
    with pytest.raises(ValueError, match="expected.*mean.*median"):
        item_scores(frame, "max")
    assert set(SCORE_COLUMNS) == {"mean", "median", "expected", "strength"}
    with pytest.raises(ValueError, match="--score strength is a pairs run's Bradley-Terry strength"):
        item_scores(frame, "strength")


def test_expected_score_without_logprob_judgments_says_how_to_get_them():
    frame = per_item_frame([("a", 2.5, 2.0, None, 0, "scored"), ("b", None, None, None, 0, "unscored")])
    with pytest.raises(ValueError, match="needs logprob judgments and none of the run's 2 items") as caught:
        item_scores(frame, "expected")
    assert "--top-logprobs 20 --max-tokens 1" in str(caught.value) and str(caught.value).endswith("mean, median")
    with pytest.raises(ValueError, match="none .no item is scored"):
        item_scores(frame.filter(pl.col("item_id") == "b"), "expected")


def test_item_scores_accepts_aggregate_per_item():
    frame = per_item(judgments([("a", 0, "ok", 2), ("a", 1, "ok", 3), ("b", 0, "error", None)]))
    assert item_scores(frame).rows() == [("a", 2.5)]


def test_item_field_reads_columns_and_extra_fields():
    items = pl.DataFrame({"id": ["a", "b"], "domain": ["x", "y"], "extra": [{"level": 3}, {"level": 5}]})
    assert item_field(items, "domain").rows() == [("a", "x"), ("b", "y")]
    assert item_field(items, "level").rows() == [("a", 3), ("b", 5)]
    with pytest.raises(ValueError, match="'grade'.*domain.*level"):
        item_field(items, "grade")


# --- distribution and failures ------------------------------------------------------------------

PER_ITEM = per_item_frame([("a", 1.0, 1.0, None, 0, "scored"), ("b", 2.5, 2.5, None, 0, "scored"),
                           ("c", 2.4, 2.0, None, 0, "scored"), ("d", 5.0, 5.0, None, 0, "scored"),
                           ("e", None, None, None, 0, "unscored")])
ITEMS = pl.DataFrame({"id": ["a", "b", "c", "d", "e"], "domain": ["A", "A", "B", None, "B"],
                      "extra": [{"level": 1}, {"level": 3}, {"level": 3}, {"level": 5}, {"level": 2}]})


def test_score_distribution_overall_and_by_group():
    result = score_distribution(PER_ITEM, ITEMS)
    assert result["n"] == 4
    assert result["histogram"] == {"1": 1, "2": 1, "3": 1, "4": 0, "5": 1}  # 2.5 → 3, 2.4 → 2
    assert result["mean"] == pytest.approx(10.9 / 4)
    assert result["std"] == pytest.approx(np.std([1.0, 2.5, 2.4, 5.0], ddof=1))
    groups = {g["group"]: g for g in result["groups"]}
    assert set(groups) == {"A", "B", None}  # unscored e (domain B) is not counted
    assert (groups["A"]["n"], groups["A"]["mean"], groups["A"]["histogram"]["3"]) == (2, 1.75, 1)
    assert (groups["B"]["n"], groups["B"]["mean"], groups["B"]["std"]) == (1, 2.4, None)
    assert any("no 'domain'" in note for note in result["notes"])


def test_score_distribution_by_extra_field_and_missing_field():
    by_level = score_distribution(PER_ITEM, ITEMS, by="level")
    assert [(g["group"], g["n"]) for g in by_level["groups"]] == [(1, 1), (3, 2), (5, 1)]
    missing = score_distribution(PER_ITEM, ITEMS, by="grade")
    assert missing["groups"] is None and "no groups" in missing["notes"][0]
    assert score_distribution(PER_ITEM, ITEMS, by=None)["groups"] is None


def test_score_distribution_without_scored_items_gives_none():
    result = score_distribution(PER_ITEM.filter(pl.col("item_id") == "e"), ITEMS)
    assert (result["n"], result["mean"], result["std"]) == (0, None, None)
    assert "undefined" in result["notes"][0]


def test_failure_rates_counts_statuses_and_unscored_items():
    frame = judgments([("a", 0, "ok", 2), ("a", 1, "ok", 3), ("b", 0, "truncated", None), ("b", 1, "ok", 4),
                       ("c", 0, "error", None), ("c", 1, "unparseable", None)])
    result = failure_rates(frame)
    assert result["counts"] == {"ok": 3, "unparseable": 1, "truncated": 1, "error": 1}
    assert result["fractions"] == {"ok": 0.5, "unparseable": 1 / 6, "truncated": 1 / 6, "error": 1 / 6}
    assert (result["n_failed"], result["failed_fraction"], result["n_items"]) == (3, 0.5, 3)
    assert (result["n_items_without_ok"], result["items_without_ok"]) == (1, ["c"])
    empty = failure_rates(frame.clear())
    assert empty["fractions"] is None and empty["failed_fraction"] is None and empty["notes"]


def test_items_without_ok_are_the_set_difference_in_str_order():
    """failure_rates finds them in one Polars pass (Python sets of every id took 3 s at 2M items): the same ids,
    in the order sorted() gives them, for ids beyond ASCII and ids that sort differently as text and as numbers."""
    ids = ["b", "B", "é", "z", "Ω", "10", "9", "a b", "", "日本", "e\u0301", "😀"]
    rows = [(item, idx, "ok" if (n + idx) % 3 == 0 else "error", 1 if (n + idx) % 3 == 0 else None)
            for n, item in enumerate(ids) for idx in range(2)]
    frame = judgments(rows)
    ok = {item for item, _, status, _ in rows if status == "ok"}
    result = failure_rates(frame)
    assert result["items_without_ok"] == sorted(set(ids) - ok) and result["n_items"] == len(ids)
    assert result["n_items_without_ok"] == len(set(ids) - ok) > 2


# --- self-consistency ---------------------------------------------------------------------------

def test_alpha_is_one_when_samples_agree_and_items_differ():
    result = self_consistency(judgments_from_matrix([[1, 2, 3, 4, 5, 2], [1, 2, 3, 4, 5, 2], [1, 2, 3, 4, 5, 2]]),
                              n_resamples=50)
    assert result["alpha"]["value"] == pytest.approx(1.0)
    assert (result["n_units"], result["n_coders"], result["mean_item_std"]) == (6, 3, 0.0)


def test_alpha_on_two_values_split_within_every_item_is_minus_half():
    # two units, each (1, 2): coincidences o12 = o21 = 2, n1 = n2 = 2, n = 4:
    # α = 1 - (n - 1) Σ o δ² / Σ n_c n_k δ² = 1 - 3·4d / 8d = -0.5, whatever the metric
    result = self_consistency(judgments_from_matrix([[1, 1], [2, 2]]), n_resamples=0)
    assert result["alpha"]["value"] == pytest.approx(-0.5)
    assert result["mean_item_std"] == pytest.approx(0.5)


def test_alpha_matches_krippendorffs_textbook_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units, ordinal α = .815
    # (unit 12 has one value only, so it is not pairable and drops out)
    n = None
    matrix = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
              [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    result = self_consistency(judgments_from_matrix(matrix), n_resamples=200)
    assert result["alpha"]["value"] == pytest.approx(0.815, abs=5e-4)
    assert result["n_units"] == 11
    assert result["alpha"]["low"] <= result["alpha"]["value"] <= result["alpha"]["high"]


def test_alpha_undefined_with_one_sample_per_item():
    result = self_consistency(judgments([("a", 0, "ok", 1), ("b", 0, "ok", 4), ("c", 0, "ok", 5)]))
    assert result["alpha"] is None and result["mean_item_std"] is None
    assert any("one ok sample per item" in note for note in result["notes"])


def test_alpha_undefined_for_constant_scores_and_single_item():
    constant = self_consistency(judgments_from_matrix([[3, 3, 3], [3, 3, 3]]))
    assert constant["alpha"] is None and any("same value" in note for note in constant["notes"])
    assert constant["mean_item_std"] == 0.0
    single = self_consistency(judgments_from_matrix([[1, 4], [2, None]]))
    assert single["alpha"] is None and any("1 item(s) with 2+" in note for note in single["notes"])


VARIED = [[1, 2, 3, 4, 5, 2], [1, 2, 3, 4, 5, 2], [1, 3, 3, 4, 4, 2]]  # samples × items; α well defined


def test_identical_raw_outputs_leave_agreement_unmeasured():
    # a server that ignores temperature: every item's samples repeat one output
    frame = judgments_from_matrix([VARIED[0]] * 3).with_columns(raw_text=pl.format("<score>{}</score>", "score"))
    result = self_consistency(frame, n_resamples=50)
    assert result["alpha"] is None and result["mean_item_std"] is None
    assert result["n_identical_units"] == result["n_units"] == 6
    assert ("alpha is undefined: all 6 items' samples are identical: the backend may ignore temperature or sampling; "
            "agreement was not measured") in result["notes"]
    assert "mean_item_std is undefined: every item's samples are identical (see alpha)" in result["notes"]
    greedy = self_consistency(frame, temperature=0.0, n_resamples=0)
    assert any("the run decodes greedily (temperature 0)" in n for n in greedy["notes"])


def test_argmax_of_one_distribution_is_not_agreement():
    # logprob scoring that took every sample's score from the same first-token distribution
    rows = [(f"u{unit}", idx, "ok", score, "logprobs", score + 0.1, 0.5)
            for unit, score in enumerate([1, 3, 5, 2]) for idx in range(3)]
    frame = judgments(rows).with_columns(
        score_probs=pl.format("[p of item {}]", "item_id"), score_mass=pl.lit(0.9),
        raw_text=pl.format("{} sampled", "sample_idx"))  # the sampled tokens differed, the scores could not
    assert identical_samples(frame)["identical"].all() and not identical_samples(frame)["one_output"].any()
    result = self_consistency(frame, n_resamples=0)
    assert result["alpha"] is None and result["mean_item_std"] is None
    assert ("alpha is undefined: all 4 items' samples are identical: each item's scores are the argmax of one logprob "
            "distribution, which sampling does not change; agreement was not measured") in result["notes"]
    decoded = frame.with_columns(score_method=pl.lit("decoded"))  # each sample's own answer: measured
    assert self_consistency(decoded, n_resamples=0)["alpha"]["value"] == pytest.approx(1.0)


def test_some_identical_items_are_counted_in_a_note():
    frame = judgments_from_matrix(VARIED).with_columns(
        raw_text=pl.when(pl.col("item_id").is_in(["u00", "u03"])).then(pl.lit("same")).otherwise("raw_text"))
    result = self_consistency(frame, n_resamples=0)
    assert result["alpha"]["value"] > 0.5 and result["n_identical_units"] == 2
    assert "2 of the 6 items with 2+ ok samples (33%) have identical samples" in " ".join(result["notes"])


def test_score_mass_summarises_logprob_judgments():
    frame = judgments([("a", 0, "ok", 2, "logprobs", 2.1, 0.2), ("a", 1, "ok", 3, "logprobs", 2.9, 0.6),
                       ("b", 0, "ok", 4)]).with_columns(score_mass=pl.Series([0.9, 0.5, None]))
    mass = self_consistency(frame, n_resamples=0)["score_mass"]
    assert (mass["n"], mass["mean"], mass["min"], mass["median"]) == (2, pytest.approx(0.7), 0.5, pytest.approx(0.7))
    assert list(mass["by_method"]) == ["logprobs"] and mass["by_method"]["logprobs"]["n"] == 2


def test_score_mass_is_reported_per_method():
    frame = judgments([("a", 0, "ok", 2, "constrained", 2.1, 0.2), ("b", 0, "ok", 3, "constrained", 2.9, 0.6),
                       ("c", 0, "ok", 4, "logprobs", 3.9, 0.3), ("d", 0, "unparseable", None, "", None, None)]
                      ).with_columns(score_mass=pl.Series([0.02, 0.04, 0.9, 0.1]))
    by_method = self_consistency(frame, n_resamples=0)["score_mass"]["by_method"]
    assert {m: (part["n"], part["median"]) for m, part in by_method.items()} == {
        "constrained": (2, pytest.approx(0.03)), "failed": (1, pytest.approx(0.1)), "logprobs": (1, 0.9)}
    assert self_consistency(judgments([("a", 0, "ok", 2)]))["score_mass"] is None


def test_all_notes_names_the_part_of_each_note():
    stats = {"notes": ["top"], "reference": {"notes": ["spearman is undefined: x"]}, "run": {"model": "m"},
             "pass_rate": {"notes": ["spearman is undefined: y"]}, "calibration": None}
    assert all_notes(stats) == ["top", "reference: spearman is undefined: x", "pass_rate: spearman is undefined: y"]


def test_entropy_averages_logprob_judgments_only():
    frame = judgments([("a", 0, "ok", 2, "logprobs", 2.1, 0.2), ("a", 1, "ok", 3, "logprobs", 2.9, 0.6),
                       ("a", 2, "ok", 3, "decoded", None, None), ("a", 3, "unparseable", None, "", None, 9.0)])
    result = self_consistency(frame)
    assert (result["mean_entropy"], result["n_logprob_judgments"]) == (pytest.approx(0.4), 2)
    assert self_consistency(judgments([("a", 0, "ok", 2), ("a", 1, "ok", 3)]))["mean_entropy"] is None


# --- agreement with references ------------------------------------------------------------------

def test_perfect_agreement():
    scores = [1.0, 2.0, 3.0, 4.0, 5.0] * 2
    result = reference_agreement(scores, [1, 2, 3, 4, 5] * 2, n_resamples=100)
    for name in ("spearman", "kendall", "qwk"):
        assert result[name] == {"value": pytest.approx(1.0), "low": pytest.approx(1.0), "high": pytest.approx(1.0)}
    assert result["confusion_matrix"] == (2 * np.eye(5, dtype=int)).tolist()
    assert (result["n"], result["notes"]) == (10, [])


def test_reversed_ranking():
    result = reference_agreement([5, 4, 3, 2, 1], [1, 2, 3, 4, 5], n_resamples=0)
    assert result["spearman"]["value"] == pytest.approx(-1.0)
    assert result["kendall"]["value"] == pytest.approx(-1.0)
    assert result["qwk"]["value"] == pytest.approx(-1.0)


def test_known_confusion_matrix_and_hand_computed_statistics():
    # rounded scores 1, 3, 3, 4, 5 against reference 1..5: one disagreement (reference 2, score 3)
    result = reference_agreement([1.2, 2.6, 2.5, 4.4, 4.5], [1, 2, 3, 4, 5], n_resamples=100)
    assert result["confusion_matrix"] == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0],
                                          [0, 0, 0, 0, 1]]
    assert result["spearman"]["value"] == pytest.approx(0.9)  # Σd² = 2: 1 - 6·2/(5·24)
    assert result["kendall"]["value"] == pytest.approx(0.8)  # 9 concordant, 1 discordant pair
    assert result["qwk"]["value"] == pytest.approx(18 / 19)  # Σw·O = 1, Σw·E = 95/5 = 19 (w = (i-j)²)
    assert result["spearman"]["low"] is None and any("a bootstrap needs 10" in n for n in result["notes"])


def test_reference_outside_labels_skips_kappa_but_not_correlations():
    result = reference_agreement([1.0, 2.0, 3.5, 4.0, 5.0], [3, 5, 6, 8, 9], n_resamples=0)
    assert result["spearman"]["value"] == pytest.approx(1.0)
    assert result["qwk"] is None and result["confusion_matrix"] is None
    assert any("outside [1, 2, 3, 4, 5]" in note for note in result["notes"])


def test_only_complete_pairs_count():
    result = reference_agreement(pl.Series([1.0, None, 3.0, 4.0, 2.0]), pl.Series([1, 2, None, 4, 2]),
                                 n_resamples=0)
    assert result["n"] == 3 and result["spearman"]["value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="length"):
        reference_agreement([1, 2], [1, 2, 3])


def test_constant_scores_and_too_few_pairs_give_none():
    constant = reference_agreement([3.0] * 6, [1, 2, 3, 4, 5, 5], n_resamples=0)
    assert constant["spearman"] is None and constant["kendall"] is None
    assert any("spearman is undefined: scores constant" in note for note in constant["notes"])
    two = reference_agreement([1.0, 2.0], [1, 2], n_resamples=0)
    assert two["spearman"] is None and two["qwk"] is None and two["confusion_matrix"] == \
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0] * 5, [0] * 5, [0] * 5]


def test_pass_rate_agreement_hand_computed():
    result = pass_rate_agreement([1, 2, 3, 4, 5], [1.0, 0.8, 0.5, 0.0, 0.0], n_resamples=0)
    # pass-rate ranks in score order 5, 4, 3, 1.5, 1.5: ρ = -9.5 / √(10·9.5)
    assert result["spearman"]["value"] == pytest.approx(-9.5 / math.sqrt(95))
    assert (result["n"], result["n_unsolved"], result["auroc"]["value"]) == (5, 2, 1.0)
    # unsolved scores 2, 4 against solved 1, 3: 3 of 4 pairs ordered
    assert pass_rate_agreement([1, 2, 3, 4], [0.5, 0.0, 1.0, 0.0], n_resamples=0)["auroc"]["value"] == 0.75
    assert pass_rate_agreement([1, 2, 3, 4], [0.9, 0.5, 0.3, 0.0], unsolved_at=0.4,
                               n_resamples=0)["n_unsolved"] == 2


def test_auroc_with_one_class_is_none():
    result = pass_rate_agreement([1, 2, 3, 4], [0.2, 0.5, 0.7, 0.9], n_resamples=0)
    assert result["auroc"] is None and result["n_unsolved"] == 0
    assert any("one class only" in note for note in result["notes"])
    with pytest.raises(ValueError, match=r"\[0, 1\]; 1 of 2 do not \(e.g. 1.5\)"):
        pass_rate_agreement([1, 2], [0.5, 1.5])


# --- bootstrap ----------------------------------------------------------------------------------

def _sample(n=60, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, x + rng.normal(size=n)


def test_bootstrap_is_seeded_and_contains_the_estimate():
    x, y = _sample()
    first = bootstrap_interval(spearman, x, y, n_resamples=300, seed=7)
    assert first == bootstrap_interval(spearman, x, y, n_resamples=300, seed=7)
    assert first != bootstrap_interval(spearman, x, y, n_resamples=300, seed=8)
    low, high = first
    assert low < spearman(x, y) < high and high - low < 0.6


def test_bootstrap_none_when_too_few_or_degenerate():
    x, y = _sample()
    assert bootstrap_interval(spearman, x[:9], y[:9]) is None
    assert bootstrap_interval(spearman, np.ones(20), y[:20]) is None


def test_headline_interval_in_results():
    x, y = _sample(n=80)
    passed = (y < 0).astype(float)  # low y: solved
    result = pass_rate_agreement(x, passed, n_resamples=200, seed=1)
    auroc = result["auroc"]
    assert auroc["low"] <= auroc["value"] <= auroc["high"]
    assert result == pass_rate_agreement(x, passed, n_resamples=200, seed=1)


def test_interval_none_when_some_resample_is_undefined():
    # one unsolved item among 12: many resamples miss it, so AUROC has no interval (and says why)
    result = pass_rate_agreement(np.arange(12.0), [1.0] * 11 + [0.0], n_resamples=100)
    assert result["auroc"]["value"] == 1.0 and result["auroc"]["low"] is None
    assert any("auroc: no 95% interval: undefined on" in note for note in result["notes"])


def test_the_histogram_says_which_score_it_counts(tmp_path, sample_rows):
    """`stats --score expected` showed rounded expected scores as rows "score 1".."score 5", the heading of the
    judge's own (sampled) scores."""
    from conftest import invoke, write_jsonl

    from curate.config import RunConfig
    from curate.engine import score

    logprobs = per_item_frame([("a", 3.0, 3.0, 2.7, 1, "scored")])
    assert "not sampled" in score_distribution(logprobs, ITEMS, "expected")["histogram_of"]
    assert score_distribution(PER_ITEM, ITEMS)["histogram_of"] == "rounded mean of the sampled scores"
    data = write_jsonl(tmp_path / "data.jsonl", sample_rows[:8])
    score(RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"), "top_logprobs": 20,
                               "max_tokens": 1, "template": "difficulty/intensity_score_only"}))
    for kind, heading in (("expected", "items per rounded expected score (logprob-weighted, not sampled)"),
                          ("mean", "items per rounded mean of the sampled scores")):
        result = invoke("stats", tmp_path / "run", "--score", kind, "--resamples", 0)
        assert result.exit_code == 0, result.output
        text = " ".join(line.strip("│ ") for line in result.stdout.splitlines())
        assert heading in " ".join(text.split()) and "score 1" not in text


def test_a_bootstrap_over_many_items_draws_its_resamples_in_bounded_batches():
    """scipy drew every resample's indices at once (n_resamples x items int64s): `curate stats` on 2M items asked for
    14.9 GiB and failed (BENCHMARKS (i)). Here 1,000 resamples of 200,000 items would be 1.6 GB at once."""
    import tracemalloc

    from curate.stats.metrics import headline

    x = np.random.default_rng(0).normal(size=200_000)
    tracemalloc.start()
    try:
        stat = headline("mean", np.mean, (x,), [])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stat["low"] < stat["value"] < stat["high"]
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"
