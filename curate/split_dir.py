"""A scored run directory → a split directory (the I/O around the pure functions of curate.split).

    SPLIT_DIR/
      manifest.json                  counts, τ and how it was chosen, the item score used, the run's
                                     identity (template hash, model, sampling), input fingerprint,
                                     library version, seed, and what hygiene removed
      sft.parquet rl.parquet unscored.parquet
      removed.jsonl                  every item hygiene removed, with the reason
      arms/<arm>/{sft,rl}.parquet    ablation arms: random, reversed, sft_all, rl_all
      stages/stage_<i>.parquet       RL curriculum, easy → hard (when asked)

Every file is written atomically, and nothing in it depends on the clock: the same run, settings
and seed give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from curate import __version__
from curate.aggregate import AGGREGATED_COLUMNS, per_item
from curate.analysis import CALIBRATED_FILE
from curate.data import read_table, resolve_source
from curate.errors import ConfigError
from curate.split import (
    all_arm, assign_sides, budget_tau, check_disjoint, curriculum_stages, decontaminate, deduplicate, fixed_tau,
    per_domain_tau, quantile_tau, random_arm, reversed_arm,
)
from curate.stats import SCORE_COLUMNS
from curate.store import read_judgments, read_manifest, write_atomic, write_parquet_atomic

ARMS = ("random", "reversed", "sft_all", "rl_all")
SCORES = (*SCORE_COLUMNS, "calibrated")


def scored_items(run_dir: Path, score: str) -> pl.DataFrame:
    """Every item of the run with its score (null when it has no valid judgment) and its fields."""
    if score not in SCORES:
        raise ConfigError(f"unknown score {score!r}; choose one of {list(SCORES)}")
    items = pl.read_parquet(run_dir / "items.parquet")
    if "extra" in items.columns:
        extra = items["extra"].struct.unnest()
        clashing = set(extra.columns) & set(items.columns)
        items = items.drop("extra").hstack(extra.rename({c: f"extra_{c}" for c in clashing}))
    items = items.rename({"id": "item_id"})
    if score == "calibrated":
        path = run_dir / CALIBRATED_FILE
        if not path.exists():
            raise ConfigError(f"{run_dir} has no calibration: run `curate stats {run_dir} --calibrate FIELD` first")
        scores = pl.read_parquet(path).select("item_id", pl.col("calibrated").alias("score"))
    else:
        column = SCORE_COLUMNS[score]
        scores = per_item(read_judgments(run_dir, columns=AGGREGATED_COLUMNS)).select(
            "item_id", pl.col(column).cast(pl.Float64).alias("score"))
    return items.join(scores, on="item_id", how="left", maintain_order="left")


def _benchmark_texts(paths: list[str], field: str) -> tuple[list[str], list[str]]:
    texts, sources = [], []
    for path in paths:
        frame, _ = read_table(resolve_source(path), "test", field)
        if field not in frame.columns:
            raise ConfigError(f"benchmark {path} has no field {field!r} (columns: {frame.columns}); "
                              "set --benchmark-field")
        values = frame[field].drop_nulls().cast(pl.String).to_list()
        texts.extend(values)
        sources.extend([Path(path).name] * len(values))
    return texts, sources


def _choose_tau(items: pl.DataFrame, tau: float, quantile: float | None, rl_budget: int | None,
                per_domain: bool) -> Any:
    if quantile is not None and rl_budget is not None:
        raise ConfigError("choose τ one way: --quantile or --rl-budget, not both")
    if per_domain:
        if quantile is None and rl_budget is None:
            raise ConfigError("--per-domain needs --quantile or --rl-budget (a fixed τ is the same in every domain)")
        return per_domain_tau(items, "quantile" if quantile is not None else "budget",
                              quantile if quantile is not None else rl_budget)
    if quantile is not None:
        return quantile_tau(items, quantile)
    if rl_budget is not None:
        return budget_tau(items, rl_budget)
    return fixed_tau(tau)


def make_split(run_dir: str | Path, out_dir: str | Path, tau: float = 3.0, score: str = "mean",
               quantile: float | None = None, rl_budget: int | None = None, per_domain: bool = False,
               arms: tuple[str, ...] = ARMS, stages: int | None = None, stage_by: str = "score", seed: int = 0,
               dedup: bool = True, benchmarks: tuple[str, ...] = (), benchmark_field: str = "question",
               ngram: int = 13, drop_unscored: bool = False) -> dict[str, Any]:
    """Write the split directory; returns its manifest."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    unknown_arms = sorted(set(arms) - set(ARMS))
    if unknown_arms:
        raise ConfigError(f"unknown arm(s) {unknown_arms}; choose from {list(ARMS)}")
    items = scored_items(run_dir, score)
    removed = []
    if dedup:
        items, duplicates = deduplicate(items)
        removed.append(duplicates)
    if benchmarks:
        texts, sources = _benchmark_texts(list(benchmarks), benchmark_field)
        items, contaminated = decontaminate(items, texts, n=ngram, source_names=sources)
        removed.append(contaminated)
    try:
        choice = _choose_tau(items, tau, quantile, rl_budget, per_domain)
        sided = assign_sides(items, choice.tau)
        check_disjoint(sided)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {side: int((sided["side"] == side).sum()) for side in ("sft", "rl", "unscored")}
    for side in ("sft", "rl", "unscored"):
        if side == "unscored" and drop_unscored:
            continue
        write_parquet_atomic(sided.filter(pl.col("side") == side), out_dir / f"{side}.parquet")
    arm_frames = {"random": lambda: random_arm(sided, seed), "reversed": lambda: reversed_arm(sided),
                  "sft_all": lambda: all_arm(sided, "sft"), "rl_all": lambda: all_arm(sided, "rl")}
    arm_counts = {}
    for arm in arms:
        frame = arm_frames[arm]()
        (out_dir / "arms" / arm).mkdir(parents=True, exist_ok=True)
        arm_counts[arm] = {}
        for side in ("sft", "rl"):
            part = frame.filter(pl.col("side") == side)
            write_parquet_atomic(part, out_dir / "arms" / arm / f"{side}.parquet")
            arm_counts[arm][side] = part.height
    stage_counts = None
    if stages:
        try:
            staged = curriculum_stages(sided.filter(pl.col("side") == "rl"), stages, by=stage_by)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        (out_dir / "stages").mkdir(exist_ok=True)
        stage_counts = {}
        for stage in range(1, stages + 1):
            part = staged.filter(pl.col("stage") == stage)
            write_parquet_atomic(part, out_dir / "stages" / f"stage_{stage}.parquet")
            stage_counts[str(stage)] = part.height
    removed_frame = pl.concat(removed, how="diagonal_relaxed") if removed else pl.DataFrame()
    write_atomic(out_dir / "removed.jsonl", "".join(
        json.dumps(row, sort_keys=True, default=str) + "\n"
        for row in removed_frame.select([c for c in ("item_id", "reason", "question") if c in removed_frame.columns])
        .iter_rows(named=True)) if removed_frame.height else "")
    run_manifest = read_manifest(run_dir)
    identity = run_manifest["identity"]
    manifest = {
        "dereason_version": __version__, "run_dir": str(run_dir), "score": score, "seed": seed,
        "tau": choice.tau, "tau_method": choice.method, "tau_detail": choice.detail,
        "counts": counts, "unscored_written": not drop_unscored, "arms": arm_counts, "stages": stage_counts,
        "stage_by": stage_by if stages else None,
        "hygiene": {"deduplicated": dedup, "benchmarks": list(benchmarks), "ngram": ngram,
                    "removed": removed_frame.height},
        "run": {"template": identity["template"], "model": identity["model"], "backend": identity["backend"],
                "sampling": {k: identity[k] for k in ("samples", "temperature", "top_p", "seed", "top_logprobs")},
                "input_fingerprint": identity["input_fingerprint"]},
        "calibration": _calibration_summary(run_dir) if score == "calibrated" else None,
    }
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return manifest


def _calibration_summary(run_dir: Path) -> dict[str, Any]:
    from curate.analysis import load_calibration

    calibration = load_calibration(run_dir)
    return {k: v for k, v in asdict(calibration).items() if k not in ("x_thresholds", "y_thresholds")}
