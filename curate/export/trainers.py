"""The trainer formats of `curate export`: trl and verl tables from a split's frames.

Prompts are chat messages rendered by a response template (`curate.templates`, `kind: response`): `template`, by
default `instruct/boxed` (the question, its labelled options, and verl's MATH instruction to think step by step
and put the final answer, or the chosen option's label, in \\boxed{}). The template sees each split row as an item:
id, question, reference, choices, domain, and `extra` (the row's other columns), as `curate respond SPLIT_DIR`
renders it, so exporting with the respond run's template shows the teacher's own prompt. `system_prompt` puts a
system message first; with a template that writes its own it is refused, as are judge templates and templates
with a prefill (a trainer starts the answer itself). trl and verl leave the unscored split out.

    trl   sft.parquet: messages = prompt + [assistant: the response field], item_id, score (conversational language
          modelling, for SFTTrainer). grpo.parquet: prompt, reference (the reference's final answer, as verl's
          ground_truth below), choices (null, or a list of {label, text}), item_id, score (conversational
          prompt-only, for GRPOTrainer, which passes every column but prompt to the reward functions by name:
          curate.rewards.trl_reward reads reference and choices). Arms give <arm>_sft / <arm>_grpo; stages give
          stage_<i> in the GRPO form.
    verl  the columns of verl's RLHFDataset: data_source, prompt, ability, reward_model {style: "rule",
          ground_truth}, extra_info {item_id, difficulty: the score, index, choices}; SFT-side files also hold
          `messages` (verl's multi-turn SFT key) when the response field exists. Every file has the same columns
          and types otherwise, so verl reads any of them together.
          data_source: `data_source`, by default lighteval/MATH, which verl's default reward scores with its MATH
            scorer: the last \\boxed{} against ground_truth after Hendrycks' normalisation. That also scores a boxed
            option label against the label (verl ships no multiple-choice scorer). Any other name needs the reward
            curate ships for verl (curate.rewards.compute_score).
          ground_truth: the reference's final answer, as verl's own preprocessing writes it: for an item with
            options, the label of the option the reference names (the reference as it is when it names none); else
            the last \\boxed{} of a reference holding one (a MATH solution); else the text after the last `####`
            without thousands commas (a GSM8K solution); else the reference; `$` and spaces stripped around it.
          index: the item's position among the export's distinct items in order of first appearance (sft, rl, arms,
            stages): unique across the files of one export, and the same in every file that holds the item, so files
            trained on together never give two items one index.
          ability: `ability`, else the item's domain, else multiple_choice for an item with options, else unspecified.
SFT sides need the response field (`response` unless told): a split without it, or with items lacking it, is refused;
an input field that curate reads under another name (`answer` is the reference) is refused with the name to use.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import polars as pl

from curate.data.choices import CHOICE
from curate.data.items import CONVENTIONAL
from curate.errors import ConfigError, DataError, TemplateError
from curate.templates import JudgeTemplate, load_template
from curate.verify.extract import last_boxed
from curate.verify.simple import option_named

log = logging.getLogger(__name__)
DEFAULT_TEMPLATE = "instruct/boxed"
VERL_DATA_SOURCE = "lighteval/MATH"
RESPONSE = "response"  # the column of the SFT response
MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
ITEM_FIELDS = ("item_id", "question", "reference", "choices", "domain")
# Input field → the split column curate reads it into (curate.data.items: `answer` is the reference, `id` the item id).
RENAMED = {CONVENTIONAL["reference"]: "reference", CONVENTIONAL["id"]: "item_id"}
_PROMPT, _INDEX = "__dereason_prompt", "__dereason_index"  # working columns, clear of any input field's name


def side_of(name: str) -> str:
    return "sft" if name == "sft" or name.endswith("_sft") else "unscored" if name == "unscored" else "rl"


def with_column(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    return frame if column in frame.columns else frame.with_columns(pl.lit(None, pl.String).alias(column))


def with_prompt_fields(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """The columns prompts are built from, with `choices` as labelled options (a split without any has nulls)."""
    frame = with_column(with_column(with_column(frame, "reference"), "score"), "domain")
    dtype = frame.schema.get("choices")
    if dtype == pl.List(CHOICE):
        return frame
    if isinstance(dtype, pl.List) and (frame["choices"].list.len() > 0).any():
        raise DataError(f"the {name} split's `choices` are {dtype}, not labelled options (a list of {{label, text}}); "
                        "split a run scored by this version of dereason")
    return frame.with_columns(pl.lit(None, pl.List(CHOICE)).alias("choices"))


def prompt_template(name: str | None) -> JudgeTemplate:
    """The response template that writes the export's prompts (module docstring)."""
    template = load_template(name or DEFAULT_TEMPLATE)
    if template.kind != "response":
        raise TemplateError(f"template {template.name!r} is a judge template (it asks for a difficulty score); an "
                            f"export prompt asks for the answer: pass a response template, such as {DEFAULT_TEMPLATE}")
    if template.prefill:
        raise TemplateError(f"template {template.name!r} has a prefill, but an export prompt ends with the user's turn "
                            "(the trainer starts the answer): pass a template without one")
    return template


def _prompts(frame: pl.DataFrame, template: JudgeTemplate, system_prompt: str | None) -> pl.Series:
    system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    prompts = []
    for row in frame.iter_rows(named=True):
        item: dict[str, Any] = {"id": row["item_id"], **{f: row[f] for f in ITEM_FIELDS[1:]},
                                "extra": {k: v for k, v in row.items() if k not in ITEM_FIELDS}}
        messages = template.render(item)
        if system and messages[0]["role"] == "system":
            raise ConfigError(f"template {template.name!r} writes its own system message, so --system-prompt has no "
                              "place: drop it, or pass a template without a system block")
        prompts.append(system + messages)
    return pl.Series(_PROMPT, prompts, dtype=MESSAGES)


def _conversation(response_field: str) -> pl.Expr:
    answer = pl.struct(pl.lit("assistant", pl.String).alias("role"), pl.col(response_field).cast(pl.String).alias(
        "content"))
    return pl.concat_list(pl.col(_PROMPT), answer).alias("messages")


def check_response(name: str, frame: pl.DataFrame, field: str) -> None:
    if frame.height and field not in frame.columns:
        if RENAMED.get(field) in frame.columns:
            raise ConfigError(f"the {name} split has no {field!r} column: curate reads an input field {field!r} as the "
                              f"item's {RENAMED[field]!r}, which is what the split holds: pass --response-field "
                              f"{RENAMED[field]}")
        raise ConfigError(f"the {name} split has no {field!r} column (it has {', '.join(frame.columns)}): SFT needs a "
                          "target response per item (e.g. generated by a teacher model with `curate respond`); add "
                          "that column, or name another with --response-field")
    if frame.height and (missing := frame[field].null_count()):
        raise ConfigError(f"{missing} of {frame.height} items of the {name} split have no {field!r} (response_field)"
                          "; SFT needs a target response for every item")


def trl_tables(splits: dict[str, pl.DataFrame], response_field: str, template: JudgeTemplate,
               system_prompt: str | None) -> dict[str, pl.DataFrame]:
    out = {}
    for name, frame in ((n, f) for n, f in splits.items() if side_of(n) != "unscored"):
        frame = with_prompt_fields(name, frame)
        if side_of(name) == "sft":
            check_response(name, frame, response_field)
        frame = frame.with_columns(_prompts(frame, template, system_prompt))
        score = pl.col("score").cast(pl.Float64)
        if side_of(name) == "sft":
            out[name] = with_column(frame, response_field).select("item_id", _conversation(response_field), score)
        else:
            out["grpo" if name == "rl" else re.sub(r"_rl$", "_grpo", name)] = frame.select(
                pl.col(_PROMPT).alias("prompt"), _final_answer().alias("reference"), "choices", "item_id", score)
    return out


def final_answer(reference: str | None, choices: list[dict[str, str]] | None) -> str | None:
    """verl's ground_truth for an item (module docstring); None without a reference."""
    if reference is None or not reference.strip():
        return None
    if choices:
        return option_named(reference, choices) or reference.strip()
    boxed = last_boxed(reference)
    if boxed:
        return boxed.strip("$ \n")
    if "####" in reference:
        return reference.rsplit("####", 1)[-1].strip("$ \n").replace(",", "")
    return reference.strip("$ \n")


def _final_answer() -> pl.Expr:
    return pl.struct("reference", "choices").map_elements(
        lambda item: final_answer(item["reference"], item["choices"]), return_dtype=pl.String)


def _ability(ability: str | None) -> pl.Expr:
    if ability is not None:
        return pl.lit(ability, pl.String)
    return pl.coalesce(pl.col("domain").cast(pl.String),
                       pl.when(pl.col("choices").list.len() > 0).then(pl.lit("multiple_choice", pl.String)),
                       pl.lit("unspecified", pl.String))


def verl_tables(splits: dict[str, pl.DataFrame], response_field: str, template: JudgeTemplate,
                system_prompt: str | None, data_source: str, ability: str | None) -> dict[str, pl.DataFrame]:
    trainable = {n: with_prompt_fields(n, f).with_columns(pl.col("item_id").cast(pl.String))
                 for n, f in splits.items() if side_of(n) != "unscored"}
    index = (pl.concat([f.select("item_id") for f in trainable.values()]).unique(maintain_order=True)
             .with_row_index(_INDEX).with_columns(pl.col(_INDEX).cast(pl.Int64)))
    out = {}
    for name, frame in trainable.items():
        if name == "rl" and (missing := frame["reference"].null_count()):
            log.warning("%d of %d items of the rl split have no reference, so verl's rule reward has no ground truth "
                        "for them; map one with `curate score --reference-field`", missing, frame.height)
        sft_messages = side_of(name) == "sft" and response_field in frame.columns
        if sft_messages:
            check_response(name, frame, response_field)
        frame = frame.with_columns(_prompts(frame, template, system_prompt)).join(
            index, on="item_id", how="left", maintain_order="left")
        columns = [pl.lit(data_source, pl.String).alias("data_source"), pl.col(_PROMPT).alias("prompt"),
                   _ability(ability).alias("ability"),
                   pl.struct(pl.lit("rule", pl.String).alias("style"), _final_answer().alias("ground_truth")).alias(
                       "reward_model"),
                   pl.struct("item_id", pl.col("score").cast(pl.Float64).alias("difficulty"),
                             pl.col(_INDEX).alias("index"), "choices").alias("extra_info")]
        out[name] = frame.select(columns + ([_conversation(response_field)] if sft_messages else []))
    return out
