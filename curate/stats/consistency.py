"""Self-consistency of a run: do an item's samples agree? Pure functions over judgments (no I/O).

Definitions
    self-consistency Krippendorff's α (ordinal) over the ok scores, items as units, sample_idx as
                     coders; only items with ≥ 2 ok samples can be paired, so only they are units
                     (α uses the values within a unit, not coder identity). Mean per-item std is the
                     population std of an item's ok scores, averaged over those same items.
    identical        an item's ok samples are identical when they share one raw output, or when all
                     were scored from logprobs with one distribution and one score (an argmax
                     cannot differ between samples). When every unit's samples are identical,
                     nothing was sampled (a backend that ignores temperature, greedy decoding, or
                     scores read from one distribution): α and the mean std are undefined, since
                     agreement was not measured; when some are, a note gives their fraction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from curate.parse import Status
from curate.stats.aggregate import with_distribution
from curate.stats.metrics import N_RESAMPLES, headline, ordinal_alpha


def identical_samples(judgments: pl.DataFrame) -> pl.DataFrame:
    """item_id, `identical` and `one_output` for each item with 2+ ok samples (see "identical" above)."""
    ok = judgments.filter(pl.col("status") == Status.OK)
    from_one_distribution = ((pl.col("score_method") == "logprobs").all() & pl.col("score_probs").is_not_null().all()
                             & (pl.col("score_probs").n_unique() == 1) & (pl.col("score").n_unique() == 1))
    return (ok.group_by("item_id").agg(pl.len().alias("n"), (pl.col("raw_text").n_unique() == 1).alias("one_output"),
                                       from_one_distribution.alias("one_distribution"))
            .filter(pl.col("n") >= 2)
            .select("item_id", (pl.col("one_output") | pl.col("one_distribution")).alias("identical"), "one_output")
            .sort("item_id"))


def _identical_why(identical: pl.DataFrame, temperature: float | None, notes: list[str]) -> str | None:
    """Why agreement was not measured (every unit's samples identical), or None; a note when some are."""
    n, same = identical.height, int(identical["identical"].sum())
    if n and same == n:
        cause = ("the run decodes greedily (temperature 0)" if temperature == 0 else
                 "the backend may ignore temperature or sampling" if identical["one_output"].all() else
                 "each item's scores are the argmax of one logprob distribution, which sampling does not change")
        return f"all {n} items' samples are identical: {cause}; agreement was not measured"
    if same:
        notes.append(f"{same} of the {n} items with 2+ ok samples ({same / n:.0%}) have identical samples (one raw "
                     "output, or logprob scores from one distribution): α counts them as agreement")
    return None


def self_consistency(judgments: pl.DataFrame, *, temperature: float | None = None, n_resamples: int = N_RESAMPLES,
                     seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """α (ordinal) of ok scores across samples, mean per-item std, mean logprob entropy.

    `judgments` needs JUDGMENT_COLUMNS; `temperature` (the run's, when known) explains identical samples."""
    notes: list[str] = []
    ok = judgments.filter(pl.col("status") == Status.OK)
    counts = ok.group_by("item_id").len()
    pairable = counts.filter(pl.col("len") >= 2)["item_id"]
    wide = ok.filter(pl.col("item_id").is_in(pairable.implode())).pivot(
        on="sample_idx", index="item_id", values="score").sort("item_id")
    matrix = wide.drop("item_id").cast(pl.Float64).to_numpy().T  # coders × units
    identical = identical_samples(judgments)
    not_measured = _identical_why(identical, temperature, notes) if pairable.len() >= 2 else None
    why = None
    if counts.height and counts["len"].max() < 2:
        why = "one ok sample per item (α compares samples of an item)"
    elif pairable.len() < 2:
        why = f"{pairable.len()} item(s) with 2+ ok samples, need 2"
    elif not_measured:
        why = not_measured
    elif np.unique(matrix[np.isfinite(matrix)]).size < 2:
        why = "every ok score is the same value (no variation)"
    columns = (np.arange(matrix.shape[1]),)
    alpha = headline("alpha", lambda units: ordinal_alpha(matrix[:, units]), columns, notes, why,
                     n_resamples=n_resamples, seed=seed, level=level)
    stds = ok.filter(pl.col("item_id").is_in(pairable.implode())).group_by("item_id").agg(
        pl.col("score").std(ddof=0))["score"]
    std_why = "no item has 2+ ok samples" if stds.len() == 0 else \
        "every item's samples are identical (see alpha)" if not_measured else None
    if std_why:
        notes.append(f"mean_item_std is undefined: {std_why}")
    entropy = judgments.filter(with_distribution())["score_entropy"].drop_nulls()
    if entropy.len() == 0:
        notes.append("mean_entropy is undefined: no ok judgment was scored from logprobs")
    return {"alpha": alpha, "n_units": int(pairable.len()), "n_coders": int(matrix.shape[0]),
            "n_identical_units": int(identical["identical"].sum()),
            "mean_item_std": None if std_why else float(stds.mean()),
            "mean_entropy": float(entropy.mean()) if entropy.len() else None,
            "n_logprob_judgments": entropy.len(), "score_mass": _score_mass(judgments),
            "notes": notes}


def _score_mass(judgments: pl.DataFrame) -> dict[str, Any] | None:
    """The probability judgments with logprobs put on score tokens at all (low: the expected score means
    little, or, for constrained answers, the model would rather have said something else), overall and per
    method ("" for failed judgments)."""
    with_mass = judgments.filter(pl.col("score_mass").is_not_null())
    if with_mass.height == 0:
        return None

    def quantiles(mass: pl.Series) -> dict[str, Any]:
        return {"n": mass.len(), "mean": float(mass.mean()), "min": float(mass.min()),
                "q05": float(mass.quantile(0.05)), "q25": float(mass.quantile(0.25)),
                "median": float(mass.median()), "q75": float(mass.quantile(0.75))}

    by_method = {method or "failed": quantiles(group["score_mass"])
                 for (method,), group in with_mass.sort("score_method").group_by("score_method", maintain_order=True)}
    return {**quantiles(with_mass["score_mass"]), "by_method": by_method}