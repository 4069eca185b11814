"""Input rows → validated items: one Polars frame with canonical columns.

Columns of the items frame: `id`, `question`, `reference`, `choices`, `domain` (the last three may
be null) and, when the input has other fields, `extra`: a struct carrying them through untouched.
Row numbers in messages are 1-based positions in the input (see `curate.data.readers`). An input without
a single usable item is refused, saying why.

`choices` is `List(CHOICE)` (see `curate.data.choices` for the shapes it is read from);
`--choices-field A,B,C,D` instead names one column per option: labelled by the column names when
every name is a single character, else A, B, C, … in the order given; empty cells are no option.
A row whose choices cannot be read is a bad row, with the reason.

A reference that is an integer (a JSON number, an integer column: MMLU's `answer`) of an item with options
is a 0-based option index, never 1-based: it becomes that option's label (`2` → `C`). An index outside
the options, or any integer where the options are labelled with numbers (label or index?), is a bad row.
A reference given as text is kept as it is ("2" stays "2"), and so is an integer of an item without options.
"""

from __future__ import annotations

import hashlib
import logging
import string
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from curate.config import DataConfig
from curate.data.choices import CHOICE, canonical_choices
from curate.data.readers import ROW, listed, read_table, resolve_source
from curate.errors import DataError

log = logging.getLogger(__name__)

CANONICAL = ("id", "question", "reference", "choices", "domain")
# Conventional input names for the optional fields, used only when the column exists.
CONVENTIONAL = {"id": "id", "reference": "answer", "choices": "choices", "domain": "domain"}
HASHED = "__hashed_id"  # internal column: never shown to the user


@dataclass(frozen=True)
class LoadedItems:
    items: pl.DataFrame
    quarantined: pl.DataFrame  # columns: row, reason, record (the input row as read, or the unreadable line)
    source: str


def _mapping(config: DataConfig, columns: list[str], where: str) -> dict[str, str | tuple[str, ...] | None]:
    """Canonical name → input column (choices: or several, one per option). Explicit names must
    exist; conventional ones may be absent."""
    explicit = {"id": config.id_field, "question": config.question_field, "reference": config.reference_field,
                "choices": config.choices_field, "domain": config.domain_field}
    mapping: dict[str, str | tuple[str, ...] | None] = {}
    for canonical, name in explicit.items():
        if name is None:
            conventional = CONVENTIONAL.get(canonical)
            mapping[canonical] = conventional if conventional in columns else None
            continue
        names = tuple(part.strip() for part in name.split(",")) if canonical == "choices" else (name,)
        for part in names:
            if part not in columns:
                raise DataError(f"{where}: no column {part!r} for {canonical} (columns: {columns}); "
                                f"set --{canonical}-field")
        mapping[canonical] = names if len(names) > 1 else name
    return mapping


def content_id(question: str, reference: str | None, choices: list[dict[str, str]] | None = None) -> str:
    """Stable id from content; choices (label and text) count only when present, so ids of plain
    items never change."""
    text = f"{question}\x1f{reference or ''}"
    if choices:
        text += "\x1f" + "\x1e".join(f"{choice['label']}\x1d{choice['text']}" for choice in choices)
    return f"h-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _choices(frame: pl.DataFrame, source: str | tuple[str, ...] | None, where: str) -> tuple[pl.Series, pl.DataFrame]:
    """The canonical choices column, and (row, reason) for each row whose choices cannot be read."""
    unreadable: list[tuple[int, str]] = []
    if source is None:
        choices = pl.Series("choices", [None] * frame.height, dtype=pl.List(CHOICE))
    elif isinstance(source, tuple):
        choices = frame.select(_choices_from_columns(source, frame.schema, where)).to_series()
    else:
        values = []
        for row, value in zip(frame[ROW].to_list(), frame[source].to_list(), strict=True):
            try:
                values.append(canonical_choices(value))
            except ValueError as exc:
                values.append(None)
                unreadable.append((row, f"unreadable choices in {source!r}: {exc}"))
        choices = pl.Series("choices", values, dtype=pl.List(CHOICE))
    return choices, pl.DataFrame(unreadable, schema={ROW: pl.Int64, "reason": pl.String}, orient="row")


def _choices_from_columns(names: tuple[str, ...], schema: pl.Schema, where: str) -> pl.Expr:
    letters = all(len(name) == 1 for name in names)
    if not letters and len(names) > len(string.ascii_uppercase):
        raise DataError(f"{where}: --choices-field names {len(names)} columns; at most "
                        f"{len(string.ascii_uppercase)} options get letters")
    options = []
    for label, name in zip(names if letters else string.ascii_uppercase, names, strict=False):
        if schema[name].is_nested():
            raise DataError(f"{where}: column {name!r} (an option of --choices-field) holds {schema[name]}, not text")
        options.append(pl.struct(pl.lit(label, pl.String).alias("label"),
                                 pl.col(name).cast(pl.String).str.strip_chars().alias("text")))
    present = pl.concat_list(options).list.eval(pl.element().filter(pl.element().struct.field("text") != ""))
    return pl.when(present.list.len() > 0).then(present).alias("choices")


def _canonical_frame(frame: pl.DataFrame, mapping: dict[str, str | tuple[str, ...] | None],
                     where: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    question = mapping["question"]
    if frame.schema[question] not in (pl.String, pl.Null) and frame.height:
        raise DataError(f"{where}: field {question!r} must hold strings, but the column is "
                        f"{frame.schema[question]}; map the question with --question-field")

    def text(canonical: str) -> pl.Expr:
        name = mapping[canonical]
        if name is None:
            return pl.lit(None, pl.String).alias(canonical)
        if frame.schema[name].is_nested():
            raise DataError(f"{where}: field {name!r} ({canonical}) holds {frame.schema[name]} values, not text; "
                            f"map a text field with --{canonical}-field")
        return pl.col(name).cast(pl.String).alias(canonical)

    choices, unreadable = _choices(frame, mapping["choices"], where)
    reference, no_option = _option_index_references(frame, mapping["reference"], choices)
    unreadable = pl.concat([unreadable, no_option]).sort(ROW)
    used = {name for value in mapping.values() if value is not None
            for name in (value if isinstance(value, tuple) else (value,))}
    extra_names = [c for c in frame.columns if c not in used and c != ROW]
    # Parquet cannot hold a struct without fields, so `extra` exists only when there are extras.
    extra = [pl.struct(extra_names).alias("extra")] if extra_names else []
    items = frame.select(ROW, text("id"), text("question"), text("reference"), text("domain"), *extra)
    if reference is not None:
        items = items.with_columns(reference)
    return items.insert_column(4, choices), unreadable


def _option_index_references(frame: pl.DataFrame, name: str | None,
                             choices: pl.Series) -> tuple[pl.Series | None, pl.DataFrame]:
    """For an integer reference column: the references with each option index replaced by its option's label
    (module docstring), and (row, reason) for each index that names no option; (None, no rows) otherwise."""
    no_rows = pl.DataFrame(schema={ROW: pl.Int64, "reason": pl.String})
    if name is None or not frame.schema[name].is_integer():
        return None, no_rows
    labels = choices.list.eval(pl.element().struct.field("label"))
    index, count = pl.col("index"), pl.col("labels").list.len()
    checked = pl.DataFrame({ROW: frame[ROW], "index": frame[name].cast(pl.Int64), "labels": labels}).with_columns(
        has_options=pl.col("labels").is_not_null() & (count > 0) & index.is_not_null(),
        numbered=pl.col("labels").list.eval(pl.element().str.contains(r"^\d+$")).list.any())
    in_range = (index >= 0) & (index < count)
    reference = (pl.when(pl.col("has_options") & in_range & ~pl.col("numbered"))
                 .then(pl.col("labels").list.get(index.clip(0), null_on_oob=True))
                 .otherwise(index.cast(pl.String)).alias("reference"))
    reason = (pl.when(pl.col("numbered"))
              .then(pl.format("reference {} is a number and the options are labelled with numbers ({}), so it could "
                              "be a label or an option index: give the reference as text (the label)",
                              index, pl.col("labels").list.join(", ")))
              .otherwise(pl.format("reference {} is an option index (0-based) but the item has {} option(s) ({})",
                                   index, count, pl.col("labels").list.join(", "))).alias("reason"))
    bad = checked.filter(pl.col("has_options") & (pl.col("numbered") | ~in_range)).select(ROW, reason)
    return checked.select(reference).to_series(), bad


def _problems(items: pl.DataFrame, question_field: str, unreadable: pl.DataFrame) -> pl.DataFrame:
    """One row per bad input row: (row, reason). Duplicates keep their first occurrence."""
    bad_question = items.filter(pl.col("question").is_null() | (pl.col("question").str.strip_chars() == ""))
    bad = pl.concat([bad_question.select(ROW, reason=pl.lit(f"missing or empty {question_field!r}")),
                     unreadable]).unique(ROW, keep="first", maintain_order=True)
    reasons = [bad]
    duplicated = items.filter(pl.col("id").is_duplicated() & ~pl.col(ROW).is_in(bad[ROW].implode()))
    if duplicated.height:
        first = duplicated.group_by("id").agg(pl.col(ROW).min().alias("first_row"))
        later = duplicated.join(first, on="id").filter(pl.col(ROW) != pl.col("first_row"))
        reasons.append(later.select(ROW, reason=pl.when(HASHED).then(
            pl.format("duplicate content (same question, reference and choices as row {})", "first_row")
        ).otherwise(pl.format("duplicate id {} (first at row {})", "id", "first_row"))))
    return pl.concat(reasons).sort(ROW)


def _summary(quarantined: pl.DataFrame) -> str:
    grouped = quarantined.with_columns(pl.col("reason").str.replace(r"^duplicate id .*", "duplicate id").str.replace(
        r"^duplicate content .*", "duplicate content (same question, reference and choices as an earlier row)"))
    return "; ".join(f"{reason} at rows {listed(group['row'].to_list())}"
                     for (reason,), group in grouped.group_by("reason", maintain_order=True))


SPLIT_MANIFEST, SPLIT_SFT = "manifest.json", "sft.parquet"


def load_items(config: DataConfig) -> LoadedItems:
    """Read, map, validate. Bad rows raise `DataError` unless `config.on_bad_rows == "quarantine"`;
    so does an input left without a single item."""
    source = resolve_source(config.source)
    if isinstance(source, Path) and (source / SPLIT_MANIFEST).is_file() and (source / SPLIT_SFT).is_file():
        # A split directory (`curate split`): its SFT side, the items a teacher answers (`curate respond`).
        source = source / SPLIT_SFT
        config = replace(config, id_field=config.id_field or "item_id",
                         reference_field=config.reference_field or "reference")
    where = str(source)
    choices_field = config.choices_field or CONVENTIONAL["choices"]
    frame, broken = read_table(source, config.split, config.question_field,
                               None if "," in choices_field else choices_field)
    if frame.height == 0 and not broken:
        raise DataError(f"no items in {where}: it holds no rows; give an input with one problem per row")
    mapping = _mapping(config, [c for c in frame.columns if c != ROW], where)
    items, unreadable = _canonical_frame(frame, mapping, where)
    items = items.with_columns((pl.col("id").is_null() | (pl.col("id").str.strip_chars() == "")).alias(HASHED))
    if items[HASHED].any():
        hashed = pl.struct("question", "reference", "choices").map_elements(
            lambda r: content_id(r["question"] or "", r["reference"], r["choices"]), return_dtype=pl.String)
        items = items.with_columns(pl.when(HASHED).then(hashed).otherwise(pl.col("id")).alias("id"))

    problems = _problems(items, config.question_field, unreadable)
    as_read = frame.select(ROW, pl.struct(pl.exclude(ROW)).struct.json_encode().alias("record"))
    quarantined = pl.concat([
        pl.DataFrame(broken, schema={"row": pl.Int64, "reason": pl.String, "record": pl.String}, orient="row"),
        problems.join(as_read, on=ROW).select(pl.col(ROW).alias("row"), "reason", "record"),
    ]).sort("row")
    if quarantined.height and config.on_bad_rows != "quarantine":
        raise DataError(f"{where}: {quarantined.height} bad row(s): {_summary(quarantined)}. Fix the input, map the "
                        "right fields, or pass --on-bad-rows quarantine to set them aside with their reasons.")
    kept = items.filter(~pl.col(ROW).is_in(problems[ROW].implode()))
    if kept.height == 0:
        raise DataError(f"no items in {where}: all {quarantined.height} row(s) are bad: {_summary(quarantined)}. "
                        "Fix the input or map the right fields.")
    if quarantined.height:
        log.warning("%s: quarantined %d bad row(s): %s", where, quarantined.height, _summary(quarantined))
    return LoadedItems(items=kept.drop(ROW, HASHED), quarantined=quarantined, source=where)


def fingerprint(items: pl.DataFrame) -> str:
    """Content hash of the validated items (id, question, reference, choices, domain)."""
    digest = hashlib.sha256()
    for name in CANONICAL:
        column = items[name]
        if name == "choices":
            option = pl.element().struct.field("label") + "\x1d" + pl.element().struct.field("text")
            column = column.list.eval(option).list.join("\x1f")
        digest.update(name.encode())
        digest.update("\x1e".join("\x00" if v is None else v for v in column.to_list()).encode())
    return digest.hexdigest()
