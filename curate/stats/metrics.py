"""Statistics of a run: score distribution, failures, self-consistency, agreement with references.

Pure functions over Polars frames (no I/O). Shapes: `judgments` as `curate.store.read_judgments`
returns them, `per_item` as `curate.stats.aggregate.per_item`, `items` as RUN_DIR/items.parquet.

Definitions
    item score       one number per scored item: `score_mean` ("mean"), `score_median` ("median"),
                     or `expected_mean` ("expected", items with at least one logprob judgment) of a judge
                     run; a pairs run's Bradley-Terry `strength` ("strength"), which is not on the 1..5 scale
                     (`on_scale`): what rounds scores to 1..5 (histograms, κ, confusion matrices) leaves it out.
    rounded score    half up (2.5 → 3), clipped to 1..5: `round_score`, the one rule used everywhere.
    self-consistency see `curate.stats.consistency`.
    agreement        Spearman ρ, Kendall τ-b, quadratic-weighted Cohen's κ (scipy, scikit-learn) over
                     pairs where both values are present; κ and the confusion matrix (rows =
                     reference label, columns = rounded score) need reference and rounded score
                     in one label set. AUROC scores "not solved" (pass rate ≤ `unsolved_at`).
    intervals        headline numbers are {"value", "low", "high"}: a percentile bootstrap over
                     items (`scipy.stats.bootstrap`, paired, seeded). No interval below
                     MIN_BOOTSTRAP items, nor when the statistic is undefined on any resample
                     (e.g. a resample with one class only): dropping those would bias it.

Every part's `notes` say why a statistic is undefined or what limits it; `all_notes` gathers them.

Failures are data: an undefined statistic (too few items, constant input, one class) is None and
`notes` says why; no function substitutes 0 or NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import krippendorff
import numpy as np
import polars as pl
from scipy import stats as sps
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from curate.parse import SCORE_MAX, SCORE_MIN, Status
from curate.stats.aggregate import AGGREGATED_COLUMNS

# What the statistics of a run read from its judgments (raw text and distributions: identical samples).
JUDGMENT_COLUMNS = (*AGGREGATED_COLUMNS, "raw_text", "score_probs")
STRENGTH = "strength"  # a pairs run's item score (curate.tasks.pairs)
SCORE_COLUMNS = {"mean": "score_mean", "median": "score_median", "expected": "expected_mean", STRENGTH: "strength"}
# What the histogram of each item score counts: an expected score is no score the judge wrote.
HISTOGRAM_OF = {"mean": "rounded mean of the sampled scores", "median": "rounded median of the sampled scores",
                "expected": "rounded expected score (logprob-weighted, not sampled)",
                STRENGTH: "nothing: Bradley-Terry strengths are not on the 1..5 scale"}
LABELS = tuple(range(SCORE_MIN, SCORE_MAX + 1))
MIN_PAIRS = 3  # below this a correlation or κ says nothing
MIN_BOOTSTRAP = 10
N_RESAMPLES = 1000
# scipy draws the resamples' indices for a whole batch at once: n_resamples x items int64s unbatched, 16 GB for
# 2M items (BENCHMARKS (i)). Batches keep that under 128 MB; runs of up to 16,777 items stay one batch, as before.
RESAMPLED_INDICES_PER_BATCH = 2**24
ArrayLike = pl.Series | Sequence[float | int | None] | np.ndarray


def round_score(values: ArrayLike) -> np.ndarray:
    """Scores rounded half up (2.5 → 3) and clipped to SCORE_MIN..SCORE_MAX, as int64."""
    array = as_float(values)
    if not np.isfinite(array).all():
        raise ValueError("round_score needs present, finite scores; drop unscored items first")
    return np.clip(np.floor(array + 0.5), SCORE_MIN, SCORE_MAX).astype(np.int64)


def as_float(values: ArrayLike) -> np.ndarray:
    """A float array with null/None as NaN."""
    if isinstance(values, pl.Series):
        return values.cast(pl.Float64).to_numpy()
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def on_scale(score: str) -> bool:
    """Whether the item score lies on the judge's 1..5 scale (a Bradley-Terry strength does not)."""
    return score != STRENGTH


def resolve_score(per_item: pl.DataFrame, score: str | None) -> str:
    """The item score to read: `score`, or when None the run's own (mean; a pairs run's strength)."""
    return score or (STRENGTH if SCORE_COLUMNS[STRENGTH] in per_item.columns else "mean")


def item_scores(per_item: pl.DataFrame, score: str | None = None) -> pl.DataFrame:
    """item_id and `score` (Float64) of the scored items, by the chosen item score (`resolve_score`).

    ValueError for an unknown score, one the run does not have (a judge run's of a pairs run, or the reverse),
    and for "expected" when no item has a logprob judgment (the message says how to get them and which scores
    the run has)."""
    score = resolve_score(per_item, score)
    if score not in SCORE_COLUMNS:
        raise ValueError(f"unknown score {score!r}; choose one of {sorted(SCORE_COLUMNS)}")
    if SCORE_COLUMNS[score] not in per_item.columns:
        raise ValueError(f"--score {score} is a judge run's, and this is a pairs run, whose one item score is its "
                         f"Bradley-Terry strength: use --score {STRENGTH} (or leave --score out)" if on_scale(score)
                         else f"--score {STRENGTH} is a pairs run's Bradley-Terry strength (`curate pairs`); this "
                              "judge run's item scores are mean, median and expected")
    if score == "expected" and not (per_item["n_logprobs"] > 0).any():
        scored = (per_item["item_status"] == "scored").any()
        raise ValueError(f"--score expected needs logprob judgments and none of the run's {per_item.height} items "
                         "has one; score with --top-logprobs 20 --max-tokens 1 on a score-only template "
                         "(difficulty/intensity_score_only) to get them, or use a score this run has: "
                         + ("mean, median" if scored else "none (no item is scored)"))
    keep = pl.col("n_logprobs") > 0 if score == "expected" else pl.col("item_status") == "scored"
    return (per_item.filter(keep & pl.col(SCORE_COLUMNS[score]).is_not_null())
            .select("item_id", pl.col(SCORE_COLUMNS[score]).cast(pl.Float64).alias("score")).sort("item_id"))


def item_field(items: pl.DataFrame, name: str) -> pl.DataFrame:
    """item_id and one input field of the items frame: a column, or else a field of `extra`."""
    if name in items.columns:
        return items.select(pl.col("id").alias("item_id"), name)
    extra = items.schema.get("extra")
    if isinstance(extra, pl.Struct) and name in [f.name for f in extra.fields]:
        return items.select(pl.col("id").alias("item_id"), pl.col("extra").struct.field(name))
    fields = [c for c in items.columns if c != "extra"] + ([f.name for f in extra.fields] if extra else [])
    raise ValueError(f"items have no field {name!r}; fields: {sorted(fields)}")


def _histogram(scores: np.ndarray) -> dict[str, int]:
    rounded = round_score(scores)
    return {str(k): int((rounded == k).sum()) for k in LABELS}


def _describe(scores: np.ndarray, histogram: bool) -> dict[str, Any]:
    n = len(scores)
    return {"n": n, "mean": float(scores.mean()) if n else None,
            "std": float(scores.std(ddof=1)) if n >= 2 else None,
            "histogram": _histogram(scores) if histogram else None}


def score_distribution(per_item: pl.DataFrame, items: pl.DataFrame, score: str | None = None,
                       by: str | None = "domain") -> dict[str, Any]:
    """Histogram of rounded item scores (`histogram_of` says of which; None for a score off the 1..5 scale), n,
    mean, std (ddof=1), overall and per value of `by`."""
    score = resolve_score(per_item, score)
    scores = item_scores(per_item, score)
    values = scores["score"].to_numpy()
    result: dict[str, Any] = {"score": score, **_describe(values, on_scale(score)),
                              "histogram_of": HISTOGRAM_OF[score], "by": by, "groups": None, "notes": []}
    notes = result["notes"]
    if len(values) < 2:
        notes.append("no scored items: mean and std are undefined" if not len(values) else
                     "1 scored item: std is undefined")
    if by is None:
        return result
    try:
        field = item_field(items, by)
    except ValueError as exc:
        notes.append(f"no groups: {exc}")
        return result
    joined = scores.join(field, on="item_id", how="left")
    if joined[by].null_count() == joined.height:
        notes.append(f"no groups: {by!r} has no values for the scored items")
        return result
    if joined[by].null_count():
        notes.append(f"{joined[by].null_count()} scored item(s) have no {by!r}: group None")
    result["groups"] = [{"group": key[0], **_describe(group["score"].to_numpy(), on_scale(score))}
                        for key, group in joined.sort(by, nulls_last=True).group_by(by, maintain_order=True)]
    return result


def failure_rates(judgments: pl.DataFrame) -> dict[str, Any]:
    """Judgments per status (count and fraction), and the items with no ok judgment."""
    n = judgments.height
    observed = judgments["status"].unique().sort().to_list()
    statuses = [str(s) for s in Status] + [s for s in observed if s not in set(Status)]
    counts = {s: int((judgments["status"] == s).sum()) for s in statuses}
    failed = n - counts[Status.OK]
    # One pass in Polars (sets of every item id in Python took 3 s at 2M items); its byte order is str's order.
    has_ok = judgments.group_by("item_id").agg((pl.col("status") == Status.OK).any().alias("has_ok"))
    unscored = has_ok.filter(~pl.col("has_ok"))["item_id"].sort().to_list()
    return {"n_judgments": n, "counts": counts, "fractions": {s: c / n for s, c in counts.items()} if n else None,
            "n_failed": failed, "failed_fraction": failed / n if n else None,
            "n_items": has_ok.height, "n_items_without_ok": len(unscored),
            "items_without_ok": unscored, "notes": [] if n else ["no judgments: fractions undefined"]}


def safe(statistic: Callable[..., float], *data: np.ndarray) -> float | None:
    """The statistic, or None where it is undefined (it raised ValueError or gave a non-finite value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(statistic(*data))
        except ValueError:
            return None
    return value if np.isfinite(value) else None


def _bootstrap(statistic: Callable[..., float], data: tuple[np.ndarray, ...], n_resamples: int, seed: int,
               level: float) -> tuple[tuple[float, float] | None, str]:
    """(interval, "") or (None, why)."""
    n = len(data[0])
    if n_resamples <= 0:
        return None, "not computed (n_resamples=0)"
    if n < MIN_BOOTSTRAP:
        return None, f"{n} items, a bootstrap needs {MIN_BOOTSTRAP}"
    if safe(statistic, *data) is None:
        return None, "the statistic is undefined on the sample itself"

    def nan_if_undefined(*resampled: np.ndarray) -> float:
        value = safe(statistic, *resampled)
        return np.nan if value is None else value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning when every resample agrees
        result = sps.bootstrap(data, nan_if_undefined, n_resamples=n_resamples, paired=True, vectorized=False,
                               method="percentile", confidence_level=level, rng=np.random.default_rng(seed),
                               batch=max(1, min(n_resamples, RESAMPLED_INDICES_PER_BATCH // n)))
    undefined = int(np.isnan(result.bootstrap_distribution).sum())
    if undefined:
        return None, f"undefined on {undefined} of {n_resamples} resamples"
    return (float(result.confidence_interval.low), float(result.confidence_interval.high)), ""


def bootstrap_interval(statistic: Callable[[np.ndarray, np.ndarray], float], x: ArrayLike, y: ArrayLike,
                       n_resamples: int = N_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of statistic(x, y), resampling (x, y) pairs; None when it is
    undefined (fewer than MIN_BOOTSTRAP pairs, or the statistic undefined on the sample or a resample)."""
    return _bootstrap(statistic, (np.asarray(x), np.asarray(y)), n_resamples, seed, level)[0]


def headline(name: str, statistic: Callable[..., float], data: tuple[np.ndarray, ...], notes: list[str],
             undefined_because: str | None = None, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
             level: float = 0.95) -> dict[str, float | None] | None:
    """{"value", "low", "high"} for a statistic over items, or None; `notes` gets each reason."""
    value = None if undefined_because else safe(statistic, *data)
    if value is None:
        notes.append(f"{name} is undefined: {undefined_because or 'the statistic has no value on this sample'}")
        return None
    interval, why = _bootstrap(statistic, data, n_resamples, seed, level)
    if interval is None:
        notes.append(f"{name}: no {level:.0%} interval: {why}")
    low, high = interval or (None, None)
    return {"value": value, "low": low, "high": high}


def format_interval(stat: dict[str, Any] | None, digits: int = 2) -> str:
    """`0.52 [0.45, 0.58]`, `0.52 (no interval)`, or `undefined`."""
    if not stat or stat.get("value") is None:
        return "undefined"
    text = f"{stat['value']:.{digits}f}"
    if stat.get("low") is None or stat.get("high") is None:
        return text + " (no interval)"
    return f"{text} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def _pairs(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_float(x), as_float(y)
    if len(x) != len(y):
        raise ValueError(f"paired inputs differ in length: {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def correlation_problem(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str) -> str | None:
    """Why a rank correlation of x and y is undefined, or None."""
    if len(x) < MIN_PAIRS:
        return f"{len(x)} pairs, need {MIN_PAIRS}"
    constant = [name for name, v in ((x_name, x), (y_name, y)) if np.unique(v).size < 2]
    return f"{' and '.join(constant)} constant" if constant else None


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return sps.spearmanr(x, y).statistic


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    return sps.kendalltau(x, y, variant="b").statistic


def quadratic_kappa(a: np.ndarray, b: np.ndarray, labels: Sequence[int] = LABELS) -> float:
    return cohen_kappa_score(a, b, weights="quadratic", labels=list(labels), replace_undefined_by=np.nan)


def ordinal_alpha(reliability: np.ndarray) -> float:
    """Krippendorff's α, ordinal; rows are coders, columns units, NaN where a coder gave no value."""
    return krippendorff.alpha(reliability_data=reliability, level_of_measurement="ordinal", value_domain=LABELS)


def all_notes(parts: dict[str, Any]) -> list[str]:
    """Every note of a stats (or comparison) dict: its own, then each part's, prefixed with the part's name."""
    return list(parts.get("notes") or []) + [f"{name}: {note}" for name, part in parts.items()
                                              if isinstance(part, dict) for note in part.get("notes") or []]


def reference_agreement(scores: ArrayLike, reference: ArrayLike, labels: Sequence[int] = LABELS, *,
                        n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95,
                        scores_on_scale: bool = True) -> dict[str, Any]:
    """Agreement of item scores with an ordinal reference (e.g. MATH level), paired by position; κ and the
    confusion matrix only for scores on the 1..5 scale (`scores_on_scale`), the rank correlations for any."""
    x, ref = _pairs(scores, reference)
    notes: list[str] = []
    options = {"n_resamples": n_resamples, "seed": seed, "level": level}
    why = correlation_problem(x, ref, "scores", "reference")
    result: dict[str, Any] = {
        "n": len(x),
        "spearman": headline("spearman", spearman, (x, ref), notes, why, **options),
        "kendall": headline("kendall", kendall, (x, ref), notes, why, **options),
        "qwk": None, "labels": list(labels), "confusion_matrix": None, "notes": notes}
    if not scores_on_scale:
        notes.append("qwk and confusion_matrix need scores on the 1..5 scale; these (Bradley-Terry strengths) are "
                     "not: compare ranks (spearman, kendall)")
        return result
    rounded = round_score(x)
    outside = sorted(set(ref[~np.isin(ref, labels)].tolist()) | set(rounded[~np.isin(rounded, labels)].tolist()))
    if outside:
        notes.append(f"qwk and confusion_matrix need one label set: values {outside[:10]} are outside {list(labels)}")
        return result
    ref = ref.astype(np.int64)
    result["confusion_matrix"] = confusion_matrix(ref, rounded, labels=list(labels)).tolist() if len(x) else None
    if not len(x):
        notes.append("confusion_matrix is undefined: no pairs")
    kappa_why = f"{len(x)} pairs, need {MIN_PAIRS}" if len(x) < MIN_PAIRS else None
    result["qwk"] = headline("qwk", lambda a, b: quadratic_kappa(a, b, labels), (rounded, ref), notes, kappa_why,
                             **options)
    return result


def pass_rate_agreement(scores: ArrayLike, pass_rate: ArrayLike, unsolved_at: float = 0.0, *,
                        n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Spearman of score vs pass rate (expect < 0) and AUROC of the score for pass rate ≤ unsolved_at."""
    x, rate = _pairs(scores, pass_rate)
    outside = rate[(rate < 0) | (rate > 1)]
    if len(outside):
        raise ValueError(f"pass rates must lie in [0, 1]; {len(outside)} of {len(rate)} do not (e.g. {outside[0]:g})")
    notes: list[str] = []
    options = {"n_resamples": n_resamples, "seed": seed, "level": level}
    unsolved = rate <= unsolved_at
    n_unsolved = int(unsolved.sum())
    auroc_why = None
    if n_unsolved in (0, len(x)):
        auroc_why = f"one class only ({n_unsolved} of {len(x)} items unsolved at pass rate <= {unsolved_at})"
    return {"n": len(x), "n_unsolved": n_unsolved, "unsolved_at": unsolved_at,
            "spearman": headline("spearman", spearman, (x, rate), notes,
                                 correlation_problem(x, rate, "scores", "pass rates"), **options),
            "auroc": headline("auroc", lambda s, r: roc_auc_score(r <= unsolved_at, s), (x, rate), notes,
                              auroc_why, **options),
            "notes": notes}
