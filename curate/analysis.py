"""A run directory → the statistics behind `curate stats` and `curate compare`.

The I/O side of `curate.stats`, `curate.calibrate` and `curate.compare` (which stay pure): read
the judgments and items of a run, compute, and, when asked to calibrate, save the calibration with
the run (RUN_DIR/calibration.json, and every scored item's calibrated value in
RUN_DIR/calibrated.parquet) so that the split step can threshold the calibrated value.

Calibration is fitted on the items that carry the target field and applied to every scored item.
Agreement figures computed on those same items are therefore in-sample: say so where you quote them.

Every bad input is a one-line `ConfigError` or `RunDirError` naming the option, the field and what to
do: a folder that is not a finished run directory, an input field that is not numeric (numbers
written as text, as CSV gives them, count), pass rates outside 0..1, and two runs whose shared ids
name different items (question, reference or choices differ), unless comparing them is asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.aggregate import AGGREGATED_COLUMNS, per_item
from curate.calibrate import Calibration, fit_isotonic, reliability_table
from curate.compare import compare_runs, item_differences
from curate.consistency import self_consistency
from curate.errors import ConfigError, RunDirError
from curate.stats import (
    JUDGMENT_COLUMNS, failure_rates, item_field, item_scores, pass_rate_agreement, reference_agreement,
    score_distribution,
)
from curate.store import DATABASE, MANIFEST, read_judgments, read_manifest, write_parquet_atomic

CALIBRATION_FILE = "calibration.json"
CALIBRATED_FILE = "calibrated.parquet"
ITEMS_FILE = "items.parquet"
SHOWN_CHARS = 60  # of a question quoted in a message


@dataclass(frozen=True)
class RunAnalysis:
    stats: dict[str, Any]  # JSON-serialisable: what `curate stats --json` prints
    items: pl.DataFrame  # item_id, score, domain, and reference / pass_rate / calibrated when asked
    reliability: pl.DataFrame | None


def read_run_identity(run_dir: str | Path) -> dict[str, Any]:
    """The identity in a run directory's manifest; RunDirError (one line) for any other folder or file."""
    run_dir = Path(run_dir)
    hint = "pass the --out folder of `curate score`"
    if not (run_dir / MANIFEST).is_file():
        state = "it does not exist" if not run_dir.exists() else "it is a file" if not run_dir.is_dir() else \
            f"it has no {MANIFEST}"
        raise RunDirError(f"{run_dir} is not a run directory ({state}); {hint}")
    try:
        identity = read_manifest(run_dir).get("identity")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        identity = None
    if not isinstance(identity, dict):
        raise RunDirError(f"{run_dir} is not a run directory: its {MANIFEST} holds no run identity (a split or "
                          f"export folder?); {hint}")
    missing = [name for name in (DATABASE, ITEMS_FILE) if not (run_dir / name).is_file()]
    if missing:
        raise RunDirError(f"{run_dir} is an unfinished run directory (no {' or '.join(missing)}); run the same "
                          "`curate score` command again to complete it")
    return identity


def _numeric_field(items: pl.DataFrame, name: str, option: str, alias: str, holds: str) -> pl.DataFrame:
    """item_id and an input field as Float64 (numbers written as text, as CSV gives them, count)."""
    try:
        field = item_field(items, name)
    except ValueError as exc:
        raise ConfigError(f"{option} {name!r}: {exc}; pass an input field that the scored file carried") from None
    values = field[name]
    if values.dtype.is_numeric() or values.dtype == pl.Null:
        return field.select("item_id", values.cast(pl.Float64).alias(alias))
    if values.dtype == pl.String:
        numbers = values.str.strip_chars().cast(pl.Float64, strict=False)
        if numbers.null_count() == values.null_count():
            return field.select("item_id", numbers.alias(alias))
        bad = field.filter(values.is_not_null() & numbers.is_null())
        what = f"text that is not a number in {bad.height} of {values.len() - values.null_count()} items"
    else:
        bad = field.filter(values.is_not_null())
        what = f"{values.dtype} values"
    example = f"{bad[name][0]!r} for item {bad['item_id'][0]!r}" if bad.height else "no values"
    raise ConfigError(f"{option} {name!r} must hold {holds}, but it holds {what} (e.g. {example}); pass a numeric "
                      "field, or convert this one in the input")


def _check_pass_rates(frame: pl.DataFrame, name: str) -> None:
    outside = frame.filter((pl.col("pass_rate") < 0) | (pl.col("pass_rate") > 1))
    if outside.height:
        raise ConfigError(f"--pass-rate {name!r} must lie in 0..1, but {outside.height} of "
                          f"{frame['pass_rate'].drop_nulls().len()} values do not (e.g. {outside['pass_rate'][0]} for "
                          f"item {outside['item_id'][0]!r}); a percentage? divide it by 100 in the input")


def _run_summary(run_dir: Path, identity: dict[str, Any], scored: int) -> dict[str, Any]:
    return {"run_dir": str(run_dir), "template": identity["template"], "model": identity["model"],
            "backend": identity["backend"], "samples": identity["samples"],
            "temperature": identity.get("temperature"), "n_items": identity["n_items"], "n_scored": scored}


def run_item_scores(run_dir: Path, per: pl.DataFrame, score: str) -> pl.DataFrame:
    """`curate.stats.item_scores` of a run; a score the run cannot give is one ConfigError naming the run."""
    try:
        return item_scores(per, score)
    except ValueError as exc:
        raise ConfigError(f"{run_dir}: {exc}") from None


def analyze_run(run_dir: str | Path, score: str = "mean", reference: str | None = None,
                pass_rate: str | None = None, calibrate: str | None = None, unsolved_at: float = 0.0,
                n_resamples: int = 1000, seed: int = 0) -> RunAnalysis:
    """Statistics of one run; with `calibrate=FIELD`, fit and save an isotonic map onto FIELD."""
    run_dir = Path(run_dir)
    identity = read_run_identity(run_dir)
    if not 0 <= unsolved_at <= 1:
        raise ConfigError(f"--unsolved-at {unsolved_at} must lie in 0..1: it is the pass rate at or below which an "
                          "item counts as not solved")
    judgments = read_judgments(run_dir, columns=JUDGMENT_COLUMNS)
    items_frame = pl.read_parquet(run_dir / ITEMS_FILE)
    per = per_item(judgments)
    scores = run_item_scores(run_dir, per, score)
    frame = scores.join(items_frame.select(pl.col("id").alias("item_id"), "domain"), on="item_id", how="left")
    fields = {"reference": (reference, "--reference", "numeric labels like 1..5"),
              "pass_rate": (pass_rate, "--pass-rate", "pass rates in 0..1")}
    for alias, (name, option, holds) in fields.items():
        if name:
            values = _numeric_field(items_frame, name, option, alias, holds)
            if alias == "pass_rate":
                _check_pass_rates(values, name)
            frame = frame.join(values, on="item_id", how="left")
    bootstrap = {"n_resamples": n_resamples, "seed": seed}
    stats: dict[str, Any] = {
        "run": _run_summary(run_dir, identity, frame.height), "score": score,
        "distribution": score_distribution(per, items_frame, score), "failures": failure_rates(judgments),
        "self_consistency": self_consistency(judgments, temperature=identity.get("temperature"), **bootstrap),
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
    targets = _numeric_field(items_frame, target, "--calibrate", "target", "numbers (a reference scale or a pass rate)")
    fit_on = frame.join(targets, on="item_id", how="left").filter(pl.col("target").is_not_null())
    try:
        calibration = fit_isotonic(fit_on["score"], fit_on["target"], target=target, score=score)
    except ValueError as exc:
        raise ConfigError(f"cannot calibrate onto {target!r}: {exc}") from None
    calibration.save(run_dir / CALIBRATION_FILE)
    frame = frame.with_columns(pl.Series("calibrated", calibration.apply(frame["score"])))
    write_parquet_atomic(frame.select("item_id", "score", "calibrated"), run_dir / CALIBRATED_FILE)
    fitted = frame.join(fit_on.select("item_id", "target"), on="item_id")
    table = reliability_table(fitted["calibrated"], fitted["target"])
    summary = {"target": target, "score": score, "n_fit": fit_on.height, "increasing": calibration.increasing,
               "path": str(run_dir / CALIBRATION_FILE)}
    return frame, table, summary


def load_calibration(run_dir: str | Path) -> Calibration:
    return Calibration.load(Path(run_dir) / CALIBRATION_FILE)


def _quoted(question: str) -> str:
    return repr(question if len(question) <= SHOWN_CHARS else question[:SHOWN_CHARS] + "…")


def _same_items_note(run_a: Path, run_b: Path, allow_different_items: bool) -> list[str]:
    """Refuse (or, when allowed, note) shared ids that name different items in the two runs."""
    shared = item_differences(pl.read_parquet(run_a / ITEMS_FILE), pl.read_parquet(run_b / ITEMS_FILE))
    different = shared.filter(~pl.col("same"))
    if different.height == 0:
        return []
    first = different.row(0, named=True)
    what = (f"{different.height} of the {shared.height} ids both runs hold name different items (question, reference "
            f"or choices differ; e.g. id {first['id']!r}: {_quoted(first['question_a'])} in {run_a}, "
            f"{_quoted(first['question_b'])} in {run_b})")
    if not allow_different_items:
        raise ConfigError(f"{what}: these runs did not score the same data; compare runs over the same items, or pass "
                          "--allow-different-items to compare them by id anyway")
    return [f"{what}; compared by id anyway (--allow-different-items)"]


def analyze_comparison(run_a: str | Path, run_b: str | Path, score: str = "mean",
                       allow_different_items: bool = False, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`compare_runs` over two run directories, with each run's identity alongside. Refuses runs whose
    shared ids name different items, unless `allow_different_items` (then a note says how many)."""
    runs = [Path(run_a), Path(run_b)]
    identities = [read_run_identity(run) for run in runs]
    frames = [per_item(read_judgments(run, columns=AGGREGATED_COLUMNS)) for run in runs]
    scored = [run_item_scores(run, frame, score).height for run, frame in zip(runs, frames, strict=True)]
    notes = _same_items_note(runs[0], runs[1], allow_different_items)
    result = compare_runs(frames[0], frames[1], score=score, n_resamples=n_resamples, seed=seed)
    summaries = [_run_summary(*run) for run in zip(runs, identities, scored, strict=True)]
    return {"run_a": summaries[0], "run_b": summaries[1], **result, "notes": notes + result["notes"]}
