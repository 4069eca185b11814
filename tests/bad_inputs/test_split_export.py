"""Bad input to `curate split` and `curate export` → one `error:` line naming what, where and what to do;
no traceback, and nothing written or changed."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from conftest import assert_one_line_error, invoke, write_jsonl
from fakes import ScriptedBackend

from curate.config import RunConfig
from curate.engine import respond, score, solve

ROWS = [{"id": f"q{i:02d}", "question": f"Problem {i}: how many ways are there to pick {i} of {i + 3} things?",
         "level": i % 5 + 1, "solve_rate": None if i % 5 == 4 else 1 - (i % 5) / 5, "note": f"n{i}"}
        for i in range(20)]
TEACHER_FAILS = {"q00", "q05"}  # level 1: SFT items the respond run has no response for


def response_run(task, work: Path, name: str, rows: list[dict], **settings) -> None:
    """A solve or respond run whose scripted model answers "... \\boxed{3}" (an error for TEACHER_FAILS)."""
    def answer(item_id: str, idx: int):
        return RuntimeError("HTTP 500") if item_id in TEACHER_FAILS else ("So \\boxed{3}", "stop")

    write_jsonl(work / f"{name}.jsonl", rows)
    task(RunConfig.from_flat({"source": str(work / f"{name}.jsonl"), "out": str(work / name), "model": "teacher",
                              "template": "solve/step_by_step", "max_failure_fraction": 1.0, **settings}),
         backend=ScriptedBackend(answer))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A run, a split of it, and the files the cases point at."""
    work = tmp_path_factory.mktemp("split-bad-inputs")
    write_jsonl(work / "data.jsonl", ROWS)
    level = {r["id"]: r["level"] for r in ROWS}
    score(RunConfig.from_flat({"source": str(work / "data.jsonl"), "out": str(work / "run"),
                                 "template": "difficulty/intensity"}),
          backend=ScriptedBackend(lambda item_id, idx: (f"<score>{level[item_id]}</score>", "stop")))
    assert invoke("split", work / "run", "--out", work / "split").exit_code == 0
    (work / "file.txt").write_text("not a folder")
    (work / "full").mkdir()
    (work / "full" / "keep.txt").write_text("someone's file")
    (work / "bench").mkdir()
    write_jsonl(work / "bench" / "good.jsonl", [{"question": "What is two plus two?"}])
    (work / "bench" / "broken.jsonl").write_text('{"question": "ok"}\n{"question": oops}\n\n[1, 2]\n')
    write_jsonl(work / "bench" / "number.jsonl", [{"question": "fine"}, {"question": 5}])
    write_jsonl(work / "bench" / "both.jsonl", [{"question": "a", "problem": "b"}])
    write_jsonl(work / "bench" / "empty_text.jsonl", [{"problem": "fine"}, {"problem": "  "}, {"answer": "1"}])
    (work / "bench" / "no_rows.jsonl").write_text("")
    response_run(respond, work, "respond", ROWS)
    response_run(solve, work, "solve", ROWS, verify="gsm8k", samples=2, temperature=1.0)  # no reference: no rate
    other = [{**r, "question": f"Another problem {i}.", "answer": "3"} for i, r in enumerate(ROWS)]
    response_run(respond, work, "respond-other", other)
    response_run(solve, work, "solve-other", other, verify="gsm8k", samples=2, temperature=1.0)
    response_run(respond, work, "respond-elsewhere", [{**r, "id": f"r{i}"} for i, r in enumerate(ROWS)])
    shutil.copytree(work / "respond", work / "teachers" / "deep" / "respond")  # for --out folders that hold them
    shutil.copytree(work / "solve", work / "solvers" / "deep" / "solve")
    old = work / "old-choices"
    old.mkdir()
    (old / "manifest.json").write_text((work / "split" / "manifest.json").read_text())
    for name in ("sft", "rl", "unscored"):
        frame = pl.read_parquet(work / "split" / f"{name}.parquet")
        frame.with_columns(pl.lit(["x", "y"], pl.List(pl.String)).alias("choices")).write_parquet(
            old / f"{name}.parquet")
    return work


SPLIT_CASES = [
    ("out is the run", ["--out", "{run}"], "is the run directory it reads"),
    ("out inside the run", ["--out", "{run}/split", "--overwrite"], "is inside the run directory it reads"),
    ("out holds the run", ["--out", "{work}", "--overwrite"], "holds the run directory it reads"),
    ("out is a file", ["--out", "{work}/file.txt"], "is a file; choose a folder"),
    ("out is not empty", ["--out", "{work}/full"], "exists and is not empty; pass --overwrite"),
    ("τ and quantile", ["--tau", "2", "--quantile", "0.3"], "choose τ one way, not with --tau and --quantile"),
    ("quantile and budget", ["--quantile", "0.3", "--rl-budget", "5"], "choose τ one way"),
    ("τ off the scale", ["--tau", "7"], "τ = 7 is outside the scale of the mean judge score, 1..5"),
    ("quantile above 1", ["--quantile", "1.5"], "--quantile is the fraction of scored items for RL"),
    ("negative budget", ["--rl-budget", "-1"], "--rl-budget must be at least 0"),
    ("quantile lost in ties", ["--quantile", "0.1"],
     "--quantile 0.1 gives RL 0 of 20 scored items: 4 items tie at the top score 5, where RL may take 2"),
    ("budget lost in ties", ["--rl-budget", "3", "--per-domain"], "gives RL 0 of 20 scored items"),
    ("per-domain alone", ["--per-domain"], "--per-domain needs --quantile or --rl-budget"),
    ("no stages", ["--stages", "0"], "--stages must be at least 1, not 0"),
    ("no n-gram", ["--ngram", "0"], "--ngram must be at least 1, not 0"),
    ("unknown arm", ["--arms", "random,bogus"], "unknown arm(s) ['bogus']"),
    ("unknown score", ["--score", "best"], "unknown score 'best'"),
    ("expected score without logprobs", ["--score", "expected"],
     "--score expected needs logprob judgments and none of the run's 20 items has one"),
    ("no calibration", ["--score", "calibrated"], "has no calibration: run `curate stats"),
    ("stage field without direction", ["--stages", "2", "--stage-by", "solve_rate"],
     "--stage-by solve_rate needs --harder-when high or low"),
    ("score staged the wrong way", ["--stages", "2", "--harder-when", "low"],
     "--stage-by score needs no --harder-when"),
    ("stage field missing", ["--stages", "2", "--stage-by", "steps", "--harder-when", "high"],
     "--stage-by 'steps' is neither a field of the run's items nor the folder of a solve run or an IRT fit"),
    ("stage by a respond run", ["--stages", "2", "--stage-by", "{work}/respond"],
     "--stage-by {work}/respond is a respond run, not a solve run (curate solve DATA"),
    ("stage by a score run", ["--stages", "2", "--stage-by", "{run}"], "is a score run, not a solve run"),
    ("stage by a folder that is no run", ["--stages", "2", "--stage-by", "{work}/bench"],
     "--stage-by {work}/bench is not a run directory (it has no manifest.json); pass the --out folder of `curate solve`"),
    ("stage by a solve run the wrong way", ["--stages", "2", "--stage-by", "{work}/solve", "--harder-when", "high"],
     "orders the RL stages by the solve run's pass rate, which is lower for harder items: drop --harder-when high"),
    ("stage by a solve run over other items", ["--stages", "2", "--stage-by", "{work}/solve-other"],
     "--stage-by {work}/solve-other: 20 of the 20 ids both hold name different items"),
    ("stage by a solve run that measured nothing", ["--stages", "2", "--stage-by", "{work}/solve"],
     "8 of 8 RL items have no measured pass rate in the solve run {work}/solve (8 no_countable_attempt)"),
    ("stage by a solve run without stages", ["--stage-by", "{work}/solve"], "they need --stages"),
    ("out holds the solve run",
     ["--out", "{work}/solvers", "--overwrite", "--stages", "2", "--stage-by", "{work}/solvers/deep/solve"],
     "--out {work}/solvers holds the solve run it reads ({work}/solvers/deep/solve)"),
    ("stage field not numeric", ["--stages", "2", "--stage-by", "note", "--harder-when", "high"],
     "--stage-by 'note' must be numeric, but 20 item(s) hold text such as 'n0'"),
    ("stage field missing for RL items", ["--stages", "2", "--stage-by", "solve_rate", "--harder-when", "low"],
     "4 of 8 RL item(s) lack 'solve_rate'"),
    ("stage field without stages", ["--stage-by", "solve_rate", "--harder-when", "low"], "they need --stages"),
    ("benchmark missing", ["--decontaminate", "{work}/bench/nowhere.jsonl"], "does not exist"),
    ("benchmark lines unreadable", ["--decontaminate", "{work}/bench/broken.jsonl"],
     ("broken.jsonl: 2 unusable line(s): invalid JSON: Expecting value at line(s) 2; line is not a JSON object at "
      "line(s) 4")),
    ("benchmark text not a string", ["--decontaminate", "{work}/bench/number.jsonl"],
     "'question' is a JSON number, not a string at line(s) 2"),
    ("benchmark field named but absent", ["--decontaminate", "{work}/bench/good.jsonl:problem"],
     "good.jsonl has no field 'problem'"),
    ("benchmark field ambiguous", ["--decontaminate", "{work}/bench/both.jsonl"],
     "several of the fields ['question', 'problem', 'prompt'] found"),
    ("benchmark field absent", ["--decontaminate", "{work}/bench/good.jsonl", "--benchmark-field", "prompt"],
     "has no field 'prompt'"),
    ("benchmark text empty", ["--decontaminate", "{work}/bench/empty_text.jsonl"],
     "'problem' is missing or empty at row(s) 2, 3"),
    ("benchmark without rows", ["--decontaminate", "{work}/bench/no_rows.jsonl"], "holds no rows"),
]


def fill(args: list[str], work: Path) -> list[str]:
    return [a.format(run=work / "run", work=work) for a in args]


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))
            if not p.name.endswith(("-shm", "-wal"))}  # SQLite's shared memory, made by any reader


@pytest.mark.parametrize(("args", "expected"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES])
def test_split_bad_input_is_one_line(work, args, expected):
    before = tree(work)
    args = fill(args, work)
    out = [] if "--out" in args else ["--out", str(work / "new-split")]
    assert_one_line_error(invoke("split", work / "run", *out, *args), fill([expected], work)[0])
    assert tree(work) == before


def test_split_of_a_folder_that_is_not_a_score_run(work):
    assert_one_line_error(invoke("split", work / "split", "--out", work / "x"), "is not a run directory")
    assert_one_line_error(invoke("split", work / "nowhere", "--out", work / "x"), "is not a run directory")
    assert_one_line_error(invoke("split", work / "solve", "--out", work / "x"),
                          f"split: {work / 'solve'} is a solve run, not a score run (curate score DATA --out RUN); with "
                          "a solve run, check a judge run against it")
    assert_one_line_error(invoke("split", work / "respond", "--out", work / "x"),
                          "with a respond run, export its responses (`curate export SPLIT_DIR --responses RUN`)")
    assert not (work / "x").exists()


EXPORT_CASES = [
    ("a run, not a split", ["{run}", "--format", "hf", "--out", "{work}/x"],
     "is a run directory, not a split directory: split it first"),
    ("not a split", ["{work}/full", "--format", "hf", "--out", "{work}/x"], "is not a split directory"),
    ("unknown format", ["{split}", "--format", "csv", "--out", "{work}/x"],
     "choose from hf, parquet, jsonl, trl, verl"),
    ("out is the split", ["{split}", "--format", "jsonl", "--out", "{split}", "--overwrite"],
     "is the split directory it reads"),
    ("out inside the split", ["{split}", "--format", "jsonl", "--out", "{split}/export"],
     "is inside the split directory it reads"),
    ("out holds the split", ["{split}", "--format", "jsonl", "--out", "{work}", "--overwrite"],
     "holds the split directory it reads"),
    ("out is the run", ["{split}", "--format", "jsonl", "--out", "{run}", "--overwrite"], "is the run directory"),
    ("out is a file", ["{split}", "--format", "parquet", "--out", "{work}/file.txt"], "is a file"),
    ("out is not empty", ["{split}", "--format", "parquet", "--out", "{work}/full"], "pass --overwrite"),
    ("push without hf", ["{split}", "--format", "parquet", "--out", "{work}/x", "--push-to-hub", "org/name"],
     "--push-to-hub needs --format hf, not parquet"),
    ("push while offline", ["{split}", "--format", "hf", "--out", "{work}/x", "--push-to-hub", "org/name"],
     "--push-to-hub cannot upload while HF_HUB_OFFLINE is set"),
    ("trl without responses", ["{split}", "--format", "trl", "--out", "{work}/x"],
     "the sft split has no 'response' column"),
    ("unlabelled choices", ["{work}/old-choices", "--format", "verl", "--out", "{work}/x"],
     "`choices` are List(String), not labelled options"),
    ("responses from a score run", ["{split}", "--format", "trl", "--out", "{work}/x", "--responses", "{run}"],
     "--responses {run} is a score run, not a respond run (curate respond DATA"),
    ("responses from a solve run", ["{split}", "--format", "trl", "--out", "{work}/x", "--responses", "{work}/solve"],
     "is a solve run, not a respond run"),
    ("responses from no run", ["{split}", "--format", "trl", "--out", "{work}/x", "--responses", "{work}/full"],
     "--responses {work}/full is not a run directory"),
    ("responses over other items",
     ["{split}", "--format", "trl", "--out", "{work}/x", "--responses", "{work}/respond-other"],
     "--responses {work}/respond-other: 20 of the 20 ids both hold name different items"),
    ("responses over none of the items",
     ["{split}", "--format", "trl", "--out", "{work}/x", "--responses", "{work}/respond-elsewhere"],
     "holds none of the split's 20 SFT-side items (ids such as 'r0' there, 'q00' here)"),
    ("responses and a response field",
     ["{split}", "--format", "trl", "--out", "{work}/x", "--responses", "{work}/respond", "--response-field", "note"],
     "--responses and --response-field both name the SFT response"),
    ("skipping without responses", ["{split}", "--format", "trl", "--out", "{work}/x", "--skip-unanswered"],
     "--skip-unanswered leaves out SFT items without a kept response of --responses RUN"),
    ("out holds the respond run", ["{split}", "--format", "trl", "--out", "{work}/teachers", "--overwrite",
                                   "--responses", "{work}/teachers/deep/respond", "--skip-unanswered"],
     "--out {work}/teachers holds the respond run it reads ({work}/teachers/deep/respond)"),
    ("responses missing for some items",
     ["{split}", "--format", "jsonl", "--out", "{work}/x", "--responses", "{work}/respond"],
     "2 SFT-side item(s) have no kept response in the respond run {work}/respond (2 none_kept; rows by split: sft 2"),
]


@pytest.mark.parametrize(("args", "expected"), [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES])
def test_export_bad_input_is_one_line(work, args, expected):
    before = tree(work)

    def fill_export(text: str) -> str:
        return text.format(run=work / "run", split=work / "split", work=work)

    assert_one_line_error(invoke("export", *map(fill_export, args)), fill_export(expected))
    assert tree(work) == before


def test_the_split_still_works_after_all_that(work, tmp_path):
    """The fixture's run and split are sound: the cases above fail for their own reason only."""
    result = invoke("split", work / "run", "--out", tmp_path / "split", "--stages", "2", "--decontaminate",
                    f"{work}/bench/good.jsonl", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"sft": 12, "rl": 8, "unscored": 0}
    assert invoke("export", work / "split", "--format", "verl", "--out", tmp_path / "verl").exit_code == 0
    responses = invoke("export", work / "split", "--format", "trl", "--out", tmp_path / "trl", "--responses",
                       work / "respond", "--skip-unanswered")
    assert responses.exit_code == 0, responses.output
    assert len(pl.read_parquet(tmp_path / "trl" / "sft.parquet")) == 12 - len(TEACHER_FAILS)


def test_out_that_is_the_current_folder_is_refused(work, monkeypatch):
    (work / "here").mkdir(exist_ok=True)
    monkeypatch.chdir(work / "here")
    assert_one_line_error(invoke("split", work / "run", "--out", "."), "is or holds the current folder")
    assert_one_line_error(invoke("export", work / "split", "--format", "jsonl", "--out", "."),
                          "is or holds the current folder")
    assert list((work / "here").iterdir()) == []
