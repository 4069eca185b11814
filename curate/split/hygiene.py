r"""Data hygiene before a split is written: duplicates, benchmark contamination, and no problem on both sides.

Pure Polars/NumPy functions, no I/O. Input: one row per item with `item_id`, `question` and optionally `choices`;
a removed item comes back with a `reason`.

Definitions
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

import re
from collections.abc import Sequence

import numpy as np
import polars as pl

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


# What normalize_question does to an ASCII text without `\\`, `~` or `$`: it lowercases, joins str.split()'s words
# (ASCII whitespace and \x1c-\x1f) with one space and tightens; Polars does that to a whole column in native code,
# each replacement only on the texts that hold what it replaces (a replace_all copies every text it is given).
_PLAIN = r"^[\x00-\x23\x25-\x5b\x5d-\x7d\x7f]*$"
_ASCII_WHITESPACE = r"[\t\n\x0b\x0c\r\x1c-\x1f ]+"
_UNEVEN_WHITESPACE = r"[\t\n\x0b\x0c\r\x1c-\x1f]|  |^ | $"
_LOOSE = "|".join(re.escape(old) for old, _ in _TIGHTEN)


def _where(texts: pl.Series, rows: pl.Series, change) -> pl.Series:
    """`texts` with `change` applied to the texts at `rows` (a mask)."""
    at = rows.arg_true()
    return texts.scatter(at, change(texts.gather(at))) if len(at) else texts


def _tightened(texts: pl.Series) -> pl.Series:
    for old, new in _TIGHTEN:
        texts = texts.str.replace_all(old, new, literal=True)
    return texts


def normalize_questions(questions: pl.Series) -> pl.Series:
    """normalize_question of every text: plain texts (`_PLAIN`) in Polars, the rest one by one in Python."""
    plain = questions.str.contains(_PLAIN)
    texts = questions.str.to_lowercase()
    texts = _where(texts, texts.str.contains(_UNEVEN_WHITESPACE),
                   lambda t: t.str.replace_all(_ASCII_WHITESPACE, " ").str.strip_chars(" "))
    texts = _where(texts, texts.str.contains(_LOOSE), _tightened)
    return _where(texts, ~plain, lambda _: pl.Series([normalize_question(q) for q in questions.filter(~plain)],
                                                      dtype=pl.String))


def _normalised(items: pl.DataFrame) -> pl.Series:
    if items["question"].null_count():
        raise ValueError(f"{items['question'].null_count()} item(s) have no question")
    return normalize_questions(items["question"])


def _problem_keys(items: pl.DataFrame) -> pl.Series:
    """What makes two items the same problem: the normalised question and, for multiple choice, the set of
    normalised option texts ("Which of these is a mammal?" over other options is another problem)."""
    questions = _normalised(items)
    if "choices" not in items.columns or not items["choices"].dtype.is_nested():
        return questions
    return pl.Series([question + "\x1f" + "\x1e".join(sorted(normalize_question(_option_text(c)) for c in choices))
                      if choices else question
                      for question, choices in zip(questions.to_list(), items["choices"].to_list(), strict=True)],
                     dtype=pl.String)


def _option_text(choice: dict[str, str] | str) -> str:
    return choice["text"] if isinstance(choice, dict) else choice  # runs made before labelled options


def deduplicate(items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, removed): removed rows carry `reason` naming the kept item they duplicate."""
    frame = items.with_columns(_problem_keys(items).alias("_norm"),
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
    frame = split.select("item_id", "side", _problem_keys(split).alias("_norm"))
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
    questions = _normalised(items).to_list()
    bench = _Texts(normalize_questions(pl.Series(benchmark_texts, dtype=pl.String)).to_list())
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
