"""The baselines the bundled judge is compared with in the README: how well do cheap signals rank MATH-500
problems by their human `level`?

    problem length   Spearman ρ between the problem's length in characters and its level (nothing is fitted)
    TF-IDF + ridge   word 1–2-gram TF-IDF features and a ridge regression onto the level, fitted on the
                     judge's own training split of MATH train (the rows `build_tiny_judge.py` trains on; its
                     held-out sample and validation slice are left out), then asked for MATH-500's levels

MATH-500 is only measured, never fitted on. Spearman ρ with a 95% percentile-bootstrap interval over the 500
items (the same bootstrap `curate stats` uses). Run from the repository root, on a machine with ../shared/data:

    python scripts/difficulty_baselines.py [--alpha 1.0] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from build_tiny_judge import SHARED_DATA, read_jsonl, split_rows
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a source checkout
from curate.stats.metrics import bootstrap_interval, format_interval, spearman  # noqa: E402


def tfidf_ridge(texts: list[str], levels: list[float], alpha: float = 1.0) -> tuple[Callable[[list[str]], np.ndarray],
                                                                                  int]:
    """Word 1-2-gram TF-IDF features and a ridge regression onto the levels, fitted on `texts`: the function that
    predicts the level of other texts, and the number of features."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(texts)
    ridge = Ridge(alpha=alpha).fit(features, levels)
    return (lambda other: ridge.predict(vectorizer.transform(other))), features.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=SHARED_DATA / "train" / "math_train_rllm.jsonl")
    parser.add_argument("--eval", type=Path, default=SHARED_DATA / "eval" / "math500_test.jsonl")
    parser.add_argument("--alpha", type=float, default=1.0, help="ridge regularisation (not tuned on MATH-500)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    _, _, train = split_rows(read_jsonl(args.train), sample_size=200, val_size=500, seed=0)  # the judge's defaults
    test = read_jsonl(args.eval)
    levels = np.array([row["level"] for row in test], dtype=float)

    lengths = np.array([len(row["problem"]) for row in test], dtype=float)
    predict, n_features = tfidf_ridge([row["problem"] for row in train], [row["level"] for row in train], args.alpha)
    predicted = predict([row["problem"] for row in test])

    results = {}
    for name, values in (("problem_length", lengths), ("tfidf_ridge", predicted)):
        low, high = bootstrap_interval(spearman, values, levels)
        results[name] = {"n": len(test), "value": spearman(values, levels), "low": low, "high": high}
    results["tfidf_ridge"].update(train_rows=len(train), alpha=args.alpha, features=n_features)
    for name, result in results.items():
        print(f"{name:16s} Spearman ρ with the MATH-500 level: {format_interval(result, digits=3)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
