"""Input rows → validated items: one Polars frame with canonical columns.

Columns of the items frame: `id`, `question`, `reference`, `choices`, `domain` (the last three may
be null) and, when the input has other fields, `extra`: a struct carrying them through untouched.
Row numbers in messages are 1-based positions in the input (for JSONL: the line number).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from curate.config import DataConfig
from curate.errors import DataError

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = Path(__file__).parent / "bundled"
CANONICAL = ("id", "question", "reference", "choices", "domain")
# Conventional input names for the optional fields, used only when the column exists.
CONVENTIONAL = {"id": "id", "reference": "answer", "choices": "choices", "domain": "domain"}
MAX_ROWS_LISTED = 10
FILE_SUFFIXES = (".jsonl", ".ndjson", ".parquet", ".csv", ".json")
JSON_TYPE_NAMES = {int: "number", float: "number", bool: "boolean", list: "array", dict: "object"}
# Canonical multiple-choice options: labelled, in input order, whatever shape the input gave them in.
CHOICE = pl.Struct({"label": pl.String, "text": pl.String})


@dataclass(frozen=True)
class LoadedItems:
    items: pl.DataFrame
    quarantined: pl.DataFrame  # columns: row, reason, record (the input row as read, or the unreadable line)
    source: str


def bundled_datasets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.jsonl"))}


def resolve_source(source: str) -> Path | str:
    """A local path, a bundled sample (`bundled:NAME`), or else a Hub dataset id."""
    if source.startswith(BUNDLED_PREFIX):
        name = source.removeprefix(BUNDLED_PREFIX)
        available = bundled_datasets()
        if name not in available:
            raise DataError(f"no bundled dataset {name!r}; bundled: {sorted(available)}")
        return available[name]
    path = Path(source)
    if path.exists():
        return path
    if source.count("/") == 1 and not source.startswith((".", "/")) and path.suffix not in FILE_SUFFIXES:
        return source
    raise DataError(f"input {source!r} does not exist (nor is it a Hub dataset id like 'org/name')")


def _read_jsonl(path: Path, question_field: str) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Parse line by line so that a value's JSON type survives (Polars would turn 5 into "5")."""
    records, broken = [], []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                broken.append((line_number, f"invalid JSON: {exc.msg}", line.rstrip("\n")))
                continue
            if not isinstance(record, dict):
                broken.append((line_number, "line is not a JSON object", line.rstrip("\n")))
                continue
            question = record.get(question_field)
            if question is not None and not isinstance(question, str):
                kind = JSON_TYPE_NAMES.get(type(question), type(question).__name__)
                broken.append((line_number, f"{question_field!r} is a JSON {kind}, not a string", line.rstrip("\n")))
                continue
            record["__row"] = line_number
            records.append(record)
    if not records:
        return pl.DataFrame(schema={"__row": pl.Int64, question_field: pl.String}), broken
    _text_for_mixed_types(records, path)
    return pl.from_dicts(records, infer_schema_length=None), broken


def _text_for_mixed_types(records: list[dict], path: Path) -> None:
    """A field whose JSON type varies by row becomes text (strings as they are, others as JSON), so
    no value is widened by its neighbours (42 next to 3.5 stays "42", not "42.0")."""
    types: dict[str, set[type]] = {}
    for record in records:
        for key, value in record.items():
            if value is not None:
                types.setdefault(key, set()).add(type(value))
    mixed = [key for key, seen in types.items() if len(seen) > 1]
    if not mixed:
        return
    log.warning("%s: field(s) %s mix JSON types across rows; they are carried as text", path, mixed)
    for record in records:
        for key in mixed:
            value = record.get(key)
            if value is not None and not isinstance(value, str):
                record[key] = json.dumps(value, ensure_ascii=False)


def read_table(source: Path | str, split: str, question_field: str) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Read any supported input into a frame with a 1-based `__row` column, plus unusable rows."""
    if isinstance(source, str):  # Hub id, through `datasets` (it honours HF_HUB_OFFLINE and caches)
        import datasets

        frame = pl.from_arrow(datasets.load_dataset(source, split=split).data.table)
    elif source.is_dir():
        import datasets

        loaded = datasets.load_from_disk(str(source))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{source}: no split {split!r}; splits are {list(loaded)}")
            loaded = loaded[split]
        frame = pl.from_arrow(loaded.data.table)
    elif source.suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(source, question_field)
    elif source.suffix == ".parquet":
        frame = pl.read_parquet(source)
    elif source.suffix == ".csv":
        frame = pl.read_csv(source, infer_schema=False)  # keep every cell as written
    else:
        raise DataError(f"{source}: unsupported input type {source.suffix!r}; use .jsonl, .parquet, .csv, "
                        "a datasets save_to_disk directory, or a Hub dataset id")
    return frame.with_row_index("__row", offset=1).with_columns(pl.col("__row").cast(pl.Int64)), []


def _mapping(config: DataConfig, columns: list[str], where: str) -> dict[str, str | None]:
    """Canonical name → input column. Explicit names must exist; conventional ones may be absent."""
    explicit = {"id": config.id_field, "question": config.question_field, "reference": config.reference_field,
                "choices": config.choices_field, "domain": config.domain_field}
    mapping: dict[str, str | None] = {}
    for canonical, name in explicit.items():
        if name is not None:
            if name not in columns:
                option = f"--{canonical}-field"
                raise DataError(f"{where}: no column {name!r} for {canonical} (columns: {columns}); set {option}")
            mapping[canonical] = name
        else:
            conventional = CONVENTIONAL.get(canonical)
            mapping[canonical] = conventional if conventional in columns else None
    return mapping


def content_id(question: str, reference: str | None, choices: list[str] | None = None) -> str:
    """Stable id from content; choices count only when present, so ids of plain items never change."""
    text = f"{question}\x1f{reference or ''}"
    if choices:
        text += "\x1f" + "\x1e".join(choices)
    return f"h-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _row_list(rows: pl.Series) -> str:
    shown = ", ".join(str(r) for r in rows.head(MAX_ROWS_LISTED).to_list())
    more = f" and {rows.len() - MAX_ROWS_LISTED} more" if rows.len() > MAX_ROWS_LISTED else ""
    return f"{shown}{more}"


def _canonical_frame(frame: pl.DataFrame, mapping: dict[str, str | None], where: str) -> pl.DataFrame:
    question = mapping["question"]
    if frame.schema[question] not in (pl.String, pl.Null) and frame.height:
        raise DataError(f"{where}: field {question!r} must hold strings, but the column is "
                        f"{frame.schema[question]}; map the question with --question-field")

    def text(canonical: str) -> pl.Expr:
        name = mapping[canonical]
        return pl.lit(None, pl.String) if name is None else pl.col(name).cast(pl.String)

    choices = mapping["choices"]
    if choices is None:
        choices_expr = pl.lit(None, pl.List(pl.String))
    elif isinstance(frame.schema[choices], pl.List):
        choices_expr = pl.col(choices).list.eval(pl.element().cast(pl.String))
    else:
        raise DataError(f"{where}: field {choices!r} (choices) must be a list of strings, got {frame.schema[choices]}")
    used = {name for name in mapping.values() if name is not None}
    extra_names = [c for c in frame.columns if c not in used and c != "__row"]
    # Parquet cannot hold a struct without fields, so `extra` exists only when there are extras.
    extra = [pl.struct(extra_names).alias("extra")] if extra_names else []
    return frame.select(
        "__row",
        text("id").alias("id"),
        text("question").alias("question"),
        text("reference").alias("reference"),
        choices_expr.alias("choices"),
        text("domain").alias("domain"),
        *extra,
    )


def _problems(items: pl.DataFrame, question_field: str) -> pl.DataFrame:
    """One row per bad input row: (row, reason). Duplicates keep their first occurrence."""
    bad_question = items.filter(pl.col("question").is_null() | (pl.col("question").str.strip_chars() == ""))
    reasons = [bad_question.select("__row", reason=pl.lit(f"missing or empty {question_field!r}"))]
    duplicated = items.filter(pl.col("id").is_duplicated() & ~pl.col("__row").is_in(bad_question["__row"].implode()))
    if duplicated.height:
        first = duplicated.group_by("id").agg(pl.col("__row").min().alias("first_row"))
        later = duplicated.join(first, on="id").filter(pl.col("__row") != pl.col("first_row"))
        reasons.append(later.select("__row", reason=pl.format("duplicate id {} (first at row {})", "id", "first_row")))
    return pl.concat(reasons).sort("__row")


def load_items(config: DataConfig) -> LoadedItems:
    """Read, map, validate. Bad rows raise `DataError` unless `config.on_bad_rows == "quarantine"`."""
    source = resolve_source(config.source)
    where = str(source)
    frame, broken = read_table(source, config.split, config.question_field)
    mapping = _mapping(config, [c for c in frame.columns if c != "__row"], where)
    items = _canonical_frame(frame, mapping, where)
    missing_id = pl.col("id").is_null() | (pl.col("id").str.strip_chars() == "")
    if items.select(missing_id.any()).item():
        hashed = pl.struct("question", "reference", "choices").map_elements(
            lambda r: content_id(r["question"] or "", r["reference"], r["choices"]), return_dtype=pl.String)
        items = items.with_columns(pl.when(missing_id).then(hashed).otherwise(pl.col("id")).alias("id"))

    problems = _problems(items, config.question_field)
    as_read = frame.select("__row", pl.struct(pl.exclude("__row")).struct.json_encode().alias("record"))
    quarantined = pl.concat([
        pl.DataFrame(broken, schema={"row": pl.Int64, "reason": pl.String, "record": pl.String}, orient="row"),
        problems.join(as_read, on="__row").select(pl.col("__row").alias("row"), "reason", "record"),
    ]).sort("row")
    if quarantined.height:
        summary = "; ".join(
            f"{reason} at rows {_row_list(group['row'])}"
            for (reason,), group in quarantined.with_columns(
                pl.col("reason").str.replace(r"^duplicate id .*", "duplicate id")
            ).group_by("reason", maintain_order=True))
        if config.on_bad_rows != "quarantine":
            raise DataError(f"{where}: {quarantined.height} bad row(s): {summary}. Fix the input, map the right "
                            "fields, or pass --on-bad-rows quarantine to set them aside with their reasons.")
        log.warning("%s: quarantined %d bad row(s): %s", where, quarantined.height, summary)
    kept = items.filter(~pl.col("__row").is_in(problems["__row"].implode()))
    return LoadedItems(items=kept.drop("__row"), quarantined=quarantined, source=where)


def format_choices(choices: list[dict[str, str]] | None) -> str:
    """Options as the judge, the exports and the verifiers show them: one `LABEL. text` line each."""
    return "\n".join(f"{choice['label']}. {choice['text']}" for choice in choices or ())


def question_with_choices(question: str, choices: list[dict[str, str]] | None) -> str:
    """The question followed by its options, for prompts that carry no template (exports)."""
    return f"{question}\n\n{format_choices(choices)}" if choices else question


def fingerprint(items: pl.DataFrame) -> str:
    """Content hash of the validated items (id, question, reference, choices, domain)."""
    digest = hashlib.sha256()
    for name in CANONICAL:
        column = items[name]
        if name == "choices":
            column = column.list.join("\x1f")
        digest.update(name.encode())
        digest.update("\x1e".join("\x00" if v is None else v for v in column.to_list()).encode())
    return digest.hexdigest()
