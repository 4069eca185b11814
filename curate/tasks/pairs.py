"""The `pairs` task: a judge says which of two items is harder, and a Bradley-Terry fit turns the comparisons into
each item's difficulty (curate.stats.bradley_terry).

What the engine asks about is a comparison, not an item (`units`): the schedule (curate.tasks.schedule) pairs each
item with K others, each pair in both orders, and a comparison is stored like any judgment, keyed by its id (JSON
[a_id, b_id], A shown first) and sample index, so the store's guarantees hold for it: crash-safe, exactly once,
resumed, --retry-failed, reparsed. curate.parse_choice decides each answer.

The outcome a comparison gives the fit is P(A harder) where the logprobs at the letter held enough of the
probability (p_a, with mass ≥ MIN_CHOICE_MASS, or a constrained answer), else 1 or 0 from the letter chosen.

Per item (`aggregate`): `strength` (higher = harder, logits, read against the average item of the run) with its
standard error and 95% interval, `bt_status` (measured, always_harder, always_easier, or not_compared: the item is
in stored comparisons but none of them is ok; it gets no strength, never a default one), `item_status` scored or
unscored, and the comparisons it is in (n_comparisons, n_ok, n_failed; judged_harder: the outcomes summed in its
favour). Items in no stored comparison (an unfinished run) have no row, as a score run's unjudged items.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import polars as pl

from curate.backends import Alternatives, Completion
from curate.parse import FAILED, Status, score_alternatives
from curate.parse_choice import CHOICE_METHODS, CHOICES, MIN_CHOICE_MASS, LetterChoiceParser, parse_choice
from curate.stats.bradley_terry import ITEMS_SCHEMA, fit_bradley_terry
from curate.tasks.schedule import SCHEDULE, pair_schedule


class Comparison(NamedTuple):
    """One stored comparison; a tuple, so rows go to SQLite as they are."""

    item_id: str  # the comparison's id: JSON [a_id, b_id] (curate.tasks.schedule.comparison_id)
    sample_idx: int
    status: str
    choice: str | None  # "A" or "B", the item the judge called harder (ok comparisons only)
    detail: str
    raw_text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    parser: str
    template: str
    a_id: str  # the item shown first, as A
    b_id: str  # the item shown second, as B
    choice_method: str  # "logprobs", "constrained" or "decoded" for ok comparisons, "" otherwise
    p_a: float | None  # P(A harder) from the logprobs where the letter stands
    choice_mass: float | None  # P(A) + P(B) there, before renormalising
    top_logprobs: str | None  # JSON [[token, logprob], ...] where the letter stands, as returned


AGGREGATED = ("item_id", "sample_idx", "status", "a_id", "b_id", "choice", "choice_method", "p_a", "choice_mass",
              "prompt_tokens", "completion_tokens")
PER_ITEM_SCHEMA = {"item_id": pl.String, "item_status": pl.String, "bt_status": pl.String,
                   **{name: kind for name, kind in ITEMS_SCHEMA.items() if name not in ("item_id", "bt_status",
                                                                                      "n_compared")},
                   "n_comparisons": pl.Int64, "n_ok": pl.Int64, "n_failed": pl.Int64}


def soft_outcome() -> pl.Expr:
    """Whether an ok comparison's outcome is its P(A harder) rather than the letter chosen (module docstring)."""
    return pl.col("p_a").is_not_null() & ((pl.col("choice_mass") >= MIN_CHOICE_MASS)
                                          | (pl.col("choice_method") == "constrained"))


def outcomes(records: pl.DataFrame) -> pl.DataFrame:
    """a_id, b_id, outcome (P(A harder), soft or 0/1) and `soft` of the ok comparisons."""
    return (records.filter(pl.col("status") == Status.OK)
            .select("a_id", "b_id", pl.when(soft_outcome()).then(pl.col("p_a"))
                    .otherwise((pl.col("choice") == "A").cast(pl.Float64)).alias("outcome"),
                    soft_outcome().alias("soft")))


def order_agreement(records: pl.DataFrame) -> dict[str, Any]:
    """Of the pairs (per sample) whose two orders are both ok, how many name the same item harder: a judge without
    position bias or noise agrees on all; one that always answers A on none."""
    ok = records.filter(pl.col("status") == Status.OK).select(
        "a_id", "b_id", "sample_idx", pl.when(pl.col("choice") == "A").then("a_id").otherwise("b_id").alias("harder"))
    both = ok.join(ok, left_on=["a_id", "b_id", "sample_idx"], right_on=["b_id", "a_id", "sample_idx"],
                   suffix="_reversed").filter(pl.col("a_id") < pl.col("b_id"))
    agree = int((both["harder"] == both["harder_reversed"]).sum())
    return {"pairs": both.height, "agree": agree, "fraction": agree / both.height if both.height else None}


@dataclass(frozen=True)
class PairsTask:
    """`comparisons`: opponents per item; `schedule_seed`: which ones; `sampled`, `constrained` as ScoreTask's."""

    parser: LetterChoiceParser
    template_identity: str
    comparisons: int
    schedule_seed: int
    sampled: bool
    constrained: bool
    name = "pairs"
    records_word = "comparisons"
    record_type = Comparison
    aggregated_columns = AGGREGATED
    asks_in_rounds = False
    reparsed_columns = ("status", "choice", "detail", "parser", "choice_method", "p_a", "choice_mass")
    failed_statuses = tuple(FAILED)
    retried_statuses = (Status.ERROR, Status.TRUNCATED)
    rising_identity = ("comparisons",)  # a larger K keeps the smaller one's pairs (curate.tasks.schedule)

    @property
    def first_tokens(self) -> tuple[str, ...]:
        return CHOICES if self.constrained else ()

    def identity(self) -> dict[str, Any]:
        return {"parser": self.parser.name, "comparisons": self.comparisons, "schedule_seed": self.schedule_seed,
                "schedule": SCHEDULE}

    def units(self, items: pl.DataFrame) -> pl.DataFrame:
        """One row per comparison: its id, a_id, b_id, and the two items (`a`, `b`) the template renders."""
        def side(name: str) -> pl.DataFrame:
            return items.select(pl.col("id").alias(f"{name}_id"), pl.struct(items.columns).alias(name))

        schedule = pair_schedule(items["id"], self.comparisons, self.schedule_seed)
        return (schedule.join(side("a"), on="a_id", maintain_order="left")
                .join(side("b"), on="b_id", maintain_order="left").select("id", "a_id", "b_id", "a", "b"))

    def records(self, completions: Sequence[Completion], items: Sequence[Mapping[str, Any]]) -> list[Comparison]:
        return [self._comparison(completion, row["a_id"], row["b_id"],
                                 score_alternatives(self.parser, completion.logprobs), self.template_identity)
                for completion, row in zip(completions, items, strict=True)]

    def reread(self, row: Mapping[str, Any], item: Mapping[str, Any]) -> Comparison:
        completion = Completion(row["item_id"], row["sample_idx"], row["raw_text"], row["finish_reason"],
                                row["prompt_tokens"], row["completion_tokens"])
        same_parser = row["parser"] == f"{self.parser.name}@{self.parser.version}"
        stored = tuple(map(tuple, json.loads(row["top_logprobs"] or "[]"))) if same_parser else ()
        return self._comparison(completion, row["a_id"], row["b_id"], stored, row["template"])

    def _comparison(self, completion: Completion, a_id: str, b_id: str, alternatives: Alternatives,
                    template: str) -> Comparison:
        parsed = parse_choice(self.parser, completion.text, completion.finish_reason, completion.error, alternatives,
                              sampled=self.sampled, constrained=self.constrained)
        return Comparison(completion.item_id, completion.sample_idx, parsed.status, parsed.choice, parsed.detail,
                          completion.text, completion.finish_reason, completion.prompt_tokens,
                          completion.completion_tokens, f"{self.parser.name}@{self.parser.version}", template, a_id,
                          b_id, parsed.method, parsed.p_a, parsed.mass,
                          json.dumps(alternatives) if alternatives else None)

    def aggregate(self, records: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
        ok = outcomes(records)
        fit = fit_bradley_terry(ok)
        involved = pl.concat([records.select(pl.col(side).alias("item_id"), "status") for side in ("a_id", "b_id")])
        counts = involved.group_by("item_id").agg(
            pl.len().cast(pl.Int64).alias("n_comparisons"),
            (pl.col("status") == Status.OK).sum().cast(pl.Int64).alias("n_ok"),
            pl.col("status").is_in(list(FAILED)).sum().cast(pl.Int64).alias("n_failed"))
        items = (counts.join(fit.items.drop("n_compared"), on="item_id", how="left")
                 .with_columns(pl.col("bt_status").fill_null("not_compared"),
                               pl.when(pl.col("strength").is_not_null()).then(pl.lit("scored"))
                               .otherwise(pl.lit("unscored")).alias("item_status"))
                 .select(list(PER_ITEM_SCHEMA)).cast(PER_ITEM_SCHEMA).sort("item_id"))
        return items, self._summary(records, items, ok, fit.detail)

    def _summary(self, records: pl.DataFrame, items: pl.DataFrame, ok: pl.DataFrame,
                 fit: dict[str, Any]) -> dict[str, Any]:
        n = records.height
        status_counts = {str(s): int((records["status"] == s).sum()) for s in Status}
        failed = sum(status_counts[str(s)] for s in FAILED)
        scored = int((items["item_status"] == "scored").sum())
        return {
            "items": items.height, "items_scored": scored, "items_unscored": items.height - scored,
            "comparisons_per_item": self.comparisons, "comparisons": n, "status_counts": status_counts,
            "failed": failed, "failure_fraction": failed / n if n else None,
            "choice_methods": {m: int(((records["status"] == Status.OK) & (records["choice_method"] == m)).sum())
                               for m in CHOICE_METHODS},
            "soft_outcomes": int(ok["soft"].sum()), "hard_outcomes": int((~ok["soft"]).sum()),
            "order_agreement": order_agreement(records),
            "bt_status_counts": {s: int(c) for s, c in items["bt_status"].value_counts().sort("bt_status").rows()},
            "bradley_terry": fit,
            "prompt_tokens": int(records["prompt_tokens"].sum()),
            "completion_tokens": int(records["completion_tokens"].sum()),
        }

    def settled(self, records: pl.DataFrame) -> pl.Series:
        return records["item_id"].unique()  # never asked: every comparison is wanted at once
