"""Every shared training set, in its real shape (tests/data: the first 6 rows of each), goes through
`curate score` with the bundled judge, and multiple-choice options reach the judge as `LABEL. text`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import invoke

from curate.config import DEFAULT_TEMPLATE
from curate.templates import load_template

DATA = Path(__file__).parent / "data"


def arc_options(row: dict) -> list[dict[str, str]]:
    return [{"label": c["label"], "text": c["text"].strip()} for c in row["choices"]]


def tal_options(row: dict) -> list[dict[str, str]]:
    return [{"label": o["aoVal"], "text": o["content"].strip()} for [o] in row["answer_option_list"]]


# (file, flags for `curate score`, the input row's options as the judge must see them, or None)
SHAPES = [
    ("math_train_rllm_head6.jsonl", ["--question-field", "problem", "--id-field", "idx", "--domain-field", "subject"],
     None),
    ("gsm8k_train_head6.jsonl", [], None),
    ("arc_easy_challenge_with_grade_head6.jsonl", ["--reference-field", "answerKey"], arc_options),
    ("tal_scq5k_en_difficulty_head6.jsonl", ["--question-field", "problem", "--id-field", "queId",
                                             "--choices-field", "answer_option_list",
                                             "--reference-field", "answer_value"], tal_options),
    ("dsr_sub_qwen2.5-math-1.5b_rlvr_accuracy_history_head6.jsonl",
     ["--question-field", "problem", "--id-field", "index"], None),
]


@pytest.mark.parametrize("name, flags, options_of", SHAPES, ids=[s[0].removesuffix("_head6.jsonl") for s in SHAPES])
def test_score_real_shapes(tmp_path, name, flags, options_of):
    run = tmp_path / "run"
    result = invoke("score", DATA / name, "--out", run, "--json", *flags)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]
    assert summary["items"] == len(rows) == 6
    assert summary["status_counts"].get("ok", 0) + summary["status_counts"].get("unparseable", 0) == 6

    items = pl.read_parquet(run / "items.parquet")
    expected = [options_of(row) if options_of else None for row in rows]
    assert items["choices"].to_list() == expected
    if options_of:
        user = load_template(DEFAULT_TEMPLATE).render(items.row(0, named=True))[-1]["content"]
        option_lines = [f"{o['label']}. {o['text']}" for o in expected[0]]
        lines = user.splitlines()
        assert lines[-len(option_lines):] == option_lines
