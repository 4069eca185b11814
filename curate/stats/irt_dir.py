"""Rasch difficulties of a crowd of solve runs, written as an IRT directory and read back: the I/O around
`curate.stats.irt` (pure). `curate irt SOLVE_RUN SOLVE_RUN ... --out IRT_DIR` writes one from solve runs alone;
`curate stats JUDGE_RUN --irt RUN --irt RUN --irt-out IRT_DIR` writes the same while checking a judge against
it; `curate split JUDGE_RUN --stages k --stage-by IRT_DIR` orders the RL stages by it.

    IRT_DIR/
      irt_items.parquet   one row per item of the runs, sorted by item_id: item_id, difficulty (logits, higher is
                          harder), difficulty_se, difficulty_low and difficulty_high (its 95% interval), answers,
                          correct, irt_status, and the item's question, reference and choices (so that a reader
                          can check the ids name its own items)
      irt_models.parquet  one row per run, in the order given: model (the solver's name), run_dir, ability,
                          ability_se, answers, correct, irt_status
      manifest.json       kind "irt"; the runs (run_dir, name, model, template, verifier, samples, temperature,
                          n_items, input_fingerprint); the settings (RaschConfig); the fit (converged, iterations,
                          log_likelihood, answers, item_groups, identification); items per irt_status; notes;
                          the library version

irt_status is "measured"; "all_correct" or "all_wrong" (every answer right, or every one wrong: the difficulty
is set by the prior, beyond every measured item, so its rank is right but its distance is not); or
"no_countable_answer" (the runs hold the item but no countable rollout of it: every rollout failed as error or
timeout, or none is stored yet): then the difficulty and its interval are null, never a number.

The runs are read by `curate.stats.crowd`: two or more solve runs over the same items, each one model, named as
`curate levels` names its solvers. An unfinished run is fitted on the rollouts stored so far (a Rasch fit takes
any number of answers per cell), with a note. The directory appears whole or not at all (`curate.outdir`), and
nothing in it depends on the clock: the same runs and settings give the same bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from curate.errors import ConfigError
from curate.runs import ITEM_TEXT
from curate.stats.crowd import (
    SolverRun,
    check_same_items,
    rollouts,
    run_summary,
    solver_runs,
    unfinished,
)
from curate.stats.irt import (
    IRT_STATUSES,
    ITEMS_SCHEMA,
    RaschConfig,
    RaschFit,
    fit_rasch,
    responses_from_rollouts,
)
from curate.store import MANIFEST, read_items

log = logging.getLogger(__name__)

IRT_ITEMS, IRT_MODELS = "irt_items.parquet", "irt_models.parquet"
KIND = "irt"
UNPLACED = "no_countable_answer"
ITEM_STATUSES = (*IRT_STATUSES, UNPLACED)


class CrowdFit(NamedTuple):
    runs: list[SolverRun]
    rasch: RaschFit
    items: pl.DataFrame  # irt_items.parquet: every item of the runs
    models: pl.DataFrame  # irt_models.parquet
    manifest: dict[str, Any]  # manifest.json


def fit_crowd(run_dirs: Sequence[str | Path], option: str, config: RaschConfig = RaschConfig()) -> CrowdFit:
    """The Rasch fit of the solve runs' rollouts, every item of the runs placed or said why not; `option` names
    what was given the runs in the one-line errors (fewer than two runs, and those of `curate.stats.crowd`)."""
    if len(run_dirs) < 2:
        given = ", ".join(map(str, run_dirs)) or "none"
        raise ConfigError(f"{option} needs at least two solve runs, each one model of the crowd, but got "
                          f"{len(run_dirs)} ({given}); one solve run measures difficulty by its pass rates (`curate "
                          "stats JUDGE_RUN --pass-rate RUN`, `curate split JUDGE_RUN --stages K --stage-by RUN`)")
    runs = solver_runs(run_dirs, option)
    check_same_items(runs, option)
    items_of = [read_items(run.run_dir) for run in runs]
    answered = {run.name: rollouts(run) for run in runs}
    notes = [f"{note}: the fit counts the rollouts stored so far; run the same `curate solve` command again to "
             "finish it" for run, items in zip(runs, items_of, strict=True)
             if (note := unfinished(run.run_dir, run.identity, items["id"],
                                    answered[run.name].group_by("item_id").agg(pl.len().alias("n_rollouts"))))]
    rasch = fit_rasch(responses_from_rollouts(answered), config)
    texts = (pl.concat([items.select("id", *ITEM_TEXT) for items in items_of], how="vertical_relaxed")
             .unique("id", keep="first", maintain_order=True).rename({"id": "item_id"}).sort("item_id"))
    items = (texts.join(rasch.items, on="item_id", how="left", maintain_order="left")
             .with_columns(pl.col("answers", "correct").fill_null(0), pl.col("irt_status").fill_null(UNPLACED))
             .select(*ITEMS_SCHEMA, *ITEM_TEXT))
    runs_by_name = pl.DataFrame({"model": [run.name for run in runs], "run_dir": [str(run.run_dir) for run in runs]})
    models = runs_by_name.join(rasch.models, on="model", how="left", maintain_order="left")  # in the runs' order
    if unplaced := int((items["irt_status"] == UNPLACED).sum()):
        notes.append(f"{unplaced} of the {items.height} items have no countable answer in any run (every rollout "
                     "failed as error or timeout, or none is stored yet): they have no difficulty")
    manifest = {
        "kind": KIND, "runs": [{"name": run.name, **run_summary(run.run_dir, run.identity)} for run in runs],
        "settings": asdict(config), "fit": {k: v for k, v in rasch.detail.items() if k != "notes"},
        "items": items.height, "counts": {status: int((items["irt_status"] == status).sum())
                                          for status in ITEM_STATUSES},
        "notes": notes + rasch.detail["notes"],
    }
    return CrowdFit(runs=runs, rasch=rasch, items=items, models=models, manifest=manifest)


def write_irt_dir(fit: CrowdFit, out_dir: str | Path, overwrite: bool = False,
                  inputs: Sequence[tuple[str, Path]] = ()) -> Path:
    """Write the IRT directory whole; `inputs` are further folders (what, folder) it must not be written into."""
    from curate import __version__
    from curate.files import write_atomic, write_parquet_atomic
    from curate.outdir import atomic_directory, check_output_dir

    inputs = [*[("solve run", run.run_dir) for run in fit.runs], *inputs]
    target = check_output_dir(out_dir, overwrite, inputs)
    manifest = {"dereason_version": __version__, **fit.manifest}
    with atomic_directory(out_dir, overwrite, inputs) as staging:
        write_parquet_atomic(fit.items, staging / IRT_ITEMS)
        write_parquet_atomic(fit.models, staging / IRT_MODELS)
        write_atomic(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return target


def make_irt(run_dirs: Sequence[str | Path], out_dir: str | Path, config: RaschConfig = RaschConfig(),
             overwrite: bool = False) -> dict[str, Any]:
    """`curate irt`: fit the solve runs and write the IRT directory whole, logging the fit's notes as warnings;
    returns the manifest without the library version."""
    from curate.outdir import check_output_dir

    check_output_dir(out_dir, overwrite, [("solve run", Path(run)) for run in run_dirs])  # before the work
    fit = fit_crowd(run_dirs, "curate irt", config)
    write_irt_dir(fit, out_dir, overwrite)
    for note in fit.manifest["notes"]:
        log.warning("%s", note)
    return fit.manifest


def is_irt_directory(path: str | Path) -> bool:
    """How an option that takes a run or an IRT directory tells them apart."""
    return (Path(path) / IRT_ITEMS).is_file()


def read_irt_dir(path: str | Path, option: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """irt_items.parquet and manifest.json of an IRT directory; ConfigError naming `option` for anything else."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not is_irt_directory(path) or not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ConfigError(f"{option} {path} is not an IRT directory (it needs {IRT_ITEMS} and a {MANIFEST} of kind "
                          f"{KIND!r}); write one with `curate irt SOLVE_RUN SOLVE_RUN ... --out DIR`")
    return pl.read_parquet(path / IRT_ITEMS), manifest
