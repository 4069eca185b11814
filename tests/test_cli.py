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


def test_the_progress_rate_counts_the_time_since_the_first_request(tmp_path):
    """The rate was rich's speed between the last two progress reports (one per committed chunk): "10/10 9676.7
    judgments/s" on a 52 s run. It is now the records committed over the time since the round's first request
    (a model's loading before it does not count), here on a clock the scripted model advances 1 s per answer."""
    from fakes import ScriptedBackend

    from curate.cli.progress import RequestClock, progress_bar, rate_text
    from curate.config import RunConfig
    from curate.engine import score

    now = [0.0]

    def answer(item_id, idx):
        now[0] += 1.0
        return "<score>3</score>", "stop"

    data = write_jsonl(tmp_path / "data.jsonl", [{"id": f"q{i}", "question": f"Problem {i}?"} for i in range(10)])
    bar = progress_bar("score", disabled=True, clock=lambda: now[0])
    now[0] = 100.0  # the model loads for 100 s before its first request
    config = RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"), "chunk_size": 4,
                                  "template": "difficulty/intensity"})
    score(config, progress=bar.update, backend=RequestClock(ScriptedBackend(answer), bar.requesting))
    assert bar.bar.tasks[0].completed == 10
    assert bar.bar.tasks[0].fields["rate"] == "1.0 judgments/s"  # 10 answers in 10 s
    assert rate_text(10, 52.0, "judgments") == "5.2 s per judgment"
    assert rate_text(5377, 411.0, "responses") == "13.1 responses/s"
    assert rate_text(0, 3.0, "responses") == ""


def test_ctrl_c_says_what_is_stored_and_how_to_resume(tmp_path):
    """Ctrl-C (SIGINT) mid-run: exit status 130 after one line saying how many judgments the run directory holds of
    how many, and the command that resumes it; rerunning it asks only for the rest."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import stored_count

    run_dir = tmp_path / "run"
    args = ["score", "bundled:math-sample", "--limit", "150", "--samples", "2", "--temperature", "1.0",
            "--chunk-size", "8", "--batch-size", "8", "--out", str(run_dir)]
    process = subprocess.Popen([sys.executable, "-m", "curate.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while stored_count(run_dir) < 16 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    stored = stored_count(run_dir)
    assert process.returncode == 130, stderr
    assert 16 <= stored < 300, "the interrupt must land mid-run"
    said = " ".join(stderr.split())
    assert f"interrupted: {run_dir} holds {stored} of 300 judgments (150 items × 2 samples)" in said, stderr
    assert f"Run the same command to resume: python -m curate.cli {' '.join(args)}" in said, stderr
    assert "Traceback" not in stderr
    resumed = invoke(*args, "--json")
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert (summary["judgments"], summary["requested"]) == (300, 300 - stored)
