"""`curate stats` and `curate compare` over real run directories made by the engine."""

import json
import re

import polars as pl
import pytest
from conftest import write_jsonl
from fakes import ScriptedBackend
from typer.testing import CliRunner

from curate.cli import app
from curate.command_config import CompareConfig, StatsConfig
from curate.config import RunConfig
from curate.engine import score
from curate.stats.analysis import (
    CALIBRATED_FILE,
    analyze_comparison,
    analyze_run,
    load_calibration,
)
from curate.stats.metrics import all_notes

ROWS = [{"id": f"q{i:03d}", "question": f"Problem {i}", "level": i % 5 + 1, "pass_rate": 1 - (i % 5) / 4,
         "domain": "algebra" if i % 2 else "geometry"} for i in range(60)]


def judge_by_level(noise: int):
    """A judge that mostly agrees with the level: off by one on every `noise`-th sample."""
    def answer(item_id: str, idx: int):
        level = int(item_id[1:]) % 5 + 1
        off = 1 if (int(item_id[1:]) + idx) % noise == 0 and level < 5 else 0
        return (f"Steps. <score>{level + off}</score>", "stop")
    return answer


def make_run(tmp_path, name, template="difficulty/intensity", noise=4, samples=3, rows=ROWS, judge=None):
    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    config = RunConfig.from_flat({"source": str(data), "out": str(tmp_path / name), "template": template,
                                    "samples": samples, "temperature": 1.0})
    score(config, backend=ScriptedBackend(judge or judge_by_level(noise)))
    return tmp_path / name


def test_stats_against_reference_and_pass_rate(tmp_path):
    run = make_run(tmp_path, "run")
    analysis = analyze_run(run, StatsConfig(reference="level", pass_rate="pass_rate", resamples=200))
    stats = analysis.stats
    assert stats["run"]["n_scored"] == 60 and stats["failures"]["counts"]["ok"] == 180
    assert stats["reference"]["spearman"]["value"] > 0.9
    low, high = stats["reference"]["spearman"]["low"], stats["reference"]["spearman"]["high"]
    assert low <= stats["reference"]["spearman"]["value"] <= high
    assert stats["pass_rate"]["spearman"]["value"] < -0.9  # harder items are solved less
    assert stats["self_consistency"]["alpha"]["value"] > 0.8
    assert {g["group"] for g in stats["distribution"]["groups"]} == {"algebra", "geometry"}
    assert sum(map(sum, stats["reference"]["confusion_matrix"])) == 60
    json.dumps(stats)  # what --json prints


def test_calibration_is_saved_with_the_run_and_maps_onto_the_target(tmp_path):
    run = make_run(tmp_path, "run")
    analysis = analyze_run(run, StatsConfig(calibrate="level", resamples=0))
    calibration = load_calibration(run)
    assert calibration.target == "level" and analysis.stats["calibration"]["n_fit"] == 60
    saved = pl.read_parquet(run / CALIBRATED_FILE)
    assert saved.height == 60 and saved["calibrated"].to_list() == pytest.approx(
        calibration.apply(saved["score"]).tolist())
    assert analysis.reliability is not None and analysis.reliability["n"].sum() == 60
    assert any("in-sample" in note for note in analysis.stats["notes"])


def test_unknown_field_is_a_clear_error(tmp_path):
    run = make_run(tmp_path, "run")
    result = CliRunner().invoke(app, ["stats", str(run), "--reference", "grade"])
    assert result.exit_code == 1 and "no field 'grade'" in result.stderr and "level" in result.stderr


def test_compare_two_templates_prints_shift_matrix_and_churn(tmp_path):
    from curate.templates import bundled_prompts_dir

    edited = tmp_path / "intensity_v2.jinja"  # a user's edit of the rubric: the judge answers differently
    edited.write_text((bundled_prompts_dir() / "difficulty" / "intensity.jinja").read_text()
                      .replace("Write a brief rationale", "Think it through, then write a brief rationale"))
    run_a = make_run(tmp_path, "a", template="difficulty/intensity", noise=4)
    run_b = make_run(tmp_path, "b", template=str(edited), noise=2)
    result = analyze_comparison(run_a, run_b, CompareConfig(resamples=50))
    assert result["alpha"]["low"] <= result["alpha"]["value"] <= result["alpha"]["high"]
    assert result["n_common"] == 60 and sum(map(sum, result["shift_matrix"])) == 60
    assert [row["tau"] for row in result["churn"]] == [1, 2, 3, 4]
    cli = CliRunner().invoke(app, ["compare", str(run_a), str(run_b), "--resamples", "50"], env={"COLUMNS": "120"})
    assert cli.exit_code == 0, cli.output
    assert "items changing side" in cli.stdout and "A \\ B" in cli.stdout
    as_json = json.loads(CliRunner().invoke(app, ["compare", str(run_a), str(run_b), "--resamples", "0",
                                                  "--json"]).stdout)
    assert as_json["shift_matrix"] == result["shift_matrix"]


def test_stats_cli_json(tmp_path):
    run = make_run(tmp_path, "run")
    result = CliRunner().invoke(app, ["stats", str(run), "--reference", "level", "--resamples", "50", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reference"]["field"] == "level"


def test_report_writes_html_and_json_creating_its_folder(tmp_path):
    run = make_run(tmp_path, "run")
    report = tmp_path / "out" / "new" / "report.html"
    result = CliRunner().invoke(app, ["stats", str(run), "--reference", "level", "--resamples", "50",
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert report.read_text().count("data:image/png;base64,") >= 2
    assert json.loads(report.with_suffix(".json").read_text())["reference"]["field"] == "level"


def test_samples_that_repeat_one_output_leave_agreement_unmeasured(tmp_path):
    """A server that ignores temperature answers every sample of an item alike: α 1.000 would be a fiction."""
    ignores_temperature = make_run(tmp_path, "run", judge=lambda item_id, idx: judge_by_level(4)(item_id, 0))
    result = CliRunner().invoke(app, ["stats", str(ignores_temperature), "--resamples", "0"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"self-consistency α \(ordinal\)\s*│\s*undefined", result.stdout)
    assert "mean per-item std" not in result.stdout
    note = ("note: self_consistency: alpha is undefined: all 60 items' samples are identical: the backend may ignore "
            "temperature or sampling; agreement was not measured")
    assert note in " ".join(result.stderr.split())
    partly = CliRunner().invoke(app, ["stats", str(make_run(tmp_path, "sampled")), "--json", "--resamples", "0"])
    consistency = json.loads(partly.stdout)["self_consistency"]
    assert consistency["alpha"]["value"] > 0.8 and consistency["n_identical_units"] == 24  # q%4 == 1, or level 5
    assert any(n.startswith("24 of the 60 items with 2+ ok samples (40%) have identical samples")
               for n in consistency["notes"])


def test_stats_prints_the_notes_of_every_part(tmp_path):
    run = make_run(tmp_path, "run", samples=1)
    result = CliRunner().invoke(app, ["stats", str(run), "--reference", "level", "--pass-rate", "pass_rate",
                                      "--calibrate", "level", "--resamples", "0"])
    assert result.exit_code == 0, result.output
    printed = [line.removeprefix("note: ") for line in result.stderr.splitlines() if line.startswith("note:")]
    assert sorted(printed) == sorted(all_notes(json.loads(CliRunner().invoke(app, [
        "stats", str(run), "--reference", "level", "--pass-rate", "pass_rate", "--calibrate", "level",
        "--resamples", "0", "--json"]).stdout)))
    assert "reference: spearman: no 95% interval: not computed (n_resamples=0)" in printed
    assert "pass_rate: spearman: no 95% interval: not computed (n_resamples=0)" in printed


def test_compare_refuses_other_items_unless_asked_and_says_so(tmp_path):
    run = make_run(tmp_path, "run")
    other = make_run(tmp_path, "other", rows=[{**row, "question": f"Unrelated {i}"} for i, row in enumerate(ROWS)])
    refused = CliRunner().invoke(app, ["compare", str(run), str(other)])
    assert refused.exit_code == 1 and "60 of the 60 ids both hold name different items" in refused.stderr
    report = tmp_path / "reports" / "compare.html"
    allowed = CliRunner().invoke(app, ["compare", str(run), str(other), "--allow-different-items", "--resamples", "0",
                                       "--report", str(report)], env={"COLUMNS": "200"})
    assert allowed.exit_code == 0, allowed.output
    assert "scored only in A: 0 · scored only in B: 0" in allowed.stdout
    assert "compared by id anyway (--allow-different-items)" in " ".join(allowed.stderr.split())
    page = report.read_text()
    assert "Runs compared" in page and f">{run}<" in page and f">{other}<" in page
    assert json.loads(report.with_suffix(".json").read_text())["run_b"]["run_dir"] == str(other)


def test_compare_counts_items_scored_in_one_run_only(tmp_path):
    run = make_run(tmp_path, "run")
    subset = make_run(tmp_path, "subset", rows=ROWS[:50],
                      judge=lambda item_id, idx: ("no score", "stop") if item_id == "q000" else
                      judge_by_level(2)(item_id, idx))
    result = analyze_comparison(run, subset, CompareConfig(resamples=0))
    assert (result["n_common"], result["n_only_a"], result["n_only_b"]) == (49, 11, 0)
    assert (result["run_a"]["n_scored"], result["run_b"]["n_scored"]) == (60, 49)
