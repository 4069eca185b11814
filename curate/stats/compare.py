"""Two runs over the same items compared: agreement, shifts, and SFT/RL churn. Pure, no I/O.

Items compared are those scored in both runs (an inner join of `curate.stats.metrics.item_scores` on
item_id); `n_only_a` / `n_only_b` count items scored in one run but not the other (absent from the
other run, or unscored there). An id names the same item in both runs only when the items agree
(`curate.runs.item_differences`).

Definitions
    alpha           Krippendorff's α, ordinal, the two runs as coders, over rounded scores.
    qwk             Cohen's κ with quadratic weights over rounded scores, labels 1..5.
    shift_matrix    5×5 counts, rows = run A's rounded score 1..5, columns = run B's.
    mean_shift      mean of B − A over the unrounded item scores.
    churn           per τ: an item is SFT when its unrounded score ≤ τ and RL otherwise (as the
                    split decides); sft_to_rl counts SFT in A and RL in B, rl_to_sft the reverse,
                    fraction = changed / n_common.
    spearman        Spearman ρ of the two runs' unrounded item scores.
Rounding is `curate.stats.metrics.round_score` (half up, clipped to 1..5). Each run is read by its own item
score unless one is named (a judge run's mean, a pairs run's Bradley-Terry strength); a strength is not on the
1..5 scale, so with a pairs run on either side only ρ is defined (α, κ, the shift matrix, the mean shift and
the churn are None or empty, and a note says why). α, κ and ρ carry a percentile bootstrap interval over items;
an undefined statistic is None with the reason in `notes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import confusion_matrix

from curate.stats.metrics import (
    LABELS,
    MIN_PAIRS,
    N_RESAMPLES,
    correlation_problem,
    headline,
    item_scores,
    on_scale,
    ordinal_alpha,
    quadratic_kappa,
    resolve_score,
    round_score,
    spearman,
)


def _alpha_of_pair(a: np.ndarray, b: np.ndarray) -> float:
    return ordinal_alpha(np.vstack([a, b]).astype(float))


def _churn(a: np.ndarray, b: np.ndarray, tau: float) -> dict[str, Any]:
    sft_to_rl = int(((a <= tau) & (b > tau)).sum())
    rl_to_sft = int(((a > tau) & (b <= tau)).sum())
    changed = sft_to_rl + rl_to_sft
    return {"tau": tau, "sft_to_rl": sft_to_rl, "rl_to_sft": rl_to_sft, "changed": changed,
            "fraction": changed / len(a) if len(a) else None}


def compare_runs(per_item_a: pl.DataFrame, per_item_b: pl.DataFrame, score: str | None = None,
                 taus: Sequence[float] = (1, 2, 3, 4), *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> dict[str, Any]:
    """Compare run A with run B (per-item frames as their tasks aggregate them) on common items; `score` names the
    item score of both, None each run's own."""
    score_a, score_b = resolve_score(per_item_a, score), resolve_score(per_item_b, score)
    a_scores, b_scores = item_scores(per_item_a, score_a), item_scores(per_item_b, score_b)
    joined = a_scores.join(b_scores, on="item_id", how="inner", suffix="_b").sort("item_id")
    a, b = joined["score"].to_numpy(), joined["score_b"].to_numpy()
    n = len(a)
    notes: list[str] = []
    options = {"n_resamples": n_resamples, "seed": seed, "level": level}
    result = {"score": score_a, "score_b": score_b, "n_common": n,
              "n_only_a": a_scores.join(b_scores, on="item_id", how="anti").height,
              "n_only_b": b_scores.join(a_scores, on="item_id", how="anti").height,
              "spearman": headline("spearman", spearman, (a, b), notes,
                                   correlation_problem(a, b, "run A's scores", "run B's scores"), **options),
              "alpha": None, "qwk": None, "labels": list(LABELS), "shift_matrix": None, "mean_shift": None,
              "churn": [], "notes": notes}
    if not (on_scale(score_a) and on_scale(score_b)):
        notes.append("α, κ, the shift matrix, the mean shift and the churn per τ need both runs' scores on the 1..5 "
                     "scale, and Bradley-Terry strengths are not: compare ranks (spearman)")
        return result
    ra, rb = round_score(a), round_score(b)
    why = None
    if n < MIN_PAIRS:
        why = f"{n} items scored in both runs, need {MIN_PAIRS}"
    elif np.unique(np.concatenate([ra, rb])).size < 2:
        why = "every rounded score is the same value (no variation)"
    result["alpha"] = headline("alpha", _alpha_of_pair, (ra, rb), notes, why, **options)
    result["qwk"] = headline("qwk", quadratic_kappa, (ra, rb), notes, why, **options)
    if n:
        result["shift_matrix"] = confusion_matrix(ra, rb, labels=list(LABELS)).tolist()
    else:
        result["shift_matrix"] = [[0] * len(LABELS) for _ in LABELS]
        notes.append("no items scored in both runs: mean_shift and churn fractions are undefined")
    return {**result, "mean_shift": float((b - a).mean()) if n else None,
            "churn": [_churn(a, b, tau) for tau in taus]}
