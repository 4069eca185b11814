"""The `solve` and `respond` tasks: a model answers each problem, and a verifier (curate.verify) decides
each answer against the item's reference.

Every stored response is exactly one of
    correct, wrong, no_answer   the verifier's verdict on a finished response
    ok                          a finished response no verifier was asked about (`respond` without --verify)
    truncated                   the model hit max_tokens: a cut answer is not a final answer, so it is not
                                verified (for a solver it is an attempt that failed)
    timeout                     the verifier ran past its time bound (`curate reparse` decides it again)
    error                       the backend failed, or the verifier could not decide (no reference): detail says
The raw text is always kept, with what the verifier read (`answer`) and the verifier's name and version.

solve     k rollouts per item (all wanted at once) → per-item pass rate with a Wilson interval
          (curate.stats.passrate); truncated rollouts count as failed attempts, error and timeout as none.
respond   teacher responses, a sample index at a time: an item is settled by its first kept response
          (correct, or ok when unverified), so --samples k is rejection sampling that stops asking once one
          passes. Per item: the kept response (the lowest sample index that passed), how many were tried and
          why the others failed; items where none passed are listed, never filled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import polars as pl

from curate.backends import Completion
from curate.stats.passrate import pass_rates, summarize
from curate.verify import ModelVerifier, Verdict, VerdictStatus, Verifier, verify_all

OK, TRUNCATED, ERROR = "ok", "truncated", "error"
STATUSES = (VerdictStatus.CORRECT, VerdictStatus.WRONG, VerdictStatus.NO_ANSWER, OK, TRUNCATED,
            VerdictStatus.TIMEOUT, ERROR)
FAILED = (ERROR, VerdictStatus.TIMEOUT)  # the machinery's failures, not the model's


class Response(NamedTuple):
    item_id: str
    sample_idx: int
    status: str
    detail: str
    raw_text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    template: str
    verifier: str  # "name@version", or "" when no verifier was asked
    answer: str  # what the verifier read as the final answer ("" when none)


def verifier_label(verifier: Verifier | None) -> str:
    return f"{verifier.name}@{verifier.version}" if verifier else ""


@dataclass(frozen=True)
class ResponseTask:
    """`name` picks how records aggregate (AGGREGATES); `template_identity` is what new records carry."""

    name: str
    verifier: Verifier | None
    template_identity: str
    records_word = "responses"
    record_type = Response
    reparsed_columns = ("status", "detail", "verifier", "answer")
    failed_statuses = FAILED
    retried_statuses = (ERROR, TRUNCATED)
    first_tokens = ()  # a response may open with anything
    rising_identity = ()

    @property
    def aggregated_columns(self) -> tuple[str, ...]:
        return AGGREGATED_COLUMNS[self.name]

    def identity(self) -> dict[str, Any]:
        judge = dict(self.verifier.judge) if isinstance(self.verifier, ModelVerifier) else {}
        return {"verifier": self.verifier.name if self.verifier else None, **judge}

    def units(self, items: pl.DataFrame) -> pl.DataFrame:
        return items  # each item is asked about on its own

    def records(self, completions: Sequence[Completion], items: Sequence[Mapping[str, Any]]) -> list[Response]:
        return self._responses(completions, items, [self.template_identity] * len(completions))

    def reread(self, row: Mapping[str, Any], item: Mapping[str, Any]) -> Response:
        completion = Completion(row["item_id"], row["sample_idx"], row["raw_text"], row["finish_reason"],
                                row["prompt_tokens"], row["completion_tokens"])
        return self._responses([completion], [item], [row["template"]])[0]

    def _responses(self, completions: Sequence[Completion], items: Sequence[Mapping[str, Any]],
                   templates: Sequence[str]) -> list[Response]:
        """Every finished completion's verdict is asked of the verifier at once (a judge model gets one batch)."""
        finished = [i for i, completion in enumerate(completions)
                    if self.verifier and not completion.error and completion.finish_reason != "length"]
        verdicts = dict(zip(finished, verify_all(self.verifier, [completions[i].text for i in finished],
                                                 [items[i] for i in finished]), strict=True)) if finished else {}
        return [self._response(completion, verdicts.get(i), template)
                for i, (completion, template) in enumerate(zip(completions, templates, strict=True))]

    def _response(self, completion: Completion, verdict: Verdict | None, template: str) -> Response:
        def made(status: str, detail: str = "", answer: str = "") -> Response:
            return Response(completion.item_id, completion.sample_idx, str(status), detail, completion.text,
                            completion.finish_reason, completion.prompt_tokens, completion.completion_tokens,
                            template, verifier_label(self.verifier), answer)

        if completion.error:
            return made(ERROR, completion.error)
        if completion.finish_reason == "length":
            return made(TRUNCATED, "hit max_tokens before the end of the response; not verified")
        if verdict is None:
            return made(OK)
        return made(verdict.status, verdict.detail, verdict.extracted)

    def aggregate(self, records: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
        per_item, summary = AGGREGATES[self.name](records, self)
        counts = {status: int((records["status"] == status).sum()) for status in STATUSES}
        failed = sum(counts[status] for status in FAILED)
        return per_item, {**summary, "responses": records.height, "status_counts": counts, "failed": failed,
                          "failure_fraction": failed / records.height if records.height else None,
                          "prompt_tokens": int(records["prompt_tokens"].sum()),
                          "completion_tokens": int(records["completion_tokens"].sum())}

    @property
    def asks_in_rounds(self) -> bool:
        return self.name == "respond"

    def settled(self, records: pl.DataFrame) -> pl.Series:
        return records.filter(pl.col("status") == self.kept_status)["item_id"].unique()

    @property
    def kept_status(self) -> str:
        return VerdictStatus.CORRECT if self.verifier else OK


def _solve(records: pl.DataFrame, task: ResponseTask) -> tuple[pl.DataFrame, dict[str, Any]]:
    # A truncated rollout is the solver failing within its budget; an ok one cannot happen (solve verifies).
    rollouts = records.select("item_id", "sample_idx", pl.col("status").alias("verdict"))
    per_item = pass_rates(rollouts, where="the run's responses")
    return per_item, summarize(per_item)


def _respond(records: pl.DataFrame, task: ResponseTask) -> tuple[pl.DataFrame, dict[str, Any]]:
    kept = (records.filter(pl.col("status") == task.kept_status).sort("sample_idx")
            .group_by("item_id", maintain_order=True).first()
            .select("item_id", pl.col("sample_idx").alias("kept_sample"), pl.col("raw_text").alias("response"),
                    pl.col("answer").alias("kept_answer")))
    counts = [(pl.col("status") == status).sum().alias(f"n_{status}") for status in STATUSES]
    per_item = (records.group_by("item_id").agg(pl.len().alias("n_tried"), *counts)
                .join(kept, on="item_id", how="left")
                .with_columns(pl.when(pl.col("kept_sample").is_not_null()).then(pl.lit("kept"))
                              .otherwise(pl.lit("none_kept")).alias("item_status"))
                .sort("item_id"))
    unkept = per_item.filter(pl.col("item_status") == "none_kept")["item_id"].to_list()
    return per_item, {"items": per_item.height, "items_kept": per_item.height - len(unkept),
                      "items_without_response": unkept}


AGGREGATES: dict[str, Callable[[pl.DataFrame, ResponseTask], tuple[pl.DataFrame, dict[str, Any]]]] = {
    "solve": _solve, "respond": _respond}
_COUNTED = ("item_id", "sample_idx", "status", "prompt_tokens", "completion_tokens")
AGGREGATED_COLUMNS = {"solve": _COUNTED, "respond": (*_COUNTED, "raw_text", "answer")}
