"""Verified rollouts → per-item pass rates with Wilson intervals. Pure Polars/SciPy functions, no I/O.

Input: one row per (item_id, sample_idx) with the verifier's verdict in a column `verdict`, one of
    correct, wrong, no_answer   the model's answer: these are the item's attempts. A response with no
                                answer in it is a wrong attempt, not a missing one.
    truncated                   the model ran out of tokens before answering: an attempt that failed.
    error, timeout              the machinery failed (backend, verifier, or its time bound), so nothing is
                                known about the model: left out of the attempts, counted in n_error and
                                n_timeout, and worth a retry.

Per item
    attempts      n_correct + n_wrong + n_no_answer + n_truncated
    pass_rate     n_correct / attempts
    pass_low/high the Wilson score interval at `confidence` (no continuity correction): the bounds
                  `scipy.stats.binomtest(k, n).proportion_ci(method="wilson")` gives, computed for all items
                  at once (binomtest per item took 6.3 s for 10,000 items on the project's 2-core machine; the
                  vectorised formula 1 ms).
    pass_status   "measured" (at least one attempt) or "no_countable_attempt" (every rollout failed as error
                  or timeout): then pass_rate and its interval are null, never 0.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import polars as pl

from curate.errors import ConfigError, DataError
from curate.stats.frames import require_columns

COUNTABLE = ("correct", "wrong", "no_answer", "truncated")
MACHINE_FAILURES = ("error", "timeout")
VERDICTS = (*COUNTABLE, *MACHINE_FAILURES)
PASS_STATUSES = ("measured", "no_countable_attempt")
ROLLOUT_COLUMNS = ("item_id", "sample_idx", "verdict")

PER_ITEM_SCHEMA = {"item_id": pl.String, "n_rollouts": pl.Int64, **{f"n_{v}": pl.Int64 for v in VERDICTS},
                   "attempts": pl.Int64, "pass_rate": pl.Float64, "pass_low": pl.Float64, "pass_high": pl.Float64,
                   "pass_status": pl.String}


def check_rollouts(rollouts: pl.DataFrame, where: str = "rollouts") -> None:
    """DataError naming `where` when the rollouts lack a column, hold nulls, an unknown verdict, or an
    (item_id, sample_idx) pair twice."""
    require_columns(rollouts, ROLLOUT_COLUMNS, where)
    if unknown := sorted(set(rollouts["verdict"].cast(pl.String).unique().to_list()) - set(VERDICTS)):
        count = rollouts.filter(pl.col("verdict").cast(pl.String).is_in(unknown)).height
        raise DataError(f"{where}: {count} row(s) have a verdict outside {list(VERDICTS)}: {unknown[:5]}")
    repeated = rollouts.group_by("item_id", "sample_idx").len().filter(pl.col("len") > 1)
    if repeated.height:
        first = repeated.sort("item_id", "sample_idx").row(0, named=True)
        raise DataError(f"{where}: {repeated.height} (item_id, sample_idx) pair(s) occur more than once, e.g. "
                        f"({first['item_id']!r}, {first['sample_idx']}); keep one verdict per rollout")


def wilson_interval(correct: np.ndarray, attempts: np.ndarray,
                    confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score bounds for `correct` successes of `attempts` trials, elementwise; NaN where attempts is 0."""
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    k, n = np.asarray(correct, dtype=float), np.asarray(attempts, dtype=float)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)  # the standard library's: scipy.stats takes a second to import
    # Newcombe's form, as scipy.stats.binomtest computes it: the bounds are exactly 0 at k = 0 and 1 at k = n.
    with np.errstate(divide="ignore", invalid="ignore"):
        center = (2 * k + z * z) / (2 * (n + z * z))
        delta = z / (2 * (n + z * z)) * np.sqrt(4 * k * (n - k) / n + z * z)
    low, high = np.where(k == 0, 0.0, center - delta), np.where(k == n, 1.0, center + delta)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def pass_rates(rollouts: pl.DataFrame, confidence: float = 0.95, where: str = "rollouts") -> pl.DataFrame:
    """One row per item (PER_ITEM_SCHEMA), sorted by item_id; see the module docstring."""
    check_rollouts(rollouts, where)
    verdict = pl.col("verdict").cast(pl.String)
    counts = (rollouts.group_by(pl.col("item_id").cast(pl.String))
              .agg(pl.len().cast(pl.Int64).alias("n_rollouts"),
                   *[(verdict == v).sum().cast(pl.Int64).alias(f"n_{v}") for v in VERDICTS])
              .with_columns(pl.sum_horizontal(*[f"n_{v}" for v in COUNTABLE]).alias("attempts"))
              .sort("item_id"))
    low, high = wilson_interval(counts["n_correct"].to_numpy(), counts["attempts"].to_numpy(), confidence)
    measured = pl.col("attempts") > 0
    return (counts.with_columns(pl.Series("pass_low", low), pl.Series("pass_high", high))
            .with_columns(pl.when(measured).then(pl.col("n_correct") / pl.col("attempts")).alias("pass_rate"),
                          pl.when(measured).then(pl.col("pass_low")).alias("pass_low"),
                          pl.when(measured).then(pl.col("pass_high")).alias("pass_high"),
                          pl.when(measured).then(pl.lit(PASS_STATUSES[0])).otherwise(pl.lit(PASS_STATUSES[1]))
                          .alias("pass_status"))
            .select(list(PER_ITEM_SCHEMA)).cast(PER_ITEM_SCHEMA))


def summarize(per_item: pl.DataFrame) -> dict[str, Any]:
    """Counts over a `pass_rates` frame: items by pass status, measured items that were solved by every
    attempt, by some, by none, the rollouts by verdict, and the mean pass rate over measured items (null
    when none is measured)."""
    measured = per_item.filter(pl.col("pass_status") == "measured")
    return {
        "items": per_item.height,
        "measured": measured.height,
        "no_countable_attempt": per_item.height - measured.height,
        "solved_all": measured.filter(pl.col("n_correct") == pl.col("attempts")).height,
        "solved_some": measured.filter((pl.col("n_correct") > 0) & (pl.col("n_correct") < pl.col("attempts"))).height,
        "solved_none": measured.filter(pl.col("n_correct") == 0).height,
        "rollouts": {v: int(per_item[f"n_{v}"].sum()) for v in VERDICTS},
        "mean_pass_rate": measured["pass_rate"].mean() if measured.height else None,
    }
