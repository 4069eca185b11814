"""`curate stats` and `curate compare` over real run directories made by the engine."""

import json

import polars as pl
import pytest
from conftest import write_jsonl
from fakes import ScriptedBackend
from typer.testing import CliRunner

from curate.analysis import CALIBRATED_FILE, analyze_comparison, analyze_run, load_calibration
from curate.cli import app
from curate.config import ScoreConfig
from curate.engine import score

ROWS = [{"id": f"q{i:03d}", "question": f"Problem {i}", "level": i % 5 + 1, "pass_rate": 1 - (i % 5) / 4,
         "domain": "algebra" if i % 2 else "geometry"} for i in range(60)]


def judge_by_level(noise: int):
    """A judge that mostly agrees with the level: off by one on every `noise`-th sample."""
    def answer(item_id: str, idx: int):
        level = int(item_id[1:]) % 5 + 1
        off = 1 if (int(item_id[1:]) + idx) % noise == 0 and level < 5 else 0
        return (f"Steps. <score>{level + off}</score>", "stop")
    return answer


def make_run(tmp_path, name, template="difficulty/intensity", noise=4, samples=3):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    config = ScoreConfig.from_flat({"source": str(data), "out": str(tmp_path / name), "template": template,
                                    "samples": samples, "temperature": 1.0})
    score(config, backend=ScriptedBackend(judge_by_level(noise)))
    return tmp_path / name


def test_stats_against_reference_and_pass_rate(tmp_path):
    run = make_run(tmp_path, "run")
    analysis = analyze_run(run, reference="level", pass_rate="pass_rate", n_resamples=200)
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
    analysis = analyze_run(run, calibrate="level", n_resamples=0)
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
    result = analyze_comparison(run_a, run_b)
    assert result["n_common"] == 60 and sum(map(sum, result["shift_matrix"])) == 60
    assert [row["tau"] for row in result["churn"]] == [1, 2, 3, 4]
    cli = CliRunner().invoke(app, ["compare", str(run_a), str(run_b)], env={"COLUMNS": "120"})
    assert cli.exit_code == 0, cli.output
    assert "items changing side" in cli.stdout and "A \\ B" in cli.stdout
    as_json = json.loads(CliRunner().invoke(app, ["compare", str(run_a), str(run_b), "--json"]).stdout)
    assert as_json["shift_matrix"] == result["shift_matrix"]


def test_stats_cli_json(tmp_path):
    run = make_run(tmp_path, "run")
    result = CliRunner().invoke(app, ["stats", str(run), "--reference", "level", "--resamples", "50", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reference"]["field"] == "level"


def test_report_writes_html_and_json(tmp_path):
    run = make_run(tmp_path, "run")
    report = tmp_path / "out" / "report.html"
    report.parent.mkdir()
    result = CliRunner().invoke(app, ["stats", str(run), "--reference", "level", "--resamples", "50",
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert report.read_text().count("data:image/png;base64,") >= 2
    assert json.loads(report.with_suffix(".json").read_text())["reference"]["field"] == "level"
