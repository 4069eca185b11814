"""Run directories of every kind, read and checked in one place: a judge run (`curate score`), a solve run,
a respond run and a pairs run (`curate pairs`), which is read wherever a judge run is: its items' scores are
their Bradley-Terry strengths. Whoever takes a run from the user (stats, compare, split, export, levels) reads it
here, so every command refuses the same things with the same words: a folder that is not a finished run
directory, a run of another kind (saying what to do with it), and runs whose shared ids name different
items. Per-item frames are aggregated from the records stored now, as the command that made the run
does: per_item.parquet is read instead only when its stamp names the store's generation now (it is stale when a
run stopped early).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from curate import __version__
from curate.errors import ConfigError, RunDirError
from curate.identity import IDENTITY_DEFAULTS
from curate.store import (
    DATABASE,
    ITEMS,
    MANIFEST,
    PER_ITEM,
    read_items,
    read_judgments,
    read_manifest,
    stored_generation,
)
from curate.tasks import rebuild_task

SCORE, SOLVE, RESPOND, PAIRS = "score", "solve", "respond", "pairs"
READ_AS = {SCORE: (SCORE, PAIRS)}  # the runs taken where a run of the key's kind is asked for
SHOWN_CHARS = 60  # of a question quoted in a message
ITEM_TEXT = ("question", "reference", "choices")  # what makes two items with one id the same item
# What to do with a run of each kind, for a command that was given it in the wrong place.
USES = {SCORE: "split it (`curate split`) or check it (`curate stats`)",
        SOLVE: "check a judge run against it (`curate stats JUDGE_RUN --pass-rate RUN`, or --irt with other solve "
               "runs), order RL stages by it (`curate split JUDGE_RUN --stages K --stage-by RUN`) or make levels "
               "from several (`curate levels`)",
        RESPOND: "export its responses (`curate export SPLIT_DIR --responses RUN`)"}
USES[PAIRS] = USES[SCORE]
MADE_BY = {SCORE: "curate score DATA --out RUN", SOLVE: "curate solve DATA --model M --verify NAME --samples k --out RUN",
           RESPOND: "curate respond DATA --model M [--verify NAME] --out RUN",
           PAIRS: "curate pairs DATA --model M --out RUN"}


def is_run_directory(value: str | Path) -> bool:
    """How an option that takes a field or a run tells them apart: a folder holding a manifest.json is a run."""
    return (Path(value) / MANIFEST).is_file()


def read_run_identity(run_dir: str | Path, made_by: str = SCORE, option: str = "") -> dict[str, Any]:
    """The identity in a finished run directory's manifest; RunDirError (one line) for any other folder or file.
    `made_by` names the command whose --out folder the caller wants, for the hint; `option`, what was given it."""
    run_dir = Path(run_dir)
    hint = f"pass the --out folder of `curate {made_by}`"
    given = f"{option} {run_dir}" if option else str(run_dir)
    if not (run_dir / MANIFEST).is_file():
        state = "it does not exist" if not run_dir.exists() else "it is a file" if not run_dir.is_dir() else \
            f"it has no {MANIFEST}"
        raise RunDirError(f"{given} is not a run directory ({state}); {hint}")
    try:
        identity = read_manifest(run_dir).get("identity")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        identity = None
    if not isinstance(identity, dict):
        raise RunDirError(f"{given} is not a run directory: its {MANIFEST} holds no run identity (a split or "
                          f"export folder?); {hint}")
    missing = [name for name in (DATABASE, ITEMS) if not (run_dir / name).is_file()]
    if missing:
        raise RunDirError(f"{given} is an unfinished run directory (no {' or '.join(missing)}); run the same "
                          f"`curate {run_task(identity)}` command again to complete it")
    return identity


def run_task(identity: dict[str, Any]) -> str:
    """The task that made a run: score, solve, respond or pairs (runs older than solve and respond are score runs)."""
    return identity.get("task", SCORE)


def read_run_of(run_dir: str | Path, kind: str, option: str) -> dict[str, Any]:
    """`read_run_identity` of a run made by `curate {kind}` (for a score run, a pairs run too: READ_AS); RunDirError
    naming `option` and what to do with a run of another kind."""
    identity = read_run_identity(run_dir, made_by=kind, option=option)
    if (task := run_task(identity)) not in READ_AS.get(kind, (kind,)):
        raise RunDirError(f"{option} {run_dir} is a {task} run, not a {kind} run ({MADE_BY[kind]}); with a {task} "
                          f"run, {USES.get(task, 'see its command')}")
    return identity


def aggregates_stamp(run_dir: str | Path, identity: dict[str, Any]) -> dict[str, str] | None:
    """What a per-item frame aggregated now is aggregated from: the store's generation, the run's identity and
    dereason's version (per_item.parquet's metadata); None when the store does not count its generations."""
    generation = stored_generation(run_dir)
    if generation is None:
        return None
    return {"dereason_version": __version__, "identity": json.dumps(identity, sort_keys=True),
            "store_generation": str(generation)}


def fresh_per_item(run_dir: str | Path, identity: dict[str, Any]) -> pl.DataFrame | None:
    """per_item.parquet when it was aggregated from the records stored now (its stamp is `aggregates_stamp` now)."""
    stamp, path = aggregates_stamp(run_dir, identity), Path(run_dir) / PER_ITEM
    if stamp and path.is_file() and stamp.items() <= pl.read_parquet_metadata(path).items():
        return pl.read_parquet(path)
    return None


def aggregated_now(run_dir: str | Path, identity: dict[str, Any]) -> pl.DataFrame:
    """The run's per-item frame from the records stored now, as its task aggregates them (`fresh_per_item` when
    per_item.parquet holds it)."""
    if (fresh := fresh_per_item(run_dir, identity)) is not None:
        return fresh
    task = rebuild_task({**IDENTITY_DEFAULTS, **identity})
    return task.aggregate(read_judgments(run_dir, columns=task.aggregated_columns))[0]


def read_response_run(run_dir: Path, kind: str, option: str) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame]:
    """The identity, items and per-item frame (aggregated now) of a solve or respond run given to `option`."""
    identity = read_run_of(run_dir, kind, option)
    return identity, read_items(run_dir), aggregated_now(run_dir, identity)


def item_differences(items_a: pl.DataFrame, items_b: pl.DataFrame) -> pl.DataFrame:
    """id, `same`, and each run's question, over the ids both items frames hold (RUN_DIR/items.parquet);
    `same` is false when the question, the reference or the choices differ."""
    def text(items: pl.DataFrame) -> pl.DataFrame:
        return items.select("id", "question", pl.struct(ITEM_TEXT).struct.json_encode().alias("text"))

    joined = text(items_a).join(text(items_b), on="id", suffix="_b")
    return joined.select("id", (pl.col("text") == pl.col("text_b")).alias("same"),
                         pl.col("question").alias("question_a"), "question_b").sort("id")


def _quoted(question: str) -> str:
    return repr(question if len(question) <= SHOWN_CHARS else question[:SHOWN_CHARS] + "…")


def item_mismatch(items_a: pl.DataFrame, items_b: pl.DataFrame, where_a: str, where_b: str) -> str | None:
    """What is wrong when ids both item frames hold name different items (question, reference or choices differ),
    else None; `where_*` name each side in the message."""
    shared = item_differences(items_a, items_b)
    different = shared.filter(~pl.col("same"))
    if different.height == 0:
        return None
    first = different.row(0, named=True)
    return (f"{different.height} of the {shared.height} ids both hold name different items (question, reference or "
            f"choices differ; e.g. id {first['id']!r}: {_quoted(first['question_a'])} in {where_a}, "
            f"{_quoted(first['question_b'])} in {where_b})")


def refuse_other_items(items: pl.DataFrame, where: str, run_dir: Path, run_items: pl.DataFrame, option: str) -> None:
    """ConfigError when the run given to `option` shares ids with `items` (of `where`) that name other items."""
    if what := item_mismatch(items, run_items, where, str(run_dir)):
        raise ConfigError(f"{option} {run_dir}: {what}; pass a run over the same items")


def run_items(run_dir: Path, reserved: tuple[str, ...]) -> pl.DataFrame:
    """The run's items with `item_id` and the input's own fields (`extra`) as columns; one whose name is taken
    (`reserved`, or a canonical field) gets the prefix `extra_`."""
    items = read_items(run_dir)
    if "extra" in items.columns:
        extra = items["extra"].struct.unnest()
        clashing = set(extra.columns) & {*items.columns, *reserved}
        items = items.drop("extra").hstack(extra.rename({c: f"extra_{c}" for c in clashing}))
    return items.rename({"id": "item_id"})
