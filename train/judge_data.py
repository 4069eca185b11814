"""What a distilled judge learns (train.judge): each item's difficulty level 1..5, from any labelled source.

The label is
    an input field     a number per item: MATH's `level`, TAL's `difficulty`, ARC's `schoolGrade`, a pass rate
                       (`harder_when: low`)
    a score run        `curate score`'s item scores (the mean over samples): distilling a bigger judge
    a solve run        `curate solve`'s pass rates (lower is harder)
    an IRT directory   `curate irt`'s difficulties (higher is harder)
A run's or fit's items must be the data's (shared ids naming other items are refused). An item without a label
(null, or no countable rollout) is left out and counted. Levels: a label whose every value is an integer in 1..5
and higher when harder is taken as it is (`label_scale: as_is`, which `auto` picks then); anything else is cut into
five levels of as many training items each (`quantiles`: ties stay together, so levels may be unequal), the
harder end 5. The cut points are recorded, so the judge's levels can be read back as the label's values.

Then a seeded `heldout` fraction of the labelled items is kept out of training (the judge's agreement is measured
on it), and `per_level` caps the training items of each level (a seeded sample: levels balance, time is bounded).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from curate.config import DataConfig
from curate.data.items import load_items
from curate.errors import ConfigError, DataError
from curate.runs import (
    SCORE,
    SOLVE,
    aggregated_now,
    read_run_identity,
    refuse_other_items,
    run_task,
)
from curate.stats.irt_dir import is_irt_directory, read_irt_dir
from curate.store import read_items

LEVELS = (1, 2, 3, 4, 5)
LABEL, LEVEL = "label", "level"  # the label's value, and the level 1..5 the judge learns


def labelled_items(config: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The data's items with `label` (higher = harder) and `level`, the unlabelled ones left out; what was read."""
    items = load_items(DataConfig(source=config.data, split=config.split, question_field=config.question_field,
                                  id_field=config.id_field, choices_field=config.choices_field,
                                  domain_field=config.domain_field)).items
    values, source = _label_values(items, config)
    labelled = items.join(values, on="id", how="inner").filter(pl.col(LABEL).is_not_null() & pl.col(LABEL).is_finite())
    if labelled.height == 0:
        raise DataError(f"no item of {config.data} has a label from {config.label!r}: nothing to learn")
    levels, scale = to_levels(labelled[LABEL], config.label_scale)
    record = {**source, "labelled": labelled.height, "unlabelled": items.height - labelled.height, **scale}
    return labelled.with_columns(levels.alias(LEVEL)), record


def _label_values(items: pl.DataFrame, config: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
    """id → label, oriented so that higher is harder, and where it came from."""
    path = Path(config.label)
    if not path.is_dir():
        extra = items["extra"].struct.fields if "extra" in items.columns else []
        if config.label not in extra:
            raise ConfigError(f"label {config.label!r} is neither a field of {config.data} (its fields: "
                              f"{', '.join(extra) or 'none besides the question'}) nor a folder (a score or solve run, "
                              "an IRT directory)")
        values = items.select("id", pl.col("extra").struct.field(config.label).alias(LABEL))
        if not values[LABEL].dtype.is_numeric():
            values = values.with_columns(pl.col(LABEL).cast(pl.Float64, strict=False))
        sign = -1 if config.harder_when == "low" else 1
        return (values.with_columns(pl.col(LABEL).cast(pl.Float64) * sign),
                {"label": config.label, "kind": "field", "harder_when": config.harder_when or "high"})
    if config.harder_when is not None:
        raise ConfigError(f"label {path} is a folder, whose direction is known: drop harder_when")
    if is_irt_directory(path):
        fitted, _ = read_irt_dir(path, "label")
        _same_items(items, fitted.rename({"item_id": "id"}), path)
        return (fitted.select(pl.col("item_id").alias("id"), pl.col("difficulty").alias(LABEL)),
                {"label": str(path), "kind": "IRT difficulty", "harder_when": "high"})
    identity = read_run_identity(path, made_by=SCORE, option="label")
    kind = run_task(identity)
    _same_items(items, read_items(path), path)
    per = aggregated_now(path, identity)
    if kind == SCORE:
        return (per.select(pl.col("item_id").alias("id"), pl.col("score_mean").alias(LABEL)),
                {"label": str(path), "kind": "score run (mean score)", "harder_when": "high"})
    if kind == SOLVE:
        return (per.select(pl.col("item_id").alias("id"), (-pl.col("pass_rate")).alias(LABEL)),
                {"label": str(path), "kind": "solve run (pass rate)", "harder_when": "low"})
    raise ConfigError(f"label {path} is a {kind} run; give a score run, a solve run, an IRT directory or a field")


def _same_items(items: pl.DataFrame, other: pl.DataFrame, path: Path) -> None:
    refuse_other_items(items, "the data", path, other, "label")


def to_levels(labels: pl.Series, scale: str) -> tuple[pl.Series, dict[str, Any]]:
    """Levels 1..5 of labels where higher is harder (module docstring), and how they were made."""
    as_is = bool(((labels == labels.round()) & labels.is_between(LEVELS[0], LEVELS[-1])).all())
    if scale == "as_is" and not as_is:
        raise ConfigError("label_scale as_is needs every label an integer in 1..5, higher when harder; use quantiles")
    if scale == "as_is" or (scale == "auto" and as_is):
        return labels.cast(pl.Int64), {"label_scale": "as_is"}
    cuts = [float(labels.quantile(q / 5, interpolation="lower")) for q in range(1, 5)]
    levels = labels.cut(cuts, labels=[str(level) for level in LEVELS], left_closed=False).cast(pl.String)
    return levels.cast(pl.Int64), {"label_scale": "quantiles", "cut_points": cuts}


def held_out(items: pl.DataFrame, fraction: float, seed: int) -> pl.Series:
    """Whether each item is held out: a seeded hash of its id, so an item stays on its side whatever else changes."""
    def draw(item_id: str) -> bool:
        digest = hashlib.sha256(f"{seed}\x1f{item_id}".encode()).digest()
        return int.from_bytes(digest[:8], "little") / 2**64 < fraction

    return items["id"].map_elements(draw, return_dtype=pl.Boolean)


def capped(items: pl.DataFrame, per_level: int | None, seed: int) -> pl.DataFrame:
    """At most `per_level` items of each level, a seeded sample, in the input's order."""
    if per_level is None:
        return items
    shuffled = items.with_row_index("position").sample(fraction=1.0, shuffle=True, seed=seed)
    return (shuffled.group_by(LEVEL, maintain_order=True).head(per_level).sort("position").drop("position"))
