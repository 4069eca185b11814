"""`dereason-train arms`: train every ablation arm of a split directory with matched budgets, evaluate each on
the same held-out sets, and write one comparison table (train.armtable).

An arms recipe is a run recipe (train.recipe) whose `data` is a split directory (`curate split`), with an
`eval` section naming the held-out sets, and optionally an `arms` section (ArmsConfig). The arms decide the
stages and the splits; every other setting is shared, so the arms differ only in which items they train on:

    difficulty   SFT on sft, then GRPO on rl (the split itself: easy items to SFT, hard ones to RL)
    random       SFT on random_sft, then GRPO on random_rl (the same sizes, items dealt at random)
    reversed     SFT on reversed_sft, then GRPO on reversed_rl (hard items to SFT, easy ones to RL)
    sft_all      SFT on every scored item, no GRPO
    rl_all       GRPO on every scored item, no SFT
    base         the starting model, untrained (with `base: true`)
each followed by the eval stage. Matched budgets: every arm that has a stage runs it for the same number of
optimiser steps (`max_steps`, which the recipe must set for sft and grpo) with the same batch, so each sees
the same number of sequences (SFT) and completions (GRPO) per stage; what differs is which items fill them,
and so how many passes over its split an arm makes (the table shows the split's rows). Single-stage arms get
that stage's budget only. The seed, learning rates and every other setting are the same for all arms.

    ARMS_DIR/
      arms.json                  the arms settings, each arm's resolved recipe, then per arm its status (done or
                                 failed, with the error) and run manifest; the table
      table.md table.json table.png
      <arm>/                     a run directory (train.run) per arm; error.log when it failed

A killed `arms` resumes with the same command: a done arm is found done stage by stage, the stopped one
resumes from its last checkpoint. A rerun with other settings is refused. An arm that fails is a row saying
so (its traceback in <arm>/error.log), and the other arms still run; a rerun tries it again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from curate.errors import DereasonError, RunDirError
from curate.files import write_atomic
from curate.settings import check, described, from_flat, read_job_file
from train.armtable import DONE, FAILED, markdown, plot, table
from train.config import ALL_STAGES, identity, world_size
from train.model import main_process
from train.recipe import RunRecipe, recipe_from_mapping
from train.stage import differences

log = logging.getLogger(__name__)
# Arm → its training stages, the split each trains on ("sft" and "rl" are the difficulty split's own sides) and,
# for the curricula, the settings the arm adds to that stage's section. The curricula arms train GRPO alone on
# every stage of `curate split --stages` together (the staged arm: one stage after the other, re-estimated), and
# SEC and DUMP draw by the items' stage.
PLANS: dict[str, tuple[tuple[Any, ...], ...]] = {
    "difficulty": (("sft", "sft"), ("grpo", "rl")),
    "random": (("sft", "random_sft"), ("grpo", "random_rl")),
    "reversed": (("sft", "reversed_sft"), ("grpo", "reversed_rl")),
    "sft_all": (("sft", "sft_all_sft"),),
    "rl_all": (("grpo", "rl_all_rl"),),
    "uniform": (("grpo", ALL_STAGES),),
    "online_filter": (("grpo", ALL_STAGES, {"online_filter": "0.2,0.8"}),),
    "staged": (("staged", ALL_STAGES),),
    "sec": (("grpo", ALL_STAGES, {"curriculum": "sec", "curriculum_field": "stage"}),),
    "dump": (("grpo", ALL_STAGES, {"curriculum": "dump", "curriculum_field": "stage"}),),
}
SPLIT_ARMS = ("difficulty", "random", "reversed", "sft_all", "rl_all")  # the default arms
TRAINED_SECTIONS = ("sft", "grpo", "staged")  # a staged stage takes the grpo section, then its own
BASE = "base"
ARMS_MANIFEST, LOCK = "arms.json", ".arms.lock"


@dataclass(frozen=True, kw_only=True)
class ArmsConfig:
    """The `arms` section of an arms recipe: which arms, against which, and the table's statistics."""

    arms: list[str] = described(f"Arms to train, in the table's order: any of {list(PLANS)}.",
                                default_factory=lambda: list(SPLIT_ARMS))
    baseline: str = described("The arm every paired difference is taken against.", default="random")
    base: bool = described("Also evaluate the starting model untrained (the table's first row).", default=True)
    bootstrap_seed: int = described("Seed of the bootstrap resamples of the table's intervals.", default=0)
    resamples: int = described("Bootstrap resamples per interval.", default=1000)
    settings: dict[str, dict[str, Any]] = described(
        "Per arm, settings its training stages take over the recipe's sections and the arm's own (the online_filter "
        "arm's band, for one: {online_filter: {online_filter: '0.1,0.9'}}).", default_factory=dict)
    reward: bool = described("Add each arm's GRPO reward to the table: the mean of metrics.jsonl's reward over its "
                             "logged training steps, over every GRPO stage of the arm.", default=False)

    def __post_init__(self) -> None:
        unknown = [arm for arm in self.arms if arm not in PLANS]
        check(not unknown, f"arms: unknown arm(s) {unknown}; choose from {list(PLANS)}")
        check(bool(self.arms) and len(set(self.arms)) == len(self.arms), f"arms must name each arm once, got "
                                                                         f"{self.arms}")
        check(self.baseline in self.arms, f"baseline {self.baseline!r} must be one of the arms {self.arms}")
        check(self.resamples >= 0, f"resamples must be >= 0, got {self.resamples}")
        stray = sorted(set(self.settings) - set(self.arms))
        check(not stray, f"settings: {stray} are not among the arms {self.arms}")


@dataclass(frozen=True)
class ArmsPlan:
    out: Path
    config: ArmsConfig
    recipes: dict[str, RunRecipe]  # arm → its run, in the table's order (base first when evaluated)
    notes: tuple[str, ...] = ()  # what the table's reader must know about the data (tiny-cpu: where scores came from)


def read_arms_recipe(path: str | Path, out: str | None = None) -> ArmsPlan:
    return plan_arms(read_job_file(path), f"recipe {path}", out)


def plan_arms(values: dict[str, Any], where: str, out: str | None = None) -> ArmsPlan:
    """Every arm's run recipe from an arms recipe's mapping (module docstring); `out` replaces its `out`."""
    values = dict(values)
    config = from_flat(ArmsConfig, values.pop("arms", None) or {}, f"{where}, section arms")
    check("stages" not in values, f"{where}: an arms recipe sets no stages: each arm has its own (sft then grpo, "
                                  "sft or grpo alone), followed by eval")
    for stage in TRAINED_SECTIONS:
        section = values.get(stage) or {}
        check(isinstance(section, dict), f"{where}: section {stage!r} must be a mapping of settings")
        check("split" not in section, f"{where}: section {stage!r} sets split, which each arm chooses itself")
    check(isinstance(values.get("eval"), dict) or "heldout" in values,
          f"{where}: an eval section with heldout sets is needed: every arm is evaluated on them")
    out = out or values.pop("out", None)
    values.pop("out", None)
    check(bool(out), f"{where}: no arms directory (out: in the recipe, or --out)")
    arms = ([BASE] if config.base else []) + config.arms
    recipes = {arm: recipe_from_mapping(_arm_mapping(values, arm, config.settings.get(arm) or {}),
                                        f"{where}, arm {arm}", str(Path(out) / arm)) for arm in arms}
    unbounded = sorted({name for recipe in recipes.values() for _, name, stage in recipe.configs
                        if name != "eval" and stage.max_steps is None})
    check(not unbounded, f"{where}: set max_steps for {' and '.join(unbounded)}: the arms' budgets are matched in "
                         "optimiser steps (epochs would give an arm with more rows more steps)")
    return ArmsPlan(Path(out), config, recipes)


def _arm_mapping(values: dict[str, Any], arm: str, own: dict[str, Any]) -> dict[str, Any]:
    trained = {}
    for stage, split, *added in PLANS.get(arm, ()):
        section = {**(values.get("grpo") or {})} if stage == "staged" else {}
        trained[stage] = {**section, **(values.get(stage) or {}), **(added[0] if added else {}), **own,
                          "split": split}
    shared = {key: value for key, value in values.items() if key not in TRAINED_SECTIONS}
    return {**shared, **trained, "stages": [*trained, "eval"]}


def _resolved(plan: ArmsPlan) -> dict[str, Any]:
    """What the arms directory holds, for the manifest and for refusing a rerun with other settings."""
    return {"arms": asdict(plan.config), "recipes": {arm: {folder: identity(config) for folder, _, config in
                                                           recipe.configs} for arm, recipe in plan.recipes.items()}}


def run_arms(plan: ArmsPlan) -> dict[str, Any]:
    """Run (or resume) every arm in turn, then write the table; the arms manifest (with the table)."""
    from train.run import run_recipe

    resolved = _resolved(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    with _held(plan.out):
        stored = _read(plan.out)
        if stored is not None and (changed := differences(stored["resolved"], resolved)):
            raise RunDirError(f"arms directory {plan.out} holds arms of other settings ({'; '.join(changed[:5])}); "
                              "rerun the same recipe to resume them, or choose another --out")
        manifest: dict[str, Any] = {"out": str(plan.out), "resolved": resolved, "arms": {}}
        for arm, recipe in plan.recipes.items():
            log.info("arms: %s", arm)
            try:
                manifest["arms"][arm] = {"status": DONE, "run": run_recipe(recipe)}
                if main_process():  # a traceback of an earlier try would say this arm is broken
                    (Path(recipe.out) / "error.log").unlink(missing_ok=True)
            except Exception as exc:  # noqa: BLE001 - failures are data: the arm becomes a row saying why
                manifest["arms"][arm] = {"status": FAILED, "error": _one_line(exc)}
                log.error("arms: %s failed: %s (traceback in %s)", arm, _one_line(exc), Path(recipe.out) / "error.log")
                if main_process():
                    Path(recipe.out).mkdir(parents=True, exist_ok=True)
                    write_atomic(Path(recipe.out) / "error.log", traceback.format_exc())
            _write(plan.out, manifest)
        if main_process():  # the one process that evaluated: the others have no results to tabulate
            manifest["table"] = arms_table(plan, manifest["arms"])
            _write(plan.out, manifest)
    return manifest


@contextmanager
def _held(out: Path) -> Iterator[None]:
    """One `arms` at a time in a directory (an OS lock the kernel releases when the process dies); under
    `accelerate launch` the main process holds it for all."""
    if not main_process():
        yield
        return
    with open(out / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"arms directory {out} is in use by another process; wait for it to finish or stop "
                              "it") from None
        yield


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return text if isinstance(exc, DereasonError | OSError) else f"{type(exc).__name__}: {text}"


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read(out: Path) -> dict[str, Any] | None:
    return _read_json(out / ARMS_MANIFEST)


def _write(out: Path, manifest: dict[str, Any]) -> None:
    if main_process():
        write_atomic(out / ARMS_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))


def _stages(recipe: RunRecipe, run: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each stage's budget: steps, sequences per optimiser step over all processes (completions, for GRPO), split,
    and its rows once read."""
    records = {stage["dir"]: stage for stage in (run or {}).get("stages", [])}
    stages = []
    for folder, name, config in recipe.configs:
        if name == "eval":
            stages.append({"stage": name, "seed": config.seed, "samples": config.samples})
            continue
        record = records.get(folder, {})
        data = record.get("identity", {}).get("data", {})
        rows, steps = data.get("rows"), config.max_steps
        if name == "staged":  # its max_steps is each stage's; what it trained is the record's
            rows = sum(stage["rows"] for stage in data.values()) if data else None
            steps = record.get("steps")
        stages.append({"stage": name, "split": config.split, "steps": steps, "seed": config.seed,
                       "per_step": config.batch_size * config.gradient_accumulation_steps * world_size(),
                       "rows": rows})
    return stages


def arms_table(plan: ArmsPlan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparison table of the arms' results (train.armtable), written as table.json, table.md and table.png."""
    from curate.runs import SOLVE, read_response_run

    arms = {}
    for arm, recipe in plan.recipes.items():
        result = results[arm]
        entry: dict[str, Any] = {"status": result["status"], "error": result.get("error"),
                                 "stages": _stages(recipe, result.get("run"))}
        if result["status"] == DONE:
            if plan.config.reward:
                entry["reward"] = training_reward(Path(recipe.out))
            evaluation = result["run"]["stages"][-1]
            try:
                entry["sets"] = {name: {"per_item": read_response_run(Path(found["solve_run"]), SOLVE, "arms")[2]}
                                 for name, found in evaluation["sets"].items()}
            except (DereasonError, OSError) as exc:  # deleted or damaged since: this arm's row, not the table
                entry |= {"status": FAILED, "error": f"its evaluation cannot be read: {_one_line(exc)}"}
        arms[arm] = entry
    result = table(arms, plan.config.baseline, plan.config.bootstrap_seed, plan.config.resamples)
    notes = table_notes(plan, result)
    result["notes"] = notes
    write_atomic(plan.out / "table.json", json.dumps(result, indent=2, sort_keys=True, default=str))
    write_atomic(plan.out / "table.md", markdown(result, notes))
    plot(result, plan.out / "table.png")
    return result


def training_reward(run_dir: Path) -> float | None:
    """The mean of the logged GRPO rewards of every stage under `run_dir` (None without a GRPO stage)."""
    rewards = [row["reward"] for path in sorted(run_dir.rglob("metrics.jsonl"))
               for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip() and "reward" in (row := json.loads(line))]
    return sum(rewards) / len(rewards) if rewards else None


def table_notes(plan: ArmsPlan, result: dict[str, Any]) -> list[str]:
    """What the table's reader needs: what is matched, the seeds, and every undefined number's reason."""
    first = next(iter(plan.recipes.values())).configs[-1][2]
    data = next((config.data for recipe in plan.recipes.values() for _, name, config in recipe.configs
                 if name != "eval"), None)
    split = _read_json(Path(data) / "manifest.json") if data else None
    notes = [
        *plan.notes,
        "Matched budgets: every arm that has a stage runs it for the same optimiser steps with the same sequences per "
        "step (SFT: sequences; GRPO: completions); the arms differ only in which items fill them.",
        f"Evaluation: pass@1 over {first.samples} samples per item (temperature {first.temperature}, top_p "
        f"{first.top_p}, seed {first.seed}); 95% percentile-bootstrap intervals over items ({plan.config.resamples} "
        f"resamples, seed {plan.config.bootstrap_seed}); Δ is paired over the items both arms measured.",
        f"Training seed: {sorted({c.seed for r in plan.recipes.values() for _, n, c in r.configs if n != 'eval'})}.",
    ]
    if split is not None:
        notes.append(f"Split {data}: {split.get('score')} score, τ = {_tau_text(split.get('tau'))} "
                     f"({split.get('tau_method')}); the random arm dealt with seed {split.get('seed')}.")
    for row in result["rows"]:
        for set_name, entry in row["sets"].items():
            notes += [f"{row['arm']}, {set_name}: {note}" for note in entry.get("notes", [])]
    return notes


def _tau_text(tau: float | dict[str, float | None] | None) -> str:
    """τ as the split manifest holds it: one number, or one per domain (`curate split --per-domain`)."""
    if isinstance(tau, dict):
        return ", ".join(f"{domain} {_tau_text(value)}" for domain, value in tau.items())
    return "none" if tau is None else f"{tau:.4g}"
