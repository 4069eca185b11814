"""`curate solve` and `curate respond`: the same engine, store and backends as `score`, with a verifier deciding
each response. The scripted endpoint answers "... \\boxed{k}" with k from 1 to 5 fixed by the prompt and the
sample's seed, so about one sample in five is right about a reference of 3."""

import json
import random
import re
import subprocess
import sys

import polars as pl
import pytest
from conftest import assert_one_line_error, invoke, kill_when_stored, write_jsonl

import curate
from curate.config import RunConfig
from curate.engine import reparse, respond, solve
from curate.testing import FakeOpenAIServer

ITEMS = 30


def data(tmp_path, items: int = ITEMS):
    return write_jsonl(tmp_path / "data.jsonl", [{"id": f"q{i:02d}", "question": f"What is {i} - {i} + 3?",
                                                   "answer": "3"} for i in range(items)])


def job(tmp_path, server, **overrides) -> RunConfig:
    return RunConfig.from_flat({"source": str(data(tmp_path)), "out": str(tmp_path / "run"), "backend": "openai",
                                "base_url": server.base_url, "model": "solver", "template": "solve/step_by_step",
                                "verify": "gsm8k", "samples": 4, "temperature": 1.0, "max_tokens": 64, **overrides})


def test_solve_verifies_every_rollout_and_gives_each_item_a_pass_rate(tmp_path):
    with FakeOpenAIServer(answer_format="boxed") as server:
        result = solve(job(tmp_path, server))
    records = curate.load_judgments(tmp_path / "run")
    assert records.height == 4 * ITEMS and set(records["status"]) <= {"correct", "wrong"}
    assert (records["verifier"] == "gsm8k@1").all()
    assert ((records["status"] == "correct") == (records["answer"] == "3")).all()
    items = result.per_item.sort("item_id")
    expected = records.group_by("item_id").agg((pl.col("status") == "correct").mean().alias("rate")).sort("item_id")
    assert items["pass_rate"].to_list() == expected["rate"].to_list()
    assert (items["pass_low"] <= items["pass_rate"]).all() and (items["pass_rate"] <= items["pass_high"]).all()
    assert result.summary["measured"] == ITEMS and 0 < result.summary["mean_pass_rate"] < 1
    assert result.summary["rollouts"]["correct"] == int((records["status"] == "correct").sum())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["identity"]["task"], manifest["identity"]["verifier"]) == ("solve", "gsm8k")


def test_respond_asks_again_only_until_an_item_has_a_verified_response(tmp_path):
    with FakeOpenAIServer(answer_format="boxed") as server:
        result = respond(job(tmp_path, server, samples=5))
    records = curate.load_judgments(tmp_path / "run")
    for item_id, group in records.sort("sample_idx").group_by("item_id"):
        statuses = group["status"].to_list()
        assert group["sample_idx"].to_list() == list(range(len(statuses)))  # asked in order, one at a time
        assert "correct" not in statuses[:-1], item_id  # nothing asked after the first verified response
        assert statuses[-1] == "correct" or len(statuses) == 5
    assert len(server.bodies) == records.height  # the rejected samples' successors only
    items = result.per_item
    kept = items.filter(pl.col("item_status") == "kept")
    assert kept["response"].str.contains(r"\\boxed\{3\}").all() and kept["kept_answer"].eq("3").all()
    unkept = items.filter(pl.col("item_status") == "none_kept")["item_id"].to_list()
    assert result.summary["items_without_response"] == unkept and result.summary["items_kept"] == kept.height
    assert kept.height > 0 and unkept  # with p = 0.2 per try and 5 tries, both happen among 30 items


def test_respond_without_a_verifier_keeps_each_items_first_finished_response(tmp_path):
    with FakeOpenAIServer(answer_format="boxed", faults={"truncate": 0.3}) as server:
        result = respond(job(tmp_path, server, verify=None, samples=3))
    records = curate.load_judgments(tmp_path / "run")
    assert set(records["status"]) == {"ok", "truncated"} and (records["verifier"] == "").all()
    kept = result.per_item.filter(pl.col("item_status") == "kept")
    first_ok = records.filter(pl.col("status") == "ok").group_by("item_id").agg(pl.col("sample_idx").min())
    assert kept.join(first_ok, on="item_id").select((pl.col("kept_sample") == pl.col("sample_idx")).all()).item()


def test_a_truncated_rollout_is_not_verified_and_counts_as_a_failed_attempt(tmp_path):
    with FakeOpenAIServer(answer_format="boxed", faults={"truncate": 0.5}) as server:
        result = solve(job(tmp_path, server))
    records = curate.load_judgments(tmp_path / "run")
    truncated = records.filter(pl.col("status") == "truncated")
    assert truncated.height > 10 and (truncated["answer"] == "").all()
    assert (result.per_item["attempts"] == 4).all()


def test_reparse_verifies_the_stored_responses_again_with_another_verifier(tmp_path):
    with FakeOpenAIServer(answer_format="boxed") as server:
        solve(job(tmp_path, server))
    before = curate.load_judgments(tmp_path / "run")
    summary = reparse(tmp_path / "run", verifier="numeric")
    after = curate.load_judgments(tmp_path / "run")
    assert (after["verifier"] == "numeric@1").all() and after["status"].to_list() == before["status"].to_list()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["identity"]["verifier"] == "numeric"
    assert summary["requested"] == 0


def test_reparse_undoes_a_wrong_verifier_and_keeps_the_backends_failures(tmp_path):
    solutions = write_jsonl(tmp_path / "gsm8k.jsonl", [
        {"id": f"q{i:02d}", "question": f"What is {i} - {i} + 3?", "answer": f"{i} - {i} = 0 and 0 + 3 = 3.\n#### 3"}
        for i in range(ITEMS)])
    with FakeOpenAIServer(answer_format="boxed", faults={"no_finish_reason": 0.1, "context_exceeded": 0.1}) as server:
        solve(job(tmp_path, server, source=str(solutions), max_failure_fraction=1.0))
    before = curate.load_judgments(tmp_path / "run")
    failed = before.filter(pl.col("status") == "error")
    assert failed.height and set(before["status"]) == {"correct", "wrong", "error"}
    wrong = reparse(tmp_path / "run", verifier="numeric")  # a GSM8K solution is no one number: every verdict errs
    assert wrong["status_counts"]["error"] == before.height
    undone = reparse(tmp_path / "run", verifier="gsm8k")
    after = curate.load_judgments(tmp_path / "run")
    assert after.select("status", "detail", "answer").rows() == before.select("status", "detail", "answer").rows()
    assert undone["status_counts"]["error"] == failed.height and undone["requested"] == 0


@pytest.mark.parametrize("args, message", [
    (["--verify", "gsm8k"], "`curate solve` needs --model"),
    (["--model", "m"], "`curate solve` measures pass rates, so it needs --verify NAME"),
    (["--model", "m", "--verify", "nope"], "unknown verifier 'nope'"),
    (["--model", "m", "--verify", "math", "--template", "difficulty/intensity"],
     "template 'difficulty/intensity' is a judge template; `curate solve` needs a response template"),
])
def test_solve_refuses_what_cannot_measure_a_pass_rate(tmp_path, args, message):
    assert_one_line_error(invoke("solve", data(tmp_path), "--out", tmp_path / "run", *args), message)
    assert not (tmp_path / "run" / "judgments.sqlite").exists()


def test_score_refuses_a_response_template_and_a_verifier(tmp_path):
    assert_one_line_error(invoke("score", data(tmp_path), "--out", tmp_path / "r1", "--template", "solve/step_by_step"),
                          "template 'solve/step_by_step' is a response template; `curate score` needs a judge")
    job = tmp_path / "job.yaml"
    job.write_text("verify: math\n", encoding="utf-8")  # a job file takes every run setting; score has no --verify
    assert_one_line_error(invoke("score", data(tmp_path), "--out", tmp_path / "r2", "--config", job),
                          "a judge's scores are parsed, not verified: drop --verify")
    unknown = invoke("score", data(tmp_path), "--out", tmp_path / "r3", "--verify", "math")
    assert unknown.exit_code == 2 and "No such option: --verify" in unknown.output


def test_the_cli_prints_a_pass_rate_table(tmp_path):
    with FakeOpenAIServer(answer_format="boxed") as server:
        result = invoke("solve", data(tmp_path), "--backend", "openai", "--base-url", server.base_url,
                        "--model", "solver", "--verify", "gsm8k", "--samples", 4, "--temperature", 1.0,
                        "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "mean pass rate" in result.stdout and "items solved by every attempt" in result.stdout
    stored = curate.load_judgments(tmp_path / "run")["status"].value_counts()
    shown = dict(re.findall(r"│   (\w+) +│ (\d+) +│", result.stdout))
    assert shown == {status: str(count) for status, count in stored.rows()}  # no `ok 0` among the verdicts


@pytest.mark.parametrize("command", ["solve", "respond"])
def test_killed_and_resumed_loses_and_doubles_nothing(tmp_path, command):
    with FakeOpenAIServer(answer_format="boxed", latency=0.002) as server:
        def cli(run_dir):
            return [sys.executable, "-m", "curate.cli", command, str(data(tmp_path, 120)), "--backend", "openai",
                    "--base-url", server.base_url, "--model", "solver", "--verify", "gsm8k", "--samples", "3",
                    "--temperature", "1.0", "--chunk-size", "8", "--max-in-flight", "4", "--out", str(run_dir),
                    "--json", "--max-failure-fraction", "1"]

        clean = tmp_path / "clean"
        subprocess.run(cli(clean), check=True, capture_output=True)
        total = curate.load_judgments(clean).height
        resumed = tmp_path / "resumed"
        previous = 0
        for target in sorted(random.Random(7).sample(range(8, total - 40), 3)):
            after_kill = kill_when_stored(cli(resumed), resumed, max(target, previous + 1))
            assert previous < after_kill < total, "the kill must land mid-run, after new commits"
            previous = after_kill
        subprocess.run(cli(resumed), check=True, capture_output=True)
    columns = ["item_id", "sample_idx", "status", "raw_text", "answer"]
    got, want = curate.load_judgments(resumed).select(columns), curate.load_judgments(clean).select(columns)
    assert got.select("item_id", "sample_idx").is_unique().all() and got.equals(want)
    assert pl.read_parquet(resumed / "per_item.parquet").equals(pl.read_parquet(clean / "per_item.parquet"))
