"""`curate score` and `curate reparse` given a user's mistake: one line saying what, where and what to do."""

import os

import pytest
from conftest import assert_one_line_error, invoke, write_jsonl

SAMPLE = ["bundled:math-sample", "--limit", "2"]


def job_file(tmp_path, text: str, name: str = "job.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


CASES = {
    "job file: a value of the wrong type names its key": (
        lambda tmp: ["score", "--config", job_file(tmp, "source: bundled:math-sample\nsamples: three\n"),
                     "--out", tmp / "run"],
        "setting 'samples' must be an integer, got 'three'"),
    "job file: a choice outside its values": (
        lambda tmp: ["score", "--config", job_file(tmp, "source: bundled:math-sample\non_bad_rows: skip\n"),
                     "--out", tmp / "run"],
        "setting 'on_bad_rows' must be one of 'error', 'quarantine', got 'skip'"),
    "job file: not a mapping": (
        lambda tmp: ["score", "--config", job_file(tmp, "- a\n- b\n")], "must hold a mapping of settings"),
    "--out is a file": (
        lambda tmp: ["score", *SAMPLE, "--out", write_jsonl(tmp / "taken.jsonl", [])],
        "is a file, not a run directory"),
    "--out inside a file": (
        lambda tmp: ["score", *SAMPLE, "--out", write_jsonl(tmp / "taken.jsonl", []) / "run"],
        "Not a directory"),
    "--max-batch-tokens 0": (
        lambda tmp: ["score", *SAMPLE, "--out", tmp / "run", "--max-batch-tokens", "0"],
        "max_batch_tokens must be >= 1, got 0"),
    "job file: a token budget that is not a number": (
        lambda tmp: ["score", "--config", job_file(tmp, "source: bundled:math-sample\nmax_batch_tokens: lots\n"),
                     "--out", tmp / "run"],
        "setting 'max_batch_tokens' must be an integer, got 'lots'"),
    "--constrain-score without --max-tokens 1": (
        lambda tmp: ["score", *SAMPLE, "--out", tmp / "run", "--constrain-score", "--top-logprobs", "5"],
        "set --max-tokens 1 and --top-logprobs (e.g. 20); got max_tokens=512, top_logprobs=5"),
    "--constrain-score without --top-logprobs": (
        lambda tmp: ["score", *SAMPLE, "--out", tmp / "run", "--constrain-score", "--max-tokens", "1"],
        "got max_tokens=1, top_logprobs=0"),
    "--constrain-score with a rationale template": (
        lambda tmp: ["score", *SAMPLE, "--out", tmp / "run", "--constrain-score", "--max-tokens", "1",
                     "--top-logprobs", "5", "--template", "difficulty/intensity"],
        "template 'difficulty/intensity' (parser tagged_score) answers with more than a score"),
    "a template whose prefill is not text": (
        lambda tmp: ["score", *SAMPLE, "--out", tmp / "run", "--template", job_file(
            tmp, "{#-\nparser: score_only\nprefill: 3\n-#}\n{% block user %}{{ question }}{% endblock %}", "t.jinja")],
        "template '" + "{tmp}/t.jinja': prefill must be a string with some text, got 3"),
    "reparse: not a run directory": (lambda tmp: ["reparse", tmp], "is not a run directory"),
    "reparse: unknown parser": (lambda tmp: ["reparse", tmp / "run", "--parser", "nope"], "unknown parser 'nope'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_line(tmp_path, case):
    args, expected = CASES[case]
    if case.startswith("reparse: unknown"):
        assert invoke("score", *SAMPLE, "--out", tmp_path / "run").exit_code == 0
    assert_one_line_error(invoke(*args(tmp_path)), expected.format(tmp=tmp_path))
    assert not (tmp_path / "run" / "judgments.sqlite").exists() or case.startswith("reparse")


def test_out_on_a_read_only_filesystem(tmp_path, make_readonly):
    (tmp_path / "ro").mkdir()
    folder = make_readonly(tmp_path / "ro")
    assert_one_line_error(invoke("score", *SAMPLE, "--out", folder / "run"), "Read-only file system")


def test_a_full_disk_while_scoring_says_so_and_leaves_nothing_half_written(tmp_path, small_fs):
    """Input too large for the disk: the items table cannot be written; one line, no temporary file left."""
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "padding": os.urandom(400).hex()} for i in range(800)]
    data = write_jsonl(tmp_path / "big.jsonl", rows)
    result = invoke("score", data, "--out", small_fs / "run")
    assert_one_line_error(result, "No space left on device")
    assert not [p.name for p in (small_fs / "run").iterdir() if p.name.endswith(".tmp")]
