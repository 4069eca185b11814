"""dereason-train eval: pass@1 averaged over k samples per item, as a `curate solve` run per held-out set (here
through the OpenAI-compatible backend against curate's scripted endpoint, which answers \\boxed{1..5})."""

import json

import polars as pl
import pytest
from conftest import assert_one_line_error, write_jsonl
from trainkit import invoke_train

from curate import load_judgments
from curate.testing import FakeOpenAIServer
from train.stage import INVOCATIONS, read_record

ROWS = [{"id": f"q{i}", "question": f"Pick a number, take {i}.", "answer": str(1 + i % 5)} for i in range(12)]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(answer_format="boxed") as running:
        yield running


def evaluate(server, tmp_path, *extra):
    return invoke_train("eval", "--model", "teacher", "--heldout", tmp_path / "small.jsonl", "--heldout",
                        tmp_path / "other.jsonl", "--out", tmp_path / "eval", "--verifier", "numeric", "--samples", 3,
                        "--temperature", 1.0, "--backend", "openai", "--solve-arg", f"base_url={server.base_url}",
                        "--id-field", "id", *extra)


def test_pass_at_1_is_the_mean_over_items_of_each_items_share_of_correct_samples(server, tmp_path):
    write_jsonl(tmp_path / "small.jsonl", ROWS)
    write_jsonl(tmp_path / "other.jsonl", ROWS[:5])
    result = evaluate(server, tmp_path)
    assert result.exit_code == 0, result.output
    record = read_record(tmp_path / "eval")
    assert record["status"] == "done" and set(record["sets"]) == {"small", "other"}
    small = record["sets"]["small"]
    rollouts = load_judgments(tmp_path / "eval" / "small")
    per_item = rollouts.group_by("item_id").agg((pl.col("status") == "correct").mean().alias("share"))
    assert rollouts.height == 36 and small["measured"] == 12
    assert small["pass_at_1"]["value"] == pytest.approx(per_item["share"].mean())
    assert 0 < small["pass_at_1"]["value"] < 1
    assert small["pass_at_1"]["low"] <= small["pass_at_1"]["value"] <= small["pass_at_1"]["high"]
    assert "eval small: pass@1" in " ".join(result.stdout.split())

    again = evaluate(server, tmp_path)  # resumes: nothing is asked again, the same numbers come out
    assert again.exit_code == 0, again.output
    assert read_record(tmp_path / "eval") == record
    solve_invocations = (tmp_path / "eval" / "small" / "invocations.jsonl").read_text().splitlines()
    assert len(solve_invocations) == 2 and len((tmp_path / "eval" / INVOCATIONS).read_text().splitlines()) == 2
    assert json.loads((tmp_path / "eval" / "small" / "summary.json").read_text())["requested"] == 0
    assert_one_line_error(evaluate(server, tmp_path, "--seed", 1), "was made with other settings "
                                                                  "(config.seed: 0 then, 1 now)")


def test_eval_mistakes_are_one_line(server, tmp_path):
    write_jsonl(tmp_path / "small.jsonl", ROWS)
    assert_one_line_error(evaluate(server, tmp_path), "other.jsonl")  # a missing held-out set is named
    base = ["--model", "m", "--out", tmp_path / "eval"]
    assert_one_line_error(invoke_train("eval", *base, "--heldout", "a/test.jsonl", "--heldout", "b/test.jsonl"),
                          "share a name")
    assert_one_line_error(invoke_train("eval", *base, "--heldout", tmp_path / "small.jsonl", "--solve-arg",
                                       "verify=math"), "solve_args sets ['verify']")
    assert_one_line_error(invoke_train("eval", *base, "--heldout", tmp_path / "small.jsonl", "--samples", 2,
                                       "--temperature", 0), "set a temperature > 0")



@pytest.mark.parametrize("solve_fails", [False, True], ids=["evaluated", "evaluation failed"])
def test_every_process_passes_the_same_barriers(tmp_path, monkeypatch, solve_fails):
    """Under `accelerate launch` the main process evaluates and the others wait: each passes as many barriers, also
    when the evaluation fails (the main process passed two and the others one, so the next stage's barriers paired
    up wrongly)."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    import accelerate

    import curate.engine
    import train.eval

    barriers = {"main": 0, "other": 0}
    rank = {"name": "main"}

    class OneOfTwoProcesses:
        def __init__(self, cpu=False):
            pass

        @property
        def is_main_process(self):
            return rank["name"] == "main"

        def wait_for_everyone(self):
            barriers[rank["name"]] += 1

    def solve(config):
        if solve_fails:
            raise RuntimeError("the endpoint went away")
        return SimpleNamespace(run_dir=tmp_path / "solved", per_item=None)

    monkeypatch.setattr(accelerate, "PartialState", OneOfTwoProcesses)
    monkeypatch.setattr(curate.engine, "solve", solve)
    monkeypatch.setattr(train.eval, "pass_at_1", lambda per_item, seed: {"pass_at_1": None})
    config = train.eval.EvalConfig(model="teacher", heldout=[str(tmp_path / "small.jsonl")],
                                   out=str(tmp_path / "eval"), verifier="numeric")
    with pytest.raises(RuntimeError, match="went away") if solve_fails else nullcontext():
        train.eval.evaluate(config)
    rank["name"] = "other"
    assert train.eval.evaluate(config) == {}
    assert barriers == {"main": 3, "other": 3}
