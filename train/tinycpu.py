"""`dereason-train tiny-cpu`: the whole pipeline on a synthetic task with known difficulty, on a CPU, in minutes:

    task (train.tinytask: items, held-out set, a tiny solver and a tiny judge pre-trained from scratch)
      → score: `curate score` of the items by the judge (curate.engine.score; logprob scoring: the expected score
        over the digits 1..5 of its first answer token)
      → split: `curate split` on that score (curate.split.directory.make_split; τ, arms)
      → arms: SFT → GRPO → eval per arm, and the comparison table (train.arms)

once per seed (the recipe's `seeds`: 0 to N − 1, each a whole run with its own problems, models, split, training
and sampling), then the table across seeds (train.tinyreport):

    OUT/
      seed-S/            one seed's run:
        task/            the task directory
        judge-run/       the curate score run
        split/           the split directory
        arms/            the arms directory: table.md, table.json, table.png, an arm's run per folder
        split-settings.json  the split settings (curate split's keys), written before the first split
        tiny-cpu.json    the solver's pre-training, what the judge's scores say about the known difficulty, the
                         known difficulty on each side of the split, and the seconds each phase took
      tiny-cpu.json table.md   the report across seeds (train.tinyreport)

The recipe (train/recipes/tiny-cpu.yaml) is an arms recipe (train.arms) whose model, data and held-out set are
the ones built here, plus `seeds` and two sections of its own: `task` (train.tinytask.TaskConfig) and `split` (the
settings of `curate split` by its flags' keys, curate.command_config.SplitConfig); each seed is its run's task,
split and training seed, so the recipe sets none of those. The known difficulty never reaches the
split: the split reads the judge's scores, and tiny-cpu.json compares them with the known difficulty. Every phase
resumes: a rerun finds the task built, asks the judge only what its run lacks, writes the same split again, and
resumes the arms; a rerun with other split settings is refused before the split is touched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from curate.command_config import SplitConfig
from curate.files import write_atomic
from curate.settings import check, from_flat, read_job_file, to_flat
from train.tinyreport import REPORT
from train.tinytask import JUDGE_TEMPLATE, TEMPLATE_DIR, TaskConfig, build_task

log = logging.getLogger(__name__)
RECIPE = Path(__file__).parent / "recipes" / "tiny-cpu.yaml"
SPLIT_SETTINGS = "split-settings.json"  # what the split was asked for, kept before the first split
KNOWN_DIFFICULTY = ("Data: a two-digit number plus one-digit numbers, solved in written steps; known difficulty = "
                    "the additions. The split read a tiny judge's scores (curate score, logprob scoring); the known "
                    "difficulty was that judge's training label on a separate pre-training pool, and is used here only "
                    "to check its scores.")


@dataclass(frozen=True)
class Replicate:
    """One seed's whole run: its task, split settings and arms plan, under ROOT/seed-SEED."""

    seed: int
    task: TaskConfig
    split: SplitConfig
    plan: Any  # train.arms.ArmsPlan
    root: Path


def read_tiny_cpu(path: str | Path = RECIPE, out: str | None = None,
                  seeds: int | None = None) -> tuple[list[Replicate], Path]:
    """A replicate per seed (0 to `seeds` − 1: the recipe's `seeds` unless given), each with its task, split
    settings and arms plan (model, data and held-out set filled in), and OUT."""
    from train.arms import plan_arms

    where = f"recipe {path}"
    values = read_job_file(path)
    task_values, split_values = values.pop("task", None) or {}, values.pop("split", None) or {}
    count = values.pop("seeds", 1) if seeds is None else seeds
    values.pop("seeds", None)
    check(isinstance(count, int) and not isinstance(count, bool) and count >= 1,
          f"{where}: seeds must be a whole number >= 1 (seeds 0 to seeds - 1, each a whole run), got {count!r}")
    seeded = [name for name, section in (("seed", values), ("task.seed", task_values), ("split.seed", split_values))
              if "seed" in section]
    check(not seeded, f"{where} sets {seeded}: each of tiny-cpu's seeds (seeds: N runs 0 to N - 1) is its run's "
                      "task, split and training seed")
    root = Path(out or values.pop("out", None) or "runs/tiny-cpu")
    values.pop("out", None)
    taken = sorted({"model", "data"} & set(values)) + (["eval.heldout"] if "heldout" in (values.get("eval") or {})
                                                        else [])
    check(not taken, f"{where} sets {taken}: tiny-cpu trains the model it builds, on the split it makes, and "
                     "evaluates on its own held-out set")
    values.setdefault("template_dir", str(TEMPLATE_DIR))
    replicates = []
    for seed in range(count):
        seed_root = root / f"seed-{seed}"
        eval_section = {**(values.get("eval") or {}), "heldout": [str(seed_root / "task" / "heldout.jsonl")]}
        plan = plan_arms({**values, "seed": seed, "model": str(seed_root / "task" / "solver"),
                          "data": str(seed_root / "split"), "eval": eval_section}, where, str(seed_root / "arms"))
        replicates.append(Replicate(
            seed, from_flat(TaskConfig, {**task_values, "seed": seed}, f"{where}, section task"),
            from_flat(SplitConfig, {**split_values, "seed": seed}, f"{where}, section split"), plan, seed_root))
    return replicates, root


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread, then as it was. Models this small gain little from a second thread on an idle machine
    and lose most of their speed when another process holds a core: 50 pre-training steps took 5.3–6.1 s on one
    thread and 15–51 s on two while another job ran, on the project's 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_tiny_cpu(replicates: list[Replicate], root: Path) -> dict[str, Any]:
    """Build, score, split and train every arm for each seed in turn (module docstring), on one thread; the report
    across seeds (train.tinyreport), with each seed's report and arms manifest."""
    from train.tinyreport import across_seeds_report

    started = time.perf_counter()
    with one_thread():
        reports = {replicate.seed: _run(replicate.task, replicate.split, replicate.plan, replicate.root)
                   for replicate in replicates}
    return across_seeds_report(reports, root, round(time.perf_counter() - started, 1))


def _run(task: TaskConfig, split: SplitConfig, plan: Any, root: Path) -> dict[str, Any]:
    from curate.config import RunConfig
    from curate.engine import score
    from curate.split.directory import make_split
    from train.arms import run_arms

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    task_record = build_task(task, root / "task")
    seconds["task"] = round(time.perf_counter() - started, 1)
    judged = RunConfig.from_flat({
        "source": str(root / "task" / "items.jsonl"), "out": str(root / "judge-run"),
        "model": str(root / "task" / "judge"), "template": JUDGE_TEMPLATE, "template_dir": str(TEMPLATE_DIR),
        "reference_field": "answer",
        "max_tokens": 1, "top_logprobs": 20, "constrain_score": True, "device": "cpu", "batch_size": 64})
    score(judged)
    seconds["score"] = round(time.perf_counter() - started - sum(seconds.values()), 1)
    _hold_split_settings(split, root)
    # Written again on a rerun: the same run and settings write the same files, so the arms resume.
    manifest = make_split(root / "judge-run", root / "split", split, overwrite=True)
    seconds["split"] = round(time.perf_counter() - started - sum(seconds.values()), 1)
    judge = judge_agreement(root / "split")
    arms = run_arms(replace(plan, notes=(KNOWN_DIFFICULTY, _agreement(judge, manifest))))
    seconds["arms"] = round(time.perf_counter() - started - sum(seconds.values()), 1)
    solver = {key: value for key, value in task_record["models"]["solver"].items() if key != "losses_every_50"}
    report = {"task": task_record["settings"], "solver": solver, "heldout": str(root / "task" / "heldout.jsonl"),
              "split": {**to_flat(split), "counts": manifest["counts"], "chosen_tau": manifest["tau"]},
              "judge": judge, "seconds": seconds, "arms": str(plan.out)}
    write_atomic(root / REPORT, json.dumps(report, indent=2))
    return {**report, "table": arms["table"], "arms_manifest": arms}


def _hold_split_settings(split: SplitConfig, root: Path) -> None:
    """Record the split settings before the first split, and refuse other ones later: the split is rewritten on
    every run, and another split under arms trained on this one would make their results mean nothing. A record
    that names only some settings (the first ones tiny-cpu had) means the others' defaults."""
    from curate.errors import RunDirError
    from train.stage import differences

    path, wanted = root / SPLIT_SETTINGS, to_flat(split)
    if path.is_file():
        held = to_flat(from_flat(SplitConfig, json.loads(path.read_text(encoding="utf-8")), str(path)))
        if changed := differences(held, wanted):
            raise RunDirError(f"{root} holds a tiny-cpu run split with other settings ({'; '.join(changed)}); rerun "
                              "with the same recipe to resume it, or choose another --out")
        return
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(wanted, indent=2))


def judge_agreement(split_dir: Path) -> dict[str, Any]:
    """The judge's scores against the known difficulty, on the items split: Spearman's ρ with its interval, and
    the known difficulty's mean and histogram on each side."""
    from curate.stats.metrics import headline, spearman

    sides = {side: pl.read_parquet(split_dir / f"{side}.parquet") for side in ("sft", "rl")}
    both = pl.concat([frame.select("score", "difficulty") for frame in sides.values()])
    notes: list[str] = []
    rho = headline("spearman", spearman, (both["score"].to_numpy(), both["difficulty"].to_numpy().astype(float)),
                   notes)
    per_side = {side: {"items": frame.height, "mean_known_difficulty": frame["difficulty"].mean()
                       if frame.height else None,
                       "known_difficulty_histogram": {str(k): int((frame["difficulty"] == k).sum()) for k in
                                                      range(1, 6)}} for side, frame in sides.items()}
    return {"spearman_score_vs_known_difficulty": rho, "sides": per_side, "notes": notes}


def _agreement(judge: dict[str, Any], manifest: dict[str, Any]) -> str:
    from curate.stats.metrics import format_interval

    sides = judge["sides"]
    return (f"Judge: Spearman {format_interval(judge['spearman_score_vs_known_difficulty'], 2)} with the known "
            f"difficulty; mean known difficulty {_mean(sides['sft'])} on the SFT side ({manifest['counts']['sft']} "
            f"items), {_mean(sides['rl'])} on the RL side ({manifest['counts']['rl']}).")


def summary(report: dict[str, Any]) -> list[str]:
    """The lines `dereason-train tiny-cpu` prints above the table."""
    from curate.stats.metrics import format_interval

    judge, counts = report["judge"], report["split"]["counts"]
    sides = judge["sides"]
    return [f"judge: Spearman {format_interval(judge['spearman_score_vs_known_difficulty'], 2)} between its "
            f"{report['split']['score']} score and the known difficulty of the {counts['sft'] + counts['rl']} items",
            f"split at τ = {report['split']['chosen_tau']:.4g}: SFT {counts['sft']} items (mean known difficulty "
            f"{_mean(sides['sft'])}), RL {counts['rl']} (mean known difficulty {_mean(sides['rl'])})",
            "seconds: " + ", ".join(f"{phase} {value:g}" for phase, value in report["seconds"].items())]


def _mean(side: dict[str, Any]) -> str:
    return "none" if side["mean_known_difficulty"] is None else f"{side['mean_known_difficulty']:.2f}"
