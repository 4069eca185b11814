"""A judge's item scores against measured difficulty: one solve run's pass rates, or Rasch difficulties fitted
over several solve runs (a crowd of models). Pure functions over Polars frames, no I/O: `curate.stats.analysis`
reads the runs.

Joining: an item counts when the judge scored it (`curate.stats.metrics.item_scores`) and the solve run measured it
(`pass_status` "measured": at least one countable attempt). Items on one side only are counted, never
dropped silently: `n_judged_only` (scored, with no measured pass rate; `n_unmeasured` of them are in the
solve run but every rollout failed as error or timeout) and `n_solved_only` (measured, not scored).

Noise of a pass rate: k rollouts measure a pass rate only to within its Wilson 95% interval, which for k = 4
and a rate of 0.5 spans 0.15..0.85. `pass_rate_noise` reports the mean width of those intervals over the
joined items, with the attempts per item: a wide mean width caps the agreement any judge can reach.

IRT difficulty (`curate.stats.irt.fit_rasch`): higher is harder, so a judge that agrees has Spearman ρ > 0. An item
every model of the crowd solved (or none did) has a difficulty set by the prior, not measured: the headline
`spearman` leaves those items out; `spearman_with_extremes` keeps them, since their rank (beyond every
measured item) is still right even though their distance from the others is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from curate.stats.irt import RaschFit
from curate.stats.metrics import N_RESAMPLES, correlation_problem, headline, spearman

MEASURED = "measured"
PASS_RATE_COLUMNS = ("pass_rate", "pass_low", "pass_high", "attempts")
IRT_COLUMNS = {"difficulty": "irt_difficulty", "difficulty_se": "irt_se", "difficulty_low": "irt_low",
               "difficulty_high": "irt_high", "irt_status": "irt_status"}


def join_pass_rates(scores: pl.DataFrame, solve_items: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """(item_id and PASS_RATE_COLUMNS of the items both scored and measured, counts of the items on one
    side only); `scores` as `item_scores` gives them, `solve_items` a solve run's per_item.parquet."""
    measured = solve_items.filter(pl.col("pass_status") == MEASURED).select("item_id", *PASS_RATE_COLUMNS)
    unmeasured = solve_items.filter(pl.col("pass_status") != MEASURED).select("item_id")
    judged = scores.select("item_id")
    return judged.join(measured, on="item_id"), {
        "n_judged_only": judged.join(measured, on="item_id", how="anti").height,
        "n_unmeasured": judged.join(unmeasured, on="item_id").height,
        "n_solved_only": measured.join(judged, on="item_id", how="anti").height}


def pass_rate_noise(joined: pl.DataFrame) -> dict[str, Any]:
    """How precisely the joined items' pass rates are measured: the mean Wilson 95% interval width and the
    attempts per item (median, min, max)."""
    if joined.height == 0:
        return {"mean_interval_width": None, "attempts_median": None, "attempts_min": None, "attempts_max": None}
    return {"mean_interval_width": float((joined["pass_high"] - joined["pass_low"]).mean()),
            "attempts_median": float(joined["attempts"].median()), "attempts_min": int(joined["attempts"].min()),
            "attempts_max": int(joined["attempts"].max())}


def coverage_note(counts: dict[str, int], judged: str, measured: str) -> str | None:
    """One line on the items that only one side holds, or None when both hold the same items."""
    if not counts["n_judged_only"] and not counts["n_solved_only"]:
        return None
    unmeasured = (f" ({counts['n_unmeasured']} of them in it with every rollout failed as error or timeout)"
                  if counts["n_unmeasured"] else "")
    return (f"{counts['n_judged_only']} item(s) scored in {judged} have no measured pass rate in {measured}"
            f"{unmeasured}, and {counts['n_solved_only']} measured item(s) of {measured} were not scored in "
            f"{judged}: the agreement covers the items in both")


def irt_agreement(scores: pl.DataFrame, fit: RaschFit, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                  level: float = 0.95) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(item_id, irt_difficulty, irt_se, irt_low, irt_high, irt_status of every item the fit holds, the
    agreement of the item scores with those difficulties); see the module docstring. Counts of the scored items
    (n, n_measured, ...) are apart from the crowd's (the fit's notes, which count every item it holds)."""
    difficulties = fit.items.select("item_id", *[pl.col(old).alias(new) for old, new in IRT_COLUMNS.items()])
    joined = scores.join(difficulties, on="item_id")
    measured = joined.filter(pl.col("irt_status") == MEASURED)
    options = {"n_resamples": n_resamples, "seed": seed, "level": level}
    notes: list[str] = []

    def rho(name: str, frame: pl.DataFrame) -> dict[str, float | None] | None:
        x, y = frame["score"].to_numpy(), frame["irt_difficulty"].to_numpy()
        why = correlation_problem(x, y, "scores", "IRT difficulties")
        return headline(name, spearman, (x, y), notes, why, **options)

    counts = joined.group_by("irt_status").len()
    by_status = dict(zip(counts["irt_status"].to_list(), counts["len"].to_list(), strict=True))
    extremes = joined.height - measured.height
    if extremes:
        notes.append(f"{extremes} of the {joined.height} items both scored and answered by the crowd were solved by "
                     "every model or by none: their difficulty is set by the prior, so spearman leaves them out and "
                     "spearman_with_extremes keeps them")
    result = {
        "n": joined.height, "n_measured": measured.height, "n_all_correct": by_status.get("all_correct", 0),
        "n_all_wrong": by_status.get("all_wrong", 0),
        "n_judged_only": scores.join(difficulties, on="item_id", how="anti").height,
        "n_crowd_only": difficulties.join(scores, on="item_id", how="anti").height,
        "spearman": rho("spearman", measured), "spearman_with_extremes": rho("spearman_with_extremes", joined),
        "mean_se": float(np.mean(measured["irt_se"].to_numpy())) if measured.height else None,
        "models": fit.models.to_dicts(), "fit": {k: v for k, v in fit.detail.items() if k != "notes"},
        "notes": notes + [f"the crowd's fit, over all its {fit.items.height} answered items (scored or not): {note}"
                          for note in fit.detail["notes"]],
    }
    return difficulties, result
