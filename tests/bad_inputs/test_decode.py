"""`curate score` given a token budget it cannot use: one line saying what, where and what to do."""

import pytest
from conftest import assert_one_line_error, invoke

SAMPLE = ["score", "bundled:math-sample", "--limit", "2"]


def job_file(tmp_path, text: str):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


CASES = {
    "--max-batch-tokens 0": (
        lambda tmp: [*SAMPLE, "--out", tmp / "run", "--max-batch-tokens", "0"], "max_batch_tokens must be >= 1, got 0"),
    "--max-batch-tokens below zero": (
        lambda tmp: [*SAMPLE, "--out", tmp / "run", "--max-batch-tokens", "-512"],
        "max_batch_tokens must be >= 1, got -512"),
    "job file: a token budget that is not a number": (
        lambda tmp: ["score", "--config", job_file(tmp, "source: bundled:math-sample\nmax_batch_tokens: lots\n"),
                     "--out", tmp / "run"],
        "setting 'max_batch_tokens' must be an integer, got 'lots'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_line(tmp_path, case):
    args, expected = CASES[case]
    assert_one_line_error(invoke(*args(tmp_path)), expected)
    assert not (tmp_path / "run").exists()  # refused before anything is written
