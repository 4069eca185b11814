"""A run directory → the statistics behind `curate stats` and `curate compare`.

The I/O side of `curate.stats.metrics`, `curate.stats.calibrate` and `curate.stats.compare` (which stay pure): read
the judgments and items of a run, compute, and, when asked to calibrate, save the calibration with
the run (RUN_DIR/calibration.json, and every scored item's calibrated value in
RUN_DIR/calibrated.parquet) so that the split step can threshold the calibrated value.

Calibration is fitted on the items that carry the target field and applied to every scored item.
Agreement figures computed on those same items are therefore in-sample: say so where you quote them.

Measured difficulty (`curate.stats.measured`): `--pass-rate` and `--calibrate` take an input field or a solve
run directory. A value naming a folder that holds a manifest.json is a run, and it must be a `curate
solve` run over the items the judge scored (its pass rates are aggregated from the records stored now, as
`curate solve` aggregates them); any other value is an input field. A solve run with items short of their
rollouts is used as it is, with a note that it is unfinished. A calibration onto a solve run's pass rates is
fitted decreasing. `--irt` takes two or more solve runs, each one model of a crowd, and fits Rasch
difficulties over all their rollouts (`curate.stats.irt_dir.fit_crowd`, as `curate irt` does): the stats carry every
item's difficulty (`irt.items`), and `irt_out` writes the fit there as an IRT directory.

A pairs run (`curate pairs`) is read wherever a judge run is: its item score is each item's Bradley-Terry strength
(`--score strength`, its default), which is not on the 1..5 scale, so the statistics that round scores to 1..5
(histogram, κ, confusion matrix; in a comparison α, κ, the shift matrix and the churn) are left out with a note, and
the rank statistics stand. Its self-consistency is whether a pair's two orders agree; `stats["pairs"]` holds the
fit: the position bias, mean P(first harder), the items per status.

Every bad input is a one-line `ConfigError` or `RunDirError` naming the option, the field and what to
do: a folder that is not a finished run directory, a run of the wrong kind (a solve or respond run given
as the judge run, a score or respond run given as a solve run), an input field that is not numeric
(numbers written as text, as CSV gives them, count), pass rates outside 0..1, two runs whose shared ids
name different items (question, reference or choices differ) unless comparing them is asked for, and a
judge run and a solve run with no item in common.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.command_config import CompareConfig, StatsConfig
from curate.errors import ConfigError
from curate.files import write_parquet_atomic
from curate.outdir import check_output_dir
from curate.identity import IDENTITY_DEFAULTS
from curate.runs import (
    ITEM_TEXT,
    PAIRS,
    SCORE,
    SOLVE,
    aggregated_now,
    fresh_per_item,
    is_run_directory,
    item_mismatch,
    read_response_run,
    read_run_of,
    refuse_other_items,
    run_task,
)
from curate.stats.calibrate import Calibration, fit_isotonic, reliability_table
from curate.stats.compare import compare_runs
from curate.stats.consistency import self_consistency
from curate.stats.crowd import run_summary, unfinished
from curate.stats.irt_dir import fit_crowd, write_irt_dir
from curate.stats.measured import (
    coverage_note,
    irt_agreement,
    join_pass_rates,
    pass_rate_noise,
)
from curate.stats.metrics import (
    JUDGMENT_COLUMNS,
    failure_rates,
    item_field,
    item_scores,
    on_scale,
    pass_rate_agreement,
    reference_agreement,
    resolve_score,
    score_distribution,
)
from curate.store import MANIFEST, read_items, read_judgments
from curate.tasks import rebuild_task

CALIBRATION_FILE = "calibration.json"
CALIBRATED_FILE = "calibrated.parquet"
BOOTSTRAP_SEED = 0  # of every interval's resamples: the same run and settings give the same intervals


@dataclass(frozen=True)
class RunAnalysis:
    stats: dict[str, Any]  # JSON-serialisable: what `curate stats --json` prints
    items: pl.DataFrame  # item_id, score, domain, and reference / pass_rate / calibrated / irt_* when asked
    reliability: pl.DataFrame | None


def _numeric_field(items: pl.DataFrame, name: str, option: str, alias: str, holds: str,
                   or_run: bool = False) -> pl.DataFrame:
    """item_id and an input field as Float64 (numbers written as text, as CSV gives them, count); `or_run`:
    the option takes a solve run directory too, and the error says so."""
    try:
        field = item_field(items, name)
    except ValueError as exc:
        advice = "pass an input field that the scored file carried" + " or a solve run directory" * or_run
        if or_run and Path(name).exists():
            advice += f" ({name} exists but holds no {MANIFEST}, so it is not a run directory)"
        raise ConfigError(f"{option} {name!r}: {exc}; {advice}") from None
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


def _field_pass_rates(items: pl.DataFrame, name: str) -> pl.DataFrame:
    frame = _numeric_field(items, name, "--pass-rate", "pass_rate", "pass rates in 0..1", or_run=True)
    outside = frame.filter((pl.col("pass_rate") < 0) | (pl.col("pass_rate") > 1))
    if outside.height:
        raise ConfigError(f"--pass-rate {name!r} must lie in 0..1, but {outside.height} of "
                          f"{frame['pass_rate'].drop_nulls().len()} values do not (e.g. {outside['pass_rate'][0]} for "
                          f"item {outside['item_id'][0]!r}); a percentage? divide it by 100 in the input")
    return frame


def _solve_pass_rates(judge_dir: Path, scores: pl.DataFrame, solve_dir: Path,
                      option: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """A solve run's measured pass rates of the scored items (`curate.stats.measured.join_pass_rates`), and where
    they come from: the run, the items on one side only, how noisy the rates are, whether the run is finished."""
    identity, items, solve_items = read_response_run(solve_dir, SOLVE, option)
    refuse_other_items(read_items(judge_dir), str(judge_dir), solve_dir, items, option)
    joined, counts = join_pass_rates(scores, solve_items)
    if joined.height == 0:
        raise ConfigError(f"{option} {solve_dir}: no item is both scored in {judge_dir} ({scores.height} scored) and "
                          f"measured in {solve_dir} ({counts['n_solved_only']} measured); pass a solve run over the "
                          "data the judge scored")
    notes = []
    if short := unfinished(solve_dir, identity, items["id"], solve_items):
        notes.append(f"{short}: its pass rates count the rollouts stored so far; run the same `curate solve` "
                     "command again to finish it")
    if note := coverage_note(counts, str(judge_dir), str(solve_dir)):
        notes.append(note)
    return joined, {"source": "solve_run", "solve_run": run_summary(solve_dir, identity), **counts,
                    "noise": pass_rate_noise(joined), "notes": notes}


def _irt(judge_dir: Path, scores: pl.DataFrame, runs: Sequence[Path], bootstrap: dict[str, int],
         irt_out: Path | None, overwrite: bool) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Rasch difficulties fitted over the rollouts of solve runs (one model each) against the item scores; with
    `irt_out`, the fit written there as an IRT directory (`curate.stats.irt_dir`)."""
    crowd = fit_crowd(runs, "--irt")
    judged = read_items(judge_dir)
    for run in crowd.runs:  # ids the judge run lacks still place the models on one scale
        refuse_other_items(judged, str(judge_dir), run.run_dir, read_items(run.run_dir), "--irt")
    difficulties, result = irt_agreement(scores, crowd.rasch, **bootstrap)
    if result["n"] == 0:
        raise ConfigError(f"--irt: no item is both scored in {judge_dir} ({scores.height} scored) and answered in "
                          f"the solve runs ({result['n_crowd_only']} items); pass solve runs over the data the judge "
                          "scored")
    if irt_out is not None:
        irt_out = write_irt_dir(crowd, irt_out, overwrite, [("judge run", judge_dir)])
    crowd_notes = [note for note in crowd.manifest["notes"] if note not in crowd.rasch.detail["notes"]]
    return difficulties, {
        "runs": crowd.manifest["runs"], **result, "crowd": {"items": crowd.manifest["items"],
                                                            "counts": crowd.manifest["counts"]},
        "items": crowd.items.drop(ITEM_TEXT).to_dicts(), "irt_dir": None if irt_out is None else str(irt_out),
        "notes": [f"the crowd: {note}" for note in crowd_notes] + result["notes"]}


def _run_summary(run_dir: Path, identity: dict[str, Any], scored: int) -> dict[str, Any]:
    return {"run_dir": str(run_dir), "task": run_task(identity), "template": identity["template"],
            "model": identity["model"],
            "backend": identity["backend"], "samples": identity["samples"],
            "temperature": identity.get("temperature"), "n_items": identity["n_items"], "n_scored": scored}


def _pairs_statistics(summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pairs run's self-consistency (do a pair's two orders agree?) and its fit (`stats["pairs"]`)."""
    fit = summary["bradley_terry"]
    agreement = summary["order_agreement"]
    consistency = {"alpha": None, "order_agreement": agreement, "notes": [
        "α compares an item's scores across samples; a pairs run's consistency is whether a pair's two orders name "
        "the same item harder (order_agreement)"]}
    pairs = {key: summary[key] for key in ("comparisons_per_item", "comparisons", "soft_outcomes", "hard_outcomes",
                                           "bt_status_counts")}
    return consistency, {**pairs, "position_bias": fit["position_bias"], "mean_p_first": fit["mean_p_first"],
                         "fit": {key: value for key, value in fit.items() if key != "notes"}, "notes": fit["notes"]}


def run_item_scores(run_dir: Path, per: pl.DataFrame, score: str | None) -> pl.DataFrame:
    """`curate.stats.metrics.item_scores` of a run; a score the run cannot give is one ConfigError naming the run."""
    try:
        return item_scores(per, score)
    except ValueError as exc:
        raise ConfigError(f"{run_dir}: {exc}") from None


def analyze_run(run_dir: str | Path, config: StatsConfig = StatsConfig(), irt_out: str | Path | None = None,
                overwrite: bool = False) -> RunAnalysis:
    """Statistics of one judge run; `config.pass_rate` and `config.calibrate` name an input field or a solve run
    directory (`is_run_directory`), `config.irt` two or more solve runs; with `calibrate`, fit and save an isotonic
    map onto it; with `irt_out`, write the IRT fit there (`curate.stats.irt_dir`; `overwrite` replaces a folder with
    files)."""
    run_dir = Path(run_dir)
    score, reference, pass_rate, calibrate, irt = (config.score, config.reference, config.pass_rate,
                                                   config.calibrate, config.irt)
    identity = read_run_of(run_dir, SCORE, "stats:")
    if irt_out is not None:
        if not irt:
            raise ConfigError("--irt-out writes the IRT fit of the --irt solve runs: give them (two or more), or fit "
                              "solve runs alone with `curate irt RUN RUN ... --out DIR`")
        check_output_dir(irt_out, overwrite, [("judge run", run_dir), *[("solve run", Path(r)) for r in irt]])
    task = rebuild_task({**IDENTITY_DEFAULTS, **identity})
    judgments = read_judgments(run_dir, columns=JUDGMENT_COLUMNS if task.name == SCORE else task.aggregated_columns)
    items_frame = read_items(run_dir)
    # Checked after the read: a change to the judgments while they were read makes per_item.parquet stale.
    fresh = None if task.name == PAIRS else fresh_per_item(run_dir, identity)  # pairs statistics need the summary
    per, summary = task.aggregate(judgments) if fresh is None else (fresh, None)
    scores = run_item_scores(run_dir, per, score)
    score = resolve_score(per, score)
    frame = scores.join(items_frame.select(pl.col("id").alias("item_id"), "domain"), on="item_id", how="left")
    if reference:
        frame = frame.join(_numeric_field(items_frame, reference, "--reference", "reference", "numeric labels like "
                                          "1..5"), on="item_id", how="left")
    bootstrap = {"n_resamples": config.resamples, "seed": BOOTSTRAP_SEED}
    stats: dict[str, Any] = {
        "run": _run_summary(run_dir, identity, frame.height), "score": score,
        "distribution": score_distribution(per, items_frame, score), "failures": failure_rates(judgments),
        "self_consistency": None, "pairs": None,
        "reference": None, "pass_rate": None, "irt": None, "calibration": None, "notes": [],
    }
    if task.name == PAIRS:
        stats["self_consistency"], stats["pairs"] = _pairs_statistics(summary)
        stats["failures"]["notes"].append("a pairs run's records are comparisons: its failures count comparisons, "
                                          "and items_without_ok names comparisons")
    else:
        stats["self_consistency"] = self_consistency(judgments, temperature=identity.get("temperature"), **bootstrap)
    if reference:
        stats["reference"] = {"field": reference, **reference_agreement(frame["score"], frame["reference"],
                                                                        scores_on_scale=on_scale(score), **bootstrap)}
    if pass_rate:
        if is_run_directory(pass_rate):
            values, source = _solve_pass_rates(run_dir, scores, Path(pass_rate), "--pass-rate")
        else:
            values, source = _field_pass_rates(items_frame, pass_rate), {"source": "field", "notes": []}
        frame = frame.join(values, on="item_id", how="left")
        agreement = pass_rate_agreement(frame["score"], frame["pass_rate"], config.unsolved_at, **bootstrap)
        stats["pass_rate"] = {"field": pass_rate, **source, **agreement, "notes": source["notes"] + agreement["notes"]}
    if irt:
        difficulties, stats["irt"] = _irt(run_dir, scores, [Path(run) for run in irt], bootstrap,
                                          None if irt_out is None else Path(irt_out), overwrite)
        frame = frame.join(difficulties, on="item_id", how="left")
    reliability = None
    if calibrate:
        frame, reliability, stats["calibration"] = _calibrate(run_dir, frame, items_frame, calibrate, score)
        stats["notes"].append(f"calibration fitted and assessed on the same {stats['calibration']['n_fit']} "
                              "labelled items: its reliability is in-sample")
    return RunAnalysis(stats=stats, items=frame, reliability=reliability)


def _calibrate(run_dir: Path, frame: pl.DataFrame, items_frame: pl.DataFrame, target: str,
               score: str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    # A measured pass rate falls as difficulty rises: fixing the direction keeps noise from fitting it rising,
    # which the split would read as "a higher pass rate is harder".
    increasing: bool | str = "auto"
    if is_run_directory(target):
        measured = _solve_pass_rates(run_dir, frame, Path(target), "--calibrate")[0]
        targets, increasing = measured.select("item_id", pl.col("pass_rate").alias("target")), False
    else:
        targets = _numeric_field(items_frame, target, "--calibrate", "target",
                                 "numbers (a reference scale or a pass rate)", or_run=True)
    fit_on = frame.join(targets, on="item_id", how="left").filter(pl.col("target").is_not_null())
    try:
        calibration = fit_isotonic(fit_on["score"], fit_on["target"], target=target, score=score,
                                   increasing=increasing)
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


def _same_items_note(run_a: Path, run_b: Path, allow_different_items: bool) -> list[str]:
    """Refuse (or, when allowed, note) shared ids that name different items in the two runs."""
    what = item_mismatch(read_items(run_a), read_items(run_b), str(run_a), str(run_b))
    if what is None:
        return []
    if not allow_different_items:
        raise ConfigError(f"{what}: these runs did not score the same data; compare runs over the same items, or pass "
                          "--allow-different-items to compare them by id anyway")
    return [f"{what}; compared by id anyway (--allow-different-items)"]


def analyze_comparison(run_a: str | Path, run_b: str | Path, config: CompareConfig = CompareConfig()) -> dict[str, Any]:
    """`compare_runs` over two run directories, with each run's identity alongside. Refuses runs whose
    shared ids name different items, unless `config.allow_different_items` (then a note says how many)."""
    runs = [Path(run_a), Path(run_b)]
    identities = [read_run_of(run, SCORE, "compare:") for run in runs]
    frames = [aggregated_now(run, identity) for run, identity in zip(runs, identities, strict=True)]
    scored = [run_item_scores(run, frame, config.score).height for run, frame in zip(runs, frames, strict=True)]
    notes = _same_items_note(runs[0], runs[1], config.allow_different_items)
    result = compare_runs(frames[0], frames[1], score=config.score, n_resamples=config.resamples,
                          seed=BOOTSTRAP_SEED)
    summaries = [_run_summary(*run) for run in zip(runs, identities, scored, strict=True)]
    return {"run_a": summaries[0], "run_b": summaries[1], **result, "notes": notes + result["notes"]}
