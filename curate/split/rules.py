r"""Scored items → an SFT/RL split by reasoning intensity, ablation arms and an RL curriculum (curate.split.hygiene
removes duplicates and benchmark contamination and checks the sides are disjoint).

Pure Polars/NumPy functions, no I/O. Input: one row per item with `item_id`, `question`, `score`
(Float64, higher = harder; null = no valid judgment) and optionally `domain`; other columns pass through
(a curriculum may rank by any numeric one).
Failures are data: an unscored item gets side "unscored", a removed item comes back with a `reason`.

Definitions
    side        "sft" if score ≤ τ, "rl" if score > τ, "unscored" if score is null. The score is compared
                as given (a mean of 3.5 at τ = 3 is RL; apply `curate.stats.metrics.round_score` first to split on
                the rounded 1..5 scale). A per-domain τ is a dict; a null domain is the group "__none__".
    τ           `choose_tau(items, TauRule(...))`: fixed (`tau`, default 3), or chosen from the scores, always
                an observed one. By a budget (`rl_budget` N): the smallest observed score v with #(score > v) ≤ N;
                by a quantile (`quantile` q): the same with N = ⌊q·n_scored⌋. So RL is the items with score > τ,
                at most the budget: all ties at τ go to SFT (none is broken at random, and the lowest observed
                score is never RL); detail["n_rl"] and ["rl_fraction"] give what was reached. `per_domain`
                applies either rule within each domain: a quantile q in each domain; a budget N shared across the
                domains in proportion to their scored items, by largest remainders (domain d gets ⌊N·n_d/n⌋, and
                the units left over go to the largest remainders N·n_d mod n, ties by domain name), so RL holds
                at most N items in all.
    arms        random: scored items ordered by sha256(f"{seed}\x1f{item_id}"); the first |RL| of the τ split
                go to RL, the rest to SFT (same sizes). reversed: sft ↔ rl, so the sizes swap. all_sft /
                all_rl: every scored item to one side. Unscored items stay unscored; row order is kept.
    stages      RL items ranked easy → hard by a numeric column `by`: ascending when a high value is harder
                (harder_when="high", e.g. the score), descending when a low value is (harder_when="low", e.g. a
                pass rate); ties by sha256(f"curriculum\x1f{item_id}"); rank r (0-based) of n gets stage
                ⌊r·k/n⌋ + 1: stage sizes differ by at most 1, no item is harder than one in a later stage (a tie
                may straddle stages).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from curate.settings import check, described

SIDES = ("sft", "rl", "unscored")
ARMS = ("random", "reversed", "sft_all", "rl_all")
NONE_DOMAIN = "__none__"
HARDER_WHEN = ("high", "low")  # curriculum: is a high or a low value of `by` the harder one?
DEFAULT_TAU = 3.0


@dataclass(frozen=True)
class TauRule:
    """How τ is chosen (module docstring): one of a fixed `tau`, a `quantile` or an `rl_budget`; 3 when none."""

    tau: float | None = described("SFT: score ≤ τ; RL: score > τ.", default=None,
                                  unset="3, when neither --quantile nor --rl-budget is given")
    quantile: float | None = described("Choose τ so RL gets the hardest fraction q.", default=None)
    rl_budget: int | None = described("Choose τ so RL gets at most N items.", default=None)
    per_domain: bool = described("Apply --quantile within each domain; share --rl-budget across domains by size.",
                                 default=False)

    def __post_init__(self) -> None:
        given = [flag for flag, value in (("--tau", self.tau), ("--quantile", self.quantile),
                                          ("--rl-budget", self.rl_budget)) if value is not None]
        check(len(given) <= 1, f"choose τ one way, not with {' and '.join(given)}: --tau fixes it, --quantile or "
                               "--rl-budget chooses it from the scores")
        check(self.quantile is None or 0 <= self.quantile <= 1,
              f"--quantile is the fraction of scored items for RL and must lie in [0, 1], not {self.quantile}")
        check(self.rl_budget is None or self.rl_budget >= 0, f"--rl-budget must be at least 0, not {self.rl_budget}")
        check(not self.per_domain or self.method != "fixed",
              "--per-domain needs --quantile or --rl-budget (a fixed τ is the same in every domain)")

    @property
    def method(self) -> str:
        """"fixed", "quantile" or "budget"."""
        return "quantile" if self.quantile is not None else "budget" if self.rl_budget is not None else "fixed"

    @property
    def value(self) -> float:
        """τ, q or N."""
        return {"fixed": DEFAULT_TAU if self.tau is None else self.tau, "quantile": self.quantile,
                "budget": self.rl_budget}[self.method]


@dataclass(frozen=True)
class TauChoice:
    tau: float | dict[str, float]
    method: str
    detail: dict[str, Any]


def _scores(items: pl.DataFrame) -> pl.Series:
    if "score" not in items.columns:
        raise ValueError(f"items have no 'score' column; columns: {items.columns}")
    score = items["score"].cast(pl.Float64)
    if score.is_nan().any():
        raise ValueError(f"{int(score.is_nan().sum())} score(s) are NaN; an item without a judgment has a null score")
    return score


def _domains(items: pl.DataFrame, domain_column: str) -> pl.Series:
    if domain_column not in items.columns:
        raise ValueError(f"items have no {domain_column!r} column")
    domain = items[domain_column].cast(pl.String)
    if domain.null_count() and (domain == NONE_DOMAIN).any():
        raise ValueError(f"{domain_column!r} has both nulls and the value {NONE_DOMAIN!r}, which stands for null")
    return domain.fill_null(NONE_DOMAIN)


def assign_sides(items: pl.DataFrame, tau: float | dict[str, float], domain_column: str = "domain") -> pl.DataFrame:
    """The items plus `side` (see the module docstring); a dict τ needs every domain of a scored item."""
    score = _scores(items)
    if isinstance(tau, dict):
        domain = _domains(items, domain_column)
        if missing := sorted(set(domain.filter(score.is_not_null()).unique().to_list()) - set(tau)):
            raise ValueError(f"τ has no value for domain(s) {missing}")
        threshold = domain.replace_strict(tau, default=None, return_dtype=pl.Float64)
    else:
        threshold = pl.Series([float(tau)] * items.height, dtype=pl.Float64)
    side = (pl.when(score.is_null()).then(pl.lit("unscored"))
            .when(score <= threshold).then(pl.lit("sft")).otherwise(pl.lit("rl")))
    return items.with_columns(side.alias("side"))


def _rule(scores: np.ndarray, method: str, value: float) -> tuple[float, dict[str, Any]]:
    """τ by a quantile or a budget over one group's scores: the smallest observed v with #(scores > v) ≤ the RL
    budget."""
    if not len(scores):
        raise ValueError("no scored items: τ is undefined")
    n = len(scores)
    budget = int(np.floor(value * n + 1e-9)) if method == "quantile" else int(value)  # 1e-9: 0.29 * 100 = 28.99…
    values, counts = np.unique(scores, return_counts=True)
    above = n - np.cumsum(counts)  # above[i] = #(scores > values[i]), non-increasing
    i = int(np.argmax(above <= budget))
    head = {"q": float(value), "target_n_rl": budget} if method == "quantile" else {"budget": budget}
    return float(values[i]), {**head, "n_scored": n, "n_rl": int(above[i]), "n_sft": n - int(above[i]),
                              "n_at_tau": int(counts[i]), "rl_fraction": int(above[i]) / n}


def budget_shares(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """`budget` split across groups in proportion to their sizes, by largest remainders (module docstring)."""
    total = sum(sizes.values())
    shares = {name: budget * size // total for name, size in sizes.items()}
    by_remainder = sorted(sizes, key=lambda name: (-(budget * sizes[name] % total), name))
    for name in by_remainder[:budget - sum(shares.values())]:
        shares[name] += 1
    return shares


def choose_tau(items: pl.DataFrame, rule: TauRule, domain_column: str = "domain") -> TauChoice:
    """τ by `rule` over the scored items (module docstring); ValueError when it is undefined (no scored item)."""
    if rule.method == "fixed":
        return TauChoice(tau=float(rule.value), method="fixed", detail={})
    score = _scores(items)
    if not rule.per_domain:
        tau, detail = _rule(score.drop_nulls().to_numpy(), rule.method, rule.value)
        return TauChoice(tau=tau, method=rule.method, detail={**detail, "n_unscored": score.null_count()})
    domain = _domains(items, domain_column)
    scored = pl.DataFrame({"domain": domain, "score": score}).filter(pl.col("score").is_not_null())
    if not scored.height:
        raise ValueError("no scored items: τ is undefined")
    groups = scored.sort("domain").group_by("domain", maintain_order=True)
    scores_of = {name: group["score"].to_numpy() for (name,), group in groups}
    values = (budget_shares({d: len(s) for d, s in scores_of.items()}, int(rule.value)) if rule.method == "budget"
              else dict.fromkeys(scores_of, rule.value))
    chosen = {name: _rule(scores, rule.method, values[name]) for name, scores in scores_of.items()}
    n_null = int(items[domain_column].is_null().sum())
    value = float(rule.value) if rule.method == "quantile" else int(rule.value)
    return TauChoice(tau={d: tau for d, (tau, _) in chosen.items()}, method=f"per_domain_{rule.method}", detail={
        "rule": rule.method, "value": value, "domain_column": domain_column,
        "domains": {d: detail for d, (_, detail) in chosen.items()},
        "n_null_domain": n_null, "null_domain_group": NONE_DOMAIN if n_null else None,
        "notes": [f"{n_null} item(s) with null {domain_column!r} form the group {NONE_DOMAIN!r}"] if n_null else []})


def stable_keys(ids: pl.Series, salt: str) -> pl.Series:
    keys = [hashlib.sha256(f"{salt}\x1f{i}".encode()).hexdigest() for i in ids.cast(pl.String)]
    return pl.Series(keys, dtype=pl.String)


def _check_sided(sided: pl.DataFrame) -> None:
    if "side" not in sided.columns:
        raise ValueError("the frame has no 'side' column; use assign_sides first")
    if unknown := sorted(set(sided["side"].unique().to_list()) - set(SIDES)):
        raise ValueError(f"side values {unknown} are not in {SIDES}")
    if ((sided["side"] == "unscored") != _scores(sided).is_null()).any():
        raise ValueError("side 'unscored' must mark exactly the items with a null score")


def random_arm(sided: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Scored items re-dealt by hash order: the first |RL| (of the τ split) to RL, the rest to SFT."""
    _check_sided(sided)
    key = pl.when(pl.col("side") != "unscored").then(pl.lit(stable_keys(sided["item_id"], str(seed))))
    side = (pl.when(key.is_null()).then(pl.lit("unscored"))  # rank: 1.. over the scored items, in key order
            .when(key.rank("ordinal") <= (sided["side"] == "rl").sum()).then(pl.lit("rl")).otherwise(pl.lit("sft")))
    return sided.with_columns(side.alias("side"), pl.lit("random").alias("arm"))


def reversed_arm(sided: pl.DataFrame) -> pl.DataFrame:
    """The τ split flipped: its RL (hard) items to SFT, its SFT items to RL; the sizes swap."""
    _check_sided(sided)
    return sided.with_columns(pl.col("side").replace({"sft": "rl", "rl": "sft"}), pl.lit("reversed").alias("arm"))


def all_arm(sided: pl.DataFrame, side: str) -> pl.DataFrame:
    """Every scored item to `side` ("sft" or "rl"); arm "sft_all" or "rl_all"."""
    if side not in ("sft", "rl"):
        raise ValueError(f"side must be 'sft' or 'rl', not {side!r}")
    _check_sided(sided)
    to_side = pl.when(pl.col("side") == "unscored").then(pl.lit("unscored")).otherwise(pl.lit(side))
    return sided.with_columns(to_side.alias("side"), pl.lit(f"{side}_all").alias("arm"))


def curriculum_stages(rl_items: pl.DataFrame, k: int, by: str = "score", harder_when: str = "high") -> pl.DataFrame:
    """RL items plus `stage` 1..k, easy → hard in equal-count groups (module docstring); row order kept."""
    if by not in rl_items.columns or not rl_items[by].dtype.is_numeric():
        raise ValueError(f"by must name a numeric column of the RL items, not {by!r}")
    if harder_when not in HARDER_WHEN:
        raise ValueError(f"harder_when must be one of {HARDER_WHEN}, not {harder_when!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    if "side" in rl_items.columns and (rl_items["side"] != "rl").any():
        raise ValueError(f"{int((rl_items['side'] != 'rl').sum())} item(s) are not on the RL side")
    if missing := int(rl_items[by].is_null().sum() + rl_items[by].cast(pl.Float64).is_nan().sum()):
        raise ValueError(f"{missing} of {rl_items.height} RL item(s) lack {by!r}; stages need it for every item")
    key = stable_keys(rl_items["item_id"], "curriculum")
    order = (rl_items.select(pl.col(by).cast(pl.Float64), key.alias("key")).with_row_index("row")
             .sort([by, "key", "row"], descending=[harder_when == "low", False, False])["row"].to_numpy())
    stage = np.empty(rl_items.height, dtype=np.int64)
    stage[order] = np.arange(rl_items.height) * k // max(rl_items.height, 1) + 1
    return rl_items.with_columns(pl.Series("stage", stage, dtype=pl.Int64))
