"""The staged stage: GRPO over the stages `curate split --stages` wrote, in order, each from the previous one's final
model, and before each, its difficulty measured again with the model about to train on it (ADCL, arXiv 2505.08364;
stages from a plateau as in arXiv 2504.00829).

    STAGED_DIR/
      stage.json             settings, the stages' data, the starting model; once done, per stage what its
                             re-estimation kept and dropped, its steps and why it ended; the final model
      stage_<i>/
        reestimate/          an eval stage (train.eval): stage.json, and stage_<i>/, the `curate solve` run of the
                             stage's items with the model that starts the stage (reestimate_samples answers each)
        kept/                a split directory whose rl.parquet is the items whose pass rate lies in
                             reestimate_band, easiest first (highest pass rate; ties in the stage's order), with
                             their `reestimated_pass_rate`; its manifest.json counts what was dropped and why
        grpo/                the GRPO stage directory (train.stage) that trains on kept/
      final/                 the last trained stage's final model (hard links to its files)

Each stage trains on its kept items in that order (TRL's shuffling is off unless a curriculum draws them) until
max_steps, or until its reward plateaus (`plateau_window` W: metrics.jsonl's `reward`, the mean over W logged steps,
has not risen above the best such mean before the last W logged steps). A stage whose items all fall outside the
band is skipped, recorded as such, and the next one starts from the same model. Items without a countable answer
(every answer failed in the machinery) have no pass rate: they are dropped and counted apart.

Resume: a rerun finds done stages done (their stage.json), keeps every finished re-estimation (its kept/ is written
once the solve run is complete, and a stage whose kept/ exists is not measured again) and resumes the stage that was
stopped from its last checkpoint; an unfinished solve run resumes, asking only for the answers it lacks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.errors import ConfigError, DataError
from curate.files import write_atomic
from curate.settings import check, described
from train.config import ALL_STAGES, FINAL, GrpoConfig, world_size

log = logging.getLogger(__name__)
STAGE = "staged"
REESTIMATE, KEPT, GRPO = "reestimate", "kept", "grpo"
PASS_RATE = "reestimated_pass_rate"
MANIFEST = "manifest.json"
TRAINED, SKIPPED = "trained", "skipped"


@dataclass(frozen=True, kw_only=True)
class StagedConfig(GrpoConfig):
    """GRPO over a split's curriculum stages in order, each stage's items measured again first (train.staged)."""

    out: str = described("Staged directory: per stage its re-estimation (a curate solve run), its kept items and "
                         "its GRPO stage directory; stage.json and final/ (the last stage's model). Rerun the same "
                         "command to resume.")
    split: str = described("The stages to train, in order: stages (every stages/stage_<i>.parquet `curate split "
                           "--stages` wrote, easy to hard) or their names, comma-separated (stage_2,stage_3).",
                           default=ALL_STAGES)
    max_steps: int | None = described("Each stage's optimiser steps (its switch to the next stage, unless its reward "
                                      "plateaus first).", default=None)
    reestimate_band: str = described(
        "LOW,HIGH: before each stage, its items whose pass rate with the current model lies outside [LOW, HIGH] are "
        "dropped. 0.2,0.8 (PRIME's band, as --online-filter's): with a group of 8, an item at p = 0.2 gives a group "
        "with no reward variance (no learning signal) 17% of the time, at p = 0.1 43%.", default="0.2,0.8")
    reestimate_samples: int = described(
        "Answers sampled per item to measure its pass rate (at the GRPO temperature and top_p, at most "
        "max_completion_length tokens): 8, the default group, so the band is read at a group's grain.", default=8)
    reestimate_settings: dict[str, Any] = described(
        "Further settings of each re-estimation, by the eval stage's keys (batch_size, backend, solve_args, …); "
        "model, data, sampling and verifier are the stage's own.", default_factory=dict)
    plateau_window: int | None = described(
        "W: end a stage once the mean of its reward over W logged steps has not risen above the best such mean "
        "before the last W logged steps (so after 2W logged steps at the earliest).", default=None,
        unset="off: each stage runs max_steps")

    def __post_init__(self) -> None:
        super().__post_init__()
        from train.online_filter import parse_band

        parse_band(self.reestimate_band, "reestimate_band")
        check(self.reestimate_samples >= 1, f"reestimate_samples must be >= 1, got {self.reestimate_samples}")
        check(self.plateau_window is None or self.plateau_window >= 1,
              f"plateau_window must be >= 1, got {self.plateau_window}")
        check(world_size() == 1, f"staged runs on one process (its re-estimations are one curate solve each); this "
                                 f"job has {world_size()}")
        check(self.verifier != "model", "staged re-estimates with curate solve's verifiers (math, gsm8k, numeric, "
                                        "choice, exact); a judge-model verifier is not supported here")
        taken = sorted(set(self.reestimate_settings) & {"model", "heldout", "out", "verifier", "template",
                                                        "template_dir", "samples", "temperature", "top_p",
                                                        "max_tokens", "seed"})
        check(not taken, f"reestimate_settings sets {taken}, which the stage decides itself")


def plateaued(rewards: list[float], window: int) -> bool:
    """Whether the mean reward over `window` logged steps has not risen, in the last `window` logs, above the best
    mean before them."""
    if len(rewards) < 2 * window:
        return False
    means = np.convolve(np.asarray(rewards, dtype=float), np.ones(window) / window, mode="valid")
    return bool(means[-window:].max() <= means[:-window].max())


def plateau_callback(window: int, metrics: Path) -> Any:
    """A TrainerCallback that stops training when the stage's reward plateaus (`plateaued`), counting the rewards
    of the metrics.jsonl lines kept from before a resume."""
    from transformers import TrainerCallback

    class Plateau(TrainerCallback):
        rewards: list[float]

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
            self.rewards = [row["reward"] for line in lines if line.strip() and "reward" in (row := json.loads(line))]

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "reward" in logs:
                self.rewards.append(logs["reward"])
                if plateaued(self.rewards, window):
                    log.info("staged: the reward plateaued at step %d; next stage", state.global_step)
                    control.should_training_stop = True

    return Plateau()


def reestimated(items: pl.DataFrame, per_item: pl.DataFrame, low: float, high: float) -> tuple[pl.DataFrame,
                                                                                               dict[str, int]]:
    """The stage's items whose measured pass rate (a solve run's per-item frame) lies in [low, high], easiest first
    (ties in the stage's order), with it as `reestimated_pass_rate`; the counts of what was dropped and why."""
    rates = per_item.filter(pl.col("pass_status") == "measured").select("item_id", pl.col("pass_rate").alias(PASS_RATE))
    joined = items.join(rates, on="item_id", how="left", maintain_order="left")
    rate = pl.col(PASS_RATE)
    counts = {"items": items.height, "unmeasured": joined.filter(rate.is_null()).height,
              "below_band": joined.filter(rate < low).height, "above_band": joined.filter(rate > high).height}
    kept = joined.filter(rate.is_between(low, high)).sort(PASS_RATE, descending=True, maintain_order=True)
    return kept, {**counts, "kept": kept.height}


def sub_config(config: StagedConfig, **values: Any) -> GrpoConfig:
    """A stage's GRPO settings: the staged ones, with `values` (data, split, model, out) and TRL's shuffling off."""
    own = {f.name: getattr(config, f.name) for f in fields(GrpoConfig)}
    return GrpoConfig(**{**own, "trainer_args": {"shuffle_dataset": False, **config.trainer_args}, **values})


def stage_list(config: StagedConfig) -> list[str]:
    """The stages to train, in order, each checked to be in the split directory."""
    from curate.export.exporters import read_split_dir
    from train.data import stage_names

    _, splits = read_split_dir(config.data)
    available = stage_names(splits)
    names = available if config.split == ALL_STAGES else [name.strip() for name in config.split.split(",")]
    if not names:
        raise DataError(f"split directory {config.data} has no stages; write them with `curate split --stages k`")
    if missing := [name for name in names if name not in available]:
        raise ConfigError(f"split {config.split!r}: {missing} not among the stages of {config.data} ({available})")
    return names


@dataclass(frozen=True)
class StagedPlan:
    stages: list[str]
    data: dict[str, Any]  # per stage: its rows' fingerprint and count, as its GRPO stage would read them


def prepare_staged(config: StagedConfig) -> StagedPlan:
    """Every stage's data and GRPO settings, and the re-estimation's settings, checked before a model is loaded."""
    from train.grpo import prepare_grpo

    names = stage_list(config)
    data = {}
    for name in names:
        prepared = prepare_grpo(sub_config(config, split=name, out=str(Path(config.out) / name / GRPO)))
        data[name] = {key: prepared.data.record[key] for key in ("fingerprint", "rows")}
    eval_config(config, names[0], config.model)
    return StagedPlan(names, data)


def eval_config(config: StagedConfig, name: str, model: str) -> Any:
    """The eval stage that measures stage `name`'s items with `model`: the stage's sampling and verifier."""
    from curate.settings import from_flat
    from train.eval import EvalConfig

    values = {"template": config.template, "template_dir": config.template_dir, "verifier": config.verifier,
              "temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_completion_length,
              "seed": config.seed, "device": config.device, "trust_remote_code": config.trust_remote_code,
              "id_field": "item_id", "reference_field": "reference", **config.reestimate_settings,
              "samples": config.reestimate_samples, "model": model,
              "heldout": [str(Path(config.data) / "stages" / f"{name}.parquet")],
              "out": str(Path(config.out) / name / REESTIMATE)}
    return from_flat(EvalConfig, values, f"staged, re-estimation of {name}")


def reestimate(config: StagedConfig, name: str, model: str) -> dict[str, Any]:
    """Measure stage `name` with `model` (a stored solve run) and write its kept items as a split directory, once;
    that directory's manifest."""
    from curate.runs import SOLVE, read_response_run
    from train.eval import evaluate

    kept_dir = Path(config.out) / name / KEPT
    if (kept_dir / MANIFEST).is_file():
        return json.loads((kept_dir / MANIFEST).read_text(encoding="utf-8"))
    record = evaluate(eval_config(config, name, model))
    (measured,) = record["sets"].values()
    per_item = read_response_run(Path(measured["solve_run"]), SOLVE, "staged")[2]
    items = pl.read_parquet(Path(config.data) / "stages" / f"{name}.parquet")
    low, high = _band(config)
    kept, counts = reestimated(items, per_item, low, high)
    manifest = {"stage": name, "model": model, "solve_run": measured["solve_run"], "band": [low, high],
                "pass_at_1": measured["pass_at_1"], "counts": {"sft": 0, "rl": kept.height}, "reestimate": counts,
                "unscored_written": False, "tau": None, "score": None}
    staging = kept_dir.with_name(f".{KEPT}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    kept.clear().write_parquet(staging / "sft.parquet")
    kept.write_parquet(staging / "rl.parquet")
    write_atomic(staging / MANIFEST, json.dumps(manifest, indent=2, default=str))
    os.rename(staging, kept_dir)
    log.info("staged: %s re-estimated with %s: %d of %d items in [%g, %g] (%d below, %d above, %d unmeasured)",
             name, model, counts["kept"], counts["items"], low, high, counts["below_band"], counts["above_band"],
             counts["unmeasured"])
    return manifest


def _band(config: StagedConfig) -> tuple[float, float]:
    from train.online_filter import parse_band

    return parse_band(config.reestimate_band, "reestimate_band")


def train_staged(config: StagedConfig, plan: StagedPlan | None = None) -> dict[str, Any]:
    """Re-estimate and train every stage in order (or resume, or find done); the staged stage's record."""
    from train.grpo import train_grpo
    from train.model import model_identity
    from train.stage import METRICS, Stage

    plan = plan or prepare_staged(config)
    with Stage(STAGE, config, plan.data, model_identity(config)) as stage:
        if (done := stage.finished()) is not None:
            log.warning("staged: already trained in %s (final model: %s)", stage.dir, stage.dir / FINAL)
            return done
        stage.start({"stages": plan.stages})
        model, trained, records = config.model, None, []
        for name in plan.stages:
            kept = reestimate(config, name, model)
            entry: dict[str, Any] = {"stage": name, "model": model, "reestimate": kept["reestimate"],
                                     "solve_run": kept["solve_run"], "pass_at_1": kept["pass_at_1"]}
            if not kept["reestimate"]["kept"]:
                log.warning("staged: no item of %s has a pass rate in the band with %s; skipping it", name, model)
                records.append({**entry, "status": SKIPPED})
                continue
            grpo = sub_config(config, data=str(stage.dir / name / KEPT), split="rl", model=model,
                              out=str(stage.dir / name / GRPO))
            callbacks = ([plateau_callback(config.plateau_window, Path(grpo.out) / METRICS)]
                         if config.plateau_window else [])
            record = train_grpo(grpo, callbacks=callbacks)
            ended = "max_steps" if config.max_steps is None or record["steps"] >= config.max_steps else "plateau"
            records.append({**entry, "status": TRAINED, "dir": grpo.out, "steps": record["steps"], "ended_by": ended,
                            "metrics": record["metrics"]})
            model = trained = str(Path(grpo.out) / FINAL)
        if trained is None:
            raise DataError(f"staged: no stage of {config.data} had an item with a pass rate in "
                            f"{config.reestimate_band} ({stage.dir}/stage_*/kept/manifest.json count them): nothing "
                            "was trained; widen reestimate_band")
        if stage.main:
            _link_final(Path(trained), stage.dir / FINAL)
        return stage.done({"final": FINAL, "steps": sum(r.get("steps", 0) for r in records), "stages": records,
                           "settings": asdict(config)})


def _link_final(model: Path, final: Path) -> None:
    """The last stage's final model as final/: hard links (no copy of the weights), renamed into place whole."""
    staging = final.with_name(f".{FINAL}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model, staging, copy_function=os.link)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(staging, final)
