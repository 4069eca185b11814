"""Isotonic calibration of item scores onto a target scale, and its reliability table.

A `Calibration` maps a judge's item score (e.g. the mean score, or the logprob expected score) to a
target: a reference scale (e.g. MATH level 1..5, increasing in the score) or a pass rate (0..1,
decreasing in the score). It is fitted with scikit-learn's `IsotonicRegression` and stored as that
fit's thresholds only: `apply` interpolates linearly between them and holds the end values beyond
them, which is exactly `IsotonicRegression(out_of_bounds="clip").predict`. It is saved as JSON
(never pickled), written atomically.

Reliability table: predictions are split into `n_bins` equal-width bins over their range (the last
bin closed on the right); per bin, the mean prediction, the mean target and the count. A bin with
no items keeps n = 0 and null means.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.isotonic import IsotonicRegression

from curate.files import write_atomic
from curate.stats.metrics import ArrayLike, as_float

FORMAT = "dereason.calibration/1"
MIN_FIT_PAIRS = 5


@dataclass(frozen=True)
class Calibration:
    x_thresholds: tuple[float, ...]
    y_thresholds: tuple[float, ...]
    target: str  # what the calibrated value means, e.g. "level" or "acc_epoch1"
    score: str  # which item score it takes: "mean", "median" or "expected"
    n_fit: int
    increasing: bool

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x_thresholds, dtype=float), np.asarray(self.y_thresholds, dtype=float)
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"calibration needs as many x as y thresholds, at least one ({len(x)}, {len(y)})")
        if not (np.isfinite(x).all() and np.isfinite(y).all()) or (np.diff(x) <= 0).any():
            raise ValueError("calibration x thresholds must be finite and strictly increasing")
        step = np.diff(y)
        if (self.increasing and (step < 0).any()) or (not self.increasing and (step > 0).any()):
            raise ValueError(f"calibration y thresholds are not {'in' if self.increasing else 'de'}creasing")

    def apply(self, scores: ArrayLike) -> np.ndarray:
        """Calibrated values of `scores` (present, finite), clipped to the fitted range."""
        x = as_float(scores)
        if not np.isfinite(x).all():
            raise ValueError(f"{int((~np.isfinite(x)).sum())} score(s) missing or not finite; drop unscored items")
        return np.interp(x, self.x_thresholds, self.y_thresholds)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data: dict[str, Any] = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a calibration (format {data.get('format')!r}, expected {FORMAT!r})")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"calibration JSON lacks {missing}")
        values = {n: data[n] for n in names}
        values["x_thresholds"] = tuple(float(v) for v in values["x_thresholds"])
        values["y_thresholds"] = tuple(float(v) for v in values["y_thresholds"])
        return cls(**values)

    def save(self, path: str | Path) -> None:
        write_atomic(Path(path), self.to_json() + "\n")  # temp file in the same directory, then os.replace

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def fit_isotonic(scores: ArrayLike, targets: ArrayLike, target: str, score: str,
                 increasing: bool | str = "auto") -> Calibration:
    """Fit score → target isotonically over the pairs where both are present.

    `increasing="auto"` lets scikit-learn choose the direction from the sign of Spearman's ρ (for a
    pass rate it comes out decreasing); pass True for a reference scale that rises with difficulty.
    """
    if increasing not in (True, False, "auto"):
        raise ValueError(f"increasing must be True, False or 'auto', not {increasing!r}")
    x, y = as_float(scores), as_float(targets)
    if len(x) != len(y):
        raise ValueError(f"scores and targets differ in length: {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < MIN_FIT_PAIRS:
        raise ValueError(f"isotonic calibration needs at least {MIN_FIT_PAIRS} (score, {target}) pairs with both "
                         f"present; got {int(keep.sum())}")
    constant = [name for name, v in (("scores", x[keep]), (target, y[keep])) if np.unique(v).size < 2]
    if increasing == "auto" and constant:
        raise ValueError(f"cannot choose a direction: {' and '.join(constant)} constant; pass increasing=True/False")
    model = IsotonicRegression(increasing=increasing, out_of_bounds="clip").fit(x[keep], y[keep])
    return Calibration(x_thresholds=tuple(float(v) for v in model.X_thresholds_),
                       y_thresholds=tuple(float(v) for v in model.y_thresholds_),
                       target=target, score=score, n_fit=int(keep.sum()), increasing=bool(model.increasing_))


def reliability_table(calibrated: ArrayLike, targets: ArrayLike, n_bins: int = 10) -> pl.DataFrame:
    """Columns bin, bin_low, bin_high, mean_predicted, mean_target, n: one row per bin."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    predicted, target = as_float(calibrated), as_float(targets)
    if len(predicted) != len(target):
        raise ValueError(f"predictions and targets differ in length: {len(predicted)} and {len(target)}")
    keep = np.isfinite(predicted) & np.isfinite(target)
    predicted, target = predicted[keep], target[keep]
    schema = {"bin": pl.Int64, "bin_low": pl.Float64, "bin_high": pl.Float64, "mean_predicted": pl.Float64,
              "mean_target": pl.Float64, "n": pl.Int64}
    if not len(predicted):
        return pl.DataFrame(schema=schema)
    low, high = float(predicted.min()), float(predicted.max())
    edges = np.linspace(low, high, n_bins + 1)
    bins = np.zeros(len(predicted), dtype=np.int64) if low == high else \
        np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, n_bins - 1)
    frame = pl.DataFrame({"bin": bins, "predicted": predicted, "target": target})
    stats = frame.group_by("bin").agg(pl.col("predicted").mean().alias("mean_predicted"),
                                      pl.col("target").mean().alias("mean_target"), pl.len().cast(pl.Int64).alias("n"))
    all_bins = pl.DataFrame({"bin": np.arange(n_bins), "bin_low": edges[:-1], "bin_high": edges[1:]})
    return (all_bins.join(stats, on="bin", how="left").with_columns(pl.col("n").fill_null(0))
            .sort("bin").select(list(schema)).cast(schema))
