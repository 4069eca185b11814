"""Staged-RL difficulty levels from several solvers' pass rates. Pure Polars functions, no I/O.

The rules are those of Ji et al. 2025, "How Difficulty-Aware Staged Reinforcement Learning Enhances LLMs'
Reasoning Capabilities: A Preliminary Experimental Study" (arXiv 2504.00829), §3.2 and §3.2.1. The paper ran
DeepSeek-R1-Distill-Qwen-1.5B, -7B and -32B and DeepSeek-R1 several times over each problem; here the
`solvers` setting names the runs, smallest first: the first three play the paper's 1.5B ("small"), 7B
("middle") and 32B ("large"); any further one (the paper's DeepSeek-R1) counts only for whether an item is
ever solved. A pass rate is n_correct / attempts of `curate.stats.passrate.pass_rates`: "fails" is 0 correct, "solves
all" is every attempt correct, "partial" is strictly between.

    dropped   first, an item no solver ever solves (the paper drops those DeepSeek-R1 never solves, "too difficult
              or unverifiable due to limitations of the verifier": set `drop_unsolved_by` to that solver to do
              exactly this); and an item some solver has no countable attempt for (every rollout error or
              timeout: retry those), since its rules cannot be read.
    level 1   small partial.
    level 2   small fails and middle solves all; small fails and middle partial; small and middle both partial.
    level 3   every item large fails, and a sample of `level3_success_fraction` of the items large solves (at
              least once): the paper keeps 50% for math and 10% for code.

The paper builds the levels as three separate data sets, so they overlap: every "both partial" item of level 2
is a level-1 item, and level 3 is drawn from the whole pool. That is the default; `exclusive` keeps each item in
its lowest level only (disjoint curriculum stages), so level 2's "both partial" is then always empty and level 3
is drawn from the items in neither level 1 nor level 2. An item the sample leaves out, and in no other level,
is listed with the dropped items as "not_sampled".

Sampling: the candidates are ordered by sha256(f"level3:{seed}\\x1f{item_id}") (as `curate.split.rules`'s random arm
deals items) and the first round(fraction · n) are kept, halves rounded up: the same seed and items give the
same sample in any row order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import polars as pl

from curate.errors import ConfigError, DataError
from curate.settings import check, described
from curate.split.rules import stable_keys

ROLES = ("small", "middle", "large")
LEVEL_RULES = {"small_partial": 1, "small_fails_middle_solves": 2, "small_fails_middle_partial": 2,
               "both_partial": 2, "large_fails": 3, "large_solves_sampled": 3}
DROP_RULES = ("unmeasured", "never_solved", "not_sampled")
LEVELS_SCHEMA = {"item_id": pl.String, "level": pl.Int64, "rule": pl.String, "reason": pl.String}
DROPPED_SCHEMA = {"item_id": pl.String, "rule": pl.String, "reason": pl.String}
PAPER = {"authors": "Ji et al.", "year": 2025, "arxiv": "2504.00829", "sections": "3.2, 3.2.1",
         "title": "How Difficulty-Aware Staged Reinforcement Learning Enhances LLMs' Reasoning Capabilities: "
                  "A Preliminary Experimental Study"}


@dataclass(frozen=True)
class LevelsConfig:
    """The settings of the rules, which `curate levels` takes as flags."""

    level3_success_fraction: float = described(
        "Fraction of the items the large solver solves that level 3 keeps, by a seeded sample (the paper: 0.5 "
        "for math, 0.1 for code); level 3 always keeps every item the large solver fails.", default=0.5)
    seed: int = described("Seed of the level-3 sample.", default=0)
    drop_unsolved_by: str | None = described(
        "Drop the items this solver never solves (the paper: DeepSeek-R1): its name, or (curate levels) its run "
        "directory.", default=None, unset="drop the items no solver ever solves")
    exclusive: bool = described(
        "Keep each item in its lowest level only, for disjoint stages; by default the levels overlap as in the "
        "paper (level 2's 'both partial' items are level-1 items, level 3 is drawn from every item).",
        default=False)

    def __post_init__(self) -> None:
        check(0 <= self.level3_success_fraction <= 1,
              f"level3_success_fraction must be in [0, 1], got {self.level3_success_fraction}")


@dataclass(frozen=True, kw_only=True)
class LevelConfig(LevelsConfig):
    """The rules' settings with the solvers they name (those of the runs given to `curate levels`)."""

    solvers: tuple[str, ...] = described(
        "Solver runs by name, smallest first: the first three are the small, middle and large solvers of the "
        "rules (the paper: DeepSeek-R1-Distill-Qwen-1.5B, 7B, 32B); any further one (the paper: DeepSeek-R1) "
        "only counts for whether an item is ever solved.")

    def __post_init__(self) -> None:
        check(isinstance(self.solvers, tuple) and all(isinstance(s, str) and s for s in self.solvers),
               f"solvers must be a tuple of solver names, got {self.solvers!r}")
        check(len(self.solvers) >= len(ROLES),
               f"levels need at least three solvers (small, middle, large), got {len(self.solvers)}: "
               f"{list(self.solvers)}; give a solve run of each, smallest first")
        check(len(set(self.solvers)) == len(self.solvers), f"solvers must differ, got {list(self.solvers)}")
        super().__post_init__()
        check(self.drop_unsolved_by is None or self.drop_unsolved_by in self.solvers,
               f"drop_unsolved_by {self.drop_unsolved_by!r} is not one of the solvers {list(self.solvers)}; only a "
               "solver whose run is given can decide it: give that run too, after the large solver's (as the "
               "paper's DeepSeek-R1, it then only decides whether an item is ever solved)")


def sample_notes(samples: Mapping[str, int], solvers: Sequence[str]) -> list[str]:
    """Warnings on the rollouts per item of each solver (`samples`: solver name → its run's samples): the rules
    that no item can meet when the small or middle solver answered once, and solvers sampled unequally."""
    small, middle = solvers[:2]
    notes = []
    for solver, emptied in ((small, "level 1 (the small solver is partial) and level 2's both_partial"),
                            (middle, "level 2's small_fails_middle_partial and both_partial")):
        if samples[solver] < 2:
            notes.append(f"{solver} has {samples[solver]} rollout per item, so it is never partial (solving some "
                         f"attempts but not all): {emptied} can hold no item. The paper read every solver's pass "
                         f"rate from several rollouts per problem: solve again with --samples 8, say")
    if len({samples[solver] for solver in solvers}) > 1:
        counts = ", ".join(f"{solver} {samples[solver]}" for solver in solvers)
        notes.append(f"the solvers have different rollouts per item ({counts}): with fewer, a solver is partial "
                     "less often and 'fails' or 'solves all' more often, so the levels mix the solvers with their "
                     "sample counts; solve each with the same --samples")
    return notes


class Levels(NamedTuple):
    levels: pl.DataFrame  # LEVELS_SCHEMA: one row per (item, level), sorted by level and item_id
    dropped: pl.DataFrame  # DROPPED_SCHEMA: every item in no level, sorted by item_id


def _counts(pass_rates: Mapping[str, pl.DataFrame], solvers: tuple[str, ...]) -> pl.DataFrame:
    """item_id plus correct_k and attempts_k for solver k, over the items every solver has."""
    given, named = set(pass_rates), set(solvers)
    if missing := [s for s in solvers if s not in given]:
        raise ConfigError(f"no pass rates for solver(s) {missing}; give a solve run for each of {list(solvers)}")
    if extra := sorted(given - named):
        raise ConfigError(f"pass rates given for solver(s) {extra} that solvers {list(solvers)} does not name; "
                          "name every run in the solver order, smallest first")
    tables = []
    for k, solver in enumerate(solvers):
        frame = pass_rates[solver]
        if absent := [c for c in ("item_id", "attempts", "n_correct") if c not in frame.columns]:
            raise DataError(f"pass rates of solver {solver!r} lack column(s) {absent}; "
                            "build them with curate.stats.passrate.pass_rates")
        if repeated := frame.height - frame["item_id"].n_unique():
            raise DataError(f"pass rates of solver {solver!r} list {repeated} item(s) more than once")
        tables.append(frame.select(pl.col("item_id").cast(pl.String), pl.col("n_correct").alias(f"correct_{k}"),
                                   pl.col("attempts").alias(f"attempts_{k}")))
    every = pl.concat([t.select("item_id") for t in tables]).unique()
    gaps = []
    for solver, table in zip(solvers, tables, strict=True):
        lacking = every.join(table, on="item_id", how="anti").sort("item_id")
        if lacking.height:
            gaps.append(f"solver {solver!r} has no pass rate for {lacking.height} of {every.height} items "
                        f"(e.g. {lacking['item_id'][0]!r})")
    if gaps:
        raise ConfigError("; ".join(gaps) + ": every solver must solve the same items; solve the missing ones "
                          "with it, or restrict the other runs to its items")
    wide = tables[0]
    for table in tables[1:]:
        wide = wide.join(table, on="item_id", how="inner")
    return wide.sort("item_id")


def _partial(k: int) -> pl.Expr:
    return (pl.col(f"correct_{k}") > 0) & (pl.col(f"correct_{k}") < pl.col(f"attempts_{k}"))


def _fails(k: int) -> pl.Expr:
    return pl.col(f"correct_{k}") == 0


def _solves_all(k: int) -> pl.Expr:
    return pl.col(f"correct_{k}") == pl.col(f"attempts_{k}")


def _tally(k: int, solver: str) -> pl.Expr:
    return pl.concat_str(pl.lit(f"{solver} solves "), pl.col(f"correct_{k}"), pl.lit(" of "), pl.col(f"attempts_{k}"))


def _rows(frame: pl.DataFrame, rule: str, reason: pl.Expr) -> pl.DataFrame:
    return frame.select("item_id", pl.lit(rule).alias("rule"), reason.alias("reason"))


def assign_levels(pass_rates: Mapping[str, pl.DataFrame], config: LevelConfig) -> Levels:
    """The levels of every item that `pass_rates` (solver name → `curate.stats.passrate.pass_rates` frame) measures.

    ConfigError when a solver of `config.solvers` has no frame, a frame belongs to no named solver, or a solver
    lacks items the others have (naming the solver and how many); see the module docstring for the rules."""
    wide = _counts(pass_rates, config.solvers)
    solvers = config.solvers
    small, middle, large = solvers[:3]
    unmeasured = [pl.when(pl.col(f"attempts_{k}") == 0).then(pl.lit(s)) for k, s in enumerate(solvers)]
    wide = wide.with_columns(pl.concat_str(unmeasured, separator=", ", ignore_nulls=True).alias("unmeasured_by"))
    dropped = [_rows(wide.filter(pl.col("unmeasured_by") != ""), "unmeasured",
                     pl.format("no countable attempt by {} (every rollout error or timeout): retry them",
                               "unmeasured_by"))]
    wide = wide.filter(pl.col("unmeasured_by") == "")
    if config.drop_unsolved_by is None:
        solved, never = pl.any_horizontal(*[~_fails(k) for k in range(len(solvers))]), "no solver ever solves it"
    else:
        solved = ~_fails(solvers.index(config.drop_unsolved_by))
        never = f"{config.drop_unsolved_by} never solves it"
    dropped.append(_rows(wide.filter(~solved), "never_solved", pl.lit(never)))
    wide = wide.filter(solved)

    both = pl.format("{}, {}", _tally(0, small), _tally(1, middle))
    rules = {
        "small_partial": (_partial(0), _tally(0, small)),
        "small_fails_middle_solves": (_fails(0) & _solves_all(1), both),
        "small_fails_middle_partial": (_fails(0) & _partial(1), both),
        "both_partial": (_partial(0) & _partial(1), both),
        "large_fails": (_fails(2), _tally(2, large)),
    }
    assigned, taken = [], pl.lit(False)
    for rule, (condition, reason) in rules.items():
        if config.exclusive and LEVEL_RULES[rule] > 1:
            condition = condition & ~taken
        assigned.append(_rows(wide.filter(condition), rule, reason))
        taken = taken | condition
    candidates = wide.filter(~_fails(2) & (~taken if config.exclusive else pl.lit(True)))
    keep = math.floor(config.level3_success_fraction * candidates.height + 0.5)
    order = candidates.with_columns(stable_keys(candidates["item_id"], f"level3:{config.seed}").alias("key"))
    sampled = order.sort("key").head(keep)
    pool = f"{keep} of the {candidates.height} items it solves" + (" outside levels 1 and 2" * config.exclusive)
    assigned.append(_rows(sampled, "large_solves_sampled",
                          pl.format(f"{{}}; in the level-3 sample of {pool}", _tally(2, large))))
    levels = (pl.concat(assigned).with_columns(pl.col("rule").replace_strict(LEVEL_RULES).alias("level"))
              .select(list(LEVELS_SCHEMA)).cast(LEVELS_SCHEMA).sort("level", "item_id"))
    left_out = order.join(levels, on="item_id", how="anti")
    dropped.append(_rows(left_out, "not_sampled",
                         pl.format(f"{{}}; not in the level-3 sample of {pool}, and in no other level",
                                   _tally(2, large))))
    return Levels(levels=levels, dropped=pl.concat(dropped).select(list(DROPPED_SCHEMA)).cast(DROPPED_SCHEMA)
                  .sort("item_id"))
