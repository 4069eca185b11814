"""`curate levels RUN...`: the staged-RL levels of arXiv 2504.00829 from several solve runs' pass rates.

The rules are curate.levels' (pure); this module reads the runs and writes the levels directory:

    OUT/
      levels.json        the settings, each solver's run and identity, counts per level, rule and drop reason,
                         and the paper the rules follow (what --json prints)
      levels.parquet     item_id, level, rule, reason: one row per (item, level); the levels overlap as in the
                         paper unless --exclusive
      level_<k>.parquet  level k's items, one row each, with their rule and reason and every field of the item
                         (question, reference, choices, domain, and the input's own; one named like a levels
                         column is written as extra_<name>): the data of one RL stage
      dropped.parquet    item_id, rule, reason of every item in no level

The runs come in solver order, smallest first, and must be finished solve runs over the same items (the same
ids naming the same question, reference and choices). A solver is named by its run's model, followed by the
run's folder when two runs share a model. OUT appears whole or not at all (curate.outdir), and nothing in it
depends on the clock: the same runs and settings give the same bytes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import polars as pl
import typer
from rich.table import Table

from curate.cli.common import errors, out, setup_logging
from curate.errors import ConfigError
from curate.levels import (
    DROP_RULES,
    LEVEL_RULES,
    LEVELS_SCHEMA,
    PAPER,
    ROLES,
    LevelConfig,
    Levels,
)
from curate.runs import SOLVE, item_mismatch, read_run_of, run_items
from curate.store import read_items

LEVEL_HELP = {f.name: f.metadata["help"] for f in fields(LevelConfig)}
DEFAULTS = {f.name: f.default for f in fields(LevelConfig)}
LEVELS_JSON = "levels.json"
EVER_SOLVED_ROLE = "ever_solved"  # a solver after the third: it only decides whether an item is ever solved


class SolverRun(NamedTuple):
    name: str
    run_dir: Path
    identity: dict[str, Any]


def _setting(name: str, *flags: str, more: str = "") -> Any:
    """A typer option whose help text is LevelConfig's field's (a setting is declared once)."""
    return typer.Option(*flags, help=f"{LEVEL_HELP[name]} {more}".strip())


def solver_runs(run_dirs: Sequence[Path]) -> list[SolverRun]:
    """Each run with its identity and solver name, in the order given; ConfigError naming a run that is given
    twice or is not a solve run, RunDirError for a folder that is not a run directory."""
    positions: dict[Path, int] = {}
    identities = []
    for position, run_dir in enumerate(run_dirs, 1):
        if (first := positions.setdefault(run_dir.resolve(), position)) != position:
            raise ConfigError(f"{run_dir} is given twice (solvers {first} and {position}); give each solver's solve "
                              "run once, smallest solver first")
        identities.append(read_run_of(run_dir, SOLVE, "levels:"))
    models = Counter(identity["model"] for identity in identities)

    def names(folder_of: Any) -> list[str]:
        return [identity["model"] if models[identity["model"]] == 1 else f"{identity['model']} ({folder_of(run_dir)})"
                for identity, run_dir in zip(identities, run_dirs, strict=True)]

    labels = names(lambda run_dir: run_dir.name)
    if len(set(labels)) < len(labels):  # runs of one model in folders of one name
        labels = names(str)
    return [SolverRun(*solver) for solver in zip(labels, run_dirs, identities, strict=True)]


def _check_same_items(runs: Sequence[SolverRun]) -> None:
    """ConfigError naming the first run whose ids name other items than the first run's (question, reference or
    choices differ). Ids only one run holds are assign_levels' to report."""
    first = read_items(runs[0].run_dir)
    for run in runs[1:]:
        if what := item_mismatch(first, read_items(run.run_dir), str(runs[0].run_dir), str(run.run_dir)):
            raise ConfigError(f"solve run {run.run_dir}: {what}; every solver must solve the same items: solve the "
                              "same data with each")


def _pass_rates(run: SolverRun, items: pl.DataFrame) -> pl.DataFrame:
    """The run's per-item pass rates from its stored rollouts; ConfigError when an item lacks some of them."""
    from curate.passrate import pass_rates
    from curate.store import read_judgments

    rollouts = read_judgments(run.run_dir, columns=("item_id", "sample_idx", "status"))
    samples = run.identity["samples"]
    short = (items.select(pl.col("id").alias("item_id"))
             .join(rollouts.group_by("item_id").len(), on="item_id", how="left", maintain_order="left")
             .filter(pl.col("len").fill_null(0) < samples))
    if short.height:
        raise ConfigError(f"solve run {run.run_dir} is unfinished: {short.height} of {items.height} items have fewer "
                          f"than its {samples} rollouts (e.g. {short['item_id'][0]!r}); run the same `curate solve` "
                          "command again to finish it")
    return pass_rates(rollouts.rename({"status": "verdict"}), where=f"solve run {run.run_dir}")


def _summary(runs: Sequence[SolverRun], config: LevelConfig, result: Levels, n_items: int) -> dict[str, Any]:
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
    }


def levels_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"


def make_levels(run_dirs: Sequence[str | Path], out_dir: str | Path, settings: dict[str, Any],
                overwrite: bool = False) -> dict[str, Any]:
    """Write the levels directory of the solve runs `run_dirs` (smallest solver first) whole; returns levels.json's
    content. `settings`: LevelConfig's fields but `solvers`; `drop_unsolved_by` may name a solver's run directory."""
    from curate import __version__
    from curate.levels import assign_levels
    from curate.outdir import atomic_directory, check_output_dir
    from curate.store import write_atomic, write_parquet_atomic

    runs = solver_runs([Path(run_dir) for run_dir in run_dirs])
    if (drop := settings.get("drop_unsolved_by")) is not None:
        named = {os.path.abspath(run.run_dir): run.name for run in runs}
        settings = {**settings, "drop_unsolved_by": named.get(os.path.abspath(drop), drop)}
    config = LevelConfig(solvers=tuple(run.name for run in runs), **settings)
    inputs = [("solve run", run.run_dir) for run in runs]
    check_output_dir(out_dir, overwrite, inputs)  # before the work, and again when writing
    items = [read_items(run.run_dir) for run in runs]
    _check_same_items(runs)
    result = assign_levels({run.name: _pass_rates(run, its) for run, its in zip(runs, items, strict=True)}, config)
    item_fields = run_items(runs[0].run_dir, tuple(LEVELS_SCHEMA))
    files = {"levels.parquet": result.levels, "dropped.parquet": result.dropped}
    for level in sorted(set(LEVEL_RULES.values())):
        files[f"level_{level}.parquet"] = (result.levels.filter(pl.col("level") == level)
                                           .join(item_fields, on="item_id", how="left", maintain_order="left"))
    summary = {"dereason_version": __version__, **_summary(runs, config, result, item_fields.height)}
    with atomic_directory(out_dir, overwrite, inputs) as staging:
        for name, frame in files.items():
            write_parquet_atomic(frame, staging / name)
        write_atomic(staging / LEVELS_JSON, levels_json(summary))
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


def levels(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Solve runs (`curate solve`) over the same items, one per solver, smallest solver first.",
        show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Levels directory to write (whole, or not at all).")],
    level3_success_fraction: Annotated[float, _setting("level3_success_fraction", "--level3-success-fraction")] \
        = DEFAULTS["level3_success_fraction"],
    seed: Annotated[int, _setting("seed", "--seed")] = DEFAULTS["seed"],
    drop_unsolved_by: Annotated[str | None, _setting("drop_unsolved_by", "--drop-unsolved-by", more=(
        "Give its name or its run directory."))] = DEFAULTS["drop_unsolved_by"],
    exclusive: Annotated[bool, _setting("exclusive", "--exclusive/--overlapping")] = DEFAULTS["exclusive"],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print levels.json.")] = False,
) -> None:
    """Staged-RL difficulty levels (arXiv 2504.00829) from the pass rates of three or more solvers' solve runs."""
    setup_logging()
    with errors():
        summary = make_levels(run_dirs, out_dir, {"level3_success_fraction": level3_success_fraction, "seed": seed,
                                                  "drop_unsolved_by": drop_unsolved_by, "exclusive": exclusive},
                              overwrite=overwrite)
        if as_json:
            print(levels_json(summary), end="")
            return
        _print_levels(summary, out_dir)
