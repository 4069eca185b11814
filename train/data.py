"""The rows a stage trains on, built from a split directory or read from a TRL export, and their fingerprint.

From a split directory (`curate split`, read with `curate.export.exporters.read_split_dir`) every item's prompt is
rendered by the stage's response template, the one `curate solve` evaluates with:
    SFT   `messages` = the prompt, then the assistant turn: the kept response of a `curate respond` run
          (`responses`, joined as `curate export --responses` joins it), else the split's column
          `response_field` (the reference, by default, which the log says). Items without a target are
          refused, or left out with `skip_unanswered` (listed, with the reason, in unanswered.jsonl).
    GRPO  `prompt`, `reference` and `choices` (TRL hands the extra columns to the reward functions), and with a
          curriculum its `curriculum_field`; items without a reference can earn no reward, so they are left out
          and counted.
From a TRL export (`curate export --format trl`: its folder, or one .parquet/.jsonl file) the rows are taken as
written: SFT needs `messages`, GRPO `prompt` and `reference` (the export has no `choices`, so the choice
verifier needs the split directory).

The fingerprint is a hash of the rows exactly as the trainer receives them: a stage records it, and a rerun
whose rows differ is refused rather than resumed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from curate.data.choices import CHOICE
from curate.errors import ConfigError, DataError
from curate.export.exporters import RESPONSE, UNANSWERED, read_split_dir
from curate.templates import load_template
from train.config import ALL_STAGES, GrpoConfig, SftConfig, StageConfig

log = logging.getLogger(__name__)
MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
ITEM_FIELDS = ("item_id", "question", "reference", "choices", "domain", "score")
SUFFIXES = (".parquet", ".jsonl")


class StageData(NamedTuple):
    rows: pl.DataFrame  # the columns the trainer gets
    record: dict[str, Any]  # where they came from, how many, and their fingerprint
    left_out: pl.DataFrame | None = None  # SFT items without a target (split, item_id, reason, n_tried)

    def dataset(self) -> Any:
        import datasets

        return datasets.Dataset.from_polars(self.rows)


def fingerprint(rows: pl.DataFrame) -> str:
    return hashlib.sha256(rows.write_ndjson().encode()).hexdigest()[:16]


def is_split_dir(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file() and (path / "sft.parquet").is_file()


def sft_data(config: SftConfig) -> StageData:
    source = Path(config.data)
    if not is_split_dir(source):
        rows, where = _exported(config, "messages", ("messages",))
        return _finished(rows.select("messages", *_ids(rows)), {"source": where, "prompts": "as exported"})
    frame, prompts, record = _rendered(config, source)
    left_out = None
    if config.responses is not None:
        frame, left_out, provenance = _responses(config, frame, prompts.get("template"))
        response, record["responses"] = RESPONSE, provenance
    else:
        response, record["responses"] = config.response_field, {"column": config.response_field}
        log.warning("SFT targets are the %r column of split %r (no respond run given): the model learns to answer "
                    "with it as written", config.response_field, config.split)
        _require_column(frame, response, config, "response_field")
        frame, left_out = _with_targets(frame, config)
    if frame.height == 0:
        raise DataError(f"no item of split {config.split!r} in {source} has a target: nothing to train on")
    record["left_out_without_target"] = 0 if left_out is None else left_out.height
    conversation = pl.concat_list(pl.col("prompt"), pl.concat_list(pl.struct(
        pl.lit("assistant").alias("role"), pl.col(response).cast(pl.String).alias("content"))))
    return _finished(frame.select(conversation.alias("messages"), "item_id"), {**record, **prompts}, left_out)


def grpo_data(config: GrpoConfig) -> StageData:
    source = Path(config.data)
    categories = [config.curriculum_field] if config.curriculum != "none" else []
    if is_split_dir(source):
        frame, prompts, record = _rendered(config, source)
        for column in categories:
            _require_column(frame, column, config, "curriculum_field")
        rows = frame.select("prompt", pl.col("reference").cast(pl.String), "choices", "item_id", *categories)
    else:
        rows, where = _exported(config, "prompt", ("prompt", "reference", *categories))
        if config.verifier == "choice" and "choices" not in rows.columns:
            raise ConfigError(f"the choice verifier needs each item's options, and {where} has no `choices` column "
                              "(a TRL export carries them only inside the prompt): train on the split directory")
        rows = rows.select("prompt", pl.col("reference").cast(pl.String), *(["choices"] * ("choices" in rows.columns)),
                           *_ids(rows), *categories)
        prompts, record = {"prompts": "as exported"}, {"source": where}
    missing = pl.col("reference").is_null() | (pl.col("reference").str.strip_chars() == "")
    no_reference = rows.filter(missing)
    if no_reference.height == rows.height:
        raise DataError(f"none of the {rows.height} items of {record['source']} has a reference, so no completion can "
                        "earn a reward; map one with `curate score --reference-field`")
    if no_reference.height:
        log.warning("%d of %d items of %s have no reference and are left out (no reward can be computed for them)",
                    no_reference.height, rows.height, record["source"])
        rows = rows.filter(~missing)
    return _finished(rows, {**record, **prompts, "left_out_without_reference": no_reference.height})


def _with_targets(frame: pl.DataFrame, config: SftConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The items whose `response_field` holds a target, and the others (as unanswered.jsonl lists them), which are
    refused unless `skip_unanswered`."""
    field = config.response_field
    empty = pl.col(field).is_null() | (pl.col(field).cast(pl.String).str.strip_chars() == "")
    left_out = frame.filter(empty).select(pl.lit(config.split).alias("split"), "item_id",
                                          pl.lit(f"no_{field}").alias("reason"), pl.lit(0).alias("n_tried"))
    if left_out.height and not config.skip_unanswered:
        raise DataError(f"{left_out.height} of {frame.height} items of split {config.split!r} in {config.data} have "
                        f"no {field!r} (response_field; e.g. {left_out['item_id'][0]!r}): SFT needs a target for "
                        "every item; pass --skip-unanswered to leave them out, name another column, or give a "
                        "respond run (--responses)")
    if left_out.height:
        log.warning("%d item(s) of split %r have no %r and are left out (skip_unanswered; listed in the stage "
                    "directory's %s)", left_out.height, config.split, field, UNANSWERED)
    return frame.filter(~empty), left_out


def _finished(rows: pl.DataFrame, record: dict[str, Any], left_out: pl.DataFrame | None = None) -> StageData:
    return StageData(rows, {**record, "rows": rows.height, "fingerprint": fingerprint(rows)}, left_out)


def _ids(rows: pl.DataFrame) -> list[str]:
    return ["item_id"] if "item_id" in rows.columns else []


def _require_column(frame: pl.DataFrame, column: str, config: StageConfig, setting: str) -> None:
    if column not in frame.columns:
        raise DataError(f"split {config.split!r} of {config.data} has no {column!r} column ({setting}); its columns "
                        f"are {frame.columns}")


def stage_names(splits: dict[str, pl.DataFrame]) -> list[str]:
    """The curriculum's stages of a split directory (read_split_dir's splits), in order."""
    return [name for name in splits if name.startswith("stage_")]


def chosen_split(splits: dict[str, pl.DataFrame], split: str, source: Path) -> pl.DataFrame:
    """The split named `split`; `stages` is every stage's items together (they carry their `stage` column)."""
    if split == ALL_STAGES:
        names = stage_names(splits)
        if not names:
            raise DataError(f"split directory {source} has no stages; write them with `curate split --stages k`")
        return pl.concat([splits[name] for name in names], how="diagonal_relaxed")
    if split not in splits:
        raise DataError(f"split directory {source} has no split {split!r}; it has {', '.join(splits)}")
    return splits[split]


def _rendered(config: StageConfig, source: Path) -> tuple[pl.DataFrame, dict[str, Any], dict[str, Any]]:
    """The split's items with their `prompt` rendered by the stage's template; what made the prompts; the record."""
    manifest, splits = read_split_dir(source)
    frame = chosen_split(splits, config.split, source)
    if frame.height == 0:
        raise DataError(f"split {config.split!r} of {source} holds no items: nothing to train on")
    template = load_template(config.template, config.template_dir)
    if template.kind != "response" or template.prefill:
        raise ConfigError(f"template {config.template!r} is a judge template; training needs a response template "
                          "(kind: response, no prefill), e.g. solve/step_by_step")
    if "choices" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, pl.List(CHOICE)).alias("choices"))
    for column in ("reference", "domain"):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(column))
    extra = [c for c in frame.columns if c not in ITEM_FIELDS]
    prompts = [template.render({"id": row["item_id"], "question": row["question"], "reference": row["reference"],
                                "choices": row["choices"], "domain": row["domain"],
                                "extra": {c: row[c] for c in extra}}) for row in frame.iter_rows(named=True)]
    frame = frame.with_columns(pl.Series("prompt", prompts, dtype=pl.List(MESSAGE)))
    record = {"source": str(source), "split": config.split, "split_tau": manifest.get("tau"),
              "split_score": manifest.get("score")}
    return frame, {"prompts": "template", "template": template.identity}, record


def _responses(config: SftConfig, frame: pl.DataFrame,
               template: str | None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """The split's items with the respond run's kept `response`, as `curate export --responses` joins them; the
    items left out (skip_unanswered); where the responses came from."""
    from curate.export.exporters import (
        with_responses,  # one join for `curate export --responses` and training
    )

    if not (config.split == "sft" or config.split.endswith("_sft")):
        raise ConfigError(f"--responses answer the SFT side of a split; {config.split!r} is not one (sft, <arm>_sft)")
    if RESPONSE in frame.columns:
        frame = frame.drop(RESPONSE)  # the respond run's response is the target, not an input field of that name
    splits, left_out, provenance = with_responses({config.split: frame}, Path(config.responses),
                                                   config.skip_unanswered)
    if left_out.height:
        log.warning("%d item(s) of split %r have no kept response in %s and are left out (skip_unanswered; listed in "
                    "the stage directory's %s)", left_out.height, config.split, config.responses, UNANSWERED)
    if provenance["template"] != template:
        log.warning("the responses of %s answer prompts of template %s; training renders the prompts with %s",
                    config.responses, provenance["template"], template)
    return splits[config.split], left_out, provenance


def _exported(config: StageConfig, kind: str, needed: tuple[str, ...]) -> tuple[pl.DataFrame, str]:
    """The rows of a TRL export file (or of the stage's split in an export folder) and where they were read."""
    path = Path(config.data)
    if path.is_dir():
        names = [config.split, re.sub(r"rl$", "grpo", config.split)]  # the TRL export calls the RL side grpo
        found = [path / f"{name}{suffix}" for name in names for suffix in SUFFIXES if (path / f"{name}{suffix}").is_file()]
        if not found:
            have = sorted(p.name for p in path.iterdir() if p.suffix in SUFFIXES)
            raise DataError(f"{path} is neither a split directory nor an export holding split {config.split!r} "
                            f"(files there: {have or 'none'}); give a split directory or a `curate export --format trl` "
                            "folder or file")
        path = found[0]
    elif not path.is_file():
        raise DataError(f"data {path} does not exist; give a split directory or a `curate export --format trl` folder "
                        "or file")
    try:
        rows = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"cannot read {path} as {'parquet' if path.suffix == '.parquet' else 'JSON lines'}: "
                        f"{str(exc).splitlines()[0]}") from None
    if missing := [c for c in needed if c not in rows.columns]:
        raise DataError(f"{path} has no {', '.join(missing)} column(s), which training on {kind} needs; its columns "
                        f"are {rows.columns} (a `curate export --format trl` file has them)")
    if rows.height == 0:
        raise DataError(f"{path} holds no rows: nothing to train on")
    return rows, str(path)
