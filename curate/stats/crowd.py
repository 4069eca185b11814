"""Several `curate solve` runs read together, each one solver: the staged-RL levels (`curate levels`, smallest
solver first) and Rasch difficulties (`curate irt`, `curate stats --irt`) read them here, so both refuse the same
things with the same words: a run given twice, a folder that is not a solve run, runs whose shared ids name
different items.

A solver is named by its run's model, followed by the run's folder when two runs share a model (by the whole
path when those folders share a name too).

A solve run is unfinished when some of its items have fewer rollouts stored than its `--samples`. `unfinished`
says so in one line: `curate levels` refuses such a run (its rules read "solves all" and "fails" from every
attempt), while pass rates and IRT count the rollouts stored so far and carry the line as a note.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from curate.errors import ConfigError
from curate.runs import SOLVE, item_mismatch, read_run_of
from curate.store import read_items, read_judgments


class SolverRun(NamedTuple):
    name: str
    run_dir: Path
    identity: dict[str, Any]


def solver_runs(run_dirs: Sequence[str | Path], option: str) -> list[SolverRun]:
    """Each run with its identity and solver name, in the order given; ConfigError naming a run given twice or
    one that is not a solve run (RunDirError for a folder that is not a run directory); `option` names what was
    given the runs in those messages."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    positions: dict[Path, int] = {}
    identities = []
    for position, run_dir in enumerate(run_dirs, 1):
        if (first := positions.setdefault(run_dir.resolve(), position)) != position:
            raise ConfigError(f"{option} {run_dir} is given twice (solvers {first} and {position}); give each "
                              "solver's solve run once")
        identities.append(read_run_of(run_dir, SOLVE, option))
    models = Counter(identity["model"] for identity in identities)

    def names(folder_of: Callable[[Path], str]) -> list[str]:
        return [identity["model"] if models[identity["model"]] == 1 else f"{identity['model']} ({folder_of(run_dir)})"
                for identity, run_dir in zip(identities, run_dirs, strict=True)]

    labels = names(lambda run_dir: run_dir.name)
    if len(set(labels)) < len(labels):  # runs of one model in folders of one name
        labels = names(str)
    return [SolverRun(*solver) for solver in zip(labels, run_dirs, identities, strict=True)]


def check_same_items(runs: Sequence[SolverRun], option: str) -> None:
    """ConfigError naming the first run whose ids name other items than the first run's (question, reference or
    choices differ). Ids only some runs hold are the caller's to judge."""
    first = read_items(runs[0].run_dir)
    for run in runs[1:]:
        if what := item_mismatch(first, read_items(run.run_dir), str(runs[0].run_dir), str(run.run_dir)):
            raise ConfigError(f"{option} solve run {run.run_dir}: {what}; every solver must solve the same items: "
                              "solve the same data with each")


def rollouts(run: SolverRun) -> pl.DataFrame:
    """The run's stored rollouts as `curate.stats.passrate` takes them: item_id, sample_idx, verdict."""
    return read_judgments(run.run_dir, columns=("item_id", "sample_idx", "status")).rename({"status": "verdict"})


def unfinished(run_dir: str | Path, identity: dict[str, Any], item_ids: pl.Series,
               per_item: pl.DataFrame) -> str | None:
    """One line when some item of `item_ids` has fewer rollouts stored than the run's k ("solve run R is
    unfinished: N of M items have fewer than its k rollouts (e.g. 'x', 3 stored)"), else None; `per_item` holds
    item_id and n_rollouts (an item it lacks has none)."""
    samples = identity["samples"]
    short = (item_ids.alias("item_id").to_frame()
             .join(per_item.select("item_id", "n_rollouts"), on="item_id", how="left", maintain_order="left")
             .with_columns(pl.col("n_rollouts").fill_null(0)).filter(pl.col("n_rollouts") < samples))
    if short.height == 0:
        return None
    first = short.row(0, named=True)
    return (f"solve run {run_dir} is unfinished: {short.height} of {item_ids.len()} items have fewer than its "
            f"{samples} rollouts (e.g. {first['item_id']!r}, {first['n_rollouts']} stored)")


def run_summary(run_dir: str | Path, identity: dict[str, Any]) -> dict[str, Any]:
    """What a result says about a solve run it was measured by."""
    return {"run_dir": str(run_dir), **{key: identity.get(key) for key in (
        "model", "template", "verifier", "samples", "temperature", "n_items", "input_fingerprint")}}
