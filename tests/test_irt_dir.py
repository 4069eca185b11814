"""`curate irt SOLVE_RUN SOLVE_RUN ... --out IRT_DIR`: Rasch difficulties from solve runs alone, written where they
can be read (IRT could only be fitted through a judge run, and its per-item difficulties went to no file). Each
number is checked against a fit of the stored rollouts done here; the solvers are scripted per item and sample."""

import json
import shutil
import sqlite3

import numpy as np
import polars as pl
import pytest
from conftest import assert_one_line_error, invoke, write_jsonl
from fakes import ScriptedBackend

import curate
from curate.config import RunConfig
from curate.engine import solve
from curate.stats.irt import fit_rasch

# Right rollouts of 4 per solver; "errors": every rollout of that solver fails in the backend.
RIGHT = {"a": (1, 3, 4), "b": (0, 2, 4), "c": (0, 0, 1), "d": (4, 4, 4), "e": (0, 0, 0), "f": (2, 3, 4),
         "g": (0, 2, 4), "h": ("errors", "errors", "errors")}
SOLVERS = ("small", "middle", "large")
ROWS = [{"id": item, "question": f"What is {k} - {k} + 3?", "answer": "3"} for k, item in enumerate(RIGHT)]


def answers(solver: int):
    def answer(item_id: str, sample_idx: int):
        right = RIGHT[item_id][solver]
        if right == "errors":
            return RuntimeError("HTTP 500")
        return (f"\\boxed{{{3 if sample_idx < right else 4}}}", "stop")
    return answer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("irt-runs")
    data = write_jsonl(folder / "data.jsonl", ROWS)
    for k, model in enumerate(SOLVERS):
        solve(RunConfig.from_flat({"source": str(data), "out": str(folder / model), "backend": "openai",
                                   "model": model, "base_url": "http://127.0.0.1:9/v1",
                                   "template": "solve/step_by_step", "verify": "gsm8k", "samples": 4,
                                   "temperature": 1.0, "max_failure_fraction": 1.0}),
              backend=ScriptedBackend(answers(k)))
    return [folder / model for model in SOLVERS]


def hand_fit(runs):
    responses = pl.concat([curate.load_judgments(run).filter(pl.col("status").is_in(["correct", "wrong"])).select(
        "item_id", pl.lit(run.name).alias("model"), (pl.col("status") == "correct").cast(pl.Int64).alias("correct"))
        for run in runs])
    return fit_rasch(responses)


def test_solve_runs_alone_give_every_items_difficulty_interval_and_status(runs, tmp_path):
    result = invoke("irt", *runs, "--out", tmp_path / "irt")
    assert result.exit_code == 0, result.output
    items = pl.read_parquet(tmp_path / "irt" / "irt_items.parquet")
    assert items.columns == ["item_id", "difficulty", "difficulty_se", "difficulty_low", "difficulty_high", "answers",
                             "correct", "irt_status", "question", "reference", "choices"]
    assert items["item_id"].to_list() == sorted(RIGHT)
    hand = hand_fit(runs).items
    fitted = items.filter(pl.col("item_id") != "h")
    for column in ("difficulty", "difficulty_se"):
        np.testing.assert_allclose(fitted[column], hand[column], rtol=1e-9)
    np.testing.assert_allclose(fitted["difficulty_high"] - fitted["difficulty"], 1.959964 * fitted["difficulty_se"],
                               rtol=1e-6)
    np.testing.assert_allclose(fitted["difficulty"] - fitted["difficulty_low"], 1.959964 * fitted["difficulty_se"],
                               rtol=1e-6)
    status = dict(items.select("item_id", "irt_status").iter_rows())
    assert (status["d"], status["e"], status["a"]) == ("all_correct", "all_wrong", "measured")
    # every rollout failed: explicit, with no difficulty, never a default number
    unplaced = items.filter(pl.col("item_id") == "h").row(0, named=True)
    assert unplaced["irt_status"] == "no_countable_answer" and unplaced["difficulty"] is None
    assert unplaced["difficulty_low"] is None and unplaced["answers"] == 0
    assert items.filter(pl.col("item_id") == "b")["difficulty"][0] == items.filter(pl.col("item_id") == "g")[
        "difficulty"][0]  # the same answers: one difficulty, exactly
    models = pl.read_parquet(tmp_path / "irt" / "irt_models.parquet")
    assert models.select("model", "run_dir").rows() == [(m, str(run)) for m, run in zip(SOLVERS, runs)]
    assert models["ability"].to_list() == sorted(models["ability"].to_list())  # the larger, the abler
    manifest = json.loads((tmp_path / "irt" / "manifest.json").read_text())
    assert manifest["kind"] == "irt" and [run["run_dir"] for run in manifest["runs"]] == [str(r) for r in runs]
    assert manifest["settings"] == {"prior_sd": 3.0, "tolerance": 1e-6, "max_iterations": 200}
    assert manifest["counts"] == {"measured": 5, "all_correct": 1, "all_wrong": 1, "no_countable_answer": 1}
    assert any("1 of the 8 items have no countable answer in any run" in note for note in manifest["notes"])
    assert "measured" in result.stdout and "difficulties:" in result.stdout


def test_the_same_runs_and_settings_give_the_same_bytes_and_the_settings_are_used(runs, tmp_path):
    for name in ("one", "two"):
        assert invoke("irt", *runs, "--out", tmp_path / name).exit_code == 0
    for name in ("irt_items.parquet", "irt_models.parquet", "manifest.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    manifest = json.loads(invoke("irt", *runs, "--out", tmp_path / "wide", "--prior-sd", 6, "--json").stdout)
    assert manifest["settings"]["prior_sd"] == 6.0
    wide, narrow = (pl.read_parquet(tmp_path / name / "irt_items.parquet") for name in ("wide", "one"))
    assert wide.filter(pl.col("item_id") == "e")["difficulty"][0] > narrow.filter(pl.col("item_id") == "e")[
        "difficulty"][0] + 1  # set by the prior


def test_an_unfinished_run_is_fitted_as_it_is_with_a_note(runs, tmp_path, caplog):
    unfinished = shutil.copytree(runs[1], tmp_path / "middle")
    with sqlite3.connect(unfinished / "judgments.sqlite") as connection:
        connection.execute("DELETE FROM judgments WHERE item_id = 'a' AND sample_idx >= 1")
    connection.close()
    manifest = json.loads(invoke("irt", runs[0], unfinished, runs[2], "--out", tmp_path / "irt", "--json").stdout)
    note = (f"solve run {unfinished} is unfinished: 1 of 8 items have fewer than its 4 rollouts (e.g. 'a', 1 stored): "
            "the fit counts the rollouts stored so far")
    assert any(n.startswith(note) for n in manifest["notes"])
    assert any(r.getMessage().startswith(note) for r in caplog.records if r.levelname == "WARNING")
    items = pl.read_parquet(tmp_path / "irt" / "irt_items.parquet")
    assert items.filter(pl.col("item_id") == "a")["answers"][0] == 4 + 1 + 4


@pytest.mark.parametrize(("args", "message"), [
    (lambda runs, tmp: [runs[0]], "curate irt needs at least two solve runs, each one model of the crowd, but got 1"),
    (lambda runs, tmp: [runs[0], runs[0]], "is given twice (solvers 1 and 2)"),
    (lambda runs, tmp: [runs[0], runs[0].parent], "is not a run directory (it has no manifest.json)"),
    (lambda runs, tmp: [*runs, "--prior-sd", 0], "prior_sd must be > 0"),
])
def test_bad_inputs_are_one_line_errors(runs, tmp_path, args, message):
    assert_one_line_error(invoke("irt", *args(runs, tmp_path), "--out", tmp_path / "irt"), message)
    assert not (tmp_path / "irt").exists()


def test_out_inside_a_run_or_over_files_is_refused(runs, tmp_path):
    assert_one_line_error(invoke("irt", *runs, "--out", runs[0] / "irt"), f"is inside the solve run it reads ({runs[0]})")
    (tmp_path / "irt").mkdir()
    (tmp_path / "irt" / "old.txt").write_text("keep")
    assert_one_line_error(invoke("irt", *runs, "--out", tmp_path / "irt"), "exists and is not empty; pass --overwrite")
    assert invoke("irt", *runs, "--out", tmp_path / "irt", "--overwrite").exit_code == 0
    assert not (tmp_path / "irt" / "old.txt").exists()
