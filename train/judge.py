"""The judge stage (`dereason-train judge`): distil a difficulty judge. A pretrained chat model (SmolLM2-135M-Instruct
by default) is fine-tuned to answer a judge template with each item's level 1..5 (train.judge_data: from an input
field, a score run, a solve run or an IRT fit), and is then used as any judge: `curate score DATA --model
STAGE_DIR/final --template TEMPLATE --top-logprobs 20 --max-tokens 1`, so stats, compare and split take it unchanged.

    STAGE_DIR/          a training stage's directory (train.stage: checkpoints, final/, stage.json, metrics.jsonl)
      adapter/          with LoRA: the adapter alone (final/ has it merged), a few MB, loadable over the base model
      heldout.jsonl     the labelled items kept out of training, with `label` and `level`
      heldout-run/      `curate score` of them by the trained judge
      judge.json        how the levels were made (cut points), the data's counts per level, and the judge's
                        agreement with the held-out levels as `curate stats --reference level` measures it

What is learned: the template's prompt, exactly as curate's backends render and encode it (a prefilled template
continues its answer), then the level's digit and the end of the turn; the loss is on those two tokens alone, and
only their logits are computed (a vocabulary of 49,152 at every prompt position would be most of a step). On a
CPU with bfloat16 support, trainer_args {bf16: true} trains under bfloat16 autocast (about twice as fast here).
With `lora_layers` the adapters sit in the last layers only, so the backward pass stops there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import polars as pl

from curate.config import DataConfig, RunConfig
from curate.errors import ConfigError
from curate.files import write_atomic
from curate.settings import check, described
from curate.templates import load_template
from train.config import FINAL, StageConfig
from train.data import StageData, fingerprint
from train.judge_data import LABEL, LEVEL, LEVELS, capped, held_out, labelled_items
from train.stage import read_record
from train.trainer import Prepared, lora_config, prepare, run_stage

log = logging.getLogger(__name__)
STAGE = "judge"
HELDOUT, HELDOUT_RUN, JUDGE_RECORD = "heldout.jsonl", "heldout-run", "judge.json"
DEFAULT_JUDGE_TEMPLATE = "difficulty/level_prefilled"
_DATA = DataConfig.__dataclass_fields__


@dataclass(frozen=True, kw_only=True)
class JudgeConfig(StageConfig):
    """A judge distilled from labelled items (module docstring)."""

    model: str = described("Chat model the judge starts from: a local folder, a Hub id or bundled:NAME.",
                           default="bundled:smollm2-135m")
    data: str = described("Items to learn from: any input `curate score` reads (.jsonl/.parquet/.csv, a datasets "
                          "folder, a Hub id, bundled:NAME).")
    split: str = described(_DATA["split"].metadata["help"], default="train")
    question_field: str = described(_DATA["question_field"].metadata["help"], default="question")
    id_field: str | None = described(_DATA["id_field"].metadata["help"], default=None)
    choices_field: str | None = described(_DATA["choices_field"].metadata["help"], default=None)
    domain_field: str | None = described(_DATA["domain_field"].metadata["help"], default=None)
    label: str = described("The difficulty to learn: an input field (level, a pass rate), or a folder: a `curate "
                           "score` run (its item scores), a `curate solve` run (its pass rates) or an IRT directory.")
    harder_when: Literal["high", "low"] | None = described(
        "With a field: 'high' if a higher value is harder (a level), 'low' if easier (a pass rate).", default=None,
        unset="high")
    label_scale: Literal["auto", "as_is", "quantiles"] = described(
        "as_is: the labels are the levels 1..5; quantiles: five levels of as many training items; auto: as_is when "
        "every label is an integer in 1..5, higher when harder.", default="auto")
    heldout: float = described("Fraction of the labelled items kept out of training, for the agreement check.",
                               default=0.1)
    per_level: int | None = described("Most training items per level (a seeded sample).", default=None,
                                      unset="all of them")
    max_length: int = described("Longest prompt in tokens; longer items are left out and counted.", default=512)
    template: str = described("Judge template the judge answers (a score-only parser; a prefill puts the level "
                              "right after it).", default=DEFAULT_JUDGE_TEMPLATE)
    learning_rate: float = described("Peak learning rate (AdamW).", default=2e-4)
    lora: bool = described("Train LoRA adapters (peft) instead of every weight; the final model has them merged, "
                           "adapter/ holds them alone.", default=True)
    lora_layers: int | None = described("Put the adapters in the last N layers only (the backward pass stops "
                                        "there).", default=None, unset="every layer")
    gradient_checkpointing: bool = described(StageConfig.__dataclass_fields__["gradient_checkpointing"]
                                             .metadata["help"], default=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.heldout < 1, f"heldout must be in (0, 1), got {self.heldout}")
        check(self.per_level is None or self.per_level >= 1, f"per_level must be >= 1, got {self.per_level}")
        check(self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}")
        check(self.lora_layers is None or (self.lora and self.lora_layers >= 1),
              "lora_layers places LoRA adapters: it needs lora and a count >= 1")


def judge_data(config: JudgeConfig) -> tuple[StageData, pl.DataFrame]:
    """The training rows (item_id, input_ids: the prompt as curate's backends encode it, targets: the level's token
    and the end of the turn, level) and the held-out items; checked before any model loads."""
    from curate.backends.base import prompts_token_ids
    from curate.backends.models import load_tokenizer

    template = load_template(config.template, config.template_dir)
    if template.parser is None or not template.parser.whole_answer_is_score:
        raise ConfigError(f"template {config.template!r} is not a score-only judge template; a distilled judge "
                          f"answers with its level alone, e.g. {DEFAULT_JUDGE_TEMPLATE}")
    items, record = labelled_items(config)
    kept_out = held_out(items, config.heldout, config.seed)
    training = capped(items.filter(~kept_out), config.per_level, config.seed)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    ids = prompts_token_ids(tokenizer, [template.render(row) for row in training.iter_rows(named=True)])
    targets = {level: [_single_token(tokenizer, str(level)), tokenizer.eos_token_id] for level in LEVELS}
    rows = pl.DataFrame({"item_id": training["id"], "input_ids": ids, LEVEL: training[LEVEL]},
                        schema={"item_id": pl.String, "input_ids": pl.List(pl.Int64), LEVEL: pl.Int64})
    fitting = pl.col("input_ids").list.len() <= config.max_length
    too_long = rows.filter(~fitting).height
    rows = rows.filter(fitting).with_columns(pl.col(LEVEL).replace_strict(targets, return_dtype=pl.List(pl.Int64))
                                             .alias("targets"))
    if too_long:
        log.warning("%d training item(s) have prompts over max_length %d tokens and are left out", too_long,
                    config.max_length)
    counts = {str(level): int((rows[LEVEL] == level).sum()) for level in LEVELS}
    record = {**record, "template": template.identity, "training_per_level": counts, "left_out_too_long": too_long,
              "heldout_items": int(kept_out.sum()), "rows": rows.height, "fingerprint": fingerprint(rows)}
    return StageData(rows, record), items.filter(kept_out)


def _single_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(f"the tokenizer encodes the level {text!r} as {len(ids)} tokens; a judge answers with one")
    return ids[0]


def prepare_judge(config: JudgeConfig) -> Prepared:
    data, _ = judge_data(config)
    return prepare(STAGE, "transformers.TrainingArguments", config, data,
                   lambda hardware: {"remove_unused_columns": False}, {})


def train_judge(config: JudgeConfig, prepared: Prepared | None = None) -> dict[str, Any]:
    """Train (or resume, or find done) the judge, then measure it on the held-out items; its record."""
    prepared = prepared or prepare_judge(config)
    _, heldout = judge_data(config)

    def make_trainer(model: Any, tokenizer: Any, dataset: Any, ready: Prepared) -> Any:
        from train.judge_trainer import level_trainer

        peft_config = lora_config(config)
        if peft_config is not None and config.lora_layers is not None:
            layers = model.config.get_text_config().num_hidden_layers
            peft_config = replace(peft_config, layers_to_transform=list(range(max(0, layers - config.lora_layers),
                                                                                layers)),
                                  target_modules=_named_targets(model, peft_config.target_modules))
        return level_trainer(model, tokenizer, dataset, ready.settings, peft_config)

    record = run_stage(STAGE, config, prepared, make_trainer, {"template": config.template})
    return {**record, "judge": measured(config, heldout)}


def _named_targets(model: Any, targets: Any) -> list[str]:
    """peft places adapters by layer only with module names: "all-linear" is every linear module but the output."""
    if targets != "all-linear":
        return list(targets)
    import torch

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    return sorted(names - {"lm_head"})


def level_run(source: str, out: str, model: str, template: str, *, device: str, template_dir: str | None = None,
              question_field: str = "question") -> RunConfig:
    """The `curate score` job that reads a judge's levels of labelled items: logprob scoring of the level digit (one
    token, the top 20 logprobs), every judgment kept whatever its status."""
    return RunConfig.from_flat({"source": source, "out": out, "question_field": question_field, "model": model,
                                "template": template, "template_dir": template_dir, "top_logprobs": 20,
                                "max_tokens": 1, "device": device, "max_failure_fraction": 1.0})


def level_agreement(run_dir: Path | str) -> dict[str, Any]:
    """`curate stats --reference level` of a level_run, by the expected score (the whole stats)."""
    from curate.command_config import StatsConfig
    from curate.stats.analysis import analyze_run

    return analyze_run(run_dir, StatsConfig(reference=LEVEL, score="expected")).stats


def measured(config: JudgeConfig, heldout: pl.DataFrame) -> dict[str, Any]:
    """Score the held-out items with the trained judge and check its scores against their levels (judge.json)."""
    from curate.engine import score

    out = Path(config.out)
    if (out / JUDGE_RECORD).is_file():
        return json.loads((out / JUDGE_RECORD).read_text(encoding="utf-8"))
    rows = heldout.select("id", "question", "reference", "choices", "domain", LABEL, LEVEL)
    write_atomic(out / HELDOUT, rows.write_ndjson())
    run = level_run(str(out / HELDOUT), str(out / HELDOUT_RUN), str(out / FINAL), config.template,
                    device=config.device, template_dir=config.template_dir)
    summary = score(run).summary
    try:
        agreement = level_agreement(run.out)["reference"]
    except ConfigError as exc:  # a judge that scored none of them (it did not learn the answer's form)
        agreement = {"spearman": None, "why": str(exc)}
    result = {"heldout": {"items": rows.height, "run": str(out / HELDOUT_RUN), "score": "expected",
                          "vs_level": agreement, "judgments": summary["status_counts"]},
              "labels": read_record(out)["data"]}
    write_atomic(out / JUDGE_RECORD, json.dumps(result, indent=2, sort_keys=True, default=str))
    return result


