"""The `score` task: a judge rates each item's reasoning intensity 1-5 (curate.parse decides each answer)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import polars as pl

from curate.backends import Alternatives, Completion
from curate.parse import (
    FAILED,
    SCORE_DIGITS,
    Parser,
    Status,
    parse_completion,
    score_alternatives,
)
from curate.stats.aggregate import AGGREGATED_COLUMNS, per_item, summary


class Judgment(NamedTuple):
    """One stored judgment; a tuple, so rows go to SQLite as they are (the engine's hot path)."""

    item_id: str
    sample_idx: int
    status: str
    score: int | None
    detail: str
    raw_text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    parser: str
    template: str
    score_method: str  # "logprobs", "constrained" or "decoded" for ok judgments, "" otherwise
    expected_score: float | None  # Σ p(k)·k when the score position's logprobs held score tokens
    score_entropy: float | None
    score_mass: float | None  # probability on score tokens before renormalising
    score_probs: str | None  # JSON [p1, ..., p5]
    top_logprobs: str | None  # JSON [[token, logprob], ...] at the score position, as returned


def parser_label(parser: Parser) -> str:
    return f"{parser.name}@{parser.version}"


@dataclass(frozen=True)
class ScoreTask:
    """`sampled`: the run draws samples (temperature > 0), so a score is what the sample drew, not an argmax;
    `constrained`: the first answer token was restricted to the score tokens."""

    parser: Parser
    template_identity: str
    sampled: bool
    constrained: bool
    name = "score"
    records_word = "judgments"
    record_type = Judgment
    aggregated_columns = AGGREGATED_COLUMNS
    asks_in_rounds = False
    reparsed_columns = ("status", "score", "detail", "parser", "score_method", "expected_score", "score_entropy",
                        "score_mass", "score_probs")
    failed_statuses = tuple(FAILED)
    retried_statuses = (Status.ERROR, Status.TRUNCATED)
    rising_identity = ()

    @property
    def first_tokens(self) -> tuple[str, ...]:
        """A constrained judge answers with a score digit (the first token is the whole answer: --max-tokens 1)."""
        return tuple(SCORE_DIGITS) if self.constrained else ()

    def identity(self) -> dict[str, Any]:
        return {"parser": self.parser.name}

    def units(self, items: pl.DataFrame) -> pl.DataFrame:
        return items  # each item is judged on its own

    def records(self, completions: Sequence[Completion], items: Sequence[Mapping[str, Any]]) -> list[Judgment]:
        return [self._judgment(completion, score_alternatives(self.parser, completion.logprobs)
                               if self.parser.reads_logprobs else (), self.template_identity)
                for completion in completions]

    def reread(self, row: Mapping[str, Any], item: Mapping[str, Any]) -> Judgment:
        completion = Completion(row["item_id"], row["sample_idx"], row["raw_text"], row["finish_reason"],
                                row["prompt_tokens"], row["completion_tokens"])
        # Stored alternatives are where this parser version found the score; another parser's are elsewhere.
        same_parser = row["parser"] == parser_label(self.parser)
        stored = tuple(map(tuple, json.loads(row["top_logprobs"] or "[]"))) if same_parser else ()
        return self._judgment(completion, stored, row["template"])

    def _judgment(self, completion: Completion, alternatives: Alternatives, template: str) -> Judgment:
        parsed = parse_completion(self.parser, completion.text, completion.finish_reason, completion.error,
                                  alternatives, sampled=self.sampled, constrained=self.constrained)
        distribution = parsed.distribution
        logprob_fields = (None, None, None, None) if distribution is None else (
            distribution.expected, distribution.entropy, distribution.mass,
            json.dumps([round(p, 6) for p in distribution.probs]))
        return Judgment(completion.item_id, completion.sample_idx, parsed.status, parsed.score, parsed.detail,
                        completion.text, completion.finish_reason, completion.prompt_tokens,
                        completion.completion_tokens, parser_label(self.parser), template, parsed.method,
                        *logprob_fields, json.dumps(alternatives) if alternatives else None)

    def aggregate(self, records: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
        items = per_item(records)
        return items, summary(records, items)

    def settled(self, records: pl.DataFrame) -> pl.Series:
        return records["item_id"].unique()  # never asked: a judge's samples are all wanted at once
