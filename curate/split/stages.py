"""A difficulty measured outside the judge run, to order an RL curriculum by: `curate split JUDGE_RUN --stages k
--stage-by PATH` takes a folder of either kind, as peers:

    a solve run       (`curate solve` over the same items): its pass rates, lower = harder, in the column
                      solve_pass_rate; the split's manifest names the run under stage_run
    an IRT directory  (`curate irt`, `curate stats --irt-out`): its Rasch difficulties, higher = harder, in the
                      columns irt_difficulty and irt_status; the manifest names it and its runs under stage_irt

Every item of the split carries the column(s), null where the source has no value. An RL item without one is
refused, counted by why (a solve run: no_countable_attempt, not_solved_yet, not_in_solve_run; an IRT fit:
no_countable_answer, not_in_irt_fit): a curriculum cannot place an item of unknown difficulty. An item that every
model of the crowd solved, or none did, has a difficulty set by the IRT prior: it is placed, since its rank
(beyond every measured item) is right, and a note counts such RL items. A source whose shared ids name other
items (question, reference or choices differ) is refused; an unfinished solve run is used with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import ConfigError
from curate.runs import (
    ITEM_TEXT,
    SOLVE,
    item_mismatch,
    read_response_run,
    refuse_other_items,
)
from curate.stats.crowd import run_summary, unfinished
from curate.stats.irt_dir import UNPLACED, is_irt_directory, read_irt_dir
from curate.store import read_items

SOLVE_PASS_RATE = "solve_pass_rate"  # what a --stage-by SOLVE_RUN adds to every item
IRT_DIFFICULTY, IRT_STATUS = "irt_difficulty", "irt_status"  # what a --stage-by IRT_DIR adds
COLUMNS = (SOLVE_PASS_RATE, IRT_DIFFICULTY, IRT_STATUS)
PRIOR_ENDS = {"all_correct": ("right", "below", "open"), "all_wrong": ("wrong", "above", "close")}


@dataclass(frozen=True)
class MeasuredOrder:
    path: Path
    what: str  # "solve run" or "IRT directory"
    column: str  # what the stages rank by
    harder_when: str
    values: pl.DataFrame  # item_id and the columns every item of the split gets
    status: pl.DataFrame  # item_id, status: why the source holds no value for an item it has
    missing: str  # "no measured pass rate in the solve run …": what an unplaced RL item lacks
    absent: str  # the status of an item the source does not hold
    remedy: str
    manifest: dict[str, Any]  # {"stage_run": …} or {"stage_irt": …}
    notes: tuple[str, ...]


def measured_order(judge_dir: Path, path: Path, harder_when: str | None) -> MeasuredOrder:
    """The order that the solve run or IRT directory at `path` gives the judge run's items; ConfigError for a
    --harder-when against its direction, or a source over other items."""
    return (_irt_order if is_irt_directory(path) else _solve_order)(judge_dir, path, harder_when)


def _solve_order(judge_dir: Path, solve_dir: Path, harder_when: str | None) -> MeasuredOrder:
    if harder_when not in (None, "low"):
        raise ConfigError(f"--stage-by {solve_dir} orders the RL stages by the solve run's pass rate, which is lower "
                          f"for harder items: drop --harder-when {harder_when}")
    identity, solve_items, per = read_response_run(solve_dir, SOLVE, "--stage-by")
    refuse_other_items(read_items(judge_dir), str(judge_dir), solve_dir, solve_items, "--stage-by")
    rates = (solve_items.select(pl.col("id").alias("item_id"))
             .join(per.select("item_id", "pass_rate", "pass_status"), on="item_id", how="left")
             .select("item_id", pl.col("pass_rate").alias(SOLVE_PASS_RATE),
                     pl.col("pass_status").fill_null("not_solved_yet").alias("status")))
    short = unfinished(solve_dir, identity, solve_items["id"], per)
    return MeasuredOrder(
        path=solve_dir, what="solve run", column=SOLVE_PASS_RATE, harder_when="low", values=rates.drop("status"),
        status=rates.select("item_id", "status"), missing=f"no measured pass rate in the solve run {solve_dir}",
        absent="not_in_solve_run",
        remedy="run the same `curate solve` again to finish it (--retry-failed asks failed rollouts again; over the "
               "whole data for items not in it), or stage by the score",
        manifest={"stage_run": {"task": SOLVE, **run_summary(solve_dir, identity)}},
        notes=(f"{short}: its pass rates count the rollouts stored so far",) if short else ())


def _irt_order(judge_dir: Path, irt_dir: Path, harder_when: str | None) -> MeasuredOrder:
    if harder_when not in (None, "high"):
        raise ConfigError(f"--stage-by {irt_dir} orders the RL stages by IRT difficulty, which is higher for harder "
                          f"items: drop --harder-when {harder_when}")
    items, manifest = read_irt_dir(irt_dir, "--stage-by")
    fitted = items.select(pl.col("item_id").alias("id"), *ITEM_TEXT)
    if what := item_mismatch(read_items(judge_dir), fitted, str(judge_dir), str(irt_dir)):
        raise ConfigError(f"--stage-by {irt_dir}: {what}; pass an IRT fit of solve runs over the items the judge "
                          "scored")
    return MeasuredOrder(
        path=irt_dir, what="IRT directory", column=IRT_DIFFICULTY, harder_when="high",
        values=items.select("item_id", pl.col("difficulty").alias(IRT_DIFFICULTY), pl.col("irt_status")
                            .alias(IRT_STATUS)),
        status=items.select("item_id", pl.col("irt_status").alias("status")),
        missing=f"no IRT difficulty in {irt_dir}", absent="not_in_irt_fit",
        remedy=f"solve them with the crowd's models (items with {UNPLACED} need `curate solve` again, "
               "--retry-failed asking failed rollouts again), fit again with `curate irt`, or stage by the score",
        manifest={"stage_irt": {"irt_dir": str(irt_dir), "runs": manifest["runs"], "settings": manifest["settings"],
                                "counts": manifest["counts"]}},
        notes=())


def check_placed(rl: pl.DataFrame, order: MeasuredOrder) -> None:
    """Refuse RL items without a value, counted by why."""
    unplaced = (rl.filter(pl.col(order.column).is_null()).select("item_id")
                .join(order.status, on="item_id", how="left").with_columns(pl.col("status").fill_null(order.absent)))
    if unplaced.height:
        why = ", ".join(f"{n} {status}" for status, n in sorted(unplaced["status"].value_counts().rows()))
        raise ConfigError(f"{unplaced.height} of {rl.height} RL items have {order.missing} ({why}), so the "
                          f"curriculum cannot place them: {order.remedy}")


def placement_notes(rl: pl.DataFrame, order: MeasuredOrder) -> list[str]:
    """The source's notes, and how many RL items the IRT prior placed (right or wrong for every model)."""
    notes = list(order.notes)
    if IRT_STATUS in order.values.columns:
        for status, (answer, side, end) in PRIOR_ENDS.items():
            if count := int((rl[IRT_STATUS] == status).sum()):
                notes.append(f"{count} of the {rl.height} RL items were answered {answer} by every model of the crowd "
                             f"({status}): their IRT difficulty is set by the prior, {side} every measured item, so "
                             f"they {end} the curriculum")
    return notes
