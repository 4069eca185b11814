"""Judgments → per-item statistics and a run summary. Pure Polars functions, no I/O.

Per item, statistics are over its `ok` judgments only; an item with none is `unscored`, with null
statistics (never a default number). `score_mode` breaks ties toward the lower score, and
`score_std` is the population std over the item's ok samples (0 for a single sample).
`expected_mean` and `entropy_mean` average the judgments with a score distribution (`with_distribution`,
`n_logprobs` of them).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from curate.parse import FAILED, METHODS, MIN_SCORE_MASS, SCORE_MAX, SCORE_MIN, Status

AGGREGATED_COLUMNS = ("item_id", "sample_idx", "status", "score", "score_method", "expected_score", "score_entropy",
                      "score_mass", "prompt_tokens", "completion_tokens")


def with_distribution() -> pl.Expr:
    """Ok judgments whose score distribution (expected score, entropy) means something: those whose score
    tokens held enough of the probability at the score position (greedy logprob scores, and sampled ones,
    scored by the digit each sample drew), and every constrained one, whose answer that distribution is."""
    return (pl.col("status") == Status.OK) & (
        (pl.col("score_mass") >= MIN_SCORE_MASS)
        | ((pl.col("score_method") == "constrained") & pl.col("score_mass").is_not_null()))


def per_item(judgments: pl.DataFrame) -> pl.DataFrame:
    ok_score = pl.col("score").filter(pl.col("status") == Status.OK)
    ok_expected = pl.col("expected_score").filter(with_distribution())
    counts = [(pl.col("status") == status).sum().alias(f"n_{status}") for status in Status]
    return (
        judgments.group_by("item_id")
        .agg(
            pl.len().alias("n_samples"),
            *counts,
            ok_score.mean().alias("score_mean"),
            ok_score.median().alias("score_median"),
            ok_score.mode().min().alias("score_mode"),
            ok_score.std(ddof=0).alias("score_std"),
            ok_score.min().alias("score_min"),
            ok_score.max().alias("score_max"),
            ok_expected.len().alias("n_logprobs"),
            ok_expected.mean().alias("expected_mean"),
            pl.col("score_entropy").filter(with_distribution()).mean().alias("entropy_mean"),
        )
        .with_columns(
            pl.sum_horizontal([pl.col(f"n_{s}") for s in FAILED]).alias("n_failed"),
            pl.when(pl.col(f"n_{Status.OK}") > 0).then(pl.lit("scored")).otherwise(pl.lit("unscored"))
            .alias("item_status"),
        )
        .sort("item_id")
    )


def summary(judgments: pl.DataFrame, items: pl.DataFrame) -> dict[str, Any]:
    """Run-level counts; `items` is the per-item frame of `per_item`."""
    n = judgments.height
    status_counts = {str(s): int((judgments["status"] == s).sum()) for s in Status}
    failed = sum(status_counts[str(s)] for s in FAILED)
    scores = judgments.filter(pl.col("status") == Status.OK)["score"]
    histogram = {str(k): int((scores == k).sum()) for k in range(SCORE_MIN, SCORE_MAX + 1)}
    scored = items.filter(pl.col("item_status") == "scored")
    return {
        "items": items.height,
        "items_scored": scored.height,
        "items_unscored": items.height - scored.height,
        "judgments": n,
        "status_counts": status_counts,
        "failed": failed,
        "failure_fraction": failed / n if n else None,  # undefined for a run with no judgments
        "score_histogram": histogram,
        "score_methods": {m: int(((judgments["status"] == Status.OK) & (judgments["score_method"] == m)).sum())
                          for m in METHODS},
        "mean_item_score": scored["score_mean"].mean() if scored.height else None,
        "prompt_tokens": int(judgments["prompt_tokens"].sum()),
        "completion_tokens": int(judgments["completion_tokens"].sum()),
    }
