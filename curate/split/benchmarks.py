"""Benchmark questions to decontaminate a split against: `--decontaminate FILE[:FIELD]`.

A file's question field is FIELD, else --benchmark-field, else whichever one of BENCHMARK_FIELDS it
has. Every line must be usable: a skipped line could let a contaminated item through.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from curate.data.readers import BUNDLED_PREFIX, ROW, listed, read_table, resolve_source
from curate.errors import ConfigError, DataError

BENCHMARK_FIELDS = ("question", "problem", "prompt")  # looked for when a benchmark file's field is not named


def _benchmark_spec(argument: str) -> tuple[str, str | None]:
    """FILE or FILE:FIELD: the field follows the last colon, unless the whole argument names a file."""
    head, colon, field = argument.rpartition(":")
    if colon and head and field and "/" not in field and f"{head}:" != BUNDLED_PREFIX and not Path(argument).exists():
        return head, field
    return argument, None


def benchmark_texts(arguments: Sequence[str], benchmark_field: str | None) -> tuple[list[str], list[str], list[dict]]:
    """Every benchmark question, its file's name, and per file: the field used and how many texts it gave."""
    texts, sources, used = [], [], []
    for argument in arguments:
        path, field = _benchmark_spec(argument)
        source = resolve_source(path)
        wanted = field or benchmark_field
        frame, broken = read_table(source, "test", wanted or BENCHMARK_FIELDS[0])
        chosen = wanted or _detect_field(path, frame.columns)
        if chosen != (wanted or BENCHMARK_FIELDS[0]):  # read again: JSONL lines are type-checked for this field
            frame, broken = read_table(source, "test", chosen)
        if broken:
            grouped: dict[str, list[int]] = {}
            for line, reason, _ in broken:
                grouped.setdefault(reason, []).append(line)
            raise DataError(f"benchmark {path}: {len(broken)} unusable line(s): " + "; ".join(
                f"{reason} at line(s) {listed(lines)}" for reason, lines in grouped.items())
                + "; fix them (a skipped line could let a contaminated item through)")
        if chosen not in frame.columns:
            raise ConfigError(f"benchmark {path} has no field {chosen!r} (fields: "
                              f"{[c for c in frame.columns if c != ROW]}); name it as {path}:FIELD")
        if not frame.height:
            raise DataError(f"benchmark {path} holds no rows, so it cannot decontaminate anything")
        if frame[chosen].dtype not in (pl.String, pl.Null):
            raise DataError(f"benchmark {path}: field {chosen!r} holds {frame[chosen].dtype}, not text; name the "
                            f"question field as {path}:FIELD")
        empty = frame.filter(pl.col(chosen).is_null() | (pl.col(chosen).cast(pl.String).str.strip_chars() == ""))
        if empty.height:
            raise DataError(f"benchmark {path}: {chosen!r} is missing or empty at row(s) "
                            f"{listed(empty[ROW].to_list())}; fix the file or name another field as {path}:FIELD")
        values = frame[chosen].to_list()
        texts += values
        sources += [Path(path).name] * len(values)
        used.append({"path": path, "field": chosen, "texts": len(values),
                     "field_from": "FILE:FIELD" if field else "--benchmark-field" if benchmark_field else "detected"})
    return texts, sources, used


def _detect_field(path: str, columns: list[str]) -> str:
    found = [name for name in BENCHMARK_FIELDS if name in columns]
    if len(found) != 1:
        raise ConfigError(f"benchmark {path}: {'several' if found else 'none'} of the fields {list(BENCHMARK_FIELDS)} "
                          f"found (fields: {[c for c in columns if c != ROW]}); name its question field as "
                          f"{path}:FIELD or with --benchmark-field")
    return found[0]
