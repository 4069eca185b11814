"""`curate levels RUN...`: the staged-RL levels of arXiv 2504.00829 from several solve runs' pass rates.

The rules are curate.split.levels' (pure); this module reads the runs and writes the levels directory:

    OUT/
      levels.json        the settings, each solver's run and identity, counts per level, rule and drop reason,
                         the paper the rules follow, and notes: warnings on the solvers' rollouts per item (a
                         rule no item can meet, solvers sampled unequally), also logged (what --json prints)
      levels.parquet     item_id, level, rule, reason: one row per (item, level); the levels overlap as in the
                         paper unless --exclusive
      level_<k>.parquet  level k's items, one row each, with their rule and reason and every field of the item
                         (question, reference, choices, domain, and the input's own; one named like a levels
                         column is written as extra_<name>): the data of one RL stage
      dropped.parquet    item_id, rule, reason of every item in no level

The runs come in solver order, smallest first, and must be finished solve runs over the same items (the same
ids naming the same question, reference and choices), read by curate.stats.crowd, which names each solver. OUT
appears whole or not at all (curate.outdir), and nothing in it depends on the clock: the same runs and settings
give the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table

from curate.cli.common import Overwrite, errors, out, setup_logging
from curate.cli.flags import settings_command
from curate.errors import ConfigError
from curate.runs import is_run_directory, run_items
from curate.split.levels import (
    DROP_RULES,
    LEVEL_RULES,
    LEVELS_SCHEMA,
    PAPER,
    ROLES,
    LevelConfig,
    Levels,
    LevelsConfig,
    sample_notes,
)
from curate.stats.crowd import (
    SolverRun,
    check_same_items,
    rollouts,
    solver_runs,
    unfinished,
)
from curate.store import read_items

log = logging.getLogger(__name__)

LEVELS_JSON = "levels.json"
EVER_SOLVED_ROLE = "ever_solved"  # a solver after the third: it only decides whether an item is ever solved


def _pass_rates(run: SolverRun, items: pl.DataFrame) -> pl.DataFrame:
    """The run's per-item pass rates from its stored rollouts; ConfigError when an item lacks some of them."""
    from curate.stats.passrate import pass_rates

    rates = pass_rates(rollouts(run), where=f"solve run {run.run_dir}")
    if short := unfinished(run.run_dir, run.identity, items["id"], rates):
        raise ConfigError(f"{short}; run the same `curate solve` command again to finish it")
    return rates


def _drop_rule(runs: Sequence[SolverRun], drop: str | None) -> str | None:
    """The solver that --drop-unsolved-by names: by name, or by its run directory, which must be a solver's."""
    if drop is None:
        return None
    named = {os.path.abspath(run.run_dir): run.name for run in runs}
    if (name := named.get(os.path.abspath(drop))) is not None:
        return name
    if is_run_directory(drop) and drop not in {run.name for run in runs}:
        raise ConfigError(f"--drop-unsolved-by {drop} is not one of the solvers' runs ({len(runs)} given); give it "
                          "too, as a further run after the large solver's (as the paper's DeepSeek-R1, it then only "
                          "decides whether an item is ever solved)")
    return drop


def _summary(runs: Sequence[SolverRun], config: LevelConfig, result: Levels, n_items: int,
             notes: list[str]) -> dict[str, Any]:
    levels, dropped = result.levels, result.dropped
    return {
        "paper": PAPER, "settings": asdict(config),
        "solvers": [{"name": run.name, "role": ROLES[k] if k < len(ROLES) else EVER_SOLVED_ROLE,
                     "run_dir": str(run.run_dir), "identity": run.identity} for k, run in enumerate(runs)],
        "items": n_items, "items_in_levels": levels["item_id"].n_unique(), "items_dropped": dropped.height,
        "counts": {"levels": {str(level): int((levels["level"] == level).sum())
                              for level in sorted(set(LEVEL_RULES.values()))},
                   "rules": {rule: int((levels["rule"] == rule).sum()) for rule in LEVEL_RULES},
                   "dropped": {rule: int((dropped["rule"] == rule).sum()) for rule in DROP_RULES}},
        "notes": notes,
    }


def levels_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"


def make_levels(run_dirs: Sequence[str | Path], out_dir: str | Path, settings: LevelsConfig = LevelsConfig(),
                overwrite: bool = False) -> dict[str, Any]:
    """Write the levels directory of the solve runs `run_dirs` (smallest solver first) whole; returns levels.json's
    content. `settings.drop_unsolved_by` may name a solver's run directory."""
    from curate import __version__
    from curate.files import write_atomic, write_parquet_atomic
    from curate.outdir import atomic_directory, check_output_dir
    from curate.split.levels import assign_levels

    runs = solver_runs(run_dirs, "levels:")
    config = LevelConfig(solvers=tuple(run.name for run in runs),
                         **asdict(replace(settings, drop_unsolved_by=_drop_rule(runs, settings.drop_unsolved_by))))
    inputs = [("solve run", run.run_dir) for run in runs]
    check_output_dir(out_dir, overwrite, inputs)  # before the work, and again when writing
    items = [read_items(run.run_dir) for run in runs]
    check_same_items(runs, "levels:")
    result = assign_levels({run.name: _pass_rates(run, its) for run, its in zip(runs, items, strict=True)}, config)
    notes = sample_notes({run.name: run.identity["samples"] for run in runs}, config.solvers)
    item_fields = run_items(runs[0].run_dir, tuple(LEVELS_SCHEMA))
    files = {"levels.parquet": result.levels, "dropped.parquet": result.dropped}
    for level in sorted(set(LEVEL_RULES.values())):
        files[f"level_{level}.parquet"] = (result.levels.filter(pl.col("level") == level)
                                           .join(item_fields, on="item_id", how="left", maintain_order="left"))
    summary = {"dereason_version": __version__, **_summary(runs, config, result, item_fields.height, notes)}
    with atomic_directory(out_dir, overwrite, inputs) as staging:
        for name, frame in files.items():
            write_parquet_atomic(frame, staging / name)
        write_atomic(staging / LEVELS_JSON, levels_json(summary))
    for note in notes:
        log.warning("%s", note)
    return summary


def _print_levels(summary: dict[str, Any], out_dir: Path) -> None:
    paper = summary["paper"]
    table = Table(title=f"Levels {out_dir} ({paper['authors']} {paper['year']}, arXiv {paper['arxiv']})",
                  show_header=False)
    for solver in summary["solvers"]:
        table.add_row(solver["role"], f"{solver['name']} ({solver['run_dir']})")
    counts = summary["counts"]
    for level, count in counts["levels"].items():
        rules = ", ".join(f"{rule} {counts['rules'][rule]}" for rule, of in LEVEL_RULES.items() if str(of) == level)
        table.add_row(f"level {level}", f"{count:>6}  ({rules})")
    for rule, count in counts["dropped"].items():
        table.add_row(f"dropped: {rule}", f"{count:>6}")
    table.add_row("items", f"{summary['items']} ({summary['items_in_levels']} in a level, {summary['items_dropped']} "
                           "dropped: see dropped.parquet)")
    out.print(table)


@settings_command(LevelsConfig)
def levels(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Solve runs (`curate solve`) over the same items, one per solver, smallest solver first.",
        show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Levels directory to write (whole, or not at all).")],
    overwrite: Overwrite = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print levels.json.")] = False,
    *, settings: LevelsConfig,
) -> None:
    """Staged-RL difficulty levels (arXiv 2504.00829) from the pass rates of three or more solvers' solve runs."""
    setup_logging()
    with errors():
        summary = make_levels(run_dirs, out_dir, settings, overwrite=overwrite)
        if as_json:
            print(levels_json(summary), end="")
            return
        _print_levels(summary, out_dir)
