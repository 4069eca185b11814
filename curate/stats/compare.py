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
Rounding is `curate.stats.metrics.round_score` (half up, clipped to 1..5). α and κ carry a percentile
bootstrap interval over items; an undefined statistic is None with the reason in `notes`.
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
    headline,
    item_scores,
    ordinal_alpha,
    quadratic_kappa,
    round_score,
)


def _alpha_of_pair(a: np.ndarray, b: np.ndarray) -> float:
    return ordinal_alpha(np.vstack([a, b]).astype(float))


def _churn(a: np.ndarray, b: np.ndarray, tau: float) -> dict[str, Any]:
    sft_to_rl = int(((a <= tau) & (b > tau)).sum())
    rl_to_sft = int(((a > tau) & (b <= tau)).sum())
    changed = sft_to_rl + rl_to_sft
    return {"tau": tau, "sft_to_rl": sft_to_rl, "rl_to_sft": rl_to_sft, "changed": changed,
            "fraction": changed / len(a) if len(a) else None}


def compare_runs(per_item_a: pl.DataFrame, per_item_b: pl.DataFrame, score: str = "mean",
                 taus: Sequence[float] = (1, 2, 3, 4), *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> dict[str, Any]:
    """Compare run A with run B (per-item frames of `curate.stats.aggregate.per_item`) on common items."""
    a_scores, b_scores = item_scores(per_item_a, score), item_scores(per_item_b, score)
    joined = a_scores.join(b_scores, on="item_id", how="inner", suffix="_b").sort("item_id")
    a, b = joined["score"].to_numpy(), joined["score_b"].to_numpy()
    n = len(a)
    notes: list[str] = []
    options = {"n_resamples": n_resamples, "seed": seed, "level": level}
    ra, rb = round_score(a), round_score(b)
    why = None
    if n < MIN_PAIRS:
        why = f"{n} items scored in both runs, need {MIN_PAIRS}"
    elif np.unique(np.concatenate([ra, rb])).size < 2:
        why = "every rounded score is the same value (no variation)"
    alpha = headline("alpha", _alpha_of_pair, (ra, rb), notes, why, **options)
    qwk = headline("qwk", quadratic_kappa, (ra, rb), notes, why, **options)
    if n:
        shift = confusion_matrix(ra, rb, labels=list(LABELS)).tolist()
    else:
        shift = [[0] * len(LABELS) for _ in LABELS]
        notes.append("no items scored in both runs: mean_shift and churn fractions are undefined")
    return {
        "score": score,
        "n_common": n,
        "n_only_a": a_scores.join(b_scores, on="item_id", how="anti").height,
        "n_only_b": b_scores.join(a_scores, on="item_id", how="anti").height,
        "alpha": alpha,
        "qwk": qwk,
        "labels": list(LABELS),
        "shift_matrix": shift,
        "mean_shift": float((b - a).mean()) if n else None,
        "churn": [_churn(a, b, tau) for tau in taus],
        "notes": notes,
    }
