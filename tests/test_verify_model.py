"""`--verify model`: a judge model decides whether an answer is equivalent to the reference (curate.verify.model).

Unit tests drive the verifier with a scripted in-process backend; the engine tests run `curate solve` against two
scripted endpoints, a solver (answers "\\boxed{k}", k in 1..5) and an equivalence judge (says "Yes." when the
candidate and the reference are the same number), so "3" against a reference of "3.0" is the judge's to decide."""

import json

import polars as pl
import pytest
from conftest import assert_one_line_error, invoke, write_jsonl

import curate
from curate.backends import Completion
from curate.config import RunConfig, SamplingConfig
from curate.engine import reparse, solve
from curate.errors import ConfigError
from curate.templates import load_template
from curate.testing import FakeOpenAIServer
from curate.verify import VerdictStatus, get_verifier, verify_all

CORRECT, WRONG, NO_ANSWER, ERROR = (VerdictStatus.CORRECT, VerdictStatus.WRONG, VerdictStatus.NO_ANSWER,
                                    VerdictStatus.ERROR)


class ScriptedJudge:
    """A backend whose answer to each prompt is `answer(user message)`; it records every generate call."""

    name, model_id = "scripted", "judge"

    def __init__(self, answer, finish_reason="stop", error=None, drop=False):
        self.answer, self.finish_reason, self.error, self.drop = answer, finish_reason, error, drop
        self.calls: list[list[str]] = []

    def generate(self, requests, sampling):
        requests = list(requests)
        self.calls.append([request.messages[-1]["content"] for request in requests])
        for request in requests[1:] if self.drop else requests:
            yield Completion(request.item_id, 0, self.answer(request.messages[-1]["content"]), self.finish_reason,
                             10, 1, error=self.error)

    def close(self):
        pass


def verifier(judge, **settings):
    return get_verifier("model", backend=judge, template=load_template("verify/equivalence"), **settings)


def item(reference="3.0", **fields):
    return {"id": "q", "question": "What is 1 + 2?", "reference": reference, "choices": None, **fields}


def test_an_answer_equal_to_the_reference_is_correct_without_asking_the_judge():
    judge = ScriptedJudge(lambda prompt: "no")
    verdict = verifier(judge).verify("So \\boxed{3.0}", item())
    assert (verdict.status, verdict.extracted) == (CORRECT, "3.0")
    assert judge.calls == []


@pytest.mark.parametrize(("said", "status"), [("yes", CORRECT), ("Yes.", CORRECT), (" NO \n", WRONG), ("no!", WRONG),
                                               ("<think>3 is 3.0</think>\nyes", CORRECT)])
def test_the_judges_yes_or_no_decides_an_answer_the_rules_cannot(said, status):
    judge = ScriptedJudge(lambda prompt: said)
    verdict = verifier(judge).verify("So \\boxed{3}", item())
    assert (verdict.status, verdict.extracted) == (status, "3")
    assert "Reference answer: 3.0\nCandidate answer: 3\n" in judge.calls[0][0]


@pytest.mark.parametrize(("judge", "detail"), [
    (ScriptedJudge(lambda prompt: "Probably yes, since 3 = 3.0"), "judge answered 'Probably yes, since 3 = 3.0'"),
    (ScriptedJudge(lambda prompt: "The answer", finish_reason="length"), "(cut at its max_tokens), not yes or no"),
    (ScriptedJudge(lambda prompt: "", error="HTTP 500: upstream failed"), "judge failed: HTTP 500: upstream failed"),
    (ScriptedJudge(lambda prompt: "yes", drop=True), "judge returned no answer"),
    (ScriptedJudge(lambda prompt: "<think>3 is 3.0"), "not yes or no"),  # it never finished thinking
])
def test_a_judge_answer_that_is_not_yes_or_no_is_an_error_never_a_silent_wrong(judge, detail):
    verdict = verifier(judge).verify("So \\boxed{3}", item())
    assert verdict.status == ERROR and detail in verdict.detail and verdict.extracted == "3"


@pytest.mark.parametrize(("response", "fields", "status"), [
    ("So \\boxed{3}", {"reference": None}, ERROR),  # nothing to compare against
    ("<think>maybe 3", {}, NO_ANSWER),
    ("So \\boxed{}", {}, NO_ANSWER),
])
def test_what_the_rules_settle_never_reaches_the_judge(response, fields, status):
    judge = ScriptedJudge(lambda prompt: "yes")
    assert verifier(judge).verify(response, item(**fields)).status == status
    assert judge.calls == []


def test_a_batch_goes_to_the_judge_in_one_call_and_each_verdict_stays_with_its_response():
    judge = ScriptedJudge(lambda prompt: "yes" if "Candidate answer: 3\n" in prompt else "no")
    responses = ["\\boxed{3}", "\\boxed{4}", "\\boxed{3.0}", "no box here: 3", "\\boxed{5}"]
    verdicts = verify_all(verifier(judge), responses, [item()] * len(responses))
    assert [v.status for v in verdicts] == [CORRECT, WRONG, CORRECT, WRONG, WRONG]
    assert len(judge.calls) == 1 and len(judge.calls[0]) == 4  # the exact match "3.0" was not asked


def test_the_model_verifier_needs_a_backend_and_a_verifier_template():
    with pytest.raises(ConfigError, match="needs backend= and template="):
        get_verifier("model")
    with pytest.raises(ConfigError, match="is a judge template; the model verifier needs a verifier template"):
        get_verifier("model", backend=ScriptedJudge(str), template=load_template("difficulty/intensity"))
    with pytest.raises(ConfigError, match="answers greedily"):
        verifier(ScriptedJudge(str), sampling=SamplingConfig(temperature=1.0))


# --- through the engine: `curate solve --verify model` ----------------------------------------------------------

ITEMS = 12


def data(tmp_path):
    # Even items want "3", odd ones "3.0": a boxed 3 matches the first exactly and the second only by the judge.
    return write_jsonl(tmp_path / "data.jsonl", [{"id": f"q{i:02d}", "question": f"What is {i} - {i} + 3?",
                                                   "answer": "3" if i % 2 == 0 else "3.0"} for i in range(ITEMS)])


def job(tmp_path, solver, judge_url, **overrides) -> RunConfig:
    return RunConfig.from_flat({"source": str(data(tmp_path)), "out": str(tmp_path / "run"), "backend": "openai",
                                "base_url": solver.base_url, "model": "solver", "template": "solve/step_by_step",
                                "verify": "model", "verify_model": "judge", "verify_base_url": judge_url,
                                "samples": 4, "temperature": 1.0, "max_tokens": 64, "max_retries": 0, **overrides})


def test_solve_with_a_judge_model_stores_its_verdicts_and_resumes_without_asking_again(tmp_path):
    with FakeOpenAIServer(answer_format="boxed") as solver, FakeOpenAIServer(answer_format="verdict") as judge:
        result = solve(job(tmp_path, solver, judge.base_url))
        records = with_reference(tmp_path)
        assert records.height == 4 * ITEMS and (records["verifier"] == "model@1").all()
        assert ((records["status"] == "correct") == (records["answer"] == "3")).all()
        asked = records.filter(pl.col("answer") != pl.col("reference"))
        assert len(judge.bodies) == asked.height > 0  # every answer but the exact matches, once
        assert (asked["detail"].is_in(["the equivalence judge said yes", "the equivalence judge said no"])).all()
        assert asked.filter(pl.col("status") == "correct")["reference"].eq("3.0").all()
        assert result.summary["status_counts"]["error"] == 0 and 0 < result.summary["mean_pass_rate"] < 1
        identity = json.loads((tmp_path / "run" / "manifest.json").read_text())["identity"]
        assert identity["verifier"] == "model" and identity["verifier_model"] == "judge"
        assert identity["verifier_template"].startswith("verify/equivalence@")
        judged, solved = len(judge.bodies), len(solver.bodies)
        again = solve(job(tmp_path, solver, judge.base_url))
        assert (again.requested, len(judge.bodies), len(solver.bodies)) == (0, judged, solved)
    assert curate.load_judgments(tmp_path / "run").height == 4 * ITEMS


def test_a_judged_run_made_before_the_judges_backend_settings_were_in_its_identity_resumes(tmp_path):
    """Its manifest names the judge's model, backend, template and endpoint only; the judge ran with the run's
    endpoint settings, which its recorded config holds."""
    with FakeOpenAIServer(answer_format="boxed") as solver, FakeOpenAIServer(answer_format="verdict") as judge:
        solve(job(tmp_path, solver, judge.base_url, samples=1, temperature=0.0))
        manifest_path = tmp_path / "run" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        added = ("verifier_use_n", "verifier_tokenizer", "verifier_tokenizer_fingerprint", "verifier_max_tokens")
        assert all(key in manifest["identity"] for key in added)
        manifest["identity"] = {k: v for k, v in manifest["identity"].items() if k not in added}
        manifest_path.write_text(json.dumps(manifest))
        assert solve(job(tmp_path, solver, judge.base_url, samples=1, temperature=0.0)).requested == 0


def test_a_judge_that_cannot_be_reached_leaves_error_verdicts_that_a_retry_decides(tmp_path):
    with FakeOpenAIServer(answer_format="boxed") as solver:
        failed = invoke("solve", "--config", _job_file(tmp_path, solver, "http://127.0.0.1:9/v1"))
        assert failed.exit_code == 3 and "responses failed" in failed.stderr  # over --max-failure-fraction
        records = with_reference(tmp_path)
        asked = records["answer"] != records["reference"]  # exact matches need no judge, so they are decided
        assert ((records["status"] == "error") == asked).all() and asked.any()
        assert records.filter(asked)["detail"].str.starts_with("the equivalence judge failed:").all()
        assert records.filter(~asked)["status"].eq("correct").all()
        with FakeOpenAIServer(answer_format="verdict") as judge:
            retried = invoke("solve", "--config", _job_file(tmp_path, solver, judge.base_url), "--retry-failed")
        assert retried.exit_code == 0, retried.stderr
    records = curate.load_judgments(tmp_path / "run")
    assert records.height == 4 * ITEMS and set(records["status"]) <= {"correct", "wrong"}


def with_reference(tmp_path) -> pl.DataFrame:
    items = pl.read_parquet(tmp_path / "run" / "items.parquet").select(pl.col("id").alias("item_id"), "reference")
    return curate.load_judgments(tmp_path / "run").join(items, on="item_id")


def _job_file(tmp_path, solver, judge_url):
    config = job(tmp_path, solver, judge_url).to_flat()
    path = tmp_path / "job.json"
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None and v != {}}))
    return path


def test_a_different_judge_model_is_another_run(tmp_path):
    with FakeOpenAIServer(answer_format="boxed") as solver, FakeOpenAIServer(answer_format="verdict") as judge:
        solve(job(tmp_path, solver, judge.base_url, samples=1, temperature=0.0))
        with pytest.raises(Exception, match="verifier_model"):
            solve(job(tmp_path, solver, judge.base_url, samples=1, temperature=0.0, verify_model="other-judge"))
        with pytest.raises(Exception, match="verifier_max_tokens: stored 16, now 2"):  # a cut yes/no is another verdict
            solve(job(tmp_path, solver, judge.base_url, samples=1, temperature=0.0, verify_max_tokens=2))


def test_judge_settings_without_verify_model_and_reparse_of_judged_verdicts_are_one_line_errors(tmp_path):
    source = data(tmp_path)
    assert_one_line_error(invoke("solve", source, "--model", "m", "--verify", "gsm8k", "--verify-model", "judge",
                                 "--out", tmp_path / "a"), "--verify-model set the judge of --verify model")
    assert_one_line_error(invoke("solve", source, "--model", "m", "--verify", "model", "--out", tmp_path / "b"),
                          "name it with --verify-model")
    with FakeOpenAIServer(answer_format="boxed") as solver, FakeOpenAIServer(answer_format="verdict") as judge:
        solve(job(tmp_path, solver, judge.base_url, samples=1, temperature=0.0))
    with pytest.raises(ConfigError, match="reparse decides stored responses again without calling a model"):
        reparse(tmp_path / "run")
    assert reparse(tmp_path / "run", verifier="numeric")["status_counts"]["error"] == 0  # a rule verifier may
