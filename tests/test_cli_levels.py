"""`curate levels`: the staged-RL levels of arXiv 2504.00829 from solve runs whose every rollout the test decides.
A scripted backend answers `\\boxed{3}` (right: every reference is 3) or `\\boxed{4}` (wrong) per solver, item and
sample, from the table EXAMPLE, so that each branch of the paper's rules is hit through the real engine and store."""

import json
import shutil
import sqlite3

import polars as pl
import pytest
import typer
from conftest import assert_one_line_error, write_jsonl
from fakes import ScriptedBackend
from typer.testing import CliRunner

from curate.cli.levels import levels
from curate.config import RunConfig
from curate.engine import score, solve

SOLVERS = ("r1-1.5b", "r1-7b", "r1-32b", "r1")  # smallest first; the paper drops what DeepSeek-R1 never solves
# Correct rollouts of 4 per solver, in SOLVERS order; "errors": every rollout fails in the backend.
EXAMPLE = {
    "a": (2, 4, 4, 0),  # level 1: small partial; level 3 candidate (large solves it); R1 never solves it
    "b": (0, 4, 4, 4),  # level 2: small fails, middle solves all; candidate
    "c": (0, 1, 4, 4),  # level 2: small fails, middle partial; candidate
    "d": (3, 2, 3, 4),  # level 1, and level 2 as both partial; candidate
    "e": (4, 4, 0, 4),  # level 3: large fails
    "f": (0, 0, 0, 2),  # no distilled solver solves it: dropped, unless only R1 decides (then level 3, large fails)
    "g": (4, 4, 4, 4),  # only a level-3 candidate
    "h": (0, 0, 2, 4),  # only a level-3 candidate
    "i": ("errors", 1, 1, 4),  # small has no countable attempt: dropped
}
ROWS = [{"id": item, "question": f"What is {k} - {k} + 3?", "answer": "3", "level": k % 5 + 1, "subject": "Algebra"}
        for k, item in enumerate(EXAMPLE)]
APP = typer.Typer(add_completion=False)
APP.command()(levels)


def run_levels(*args):
    return CliRunner().invoke(APP, [str(a) for a in args])


def answers(solver: int):
    def answer(item_id: str, sample_idx: int):
        correct = EXAMPLE[item_id][solver]
        if correct == "errors":
            return RuntimeError("HTTP 500")
        return ("Adding up the steps.\n\\boxed{3}" if sample_idx < correct else "Adding up.\n\\boxed{4}", "stop")
    return answer


def run_config(data, out, model: str, samples: int = 4) -> RunConfig:
    return RunConfig.from_flat({"source": str(data), "out": str(out), "backend": "openai", "model": model,
                                "base_url": "http://127.0.0.1:9/v1", "template": "solve/step_by_step",
                                "verify": "gsm8k", "samples": samples, "temperature": 1.0,
                                "max_failure_fraction": 1.0})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished solve run per solver of SOLVERS, each over ROWS."""
    folder = tmp_path_factory.mktemp("solve-runs")
    data = write_jsonl(folder / "data.jsonl", ROWS)
    for k, model in enumerate(SOLVERS):
        solve(run_config(data, folder / model, model), backend=ScriptedBackend(answers(k)))
    return [folder / model for model in SOLVERS]


# The rules on EXAMPLE with every level-3 candidate kept: (level, item, rule, reason), sorted by level and item.
SAMPLED = "; in the level-3 sample of 6 of the 6 items it solves"
EXPECTED_LEVELS = [
    (1, "a", "small_partial", "r1-1.5b solves 2 of 4"),
    (1, "d", "small_partial", "r1-1.5b solves 3 of 4"),
    (2, "b", "small_fails_middle_solves", "r1-1.5b solves 0 of 4, r1-7b solves 4 of 4"),
    (2, "c", "small_fails_middle_partial", "r1-1.5b solves 0 of 4, r1-7b solves 1 of 4"),
    (2, "d", "both_partial", "r1-1.5b solves 3 of 4, r1-7b solves 2 of 4"),
    (3, "a", "large_solves_sampled", "r1-32b solves 4 of 4" + SAMPLED),
    (3, "b", "large_solves_sampled", "r1-32b solves 4 of 4" + SAMPLED),
    (3, "c", "large_solves_sampled", "r1-32b solves 4 of 4" + SAMPLED),
    (3, "d", "large_solves_sampled", "r1-32b solves 3 of 4" + SAMPLED),
    (3, "e", "large_fails", "r1-32b solves 0 of 4"),
    (3, "g", "large_solves_sampled", "r1-32b solves 4 of 4" + SAMPLED),
    (3, "h", "large_solves_sampled", "r1-32b solves 2 of 4" + SAMPLED),
]
EXPECTED_DROPPED = [
    ("f", "never_solved", "no solver ever solves it"),
    ("i", "unmeasured", "no countable attempt by r1-1.5b (every rollout error or timeout): retry them"),
]


def test_three_solve_runs_give_the_papers_levels_on_the_constructed_example(runs, tmp_path):
    result = run_levels(*runs[:3], "--out", tmp_path / "levels", "--level3-success-fraction", 1.0)
    assert result.exit_code == 0, result.output
    out = tmp_path / "levels"
    levels_frame = pl.read_parquet(out / "levels.parquet")
    assert levels_frame.columns == ["item_id", "level", "rule", "reason"]
    assert levels_frame.select("level", "item_id", "rule", "reason").rows() == EXPECTED_LEVELS
    assert pl.read_parquet(out / "dropped.parquet").rows() == EXPECTED_DROPPED
    for level in (1, 2, 3):
        stage = pl.read_parquet(out / f"level_{level}.parquet")
        expected = [(item, rule, reason) for of, item, rule, reason in EXPECTED_LEVELS if of == level]
        assert stage.select("item_id", "rule", "reason").rows() == expected
        rows = {row["id"]: row for row in ROWS}
        assert stage.select("question", "reference", "extra_level", "subject").rows() == [
            (rows[i]["question"], "3", rows[i]["level"], "Algebra") for i, _, _ in expected]  # input `level` renamed
    summary = json.loads((out / "levels.json").read_text())
    assert summary["settings"] == {"solvers": list(SOLVERS[:3]), "level3_success_fraction": 1.0, "seed": 0,
                                   "drop_unsolved_by": None, "exclusive": False}
    assert [(s["name"], s["role"], s["run_dir"], s["identity"]["model"], s["identity"]["task"])
            for s in summary["solvers"]] == [(m, role, str(run), m, "solve")
                                             for m, role, run in zip(SOLVERS, ("small", "middle", "large"), runs)]
    assert summary["counts"] == {
        "levels": {"1": 2, "2": 3, "3": 7},
        "rules": {"small_partial": 2, "small_fails_middle_solves": 1, "small_fails_middle_partial": 1,
                  "both_partial": 1, "large_fails": 1, "large_solves_sampled": 6},
        "dropped": {"unmeasured": 1, "never_solved": 1, "not_sampled": 0}}
    assert (summary["items"], summary["items_in_levels"], summary["items_dropped"]) == (9, 7, 2)
    assert summary["paper"]["arxiv"] == "2504.00829"
    assert "level 1" in result.stdout and "small_partial 2" in result.stdout and "dropped: never_solved" in result.stdout


def test_the_papers_half_of_the_large_solvers_successes_and_the_rest_listed(runs, tmp_path):
    result = run_levels(*runs[:3], "--out", tmp_path / "levels", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout == (tmp_path / "levels" / "levels.json").read_text()
    summary = json.loads(result.stdout)
    assert summary["settings"]["level3_success_fraction"] == 0.5 and summary["counts"]["rules"]["large_solves_sampled"] == 3
    levels_frame = pl.read_parquet(tmp_path / "levels" / "levels.parquet")
    sampled = set(levels_frame.filter(pl.col("rule") == "large_solves_sampled")["item_id"])
    assert len(sampled) == 3 and sampled <= set("abcdgh")  # round(0.5 · 6)
    dropped = pl.read_parquet(tmp_path / "levels" / "dropped.parquet")
    # a, b, c, d are in levels 1 or 2 anyway; g and h are dropped exactly when the sample leaves them out
    assert set(dropped.filter(pl.col("rule") == "not_sampled")["item_id"]) == {"g", "h"} - sampled
    assert set(levels_frame["item_id"]) | set(dropped["item_id"]) == set(EXAMPLE)


def test_the_seed_chooses_the_sample_and_the_same_seed_gives_the_same_bytes(runs, tmp_path):
    def sample(seed: int, name: str) -> tuple[str, ...]:
        assert run_levels(*runs[:3], "--out", tmp_path / name, "--seed", seed).exit_code == 0
        frame = pl.read_parquet(tmp_path / name / "levels.parquet")
        return tuple(frame.filter(pl.col("rule") == "large_solves_sampled")["item_id"])

    samples = {seed: sample(seed, f"seed{seed}") for seed in range(3)}
    assert len(set(samples.values())) > 1
    assert sample(1, "again") == samples[1]
    for name in ("levels.json", "levels.parquet", "dropped.parquet", "level_3.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "seed1" / name).read_bytes()


def test_exclusive_levels_hold_each_item_once(runs, tmp_path):
    assert run_levels(*runs[:3], "--out", tmp_path / "levels", "--exclusive",
                      "--level3-success-fraction", 1.0).exit_code == 0
    frame = pl.read_parquet(tmp_path / "levels" / "levels.parquet")
    assert frame.select("level", "item_id").rows() == [(1, "a"), (1, "d"), (2, "b"), (2, "c"),
                                                      (3, "e"), (3, "g"), (3, "h")]
    assert json.loads((tmp_path / "levels" / "levels.json").read_text())["settings"]["exclusive"] is True


@pytest.mark.parametrize("by", ["name", "run directory"])
def test_the_papers_drop_rule_named_by_solver_or_by_run(runs, tmp_path, by):
    result = run_levels(*runs, "--out", tmp_path / "levels", "--level3-success-fraction", 1.0,
                        "--drop-unsolved-by", "r1" if by == "name" else runs[3])
    assert result.exit_code == 0, result.output
    dropped = pl.read_parquet(tmp_path / "levels" / "dropped.parquet")
    assert dropped.rows() == [("a", "never_solved", "r1 never solves it"), EXPECTED_DROPPED[1]]
    frame = pl.read_parquet(tmp_path / "levels" / "levels.parquet")
    assert ("f", 3, "large_fails") in frame.select("item_id", "level", "rule").rows()  # only R1 solves it
    summary = json.loads((tmp_path / "levels" / "levels.json").read_text())
    assert summary["settings"]["drop_unsolved_by"] == "r1" and summary["solvers"][3]["role"] == "ever_solved"


def test_runs_of_one_model_are_told_apart_by_their_folders(runs, tmp_path):
    again = shutil.copytree(runs[0], tmp_path / "again")
    assert run_levels(runs[0], again, runs[2], "--out", tmp_path / "levels").exit_code == 0
    summary = json.loads((tmp_path / "levels" / "levels.json").read_text())
    assert [s["name"] for s in summary["solvers"]] == ["r1-1.5b (r1-1.5b)", "r1-1.5b (again)", "r1-32b"]


def test_an_existing_out_is_replaced_only_with_overwrite(runs, tmp_path):
    out = tmp_path / "levels"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    assert_one_line_error(run_levels(*runs[:3], "--out", out), "exists and is not empty; pass --overwrite")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert run_levels(*runs[:3], "--out", out, "--overwrite").exit_code == 0
    assert not (out / "old.txt").exists() and (out / "levels.json").is_file()


def solve_variant(tmp_path, rows, model: str, solver: int, samples: int = 4):
    data = write_jsonl(tmp_path / f"{model}.jsonl", rows)
    return solve(run_config(data, tmp_path / f"variant-{model}", model, samples),
                 backend=ScriptedBackend(answers(solver))).run_dir


def test_a_run_given_to_drop_unsolved_by_only_is_refused_saying_to_give_it_as_a_solver(runs, tmp_path):
    """--drop-unsolved-by RUN with three solver runs said only "'r1' is not one of the solvers"."""
    assert_one_line_error(run_levels(*runs[:3], "--out", tmp_path / "levels", "--drop-unsolved-by", runs[3]),
                          f"--drop-unsolved-by {runs[3]} is not one of the solvers' runs (3 given); give it too, as "
                          "a further run after the large solver's")
    assert_one_line_error(run_levels(*runs[:3], "--out", tmp_path / "levels", "--drop-unsolved-by", "r1"),
                          "is not one of the solvers ['r1-1.5b', 'r1-7b', 'r1-32b']; only a solver whose run is given "
                          "can decide it: give that run too, after the large solver's")
    assert not (tmp_path / "levels").exists()


def test_one_rollout_per_item_warns_that_level_1_stays_empty(runs, tmp_path, caplog):
    """With single-sample runs the small solver is never partial, so level 1 was empty without a word."""
    once = [solve_variant(tmp_path, ROWS, model, k, samples=1) for k, model in enumerate(SOLVERS[:3])]
    result = run_levels(*once, "--out", tmp_path / "levels", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"]["levels"]["1"] == 0
    small, middle = (next(n for n in summary["notes"] if n.startswith(solver)) for solver in SOLVERS[:2])
    assert "r1-1.5b has 1 rollout per item, so it is never partial" in small and "level 1" in small
    assert "small_fails_middle_partial and both_partial can hold no item" in middle
    assert "The paper read every solver's pass rate from several rollouts per problem" in small
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == summary["notes"]
    assert json.loads((tmp_path / "levels" / "levels.json").read_text())["notes"] == summary["notes"]


def test_solvers_sampled_unequally_are_noted(runs, tmp_path, caplog):
    """A run of 2 rollouts per item beside runs of 4 was taken without a note."""
    fewer = solve_variant(tmp_path, ROWS, "r1-1.5b", 0, samples=2)
    result = run_levels(fewer, *runs[1:3], "--out", tmp_path / "levels", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["notes"] == [
        "the solvers have different rollouts per item (r1-1.5b 2, r1-7b 4, r1-32b 4): with fewer, a solver is "
        "partial less often and 'fails' or 'solves all' more often, so the levels mix the solvers with their sample "
        "counts; solve each with the same --samples"]
    assert any("different rollouts per item" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert json.loads(run_levels(*runs[:3], "--out", tmp_path / "equal", "--json").stdout)["notes"] == []


def test_runs_over_other_items_are_refused_naming_the_run(runs, tmp_path):
    fewer = solve_variant(tmp_path, [r for r in ROWS if r["id"] not in ("c", "g")], "r1-7b", 1)
    assert_one_line_error(run_levels(runs[0], fewer, runs[2], "--out", tmp_path / "levels"),
                          "solver 'r1-7b' has no pass rate for 2 of 9 items (e.g. 'c')")
    reworded = solve_variant(tmp_path, [{**r, "question": "Another?"} if r["id"] == "b" else r for r in ROWS],
                             "other", 1)
    assert_one_line_error(run_levels(runs[0], reworded, runs[2], "--out", tmp_path / "levels"),
                          f"solve run {reworded}: 1 of the 9 ids both hold name different items (question, "
                          "reference or choices differ; e.g. id 'b'")
    assert not (tmp_path / "levels").exists()


def test_an_unfinished_run_is_refused(runs, tmp_path):
    unfinished = shutil.copytree(runs[1], tmp_path / "unfinished")
    with sqlite3.connect(unfinished / "judgments.sqlite") as connection:
        connection.execute("DELETE FROM judgments WHERE item_id = 'b' AND sample_idx = 3")
    connection.close()
    assert_one_line_error(run_levels(runs[0], unfinished, runs[2], "--out", tmp_path / "levels"),
                          f"solve run {unfinished} is unfinished: 1 of 9 items have fewer than its 4 rollouts "
                          "(e.g. 'b', 3 stored); run the same `curate solve` command again")


def test_a_score_run_is_refused(runs, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    judged = score(RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "judged")}),
                   backend=ScriptedBackend(lambda item, idx: ("3", "stop"))).run_dir
    assert_one_line_error(run_levels(runs[0], judged, runs[2], "--out", tmp_path / "levels"),
                          f"levels: {judged} is a score run, not a solve run (curate solve DATA")


@pytest.mark.parametrize(("args", "message"), [
    (lambda runs, tmp: [runs[0]], "levels need at least three solvers (small, middle, large), got 1: ['r1-1.5b']"),
    (lambda runs, tmp: [runs[0], runs[1], runs[0]], "is given twice (solvers 1 and 3)"),
    (lambda runs, tmp: [runs[0], tmp, runs[2]], "is not a run directory (it has no manifest.json); pass the --out "
                                                "folder of `curate solve`"),
    (lambda runs, tmp: [*runs[:3], "--level3-success-fraction", 1.5], "level3_success_fraction must be in [0, 1]"),
    (lambda runs, tmp: [*runs[:3], "--drop-unsolved-by", "r1"], "drop_unsolved_by 'r1' is not one of the solvers"),
])
def test_bad_inputs_are_one_line_errors(runs, tmp_path, args, message):
    assert_one_line_error(run_levels(*args(runs, tmp_path), "--out", tmp_path / "levels"), message)
    assert not (tmp_path / "levels").exists()


def test_out_inside_a_run_is_refused(runs, tmp_path):
    assert_one_line_error(run_levels(*runs[:3], "--out", runs[0] / "levels"),
                          f"--out {runs[0] / 'levels'} is inside the solve run it reads ({runs[0]})")
