"""`curate split` on what a run really holds: unfinished runs, calibrations older than the scores,
calibrations onto a pass rate, curricula by an input field or a solve run, and benchmarks with different fields."""

import itertools
import json
import sqlite3

import polars as pl
import pytest
from conftest import assert_one_line_error, invoke, write_jsonl
from fakes import ScriptedBackend

from curate.config import RunConfig
from curate.engine import score, solve

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu",
         "xi", "omicron", "pi", "rho", "sigma"]
ROWS = [{"id": f"q{i:02d}", "question": f"Problem {i}: {' '.join(WORDS[i % 7:i % 7 + 9])} counts {i} ways.",
         "level": i % 5 + 1, "solve_rate": round(1 - (i % 5) / 5 - (i % 3) / 50, 3), "steps": str(i % 5 * 6 + 1)}
        for i in range(30)]
FLAKY = {"q03", "q08", "q14", "q21"}


def make_run(tmp_path, answer=None, rows=ROWS, **settings):
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    level = {r["id"]: r["level"] for r in rows}
    backend = ScriptedBackend(answer or (lambda item_id, idx: (f"<score>{level[item_id]}</score>", "stop")))
    score(RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"), "template": "difficulty/intensity",
                                 "max_failure_fraction": 1.0, **settings}), backend=backend)
    return tmp_path / "run"


def split_json(*args) -> dict:
    result = invoke("split", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_unfinished_run_counts_never_judged_and_failed_items_apart(tmp_path, caplog):
    """Items of an interrupted run were counted as unscored without a word."""
    run = make_run(tmp_path, answer=lambda item_id, idx: RuntimeError("HTTP 500") if item_id == "q05" else
                   ("<score>2</score>", "stop"))
    with sqlite3.connect(run / "judgments.sqlite") as db:  # as if the run had been killed before these
        db.execute("DELETE FROM judgments WHERE item_id IN ('q01', 'q02', 'q07')")
    manifest = split_json(run, "--out", tmp_path / "split")
    assert manifest["counts"]["unscored"] == 4
    assert manifest["unscored_reasons"] == {"judgments_failed": 1, "not_judged": 3}
    unscored = pl.read_parquet(tmp_path / "split" / "unscored.parquet")
    assert dict(unscored.select("item_id", "unscored_reason").rows()) == {
        "q01": "not_judged", "q02": "not_judged", "q05": "judgments_failed", "q07": "not_judged"}
    assert any("the run is incomplete: 3 of 30 items were never judged" in note and "curate score" in note
               for note in manifest["notes"])
    assert "--retry-failed" in " ".join(manifest["notes"])
    assert "the run is incomplete" in caplog.text  # logged too, so the command line shows it


def test_calibrated_scores_cover_items_scored_after_the_fit(tmp_path):
    """A calibration fitted before --retry-failed sent every item scored since to `unscored`."""
    level = {r["id"]: r["level"] for r in ROWS}
    run = make_run(tmp_path, answer=lambda item_id, idx: RuntimeError("HTTP 500") if item_id in FLAKY else
                   (f"<score>{level[item_id]}</score>", "stop"))
    assert invoke("stats", run, "--calibrate", "level", "--resamples", "0").exit_code == 0
    make_run(tmp_path, retry_failed=True)
    manifest = split_json(run, "--out", tmp_path / "split", "--score", "calibrated")
    assert manifest["counts"]["unscored"] == 0 and manifest["counts"]["sft"] + manifest["counts"]["rl"] == 30
    calibration = manifest["calibration"]
    assert (calibration["target"], calibration["score"], calibration["increasing"]) == ("level", "mean", True)
    assert (calibration["n_fit"], calibration["n_scored_at_fit"], calibration["n_scored_now"],
            calibration["n_new_since_fit"]) == (26, 26, 30, 4)
    assert any("4 item(s) were scored" in note and "--calibrate level" in note for note in manifest["notes"])
    rl = pl.read_parquet(tmp_path / "split" / "rl.parquet")
    assert set(rl["item_id"]) == {r["id"] for r in ROWS if r["level"] > 3}  # the retried items are split too


def test_a_calibration_onto_a_pass_rate_keeps_rl_the_harder_side(tmp_path):
    """Against a pass rate the isotonic map falls with the score; split sent the easiest items to RL."""
    run = make_run(tmp_path)
    assert invoke("stats", run, "--calibrate", "solve_rate", "--resamples", "0").exit_code == 0
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "s0", "--score", "calibrated"),
                          "the default τ = 3 is outside the scale of the 1 − predicted solve_rate")
    manifest = split_json(run, "--out", tmp_path / "split", "--score", "calibrated", "--quantile", "0.4",
                          "--stages", "2")
    assert manifest["score_meaning"].startswith("1 − predicted solve_rate") and "higher = harder" in \
        manifest["score_meaning"]
    assert manifest["calibration"]["increasing"] is False and manifest["score_scale"][1] <= 1
    sft, rl = (pl.read_parquet(tmp_path / "split" / f"{side}.parquet") for side in ("sft", "rl"))
    assert rl.height == 12 and rl["level"].min() > sft["level"].max()  # the hardest 40% (levels 4, 5)
    assert rl["solve_rate"].max() < sft["solve_rate"].min()
    stages = [pl.read_parquet(tmp_path / "split" / "stages" / f"stage_{i}.parquet") for i in (1, 2)]
    assert stages[0]["score"].max() <= stages[1]["score"].min() and stages[1]["level"].to_list() == [5] * 6
    assert invoke("export", tmp_path / "split", "--format", "hf", "--out", tmp_path / "hf").exit_code == 0
    assert "1 − predicted solve_rate" in (tmp_path / "hf" / "README.md").read_text()


def test_stages_by_any_numeric_input_field_in_the_direction_given(tmp_path):
    """--stage-by took only `score` or a column literally named pass_rate."""
    run = make_run(tmp_path)
    manifest = split_json(run, "--out", tmp_path / "a", "--tau", "1", "--stages", "2", "--stage-by", "solve_rate",
                          "--harder-when", "low")
    assert (manifest["stage_by"], manifest["harder_when"]) == ("solve_rate", "low")
    first, second = (pl.read_parquet(tmp_path / "a" / "stages" / f"stage_{i}.parquet") for i in (1, 2))
    assert first["solve_rate"].min() >= second["solve_rate"].max()
    split_json(run, "--out", tmp_path / "b", "--tau", "1", "--stages", "2", "--stage-by", "steps",  # numbers as text
               "--harder-when", "high")
    first, second = (pl.read_parquet(tmp_path / "b" / "stages" / f"stage_{i}.parquet") for i in (1, 2))
    assert first["steps"].cast(int).max() <= second["steps"].cast(int).min()
    assert first["steps"].dtype == pl.String  # ranked as numbers, written as the input had it


def test_stages_by_a_field_that_rl_items_lack_is_one_line(tmp_path):
    rows = [{**r, "solve_rate": None} if r["id"] in ("q04", "q09", "q13") else r for r in ROWS]
    write_jsonl(tmp_path / "data.jsonl", rows)
    level = {r["id"]: r["level"] for r in ROWS}
    score(RunConfig.from_flat({"source": str(tmp_path / "data.jsonl"), "out": str(tmp_path / "run"),
                                 "template": "difficulty/intensity"}),
          backend=ScriptedBackend(lambda item_id, idx: (f"<score>{level[item_id]}</score>", "stop")))
    assert_one_line_error(invoke("split", tmp_path / "run", "--out", tmp_path / "split", "--stages", "2",
                                 "--stage-by", "solve_rate", "--harder-when", "low"),
                          "3 of 12 RL item(s) lack 'solve_rate'")
    assert not (tmp_path / "split").exists()


ANSWERED = [{**r, "answer": "3"} for r in ROWS]
RIGHT = {r["id"]: i % 4 for i, r in enumerate(ROWS)}  # right rollouts of 4: pass rates 0, 1/4, 1/2, 3/4


def make_solve_run(tmp_path, rows=ANSWERED, failing=(), right=RIGHT, name="solve"):
    """A solve run over `rows`: item q's first right[q] of 4 rollouts answer 3 (the reference), the others 4;
    every rollout of an item in `failing` is an error."""
    def answer(item_id: str, idx: int):
        if item_id in failing:
            return RuntimeError("HTTP 500")
        return (f"So \\boxed{{{3 if idx < right[item_id] else 4}}}", "stop")

    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    solve(RunConfig.from_flat({"source": str(data), "out": str(tmp_path / name), "model": name,
                                 "template": "solve/step_by_step", "verify": "gsm8k", "samples": 4, "temperature": 1.0,
                                 "max_failure_fraction": 1.0}), backend=ScriptedBackend(answer))
    return tmp_path / name


def test_stages_by_a_solve_runs_pass_rate_with_tau_on_the_judge_score(tmp_path):
    """--stage-by took only `score` or an input field: a measured pass rate had to be copied into the input."""
    run, solved = make_run(tmp_path, rows=ANSWERED), make_solve_run(tmp_path)
    manifest = split_json(run, "--out", tmp_path / "split", "--stages", "3", "--stage-by", solved)
    assert (manifest["stage_by"], manifest["harder_when"]) == ("solve_pass_rate", "low")
    assert {k: manifest["stage_run"][k] for k in ("run_dir", "task", "model", "verifier", "samples")} == {
        "run_dir": str(solved), "task": "solve", "model": "solve", "verifier": "gsm8k", "samples": 4}
    sft, rl = (pl.read_parquet(tmp_path / "split" / f"{side}.parquet") for side in ("sft", "rl"))
    assert manifest["tau"] == 3 and (rl["score"] > 3).all() and (sft["score"] <= 3).all()  # the judge's split
    for side in (sft, rl):  # every item carries its measured pass rate
        assert side["solve_pass_rate"].to_list() == [RIGHT[i] / 4 for i in side["item_id"]]
    stages = [pl.read_parquet(tmp_path / "split" / "stages" / f"stage_{i}.parquet") for i in (1, 2, 3)]
    assert sum(stage.height for stage in stages) == rl.height
    for easier, harder in itertools.pairwise(stages):  # a lower pass rate is harder: later
        assert easier["solve_pass_rate"].min() >= harder["solve_pass_rate"].max()
    assert stages[0]["solve_pass_rate"].max() > stages[2]["solve_pass_rate"].min()  # not all ties
    assert invoke("export", tmp_path / "split", "--format", "hf", "--out", tmp_path / "hf").exit_code == 0
    assert f"3 stages by the pass rate of the solve run `{solved}`" in (tmp_path / "hf" / "README.md").read_text()


def test_rl_items_without_a_measured_pass_rate_are_refused_by_reason(tmp_path):
    """An RL item the solve run lacks, has not reached, or could not measure has no place in a curriculum."""
    run = make_run(tmp_path, rows=ANSWERED)
    rl_ids = [r["id"] for r in ROWS if r["level"] > 3]
    solved = make_solve_run(tmp_path, rows=[r for r in ANSWERED if r["id"] != rl_ids[0]], failing={rl_ids[1]})
    with sqlite3.connect(solved / "judgments.sqlite") as db:  # as if the run had been killed before these
        db.execute("DELETE FROM judgments WHERE item_id = ?", (rl_ids[2],))
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "split", "--stages", "2", "--stage-by", solved),
                          f"3 of {len(rl_ids)} RL items have no measured pass rate in the solve run {solved} "
                          "(1 no_countable_attempt, 1 not_in_solve_run, 1 not_solved_yet)")
    assert not (tmp_path / "split").exists()


def test_an_unfinished_solve_run_orders_the_stages_with_a_note(tmp_path):
    run, solved = make_run(tmp_path, rows=ANSWERED), make_solve_run(tmp_path)
    with sqlite3.connect(solved / "judgments.sqlite") as db:  # as if the run had been killed before these
        db.execute("DELETE FROM judgments WHERE item_id = 'q04' AND sample_idx >= 2")
    manifest = split_json(run, "--out", tmp_path / "split", "--stages", "2", "--stage-by", solved)
    assert f"solve run {solved} is unfinished: 1 of 30 items have fewer than its 4 rollouts (e.g. 'q04', 2 stored): " \
           "its pass rates count the rollouts stored so far" in manifest["notes"]


WEAKER = {item: 4 if right == 3 else right for item, right in RIGHT.items()}  # right every time: all_correct
STRONGER = {item: min(4, right + 1 + i % 2) for i, (item, right) in enumerate(RIGHT.items())}


def make_irt_dir(tmp_path, rows=ANSWERED, failing=()):
    """An IRT directory (`curate irt`) of two solve runs over `rows`; `failing` items fail every rollout in both."""
    runs = [make_solve_run(tmp_path, rows, failing, right, name) for right, name in ((WEAKER, "weak"),
                                                                                      (STRONGER, "strong"))]
    assert invoke("irt", *runs, "--out", tmp_path / "irt").exit_code == 0
    return tmp_path / "irt"


def test_stages_by_an_irt_fits_difficulty_with_tau_on_the_judge_score(tmp_path, caplog):
    """IRT difficulties could order no curriculum: `--stage-by` took a field or one solve run only."""
    run, irt = make_run(tmp_path, rows=ANSWERED), make_irt_dir(tmp_path)
    manifest = split_json(run, "--out", tmp_path / "split", "--stages", "3", "--stage-by", irt)
    assert (manifest["stage_by"], manifest["harder_when"], manifest["stage_run"]) == ("irt_difficulty", "high", None)
    assert manifest["stage_irt"]["irt_dir"] == str(irt)
    assert [r["name"] for r in manifest["stage_irt"]["runs"]] == ["weak", "strong"]
    fitted = pl.read_parquet(irt / "irt_items.parquet").select("item_id", "difficulty", "irt_status")
    sft, rl = (pl.read_parquet(tmp_path / "split" / f"{side}.parquet") for side in ("sft", "rl"))
    assert manifest["tau"] == 3 and (rl["score"] > 3).all()  # the judge's split
    for side in (sft, rl):  # every item carries its difficulty and status
        assert side.select("item_id", pl.col("irt_difficulty").alias("difficulty"), "irt_status").sort(
            "item_id").equals(fitted.filter(pl.col("item_id").is_in(side["item_id"].to_list())))
    stages = [pl.read_parquet(tmp_path / "split" / "stages" / f"stage_{i}.parquet") for i in (1, 2, 3)]
    assert sum(stage.height for stage in stages) == rl.height
    for easier, harder in itertools.pairwise(stages):  # a higher difficulty is harder: later
        assert easier["irt_difficulty"].max() <= harder["irt_difficulty"].min()
    solved_by_all = int((rl["irt_status"] == "all_correct").sum())
    assert solved_by_all and any(note.startswith(f"{solved_by_all} of the {rl.height} RL items were answered right "
                                                 "by every model of the crowd (all_correct)")
                                 for note in manifest["notes"])
    result = invoke("split", run, "--out", tmp_path / "again", "--stages", "3", "--stage-by", irt)
    assert result.exit_code == 0 and "IRT difficulty" in " ".join(result.stdout.replace("│", " ").split())


def test_rl_items_the_irt_fit_cannot_place_are_refused_by_reason(tmp_path):
    run = make_run(tmp_path, rows=ANSWERED)
    rl_ids = [r["id"] for r in ROWS if r["level"] > 3]
    irt = make_irt_dir(tmp_path, rows=[r for r in ANSWERED if r["id"] != rl_ids[0]], failing={rl_ids[1]})
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "split", "--stages", "2", "--stage-by", irt),
                          f"2 of {len(rl_ids)} RL items have no IRT difficulty in {irt} (1 no_countable_answer, 1 "
                          "not_in_irt_fit), so the curriculum cannot place them")
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "split", "--stages", "2", "--stage-by", irt,
                                 "--harder-when", "low"), "higher for harder items: drop --harder-when low")
    assert not (tmp_path / "split").exists()


def test_an_irt_fit_of_other_items_is_refused(tmp_path):
    run = make_run(tmp_path, rows=ANSWERED)
    irt = make_irt_dir(tmp_path, rows=[{**r, "question": "Another?"} if r["id"] == "q04" else r for r in ANSWERED])
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "split", "--stages", "2", "--stage-by", irt),
                          f"--stage-by {irt}: 1 of the 30 ids both hold name different items")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "irt_items.parquet").write_bytes(b"")
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "split", "--stages", "2", "--stage-by",
                                 tmp_path / "fake"), "is not an IRT directory (it needs irt_items.parquet and a "
                                                     "manifest.json of kind 'irt')")


BENCHMARK_QUESTION = "a train leaves the station at noon at sixty miles per hour toward a city far away"


@pytest.mark.parametrize("named", [False, True])
def test_benchmarks_with_different_question_fields_in_one_split(tmp_path, named):
    """One --benchmark-field applied to every file, so gsm8k (`question`) and MATH-500 (`problem`) could not mix."""
    rows = ROWS + [{"id": "leak1", "question": "Rephrased: " + BENCHMARK_QUESTION + "?", "level": 2},
                   {"id": "leak2", "question": f"Problem 99: {' '.join(WORDS)} and more.", "level": 4}]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    level = {r["id"]: r["level"] for r in rows}
    score(RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"),
                                 "template": "difficulty/intensity"}),
          backend=ScriptedBackend(lambda item_id, idx: (f"<score>{level[item_id]}</score>", "stop")))
    gsm = write_jsonl(tmp_path / "gsm.jsonl", [{"question": BENCHMARK_QUESTION, "answer": "2"}])
    math = write_jsonl(tmp_path / "math.jsonl", [{"problem": " ".join(WORDS), "answer": "x"},
                                                 {"problem": "short one", "answer": "y"}])
    files = [f"{gsm}:question", f"{math}:problem"] if named else [str(gsm), str(math)]
    manifest = split_json(tmp_path / "run", "--out", tmp_path / "split", *(a for f in files for a in
                                                                           ("--decontaminate", f)))
    removed = [json.loads(line)["item_id"] for line in (tmp_path / "split" / "removed.jsonl").read_text().splitlines()]
    assert sorted(removed) == ["leak1", "leak2"]
    assert manifest["hygiene"]["benchmarks"] == [
        {"path": str(gsm), "field": "question", "texts": 1, "field_from": "FILE:FIELD" if named else "detected"},
        {"path": str(math), "field": "problem", "texts": 2, "field_from": "FILE:FIELD" if named else "detected"}]
