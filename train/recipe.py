"""A run recipe: one YAML file for a run's stages (`dereason-train run RECIPE`), mirroring the stages' flags.

    model: ...            # the first stage's model; a stage after a training stage starts from its final model
    out: runs/train/x     # the run directory: a folder per stage (out/sft, out/grpo, out/eval) and run.json
    stages: [sft, grpo]   # the default; [sft] or [grpo] trains one stage (the SFT-only and RL-only arms), and
                          # eval may come anywhere, more than once ([eval, sft, eval]: out/eval, out/eval_2);
                          # staged in place of grpo: GRPO over the split's stages, re-estimated (train.staged)
    data: split/          # any other top-level key applies to every stage that has that setting
    sft: {learning_rate: 1e-5}      # a stage's own section overrides the top level for that stage
    grpo: {verifier: gsm8k}
    eval: {heldout: [test.jsonl]}

`STAGE_CONFIGS` is the registry of stage names and their settings (train.run has their functions).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from curate.settings import check, from_flat, read_job_file
from train.config import FINAL, GrpoConfig, SftConfig
from train.eval import EvalConfig
from train.judge import JudgeConfig
from train.staged import StagedConfig

STAGE_CONFIGS: dict[str, type] = {"sft": SftConfig, "grpo": GrpoConfig, "staged": StagedConfig, "eval": EvalConfig,
                                  "judge": JudgeConfig}
TRAINED = ("sft", "grpo", "staged")  # stages that leave a model for the next stage to start from


@dataclass(frozen=True)
class RunRecipe:
    """The stages of one run in order, as (folder, stage name, complete config)."""

    out: str
    configs: tuple[tuple[str, str, Any], ...]


def read_recipe(path: str | Path, out: str | None = None) -> RunRecipe:
    """The recipe file at `path` (module docstring); `out` replaces its `out`."""
    return recipe_from_mapping(read_job_file(path), f"recipe {path}", out)


def recipe_from_mapping(values: dict[str, Any], where: str, out: str | None = None) -> RunRecipe:
    """A recipe from its mapping (what a recipe file holds; `where` names it in errors), e.g. one arm's: the same
    recipe with its splits replaced. `out` replaces the mapping's `out`."""
    values = dict(values)
    stages = values.pop("stages", ["sft", "grpo"])
    check(isinstance(stages, list) and bool(stages) and all(s in STAGE_CONFIGS for s in stages),
          f"{where}: stages must be a list of stage names from {list(STAGE_CONFIGS)}, got {stages!r}")
    sections = {name: values.pop(name) for name in list(values) if name in STAGE_CONFIGS}
    for name, section in sections.items():
        check(name in stages, f"{where}: section {name!r} is given but stages are {stages}; add it to stages or "
                              "remove the section")
        check(isinstance(section, dict), f"{where}: section {name!r} must be a mapping of settings")
        placed = sorted({"model", "out"} & set(section))
        check(not placed, f"{where}: section {name!r} sets {placed}: set the first stage's model and the run's out "
                          "at the top level (a stage after a training stage starts from its final model)")
    out = out or values.get("out")
    values.pop("out", None)
    check(bool(out), f"{where}: no run directory (out: in the recipe, or --out)")
    known = {name for cls in STAGE_CONFIGS.values() for name in get_type_hints(cls)}
    unknown = sorted(set(values) - known)
    check(not unknown, f"{where}: unknown setting(s) {unknown}; valid settings: {sorted(known)} and the sections "
                       f"{list(STAGE_CONFIGS)}")
    model = values.pop("model", None)
    check(bool(model), f"{where}: no model (model: at the top level, the first stage's)")
    configs, seen = [], Counter()
    for name in stages:
        seen[name] += 1
        folder = name if seen[name] == 1 else f"{name}_{seen[name]}"
        cls = STAGE_CONFIGS[name]
        own = {key: value for key, value in values.items() if key in get_type_hints(cls)}
        stage_values = {**own, **{k.replace("-", "_"): v for k, v in sections.get(name, {}).items()},
                        "model": model, "out": str(Path(out) / folder)}
        configs.append((folder, name, from_flat(cls, stage_values, f"{where}, stage {folder}")))
        if name in TRAINED:
            model = str(Path(out) / folder / FINAL)
    return RunRecipe(out=str(out), configs=tuple(configs))
