"""`curate stats` and `curate compare` given a user's mistake: one line saying what, where and what to do."""

import json
import shutil

import pytest
from conftest import assert_one_line_error, invoke, write_jsonl
from fakes import ScriptedBackend

from curate.config import RunConfig
from curate.engine import score

ROWS = [{"id": f"q{i}", "question": f"Problem {i}", "level": i % 5 + 1, "level_text": f"Level {i % 5 + 1}",
         "level_csv": str(i % 5 + 1), "meta": {"source": "book"}, "percent": 20.0 * (i % 5), "solved": i % 2 == 0}
        for i in range(12)]


def make_run(folder, rows, name):
    data = write_jsonl(folder / f"{name}.jsonl", rows)
    config = RunConfig.from_flat({"source": str(data), "out": str(folder / name), "template": "difficulty/intensity",
                                    "samples": 2, "temperature": 1.0})
    score(config, backend=ScriptedBackend(lambda item_id, idx: (f"{idx}: <score>{int(item_id[1:]) % 5 + 1}</score>",
                                                                "stop")))
    return folder / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run, and a run over other problems numbered with the same ids."""
    folder = tmp_path_factory.mktemp("runs")
    other = [{**row, "question": f"Another data set's problem {i}"} for i, row in enumerate(ROWS)]
    return make_run(folder, ROWS, "run"), make_run(folder, other, "other")


def not_a_run(tmp, content=None, files=()):
    """A folder that looks like a run directory in some ways only."""
    folder = tmp / "folder"
    folder.mkdir()
    if content is not None:
        (folder / "manifest.json").write_text(content)
    for name in files:
        (folder / name).write_bytes(b"")
    return folder


def a_file(tmp):
    path = tmp / "notes.txt"
    path.write_text("x")
    return path


CASES = {
    "--reference holding text": (
        lambda run, other, tmp: ["stats", run, "--reference", "level_text"],
        ("--reference 'level_text' must hold numeric labels like 1..5, but it holds text that is not a number in 12 "
         "of 12 items (e.g. 'Level 1' for item 'q0')")),
    "--reference holding a struct": (
        lambda run, other, tmp: ["stats", run, "--reference", "meta"],
        "--reference 'meta' must hold numeric labels like 1..5, but it holds Struct"),
    "--reference unknown": (
        lambda run, other, tmp: ["stats", run, "--reference", "grade"], "--reference 'grade': items have no field"),
    "--pass-rate outside 0..1": (
        lambda run, other, tmp: ["stats", run, "--pass-rate", "percent"],
        "--pass-rate 'percent' must lie in 0..1, but 9 of 12 values do not (e.g. 20.0 for item 'q1')"),
    "--pass-rate holding booleans": (
        lambda run, other, tmp: ["stats", run, "--pass-rate", "solved"],
        "--pass-rate 'solved' must hold pass rates in 0..1, but it holds Boolean values (e.g. True for item 'q0')"),
    "--calibrate holding text": (
        lambda run, other, tmp: ["stats", run, "--calibrate", "level_text"],
        "--calibrate 'level_text' must hold numbers (a reference scale or a pass rate), but it holds text"),
    "--score expected without logprobs": (
        lambda run, other, tmp: ["stats", run, "--score", "expected"],
        "needs logprob judgments and none of the run's 12 items has one; score with --top-logprobs 20 --max-tokens 1"),
    "--score unknown": (lambda run, other, tmp: ["stats", run, "--score", "best"], "unknown score 'best'"),
    "--unsolved-at outside 0..1": (
        lambda run, other, tmp: ["stats", run, "--pass-rate", "level", "--unsolved-at", "2"],
        "--unsolved-at 2.0 must lie in 0..1"),
    "--report is a folder": (
        lambda run, other, tmp: ["stats", run, "--report", tmp], "is a folder; name the HTML file"),
    "--report names the .json": (
        lambda run, other, tmp: ["stats", run, "--report", tmp / "report.json"],
        "name the HTML file (e.g. report.html)"),
    "--report under a file": (
        lambda run, other, tmp: ["stats", run, "--report", a_file(tmp) / "out" / "report.html"],
        "notes.txt is a file, not a folder"),
    "stats: no such folder": (
        lambda run, other, tmp: ["stats", tmp / "nowhere"], "is not a run directory (it does not exist)"),
    "stats: a file": (lambda run, other, tmp: ["stats", a_file(tmp)], "is not a run directory (it is a file)"),
    "stats: a folder without a manifest": (
        lambda run, other, tmp: ["stats", not_a_run(tmp)], "is not a run directory (it has no manifest.json)"),
    "stats: a split folder": (
        lambda run, other, tmp: ["stats", not_a_run(tmp, json.dumps({"run": {"model": "m"}, "counts": {}}))],
        "its manifest.json holds no run identity (a split or export folder?)"),
    "stats: a manifest that is not JSON": (
        lambda run, other, tmp: ["stats", not_a_run(tmp, "{broken")], "its manifest.json holds no run identity"),
    "stats: an unfinished run": (
        lambda run, other, tmp: ["stats", not_a_run(tmp, json.dumps({"identity": {}}), ["judgments.sqlite"])],
        "is an unfinished run directory (no items.parquet)"),
    "compare: other items under the same ids": (
        lambda run, other, tmp: ["compare", run, other],
        ("12 of the 12 ids both runs hold name different items (question, reference or choices differ; e.g. id 'q0': "
         "'Problem 0' in")),
    "compare: not a run directory": (
        lambda run, other, tmp: ["compare", run, tmp / "nowhere"], "is not a run directory (it does not exist)"),
    "compare: --score expected without logprobs": (
        lambda run, other, tmp: ["compare", run, run, "--score", "expected"], "needs logprob judgments"),
    "compare: --report is a folder": (
        lambda run, other, tmp: ["compare", run, run, "--report", tmp], "is a folder; name the HTML file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_line(runs, tmp_path, case):
    args, expected = CASES[case]
    assert_one_line_error(invoke(*args(*runs, tmp_path)), expected)


def test_numbers_written_as_text_count_as_numbers(runs):
    """CSV inputs keep every cell as text: a level of "3" is the number 3."""
    result = invoke("stats", runs[0], "--reference", "level_csv", "--resamples", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reference"]["spearman"]["value"] == pytest.approx(1.0)


def test_read_only_run_and_report_folder(runs, tmp_path, make_readonly):
    """Calibrating writes into the run directory, a report into its folder: a read-only one is one line."""
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    make_readonly(run)
    assert_one_line_error(invoke("stats", run, "--calibrate", "level", "--resamples", "0"), "Read-only file system")
    assert_one_line_error(invoke("stats", run, "--resamples", "0", "--report", run / "report.html"),
                          "Read-only file system")
