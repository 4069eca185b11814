"""The task seam: what a run asks a model for, and what it keeps of each answer.

The engine (curate.engine) is the same for every task: it renders the task's template for each
(unit, sample) still missing from the run's store (a unit is an item, or for `pairs` a comparison of
two), hands the requests to a backend, turns each completion into the task's record, commits
records in chunks, and aggregates them per item. A task says only what differs:

    name               the run's kind, recorded in its identity ("score", "solve", "respond", "pairs")
    records_word       what its records are called in messages ("judgments", "responses", "comparisons")
    record_type        the NamedTuple stored per (item, sample); its annotations make the table
    aggregated_columns the record columns aggregate() and settled() read
    reparsed_columns   what `curate reparse` decides again from a stored raw output
    failed_statuses    statuses counted against --max-failure-fraction
    retried_statuses   statuses --retry-failed requests again
    first_tokens       what the first answer token may say (curate.backends.Request.first_tokens); () for anything
    identity()         what the records depend on beyond the model, template and sampling
    rising_identity    identity keys that may rise on a resume, the records stored keeping their worth (a pairs
                       run's comparisons per item: a larger schedule holds the smaller one)
    units(items)       what is asked about, one row per unit with an `id` (the store's item_id) and what the
                       template renders: the items themselves, or one row per comparison of two
    records(...)       a chunk of completions → their records, at once (a verifier that asks a judge model
                       gets the chunk as one batch, and its verdicts are stored in the chunk's transaction)
    reread(...)        one stored record → the record decided again (no model call)
    aggregate(...)     the run's records → (per-item frame, summary)
    asks_in_rounds     whether samples are asked a sample index at a time, until settled(...) says an item
                       needs no further one (rejection sampling); otherwise every sample is wanted at once

Every record starts with the fields the engine and store rely on: item_id, sample_idx, status,
detail, raw_text, finish_reason, prompt_tokens, completion_tokens, template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import polars as pl

from curate.backends import Completion


class Task(Protocol):
    name: str
    records_word: str
    record_type: type
    aggregated_columns: tuple[str, ...]
    asks_in_rounds: bool
    reparsed_columns: tuple[str, ...]
    failed_statuses: tuple[str, ...]
    retried_statuses: tuple[str, ...]
    first_tokens: tuple[str, ...]
    rising_identity: tuple[str, ...]

    def identity(self) -> dict[str, Any]:
        """What the stored records depend on beyond model, template and sampling (a parser, a verifier)."""

    def units(self, items: pl.DataFrame) -> pl.DataFrame:
        """What the engine asks about, from the run's items (module docstring)."""

    def records(self, completions: Sequence[Completion], items: Sequence[Mapping[str, Any]]) -> list[tuple]:
        """The records stored for completions, each of the item beside it (a row of the run's items)."""

    def reread(self, row: Mapping[str, Any], item: Mapping[str, Any]) -> tuple:
        """A stored record (a row of the store) decided again from its raw output, without a model."""

    def aggregate(self, records: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
        """The run's stored records → (one row per item, the run's summary)."""

    def settled(self, records: pl.DataFrame) -> pl.Series:
        """Ids of items that need no further sample (read by tasks that ask in rounds)."""
