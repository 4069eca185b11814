"""The README's evidence table: how well each judge, and two cheap baselines, rank held-out problems by every
difficulty signal in ../shared/data/eval (used only to measure: nothing here is fitted or chosen on it).

    python scripts/evidence_table.py [--work runs/evidence] [--per-set 300] [--judges tiny,smollm2-prefilled,...]
                                     [--pairwise-per-set 60] [--comparisons 4] [--distilled MODEL]

Signals (Spearman ρ of the judge's score with each; a negative ρ where the signal falls with difficulty):
    MATH-500 level (1-5), Omni-MATH difficulty (AoPS 1-9.5), MathOdyssey level (high-school math < college math <
    high-school competition, by the models' mean accuracy on them) and its 18 models' accuracy per problem,
    OlymMATH easy/hard (the English half), the AIME problems' mean Gemini rating (1-10).
Each set is cut to --per-set problems (a seeded sample) so that every judge sees the same items.

Judges, each a `curate score` run (resumable: the script asks only for what a run lacks) read by its expected score
over the digits 1..5:
    tiny                    the bundled tiny judge, score-only template, first-token logprobs
    smollm2-first-token     SmolLM2-135M-Instruct, score-only template, first-token logprobs
    smollm2-prefilled       SmolLM2, difficulty/intensity_prefilled
    smollm2-constrained     SmolLM2, prefilled and --constrain-score
    distilled               --distilled (bundled:smollm2-judge, or the final/ folder scripts/build_distilled_judge.py
                            trained), difficulty/level_prefilled
Pairwise judges, each a `curate pairs` run per set (items compared only with items of the same set) read by the
Bradley-Terry strength, on a seeded --pairwise-per-set of the items of MATH-500, Omni-MATH and MathOdyssey
(pairwise costs --comparisons requests per item, each with two problems in it: the other sets are not run):
    smollm2-pairwise        SmolLM2, pairwise/harder_prefilled, P(A harder) from the letter's logprobs
    distilled-pairwise      --distilled through the same pairwise template
Baselines: problem length in characters, and TF-IDF (word 1-2-grams) + ridge fitted on MATH train levels (the
distilled judge's training items). Cost: seconds of the run per 1,000 problems on this machine, model load included.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import polars as pl

REPO = Path(__file__).resolve().parent.parent
EVAL = REPO.parent / "shared" / "data" / "eval"
TRAIN = REPO.parent / "shared" / "data" / "train" / "math_train_rllm.jsonl"
ODYSSEY_LEVELS = {"high school math": 1, "college math": 2, "high school competition": 3}
# name → (file, question field, {signal name: expression}, row filter)
SETS: dict[str, tuple[str, str, dict[str, pl.Expr], pl.Expr | None]] = {
    "MATH-500": ("math500_test.jsonl", "problem", {"level": pl.col("level").cast(pl.Float64)}, None),
    "Omni-MATH": ("omni_math_rule_difficulty.jsonl", "problem", {"difficulty": pl.col("difficulty").cast(pl.Float64)},
                  None),
    "MathOdyssey": ("mathodyssey_levels_model_correctness.jsonl", "question",
                    {"level": pl.col("level").replace_strict(ODYSSEY_LEVELS, return_dtype=pl.Float64),
                     "accuracy": pl.col("run_accuracy").cast(pl.Float64)}, None),
    "OlymMATH": ("olymmath_easy_hard.jsonl", "problem",
                 {"hard": (pl.col("difficulty_split") == "hard").cast(pl.Float64)}, pl.col("lang") == "en"),
    "AIME (Gemini)": ("deepscaler_aime_train_gemini_difficulty.jsonl", "problem",
                      {"rating": pl.col("difficulty").cast(pl.Float64)}, None),
}
PREFILLED = "difficulty/intensity_prefilled"
DISTILLED = "bundled:smollm2-judge"
JUDGES: dict[str, dict[str, Any]] = {
    "tiny": {"model": "bundled:tiny-judge", "template": "difficulty/intensity_score_only"},
    "smollm2-first-token": {"model": "bundled:smollm2-135m", "template": "difficulty/intensity_score_only"},
    "smollm2-prefilled": {"model": "bundled:smollm2-135m", "template": PREFILLED},
    "smollm2-constrained": {"model": "bundled:smollm2-135m", "template": PREFILLED, "constrain_score": True},
    "distilled": {"model": DISTILLED, "template": "difficulty/level_prefilled"},
}
PAIRWISE_SETS = ("MATH-500", "Omni-MATH", "MathOdyssey")
PAIRWISE_JUDGES: dict[str, dict[str, Any]] = {
    "smollm2-pairwise": {"model": "bundled:smollm2-135m", "template": "pairwise/harder_prefilled"},
    "distilled-pairwise": {"model": DISTILLED, "template": "pairwise/harder_prefilled"},
}


def eval_sets(work: Path, per_set: int, pairwise_per_set: int, seed: int) -> dict[str, pl.DataFrame]:
    """Each set as curate reads it (id, question) with its signals, written to work/sets/NAME.jsonl."""
    from curate.files import write_atomic

    (work / "sets").mkdir(parents=True, exist_ok=True)
    sets = {}
    for name, (file, question, signals, keep) in SETS.items():
        frame = pl.read_ndjson(EVAL / file, infer_schema_length=None)
        frame = frame.filter(keep) if keep is not None else frame
        frame = frame.with_row_index("row").select(pl.format("{}-{}", pl.lit(_slug(name)), "row").alias("id"),
                                                  pl.col(question).alias("question"),
                                                  *(expr.alias(signal) for signal, expr in signals.items()))
        if frame.height > per_set:
            frame = frame.sample(per_set, seed=seed).sort("id")
        # Atomic: another invocation on the same --work (another judge, run alongside) may be reading them.
        write_atomic(work / "sets" / f"{_slug(name)}.jsonl", frame.write_ndjson())
        write_atomic(work / "sets" / f"{_slug(name)}-pairs.jsonl",
                     frame.sample(min(pairwise_per_set, frame.height), seed=seed).sort("id").write_ndjson())
        sets[name] = frame
    return sets


def _slug(name: str) -> str:
    return name.split(" ")[0].lower()


def judged(judge: str, set_name: str, work: Path, comparisons: int, distilled: str) -> tuple[pl.DataFrame, float]:
    """The judge's score per item of the set (null where it gave none: its expected score, or a pairwise judge's
    Bradley-Terry strength), and the seconds its run took, summed over the invocations that asked for judgments."""
    from curate import engine
    from curate.config import RunConfig
    from curate.files import write_atomic

    out = work / "runs" / judge / _slug(set_name)
    if judge in PAIRWISE_JUDGES:
        run, column, source = engine.pairs, "strength", f"{_slug(set_name)}-pairs.jsonl"
        settings = {**PAIRWISE_JUDGES[judge], "comparisons": comparisons}
    else:
        run, column, source = engine.score, "expected_mean", f"{_slug(set_name)}.jsonl"
        settings = JUDGES[judge]
    if settings["model"] == DISTILLED:
        settings = {**settings, "model": distilled}
    config = RunConfig.from_flat({"source": str(work / "sets" / source), "out": str(out), "device": "cpu",
                                  "max_failure_fraction": 1.0, "top_logprobs": 20, "max_tokens": 1, **settings})
    timing = out / "seconds.json"
    started = time.monotonic()
    result = run(config)
    if result.requested:  # a resumed run adds the seconds of each invocation that asked for something
        spent = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
        write_atomic(timing, json.dumps({"seconds": spent + time.monotonic() - started}))
    return (result.per_item.select(pl.col("item_id").alias("id"), pl.col(column).alias("score")),
            json.loads(timing.read_text())["seconds"])


def baselines(sets: dict[str, pl.DataFrame]) -> dict[str, dict[str, pl.DataFrame]]:
    """Problem length, and TF-IDF + ridge (scripts/difficulty_baselines.py's) fitted on MATH train levels, per set."""
    from difficulty_baselines import tfidf_ridge

    train = pl.read_ndjson(TRAIN).filter(pl.col("level").is_not_null())
    predict, _ = tfidf_ridge(train["problem"].to_list(), train["level"].to_numpy())
    return {"problem length": {name: frame.select("id", pl.col("question").str.len_chars().cast(pl.Float64)
                                                  .alias("score")) for name, frame in sets.items()},
            "TF-IDF + ridge": {name: frame.select("id", pl.Series("score", predict(frame["question"].to_list())))
                               for name, frame in sets.items()}}


def agreement(scores: pl.DataFrame, frame: pl.DataFrame, signal: str) -> dict[str, Any]:
    """Spearman ρ of the scores with the signal, with its bootstrap 95% interval, over the items that have both."""
    from curate.stats.metrics import headline, spearman

    both = frame.select("id", signal).join(scores, on="id").drop_nulls()
    notes: list[str] = []
    too_few = "fewer than 3 items, or one score for all" if both.height < 3 or both["score"].n_unique() < 2 else None
    stat = headline("spearman", spearman, (both["score"].to_numpy(), both[signal].to_numpy()), notes, too_few)
    return {"n": both.height, **(stat or {"value": None, "low": None, "high": None}), "notes": notes}


def main() -> None:
    from curate.files import write_atomic

    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "evidence")
    parser.add_argument("--per-set", type=int, default=300)
    parser.add_argument("--pairwise-per-set", type=int, default=60)
    parser.add_argument("--comparisons", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distilled", default=DISTILLED, help="the distilled judge: a bundled name or a model folder")
    parser.add_argument("--judges", default=",".join([*JUDGES, *PAIRWISE_JUDGES]))
    args = parser.parse_args()
    sets = eval_sets(args.work, args.per_set, args.pairwise_per_set, args.seed)
    rows: dict[str, dict[str, Any]] = {}
    for name, per_set in baselines(sets).items():
        rows[name] = {"cost_s_per_1000": None, "signals": {
            f"{set_name} {signal}": agreement(per_set[set_name], frame, signal)
            for set_name, frame in sets.items() for signal in frame.columns[2:]}}
    for judge in args.judges.split(","):
        seconds, items, signals = 0.0, 0, {}
        for set_name, frame in sets.items():
            if judge in PAIRWISE_JUDGES and set_name not in PAIRWISE_SETS:
                continue
            scores, took = judged(judge, set_name, args.work, args.comparisons, args.distilled)
            seconds, items = seconds + took, items + scores.height
            signals |= {f"{set_name} {signal}": agreement(scores, frame, signal) for signal in frame.columns[2:]}
        settings = JUDGES.get(judge) or PAIRWISE_JUDGES[judge]
        rows[judge] = {"cost_s_per_1000": 1000 * seconds / items, "signals": signals, **settings,
                       "model": args.distilled if settings["model"] == DISTILLED else settings["model"]}
    write_atomic(args.work / "evidence.json", json.dumps(rows, indent=2, default=str))
    write_atomic(args.work / "evidence.md", markdown(rows))
    print(markdown(rows))


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    from curate.stats.metrics import format_interval

    signals = list(next(iter(rows.values()))["signals"])
    lines = ["| judge | " + " | ".join(signals) + " | s / 1,000 items |",
             "|---|" + "---|" * (len(signals) + 1)]
    for name, row in rows.items():
        cost = "–" if row["cost_s_per_1000"] is None else f"{row['cost_s_per_1000']:.0f}"
        cells = [format_interval(row["signals"][s], digits=2) + f" (n={row['signals'][s]['n']})"
                 if s in row["signals"] else "not run" for s in signals]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cost} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

