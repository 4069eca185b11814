"""The arms comparison table: pass@1 of every arm on every held-out set with its bootstrap interval, and the
paired difference against the baseline arm, as JSON, markdown and a plot.

    pass@1        the mean over measured items of the item's pass rate (train.eval.mean_pass_rate), with a 95%
                  percentile-bootstrap interval over items, taken from the eval's per-item frame with the
                  table's seed and resamples.
    difference    for the items both the arm and the baseline measured: the mean of (arm's pass rate − the
                  baseline's) per item, with a 95% percentile-bootstrap interval that resamples items, each
                  with both of its rates. Pairing removes how hard each item is from the comparison, so the
                  interval is narrower than the two pass@1 intervals side by side suggest whenever the arms
                  agree on which items are hard.
An arm that failed, or a baseline that failed, is a row that says so; its numbers are absent, never 0.
`paired_difference` and `table` are pure functions of per-item frames; `write_table` and `plot` do the I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.stats.metrics import N_RESAMPLES, format_interval, headline

DONE, FAILED = "done", "failed"


def paired_difference(arm: pl.DataFrame, baseline: pl.DataFrame, seed: int = 0,
                      n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """Mean per-item difference of pass rates (arm − baseline) over the items both measured, with its paired
    bootstrap interval; each frame has item_id, pass_rate and pass_status (curate.stats.passrate.PER_ITEM_SCHEMA)."""
    def measured(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("pass_status") == "measured").select("item_id", "pass_rate")

    joined = measured(arm).join(measured(baseline), on="item_id", how="inner", suffix="_baseline")
    differences = (joined["pass_rate"] - joined["pass_rate_baseline"]).to_numpy()
    notes: list[str] = []
    value = headline("difference", np.mean, (differences,), notes,
                     None if differences.size else "no item was measured by both arms", n_resamples=n_resamples,
                     seed=seed)
    return {"difference": value, "paired_items": int(differences.size), "notes": notes}


def table(arms: dict[str, dict[str, Any]], baseline: str, seed: int = 0,
          n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """The comparison: `arms` maps each arm to {"status", "error"?, "stages": [...], "sets": {set: {"per_item":
    frame}}} (a failed arm has no sets); one row per arm, in the order given."""
    from train.eval import mean_pass_rate

    base = arms.get(baseline, {})
    sets = sorted({name for arm in arms.values() for name in arm.get("sets", {})})
    rows = []
    for name, arm in arms.items():
        row: dict[str, Any] = {"arm": name, "status": arm["status"], "error": arm.get("error"),
                               "stages": arm.get("stages", []), "reward": arm.get("reward"), "sets": {}}
        for set_name in sets:
            result = arm.get("sets", {}).get(set_name)
            if result is None:
                continue
            entry = mean_pass_rate(result["per_item"], seed, n_resamples)
            against = base.get("sets", {}).get(set_name)
            if name == baseline:
                entry["difference"] = None
            elif against is None:
                entry |= {"difference": None, "paired_items": 0}
                entry["notes"].append(f"no difference: the baseline arm {baseline!r} has no result on {set_name}")
            else:
                paired = paired_difference(result["per_item"], against["per_item"], seed, n_resamples)
                entry |= {"difference": paired["difference"], "paired_items": paired["paired_items"],
                          "notes": entry["notes"] + paired["notes"]}
            row["sets"][set_name] = entry
        rows.append(row)
    return {"baseline": baseline, "sets": sets, "bootstrap": {"seed": seed, "resamples": n_resamples,
                                                              "level": 0.95}, "rows": rows}


def _budget(stages: list[dict[str, Any]]) -> str:
    """`sft 30×16 on sft (240 rows) → grpo 30×16 on rl (160 rows)`: steps × sequences per step, and the split."""
    parts = [f"{s['stage']} {s['steps']}×{s['per_step']} on {s['split']} "
             f"({'?' if s['rows'] is None else s['rows']} rows)" for s in stages if s["stage"] != "eval"]
    return " → ".join(parts) or "untrained"


def _rewarded(result: dict[str, Any]) -> bool:
    """Whether the table has a reward column: an arm's reward was asked for (train.arms' `reward`) and found."""
    return any(row.get("reward") is not None for row in result["rows"])


def _reward(reward: float | dict[str, Any] | None) -> str:
    """One seed's mean reward, or the mean over seeds with its interval; an arm without GRPO has none."""
    if reward is None:
        return "—"
    return f"{reward:.3f}" if isinstance(reward, float) else format_interval(reward, 3)


def markdown(result: dict[str, Any], notes: list[str] = ()) -> str:
    """The table as markdown: a row per arm, a pass@1 and a difference column per held-out set, then notes."""
    baseline = result["baseline"]
    header = ["arm", "training (steps × sequences per step on split)", *(["GRPO reward, mean over steps"]
                                                                         * _rewarded(result))]
    for set_name in result["sets"]:
        header += [f"{set_name} pass@1 [95% CI]", f"Δ vs {baseline} [95% CI] (items)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [row["arm"], _budget(row["stages"]), *([_reward(row.get("reward"))] * _rewarded(result))]
        if row["status"] != DONE:
            error = str(row["error"]).replace("|", "\\|")  # a bar in the message would end the cell
            lines.append("| " + " | ".join([*cells, f"**{row['status']}**: {error}",
                                             *[""] * (len(header) - len(cells) - 1)]) + " |")
            continue
        for set_name in result["sets"]:
            entry = row["sets"].get(set_name)
            if entry is None:
                cells += ["no result", ""]
                continue
            cells.append(format_interval(entry["pass_at_1"], 3))
            cells.append("(baseline)" if row["arm"] == baseline else
                         f"{format_interval(entry['difference'], 3)} ({entry['paired_items']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *(f"- {note}" for note in notes)]).rstrip() + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Per held-out set: pass@1 of each arm and its difference against the baseline, with their intervals."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    sets, rows = result["sets"], result["rows"]
    figure, axes = plt.subplots(len(sets) or 1, 2, figsize=(10, 0.5 * len(rows) + 1.5 + 2.5 * max(len(sets) - 1, 0)),
                                squeeze=False)
    labels = [row["arm"] + ("" if row["status"] == DONE else f" ({row['status']})") for row in rows]
    for axis_row, set_name in zip(axes, sets, strict=False):
        for axis, key, title in ((axis_row[0], "pass_at_1", f"{set_name}: pass@1"),
                                 (axis_row[1], "difference", f"{set_name}: Δ vs {result['baseline']} (paired)")):
            for position, row in enumerate(rows):
                stat = row["sets"].get(set_name, {}).get(key)
                if not stat:
                    continue
                low = stat["value"] - stat["low"] if stat["low"] is not None else 0
                high = stat["high"] - stat["value"] if stat["high"] is not None else 0
                axis.errorbar(stat["value"], position, xerr=[[low], [high]], fmt="o", capsize=4, color="C0")
            if key == "difference":
                axis.axvline(0, color="grey", linewidth=0.8)
            axis.set_yticks(range(len(rows)), labels)
            axis.invert_yaxis()
            axis.set_title(title)
            axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def mean_over_seeds(values: list[float]) -> dict[str, float | None] | None:
    """{"value", "low", "high"}: the mean of one number per seed and its 95% Student's t interval (n − 1 degrees of
    freedom); no interval from one seed, none at all from no seed."""
    from scipy import stats

    found = np.asarray(values, dtype=float)
    if not found.size:
        return None
    mean = float(found.mean())
    if found.size < 2:
        return {"value": mean, "low": None, "high": None}
    if np.ptp(found) == 0:  # every seed gave the same number: scipy's interval is nan for a zero spread
        return {"value": mean, "low": mean, "high": mean}
    interval = stats.ttest_1samp(found, 0).confidence_interval(0.95)
    return {"value": mean, "low": float(interval.low), "high": float(interval.high)}


def across_seeds(tables: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The arms tables of one recipe run with several seeds, as one: per arm and held-out set, pass@1 and Δ against
    the baseline averaged over the seeds with a 95% t interval across them (each seed one number: the interval says
    how much a rerun with another seed moves the result, which the per-seed bootstrap over items does not), how many
    seeds' Δ is above 0, and each seed's numbers. An arm missing from a seed (it failed) is a note, and its means are
    over the seeds it has."""
    first = next(iter(tables.values()))
    rows, notes = [], []
    for position, arm in enumerate(row["arm"] for row in first["rows"]):
        rewards = {seed: found for seed, seeded in tables.items()
                   if (found := next(r for r in seeded["rows"] if r["arm"] == arm).get("reward")) is not None}
        row = {"arm": arm, "stages": first["rows"][position]["stages"], "reward": mean_over_seeds(list(rewards.values()))
               if rewards else None, "per_seed_reward": rewards, "sets": {}}
        for set_name in first["sets"]:
            per_seed, differences = {}, {}
            for seed, seeded in tables.items():
                entry = next(r for r in seeded["rows"] if r["arm"] == arm)["sets"].get(set_name) or {}
                if (pass_at_1 := entry.get("pass_at_1")) is None:
                    notes.append(f"{arm}, {set_name}: no pass@1 in seed {seed}; its means are over the other seeds")
                    continue
                per_seed[seed] = pass_at_1["value"]
                if entry.get("difference") is not None:
                    differences[seed] = entry["difference"]["value"]
            row["sets"][set_name] = {
                "pass_at_1": mean_over_seeds(list(per_seed.values())), "per_seed": per_seed,
                "difference": None if arm == first["baseline"] else mean_over_seeds(list(differences.values())),
                "per_seed_difference": differences, "positive_differences": sum(d > 0 for d in differences.values())}
        rows.append(row)
    return {"baseline": first["baseline"], "sets": first["sets"], "seeds": list(tables), "rows": rows,
            "notes": notes}


def seeds_markdown(result: dict[str, Any], notes: list[str] = ()) -> str:
    """The across-seeds table as markdown: per held-out set, the mean pass@1 and Δ with their intervals, the seeds
    with Δ above 0, and each seed's pass@1."""
    seeds, baseline = result["seeds"], result["baseline"]
    header = ["arm", f"training (steps × sequences per step on split, seed {seeds[0]})",
              *([f"GRPO reward, mean over steps, mean of {len(seeds)} seeds [95% CI]"] * _rewarded(result))]
    for set_name in result["sets"]:
        header += [f"{set_name} pass@1, mean of {len(seeds)} seeds [95% CI]",
                   f"Δ vs {baseline} [95% CI]", "seeds with Δ > 0",
                   f"pass@1 per seed ({', '.join(map(str, seeds))})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [row["arm"], _budget(row["stages"]), *([_reward(row["reward"])] * _rewarded(result))]
        for entry in row["sets"].values():
            per_seed = ", ".join(f"{entry['per_seed'][seed]:.3f}" if seed in entry["per_seed"] else "—"
                                 for seed in seeds)
            if row["arm"] == baseline:
                cells += [format_interval(entry["pass_at_1"], 3), "(baseline)", "", per_seed]
            else:
                cells += [format_interval(entry["pass_at_1"], 3), format_interval(entry["difference"], 3),
                          f"{entry['positive_differences']} of {len(entry['per_seed_difference'])}", per_seed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *(f"- {note}" for note in [*result["notes"], *notes])]).rstrip() + "\n"
