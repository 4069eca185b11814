"""tiny-cpu's report across seeds: the arms table averaged over the seeds (train.armtable.across_seeds), each
arm's pass rate by the known difficulty, the base solver's probability of writing a whole solution by the known
difficulty on the items, the held-out set and the probe (from each task.json: the check that the solver feels the
difficulty), and the versions the numbers
were measured with.

    OUT/
      tiny-cpu.json   seeds, the table across seeds, pass rates by known difficulty, each seed's report, versions,
                      seconds
      table.md        the same as markdown, what `dereason-train tiny-cpu` prints
"""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import polars as pl

from curate.files import write_atomic
from train.armtable import DONE, across_seeds, mean_over_seeds, seeds_markdown

REPORT = "tiny-cpu.json"
TABLE = "table.md"
# What the numbers depend on: the models' arithmetic (torch), the tokenizer and models (tokenizers, transformers),
# the training (trl, accelerate, peft, datasets), the statistics (numpy, scipy, polars).
MEASURED_WITH = ("torch", "transformers", "tokenizers", "trl", "accelerate", "peft", "datasets", "numpy", "scipy",
                 "polars")
LEVELS = tuple(range(1, 6))


def versions() -> dict[str, str]:
    """Python's version and each package's of MEASURED_WITH ("not installed" when absent)."""
    found = {"python": platform.python_version()}
    for package in MEASURED_WITH:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def pass_rate_by_difficulty(per_item: pl.DataFrame, heldout: Path) -> dict[str, float]:
    """The mean pass rate of the measured items per known difficulty, joining an eval's per-item frame with the
    held-out file's difficulty column."""
    known = pl.read_ndjson(heldout).select(pl.col("id").alias("item_id"), "difficulty")
    rates = (per_item.filter(pl.col("pass_status") == "measured").join(known, on="item_id")
             .group_by("difficulty").agg(pl.col("pass_rate").mean()).sort("difficulty"))
    return {str(level): rate for level, rate in rates.iter_rows()}


def _arm_rates(report: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Each arm's pass rate by known difficulty on one seed's held-out set (tiny-cpu evaluates on that one), for the
    arms its table has as done (an arm whose evaluation cannot be read is a failed row there)."""
    from curate.runs import SOLVE, read_response_run

    done = {row["arm"] for row in report["table"]["rows"] if row["status"] == DONE}
    found: dict[str, dict[str, dict[str, float]]] = {}
    for arm, result in report["arms_manifest"]["arms"].items():
        if arm not in done:
            continue
        found[arm] = {name: pass_rate_by_difficulty(read_response_run(Path(entry["solve_run"]), SOLVE, "tiny-cpu")[2],
                                                    Path(report["heldout"]))
                      for name, entry in result["run"]["stages"][-1]["sets"].items()}
    return found


def _mean_levels(per_seed: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per level: the mean over the seeds that measured it, with its 95% t interval."""
    return {str(level): mean_over_seeds([rates[str(level)] for rates in per_seed if str(level) in rates])
            for level in LEVELS if any(str(level) in rates for rates in per_seed)}


def by_difficulty(reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The known difficulty against what the solver does, averaged over the seeds: the base solver's probability
    of writing a whole worked solution (items, held-out and probe, from task.json) and each arm's pass rate."""
    probabilities = [report["solver"]["solution_probability_by_difficulty"] for report in reports.values()]
    arm_rates = {seed: _arm_rates(report) for seed, report in reports.items()}
    arms = list(dict.fromkeys(arm for rates in arm_rates.values() for arm in rates))
    return {"solution_probability": {pool: _mean_levels([found[pool] for found in probabilities])
                                     for pool in ("items", "heldout", "probe")},
            "pass_rate": {arm: _mean_levels([rates[arm]["heldout"] for rates in arm_rates.values() if arm in rates])
                          for arm in arms},
            "per_seed": {"solution_probability": dict(zip(reports, probabilities, strict=True)),
                         "pass_rate": arm_rates}}


def difficulty_markdown(found: dict[str, Any], seeds: int) -> str:
    """Rows of means over the seeds, one column per known difficulty."""
    def cells(levels: dict[str, Any]) -> list[str]:
        return [f"{levels[str(level)]['value']:.3f}" if str(level) in levels else "—" for level in LEVELS]

    lines = ["| known difficulty (additions), mean of " + f"{seeds} seeds | " + " | ".join(map(str, LEVELS)) + " |",
             "|---|" + "---|" * len(LEVELS)]
    for pool, name in (("items", "items"), ("heldout", "held-out"), ("probe", "probe")):
        lines.append(f"| untrained solver: probability of writing the whole solution, {name} | "
                     + " | ".join(cells(found["solution_probability"][pool])) + " |")
    for arm, levels in found["pass_rate"].items():
        lines.append(f"| {arm}: held-out pass@1 | " + " | ".join(cells(levels)) + " |")
    return "\n".join(lines) + "\n"


def across_seeds_report(reports: dict[int, dict[str, Any]], root: Path, seconds: float) -> dict[str, Any]:
    """Write OUT/tiny-cpu.json and OUT/table.md (module docstring); the report, with each seed's own."""
    seeds_table = across_seeds({seed: report["table"] for seed, report in reports.items()})
    difficulty = by_difficulty(reports)
    measured_with = versions()
    tables = [report["table"] for report in reports.values()]
    shared = [note for note in tables[0]["notes"] if all(note in table["notes"] for table in tables)]
    notes = [*shared,
             ("Each seed is a whole run (its own problems, models, judge, split, training and evaluation sampling); "
              "the interval is Student's t over the seeds' numbers, each a seed's pass@1 or paired Δ over the "
              "held-out items."),
             f"Seconds: {seconds:g} in all (this invocation's; a resumed run's are the resume's); per seed "
             + ", ".join(f"{seed}: {sum(report['seconds'].values()):g}" for seed, report in reports.items()) + ".",
             "Measured with " + ", ".join(f"{name} {value}" for name, value in measured_with.items()) + "."]
    markdown = (seeds_markdown(seeds_table, notes) + "\n" + difficulty_markdown(difficulty, len(reports)))
    report = {"out": str(root), "seeds": list(reports), "across_seeds": seeds_table, "by_difficulty": difficulty,
              "versions": measured_with, "seconds": seconds,
              "per_seed": {seed: {key: value for key, value in found.items() if key not in ("arms_manifest", "table")}
                           for seed, found in reports.items()}}
    write_atomic(root / REPORT, json.dumps(report, indent=2, sort_keys=True, default=str))
    write_atomic(root / TABLE, markdown)
    return {**report, "markdown": markdown, "arms_manifests": {seed: found["arms_manifest"]
                                                               for seed, found in reports.items()}}
