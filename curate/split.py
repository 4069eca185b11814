r"""Scored items → an SFT/RL split by reasoning intensity, ablation arms, an RL curriculum, and hygiene.

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
    normalised  `normalize_question`, in order: lowercase; `\,` `\:` `\;` `\!` `\quad` `\qquad` `~` → a space
                (a `\\` line break is kept); whitespace runs (as str.split sees them) → one space, ends
                stripped; inside $…$ and $$…$$ (unescaped $) every space removed, except one between a control
                word and a letter (`\alpha b`); spaces after `{`, before `}` and before . , ; : ! ? removed.
                Not merged: x^2 vs x^{2}, $x$ vs x, "a, b" vs "a,b" in text. Lowercasing merges X and x.
    duplicates  items with the same normalised question and, when they have options, the same set of normalised
                option texts (the same stem over other options is another problem); the first by input order is
                kept, each other is "exact duplicate of <kept id>" (identical question and options) or
                "normalised duplicate of <kept id>".
    contamination  texts are normalised and split on spaces into tokens. An item is removed if n consecutive
                tokens of it occur consecutively in a benchmark text. A text of fewer than n tokens is
                compared whole (exact containment, at token boundaries): a short benchmark text inside the
                item, or a short item inside a benchmark text. Candidates come from 64-bit rolling hashes
                of token runs (benchmark hashes built once); every reported match is checked on the text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
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


_SPACING = re.compile(r"\\\\|\\(?:[,:;!]|q?quad(?![a-z]))|~")  # a `\\` (line break) is matched to be kept
_MATH = re.compile(r"(?<!\\)(\$\$?)(.+?)(?<!\\)\1", re.DOTALL)
_MATH_SPACE = re.compile(r"(\\[a-z]+)? (?=([a-z])?)")
_TIGHTEN = (("{ ", "{"), (" }", "}"), *((" " + p, p) for p in ".,;:!?"))


def _tight_math(match: re.Match[str]) -> str:
    inner = match[2]
    if " " in inner and "\\" not in inner:
        inner = inner.replace(" ", "")
    elif " " in inner:
        inner = _MATH_SPACE.sub(lambda m: m[1] + " " if m[1] and m[2] else m[1] or "", inner)
    return match[1] + inner + match[1]


def normalize_question(text: str) -> str:
    """The normalised question (module docstring, "normalised")."""
    text = text.lower()
    if "\\" in text or "~" in text:
        text = _SPACING.sub(lambda m: m[0] if m[0] == "\\\\" else " ", text)
    text = " ".join(text.split())  # whitespace as str.split sees it; strips the ends
    if "$" in text:
        text = _MATH.sub(_tight_math, text)
    for old, new in _TIGHTEN:
        text = text.replace(old, new)
    return text


def _normalised(items: pl.DataFrame) -> list[str]:
    if items["question"].null_count():
        raise ValueError(f"{items['question'].null_count()} item(s) have no question")
    return [normalize_question(q) for q in items["question"].to_list()]


def _problem_keys(items: pl.DataFrame) -> list[str]:
    """What makes two items the same problem: the normalised question and, for multiple choice, the set of
    normalised option texts ("Which of these is a mammal?" over other options is another problem)."""
    questions = _normalised(items)
    if "choices" not in items.columns or not items["choices"].dtype.is_nested():
        return questions
    return [question + "\x1f" + "\x1e".join(sorted(normalize_question(_option_text(c)) for c in choices))
            if choices else question for question, choices in zip(questions, items["choices"].to_list(), strict=True)]


def _option_text(choice: dict[str, str] | str) -> str:
    return choice["text"] if isinstance(choice, dict) else choice  # runs made before labelled options


def deduplicate(items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, removed): removed rows carry `reason` naming the kept item they duplicate."""
    frame = items.with_columns(pl.Series("_norm", _problem_keys(items), dtype=pl.String),
                               pl.struct([c for c in ("question", "choices") if c in items.columns]).alias("_exact"))
    frame = frame.with_columns(pl.col("item_id").first().over("_norm").alias("_kept_id"),
                               pl.col("_exact").first().over("_norm").alias("_kept_exact"),
                               pl.int_range(pl.len()).over("_norm").alias("_nth"))
    reason = pl.format("{} duplicate of {}", pl.when(pl.col("_exact") == pl.col("_kept_exact")).then(pl.lit("exact"))
                       .otherwise(pl.lit("normalised")), pl.col("_kept_id").cast(pl.String))
    return (frame.filter(pl.col("_nth") == 0).select(items.columns),
            frame.filter(pl.col("_nth") > 0).select(*items.columns, reason.alias("reason")))


def check_disjoint(sided: pl.DataFrame) -> None:
    """Raise ValueError naming the item ids on both SFT and RL (by item_id or by normalised problem)."""
    split = sided.filter(pl.col("side").is_in(["sft", "rl"]))
    frame = split.select("item_id", "side", pl.Series("_norm", _problem_keys(split), dtype=pl.String))
    problems = []
    for key in ("item_id", "_norm"):
        both = frame.group_by(key).agg(pl.col("side").n_unique().alias("n")).filter(pl.col("n") > 1)[key]
        ids = sorted(frame.filter(pl.col(key).is_in(both.implode()))["item_id"].cast(pl.String).unique().to_list())
        if ids:
            what = "an item_id" if key == "item_id" else "a normalised question (and options)"
            problems.append(f"{len(ids)} item(s) share {what} across SFT and RL: {ids[:50]}"
                            + (f" and {len(ids) - 50} more" if len(ids) > 50 else ""))
    if problems:
        raise ValueError("; ".join(problems))


_MULTIPLIER, _CHUNK = np.uint64(0x9E3779B97F4A7C15), 20_000  # rolling-hash multiplier; items per pass (memory)


class _Texts:
    """Normalised texts split on spaces, each token coded by a 64-bit hash (to find candidates only)."""

    def __init__(self, normalised: list[str]):
        self.text = normalised
        words = pl.Series(normalised, dtype=pl.String).str.split(" ").explode()
        self.codes = words.filter(words != "").hash(seed=0).to_numpy() if len(words) else np.zeros(0, np.uint64)
        self.lengths = np.array([t.count(" ") + 1 if t else 0 for t in normalised], dtype=np.int64)
        self.offsets = np.cumsum(self.lengths) - self.lengths

    def runs(self, m: int, only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash, text, start within text) of every run of m tokens, text by text (of the texts `only`)."""
        count = np.maximum((self.lengths if only is None else np.where(only, self.lengths, 0)) - m + 1, 0)
        text = np.repeat(np.arange(len(count)), count)
        within = np.arange(int(count.sum()), dtype=np.int64) - (np.cumsum(count) - count)[text]
        h = np.zeros(len(text), dtype=np.uint64)
        for j in range(m):
            h = h * _MULTIPLIER + self.codes[self.offsets[text] + within + j]  # uint64 wraps: a hash mod 2**64
        return h, text, within


def decontaminate(items: pl.DataFrame, benchmark_texts: Sequence[str], n: int = 13,
                  source_names: Sequence[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, removed): removed items share n consecutive tokens with a benchmark text (module docstring)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    names = [f"benchmark text {i}" for i in range(len(benchmark_texts))] if source_names is None else source_names
    if len(names) != len(benchmark_texts):
        raise ValueError(f"{len(names)} source names for {len(benchmark_texts)} benchmark texts")
    questions, bench = _normalised(items), _Texts([normalize_question(t) for t in benchmark_texts])
    if (bench.lengths == 0).any():
        raise ValueError(f"benchmark texts {np.flatnonzero(bench.lengths == 0).tolist()[:20]} are empty")
    padded, sets, found = [f" {t} " for t in bench.text], {}, {}
    for offset in range(0, items.height, _CHUNK):
        chunk = _Texts(questions[offset:offset + _CHUNK])
        # (m, the item runs probed, only whole benchmark texts of m tokens?, what a match means)
        plans = [(n, chunk.runs(n), False, "{n}-gram overlap with {source}: '{gram}'")]
        plans += [(m, chunk.runs(m), True, "contains all of {source} ({m} tokens, under {n}): '{gram}'")
                  for m in sorted({int(x) for x in bench.lengths if x < n})]
        plans += [(m, chunk.runs(m, chunk.lengths == m), False, "whole text ({m} tokens, under {n}) found in "
                   "{source}: '{gram}'") for m in sorted({int(x) for x in chunk.lengths if 0 < x < n})]
        for m, (hashes, text, start), whole, reason in plans:
            if (m, whole) not in sets:  # the benchmark's distinct run hashes, each with its first text; built once
                bench_hashes, bench_text, _ = bench.runs(m, bench.lengths == m if whole else None)
                unique, first = np.unique(bench_hashes, return_index=True)
                sets[m, whole] = unique, bench_text[first], np.unique(bench_text).tolist()
            unique, source_of, eligible = sets[m, whole]
            for w in np.flatnonzero(pl.Series(hashes).is_in(pl.Series(unique).implode()).to_numpy()):
                t = int(text[w]) + offset
                if t in found:
                    continue
                gram = " ".join(chunk.text[t - offset].split(" ")[start[w]:start[w] + m])
                source = int(source_of[np.searchsorted(unique, hashes[w])])
                if f" {gram} " not in padded[source]:  # a hash collision: look in every eligible text
                    source = next((s for s in eligible if f" {gram} " in padded[s]), None)
                if source is not None:
                    found[t] = reason.format(n=n, m=m, source=names[source], gram=gram)
    reasons = pl.Series("reason", [found.get(i) for i in range(items.height)], dtype=pl.String)
    return items.filter(reasons.is_null()), items.with_columns(reasons).filter(reasons.is_not_null())
