"""Export a split directory for trainers and the Hugging Face Hub.

Input, SPLIT_DIR: manifest.json; sft.parquet, rl.parquet, unscored.parquet; optionally
arms/<arm>/{sft,rl}.parquet (ablation arms, exported as splits `<arm>_sft`, `<arm>_rl`) and
stages/stage_<i>.parquet (an RL curriculum, exported as `stage_<i>`, in order of i).

Formats of `export_split(split_dir, out_dir, ExportConfig(format=...))`. The export directory appears whole or
not at all: it is written into a hidden sibling and renamed into place (`curate.outdir.atomic_directory`); an
existing non-empty out_dir is replaced only with `overwrite=True`, and never the split directory or a run
directory.
    hf       a `datasets.DatasetDict` written with `save_to_disk(out_dir)` (open it with
             `datasets.load_from_disk`): splits sft, rl, unscored and the extra splits, all with the same
             columns (their union; a column a split lacks is null there), so the dict is one Hub config.
             Beside it: README.md, the dataset card (YAML front matter, see `curate.export.card.dataset_card`),
             score_histogram.png, which the card links relatively, and data/<split>-00000-of-00001.parquet,
             where the card's `configs` point (the names `push_to_hub` gives the Hub's files), so that
             `datasets.load_dataset(out_dir)` loads the folder as it loads the pushed repo. A split without
             rows has no parquet file and no config entry: `load_dataset` cannot load one (the card lists it).
             `push_to_hub` uploads the DatasetDict, the histogram and the card.
    parquet  <split>.parquet per split, the columns of hf.
    jsonl    <split>.jsonl per split, one JSON object a line, the columns of hf.
    trl      sft.parquet (`messages`, for SFTTrainer) and grpo.parquet (`prompt`, `reference`, `choices`, for
             GRPOTrainer), <arm>_sft / <arm>_grpo, stage_<i>: see `curate.export.trainers`.
    verl     rl.parquet, sft.parquet, <arm>_rl, <arm>_sft, stage_<i> with the columns of verl's RLHFDataset
             (data_source, prompt, ability, reward_model, extra_info): see `curate.export.trainers`.
             trl and verl write README.md beside the files: what each holds, the prompt template with an
             example prompt, how the answers are rewarded, and the commands that train on them
             (`curate.export.card.trainer_card`).
SFT responses: `response_field` names a column of the split (default `response`), or `responses` names a
respond run (`curate respond`) over the same items (shared ids naming other items are refused): each SFT-side
item (splits sft and <arm>_sft) then gets that run's kept response as `response` (an input field so named
becomes `extra_response`), in every format. An item without one (reason none_kept: every try failed;
not_responded: the run has not reached it; not_in_respond_run) is never filled: the export is refused,
or with `skip_unanswered` the item is left out of its split and listed in unanswered.jsonl (split,
item_id, reason, n_tried). responses.json (and the hf card) says which run, model and template wrote the
responses, and which verifier passed them, or that none did.
The prompts of trl and verl are rendered by a response template (`template`, default instruct/boxed: the
question, its `LABEL. text` options, and an instruction to put the final answer in \\boxed{}), after an optional
`system_prompt`. hf, parquet and jsonl keep the question and `choices` (a list of {label, text}) as they are.
Strings and lists are stored as Arrow string / list (not large_string / large_list), what most readers
expect. Nothing is pickled.
The Hub token is read from the environment by `push_to_hub` and handed to the client; it is never written.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.command_config import ExportConfig
from curate.errors import ConfigError, DataError, DereasonError
from curate.export.card import (
    CARD,
    HF_DATA,
    HISTOGRAM,
    dataset_card,
    histogram_png,
    trainer_card,
)
from curate.export.trainers import (
    RESPONSE,
    VERL_DATA_SOURCE,
    prompt_template,
    side_of,
    trl_tables,
    verl_tables,
    with_prompt_fields,
)
from curate.files import write_atomic
from curate.outdir import atomic_directory, check_output_dir, is_run_dir
from curate.runs import ITEM_TEXT, RESPOND, read_response_run, refuse_other_items

log = logging.getLogger(__name__)
BASE_SPLITS = ("sft", "rl", "unscored")
_ARM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")
_STAGE = re.compile(r"stage_(\d+)")
UNANSWERED, RESPONSES = "unanswered.jsonl", "responses.json"


def read_split_dir(split_dir: str | Path) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
    """The manifest and every split as a Polars frame: base splits, then arms, then stages."""
    split_dir = Path(split_dir)
    if is_run_dir(split_dir):
        raise DataError(f"{split_dir} is a run directory, not a split directory: split it first with "
                        f"`curate split {split_dir} --out SPLIT_DIR`")
    if not (split_dir / "manifest.json").is_file():
        raise DataError(f"{split_dir} is not a split directory (no manifest.json)")
    manifest = json.loads((split_dir / "manifest.json").read_text(encoding="utf-8"))
    splits: dict[str, pl.DataFrame] = {}
    for name in BASE_SPLITS:
        path = split_dir / f"{name}.parquet"
        if name == "unscored" and manifest.get("unscored_written") is False:
            continue  # the split step was told to drop unscored items
        if not path.is_file():
            raise DataError(f"{split_dir} is not a complete split directory: {path.name} is missing")
        splits[name] = pl.read_parquet(path)
        expected = (manifest.get("counts") or {}).get(name)
        if expected is not None and expected != splits[name].height:
            raise DataError(f"{path} holds {splits[name].height} rows, its manifest counts {expected}")
    for arm in sorted(p for p in (split_dir / "arms").glob("*") if p.is_dir()):
        if not _ARM.fullmatch(arm.name):
            raise DataError(f"{arm}: an arm name must be letters, digits and underscores")
        for side in ("sft", "rl"):
            if (arm / f"{side}.parquet").is_file():
                splits[f"{arm.name}_{side}"] = pl.read_parquet(arm / f"{side}.parquet")
    stages = list((split_dir / "stages").glob("*.parquet"))
    if bad := sorted(p.name for p in stages if not _STAGE.fullmatch(p.stem)):
        raise DataError(f"{split_dir / 'stages'}: files must be named stage_<i>.parquet, not {bad}")
    for path in sorted(stages, key=lambda p: int(p.stem[6:])):
        splits[path.stem] = pl.read_parquet(path)
    return manifest, splits


def _small(dtype: pa.DataType) -> pa.DataType:
    """The Arrow type with large/view strings and lists replaced by the plain ones, recursively."""
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_list(dtype) or pa.types.is_list(dtype) or pa.types.is_list_view(dtype):
        return pa.list_(_small(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _small(f.type)) for f in dtype])
    return dtype


def _arrow(frame: pl.DataFrame) -> pa.Table:
    table = frame.to_arrow()
    return table.cast(pa.schema([pa.field(f.name, _small(f.type)) for f in table.schema]))


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    buffer = pa.BufferOutputStream()
    pq.write_table(_arrow(frame), buffer)
    write_atomic(path, buffer.getvalue().to_pybytes())


def _harmonized(splits: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Every split with the union of all splits' columns (first-seen order; absent → null)."""
    schema = pl.concat([f.head(0) for f in splits.values()], how="diagonal_relaxed").schema
    return {name: frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                                for c, t in schema.items()]) for name, frame in splits.items()}


def with_responses(splits: dict[str, pl.DataFrame], respond_dir: Path,
                    skip_unanswered: bool) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, dict[str, Any]]:
    """The splits with the respond run's kept responses on the SFT side, the SFT-side items left without one
    (split, item_id, reason, n_tried), and where the responses came from (module docstring)."""
    identity, run_items, per = read_response_run(respond_dir, RESPOND, "--responses")
    sft = [name for name in splits if side_of(name) == "sft"]
    items = pl.concat([with_prompt_fields(n, splits[n]).select(pl.col("item_id").alias("id"), *ITEM_TEXT)
                       for n in sft]).unique("id", keep="first", maintain_order=True)
    refuse_other_items(items, "the split's SFT side", respond_dir, run_items, "--responses")
    if items.height and not items["id"].is_in(run_items["id"].implode()).any():
        raise ConfigError(f"--responses {respond_dir} holds none of the split's {items.height} SFT-side items (ids "
                          f"such as {run_items['id'][0]!r} there, {items['id'][0]!r} here): respond over the split's "
                          "items, e.g. `curate respond SPLIT_DIR --model TEACHER --verify NAME --out RUN`")
    answers = (run_items.select(pl.col("id").alias("item_id"))
               .join(per.select("item_id", "n_tried", "item_status", RESPONSE), on="item_id", how="left")
               .with_columns(pl.col("item_status").fill_null("not_responded").alias("reason")))
    if any(RESPONSE in f.columns for f in splits.values()):
        if any(f"extra_{RESPONSE}" in f.columns for f in splits.values()):
            raise ConfigError(f"the split has both {RESPONSE!r} and 'extra_{RESPONSE}' fields, so --responses has no "
                              f"name for its {RESPONSE!r}: rename one in the input")
        splits = {n: f.rename({RESPONSE: f"extra_{RESPONSE}"}, strict=False) for n, f in splits.items()}
    unanswered = []
    for name in sft:
        joined = splits[name].join(answers, on="item_id", how="left", maintain_order="left").with_columns(
            pl.col("reason").fill_null("not_in_respond_run"))
        unanswered.append(joined.filter(pl.col(RESPONSE).is_null()).select(
            pl.lit(name).alias("split"), "item_id", "reason", pl.col("n_tried").fill_null(0)))
        splits[name] = joined.filter(pl.col(RESPONSE).is_not_null()).drop("n_tried", "item_status", "reason")
    left_out = pl.concat(unanswered)
    n_unanswered = left_out["item_id"].n_unique()
    by_split = {name: frame.height for name, frame in zip(sft, unanswered, strict=True) if frame.height}
    by_reason = dict(sorted(left_out.unique("item_id")["reason"].value_counts().rows()))
    if left_out.height and not skip_unanswered:
        raise ConfigError(f"{n_unanswered} SFT-side item(s) have no kept response in the respond run "
                          f"{respond_dir} ({', '.join(f'{n} {why}' for why, n in by_reason.items())}; rows by split: "
                          f"{', '.join(f'{name} {n}' for name, n in by_split.items())}), and none is filled in: ask "
                          "for them (`curate respond` again with more --samples, or over the items the arms train on), "
                          f"or pass --skip-unanswered to leave them out, listed in {UNANSWERED}")
    verifier = identity.get("verifier")
    if verifier is None:
        log.warning("the responses of %s were not verified (it was run without --verify): the export says so",
                    respond_dir)
    provenance = {"respond_run": str(respond_dir), "model": identity.get("model"), "template": identity.get("template"),
                  "verifier": verifier, "verified": verifier is not None, "sft_items": items.height,
                  "answered": items.height - n_unanswered, "unanswered": n_unanswered, "unanswered_rows": by_split,
                  "unanswered_reasons": by_reason}
    return splits, left_out, provenance


class Converted(NamedTuple):
    """A split directory in one format, before anything is written (a bad split leaves no export)."""

    tables: dict[str, pl.DataFrame]  # one per file or Hub split
    card: str | None  # README.md, for a format whose card is made with its tables (trl, verl)


class Source(NamedTuple):
    """What a writer may read besides its tables: the split's manifest and frames, and the responses' provenance."""

    manifest: dict[str, Any]
    splits: dict[str, pl.DataFrame]
    provenance: dict[str, Any] | None


@dataclass(frozen=True)
class Exporter:
    """A format: how the split's frames become its tables (`convert(splits, config, out)`), and how those are
    written into the export folder (`write(staging, converted, source)`)."""

    convert: Callable[[dict[str, pl.DataFrame], ExportConfig, Path], Converted]
    write: Callable[[Path, Converted, Source], None]


def _columns_as_they_are(splits: dict[str, pl.DataFrame], config: ExportConfig, out: Path) -> Converted:
    return Converted(_harmonized(splits), None)


def _trainer_tables(fmt: str, splits: dict[str, pl.DataFrame], config: ExportConfig, out: Path) -> Converted:
    prompts = prompt_template(config.template)
    response_field = config.response_field or RESPONSE
    data_source = config.data_source or VERL_DATA_SOURCE
    tables = (trl_tables(splits, response_field, prompts, config.system_prompt) if fmt == "trl" else
              verl_tables(splits, response_field, prompts, config.system_prompt, data_source, config.ability))
    counts = {name: frame.height for name, frame in tables.items()}
    # `datasets` (so TRL and verl) cannot load a parquet file without rows: the card lists such splits instead.
    tables = {name: frame for name, frame in tables.items() if frame.height}
    prompt = {"template": prompts.identity, "description": prompts.description, "system_prompt": config.system_prompt,
              "example": _first_prompt(tables)}
    return Converted(tables, trainer_card(fmt, str(out), counts, prompt, data_source, VERL_DATA_SOURCE))


def _write_hf(staging: Path, converted: Converted, source: Source) -> None:
    import datasets

    tables = converted.tables
    # An empty split needs num_shards=1: by default it is saved as 0 shards, which load_from_disk rejects.
    dataset = datasets.DatasetDict({name: datasets.Dataset(_arrow(frame)) for name, frame in tables.items()})
    dataset.save_to_disk(str(staging), num_shards={name: 1 for name, f in tables.items() if not f.height})
    (staging / HF_DATA).mkdir()
    for name, frame in tables.items():
        if frame.height:
            _write_parquet(frame, staging / HF_DATA / f"{name}-00000-of-00001.parquet")
    write_atomic(staging / HISTOGRAM, histogram_png(source.splits, source.manifest.get("tau"),
                                                    source.manifest.get("score") or "item"))
    write_atomic(staging / CARD, dataset_card(source.manifest, {n: f.height for n, f in tables.items()}, HISTOGRAM,
                                              source.provenance))


def _write_parquet_files(staging: Path, converted: Converted, source: Source) -> None:
    for name, frame in converted.tables.items():
        _write_parquet(frame, staging / f"{name}.parquet")


def _write_jsonl_files(staging: Path, converted: Converted, source: Source) -> None:
    for name, frame in converted.tables.items():
        write_atomic(staging / f"{name}.jsonl", frame.write_ndjson())


EXPORTERS: dict[str, Exporter] = {
    "hf": Exporter(_columns_as_they_are, _write_hf),
    "parquet": Exporter(_columns_as_they_are, _write_parquet_files),
    "jsonl": Exporter(_columns_as_they_are, _write_jsonl_files),
    "trl": Exporter(partial(_trainer_tables, "trl"), _write_parquet_files),
    "verl": Exporter(partial(_trainer_tables, "verl"), _write_parquet_files),
}


def export_split(split_dir: str | Path, out_dir: str | Path, config: ExportConfig, overwrite: bool = False) -> Path:
    """Write the split directory in `config.format` (one of EXPORTERS; see the module docstring) to out_dir, whole;
    `overwrite` replaces a non-empty out_dir. The SFT response is the column `config.response_field` (default
    "response") or the respond run `config.responses`; `template` and `system_prompt` make the trl and verl prompts,
    `data_source` (default lighteval/MATH) and `ability` are verl's (curate.export.trainers)."""
    exporter, responses = EXPORTERS[config.format], config.responses
    manifest, splits = read_split_dir(split_dir)
    inputs = [("split directory", Path(split_dir)), *([("respond run", Path(responses))] if responses else [])]
    out = check_output_dir(out_dir, overwrite, inputs)
    provenance = None
    if responses is not None:
        splits, unanswered, provenance = with_responses(splits, Path(responses), config.skip_unanswered)
    converted = exporter.convert(splits, config, out)
    with atomic_directory(out, overwrite, inputs) as staging:
        exporter.write(staging, converted, Source(manifest, splits, provenance))
        if converted.card is not None:
            write_atomic(staging / CARD, converted.card)
        if provenance is not None:
            write_atomic(staging / UNANSWERED, unanswered.write_ndjson())
            write_atomic(staging / RESPONSES, json.dumps(provenance, indent=2, sort_keys=True))
    return out


def _first_prompt(tables: dict[str, pl.DataFrame]) -> list[dict[str, str]] | None:
    """The card's example: the first RL prompt, else the first SFT conversation without its answer."""
    names = sorted(tables, key=lambda name: side_of(name) != "rl")  # sorted is stable: the RL side first, in order
    if not names:
        return None
    first = tables[names[0]]
    return first["prompt"][0].to_list() if "prompt" in first.columns else first["messages"][0].to_list()[:-1]


def check_push(fmt: str) -> None:
    """Refuse a Hub upload that cannot happen (call it before exporting, so that nothing is written)."""
    from huggingface_hub import constants

    if fmt != "hf":
        raise ConfigError(f"--push-to-hub needs --format hf, not {fmt}")
    if constants.HF_HUB_OFFLINE:
        raise ConfigError("--push-to-hub cannot upload while HF_HUB_OFFLINE is set: unset it, or export without "
                          "--push-to-hub")


def push_to_hub(out_dir: str | Path, repo_id: str, private: bool = True, token_env: str = "HF_TOKEN") -> str:
    """Upload an `hf` export: the DatasetDict (as parquet, by `datasets`), then the histogram and the card.
    The token is read from the environment variable `token_env` (unset: huggingface_hub's own login)."""
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HTTPError

    check_push("hf")
    out = Path(out_dir)
    if not (out / "dataset_dict.json").is_file():
        raise ConfigError(f"{out} is not an hf export (no dataset_dict.json); run export_split(SPLIT_DIR, OUT, "
                          "ExportConfig(format='hf')) first")
    token = os.environ.get(token_env)
    try:
        datasets.load_from_disk(str(out)).push_to_hub(repo_id, private=private, token=token)
        api = HfApi(token=token)
        for name in (HISTOGRAM, CARD):  # the image first, so the card never links a missing file
            if (out / name).is_file():
                api.upload_file(path_or_fileobj=str(out / name), path_in_repo=name, repo_id=repo_id,
                                repo_type="dataset", token=token, commit_message=f"dereason: upload {name}")
    except HTTPError as exc:  # the Hub refused or could not be reached (huggingface_hub's errors derive from it)
        raise DereasonError(f"pushing {out} to the Hub repo {repo_id} failed ({type(exc).__name__}: {exc}); the export "
                            "on disk is complete: once the Hub is reachable and the token valid, export again with "
                            "--overwrite --push-to-hub") from None
    return f"https://huggingface.co/datasets/{repo_id}"
