"""The eval stage: pass@1, averaged over k sampled answers per item, of a model on held-out sets, measured by a
`curate solve` run per set (curate.engine.solve: the same backends, templates and verifiers, stored crash-safe
and resumed by the same command).

    EVAL_DIR/
      <set>/        the curate solve run of each held-out set (named after its file or Hub id)
      stage.json    settings, model and, per set, pass@1 with a 95% percentile-bootstrap interval over items,
                    the item and rollout counts, and the solve run; invocations.jsonl as in a training stage

pass@1 of a set is the mean over its measured items of the item's pass rate (correct / attempts over its k
samples; a truncated answer is a failed attempt). Items whose every answer failed in the machinery (error,
timeout) have no pass rate: they are counted, never scored 0. A rerun goes through every set again: curate
requests only what is missing and refuses a run whose settings or data changed. Under `accelerate launch` (an
eval stage of a recipe trained on several GPUs) the main process evaluates while the others wait; an eval
longer than the process group's timeout is better run on its own (`dereason-train eval`, vLLM backend).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from curate.config import DEFAULT_RESPONSE_TEMPLATE, RunConfig
from curate.settings import check, described, settings_of
from train.model import distributed_state, model_identity

log = logging.getLogger(__name__)
STAGE = "eval"
_CURATE = settings_of(RunConfig)  # the settings eval hands to `curate solve` under the same meaning


def _as_curate(name: str, default: Any, extra: str = "") -> Any:
    """A setting of `curate solve`, with its help and the default eval gives it."""
    return described(_CURATE[name].help + extra, default=default)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Evaluate a model: a `curate solve` run per held-out set, and pass@1 averaged over the samples."""

    model: str = described("Model to evaluate: a local folder (a stage's final/), a Hub id or bundled:NAME.")
    heldout: list[str] = described(
        "Held-out sets to evaluate on, each as `curate solve` reads it (.jsonl, .json, .parquet, .csv, a datasets "
        "folder, a Hub id, bundled:NAME); never the data trained on.")
    out: str = described("Evaluation directory: a curate solve run per held-out set, stage.json and "
                         "invocations.jsonl. Rerun the same command to resume.")
    verifier: str = described("curate verifier that decides each answer (the GRPO reward's, in a recipe): math, "
                              "gsm8k, numeric, choice or exact.", default="math")
    template: str = _as_curate("template", DEFAULT_RESPONSE_TEMPLATE, " The training stages' template, in a recipe.")
    template_dir: str | None = _as_curate("template_dir", None)
    samples: int = described("k: answers sampled per item; pass@1 is averaged over them.", default=4)
    temperature: float = _as_curate("temperature", 0.6)
    top_p: float = _as_curate("top_p", 0.95)
    max_tokens: int = _as_curate("max_tokens", 1024)
    seed: int = _as_curate("seed", 0)
    backend: str = _as_curate("backend", "transformers")
    batch_size: int = _as_curate("batch_size", 16)
    device: str = _as_curate("device", "auto")
    dtype: str = _as_curate("dtype", "auto")
    trust_remote_code: bool = _as_curate("trust_remote_code", False)
    question_field: str = _as_curate("question_field", "question")
    reference_field: str | None = _as_curate("reference_field", None)
    id_field: str | None = _as_curate("id_field", None)
    choices_field: str | None = _as_curate("choices_field", None)
    heldout_split: str = described("Split to read from a DatasetDict or Hub dataset (curate's --split).",
                                   default="train")
    limit: int | None = _as_curate("limit", None)
    solve_args: dict[str, Any] = described(
        "Further `curate solve` settings by their job-file keys (max_batch_tokens, engine_args, base_url, …).",
        default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model", "out", "verifier", "template"):
            check(bool(getattr(self, name)), f"{name} is empty")
        check(bool(self.heldout) and all(isinstance(s, str) and s for s in self.heldout),
              f"heldout must name at least one held-out set, got {self.heldout!r}")
        names = [set_name(s) for s in self.heldout]
        check(len(set(names)) == len(names), f"heldout sets {self.heldout} share a name ({names}); rename a file")
        taken = sorted(set(self.solve_args) & ({f.name for f in fields(self)} | {"source", "verify", "split"}))
        check(not taken, f"solve_args sets {taken}, which are settings of their own: set them directly")
        for name in self.heldout:  # every setting is checked by curate before any set is evaluated
            solve_config(self, name)


def set_name(source: str) -> str:
    """A held-out set's folder name: its file's stem, or its Hub id or bundled name made a file name."""
    path = Path(source)
    text = path.stem if path.suffix else source.removeprefix("bundled:")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "set"


def solve_config(config: EvalConfig, source: str) -> RunConfig:
    """The `curate solve` job that evaluates `config.model` on the held-out set `source`."""
    flat = {"source": source, "out": str(Path(config.out) / set_name(source)), "model": config.model,
            "verify": config.verifier, "split": config.heldout_split,
            **{f.name: getattr(config, f.name) for f in fields(config)
               if f.name in _CURATE and f.name not in ("model", "out")}, **config.solve_args}
    return RunConfig.from_flat({key: value for key, value in flat.items() if value is not None or key == "limit"})


def pass_at_1(per_item: Any, seed: int) -> dict[str, Any]:
    """pass@1 over a solve run's per-item frame (module docstring), with its bootstrap interval and counts."""
    from curate.stats.passrate import summarize

    return {**summarize(per_item), **mean_pass_rate(per_item, seed)}


def mean_pass_rate(per_item: Any, seed: int, n_resamples: int | None = None) -> dict[str, Any]:
    """pass@1, the mean pass rate over the measured items, with its 95% bootstrap interval over items (curate's
    default resamples unless given), the number of measured items, and why a number is missing if one is."""
    from curate.stats.metrics import N_RESAMPLES, headline

    rates = per_item.filter(per_item["pass_status"] == "measured")["pass_rate"].to_numpy()
    notes: list[str] = []
    value = headline("pass@1", np.mean, (rates,), notes, None if rates.size else "no item has a countable attempt",
                     n_resamples=N_RESAMPLES if n_resamples is None else n_resamples, seed=seed)
    return {"pass_at_1": value, "measured": int(rates.size), "notes": notes}


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Evaluate (or resume evaluating) every held-out set; the stage's record (stage.json)."""
    from curate.engine import solve
    from curate.stats.metrics import format_interval
    from train.stage import Stage

    # Under `accelerate launch` (a recipe's eval) every process passes the same barriers as in a training stage
    # (start's, then one at the end, also when evaluating fails), while the main process alone evaluates.
    state = distributed_state()
    with Stage(STAGE, config, {}, model_identity(config)) as stage:
        stage.finished()  # refuses a directory that evaluated something else; a done one is gone through again
        stage.start({})
        try:
            if not state.is_main_process:
                return {}
            sets = {}
            for source in config.heldout:
                log.info("eval: %s on %s (%d samples per item)", config.model, source, config.samples)
                result = solve(solve_config(config, source))
                sets[set_name(source)] = {"source": source, "solve_run": str(result.run_dir),
                                          **pass_at_1(result.per_item, config.seed)}
                log.info("eval: %s: pass@1 %s", source, format_interval(sets[set_name(source)]["pass_at_1"], 3))
            return stage.done({"sets": sets, "settings": asdict(config)})
        finally:
            state.wait_for_everyone()
