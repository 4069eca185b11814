r"""Scored items → an SFT/RL split by reasoning intensity, ablation arms and an RL curriculum (curate.hygiene
removes duplicates and benchmark contamination and checks the sides are disjoint).

Pure Polars/NumPy functions, no I/O. Input: one row per item with `item_id`, `question`, `score`
(Float64, higher = harder; null = no valid judgment) and optionally `domain`; other columns pass through
(a curriculum may rank by any numeric one).
Failures are data: an unscored item gets side "unscored", a removed item comes back with a `reason`.

Definitions
    side        "sft" if score ≤ τ, "rl" if score > τ, "unscored" if score is null. The score is compared
                as given (a mean of 3.5 at τ = 3 is RL; apply `curate.stats.round_score` first to split on
                the rounded 1..5 scale). A per-domain τ is a dict; a null domain is the group "__none__".
    τ           a chosen τ is always an observed score. `budget_tau(n_rl)`: the smallest observed score v
                with #(score > v) ≤ n_rl. `quantile_tau(q)`: the same with n_rl = ⌊q·n_scored⌋. So RL is the
                items with score > τ, at most the budget: all ties at τ go to SFT (none is broken at random,
                and the lowest observed score is never RL); detail["n_rl"] and ["rl_fraction"] give what
                was reached. `per_domain_tau` applies either rule within each domain: a quantile q in each
                domain; a budget N shared across the domains in proportion to their scored items, by largest
                remainders (domain d gets ⌊N·n_d/n⌋, and the units left over go to the largest remainders
                N·n_d mod n, ties by domain name), so RL holds at most N items in all.
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

SIDES = ("sft", "rl", "unscored")
NONE_DOMAIN = "__none__"
HARDER_WHEN = ("high", "low")  # curriculum: is a high or a low value of `by` the harder one?


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


def fixed_tau(tau: float | dict[str, float]) -> TauChoice:
    value = {str(k): float(v) for k, v in tau.items()} if isinstance(tau, dict) else float(tau)
    return TauChoice(tau=value, method="fixed", detail={})


def _rule(scores: np.ndarray, rule: str, value: float) -> tuple[float, dict[str, Any]]:
    """τ by `rule` over one group's scores: the smallest observed v with #(scores > v) ≤ the RL budget."""
    if rule == "quantile" and not 0 <= value <= 1:
        raise ValueError(f"q must lie in [0, 1], not {value!r}")
    if rule == "budget" and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0):
        raise ValueError(f"n_rl must be a non-negative integer, not {value!r}")
    if rule not in ("quantile", "budget"):
        raise ValueError(f"rule must be 'quantile' or 'budget', not {rule!r}")
    if not len(scores):
        raise ValueError("no scored items: τ is undefined")
    n = len(scores)
    budget = int(np.floor(value * n + 1e-9)) if rule == "quantile" else int(value)  # 1e-9: 0.29 * 100 = 28.99…
    values, counts = np.unique(scores, return_counts=True)
    above = n - np.cumsum(counts)  # above[i] = #(scores > values[i]), non-increasing
    i = int(np.argmax(above <= budget))
    head = {"q": float(value), "target_n_rl": budget} if rule == "quantile" else {"budget": budget}
    return float(values[i]), {**head, "n_scored": n, "n_rl": int(above[i]), "n_sft": n - int(above[i]),
                              "n_at_tau": int(counts[i]), "rl_fraction": int(above[i]) / n}


def _overall(items: pl.DataFrame, rule: str, value: float) -> TauChoice:
    score = _scores(items)
    tau, detail = _rule(score.drop_nulls().to_numpy(), rule, value)
    return TauChoice(tau=tau, method=rule, detail={**detail, "n_unscored": score.null_count()})


def quantile_tau(items: pl.DataFrame, q: float) -> TauChoice:
    """τ giving RL the hardest ⌊q·n⌋ scored items or fewer (ties at τ go to SFT); see detail["rl_fraction"]."""
    return _overall(items, "quantile", q)


def budget_tau(items: pl.DataFrame, n_rl: int) -> TauChoice:
    """The smallest observed score τ with #(score > τ) ≤ n_rl; detail["n_rl"] is the count reached."""
    return _overall(items, "budget", n_rl)


def budget_shares(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """`budget` split across groups in proportion to their sizes, by largest remainders (module docstring)."""
    total = sum(sizes.values())
    shares = {name: budget * size // total for name, size in sizes.items()}
    by_remainder = sorted(sizes, key=lambda name: (-(budget * sizes[name] % total), name))
    for name in by_remainder[:budget - sum(shares.values())]:
        shares[name] += 1
    return shares


def per_domain_tau(items: pl.DataFrame, rule: str, value: float, domain_column: str = "domain") -> TauChoice:
    """A τ per domain of the scored items by `rule` ("quantile": q in each domain; "budget": at most `value`
    RL items in all, shared across the domains by `budget_shares`)."""
    _rule(np.array([0.0]), rule, value)  # validates rule and value even when there are no groups
    score, domain = _scores(items), _domains(items, domain_column)
    scored = pl.DataFrame({"domain": domain, "score": score}).filter(pl.col("score").is_not_null())
    if not scored.height:
        raise ValueError("no scored items: τ is undefined")
    groups = scored.sort("domain").group_by("domain", maintain_order=True)
    scores_of = {name: group["score"].to_numpy() for (name,), group in groups}
    values = (budget_shares({d: len(s) for d, s in scores_of.items()}, int(value)) if rule == "budget"
              else dict.fromkeys(scores_of, value))
    chosen = {name: _rule(scores, rule, values[name]) for name, scores in scores_of.items()}
    n_null = int(items[domain_column].is_null().sum())
    return TauChoice(tau={d: tau for d, (tau, _) in chosen.items()}, method=f"per_domain_{rule}", detail={
        "rule": rule, "value": float(value) if rule == "quantile" else int(value), "domain_column": domain_column,
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
