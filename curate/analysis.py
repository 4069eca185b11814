"""A run directory → the statistics behind `curate stats` and `curate compare`.

The I/O side of `curate.stats`, `curate.calibrate` and `curate.compare` (which stay pure): read
the judgments and items of a run, compute, and, when asked to calibrate, save the calibration with
the run (RUN_DIR/calibration.json, and every scored item's calibrated value in
RUN_DIR/calibrated.parquet) so that the split step can threshold the calibrated value.

Calibration is fitted on the items that carry the target field and applied to every scored item.
Agreement figures computed on those same items are therefore in-sample: say so where you quote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.aggregate import AGGREGATED_COLUMNS, per_item
from curate.calibrate import Calibration, fit_isotonic, reliability_table
from curate.compare import compare_runs
from curate.errors import ConfigError
from curate.stats import (
    failure_rates, item_field, item_scores, pass_rate_agreement, reference_agreement, score_distribution,
    self_consistency,
)
from curate.store import read_judgments, read_manifest, write_parquet_atomic

CALIBRATION_FILE = "calibration.json"
CALIBRATED_FILE = "calibrated.parquet"


@dataclass(frozen=True)
class RunAnalysis:
    stats: dict[str, Any]  # JSON-serialisable: what `curate stats --json` prints
    items: pl.DataFrame  # item_id, score, domain, and reference / pass_rate / calibrated when asked
    reliability: pl.DataFrame | None


def _field(items: pl.DataFrame, name: str, alias: str) -> pl.DataFrame:
    try:
        return item_field(items, name).rename({name: alias})
    except ValueError as exc:
        raise ConfigError(f"{exc}; pass an input field that the scored file carried") from None


def _run_summary(run_dir: Path, scored: int) -> dict[str, Any]:
    identity = read_manifest(run_dir)["identity"]
    return {"run_dir": str(run_dir), "template": identity["template"], "model": identity["model"],
            "backend": identity["backend"], "samples": identity["samples"], "n_items": identity["n_items"],
            "n_scored": scored}


def analyze_run(run_dir: str | Path, score: str = "mean", reference: str | None = None,
                pass_rate: str | None = None, calibrate: str | None = None, unsolved_at: float = 0.0,
                n_resamples: int = 1000, seed: int = 0) -> RunAnalysis:
    """Statistics of one run; with `calibrate=FIELD`, fit and save an isotonic map onto FIELD."""
    run_dir = Path(run_dir)
    judgments = read_judgments(run_dir, columns=AGGREGATED_COLUMNS)
    items_frame = pl.read_parquet(run_dir / "items.parquet")
    per = per_item(judgments)
    try:
        scores = item_scores(per, score)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    frame = scores.join(items_frame.select(pl.col("id").alias("item_id"), "domain"), on="item_id", how="left")
    for name, alias in ((reference, "reference"), (pass_rate, "pass_rate")):
        if name:
            frame = frame.join(_field(items_frame, name, alias), on="item_id", how="left")
    bootstrap = {"n_resamples": n_resamples, "seed": seed}
    stats: dict[str, Any] = {
        "run": _run_summary(run_dir, frame.height), "score": score,
        "distribution": score_distribution(per, items_frame, score), "failures": failure_rates(judgments),
        "self_consistency": self_consistency(judgments, **bootstrap),
        "reference": None, "pass_rate": None, "calibration": None, "notes": [],
    }
    if reference:
        stats["reference"] = {"field": reference, **reference_agreement(frame["score"], frame["reference"],
                                                                        **bootstrap)}
    if pass_rate:
        stats["pass_rate"] = {"field": pass_rate, **pass_rate_agreement(frame["score"], frame["pass_rate"],
                                                                        unsolved_at, **bootstrap)}
    reliability = None
    if calibrate:
        frame, reliability, stats["calibration"] = _calibrate(run_dir, frame, items_frame, calibrate, score)
        stats["notes"].append(f"calibration fitted and assessed on the same {stats['calibration']['n_fit']} "
                              "labelled items: its reliability is in-sample")
    return RunAnalysis(stats=stats, items=frame, reliability=reliability)


def _calibrate(run_dir: Path, frame: pl.DataFrame, items_frame: pl.DataFrame, target: str,
               score: str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    labelled = frame.join(_field(items_frame, target, "target"), on="item_id", how="left")
    fit_on = labelled.filter(pl.col("target").is_not_null())
    try:
        calibration = fit_isotonic(fit_on["score"], fit_on["target"].cast(pl.Float64), target=target, score=score)
    except ValueError as exc:
        raise ConfigError(f"cannot calibrate onto {target!r}: {exc}") from None
    calibration.save(run_dir / CALIBRATION_FILE)
    frame = frame.with_columns(pl.Series("calibrated", calibration.apply(frame["score"])))
    write_parquet_atomic(frame.select("item_id", "score", "calibrated"), run_dir / CALIBRATED_FILE)
    fitted = frame.join(fit_on.select("item_id", "target"), on="item_id")
    table = reliability_table(fitted["calibrated"], fitted["target"].cast(pl.Float64))
    summary = {"target": target, "score": score, "n_fit": fit_on.height, "increasing": calibration.increasing,
               "path": str(run_dir / CALIBRATION_FILE)}
    return frame, table, summary


def load_calibration(run_dir: str | Path) -> Calibration:
    return Calibration.load(Path(run_dir) / CALIBRATION_FILE)


def analyze_comparison(run_a: str | Path, run_b: str | Path, score: str = "mean") -> dict[str, Any]:
    """`compare_runs` over two run directories, with each run's identity alongside."""
    frames = [per_item(read_judgments(run, columns=AGGREGATED_COLUMNS)) for run in (run_a, run_b)]
    try:
        result = compare_runs(frames[0], frames[1], score=score)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return {"run_a": _run_summary(Path(run_a), frames[0].height), "run_b": _run_summary(Path(run_b), frames[1].height),
            **result}
