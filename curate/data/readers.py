"""Reading an input into a frame of rows: JSON Lines, JSON arrays, CSV, parquet, a `datasets` folder,
a Hub dataset, or a bundled sample. Each row keeps its 1-based position in `__row` (the line of a
JSONL file, the element of a JSON array, the data row of a CSV file after its header), and rows that
cannot be read come back apart with the reason, as (row, reason, the row as written).
JSONL and CSV may start with a UTF-8 BOM.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from curate.data.choices import JSON_TYPE_NAMES, canonical_choices
from curate.errors import DataError

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = Path(__file__).parent.parent / "bundled"
LONGEST_CSV_FIELD = 2**31 - 1
FILE_SUFFIXES = (".jsonl", ".ndjson", ".parquet", ".csv", ".json")
ACCEPTED_INPUTS = ("a .jsonl, .json, .parquet or .csv file, a datasets save_to_disk directory, "
                   "a Hub dataset id (org/name) or bundled:NAME")
ROW = "__row"  # internal column: never shown to the user
MAX_ROWS_LISTED = 10

Broken = tuple[int, str, str]  # (row, reason, the row as written)


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


def _decoded(path: Path) -> str:
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                        "save the file as UTF-8") from None


def _json_lines(path: Path) -> Iterator[tuple[int, str, Any, str | None]]:
    """(line number, line as written, parsed value, reason it is unusable) for each non-blank line."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            raw = raw.removeprefix(codecs.BOM_UTF8) if line_number == 1 else raw
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield line_number, raw.decode("utf-8", "replace").rstrip("\r\n"), None, "invalid UTF-8"
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_number, line, None, f"invalid JSON: {exc.msg}"
                continue
            yield line_number, line, record, None if isinstance(record, dict) else "line is not a JSON object"


def _json_array(path: Path) -> Iterator[tuple[int, str, Any, str | None]]:
    with path.open("rb") as handle:
        head = handle.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()
    if not head.startswith(b"["):
        yield from _json_lines(path)  # many .json files hold JSON Lines
        return
    text = _decoded(path)
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
    for position, value in enumerate(values, start=1):
        yield position, json.dumps(value), value, None if isinstance(value, dict) else "element is not a JSON object"


def _record_problem(record: dict, line: str, question_field: str, choices_field: str | None) -> str | None:
    """Why a parsed JSON record is unusable (None if it is fine); normalises its choices in place."""
    if ROW in record:
        return f"field {ROW!r} is reserved for row numbers"
    question = record.get(question_field)
    if question is not None and not isinstance(question, str):
        return f"{question_field!r} is a JSON {JSON_TYPE_NAMES.get(type(question))}, not a string"
    if "\\u" in line:  # JSON can escape a lone surrogate, which no UTF-8 file or column can hold
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "invalid Unicode (lone surrogate)"
    if choices_field in record:
        try:
            record[choices_field] = canonical_choices(record[choices_field])
        except ValueError as exc:
            return f"unreadable choices in {choices_field!r}: {exc}"
    return None


def _read_json(path: Path, question_field: str, choices_field: str | None) -> tuple[pl.DataFrame, list[Broken]]:
    """Parse record by record so that a value's JSON type survives (Polars would turn 5 into "5")."""
    records, broken = [], []
    rows = _json_array(path) if path.suffix == ".json" else _json_lines(path)
    for row, line, record, reason in rows:
        reason = reason or _record_problem(record, line, question_field, choices_field)
        if reason:
            broken.append((row, reason, line))
            continue
        record[ROW] = row
        records.append(record)
    if not records:
        return pl.DataFrame(schema={ROW: pl.Int64, question_field: pl.String}), broken
    _text_for_mixed_types(records, path)
    try:
        return pl.from_dicts(records, infer_schema_length=None), broken
    except pl.exceptions.PolarsError:  # nested values of different shapes (`[[{…}]]` next to `[{…}]`)
        _text_for_mixed_types(records, path, nested=True)
        return pl.from_dicts(records, infer_schema_length=None), broken


def _text_for_mixed_types(records: list[dict], path: Path, nested: bool = False) -> None:
    """A field whose JSON type varies by row becomes text (strings as they are, others as JSON), so
    no value is widened by its neighbours (42 next to 3.5 stays "42", not "42.0"). With `nested`,
    so does every field holding arrays or objects, whose shapes Polars could not reconcile."""
    types: dict[str, set[type]] = {}
    for record in records:
        for key, value in record.items():
            if value is not None:
                types.setdefault(key, set()).add(type(value))
    mixed = [key for key, seen in types.items() if len(seen) > 1 or (nested and seen & {list, dict})]
    if not mixed:
        return
    log.warning("%s: field(s) %s mix JSON types across rows; they are carried as text", path, mixed)
    for record in records:
        for key in mixed:
            value = record.get(key)
            if value is not None and not isinstance(value, str):
                record[key] = json.dumps(value, ensure_ascii=False)


def _read_csv(path: Path) -> tuple[pl.DataFrame, list[Broken]]:
    """Every cell as written (empty cells are null); a row with the wrong number of fields is bad."""
    csv.field_size_limit(max(csv.field_size_limit(), LONGEST_CSV_FIELD))  # a long proof is not a malformed file
    reader = csv.reader(io.StringIO(_decoded(path), newline=""), strict=True)
    header: list[str] | None = None
    cells, broken = [], []
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader, None)
        except csv.Error as exc:
            raise DataError(f"{path}, line {line}: malformed CSV ({exc}); a field holding a comma, a quote or "
                            'a line break must be in double quotes, with its quotes doubled ("")') from None
        if fields is None:
            break
        if not fields:
            continue
        if header is None:
            header = fields
            if repeated := [name for name, count in Counter(header).items() if count > 1]:
                raise DataError(f"{path}, line {line}: column {repeated[0]!r} appears twice in the header")
            if ROW in header:
                raise DataError(f"{path}, line {line}: the column name {ROW!r} is reserved for row numbers; rename it")
            continue
        row = len(cells) + len(broken) + 1
        if len(fields) != len(header):
            broken.append((row, f"{len(fields)} fields where the header has {len(header)} (line {line})",
                           json.dumps(fields, ensure_ascii=False)))
        else:
            cells.append([row, *(cell or None for cell in fields)])
    schema = {ROW: pl.Int64, **{name: pl.String for name in header or ()}}
    return pl.DataFrame(cells, schema=schema, orient="row"), broken


def _hub_table(source: str, split: str) -> Any:
    import datasets
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import constants

    try:
        return datasets.load_dataset(source, split=split).data.table
    except DatasetNotFoundError:
        raise DataError(f"no dataset {source!r} on the Hub (a private or gated one needs $HF_TOKEN); "
                        f"check the id, or give {ACCEPTED_INPUTS}") from None
    except ConnectionError as exc:
        if constants.HF_HUB_OFFLINE:
            raise DataError(f"Hub dataset {source!r} is not available offline: HF_HUB_OFFLINE is set and it is not "
                            f"in the cache under {constants.HF_HOME}; download it once with HF_HUB_OFFLINE unset, "
                            "or give a local file") from None
        raise DataError(f"cannot reach the Hub for dataset {source!r} ({exc}); check the network, "
                        "or give a local file") from None
    except ValueError as exc:  # e.g. an unknown split
        raise DataError(f"Hub dataset {source!r}: {str(exc).splitlines()[0]}") from None


def _dataset_dir_table(source: Path, split: str) -> Any:
    import datasets

    if not any((source / name).is_file() for name in (datasets.config.DATASETDICT_JSON_FILENAME,
                                                      datasets.config.DATASET_STATE_JSON_FILENAME)):
        raise DataError(f"{source} is a folder but not a datasets save_to_disk directory (it has no "
                        f"{datasets.config.DATASETDICT_JSON_FILENAME} or {datasets.config.DATASET_STATE_JSON_FILENAME}); "
                        f"give {ACCEPTED_INPUTS}")
    loaded = datasets.load_from_disk(str(source))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{source}: no split {split!r}; splits are {list(loaded)}")
        loaded = loaded[split]
    return loaded.data.table


def read_table(source: Path | str, split: str, question_field: str,
               choices_field: str | None = None) -> tuple[pl.DataFrame, list[Broken]]:
    """Read any supported input into a frame with a 1-based `__row` column, plus unusable rows.
    From JSON, `choices_field` is made canonical while reading: Polars cannot hold its varied shapes."""
    if isinstance(source, str):  # Hub id, through `datasets` (it honours HF_HUB_OFFLINE and caches)
        frame = pl.from_arrow(_hub_table(source, split))
    elif source.is_dir():
        frame = pl.from_arrow(_dataset_dir_table(source, split))
    elif source.suffix in (".jsonl", ".ndjson", ".json"):
        return _read_json(source, question_field, choices_field)
    elif source.suffix == ".csv":
        return _read_csv(source)
    elif source.suffix == ".parquet":
        try:
            frame = pl.read_parquet(source)
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"{source} is not a readable parquet file ({str(exc).splitlines()[0]})") from None
    else:
        raise DataError(f"{source}: unsupported input type {source.suffix!r}; give {ACCEPTED_INPUTS}")
    if ROW in frame.columns:
        raise DataError(f"{source}: the column name {ROW!r} is reserved for row numbers; rename it")
    return frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64)), []


def listed(rows: list[int]) -> str:
    """Row or line numbers for a message: the first MAX_ROWS_LISTED, then how many more."""
    more = f" and {len(rows) - MAX_ROWS_LISTED} more" if len(rows) > MAX_ROWS_LISTED else ""
    return ", ".join(map(str, rows[:MAX_ROWS_LISTED])) + more
