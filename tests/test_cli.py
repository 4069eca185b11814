import json

import pytest
import yaml
from conftest import write_jsonl
from typer.testing import CliRunner

from curate.cli import app
from curate.store import read_manifest

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_score_bundled_sample_with_bundled_judge(tmp_path):
    result = invoke("score", "bundled:math-sample", "--limit", 30, "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["items"], summary["judgments"], summary["requested"]) == (30, 30, 30)
    assert summary["status_counts"]["ok"] >= 27  # the tiny judge answers in format
    again = json.loads(invoke("score", "bundled:math-sample", "--limit", 30, "--out", tmp_path / "run",
                              "--json").stdout)
    assert again["requested"] == 0 and again["status_counts"] == summary["status_counts"]


def test_table_output_names_the_counts(tmp_path):
    result = invoke("score", "bundled:math-sample", "--limit", 5, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "items" in result.stdout and "5 (" in result.stdout and "unparseable" in result.stdout


def test_job_file_mirrors_flags_and_flags_win(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"source": "bundled:math-sample", "limit": 4, "samples": 2, "temperature": 1.0,
                                   "out": str(tmp_path / "run"), "max-failure-fraction": 0.5}))
    result = invoke("score", "--config", job, "--samples", 3, "--json")
    assert result.exit_code == 0, result.output
    config = read_manifest(tmp_path / "run")["config"]
    assert (config["samples"], config["temperature"], config["limit"], config["max_failure_fraction"]) == \
        (3, 1.0, 4, 0.5)
    assert json.loads(result.stdout)["judgments"] == 12


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--samples", "3"], "identical greedy judgments"),
    (["--template", "difficulty/missing"], "no template 'difficulty/missing'"),
])
def test_bad_settings_exit_1_with_one_line(tmp_path, args, message):
    result = invoke("score", "bundled:math-sample", "--out", tmp_path / "run", *args)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output


def test_unknown_job_file_key(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("source: bundled:math-sample\ntemprature: 1.0\n")
    result = invoke("score", "--config", job)
    assert result.exit_code == 1 and "unknown setting(s) ['temprature']" in result.stderr


def test_bad_rows_are_named(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "ok?"}, {"question": 7}, {"question": ""}])
    result = invoke("score", data, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "is a JSON number, not a string at rows 2" in result.stderr
    assert "missing or empty 'question' at rows 3" in result.stderr


def test_failures_over_the_threshold_exit_3_with_summary(tmp_path, random_model):
    result = invoke("score", "bundled:math-sample", "--limit", 6, "--model", random_model, "--max-tokens", 2,
                    "--out", tmp_path / "run", "--json")
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    assert summary["status_counts"]["truncated"] + summary["status_counts"]["unparseable"] == 6
    assert "above the allowed 10.0%" in result.stderr


def test_templates_lists_the_bundled_ones():
    result = invoke("templates")
    assert result.exit_code == 0
    assert "difficulty/intensity_score_only" in result.stdout and "tagged_score" in result.stdout


def test_the_command_line_starts_without_the_statistics_libraries():
    """`curate --help` took 4.4 s when the levels command pulled in scikit-learn and SciPy through curate.runs;
    they load with the commands that compute statistics."""
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", "import sys, curate.cli; print(sorted({name.split('.')[0] for name "
                             "in sys.modules} & {'sklearn', 'scipy', 'krippendorff', 'torch', 'transformers'}))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
