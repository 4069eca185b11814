"""`curate stats` and `curate compare` given a user's mistake: one line saying what, where and what to do."""

import json
import shutil

import pytest
from conftest import assert_one_line_error, invoke, write_jsonl
from fakes import ScriptedBackend

from curate.config import RunConfig
from curate.engine import respond, score, solve
from curate.testing import FakeOpenAIServer

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


@pytest.fixture(scope="module")
def response_runs(runs, tmp_path_factory):
    """The judge run, and solve and respond runs, by name: over the judge's ids with other problems ("other"), over
    other ids ("elsewhere"), and a respond run."""
    folder = tmp_path_factory.mktemp("response_runs")
    other = write_jsonl(folder / "other.jsonl", [{"id": row["id"], "question": f"What is {i} + 3 - {i}?",
                                                   "answer": "3"} for i, row in enumerate(ROWS)])
    elsewhere = write_jsonl(folder / "elsewhere.jsonl", [{"id": f"z{i}", "question": f"What is {i} + 3 - {i}?",
                                                          "answer": "3"} for i in range(4)])
    made = {"judge": runs[0]}
    with FakeOpenAIServer(answer_format="boxed") as server:
        for name, data, make in (("solve_other", other, solve), ("solve_elsewhere", elsewhere, solve),
                                 ("solve_elsewhere_too", elsewhere, solve), ("respond", elsewhere, respond)):
            make(RunConfig.from_flat({"source": str(data), "out": str(folder / name), "backend": "openai",
                                      "base_url": server.base_url, "model": "solver", "template": "solve/step_by_step",
                                      "verify": "gsm8k", "samples": 2, "temperature": 1.0, "max_tokens": 64}))
            made[name] = folder / name
    return made


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
        ("12 of the 12 ids both hold name different items (question, reference or choices differ; e.g. id 'q0': "
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


MEASURED_CASES = {  # runs: the judge run and the response runs of the fixture, by name
    "stats on a solve run": (
        lambda runs, tmp: ["stats", runs["solve_other"]],
        "solve_other is a solve run, not a score run (curate score DATA --out RUN); with a solve run, check a judge "
        "run against it (`curate stats JUDGE_RUN --pass-rate RUN`"),
    "stats on a respond run": (
        lambda runs, tmp: ["stats", runs["respond"]],
        "respond is a respond run, not a score run (curate score DATA --out RUN); with a respond run, export its "
        "responses"),
    "compare with a solve run": (
        lambda runs, tmp: ["compare", runs["judge"], runs["solve_other"]],
        "solve_other is a solve run, not a score run"),
    "compare with a respond run": (
        lambda runs, tmp: ["compare", runs["respond"], runs["judge"]], "respond is a respond run, not a score run"),
    "--pass-rate a solve run over other items": (
        lambda runs, tmp: ["stats", runs["judge"], "--pass-rate", runs["solve_other"]],
        "12 of the 12 ids both hold name different items (question, reference or choices differ; e.g. id 'q0'"),
    "--pass-rate a solve run with no item in common": (
        lambda runs, tmp: ["stats", runs["judge"], "--pass-rate", runs["solve_elsewhere"]],
        "(12 scored) and measured in"),
    "--pass-rate a respond run": (
        lambda runs, tmp: ["stats", runs["judge"], "--pass-rate", runs["respond"]],
        "respond is a respond run, not a solve run (curate solve DATA"),
    "--pass-rate a judge run": (
        lambda runs, tmp: ["stats", runs["judge"], "--pass-rate", runs["judge"]],
        "is a score run, not a solve run (curate solve"),
    "--pass-rate a folder that is not a run": (
        lambda runs, tmp: ["stats", runs["judge"], "--pass-rate", tmp],
        "exists but holds no manifest.json, so it is not a run directory"),
    "--calibrate a respond run": (
        lambda runs, tmp: ["stats", runs["judge"], "--calibrate", runs["respond"]],
        "respond is a respond run, not a solve run (curate solve"),
    "--calibrate a solve run over other items": (
        lambda runs, tmp: ["stats", runs["judge"], "--calibrate", runs["solve_other"]],
        "12 of the 12 ids both hold name different items"),
    "--irt one run only": (
        lambda runs, tmp: ["stats", runs["judge"], "--irt", runs["solve_elsewhere"]],
        "--irt needs at least two solve runs, each one model of the crowd, but got 1"),
    "--irt one run twice": (
        lambda runs, tmp: ["stats", runs["judge"], "--irt", runs["solve_other"], "--irt", runs["solve_other"]],
        "is given twice (solvers 1 and 2); give each solver's solve run once"),
    "--irt a respond run": (
        lambda runs, tmp: ["stats", runs["judge"], "--irt", runs["solve_other"], "--irt", runs["respond"]],
        "respond is a respond run, not a solve run (curate solve"),
    "--irt solve runs over other items": (
        lambda runs, tmp: ["stats", runs["judge"], "--irt", runs["solve_other"], "--irt", runs["solve_elsewhere"]],
        "pass a run over the same items"),
    "--irt solve runs with no item in common": (
        lambda runs, tmp: ["stats", runs["judge"], "--irt", runs["solve_elsewhere"], "--irt",
                           runs["solve_elsewhere_too"]],
        "--irt: no item is both scored in"),  # each shares no id with the judge run, so none names another item
}


@pytest.mark.parametrize("case", list(MEASURED_CASES))
def test_one_line_about_measured_difficulty(response_runs, tmp_path, case):
    args, expected = MEASURED_CASES[case]
    assert_one_line_error(invoke(*args(response_runs, tmp_path), "--resamples", 0), expected)


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
