"""`dereason-train run`: a recipe's stages in order (SFT, then GRPO from its final model, by default), and the
run manifest that names what produced the result.

    RUN_DIR/
      run.json     the recipe as resolved (every stage's full settings), then per stage: its status, its
                   settings, data fingerprint and rows, starting model (name and file fingerprint), what it
                   resolved (device, processes, TRL arguments, template, responses' provenance), its final model
                   and its closing metrics; the package versions. Written whole (a temporary file renamed) after
                   every change.
      sft/, grpo/  the stage directories (train.stage)

A rerun after a kill goes through the stages again: a done training stage is found done (its stage.json) and
not trained again, the stage that was stopped resumes from its last checkpoint, and an eval stage asks only
for the answers its solve runs lack. A rerun of a run directory with another recipe is refused, naming what
differs. Before the first stage runs, every stage's data and TRL settings are built and checked. `STAGES` has
each stage's functions; its settings are in train.recipe.STAGE_CONFIGS.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from curate.errors import ConfigError, RunDirError
from curate.files import write_atomic
from curate.outdir import is_run_dir
from train.config import identity
from train.eval import evaluate
from train.grpo import prepare_grpo, train_grpo
from train.judge import prepare_judge, train_judge
from train.model import main_process
from train.recipe import RunRecipe
from train.sft import prepare_sft, train_sft
from train.stage import TRAINING, differences, versions
from train.staged import prepare_staged, train_staged

log = logging.getLogger(__name__)
RUN_MANIFEST = "run.json"


class StageKind(NamedTuple):
    run: Callable[..., dict[str, Any]]  # run(config[, prepared]): the stage's record
    prepare: Callable[[Any], Any] | None  # prepare(config): everything checked before a model is loaded


STAGES: dict[str, StageKind] = {"sft": StageKind(train_sft, prepare_sft), "grpo": StageKind(train_grpo, prepare_grpo),
                                "staged": StageKind(train_staged, prepare_staged),
                                "eval": StageKind(evaluate, None),  # eval's settings are checked by curate on reading
                                "judge": StageKind(train_judge, prepare_judge)}


def read_run_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_recipe(recipe: RunRecipe) -> dict[str, Any]:
    """Train every stage of the recipe in order (resuming what a kill stopped); the run manifest."""
    out = Path(recipe.out)
    if is_run_dir(out):
        raise ConfigError(f"--out {out} is a curate run directory; give the training run a directory of its own")
    wanted: dict[str, Any] = {folder: identity(config) for folder, _, config in recipe.configs}
    stored = read_run_manifest(out)
    if stored is not None and (changed := differences(stored["recipe"], wanted)):
        raise RunDirError(f"run directory {out} holds a run of another recipe ({'; '.join(changed)}); rerun the same "
                          "recipe to resume it, or choose another --out")
    # Every stage's data and settings are checked before the first one trains: a typo in GRPO's section is
    # refused now, not after hours of SFT.
    prepared = {folder: STAGES[name].prepare(config) for folder, name, config in recipe.configs
                if STAGES[name].prepare is not None}
    manifest: dict[str, Any] = {"out": str(out), "recipe": wanted, "status": TRAINING, "stages": [],
                                "versions": versions()}
    for folder, name, config in recipe.configs:
        _write(out, {**manifest, "stages": [*manifest["stages"], _pending(folder, name, config)]})
        record = STAGES[name].run(config, prepared[folder]) if folder in prepared else STAGES[name].run(config)
        manifest["stages"].append({"name": name, "dir": folder, **record})
    manifest["status"] = "done"
    _write(out, manifest)
    return manifest


def _pending(folder: str, name: str, config: Any) -> dict[str, Any]:
    return {"name": name, "dir": folder, "status": TRAINING, "identity": {"stage": name, "config": identity(config)}}


def _write(out: Path, manifest: dict[str, Any]) -> None:
    if main_process():
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / RUN_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))
