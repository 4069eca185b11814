"""A scored run directory → a split directory (the I/O around the pure functions of curate.split.rules and curate.split.hygiene).

    SPLIT_DIR/
      manifest.json                  counts, τ and how it was chosen, the item score used and what it
                                     means, the run's identity (template hash, model, sampling), input
                                     fingerprint, library version, seed, hygiene, and notes (warnings)
      sft.parquet rl.parquet         the two sides
      unscored.parquet               items without a score, with `unscored_reason`: not_judged (the run
                                     is incomplete), judgments_failed, or no_<kind>_score
      removed.jsonl                  every item hygiene removed, with the reason
      arms/<arm>/{sft,rl}.parquet    ablation arms: random, reversed, sft_all, rl_all
      stages/stage_<i>.parquet       RL curriculum, easy → hard (when asked)

The run split is a score run: τ is on its judge score. The RL curriculum may be ordered by a difficulty
measured over the same items: `stage_by` naming a folder (when it is no field of the items) that is a solve
run (its pass rates, `solve_pass_rate`) or an IRT directory (its Rasch difficulties, `irt_difficulty` and
`irt_status`), as curate.split.stages reads them; every item of the split then carries the column(s), and an
RL item without a value is refused, with the counts per reason.

Inside a split the score always rises with difficulty. `calibrated` applies the run's saved isotonic map
(calibration.json) to the current item scores of the kind it was fitted on; a map that falls with the
score (onto a pass rate in 0..1) is turned into 1 − predicted pass rate. τ must lie on the score's scale
(1..5 for judge scores, the map's range for calibrated ones). A pairs run's score is each item's Bradley-Terry
strength, which has no fixed scale (logits against the run's average item, the range its items span): its τ is
chosen by --quantile or --rl-budget, and a fixed τ is refused.

The split directory appears whole or not at all (`curate.outdir.atomic_directory`).
Nothing depends on the clock: the same run, settings and seed give byte-identical files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate import __version__
from curate.command_config import SplitConfig
from curate.errors import ConfigError, DataError
from curate.files import write_atomic, write_parquet_atomic
from curate.outdir import atomic_directory, check_output_dir
from curate.parse import SCORE_MAX, SCORE_MIN
from curate.runs import SCORE, aggregated_now, read_run_of, run_items, run_task
from curate.split.benchmarks import benchmark_texts
from curate.split.hygiene import check_disjoint, decontaminate, deduplicate
from curate.split.rules import (
    HARDER_WHEN,
    TauChoice,
    TauRule,
    all_arm,
    assign_sides,
    choose_tau,
    curriculum_stages,
    random_arm,
    reversed_arm,
)
from curate.split.stages import COLUMNS as MEASURED_COLUMNS
from curate.split.stages import (
    IRT_DIFFICULTY,
    SOLVE_PASS_RATE,
    check_placed,
    measured_order,
    placement_notes,
)
from curate.stats.analysis import (
    CALIBRATED_FILE,
    CALIBRATION_FILE,
    load_calibration,
    run_item_scores,
)
from curate.stats.metrics import SCORE_COLUMNS, on_scale, resolve_score

log = logging.getLogger(__name__)

SCORES = (*SCORE_COLUMNS, "calibrated")
# An input field so named gets the prefix extra_.
RESERVED = ("item_id", "score", "side", "arm", "stage", "unscored_reason", *MEASURED_COLUMNS)


# --- item scores ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ItemScores:
    items: pl.DataFrame  # every item with `score` (Float64, higher = harder; null = unscored) and its fields
    unscored: pl.DataFrame  # item_id, unscored_reason of the unscored items
    scale: tuple[float, float] | None  # the values the score can take (a strength's: the range it spans, if any)
    kind: str  # the item score: mean, median, expected, strength or calibrated
    meaning: str
    calibration: dict[str, Any] | None
    notes: tuple[str, ...]


def scored_items(run_dir: Path, score: str | None, identity: dict[str, Any]) -> ItemScores:
    """Every item of the run with its score (`score`, or the run's own when None), why an item has none, and what
    the score means."""
    if score not in (*SCORES, None):
        raise ConfigError(f"unknown score {score!r}; choose one of {list(SCORES)}")
    per = aggregated_now(run_dir, identity)
    score = resolve_score(per, score)
    if score == "calibrated":
        scores, scale, meaning, calibration, notes = _calibrated(run_dir, per)
        kind = calibration["score"]
    else:
        kind, calibration, notes = score, None, []
        scores = run_item_scores(run_dir, per, score)
        scale, meaning = ((SCORE_MIN, SCORE_MAX), f"{score} judge score") if on_scale(score) else (
            (scores["score"].min(), scores["score"].max()) if scores.height else None,
            "Bradley-Terry strength (logits against the run's average item; higher = harder)")
    command = run_task(identity)
    items = run_items(run_dir, RESERVED).join(scores, on="item_id", how="left", maintain_order="left")
    unscored = (items.filter(pl.col("score").is_null()).select("item_id")
                .join(per.select("item_id", "item_status"), on="item_id", how="left", maintain_order="left")
                .select("item_id", pl.when(pl.col("item_status").is_null()).then(pl.lit("not_judged"))
                        .when(pl.col("item_status") == "unscored").then(pl.lit("judgments_failed"))
                        .otherwise(pl.lit(f"no_{kind}_score")).alias("unscored_reason")))
    for reason, n in sorted(unscored["unscored_reason"].value_counts().rows()):
        notes.append({
            "not_judged": f"the run is incomplete: {n} of {items.height} items were never judged and are counted as "
                          f"unscored; finish it by running `curate {command}` again with the same settings, then "
                          "split again",
            "judgments_failed": f"{n} item(s) have only failed judgments and are unscored; `curate {command}` with "
                                "the same settings and --retry-failed requests the errors and truncations again",
        }.get(reason, f"{n} item(s) have judgments but no {kind} score and are unscored"))
    return ItemScores(items=items, unscored=unscored, scale=scale and (float(scale[0]), float(scale[1])), kind=score,
                      meaning=meaning, calibration=calibration, notes=tuple(notes))


def _calibrated(run_dir: Path, per: pl.DataFrame) -> tuple[pl.DataFrame, tuple[float, float], str, dict, list[str]]:
    """The saved calibration applied to the current scores of its kind, turned to rise with difficulty."""
    refit = f"`curate stats {run_dir} --calibrate FIELD`"
    if not (run_dir / CALIBRATION_FILE).is_file():
        raise ConfigError(f"{run_dir} has no calibration: run {refit} first")
    try:
        calibration = load_calibration(run_dir)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{run_dir / CALIBRATION_FILE} cannot be used ({exc}); fit it again with {refit}") from None
    raw = run_item_scores(run_dir, per, calibration.score)
    predicted, target = calibration.apply(raw["score"]), calibration.target
    low, high = min(calibration.y_thresholds), max(calibration.y_thresholds)
    if calibration.increasing:
        difficulty, scale, meaning = predicted, (low, high), f"predicted {target}"
    elif 0 <= low and high <= 1:  # a pass rate: easier as it rises
        difficulty, scale, meaning = 1 - predicted, (1 - high, 1 - low), f"1 − predicted {target}"
    else:
        raise ConfigError(f"the calibration onto {target!r} falls as the score rises, but its values "
                          f"({low:g}..{high:g}) are not a pass rate in 0..1, so the split cannot tell which side is "
                          f"harder; calibrate onto a field that rises with difficulty ({refit})")
    meaning += f" (isotonic map of the {calibration.score} judge score; higher = harder)"
    summary = {"target": target, "score": calibration.score, "n_fit": calibration.n_fit,
               "increasing": calibration.increasing, "difficulty": meaning, "n_scored_now": raw.height,
               "n_scored_at_fit": None, "n_new_since_fit": None, "n_changed_since_fit": None}
    notes = []
    if (run_dir / CALIBRATED_FILE).is_file():
        at_fit = pl.read_parquet(run_dir / CALIBRATED_FILE, columns=["item_id", "score"])
        joined = raw.join(at_fit, on="item_id", how="left", suffix="_at_fit")
        new = joined["score_at_fit"].null_count()
        changed = int(((joined["score"] - joined["score_at_fit"]).abs() > 1e-9).sum())
        summary.update(n_scored_at_fit=at_fit.height, n_new_since_fit=new, n_changed_since_fit=changed)
        if new or changed:
            notes.append(f"{new} item(s) were scored and {changed} changed their {calibration.score} score after the "
                         f"calibration was fitted ({calibration.n_fit} items with {target!r}, {at_fit.height} scored "
                         f"then); the saved map is applied to them but never saw them: refit with `curate stats "
                         f"{run_dir} --score {calibration.score} --calibrate {target}` to include them")
    else:
        notes.append(f"{run_dir / CALIBRATED_FILE} is missing, so which items the calibration saw is unknown")
    return raw.with_columns(pl.Series("score", difficulty)), scale, meaning, summary, notes


# --- checks that need the run -------------------------------------------------------------------------

def _check_on_scale(rule: TauRule, scores: ItemScores) -> None:
    if rule.method == "fixed" and not on_scale(scores.kind):
        spans = f" (here {scores.scale[0]:.2f}..{scores.scale[1]:.2f})" if scores.scale else ""
        raise ConfigError(f"{'the default ' if rule.tau is None else ''}τ = {rule.value:g} is a fixed value, and the "
                          f"{scores.meaning} has no fixed scale{spans}: choose τ from the scores with --quantile or "
                          "--rl-budget")
    low, high = scores.scale
    if rule.method == "fixed" and not low <= rule.value <= high:
        raise ConfigError(f"{'the default ' if rule.tau is None else ''}τ = {rule.value:g} is outside the scale of "
                          f"the {scores.meaning}, {low:g}..{high:g}; pass a --tau in that range, --quantile or "
                          "--rl-budget")


def _choose_tau(items: pl.DataFrame, rule: TauRule) -> TauChoice:
    try:
        return choose_tau(items, rule)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _rl_notes(choice: TauChoice, sided: pl.DataFrame, rule: TauRule) -> list[str]:
    """Refuse a --quantile or --rl-budget that leaves RL empty; notes for other empty sides."""
    n_rl, n_scored = int((sided["side"] == "rl").sum()), int((sided["side"] != "unscored").sum())
    notes = [f"the {side} side is empty" for side in ("sft", "rl") if n_scored and not (sided["side"] == side).any()]
    if choice.method == "fixed":
        return notes
    option = (f"--quantile {rule.quantile:g}" if rule.method == "quantile" else f"--rl-budget {rule.rl_budget}") + \
        " --per-domain" * rule.per_domain
    groups = choice.detail["domains"] if rule.per_domain else {None: choice.detail}
    taus = choice.tau if rule.per_domain else {None: choice.tau}
    ties = {group: f"{d['n_at_tau']} items tie at the top score {taus[group]:g}, where RL may take "
                   f"{d.get('target_n_rl', d.get('budget'))}" for group, d in groups.items() if not d["n_rl"]}
    if n_rl == 0 and rule.value:
        lower = sided.filter(pl.col("score") < max(taus.values()))["score"].max()
        fix = f"--tau {lower:g} to send them to RL" if lower is not None and not rule.per_domain else "a fixed --tau"
        why = "; ".join(f"{group}: {tie}" if group else tie for group, tie in list(ties.items())[:5])
        raise ConfigError(f"{option} gives RL 0 of {n_scored} scored items: {why}, and ties at τ stay in SFT. Use a "
                          f"larger value, a finer score (--score expected), or {fix}")
    return notes + [f"{option}: domain {group!r} gets no RL items: {tie}" for group, tie in ties.items() if group]


def _harder_when(stage_by: str, harder_when: str | None) -> str:
    if stage_by == "score":
        if harder_when not in (None, "high"):
            raise ConfigError("--stage-by score needs no --harder-when: inside a split a higher score is harder")
        return "high"
    if harder_when not in HARDER_WHEN:
        raise ConfigError(f"--stage-by {stage_by} needs --harder-when high or low: is a higher {stage_by} harder "
                          "(like a level) or easier (like a pass rate)?")
    return harder_when


def _stage_values(items: pl.DataFrame, stage_by: str) -> pl.Series:
    """`stage_by` of the items as numbers (numbers written as text, as a CSV input gives them, count)."""
    rankable = ("score", SOLVE_PASS_RATE, IRT_DIFFICULTY)  # reserved names that stages may rank by
    if stage_by not in items.columns or (stage_by in RESERVED and stage_by not in rankable):
        fields = [c for c in items.columns if c not in RESERVED]
        raise ConfigError(f"--stage-by {stage_by!r} is neither a field of the run's items nor the folder of a solve "
                          f"run or an IRT fit; fields: {fields}")
    column = items[stage_by]
    if column.dtype == pl.String:
        numbers = column.str.strip_chars().cast(pl.Float64, strict=False)
        if (bad := column.filter(numbers.is_null() & column.is_not_null())).len():
            raise ConfigError(f"--stage-by {stage_by!r} must be numeric, but {bad.len()} item(s) hold text such as "
                              f"{bad[0]!r}")
        return numbers
    if not column.dtype.is_numeric():
        raise ConfigError(f"--stage-by {stage_by!r} must be numeric, not {column.dtype}")
    return column


# --- the split ----------------------------------------------------------------------------------------

def make_split(run_dir: str | Path, out_dir: str | Path, config: SplitConfig = SplitConfig(),
               overwrite: bool = False) -> dict[str, Any]:
    """Write the split directory of the score run `run_dir` whole, by `config`; returns its manifest. A benchmark
    file given without a field uses `config.benchmark_field`, else the one of
    `curate.split.benchmarks.BENCHMARK_FIELDS` it has. `overwrite` replaces a non-empty `out_dir`."""
    run_dir = Path(run_dir)
    rule, arms, stages, stage_by, harder_when = (config.tau_rule, config.arm_names, config.stages, config.stage_by,
                                                 config.harder_when)
    identity = read_run_of(run_dir, SCORE, "split:")
    scores = scored_items(run_dir, config.score, identity)
    items, notes = scores.items, list(scores.notes)
    _check_on_scale(rule, scores)
    measured = None
    if stages and stage_by not in items.columns and Path(stage_by).is_dir():
        measured = measured_order(run_dir, Path(stage_by), harder_when)
        items = items.join(measured.values, on="item_id", how="left", maintain_order="left")
        stage_by, harder_when = measured.column, measured.harder_when
    elif stages:
        _stage_values(items, stage_by)
        harder_when = _harder_when(stage_by, harder_when)
    inputs = [("run directory", run_dir), *([(measured.what, measured.path)] if measured else [])]
    check_output_dir(out_dir, overwrite, inputs)  # before the work, and again when writing
    removed, used = [], []
    if config.dedup:
        items, duplicates = deduplicate(items)
        removed.append(duplicates)
    if config.decontaminate:
        texts, sources, used = benchmark_texts(tuple(config.decontaminate), config.benchmark_field)
        try:
            items, contaminated = decontaminate(items, texts, n=config.ngram, source_names=sources)
        except ValueError as exc:
            raise DataError(f"benchmark texts: {exc}") from None
        removed.append(contaminated)
    choice = _choose_tau(items, rule)
    sided = assign_sides(items, choice.tau)
    try:
        check_disjoint(sided)
        if stages:  # ranked by the numbers, written with the field as it was
            rl = sided.filter(pl.col("side") == "rl")
            if measured:
                check_placed(rl, measured)
                notes += placement_notes(rl, measured)
            staged = curriculum_stages(rl.with_columns(_stage_values(rl, stage_by)), stages, stage_by,
                                       harder_when).with_columns(rl[stage_by])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    notes += _rl_notes(choice, sided, rule)
    arm_frames = {"random": lambda: random_arm(sided, config.seed), "reversed": lambda: reversed_arm(sided),
                  "sft_all": lambda: all_arm(sided, "sft"), "rl_all": lambda: all_arm(sided, "rl")}
    files = {f"{side}.parquet": sided.filter(pl.col("side") == side) for side in ("sft", "rl")}
    unscored = sided.filter(pl.col("side") == "unscored").join(scores.unscored, on="item_id", how="left",
                                                               maintain_order="left")
    if not config.drop_unscored:
        files["unscored.parquet"] = unscored
    for arm in arms:
        frame = arm_frames[arm]()
        files |= {f"arms/{arm}/{side}.parquet": frame.filter(pl.col("side") == side) for side in ("sft", "rl")}
    for stage in range(1, (stages or 0) + 1):
        files[f"stages/stage_{stage}.parquet"] = staged.filter(pl.col("stage") == stage)
    removed_frame = pl.concat(removed, how="diagonal_relaxed") if removed else pl.DataFrame()
    manifest = {
        "dereason_version": __version__, "run_dir": str(run_dir), "score": scores.kind,
        "score_meaning": scores.meaning, "score_scale": list(scores.scale) if scores.scale else None,
        "seed": config.seed, "tau": choice.tau, "tau_method": choice.method,
        "tau_detail": choice.detail, "counts": {side: int((sided["side"] == side).sum()) for side in
                                                ("sft", "rl", "unscored")},
        "unscored_reasons": dict(sorted(unscored["unscored_reason"].value_counts().rows())),
        "unscored_written": not config.drop_unscored,
        "arms": {arm: {side: files[f"arms/{arm}/{side}.parquet"].height for side in ("sft", "rl")} for arm in arms},
        "stages": {str(i): files[f"stages/stage_{i}.parquet"].height for i in range(1, stages + 1)} if stages else None,
        "stage_by": stage_by if stages else None, "harder_when": harder_when if stages else None,
        "stage_run": None, "stage_irt": None, **(measured.manifest if measured else {}),
        "hygiene": {"deduplicated": config.dedup, "benchmarks": used, "ngram": config.ngram,
                    "removed": removed_frame.height},
        "run": {"template": identity["template"], "model": identity["model"], "backend": identity["backend"],
                "sampling": {k: identity[k] for k in ("samples", "temperature", "top_p", "seed", "top_logprobs")},
                "input_fingerprint": identity["input_fingerprint"]},
        "calibration": scores.calibration, "notes": notes,
    }
    with atomic_directory(out_dir, overwrite, inputs) as staging:
        for name, frame in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            write_parquet_atomic(frame, staging / name)
        write_atomic(staging / "removed.jsonl", "".join(
            json.dumps(row, sort_keys=True, default=str) + "\n" for row in removed_frame.select(
                [c for c in ("item_id", "reason", "question") if c in removed_frame.columns]).iter_rows(named=True)))
        write_atomic(staging / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str))
    for note in notes:
        log.warning("%s", note)
    return manifest
