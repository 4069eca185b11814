"""A table of records checked for the columns a computation reads, and for nulls in them (pure Polars)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from curate.errors import DataError


def require_columns(frame: pl.DataFrame, columns: Sequence[str], where: str) -> None:
    """DataError naming `where` when `frame` lacks one of `columns`, or holds a null in one."""
    if missing := [c for c in columns if c not in frame.columns]:
        raise DataError(f"{where} lack column(s) {missing} (columns: {frame.columns})")
    for column in columns:
        if nulls := frame[column].null_count():
            raise DataError(f"{where}: {nulls} row(s) have no {column}")
