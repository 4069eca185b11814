"""`curate stats JUDGE_RUN --pass-rate SOLVE_RUN` and `--irt SOLVE_RUN --irt SOLVE_RUN`: a judge run checked against
measured difficulty read straight from solve runs, each number checked against a join done here by hand.

The judge is the bundled tiny judge; the solvers are the scripted endpoint, which answers "\\boxed{k}" with k in
1..5 fixed by the prompt and the sample's seed: items whose answer is 3 are solved about one time in five, items
whose answer is 9 never."""

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import assert_one_line_error, invoke, write_jsonl
from fakes import ScriptedBackend
from scipy.stats import binomtest, spearmanr
from sklearn.metrics import roc_auc_score

import curate
from curate.command_config import StatsConfig
from curate.config import RunConfig
from curate.engine import score, solve
from curate.stats.analysis import analyze_run, load_calibration
from curate.stats.irt import fit_rasch
from curate.testing import FakeOpenAIServer

ITEMS = 24
COUNTABLE = ["correct", "wrong", "no_answer", "truncated"]


def problems(count: int = ITEMS) -> list[dict]:
    """MATH problems from the bundled sample (varied text, so the judge's scores vary), with answers the scripted
    solver can give (3) or never gives (9)."""
    lines = (Path(curate.__file__).parent / "bundled" / "math-sample.jsonl").read_text().splitlines()[:count]
    return [{"id": row["id"], "question": row["question"], "domain": row["domain"],
             "answer": "9" if i % 6 == 5 else "3"} for i, row in enumerate(map(json.loads, lines))]


def solve_job(source: Path, out: Path, server: FakeOpenAIServer, **overrides) -> RunConfig:
    return RunConfig.from_flat({"source": str(source), "out": str(out), "backend": "openai",
                                "base_url": server.base_url, "model": "solver", "template": "solve/step_by_step",
                                "verify": "gsm8k", "samples": 4, "temperature": 1.0, "max_tokens": 64, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A judge run and solve runs over its items: two solvers (seeds 0 and 1), and one over part of them plus
    other problems, whose one rollout per item fails (as error) for about a third of them."""
    folder = tmp_path_factory.mktemp("measured")
    data = write_jsonl(folder / "data.jsonl", problems())
    partial = write_jsonl(folder / "partial.jsonl", problems()[:20] + [
        {"id": f"extra-{i}", "question": f"What is {i} + 3 - {i}?", "answer": "3"} for i in range(4)])
    score(RunConfig.from_flat({"source": str(data), "out": str(folder / "judge")}))
    with FakeOpenAIServer(answer_format="boxed", faults={"context_exceeded": 0.3}) as failing, \
            FakeOpenAIServer(answer_format="boxed") as server:
        for name, seed in (("solve_a", 0), ("solve_b", 1)):
            solve(solve_job(data, folder / name, server, seed=seed))
        solve(solve_job(partial, folder / "partial", failing, samples=1, max_failure_fraction=1.0))
    return {name: folder / name for name in ("judge", "solve_a", "solve_b", "partial")}


def judge_scores(run: Path) -> pl.DataFrame:
    return (curate.load_judgments(run).filter(pl.col("status") == "ok")
            .group_by("item_id").agg(pl.col("score").mean().alias("score")))


def rollouts(run: Path) -> pl.DataFrame:
    return curate.load_judgments(run).filter(pl.col("status").is_in(COUNTABLE))


def hand_pass_rates(run: Path) -> pl.DataFrame:
    return rollouts(run).group_by("item_id").agg((pl.col("status") == "correct").sum().alias("k"),
                                                 pl.len().alias("n"))


def test_pass_rate_from_a_solve_run_agrees_with_a_hand_join(runs):
    analysis = analyze_run(runs["judge"], StatsConfig(pass_rate=str(runs["solve_a"]), resamples=100))
    hand = judge_scores(runs["judge"]).join(hand_pass_rates(runs["solve_a"]), on="item_id").sort("item_id")
    rate = (hand["k"] / hand["n"]).to_numpy()
    agreement = analysis.stats["pass_rate"]
    assert hand.height == ITEMS and agreement["n"] == ITEMS
    assert (agreement["source"], agreement["n_judged_only"], agreement["n_solved_only"]) == ("solve_run", 0, 0)
    assert agreement["spearman"]["value"] == pytest.approx(spearmanr(hand["score"], rate).statistic)
    assert agreement["auroc"]["value"] == pytest.approx(roc_auc_score(rate == 0, hand["score"]))
    assert agreement["n_unsolved"] == int((rate == 0).sum()) >= ITEMS // 6  # every item answered 9, at least
    spearman = agreement["spearman"]
    assert spearman["low"] <= spearman["value"] <= spearman["high"]
    intervals = [binomtest(k, n).proportion_ci(method="wilson") for k, n in hand.select("k", "n").rows()]
    widths = [interval.high - interval.low for interval in intervals]
    assert agreement["noise"]["mean_interval_width"] == pytest.approx(np.mean(widths))
    assert agreement["noise"]["attempts_median"] == 4
    joined = analysis.items.sort("item_id")
    assert joined["pass_rate"].to_list() == pytest.approx(rate.tolist())
    assert agreement["solve_run"]["run_dir"] == str(runs["solve_a"]) and agreement["solve_run"]["verifier"] == "gsm8k"


def test_items_on_one_side_only_are_counted_and_the_rest_joined(runs):
    analysis = analyze_run(runs["judge"], StatsConfig(pass_rate=str(runs["partial"]), resamples=0))
    measured = hand_pass_rates(runs["partial"])
    judged = judge_scores(runs["judge"])
    both = judged.join(measured, on="item_id")
    unmeasured = curate.load_judgments(runs["partial"]).group_by("item_id").agg(
        pl.col("status").is_in(COUNTABLE).any().alias("counted")).filter(~pl.col("counted"))
    agreement = analysis.stats["pass_rate"]
    assert 0 < unmeasured.height and 0 < both.height < ITEMS
    assert agreement["n"] == both.height
    assert agreement["n_unmeasured"] == unmeasured.join(judged, on="item_id").height
    assert agreement["n_judged_only"] == ITEMS - both.height  # 4 absent from the solve run, the rest unmeasured
    assert agreement["n_solved_only"] == measured.join(judged, on="item_id", how="anti").height
    assert agreement["n_solved_only"] > 0
    note = next(note for note in agreement["notes"] if "have no measured pass rate" in note)
    assert f"{agreement['n_judged_only']} item(s) scored in {runs['judge']}" in note
    assert analysis.items["pass_rate"].null_count() == ITEMS - both.height  # unjoined items stay, without a rate


def test_the_cli_prints_the_agreement_with_intervals_and_how_noisy_the_pass_rates_are(runs):
    result = invoke("stats", runs["judge"], "--pass-rate", runs["solve_a"], "--resamples", 50)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    spearman = json.loads(invoke("stats", runs["judge"], "--pass-rate", runs["solve_a"], "--resamples", 50,
                                 "--json").stdout)["pass_rate"]["spearman"]
    assert f"{spearman['value']:.3f} [{spearman['low']:.3f}, {spearman['high']:.3f}]" in text
    assert "Spearman" in text and "mean 95% Wilson width" in text and "items joined" in text


def test_calibrating_onto_a_solve_run_fits_a_falling_map_of_its_pass_rates(runs, tmp_path):
    """The judge here rates the solvable items higher: left to choose, the fit would rise with the score, and
    the split would read a higher pass rate as harder."""
    data = write_jsonl(tmp_path / "data.jsonl", problems())
    solvable = {row["id"]: row["answer"] == "3" for row in problems()}
    judge = tmp_path / "judge"
    score(RunConfig.from_flat({"source": str(data), "out": str(judge), "template": "difficulty/intensity"}),
          backend=ScriptedBackend(lambda item_id, idx: (f"<score>{4 if solvable[item_id] else 2}</score>", "stop")))
    analysis = analyze_run(judge, StatsConfig(calibrate=str(runs["solve_a"]), resamples=0))
    calibration = load_calibration(judge)
    assert (calibration.target, calibration.increasing, calibration.n_fit) == (str(runs["solve_a"]), False, ITEMS)
    assert analysis.stats["calibration"]["increasing"] is False
    by_score = analysis.items.group_by("score").agg(pl.col("calibrated").first()).sort("score")
    assert by_score["calibrated"].to_list() == sorted(by_score["calibrated"].to_list(), reverse=True)


def test_irt_difficulties_from_two_solve_runs_agree_with_a_fit_done_by_hand(runs):
    analysis = analyze_run(runs["judge"], StatsConfig(resamples=0, irt=[str(runs["solve_a"]), str(runs["solve_b"])]))
    responses = pl.concat([rollouts(runs[name]).select(
        "item_id", pl.lit(f"solver ({name})").alias("model"), (pl.col("status") == "correct").cast(pl.Int64)
        .alias("correct")) for name in ("solve_a", "solve_b")])
    fit = fit_rasch(responses)
    hand = judge_scores(runs["judge"]).join(fit.items, on="item_id").sort("item_id")
    measured = hand.filter(pl.col("irt_status") == "measured")
    irt = analysis.stats["irt"]
    assert [model["model"] for model in irt["models"]] == ["solver (solve_a)", "solver (solve_b)"]
    assert (irt["n"], irt["n_measured"]) == (ITEMS, measured.height)
    assert irt["n_all_wrong"] == hand.filter(pl.col("irt_status") == "all_wrong").height >= ITEMS // 6
    assert irt["n_all_correct"] == hand.filter(pl.col("irt_status") == "all_correct").height
    assert irt["spearman"]["value"] == pytest.approx(spearmanr(measured["score"], measured["difficulty"]).statistic)
    assert irt["spearman_with_extremes"]["value"] == pytest.approx(
        spearmanr(hand["score"], hand["difficulty"]).statistic)
    assert irt["fit"]["converged"] and irt["fit"]["answers"] == responses.height
    assert any("set by the prior" in note for note in irt["notes"])
    items = analysis.items.sort("item_id")
    assert items["irt_difficulty"].to_list() == pytest.approx(hand["difficulty"].to_list())
    assert items["irt_se"].to_list() == pytest.approx(hand["difficulty_se"].to_list())


def test_the_report_shows_the_irt_difficulties(runs, tmp_path):
    report = tmp_path / "report.html"
    result = invoke("stats", runs["judge"], "--irt", runs["solve_a"], "--irt", runs["solve_b"], "--pass-rate",
                    runs["solve_a"], "--resamples", 0, "--report", report)
    assert result.exit_code == 0, result.output
    page = report.read_text()
    figure = page[page.index("Figure 7. Score vs IRT difficulty"):]
    assert figure.index("<img") < figure.index("</p>") and "2 models" in figure
    assert f"Every item of the crowd ({ITEMS}, scored or not) is in the stats JSON under irt.items" in figure
    assert "IRT difficulty</td>" in page and "mean 95% Wilson interval width" in page
    assert json.loads(report.with_suffix(".json").read_text())["irt"]["n"] == ITEMS
    assert "IRT items" in result.stdout and "all wrong" in result.stdout


def test_the_irt_difficulties_of_every_item_are_in_the_json_the_report_and_an_irt_directory(runs, tmp_path):
    """`stats --irt` gave model abilities and a plot, and each item's difficulty in no file."""
    report = tmp_path / "report.html"
    result = invoke("stats", runs["judge"], "--irt", runs["solve_a"], "--irt", runs["solve_b"], "--resamples", 0,
                    "--irt-out", tmp_path / "irt", "--report", report, "--json")
    assert result.exit_code == 0, result.output
    irt = json.loads(result.stdout)["irt"]
    written = pl.read_parquet(tmp_path / "irt" / "irt_items.parquet")
    assert irt["irt_dir"] == str(tmp_path / "irt")
    assert pl.DataFrame(irt["items"]).select(written.columns[:-3]).equals(written.drop("question", "reference",
                                                                                      "choices"))
    assert written.height == ITEMS and written["difficulty_low"].is_not_null().all()
    assert json.loads(report.with_suffix(".json").read_text())["irt"]["items"] == irt["items"]
    # the same fit as `curate irt` over the same runs, to the byte
    assert invoke("irt", runs["solve_a"], runs["solve_b"], "--out", tmp_path / "alone").exit_code == 0
    for name in ("irt_items.parquet", "irt_models.parquet", "manifest.json"):
        assert (tmp_path / "irt" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()


def test_irt_out_needs_irt_runs_and_an_empty_folder(runs, tmp_path):
    assert_one_line_error(invoke("stats", runs["judge"], "--irt-out", tmp_path / "irt"),
                          "--irt-out writes the IRT fit of the --irt solve runs: give them")
    (tmp_path / "irt").mkdir()
    (tmp_path / "irt" / "old.txt").write_text("keep")
    args = ("stats", runs["judge"], "--irt", runs["solve_a"], "--irt", runs["solve_b"], "--resamples", 0,
            "--irt-out", tmp_path / "irt")
    assert_one_line_error(invoke(*args), "exists and is not empty; pass --overwrite")
    assert invoke(*args, "--overwrite").exit_code == 0 and not (tmp_path / "irt" / "old.txt").exists()


def test_the_notes_say_which_counts_are_the_crowds_and_which_the_scored_items(runs):
    """"7 of the 24 items were solved by every model or none" beside "fit: 9 item(s) all wrong": the first counted
    the scored items, the second every item the solve runs answered, and neither said so."""
    analysis = analyze_run(runs["judge"], StatsConfig(resamples=0, irt=[str(runs["solve_a"]), str(runs["partial"])]))
    irt = analysis.stats["irt"]
    crowd = irt["crowd"]["items"]
    assert crowd == ITEMS + 4 and irt["n"] < crowd  # the partial run's own problems are the crowd's only
    scored = next(note for note in irt["notes"] if "solved by every model or by none" in note)
    assert f"of the {irt['n']} items both scored and answered by the crowd" in scored
    answered = crowd - irt["crowd"]["counts"]["no_countable_answer"]
    fit = [note for note in irt["notes"] if "set by the prior (sd 3)" in note]
    assert fit and all(note.startswith(f"the crowd's fit, over all its {answered} answered items (scored or not): ")
                       for note in fit)
    result = invoke("stats", runs["judge"], "--irt", runs["solve_a"], "--irt", runs["partial"], "--resamples", 0)
    text = " ".join(result.stdout.split())
    assert f"IRT items of the crowd ({crowd})" in text and "IRT items scored here" in text


def test_an_unfinished_solve_run_is_named_as_such(runs, tmp_path):
    """A pass rate of 9 of 16 rollouts was used as if the run were finished."""
    unfinished = shutil.copytree(runs["solve_a"], tmp_path / "solve_a")
    first = problems()[0]["id"]
    with sqlite3.connect(unfinished / "judgments.sqlite") as connection:
        connection.execute("DELETE FROM judgments WHERE item_id = ? AND sample_idx >= 2", (first,))
    connection.close()
    notes = analyze_run(runs["judge"], StatsConfig(pass_rate=str(unfinished), resamples=0)).stats["pass_rate"]["notes"]
    assert notes[0] == (f"solve run {unfinished} is unfinished: 1 of {ITEMS} items have fewer than its 4 rollouts (e.g. "
                     f"{first!r}, 2 stored): its pass rates count the rollouts stored so far; run the same `curate "
                     "solve` command again to finish it")
    finished = analyze_run(runs["judge"], StatsConfig(pass_rate=str(runs["solve_a"]),
                                                      resamples=0)).stats["pass_rate"]["notes"]
    assert not any("unfinished" in note for note in finished)
